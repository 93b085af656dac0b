//! The reply parser of the engine's Redis connection: bytes from the network. A reply, "not
//! yet", or an error — never a panic, never more bytes claimed than given — and a reply it
//! reads is the reply the `redis` crate's own parser reads from the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(Some((value, used))) = strata_redis::parse_reply(bytes) {
        assert!(used <= bytes.len());
        let theirs = redis::parse_redis_value(&bytes[..used]);
        assert_eq!(theirs.ok(), Some(value));
    }
});
