//! The staleness check of `--version-field`: the versions of acknowledged writes, per key, and
//! whether a read older than one of them came back.
//!
//! A read is stale when it returns a version older than that of a write of its key which was
//! acknowledged *before the read was sent*. A write still in flight when the read was sent may
//! or may not be seen, and is not counted against it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// How many acknowledged writes each key remembers. A read is compared with the newest one
/// acknowledged before it was sent; older ones only matter for reads sent before them, which
/// are answered long before this many more writes of the same key are.
const KEPT: usize = 8;

/// Acknowledged writes per key.
#[derive(Default)]
pub(crate) struct Ledger {
    writes: Mutex<HashMap<u64, Vec<(Instant, i64)>>>,
}

impl Ledger {
    /// A write of `key` to `version` was acknowledged at `at`.
    pub(crate) fn acknowledged(&self, key: u64, version: i64, at: Instant) {
        let mut writes = self
            .writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let kept = writes.entry(key).or_default();
        kept.push((at, version));
        if kept.len() > KEPT {
            kept.remove(0);
        }
    }

    /// Whether a read of `key` sent at `sent` that returned `version` is stale.
    pub(crate) fn is_stale(&self, key: u64, version: i64, sent: Instant) -> bool {
        let writes = self
            .writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        writes.get(&key).is_some_and(|kept| {
            kept.iter()
                .filter(|(at, _)| *at < sent)
                .any(|(_, acked)| *acked > version)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_writes_acknowledged_before_the_read_count() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let ledger = Ledger::default();
        ledger.acknowledged(1, 5, ms(10));
        assert!(
            ledger.is_stale(1, 4, ms(11)),
            "older than an acknowledged write"
        );
        assert!(!ledger.is_stale(1, 5, ms(11)));
        assert!(!ledger.is_stale(1, 6, ms(11)), "newer is never stale");
        assert!(
            !ledger.is_stale(1, 4, ms(9)),
            "sent before the write was acknowledged"
        );
        assert!(!ledger.is_stale(2, 0, ms(11)), "another key");
        for v in 6..20 {
            ledger.acknowledged(1, v, ms(20 + v as u64));
        }
        assert!(ledger.is_stale(1, 18, ms(100)));
        assert!(!ledger.is_stale(1, 19, ms(100)));
    }
}
