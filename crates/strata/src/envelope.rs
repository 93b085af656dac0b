//! The L2 envelope: a small versioned binary header in front of the encoded value.
//!
//! The header carries what another instance needs to treat the entry exactly as the writer did:
//! when it was created, when it turns stale (soft expiry), when it expires (hard expiry), how long
//! it may still serve as a fail-safe fallback, its tags and its stamp. Layout, all integers
//! little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 3 | magic `FF 53 54` (`0xFF` never starts UTF-8 text, so JSON and strings are told apart) |
//! | 1 | format version, `1` |
//! | 1 | codec id ([`Codec::id`]) |
//! | 1 | flags: bit 0 = negative entry ("not found", empty payload) |
//! | 8 × 4 | created, fresh until, expires, stale until (ms since the Unix epoch) |
//! | 8 | stamp: a random number drawn by the write that stored the entry (see [`stamp`]) |
//! | 4 | duration of the load that produced the value, ms |
//! | 2 | tag count, then per tag: 2-byte length + UTF-8 bytes |
//! | rest | the payload, encoded with the codec |
//!
//! [`decode`] checks every field and never panics; anything it cannot vouch for is an
//! [`Error::Decode`], which readers count and treat as a miss.
//!
//! # Load leases
//! While an instance loads a key that L2 lacks, the data key holds its **lease record**
//! instead of a value ([`lease_record`]): 12 bytes, `FF 53 4C` (`\xFFSL`), the format version
//! `1`, then the holder's token (8 bytes), and a 13th, `W`, once another reader waits on it
//! (the fill then announces itself). Taking it is the read itself (`SET … NX GET`), so a
//! miss costs one round trip; the fill stores its value only if the record is still there —
//! an invalidation or a write in between removed or replaced it, and the stale value is
//! refused. Stores hide lease records from plain reads; a reader in another stack sees bytes
//! that are not JSON (`0xFF` starts no UTF-8 text) and treats them as a miss.

use crate::codec::Codec;
use crate::error::Error;

const MAGIC: [u8; 3] = [0xFF, b'S', b'T'];
const LEASE_MAGIC: [u8; 3] = [0xFF, b'S', b'L'];
/// Appended to a lease record by a reader that waits on it.
const WAITED: u8 = b'W';
/// Where the stamp sits in an envelope.
pub const STAMP_OFFSET: usize = 3 + 1 + 1 + 1 + 8 * 4;
/// The format version this crate writes.
pub const VERSION: u8 = 1;
const FLAG_NEGATIVE: u8 = 1;
const KNOWN_FLAGS: u8 = FLAG_NEGATIVE;
const FIXED_LEN: usize = 3 + 1 + 1 + 1 + 8 * 4 + 8 + 4 + 2;
/// The most tags one entry may carry.
pub const MAX_TAGS: usize = 64;

/// The life of one entry, in milliseconds since the Unix epoch.
///
/// `created <= fresh_until <= expires <= stale_until` always holds for a decoded entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    /// When the value was produced.
    pub created: u64,
    /// Until when it is fresh; after it, served stale while being refreshed (soft expiry).
    pub fresh_until: u64,
    /// When it expires (hard TTL): after it, it is served only as a fail-safe fallback.
    pub expires: u64,
    /// Until when it may serve as a fail-safe fallback.
    pub stale_until: u64,
}

impl Times {
    fn is_ordered(&self) -> bool {
        self.created <= self.fresh_until
            && self.fresh_until <= self.expires
            && self.expires <= self.stale_until
    }
}

/// The fixed part of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The codec of the payload.
    pub codec: Codec,
    /// A negative entry: the key is known not to exist; the payload is empty.
    pub negative: bool,
    /// The entry's timestamps.
    pub times: Times,
    /// Drawn at random by the write that stored the entry: a refresh of the entry is stored
    /// only if L2 still holds the one with the stamp it read.
    pub stamp: u64,
    /// How long the load that produced the value took, in milliseconds.
    pub load_ms: u32,
}

/// A decoded envelope, borrowing its payload from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The fixed header.
    pub header: Header,
    /// The entry's tags.
    pub tags: Vec<String>,
    /// The encoded value (empty for a negative entry).
    pub payload: &'a [u8],
}

/// Writes the header and tags into `out`; the caller appends the payload after it.
///
/// Fails when there are more than [`MAX_TAGS`] tags or a tag is longer than 65,535 bytes.
pub fn write_header(out: &mut Vec<u8>, header: &Header, tags: &[String]) -> Result<(), Error> {
    if tags.len() > MAX_TAGS {
        return Err(Error::Config(format!(
            "{} tags on one entry, over the limit of {MAX_TAGS}",
            tags.len()
        )));
    }
    out.reserve(FIXED_LEN + tags.iter().map(|t| t.len() + 2).sum::<usize>());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(header.codec.id());
    out.push(if header.negative { FLAG_NEGATIVE } else { 0 });
    let t = &header.times;
    for v in [
        t.created,
        t.fresh_until,
        t.expires,
        t.stale_until,
        header.stamp,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&header.load_ms.to_le_bytes());
    out.extend_from_slice(&(tags.len() as u16).to_le_bytes());
    for tag in tags {
        let len = u16::try_from(tag.len())
            .map_err(|_| Error::Config(format!("tag of {} bytes is too long", tag.len())))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(tag.as_bytes());
    }
    Ok(())
}

