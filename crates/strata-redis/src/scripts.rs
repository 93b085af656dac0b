//! The Lua scripts: multi-key changes that must be atomic.
//!
//! A load is fenced by what it found in the data key when it began: its own lease record (a
//! miss: `SET … NX GET` left it there) or the stamp of the entry it refreshes. A fill is
//! stored only if that is still in place; an invalidation (`UNLINK`) or a write-through
//! (`SET`) in between removed or replaced it. No counters to keep: the data key is the fence.

use std::ops::Deref;
use std::sync::LazyLock;

use redis::{ErrorKind, FromRedisValue, RedisResult, Script, ServerErrorKind};

use crate::RedisConnection;
use crate::resp::Arg;

/// A script with its name and source text: the text is part of the protocol (other
/// languages' clients run the same bytes, `clients/*/scripts.json`, checked by a test here).
pub(crate) struct Lua {
    name: &'static str,
    source: String,
    script: Script,
}

impl Lua {
    fn new(name: &'static str, source: impl Into<String>) -> Self {
        let source = source.into();
        Lua {
            name,
            script: Script::new(&source),
            source,
        }
    }

    /// Runs this script (`EVALSHA`) with `keys` and `args`, loading it first if the server
    /// does not have it (a restarted or flushed server). The command is written straight
    /// into the connection's buffer ([`RedisConnection::call`]): `redis::ScriptInvocation`
    /// copies each argument twice before it is sent, and a fill's argument is the value.
    pub(crate) async fn call<T: FromRedisValue>(
        &self,
        conn: &mut RedisConnection,
        keys: &[Arg<'_>],
        args: &[Arg<'_>],
    ) -> RedisResult<T> {
        let hash = self.get_hash();
        let mut command = Vec::with_capacity(3 + keys.len() + args.len());
        command.extend([
            Arg::from("EVALSHA"),
            Arg::from(hash),
            Arg::Int(keys.len() as u64),
        ]);
        command.extend_from_slice(keys);
        command.extend_from_slice(args);
        match conn.call(&command).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.prepare_invoke().load_async(conn).await?;
                conn.call(&command).await
            }
            reply => reply,
        }
    }
}

impl Deref for Lua {
    type Target = Script;

    fn deref(&self) -> &Script {
        &self.script
    }
}

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

/// Appends an invalidation to a namespace's log, numbered by a gap-free sequence (so a
/// follower can tell when entries it had not read were trimmed), and pushes it to the
/// followers subscribed to the stream's channel (`SPUBLISH`, `<seq>:<id>:<entry>`): they
/// apply it without reading the stream. `pcall`: a server without sharded pub/sub, or a user
/// not allowed the channel, still appends (its followers read the stream). Shared by the
/// scripts that change data and log it in the same step, and by the log's own append.
const APPEND: &str = r"
local function append(stream, sequence, max_len, entry)
  local seq = redis.call('INCR', sequence)
  local id = redis.call('XADD', stream, 'MAXLEN', '~', max_len, '*', 's', seq, 'd', entry)
  redis.pcall('SPUBLISH', stream, seq .. ':' .. id .. ':' .. entry)
  return seq
end
";

/// Whether `cur` (what the data key held, or false) is what a fill's fence asks for: kind `S`
/// (an envelope with this 8-byte stamp), `L` (this lease record, waited on or not) or `B`
/// (exactly these bytes: an entry the cache could not read). Kind `N` asks for nothing.
const FENCE: &str = r"
local function holds(cur, kind, arg)
  if not cur then return false end
  if kind == 'S' then
    return string.sub(cur, 1, 3) == '\255ST' and string.sub(cur, 39, 46) == arg
  end
  if kind == 'L' then return cur == arg or cur == arg .. 'W' end
  return cur == arg
end
";

/// A flight's read, when it must mark another's load waited on (or the server predates
/// `SET … NX GET`). KEYS: data; ARGV: lease record (`""`: take none), lease TTL ms, `"1"` to
/// mark. Returns the data key's bytes as `SET … NX GET` would: nil when it was empty (and the
/// lease, if any, is now the caller's), else what is there; another's lease record gets a
/// `W` appended (waited on), so its fill announces the end of its load.
pub(crate) static READ: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "READ",
        r"
