//! The Lua scripts: multi-key changes that must be atomic.
//!
//! Generation counters (`<ns>#gen:<key>`, `<ns>#gen`) fence fills: every script that changes a
//! key bumps its counter in the same step, and a fill is stored only if the counters still
//! read what the load read before it began. Counters live a week (`GENERATION_TTL_MS`):
//! forgetting one early could only refuse a fill, never admit a stale one, unless a load ran
//! that long.

use std::sync::LazyLock;

use redis::Script;

/// How long a generation counter outlives its last bump.
pub(crate) const GENERATION_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// Adds `KEYS[1]` to the tag indexes `KEYS[first..]`, extending each index's TTL to cover it.
/// Shared by the write scripts; `ttl` in ms.
const INDEX_TAGS: &str = r"
local function index_tags(first, ttl)
  for i = first, #KEYS do
    redis.call('SADD', KEYS[i], KEYS[1])
    local left = redis.call('PTTL', KEYS[i])
    if left == -1 or left < ttl then
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
  end
end
";

/// A load's fill. KEYS: data, key generation, namespace generation, load lease, tag indexes…;
/// ARGV: value, TTL ms, key generation read, namespace generation read, lease token (`""`
/// for none). Releases the load's lease if the token still holds it, whether the value is
/// stored or not; returns 1 if stored, 0 if the key or namespace changed since the read.
pub(crate) static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{INDEX_TAGS}
if ARGV[5] ~= '' and redis.call('GET', KEYS[4]) == ARGV[5] then
  redis.call('UNLINK', KEYS[4])
end
local gens = redis.call('MGET', KEYS[2], KEYS[3])
if tonumber(gens[1] or '0') ~= tonumber(ARGV[3]) or tonumber(gens[2] or '0') ~= tonumber(ARGV[4]) then
  return 0
end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
index_tags(5, ttl)
return 1
"
    ))
});

/// The start of a load: reads the key's generations and, with a token, tries to take the key's
/// load lease (`SET NX PX`). KEYS: key generation, namespace generation, lease; ARGV: token
/// (`""` for none), lease TTL ms. Returns {key generation, namespace generation, 1 if taken}.
pub(crate) static BEGIN_LOAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local gens = redis.call('MGET', KEYS[1], KEYS[2])
local taken = 0
if ARGV[1] ~= '' and redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then
  taken = 1
end
return {tonumber(gens[1] or '0'), tonumber(gens[2] or '0'), taken}
",
    )
});

/// A write-through: stores and bumps the key's generation. KEYS: data, key generation, tag
/// indexes…; ARGV: value, TTL ms, generation TTL ms.
pub(crate) static REPLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{INDEX_TAGS}
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
index_tags(3, ttl)
return 1
"
    ))
});

/// An invalidation: deletes and bumps the key's generation. KEYS: data, key generation;
/// ARGV: generation TTL ms.
pub(crate) static INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('UNLINK', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
",
    )
});

/// Deletes every key in a tag's index (bumping each one's generation), then the index.
/// KEYS[1] = tag index; ARGV: namespace, generation TTL ms. Returns how many data keys existed.
pub(crate) static DELETE_TAG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local data_prefix = ARGV[1] .. ':'
local members = redis.call('SMEMBERS', KEYS[1])
local removed = 0
for _, member in ipairs(members) do
  removed = removed + redis.call('UNLINK', member)
  if string.sub(member, 1, #data_prefix) == data_prefix then
    local gen = ARGV[1] .. '#gen:' .. string.sub(member, #data_prefix + 1)
    redis.call('INCR', gen)
    redis.call('PEXPIRE', gen, ARGV[2])
  end
end
redis.call('UNLINK', KEYS[1])
return removed
",
    )
});

/// Releases a load lease if the caller still holds it (compare-and-delete): a holder whose
/// lease expired and was taken over must not free the new holder's. KEYS[1] = lease;
/// ARGV[1] = the holder's token.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('UNLINK', KEYS[1])
end
return 0
",
    )
});

/// Appends an invalidation to a namespace's log, numbered by a gap-free sequence (so a
/// follower can tell when entries it had not read were trimmed). KEYS: stream, sequence;
/// ARGV: approximate length bound, payload. Returns the entry's id.
pub(crate) static APPEND_LOG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local seq = redis.call('INCR', KEYS[2])
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 's', seq, 'd', ARGV[2])
",
    )
});

/// Where a log stands, read atomically: its newest entry (if any) and its sequence counter.
/// KEYS: stream, sequence.
pub(crate) static LOG_TAIL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
return {redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1), redis.call('GET', KEYS[2])}
",
    )
});