/// Whether `bytes` start like an envelope (as opposed to a raw value or foreign data).
pub fn is_envelope(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// Decodes an envelope, validating every field.
pub fn decode(bytes: &[u8]) -> Result<Envelope<'_>, Error> {
    let mut r = Reader(bytes);
    if r.take(3)? != MAGIC {
        return Err(Error::Decode("not a Strata envelope (bad magic)".into()));
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(Error::Decode(format!(
            "unsupported envelope version {version}"
        )));
    }
    let codec_id = r.u8()?;
    let codec = Codec::from_id(codec_id)
        .ok_or_else(|| Error::Decode(format!("unknown codec id {codec_id}")))?;
    let flags = r.u8()?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Error::Decode(format!("unknown flags {flags:#04x}")));
    }
    let times = Times {
        created: r.u64()?,
        fresh_until: r.u64()?,
        expires: r.u64()?,
        stale_until: r.u64()?,
    };
    if !times.is_ordered() {
        return Err(Error::Decode("timestamps out of order".into()));
    }
    let stamp = r.u64()?;
    let load_ms = u32::from_le_bytes(r.array()?);
    let tag_count = usize::from(u16::from_le_bytes(r.array()?));
    if tag_count > MAX_TAGS {
        return Err(Error::Decode(format!("{tag_count} tags, over {MAX_TAGS}")));
    }
    let mut tags = Vec::with_capacity(tag_count);
    for _ in 0..tag_count {
        let len = usize::from(u16::from_le_bytes(r.array()?));
        let tag = std::str::from_utf8(r.take(len)?)
            .map_err(|_| Error::Decode("tag is not UTF-8".into()))?;
        tags.push(tag.to_owned());
    }
    let negative = flags & FLAG_NEGATIVE != 0;
    if negative && !r.0.is_empty() {
        return Err(Error::Decode("negative entry with a payload".into()));
    }
    Ok(Envelope {
        header: Header {
            codec,
            negative,
            times,
            stamp,
            load_ms,
        },
        tags,
        payload: r.0,
    })
}

/// The stamp of an envelope, read without decoding the rest; `None` for anything else.
pub fn stamp(bytes: &[u8]) -> Option<u64> {
    if !is_envelope(bytes) {
        return None;
    }
    let raw = bytes.get(STAMP_OFFSET..STAMP_OFFSET + 8)?;
    Some(u64::from_le_bytes(raw.try_into().ok()?))
}

/// The lease record of the holder `token` (see [Load leases](self#load-leases)).
pub fn lease_record(token: u64) -> [u8; 12] {
    let mut out = [0; 12];
    out[..3].copy_from_slice(&LEASE_MAGIC);
    out[3] = VERSION;
    out[4..].copy_from_slice(&token.to_le_bytes());
    out
}

/// The holder's token if `bytes` are a lease record (waited on or not).
pub fn lease_holder(bytes: &[u8]) -> Option<u64> {
    let record = match bytes.len() {
        12 => bytes,
        13 if bytes[12] == WAITED => &bytes[..12],
        _ => return None,
    };
    if record[..3] != LEASE_MAGIC || record[3] != VERSION {
        return None;
    }
    Some(u64::from_le_bytes(record[4..].try_into().ok()?))
}

/// Whether `bytes` are a lease record another reader marked waited on: its load's end is
/// then announced.
pub fn lease_waited(bytes: &[u8]) -> bool {
    bytes.len() == 13 && lease_holder(bytes).is_some()
}