local v = redis.call('GET', KEYS[1])
if not v then
  if ARGV[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
  return false
end
if ARGV[3] == '1' and v ~= ARGV[1] and #v == 12 and string.sub(v, 1, 3) == '\255SL' then
  redis.call('APPEND', KEYS[1], 'W')
end
return v
",
    )
});

/// The body of a fill, shared by [`FILL`] and [`FILL_IN_SLOT`]: stores the value if the
/// data key holds what the load was fenced with; releases the refresh lease `KEYS[refresh]` if
/// `ARGV[6]` holds it. Leaves `ok` (stored) and `waited` (the lease record it replaced was
/// waited on).
///
/// With `ARGV[7]` = `1` (Redis 7: `SET … XX GET`) the common case is one command: the value is
/// set over whatever is there and the old bytes are checked after. A fill that finds it was
/// overtaken undoes that in the same step, so no reader sees it: what it displaced goes back
/// byte for byte, with the fill's TTL (an entry's envelope carries its own expiry) or, for
/// another load's lease record, the lease TTL (`ARGV[8]`). Older servers read first (`GET`, then
/// `SET` if the fence holds).
const FILL_BODY: &str = r"
local old, ok = false, false
if ARGV[3] == 'N' then
  ok = true
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
elseif ARGV[7] == '1' then
  old = redis.call('SET', KEYS[1], ARGV[1], 'XX', 'GET', 'PX', ARGV[2])
  ok = holds(old, ARGV[3], ARGV[4])
  if old and not ok then
    local ttl = ARGV[2]
    if string.sub(old, 1, 3) == '\255SL' and (#old == 12 or #old == 13) then ttl = ARGV[8] end
    redis.call('SET', KEYS[1], old, 'PX', ttl)
  end
else
  old = redis.call('GET', KEYS[1])
  ok = holds(old, ARGV[3], ARGV[4])
  if ok then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  end
end
if ARGV[6] ~= '' and redis.call('GET', KEYS[refresh]) == ARGV[6] then
  redis.call('UNLINK', KEYS[refresh])
end
local waited = ok and old and #old == 13 and string.sub(old, 1, 3) == '\255SL'
";

/// A load's fill. KEYS: data, filled stream, refresh lease (untouched, and any key of the
/// slot, when there is no token), tag indexes…; ARGV: value, TTL
/// ms, fence kind and argument (see `FENCE`), cache key, refresh lease token (`""` for none),
/// `1` if the server has `SET … XX GET`, lease TTL ms.
/// See `FILL_BODY`; indexes the tags if stored, and announces on the namespace's `#filled`
/// stream (field `k`: the key) and channel (the key) if another instance waited. Returns 1
/// if stored.
pub(crate) static FILL: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "FILL",
        format!(
            r"{INDEX_TAGS}{FENCE}local refresh = 3
{FILL_BODY}
if ok then index_tags(4, tonumber(ARGV[2])) end
if waited then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000, '*', 'k', ARGV[5])
  redis.pcall('SPUBLISH', KEYS[2], ARGV[5])
end
if ok then return 1 end
return 0
"
        ),
    )
});

