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
