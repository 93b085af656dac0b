//! The L2 read path's decoder: whatever bytes another process left under a key, decoding them
//! as an envelope and then its payload with the codec it names is an error or a value, never
//! a panic, a hang or an allocation the size of a lie; and the parts read in place (a lease
//! record's holder, an envelope's stamp) agree with the decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::envelope;

fuzz_target!(|bytes: &[u8]| {
    // A lease record is read without decoding; never both one and an envelope.
    let holder = envelope::lease_holder(bytes);
    let Ok(env) = envelope::decode(bytes) else {
        return;
    };
    assert!(holder.is_none());
    // The stamp a fill's fence compares, read in place, is the decoded one.
    assert_eq!(envelope::stamp(bytes), Some(env.header.stamp));
    // Whatever the header claims, the parts handed back lie inside the input.
    assert!(env.payload.len() <= bytes.len());
    assert!(env.tags.iter().map(String::len).sum::<usize>() <= bytes.len());
    let _ = env.header.codec.decode::<serde_json::Value>(env.payload);
    // A header that decoded writes back to the same bytes, tags included.
    let mut out = Vec::new();
    if envelope::write_header(&mut out, &env.header, &env.tags).is_ok() {
        out.extend_from_slice(env.payload);
        assert_eq!(envelope::decode(&out).ok().map(|e| e.header), Some(env.header));
    }
});