/// Misses' fills in their common case where the server cannot compare for us (Redis 7: no
/// `SET … IFEQ`): each stored if its data key held its load's lease record. KEYS: data keys
/// `k1…kn` of one namespace, then on one server its `#filled` stream; ARGV: for each key its
/// value, TTL ms and lease record (`3i-2`, `3i-1`, `3i`), then the lease TTL ms. Returns, in
/// two bits per key (key `i` at `4^(i-1)`): 1 stored (over the record waited on too, when the
/// stream was given: its end is announced here, `XADD` and `SPUBLISH` on `#filled`, as
/// [`FILL`] does); 2 stored over the record waited on without the stream — the caller
/// announces, as after [`FILL_IN_SLOT`] (a cluster, where the stream lives in another slot);
/// 0 overtaken, what it displaced put back in the same step (as in `FILL_BODY`), so no reader
/// sees it. With one key, the answer is that key's 0, 1 or 2. The cache key announced is the
/// data key past `<namespace>:` (the stream's name, less `#filled`, is the namespace).
///
/// The announcement in the same step reaches the waiters a hop sooner than the caller's
/// own, which waited for this answer (W5's read p99 −15 %); the stream's key costs the
/// server ~560 instructions a fill in fours (~1.7 %; BENCHMARKS.md).
///
/// Apart from [`FILL`] because every argument costs: Redis 7 makes each one a Lua string
/// (~2k instructions apiece under callgrind), and this takes 5 for one fill (6 on one server,
/// with the filled stream) where `FILL` takes 11 — ~23 % fewer of the server's instructions a
/// fill. Several fills at once because entering a script costs too: 4 a call take ~21 % fewer
/// again, 8 ~26 % ([`FillBatch`] gathers them). The answer is one integer, not a table: a
/// table costs one fill alone ~13 %.
///
/// [`FillBatch`]: crate::fill_batch::FillBatch
pub(crate) static FILL_LEASED: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "FILL_LEASED",
        r"
local lease_ttl = ARGV[#ARGV]
local fills = (#ARGV - 1) / 3
local filled = KEYS[fills + 1]
local answer, unit = 0, 1
for i = 1, fills do
  local at = 3 * i - 2
  local record = ARGV[at + 2]
  local old = redis.call('SET', KEYS[i], ARGV[at], 'XX', 'GET', 'PX', ARGV[at + 1])
  if old == record then
    answer = answer + unit
  elseif old then
    if old == record .. 'W' then
      if filled then
        local key = string.sub(KEYS[i], #filled - 5)
        redis.call('XADD', filled, 'MAXLEN', '~', 1000, '*', 'k', key)
        redis.pcall('SPUBLISH', filled, key)
        answer = answer + unit
      else
        answer = answer + 2 * unit
      end
    else
      local lease = string.sub(old, 1, 3) == '\255SL' and (#old == 12 or #old == 13)
      redis.call('SET', KEYS[i], old, 'PX', lease and lease_ttl or ARGV[at + 1])
    end
  end
  unit = unit * 4
end
return answer
",
    )
});

/// On a cluster, [`FILL`] without the keys of other slots (tags are indexed apart, before):
/// KEYS: data, refresh lease; ARGV as `FILL`'s. Returns {1 if stored, 1 if another instance
/// waited}: the caller announces on the filled stream (another slot).
pub(crate) static FILL_IN_SLOT: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "FILL_IN_SLOT",
        format!(
            r"{FENCE}local refresh = 2
{FILL_BODY}
local stored, told = 0, 0
if ok then stored = 1 end
if waited then told = 1 end
return {{stored, told}}
"
        ),
    )
});

/// Gives a load's lease record back (its load failed): removes it if it is still the one
/// given, and announces that if it was waited on. KEYS: data, filled stream; ARGV: the lease
/// record, cache key. Returns 1 if released.
pub(crate) static RELEASE_RECORD: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "RELEASE_RECORD",
        r"
local v = redis.call('GET', KEYS[1])
if v ~= ARGV[1] and v ~= ARGV[1] .. 'W' then return 0 end
redis.call('UNLINK', KEYS[1])
if #v == 13 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000, '*', 'k', ARGV[2])
  redis.pcall('SPUBLISH', KEYS[2], ARGV[2])
end
return 1
",
    )
});

/// On a cluster, [`RELEASE_RECORD`] without the filled stream: KEYS: data; ARGV: the lease
/// record. Returns {1 if released, 1 if another instance waited}.
pub(crate) static RELEASE_RECORD_IN_SLOT: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "RELEASE_RECORD_IN_SLOT",
        r"
local v = redis.call('GET', KEYS[1])
if v ~= ARGV[1] and v ~= ARGV[1] .. 'W' then return {0, 0} end
redis.call('UNLINK', KEYS[1])
if #v == 13 then return {1, 1} end
return {1, 0}
",
    )
});

