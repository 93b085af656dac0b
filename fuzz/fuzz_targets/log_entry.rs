//! The invalidation log's entry decoder: bytes from a stream or channel any client can write
//! to. An error or an invalidation, never a panic; what decodes encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::invalidation::Invalidation;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(invalidation) = Invalidation::decode(bytes) {
        let again = Invalidation::decode(&invalidation.encode());
        assert_eq!(again.ok(), Some(invalidation));
    }
});