/// A cursor that fails instead of panicking when the input runs out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.0.len() < n {
            return Err(Error::Decode("envelope is truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(times: Times, negative: bool, codec: Codec) -> Header {
        Header {
            codec,
            negative,
            times,
            stamp: 7,
            load_ms: 12,
        }
    }

    fn ordered_times() -> impl Strategy<Value = Times> {
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(a, b, c, d)| {
            let created = u64::from(a);
            let fresh_until = created + u64::from(b);
            let expires = fresh_until + u64::from(c);
            Times {
                created,
                fresh_until,
                expires,
                stale_until: expires + u64::from(d),
            }
        })
    }

    proptest! {
        #[test]
        fn round_trips(
            times in ordered_times(),
            tags in proptest::collection::vec(".{0,40}", 0..MAX_TAGS),
            payload in proptest::collection::vec(any::<u8>(), 0..512),
            msgpack in any::<bool>(),
        ) {
            let codec = if msgpack { Codec::MessagePack } else { Codec::Json };
            let h = header(times, false, codec);
            let mut out = Vec::new();
            write_header(&mut out, &h, &tags).unwrap();
            out.extend_from_slice(&payload);
            let env = decode(&out).unwrap();
            prop_assert_eq!(env.header, h);
            prop_assert_eq!(env.tags, tags);
            prop_assert_eq!(env.payload, &payload[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_envelopes_never_panic(
            times in ordered_times(),
            flip in any::<(usize, u8)>(),
            cut in any::<usize>(),
        ) {
            let mut out = Vec::new();
            write_header(&mut out, &header(times, false, Codec::Json), &["a".into(), "bc".into()]).unwrap();
            out.extend_from_slice(b"{\"x\":1}");
            let i = flip.0 % out.len();
            out[i] ^= flip.1;
            out.truncate(cut % (out.len() + 1));
            let _ = decode(&out);
        }
    }

    /// The hex lines of the protocol document's example `name`, each as bytes.
    fn documented(name: &str) -> Vec<Vec<u8>> {
        strata_testkit::protocol::example(name)
            .into_iter()
            .map(|l| {
                l.split_whitespace()
                    .map(|b| u8::from_str_radix(b, 16).expect("hex"))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_documented_envelope_is_what_is_written() {
        let created = 1_700_000_000_000;
        let h = Header {
            codec: Codec::Json,
            negative: false,
            times: Times {
                created,
                fresh_until: created + 60_000,
                expires: created + 120_000,
                stale_until: created + 300_000,
            },
            stamp: 0x0123_4567_89ab_cdef,
            load_ms: 12,
        };
        let mut written = Vec::new();
        write_header(&mut written, &h, &["product:42".to_owned()]).unwrap();
        Codec::Json
            .encode(
                &serde_json::json!({"id": 42, "name": "teapot"}),
                &mut written,
            )
            .unwrap();
        assert_eq!(documented("envelope").concat(), written);
        let read = decode(&written).unwrap();
        assert_eq!((read.header, read.tags), (h, vec!["product:42".to_owned()]));
        assert_eq!(read.payload, br#"{"id":42,"name":"teapot"}"#);
    }

    #[test]
    fn the_documented_lease_records_are_what_is_written() {
        let token = 0x1122_3344_5566_7788;
        let records = documented("lease");
        assert_eq!(records[0], lease_record(token));
        assert_eq!(records[1][..12], lease_record(token));
        assert_eq!(lease_holder(&records[1]), Some(token));
        assert!(lease_waited(&records[1]) && !lease_waited(&records[0]));
    }

    #[test]
    fn stamps_and_lease_records_are_read_in_place() {
        let t = Times {
            created: 1,
            fresh_until: 2,
            expires: 3,
            stale_until: 4,
        };
        let mut env = Vec::new();
        write_header(&mut env, &header(t, false, Codec::Json), &["t".into()]).unwrap();
        assert_eq!(stamp(&env), Some(7));
        assert_eq!(stamp(b"{}"), None);
        let record = lease_record(0xABCD);
        assert_eq!(&record[..4], b"\xFFSL\x01");
        assert_eq!(lease_holder(&record), Some(0xABCD));
        assert!(!is_envelope(&record) && decode(&record).is_err());
        assert_eq!(lease_holder(&env), None);
        assert_eq!(lease_holder(&record[..11]), None);
        let mut waited = record.to_vec();
        waited.push(b'W');
        assert_eq!(lease_holder(&waited), Some(0xABCD));
        assert!(lease_waited(&waited) && !lease_waited(&record));
        waited[12] = b'X';
        assert_eq!(lease_holder(&waited), None);
        assert_eq!(stamp(&record), None);
    }

    #[test]
    fn rejects_what_it_cannot_vouch_for() {
        let t = Times {
            created: 1,
            fresh_until: 2,
            expires: 3,
            stale_until: 4,
        };
        let mut good = Vec::new();
        write_header(&mut good, &header(t, false, Codec::Json), &[]).unwrap();
        assert!(decode(&good).is_ok());

        assert!(
            decode(b"{\"id\":1}").is_err(),
            "plain JSON is not an envelope"
        );
        assert!(decode(&good[..good.len() - 1]).is_err(), "truncated");
        let mut v = good.clone();
        v[3] = 9;
        assert!(matches!(decode(&v), Err(Error::Decode(m)) if m.contains("version 9")));
        let mut v = good.clone();
        v[4] = 77;
        assert!(matches!(decode(&v), Err(Error::Decode(m)) if m.contains("codec id 77")));
        let mut v = good.clone();
        v[5] = 0x80;
        assert!(decode(&v).is_err(), "unknown flag");

        let mut neg = Vec::new();
        write_header(&mut neg, &header(t, true, Codec::Json), &[]).unwrap();
        assert!(decode(&neg).unwrap().header.negative);
        neg.push(b'x');
        assert!(decode(&neg).is_err(), "negative entries carry no payload");

        let backwards = Times {
            created: 5,
            fresh_until: 4,
            expires: 6,
            stale_until: 7,
        };
        let mut v = Vec::new();
        write_header(&mut v, &header(backwards, false, Codec::Json), &[]).unwrap();
        assert!(decode(&v).is_err(), "timestamps out of order");

        let too_many: Vec<String> = (0..=MAX_TAGS).map(|i| i.to_string()).collect();
        assert!(write_header(&mut Vec::new(), &header(t, false, Codec::Json), &too_many).is_err());
    }
}
