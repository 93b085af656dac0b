//! What a response says of the cache in front of the service (`Cache-Status`, `X-Cache`,
//! `Age`), and the version it carries (`--version-field`).

use http::HeaderMap;
use serde_json::Value;

/// Whether a cache answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cache {
    /// Answered from a cache (fresh or stale).
    Hit,
    /// Forwarded to the origin.
    Miss,
    /// No header says.
    Unknown,
}

/// Reads, in order: `Cache-Status` (RFC 9211), `X-Cache` (Varnish, CDNs, nginx setups),
/// `Age`. The first one present decides.
///
/// With several caches in a chain, a hit in any of them is a hit: the origin did not answer.
pub(crate) fn cache_of(headers: &HeaderMap) -> Cache {
    let all = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
    };
    let status = all("cache-status");
    if !status.is_empty() {
        // `strata; hit; ttl=42, cdn; fwd=uri-miss`: a list of caches, each with parameters.
        let hit = status
            .iter()
            .flat_map(|v| v.split(','))
            .any(|member| member.split(';').skip(1).any(|p| p.trim() == "hit"));
        return if hit { Cache::Hit } else { Cache::Miss };
    }
    let x_cache = all("x-cache");
    if !x_cache.is_empty() {
        // `HIT`, `MISS`, `STALE`, `Hit from cloudfront`, `HIT, MISS` (two layers).
        let hit = x_cache.iter().any(|v| {
            let v = v.to_ascii_uppercase();
            v.contains("HIT") || v.contains("STALE")
        });
        return if hit { Cache::Hit } else { Cache::Miss };
    }
    match headers
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        Some(0) => Cache::Miss,
        Some(_) => Cache::Hit,
        None => Cache::Unknown,
    }
}

/// The number at `field` (`version`, or a dotted path: `data.version`) of a JSON body.
pub(crate) fn version_of(body: &[u8], field: &str) -> Option<i64> {
    let json: Value = serde_json::from_slice(body).ok()?;
    let mut at = &json;
    for part in field.split('.') {
        at = at.get(part)?;
    }
    at.as_i64()
        .or_else(|| at.as_str().and_then(|s| s.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cache_headers_read_as_the_caches_write_them() {
        for (pairs, expected) in [
            (vec![("cache-status", "strata; hit; ttl=42")], Cache::Hit),
            (vec![("cache-status", "strata; hit; ttl=-3")], Cache::Hit),
            (
                vec![(
                    "cache-status",
                    "strata; fwd=uri-miss; fwd-status=200; stored",
                )],
                Cache::Miss,
            ),
            (
                vec![("cache-status", "strata; fwd=uri-miss, cdn; hit")],
                Cache::Hit,
            ),
            // A parameter named like a hit is not one.
            (
                vec![("cache-status", "strata; fwd=miss; detail=hit")],
                Cache::Miss,
            ),
            (vec![("x-cache", "HIT")], Cache::Hit),
            (vec![("x-cache", "Hit from cloudfront")], Cache::Hit),
            (vec![("x-cache", "STALE")], Cache::Hit),
            (vec![("x-cache", "MISS")], Cache::Miss),
            (vec![("age", "12")], Cache::Hit),
            (vec![("age", "0")], Cache::Miss),
            // Cache-Status wins over the others.
            (
                vec![("cache-status", "strata; fwd=stale"), ("age", "3")],
                Cache::Miss,
            ),
            (vec![("content-type", "text/plain")], Cache::Unknown),
        ] {
            assert_eq!(cache_of(&headers(&pairs)), expected, "{pairs:?}");
        }
    }

    #[test]
    fn versions_are_read_at_their_path() {
        assert_eq!(version_of(br#"{"id":1,"version":7}"#, "version"), Some(7));
        assert_eq!(
            version_of(br#"{"data":{"version":"12"}}"#, "data.version"),
            Some(12)
        );
        assert_eq!(version_of(br#"{"version":null}"#, "version"), None);
        assert_eq!(version_of(b"not json", "version"), None);
        assert_eq!(version_of(br#"[1,2]"#, "version"), None);
    }
}
