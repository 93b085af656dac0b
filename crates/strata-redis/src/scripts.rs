//! The Lua scripts: multi-key changes that must be atomic.

use std::sync::LazyLock;

use redis::Script;

/// `SET` a value and add its key to each tag's index, extending the index's TTL to cover it.
/// KEYS[1] = data key, KEYS[2..] = tag index keys; ARGV[1] = value, ARGV[2] = TTL in ms.
pub(crate) static SET_WITH_TAGS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local ttl = tonumber(ARGV[2])
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  local left = redis.call('PTTL', KEYS[i])
  if left == -1 or left < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
",
    )
});

/// Delete every key in a tag's index, then the index. KEYS[1] = tag index key.
/// Returns how many data keys existed.
pub(crate) static DELETE_TAG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local members = redis.call('SMEMBERS', KEYS[1])
local removed = 0
for i = 1, #members, 500 do
  removed = removed + redis.call('UNLINK', unpack(members, i, math.min(i + 499, #members)))
end
redis.call('UNLINK', KEYS[1])
return removed
",
    )
});
