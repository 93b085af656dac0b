//! Value codecs: how a typed value becomes the bytes stored in L2.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// How values are encoded in L2.
///
/// A closed set rather than a trait: serde's generic methods would make a codec trait either not
/// object-safe or slow (type-erased serialisation), and a fixed id per codec lets every reader
/// decode any entry by the codec byte in its envelope, whatever codec its own cache writes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Codec {
    /// JSON (`serde_json`): readable by any language and by humans. The default.
    #[default]
    Json,
    /// MessagePack (`rmp-serde`, structs as maps): smaller and faster, still language-neutral.
    MessagePack,
}

impl Codec {
    /// The byte identifying this codec in the L2 envelope.
    pub const fn id(self) -> u8 {
        match self {
            Codec::Json => 1,
            Codec::MessagePack => 2,
        }
    }

    /// The codec with envelope byte `id`, if it is one this version knows.
    pub const fn from_id(id: u8) -> Option<Codec> {
        match id {
            1 => Some(Codec::Json),
            2 => Some(Codec::MessagePack),
            _ => None,
        }
    }

    /// Appends the encoding of `value` to `out`.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Codec::Json => serde_json::to_writer(out, value).map_err(|e| e.to_string()),
            Codec::MessagePack => {
                rmp_serde::encode::write_named(out, value).map_err(|e| e.to_string())
            }
        }
    }

    /// Decodes a value from `bytes`.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, String> {
        match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Codec::MessagePack => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Record {
        id: u64,
        name: String,
        tags: Vec<String>,
        price: Option<i64>,
        bytes: Vec<u8>,
    }

    fn record() -> impl Strategy<Value = Record> {
        (
            any::<u64>(),
            ".{0,40}",
            proptest::collection::vec(".{0,10}", 0..5),
            any::<Option<i64>>(),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(id, name, tags, price, bytes)| Record {
                id,
                name,
                tags,
                price,
                bytes,
            })
    }

    proptest! {
        #[test]
        fn every_codec_round_trips(value in record(), msgpack in any::<bool>()) {
            let codec = if msgpack { Codec::MessagePack } else { Codec::Json };
            let mut out = Vec::new();
            codec.encode(&value, &mut out).unwrap();
            prop_assert_eq!(codec.decode::<Record>(&out).unwrap(), value);
        }

        #[test]
        fn arbitrary_bytes_are_an_error_or_a_value(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            msgpack in any::<bool>(),
        ) {
            let codec = if msgpack { Codec::MessagePack } else { Codec::Json };
            // Foreign bytes must not panic (a value of the wrong shape is an error).
            let _ = codec.decode::<Record>(&bytes);
            let _ = codec.decode::<serde_json::Value>(&bytes);
        }
    }
}
