//! How cache keys map to L2 keys, shared by every [`L2Store`](crate::L2Store) so that all of
//! them lay data out the same way.
//!
//! - data: `<namespace>:<key>` (so a service in another language can `GET product-service:42`);
//!   while a key is loaded it holds the loader's lease record (see
//!   [`envelope`](crate::envelope#load-leases));
//! - tag index: `<namespace>#tag:<tag>`, the set of data keys carrying the tag;
//! - refresh lease: `<namespace>#lease:<key>` (see [`Lease`](crate::Lease)), taken to reload a
//!   value L2 still holds (stale, or refreshed early);
//! - the stream that tells the instances waiting on a key's load that it ended
//!   `<namespace>#filled` (a waited-on lease record carries a `W`);
//! - invalidation log: the stream `<namespace>#log` and its sequence counter
//!   `<namespace>#log:seq`; what each instance applied of it, `<namespace>#acks` (a hash).
//!
//! Namespaces are restricted to `[A-Za-z0-9_.-]`, which makes the layout unambiguous: no
//! namespace can contain `:` or `#`, so no key of one namespace can name a key of another, and no
//! data key can be mistaken for an index. (With `a` and `a:b` both allowed, `a` + `b:c` and
//! `a:b` + `c` would be the same Redis key.) It also keeps namespaces free of glob characters,
//! so `SCAN MATCH <namespace>:*` needs no escaping.

use crate::error::Error;

/// Longest namespace accepted.
pub const MAX_NAMESPACE_LEN: usize = 128;

/// Checks that `namespace` is non-empty, at most [`MAX_NAMESPACE_LEN`] bytes, and only
/// `[A-Za-z0-9_.-]`.
pub fn validate_namespace(namespace: &str) -> Result<(), Error> {
    let ok = !namespace.is_empty()
        && namespace.len() <= MAX_NAMESPACE_LEN
        && namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "namespace {namespace:?} must be 1 to {MAX_NAMESPACE_LEN} characters of [A-Za-z0-9_.-]"
        )))
    }
}

/// The L2 key of a cache key.
pub fn data_key(namespace: &str, key: &str) -> String {
    // `concat` sizes the string once; `format!` grows it from empty, and names are made on
    // every L2 call.
    [namespace, ":", key].concat()
}

/// The L2 key of a tag's index.
pub fn tag_key(namespace: &str, tag: &str) -> String {
    [namespace, "#tag:", tag].concat()
}

/// The L2 key of the lease taken to refresh a key's value.
pub fn lease_key(namespace: &str, key: &str) -> String {
    [namespace, "#lease:", key].concat()
}

/// The key of a namespace's durable invalidation log (a Redis stream).
pub fn log_key(namespace: &str) -> String {
    [namespace, "#log"].concat()
}

/// The key of the sequence counter that numbers the log's entries without gaps, so that a
/// follower can tell when entries it had not read were trimmed away.
pub fn log_sequence_key(namespace: &str) -> String {
    [namespace, "#log:seq"].concat()
}

/// The stream on which the ends of waited-on loads are announced, so waiters need not poll.
pub fn filled_key(namespace: &str) -> String {
    [namespace, "#filled"].concat()
}

/// The hash in which each instance acknowledges how far it applied the namespace's log (see
/// [`acknowledged_writes`](crate::HybridCacheBuilder::acknowledged_writes)).
pub fn acks_key(namespace: &str) -> String {
    [namespace, "#acks"].concat()
}

/// The stream of the namespace's write-behind queue.
pub fn write_queue_key(namespace: &str) -> String {
    [namespace, "#wb"].concat()
}

/// The stream of write-behind entries that failed every attempt (dead letters).
pub fn dead_letter_key(namespace: &str) -> String {
    [namespace, "#wb:dead"].concat()
}

/// The `SCAN MATCH` patterns covering the values (lease records included) and tag indexes of
/// a namespace.
pub fn namespace_patterns(namespace: &str) -> [String; 2] {
    [format!("{namespace}:*"), format!("{namespace}#tag:*")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_restricted() {
        for ok in ["product-service", "a", "svc_1.v2"] {
            assert!(validate_namespace(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(MAX_NAMESPACE_LEN + 1);
        for bad in ["", "a:b", "a#b", "a*", "a b", "ü", long.as_str()] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layout() {
        assert_eq!(data_key("ns", "product:42"), "ns:product:42");
        assert_eq!(tag_key("ns", "category:7"), "ns#tag:category:7");
        assert_eq!(namespace_patterns("ns"), ["ns:*", "ns#tag:*"]);
        assert_eq!(lease_key("ns", "k"), "ns#lease:k");
        assert_eq!(filled_key("ns"), "ns#filled");
        assert_eq!(acks_key("ns"), "ns#acks");
        assert_eq!(write_queue_key("ns"), "ns#wb");
        assert_eq!(dead_letter_key("ns"), "ns#wb:dead");
        assert_eq!(
            (log_key("ns"), log_sequence_key("ns")),
            ("ns#log".into(), "ns#log:seq".into())
        );
    }
}
