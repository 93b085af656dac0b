//! The wire form of an [`Invalidation`]: JSON, so other languages can read and write it.

use serde::{Deserialize, Serialize};

use super::{Invalidation, Target};
use crate::error::Error;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    origin: String,
    op: Op,
    #[serde(default, borrow)]
    arg: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Key,
    Tag,
    Clear,
}

pub(super) fn encode(inv: &Invalidation) -> Vec<u8> {
    let (op, arg) = match &inv.target {
        Target::Key(k) => (Op::Key, Some(k.as_str().into())),
        Target::Tag(t) => (Op::Tag, Some(t.as_str().into())),
        Target::Clear => (Op::Clear, None),
    };
    let wire = Wire {
        origin: format!("{:016x}", inv.origin),
        op,
        arg,
    };
    // Serialising a struct of strings into a Vec cannot fail.
    serde_json::to_vec(&wire).unwrap_or_default()
}

pub(super) fn decode(bytes: &[u8]) -> Result<Invalidation, Error> {
    let wire: Wire<'_> = serde_json::from_slice(bytes)
        .map_err(|e| Error::Decode(format!("invalidation message: {e}")))?;
    let origin = u64::from_str_radix(&wire.origin, 16)
        .map_err(|_| Error::Decode(format!("invalidation origin {:?}", wire.origin)))?;
    let target = match (wire.op, wire.arg) {
        (Op::Key, Some(k)) => Target::Key(k.into_owned()),
        (Op::Tag, Some(t)) => Target::Tag(t.into_owned()),
        (Op::Clear, None) => Target::Clear,
        _ => return Err(Error::Decode("invalidation op and arg do not match".into())),
    };
    Ok(Invalidation { origin, target })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(origin in any::<u64>(), arg in any::<String>(), op in 0u8..3) {
            let target = match op {
                0 => Target::Key(arg),
                1 => Target::Tag(arg),
                _ => Target::Clear,
            };
            let inv = Invalidation { origin, target };
            prop_assert_eq!(decode(&encode(&inv)).unwrap(), inv);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn the_documented_entries_are_what_is_written() {
        let documented = strata_testkit::protocol::example("invalidations");
        let origin = 0xdead_beef;
        let written: Vec<Vec<u8>> = [
            Target::Key("product:42".into()),
            Target::Tag("category:7".into()),
            Target::Clear,
        ]
        .into_iter()
        .map(|target| encode(&Invalidation { origin, target }))
        .collect();
        assert_eq!(documented.len(), 3);
        for (doc, ours) in documented.iter().zip(&written) {
            assert_eq!(doc.as_bytes(), ours.as_slice());
            decode(doc.as_bytes()).unwrap();
        }
    }

    #[test]
    fn rejects_foreign_messages() {
        for bad in [
            &b"{\"service\":\"x\",\"key\":\"k\",\"timestamp\":1}"[..],
            b"{\"origin\":\"zz\",\"op\":\"key\",\"arg\":\"k\"}",
            b"{\"origin\":\"01\",\"op\":\"clear\",\"arg\":\"k\"}",
            b"{\"origin\":\"01\",\"op\":\"key\"}",
            b"\xff\x00",
        ] {
            assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
