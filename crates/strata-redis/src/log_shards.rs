//! A namespace's log in parts (shards), for namespaces too hot for one stream on one master:
//! which part an invalidation goes to, how many parts every instance agrees on, and one
//! subscription over the parts' followers.

use std::time::Duration;

use strata::Error;
use strata::invalidation::{LogEvent, Position, Target};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The most parts a namespace's log may be split into: each is a blocking reader per
/// following instance, so more would cost connections, not add throughput.
pub const MAX_LOG_SHARDS: usize = 64;

/// The part an invalidation goes to. A key's by the key's hash, so that one key's
/// invalidations stay in order; a tag's by the tag's; a clear to part 0. (Order between
/// parts does not matter: every invalidation only drops entries, and the L2 is fenced by
/// the loads' leases, not by the log.)
pub(crate) fn shard_of(target: &Target, shards: usize) -> usize {
    let name = match target {
        _ if shards <= 1 => return 0,
        Target::Key(key) => key,
        Target::Tag(tag) => tag,
        Target::Clear => return 0,
    };
    // Below MAX_LOG_SHARDS: the remainder fits.
    usize::try_from(fnv1a(name.as_bytes()) % shards as u64).unwrap_or(0)
}

/// 64-bit FNV-1a: the same for every process, version and platform, as the choice of a part
/// must be (std's hasher is seeded per process).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The count every instance uses for `namespace`: the one stored in Redis (`stored`, written
/// by the first instance to follow or publish), else the one configured, else 1. An instance
/// configured otherwise than what is stored is refused: it would publish to parts nobody
/// reads, or not read parts others publish to.
pub(crate) fn agree(
    namespace: &str,
    configured: Option<usize>,
    stored: Option<&str>,
) -> Result<usize, Error> {
    if let Some(n) = configured
        && !(1..=MAX_LOG_SHARDS).contains(&n)
    {
        return Err(Error::Config(format!(
            "namespace `{namespace}`: a log splits into 1 to {MAX_LOG_SHARDS} shards, not {n}"
        )));
    }
    let Some(stored) = stored else {
        return Ok(configured.unwrap_or(1));
    };
    let agreed = stored
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LOG_SHARDS).contains(n))
        .ok_or_else(|| {
            Error::Config(format!(
                "namespace `{namespace}`: its log's shard count in Redis is {stored:?}, not a \
                 number from 1 to {MAX_LOG_SHARDS}"
            ))
        })?;
    match configured {
        Some(n) if n != agreed => Err(Error::Config(format!(
            "namespace `{namespace}`: its log is split into {agreed} shards in Redis, this \
             instance is configured with {n}; configure every instance alike (to change the \
             count, stop every instance of the namespace and delete the count's key)"
        ))),
        _ => Ok(agreed),
    }
}

/// Passes the parts' events on to the cache as one log. Invalidations, resyncs and lease
/// releases go on as they come; a part's report that it caught up goes on dated by the part
/// that reported least recently, since the log as a whole is caught up only that far.
pub(crate) async fn merge(
    mut parts: mpsc::UnboundedReceiver<(usize, LogEvent)>,
    cache: mpsc::UnboundedSender<LogEvent>,
    shards: usize,
) {
    // Each part's follower read its position when following began: caught up as of then.
    let mut reported = vec![Instant::now(); shards];
    loop {
        let next = tokio::select! {
            next = parts.recv() => next,
            () = cache.closed() => return,
        };
        let Some((shard, event)) = next else { return };
        let event = match event {
            LogEvent::CaughtUp { lag, position, .. } => {
                if let Some(at) = reported.get_mut(shard) {
                    *at = Instant::now();
                }
                let oldest = reported.iter().min().copied().unwrap_or_else(Instant::now);
                LogEvent::CaughtUp {
                    lag,
                    age: oldest.elapsed(),
                    position,
                }
            }
            other => other,
        };
        if cache.send(event).is_err() {
            return;
        }
    }
}

/// A part's report that it is caught up (delivered as far as `position`), before [`merge`]
/// dates it.
pub(crate) fn caught_up(lag: Option<Duration>, position: Option<Position>) -> LogEvent {
    LogEvent::CaughtUp {
        lag,
        age: Duration::ZERO,
        position,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_parts_are_the_ones_chosen() {
        assert!(strata_testkit::protocol::says(
            "of 3 parts, `product:42` goes to part 0, `product:43` to part 1, `product:47` to part 2"
        ));
        let key = |k: &str| Target::Key(k.into());
        for (k, part) in [("product:42", 0), ("product:43", 1), ("product:47", 2)] {
            assert_eq!(shard_of(&key(k), 3), part, "{k}");
        }
        assert_eq!(shard_of(&Target::Clear, 3), 0);
    }

    #[test]
    fn parts_are_chosen_stably_and_spread() {
        let key = |k: &str| Target::Key(k.into());
        // Fixed for ever: instances of different versions must agree.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(shard_of(&key("42"), 1), 0);
        assert_eq!(shard_of(&Target::Clear, 8), 0);
        let mut counts = [0; 4];
        for i in 0..4_000 {
            counts[shard_of(&key(&format!("product:{i}")), 4)] += 1;
        }
        assert!(
            counts.iter().all(|c| (800..1_200).contains(c)),
            "{counts:?}"
        );
        assert_eq!(
            shard_of(&Target::Tag("t".into()), 4),
            shard_of(&key("t"), 4)
        );
    }

    #[test]
    fn instances_agree_or_are_refused() {
        assert_eq!(agree("ns", None, None).unwrap(), 1);
        assert_eq!(agree("ns", Some(4), None).unwrap(), 4);
        assert_eq!(agree("ns", None, Some("4")).unwrap(), 4);
        assert_eq!(agree("ns", Some(4), Some("4")).unwrap(), 4);
        for (configured, stored) in [
            (Some(2), Some("4")),
            (Some(0), None),
            (Some(MAX_LOG_SHARDS + 1), None),
            (None, Some("x")),
            (None, Some("0")),
            (Some(1), Some("")),
        ] {
            let e = agree("ns", configured, stored).unwrap_err();
            assert!(
                matches!(&e, Error::Config(m) if m.contains("`ns`")),
                "{configured:?} {stored:?}: {e}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_log_is_caught_up_as_far_as_its_slowest_part() {
        let (parts, from) = mpsc::unbounded_channel();
        let (to, mut cache) = mpsc::unbounded_channel();
        tokio::spawn(merge(from, to, 2));
        tokio::time::sleep(Duration::from_millis(30)).await;
        parts.send((0, caught_up(None, None))).unwrap();
        // Part 1 has not reported since following began, 30 ms ago.
        let Some(LogEvent::CaughtUp { age, .. }) = cache.recv().await else {
            panic!("a report")
        };
        assert_eq!(age, Duration::from_millis(30));
        parts.send((1, caught_up(None, None))).unwrap();
        let Some(LogEvent::CaughtUp { age, .. }) = cache.recv().await else {
            panic!("a report")
        };
        assert_eq!(age, Duration::ZERO);
        parts.send((1, LogEvent::Resync)).unwrap();
        assert_eq!(cache.recv().await, Some(LogEvent::Resync));
    }
}