/// On a cluster, a tag index changed apart from its data key: adds `ARGV[1]` (a data key) to
/// the index `KEYS[1]`, extending the index's TTL to `ARGV[2]` ms.
pub(crate) static INDEX_TAG: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "INDEX_TAG",
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

/// Takes a refresh lease, or finds it already held under the same token (a retry whose
/// first attempt took it but lost the reply). KEYS: lease; ARGV: token, TTL ms. Returns 1 if
/// held.
pub(crate) static ACQUIRE_LEASE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "ACQUIRE_LEASE",
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 0
",
    )
});

/// Releases a refresh lease if `token` still holds it (compare-and-delete: a holder whose
/// lease expired and was taken over must not free the new holder's). KEYS: lease; ARGV: the
/// holder's token.
pub(crate) static RELEASE_LEASE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "RELEASE_LEASE",
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('UNLINK', KEYS[1])
end
return 0
",
    )
});

/// A write-through with tags, or with its invalidation logged in the same step. KEYS: data,
/// log stream, log sequence, tag indexes…; ARGV: value, TTL ms, the log's length bound (`""`:
/// log nothing), the log entry. Returns the entry's sequence number (0 if nothing logged).
pub(crate) static REPLACE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "REPLACE",
        format!(
            r"{INDEX_TAGS}{APPEND}
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
index_tags(4, ttl)
if ARGV[3] ~= '' then return append(KEYS[2], KEYS[3], ARGV[3], ARGV[4]) end
return 0
"
        ),
    )
});

/// An invalidation logged in the same step: deletes the data key (a lease record too: the
/// load in flight is refused) and appends to the log. KEYS: data, log stream, log sequence;
/// ARGV: the log's length bound, the log entry. Returns the entry's sequence number.
pub(crate) static INVALIDATE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "INVALIDATE",
        format!(
            r"{APPEND}
redis.call('UNLINK', KEYS[1])
return append(KEYS[2], KEYS[3], ARGV[1], ARGV[2])
"
        ),
    )
});

/// Deletes every key in a tag's index, then the index. `KEYS[1]` = tag index. Returns how many
/// data keys existed.
pub(crate) static DELETE_TAG: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "DELETE_TAG",
        r"
local members = redis.call('SMEMBERS', KEYS[1])
local removed = 0
for _, member in ipairs(members) do
  removed = removed + redis.call('UNLINK', member)
end
redis.call('UNLINK', KEYS[1])
return removed
",
    )
});

/// Appends an invalidation to a namespace's log, numbered by a gap-free sequence (so a
/// follower can tell when entries it had not read were trimmed). KEYS: stream, sequence;
/// ARGV: approximate length bound, payload. Returns the entry's sequence number.
pub(crate) static APPEND_LOG: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "APPEND_LOG",
        format!(
            r"{APPEND}
return append(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
"
        ),
    )
});

/// Where one part of a log stands, read atomically: its newest entry (if any) and its
/// sequence counter. KEYS: stream, sequence.
pub(crate) static LOG_TAIL: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "LOG_TAIL",
        r"
return {
  redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1),
  redis.call('GET', KEYS[2]),
}
",
    )
});

/// The settings every instance of a namespace shares, set by the first one that follows or
/// publishes its log: the number of parts its log is split into (`KEYS[1]` ← `ARGV[1]`) and the
/// protocol version it is written with (`KEYS[2]` ← `ARGV[2]`). Returns what was there before,
/// `{parts, protocol}` (nil where nothing was).
pub(crate) static AGREE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "AGREE",
        r"
local parts = redis.call('GET', KEYS[1])
if not parts then redis.call('SET', KEYS[1], ARGV[1]) end
local protocol = redis.call('GET', KEYS[2])
if not protocol then redis.call('SET', KEYS[2], ARGV[2]) end
return {parts, protocol}
",
    )
});

/// The Lua scripts of the Strata protocol (`docs/protocol.md`, §10), by name, as other
/// implementations of it run them (the Python and Node clients ship these same texts).
pub fn protocol_scripts() -> impl Iterator<Item = (&'static str, &'static str)> {
    all().into_iter().map(|lua| (lua.name, lua.source.as_str()))
}

