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

/// Releases a load lease if `token` still holds it (compare-and-delete: a holder whose lease
/// expired and was taken over must not free the new holder's); if other instances marked it
/// waited on, announces the release on the namespace's `#filled` stream (field `k`: the key),
/// so they look at L2 at once instead of at their next poll. Shared by the scripts below.
const RELEASE_LEASE: &str = r"
local function release_lease(lease, waiting, filled, token, key)
  if token == '' or redis.call('GET', lease) ~= token then
    return 0
  end
  redis.call('UNLINK', lease)
  if redis.call('UNLINK', waiting) == 1 then
    redis.call('XADD', filled, 'MAXLEN', '~', 1000, '*', 'k', key)
  end
  return 1
end
";

/// A load's fill. KEYS: data, key generation, namespace generation, lease, waiting mark,
/// filled stream, tag indexes…; ARGV: value, TTL ms, key generation read, namespace
/// generation read, lease token (`""` for none), cache key. Releases the load's lease (see
/// `RELEASE_LEASE`) whether the value is stored or not; returns 1 if stored, 0 if the key or
/// namespace changed since the read.
pub(crate) static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{INDEX_TAGS}{RELEASE_LEASE}
release_lease(KEYS[4], KEYS[5], KEYS[6], ARGV[5], ARGV[6])
local gens = redis.call('MGET', KEYS[2], KEYS[3])
if tonumber(gens[1] or '0') ~= tonumber(ARGV[3]) or tonumber(gens[2] or '0') ~= tonumber(ARGV[4]) then
  return 0
end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
index_tags(7, ttl)
return 1
"
    ))
});

/// On a cluster, [`FILL`] without the keys of other slots: KEYS: data, key generation,
/// lease, waiting mark; ARGV: value, TTL ms, key generation read, lease token (`""` for
/// none). Releases the lease (compare-and-delete) whether it stores or not. Returns
/// {1 if stored, 1 if another instance waited on the lease}: the caller announces the release
/// on the namespace's filled stream and checks the namespace generation apart (its slot is
/// not this one).
pub(crate) static FILL_IN_SLOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local waited = 0
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) == ARGV[4] then
  redis.call('UNLINK', KEYS[3])
  waited = redis.call('UNLINK', KEYS[4])
end
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[3]) then
  return {0, waited}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, waited}
",
    )
});

/// On a cluster, [`BEGIN_LOAD`] without the namespace generation (another slot, read apart):
/// KEYS: key generation, lease, waiting mark, data; ARGV as `BEGIN_LOAD`. Returns what
/// `BEGIN_LOAD` does, with 0 for the namespace generation.
pub(crate) static BEGIN_LOAD_IN_SLOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local g = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[3] == '1' then
  local value = redis.call('GET', KEYS[4])
  if value then
    return {g, 0, 0, value}
  end
end
if ARGV[1] == '' then
  return {g, 0, 0, false}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', KEYS[2]) == ARGV[1] then
  return {g, 0, 1, false}
end
redis.call('SET', KEYS[3], 1, 'PX', ARGV[2])
return {g, 0, 0, false}
",
    )
});

/// On a cluster, a tag index changed apart from its data key: adds ARGV[1] (a data key) to
/// the index KEYS[1], extending the index's TTL to ARGV[2] ms.
pub(crate) static INDEX_TAG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SADD', KEYS[1], ARGV[1])
local left = redis.call('PTTL', KEYS[1])
local ttl = tonumber(ARGV[2])
if left == -1 or left < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
",
    )
});

/// On a cluster, [`RELEASE`] without the filled stream: KEYS: lease, waiting mark; ARGV: the
/// holder's token. Returns {1 if released, 1 if another instance waited on it}.
pub(crate) static RELEASE_IN_SLOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[1] == '' or redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0, 0}
end
redis.call('UNLINK', KEYS[1])
return {1, redis.call('UNLINK', KEYS[2])}
",
    )
});

/// The start of a load: reads the key's generations; with `absent` set and a value present
/// (a fill landed since the caller's read), returns it and takes no lease; otherwise, with a
/// token, tries to take the key's load lease (`SET NX PX`), and if another holds it marks it
/// waited on (for the lease's TTL), so its release is announced. KEYS: key generation,
/// namespace generation, lease, waiting mark, data; ARGV: token (`""` for none), lease TTL
/// ms, absent (`"1"` or `""`). Returns {key generation, namespace generation, 1 if the lease
/// was taken, the value found or nil}.
pub(crate) static BEGIN_LOAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local gens = redis.call('MGET', KEYS[1], KEYS[2])
local g1, g2 = tonumber(gens[1] or '0'), tonumber(gens[2] or '0')
if ARGV[3] == '1' then
  local value = redis.call('GET', KEYS[5])
  if value then
    return {g1, g2, 0, value}
  end
end
if ARGV[1] == '' then
  return {g1, g2, 0, false}
end
-- Taken, or already ours: a retry whose first attempt took it but lost the reply.
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', KEYS[3]) == ARGV[1] then
  return {g1, g2, 1, false}
end
redis.call('SET', KEYS[4], 1, 'PX', ARGV[2])
return {g1, g2, 0, false}
",
    )
});

/// Takes a load lease, or finds it already held under the same token (a retry whose first
/// attempt took it but lost the reply). KEYS: lease; ARGV: token, TTL ms. Returns 1 if held.
pub(crate) static ACQUIRE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 0
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
/// ARGV: generation TTL ms. Returns 1 if the data key existed.
pub(crate) static INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local existed = redis.call('UNLINK', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return existed
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

/// Releases a load lease (see `RELEASE_LEASE`). KEYS: lease, waiting mark, filled stream;
/// ARGV: the holder's token, the cache key.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{RELEASE_LEASE}
return release_lease(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
"
    ))
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

/// Where one part of a log stands, read atomically: its newest entry (if any) and its
/// sequence counter. KEYS: stream, sequence.
pub(crate) static LOG_TAIL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
return {
  redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1),
  redis.call('GET', KEYS[2]),
}
",
    )
});

/// The number of parts a namespace's log is split into: set to ARGV[1] if no instance has
/// set it yet; returns what was there before (nil if nothing). KEYS: the count.
/// (`SET … NX GET` does this from Redis 7.0 on; the script works on 6.2 too.)
pub(crate) static AGREE_SHARDS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local before = redis.call('GET', KEYS[1])
if not before then redis.call('SET', KEYS[1], ARGV[1]) end
return before
",
    )
});
