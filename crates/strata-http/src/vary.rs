//! `Vary` (RFC 9111 §4.1): which request headers select among stored variants of a URL.

use http::header::VARY;
use http::{HeaderMap, HeaderName};

/// A response's `Vary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// `Vary: *`: no later request can be known to match; never served from cache.
    Any,
    /// The request headers that select the variant, lowercased, sorted and deduplicated (the
    /// same set in another order or case is the same variant key).
    Fields(Vec<HeaderName>),
}

impl Vary {
    /// The `Vary` of a response (all its field lines; `*` anywhere in any of them is
    /// [`Vary::Any`]). Names that are not valid header names are ignored; a line that is not
    /// visible ASCII cannot be read, so nothing can be known to match: [`Vary::Any`].
    pub fn of(response: &HeaderMap) -> Vary {
        let mut fields = Vec::new();
        for value in response.get_all(VARY) {
            let Ok(text) = value.to_str() else {
                return Vary::Any;
            };
            for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                if item == "*" {
                    return Vary::Any;
                }
                if let Ok(name) = HeaderName::from_bytes(item.as_bytes()) {
                    fields.push(name);
                }
            }
        }
        fields.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        fields.dedup();
        Vary::Fields(fields)
    }

    /// The part of the cache key this request's headers select: `name=value` per field,
    /// values of repeated lines joined by `", "` and whitespace trimmed, so that equivalent
    /// requests share a variant. `None` for [`Vary::Any`].
    pub fn secondary_key(&self, request: &HeaderMap) -> Option<String> {
        let Vary::Fields(fields) = self else {
            return None;
        };
        let mut key = String::new();
        for name in fields {
            let values: Vec<String> = request
                .get_all(name)
                .iter()
                .map(|v| escape(v.as_bytes().trim_ascii()))
                .collect();
            if !key.is_empty() {
                key.push('&');
            }
            key.push_str(name.as_str());
            key.push('=');
            key.push_str(&values.join(", "));
        }
        Some(key)
    }
}

/// A value as it goes into the key: visible ASCII as is, except the key's own separators
/// (`%`, `&`, `=`) and every other byte, which are percent-encoded — so no value can forge
/// another field or collide with a different byte string.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (b' '..=b'~').contains(&b) && !matches!(b, b'%' | b'&' | b'=') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn fields_are_normalised_and_star_wins() {
        let a = Vary::of(&map(&[
            ("vary", "Accept-Language, accept-encoding"),
            ("vary", "Accept-Encoding"),
        ]));
        let b = Vary::of(&map(&[("vary", "accept-encoding,ACCEPT-LANGUAGE")]));
        assert_eq!(a, b);
        assert_eq!(
            Vary::of(&map(&[("vary", "Accept"), ("vary", "*")])),
            Vary::Any
        );
        assert_eq!(Vary::of(&HeaderMap::new()), Vary::Fields(Vec::new()));
        assert_eq!(
            Vary::of(&map(&[("vary", "accept, *, accept-language")])),
            Vary::Any
        );
        let mut unreadable = map(&[("vary", "accept")]);
        unreadable.append(VARY, HeaderValue::from_bytes(b"x-caf\xe9").unwrap());
        assert_eq!(Vary::of(&unreadable), Vary::Any);
    }

    #[test]
    fn the_secondary_key_tells_variants_apart() {
        let vary = Vary::of(&map(&[("vary", "Accept-Encoding, Accept-Language")]));
        let gzip = vary
            .secondary_key(&map(&[("accept-encoding", " gzip ")]))
            .unwrap();
        let br = vary
            .secondary_key(&map(&[("accept-encoding", "br")]))
            .unwrap();
        let none = vary.secondary_key(&HeaderMap::new()).unwrap();
        assert_eq!(gzip, "accept-encoding=gzip&accept-language=");
        assert_ne!(gzip, br);
        assert_ne!(gzip, none);
        assert_eq!(Vary::Any.secondary_key(&HeaderMap::new()), None);
    }

    #[test]
    fn a_value_cannot_forge_another_field() {
        let one = Vary::of(&map(&[("vary", "Accept-Encoding")]));
        let two = Vary::of(&map(&[("vary", "Accept-Encoding, Accept-Language")]));
        let forged = one
            .secondary_key(&map(&[("accept-encoding", "x&accept-language=y")]))
            .unwrap();
        let real = two
            .secondary_key(&map(&[("accept-encoding", "x"), ("accept-language", "y")]))
            .unwrap();
        assert_ne!(forged, real);
        let mut odd = HeaderMap::new();
        odd.insert(
            "accept-encoding",
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        let mut other = HeaderMap::new();
        other.insert(
            "accept-encoding",
            HeaderValue::from_bytes(b"\xfe\xff").unwrap(),
        );
        assert_ne!(one.secondary_key(&odd), one.secondary_key(&other));
    }
}