fn all() -> [&'static Lua; 15] {
    [
        &READ,
        &FILL,
        &FILL_LEASED,
        &FILL_IN_SLOT,
        &RELEASE_RECORD,
        &RELEASE_RECORD_IN_SLOT,
        &INDEX_TAG,
        &ACQUIRE_LEASE,
        &RELEASE_LEASE,
        &REPLACE,
        &INVALIDATE,
        &DELETE_TAG,
        &APPEND_LOG,
        &LOG_TAIL,
        &AGREE,
    ]
}

#[cfg(test)]
mod tests {
    use redis::aio::MultiplexedConnection;
    use strata::envelope::{lease_record, lease_waited};
    use strata_testkit::RedisServer;

    use super::{FILL, FILL_LEASED};

    /// What a miss's fill may find in the data key `k`, each with whether it stores: this
    /// load's lease record, the same waited on, another load's, an entry, nothing.
    fn found() -> [(Option<Vec<u8>>, bool); 5] {
        let ours = lease_record(1).to_vec();
        [
            (Some(ours.clone()), true),
            (Some([&ours[..], b"W"].concat()), true),
            (Some(lease_record(2).to_vec()), false),
            (Some(b"a newer entry".to_vec()), false),
            (None, false),
        ]
    }

    async fn connect(redis: &RedisServer) -> MultiplexedConnection {
        let client = redis::Client::open(redis.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }

    /// Puts `before` in `key`, or leaves it empty.
    async fn put(
        redis: &RedisServer,
        conn: &mut MultiplexedConnection,
        key: &str,
        before: Option<&[u8]>,
    ) {
        redis.cli(&["DEL", key]);
        if let Some(bytes) = before {
            let () = redis::cmd("SET")
                .arg(key)
                .arg(bytes)
                .query_async(conn)
                .await
                .unwrap();
        }
    }

    /// Checks what `key` holds after a fill that `stored` (or not) over `before`: the value
    /// with the fill's TTL, else what was there — and, for a body that `put_back` what it
    /// displaced, a lease record with a lease's life at most and an entry with the fill's TTL.
    async fn check(
        redis: &RedisServer,
        conn: &mut MultiplexedConnection,
        key: &str,
        before: Option<&[u8]>,
        stored: bool,
        put_back: bool,
        case: &str,
    ) {
        let after: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(conn).await.unwrap();
        let expected = if stored {
            Some(b"loaded".to_vec())
        } else {
            before.map(<[u8]>::to_vec)
        };
        assert_eq!(after, expected, "{case}");
        let pttl: i64 = redis.cli(&["PTTL", key]).parse().unwrap();
        match before {
            _ if stored => assert!(pttl > 5_000, "the fill's TTL: {case}"),
            _ if !put_back => {}
            Some(b) if b.starts_with(b"\xffSL") => {
                assert!((1..=5_000).contains(&pttl), "{case}: {pttl}");
            }
            Some(_) => assert!(pttl > 5_000, "{case}: {pttl}"),
            None => assert_eq!(pttl, -2, "nothing created: {case}"),
        }
    }

    /// Both bodies of the fill — set-then-check on Redis 7, read-then-set before it — store in
    /// the same cases and leave the same bytes behind when they do not.
    #[tokio::test]
    async fn both_fill_bodies_agree_on_every_fence_case() {
        let redis = RedisServer::start();
        let mut conn = connect(&redis).await;
        for one_command in ["1", ""] {
            for (before, stores) in found() {
                let before = before.as_deref();
                put(&redis, &mut conn, "k", before).await;
                let stored: u8 = FILL
                    .key("k")
                    .key("k#filled")
                    .key("k#lease")
                    .arg("loaded")
                    .arg(60_000)
                    .arg("L")
                    .arg(&lease_record(1)[..])
                    .arg("k")
                    .arg("")
                    .arg(one_command)
                    .arg(5_000)
                    .invoke_async(&mut conn)
                    .await
                    .unwrap();
                let case = format!("one command: {one_command:?}, before: {before:?}");
                assert_eq!(stored == 1, stores, "{case}");
                let put_back = one_command == "1";
                check(&redis, &mut conn, "k", before, stores, put_back, &case).await;
            }
        }
        assert_eq!(
            redis.cli(&["XLEN", "k#filled"]),
            "2",
            "the waited-on fills told"
        );
    }

    /// `FILL_LEASED` decides a miss's fill as `FILL` does and leaves the same bytes behind
    /// when it does not store: one fill a call without the filled stream (as on a cluster: it
    /// answers 2 over a record waited on, and the caller announces), and every case at once
    /// with it (as on one server: the script announces the waited-on key, by its cache key,
    /// and answers 1), each key's answer in its own two bits.
    #[tokio::test]
    async fn the_lean_fill_decides_as_fill_does() {
        let redis = RedisServer::start();
        let mut conn = connect(&redis).await;
        // 1 stored, 2 stored over the record waited on and left to the caller to announce
        // (no stream given), 0 not stored.
        let expected = |before: Option<&[u8]>, stores: bool, stream: bool| match before {
            _ if !stores => 0,
            Some(record) if lease_waited(record) && !stream => 2,
            _ => 1,
        };
        let cases = found();
        for (before, stores) in &cases {
            let before = before.as_deref();
            put(&redis, &mut conn, "catalog:k", before).await;
            let answer: u64 = FILL_LEASED
                .key("catalog:k")
                .arg("loaded")
                .arg(60_000)
                .arg(&lease_record(1)[..])
                .arg(5_000)
                .invoke_async(&mut conn)
                .await
                .unwrap();
            let case = format!("alone, before: {before:?}");
            assert_eq!(answer, expected(before, *stores, false), "{case}");
            check(&redis, &mut conn, "catalog:k", before, *stores, true, &case).await;
        }
        assert_eq!(
            redis.cli(&["EXISTS", "catalog#filled"]),
            "0",
            "without the stream, the caller tells"
        );

        let key = |i: usize| format!("catalog:k{i}");
        let mut fills = FILL_LEASED.prepare_invoke();
        for (i, (before, _)) in cases.iter().enumerate() {
            put(&redis, &mut conn, &key(i), before.as_deref()).await;
            fills
                .key(key(i))
                .arg("loaded")
                .arg(60_000)
                .arg(&lease_record(1)[..]);
        }
        let answer: u64 = fills
            .key("catalog#filled")
            .arg(5_000)
            .invoke_async(&mut conn)
            .await
            .unwrap();
        for (i, (before, stores)) in cases.iter().enumerate() {
            let before = before.as_deref();
            let case = format!("together, key {i}, before: {before:?}");
            assert_eq!(
                (answer >> (2 * i)) & 3,
                expected(before, *stores, true),
                "{case}"
            );
            check(&redis, &mut conn, &key(i), before, *stores, true, &case).await;
        }
        let told: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg("catalog#filled")
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        let told: Vec<_> = told.into_iter().flat_map(|(_, fields)| fields).collect();
        assert_eq!(
            told,
            [("k".to_owned(), "k1".to_owned())],
            "the waited-on key told, by its cache key"
        );
    }
}

#[cfg(test)]
mod copies {
    use std::path::PathBuf;

    /// The clients' copies of the scripts, as JSON: `{"NAME": "source", …}` in name order.
    const COPIES: [&str; 2] = [
        "clients/python/src/strata_cache/scripts.json",
        "clients/node/src/scripts.json",
    ];

    /// The Python and Node clients run the very texts this crate runs. After changing a
    /// script, `STRATA_BLESS=1 cargo test -p strata-redis --lib copies` rewrites the copies.
    #[test]
    fn the_clients_carry_the_same_scripts() {
        let scripts: std::collections::BTreeMap<_, _> = super::protocol_scripts().collect();
        let json = serde_json::to_string_pretty(&scripts).unwrap() + "\n";
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        for copy in COPIES {
            let path = root.join(copy);
            if std::env::var_os("STRATA_BLESS").is_some() {
                std::fs::write(&path, &json).unwrap();
            }
            let theirs = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                theirs == json,
                "{copy} differs from the scripts of strata-redis: run \
                 STRATA_BLESS=1 cargo test -p strata-redis --lib copies"
            );
        }
    }
}
