//! RESP2 replies, parsed straight out of a connection's read buffer.
//!
//! Why our own: the `redis` crate's parser is built from parser combinators that keep their
//! state across partial reads; on the engine's connection it cost about as much as
//! everything else an L2 hit does on the client (BENCHMARKS.md, "Our own connection"). The
//! engine's connection speaks RESP2 only, and its replies are few kinds: this parser reads
//! them in one pass and, when a reply is not complete yet, simply starts again from its
//! first byte once more has arrived (a reply spans reads only when it is large, and a bulk
//! string's body is skipped by its length, not scanned). Error replies go through the
//! `redis` crate's own parser, so they are classified as everywhere else.

use redis::{Cmd, ErrorKind, RedisError, RedisResult, Value};

/// One argument of a command: bytes as they are, or a number written in decimal.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg<'a> {
    Bytes(&'a [u8]),
    Int(u64),
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Arg::Bytes(bytes)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Self {
        Arg::Bytes(s.as_bytes())
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(s: &'a String) -> Self {
        Arg::Bytes(s.as_bytes())
    }
}

impl From<u64> for Arg<'_> {
    fn from(n: u64) -> Self {
        Arg::Int(n)
    }
}

/// Writes the command `args` (its name first) as clients send commands: an array of bulk
/// strings. The engine's connection calls this on its write buffer, so an argument is copied
/// once, from the caller's bytes to the buffer, where building a `redis::Cmd` first took two
/// allocations and a second copy (about 1.8k instructions of an L2 read's 29k, 5.3k of a
/// miss's 55k, callgrind).
pub(crate) fn encode(args: &[Arg<'_>], out: &mut Vec<u8>) {
    // Room for the bytes and, for each argument, its header and a number: one reservation.
    let long: usize = args
        .iter()
        .map(|a| match a {
            Arg::Bytes(b) => b.len(),
            Arg::Int(_) => 20,
        })
        .sum();
    out.reserve(long + 16 * (args.len() + 1));
    let mut digits = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(digits.format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        let mut number = itoa::Buffer::new();
        let bytes = match *arg {
            Arg::Bytes(b) => b,
            Arg::Int(n) => number.format(n).as_bytes(),
        };
        out.push(b'$');
        out.extend_from_slice(digits.format(bytes.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
}

/// The command `args` as a `redis::Cmd`, for the connections of the `redis` crate.
pub(crate) fn cmd(args: &[Arg<'_>]) -> Cmd {
    let mut cmd = Cmd::new();
    for arg in args {
        match *arg {
            Arg::Bytes(b) => cmd.arg(b),
            Arg::Int(n) => cmd.arg(n),
        };
    }
    cmd
}

/// The deepest nesting of arrays accepted: the engine's replies nest two deep at most
/// (`XREAD`); deeper input is not a server talking to us.
const MAX_DEPTH: usize = 16;

/// The longest bulk string accepted (Redis's own `proto-max-bulk-len` default).
const MAX_BULK: usize = 512 * 1024 * 1024;

/// Room reserved up front for an array's elements, at most: a length read from the wire is
/// not trusted with memory before its elements have arrived.
const MAX_PREALLOCATED: usize = 1024;

/// The first complete reply at the start of `buf` and how many bytes it took; `None` if it
/// has not all arrived yet. An error means the bytes are not RESP2 (the connection is no
/// longer in step with the server and must be dropped).
pub(crate) fn parse(buf: &[u8]) -> RedisResult<Option<(Value, usize)>> {
    value(buf, 0, 0)
}

fn value(buf: &[u8], at: usize, depth: usize) -> RedisResult<Option<(Value, usize)>> {
    let Some(kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some(end) = line_end(buf, at + 1) else {
        return Ok(None);
    };
    let line = &buf[at + 1..end];
    let next = end + 2;
    Ok(Some(match kind {
        b'+' if line == b"OK" => (Value::Okay, next),
        b'+' => (
            Value::SimpleString(
                String::from_utf8(line.to_vec()).map_err(|_| invalid("a status line"))?,
            ),
            next,
        ),
        b'-' => (redis::parse_redis_value(&buf[at..next])?, next),
        b':' => (Value::Int(number(line)?), next),
        b'$' => {
            let len = number(line)?;
            if len == -1 {
                return Ok(Some((Value::Nil, next)));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= MAX_BULK)
                .ok_or_else(|| invalid("a bulk string's length"))?;
            let Some(body) = buf.get(next..next + len + 2) else {
                return Ok(None);
            };
            if &body[len..] != b"\r\n" {
                return Err(invalid("the end of a bulk string"));
            }
            (Value::BulkString(body[..len].to_vec()), next + len + 2)
        }
        b'*' => {
            let count = number(line)?;
            if count == -1 {
                return Ok(Some((Value::Nil, next)));
            }
            let count = usize::try_from(count).map_err(|_| invalid("an array's length"))?;
            if depth >= MAX_DEPTH {
                return Err(invalid("nesting this deep"));
            }
            let mut items = Vec::with_capacity(count.min(MAX_PREALLOCATED));
            let mut pos = next;
            for _ in 0..count {
                let Some((item, after)) = value(buf, pos, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                pos = after;
            }
            (Value::Array(items), pos)
        }
        _ => return Err(invalid("a reply's type byte")),
    }))
}

/// Where the line starting at `from` ends (the index of its `\r`), if it has arrived.
fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    let newline = rest.iter().position(|&b| b == b'\n')?;
    // A bare `\n` is not a line end in RESP; caught as a bad number or type byte after.
    Some(from + newline.checked_sub(1)?).filter(|&cr| buf[cr] == b'\r')
}

fn number(line: &[u8]) -> RedisResult<i64> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("a number"))
}

fn invalid(what: &'static str) -> RedisError {
    RedisError::from((
        ErrorKind::Parse,
        "the server's reply is not RESP2",
        format!("unexpected bytes in {what}"),
    ))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use redis::Value;

    use super::{Arg, cmd, encode as encode_command, parse};

    /// RESP2 bytes of `v` (the kinds a RESP2 server sends).
    fn encode(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Nil => out.extend_from_slice(b"$-1\r\n"),
            Value::Okay => out.extend_from_slice(b"+OK\r\n"),
            Value::SimpleString(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            Value::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            Value::BulkString(b) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for item in items {
                    encode(item, out);
                }
            }
            other => unreachable!("not generated: {other:?}"),
        }
    }

    fn reply() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            Just(Value::Okay),
            "[a-zA-Z0-9 ]{0,12}"
                .prop_filter("not OK", |s| s != "OK")
                .prop_map(Value::SimpleString),
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::BulkString),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Value::Array)
        })
    }

    fn arg() -> impl Strategy<Value = (Vec<u8>, Option<u64>)> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| (b, None)),
            any::<u64>().prop_map(|n| (Vec::new(), Some(n))),
        ]
    }

    proptest! {
        /// A command is written byte for byte as the `redis` crate writes it.
        #[test]
        fn commands_are_written_as_the_redis_crate_writes_them(
            args in proptest::collection::vec(arg(), 1..12),
        ) {
            let args: Vec<Arg<'_>> = args
                .iter()
                .map(|(bytes, n)| n.map_or(Arg::Bytes(bytes), Arg::Int))
                .collect();
            let mut out = b"before".to_vec();
            encode_command(&args, &mut out);
            let mut expected = b"before".to_vec();
            expected.extend_from_slice(&cmd(&args).get_packed_command());
            prop_assert_eq!(out, expected);
        }

        /// Every reply reads back as itself, as the `redis` crate reads it, and from no
        /// prefix of its bytes: a partial reply waits for more.
        #[test]
        fn replies_read_back_whole_and_never_from_a_prefix(v in reply(), extra in any::<u8>()) {
            let mut bytes = Vec::new();
            encode(&v, &mut bytes);
            let len = bytes.len();
            bytes.push(extra);
            let (parsed, used) = parse(&bytes).unwrap().expect("a whole reply");
            prop_assert_eq!(used, len);
            prop_assert_eq!(&parsed, &redis::parse_redis_value(&bytes[..len]).unwrap());
            prop_assert_eq!(parsed, v);
            for cut in 0..len {
                prop_assert!(parse(&bytes[..cut]).unwrap().is_none(), "prefix of {} bytes", cut);
            }
        }

        /// Whatever arrives, the parser answers (a reply, not yet, or an error) and never
        /// claims more bytes than it was given.
        #[test]
        fn foreign_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Ok(Some((_, used))) = parse(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }

        /// The same with a valid type byte and line up front, where parsing goes deepest.
        #[test]
        fn foreign_bodies_never_panic(
            head in prop_oneof![Just(b'*'), Just(b'$'), Just(b'+'), Just(b'-'), Just(b':')],
            n in -3i64..40,
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = vec![head];
            bytes.extend_from_slice(format!("{n}\r\n").as_bytes());
            bytes.extend_from_slice(&body);
            if let Ok(Some((_, used))) = parse(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }
    }

    #[test]
    fn server_errors_are_the_redis_crates_and_bad_bytes_are_errors() {
        let (v, used) = parse(b"-WRONGTYPE Operation against a key\r\n+OK\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(used, 36);
        let err = v.extract_error().unwrap_err();
        assert_eq!(err.code(), Some("WRONGTYPE"));
        for bad in [
            &b"$3\r\nabcd\r\n"[..],
            b"?x\r\n",
            b":12a\r\n",
            b"$-2\r\n",
            b"*-5\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "*1\r\n".repeat(40);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
