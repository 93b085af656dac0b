//! The `Cache-Status` response header (RFC 9211) and the older `X-Cache`.

use std::fmt::Write;
use std::time::Duration;

use http::HeaderValue;

/// Why the cache went forward to the origin (RFC 9211 §2.2 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Forward {
    /// Not cacheable as a request (`no-store`, a cookie, …).
    Bypass,
    /// A method the cache does not store (unsafe methods are passed on and invalidate).
    Method,
    /// Nothing stored for the URI.
    UriMiss,
    /// Stored, but for another variant (`Vary`).
    VaryMiss,
    /// Stored but stale: revalidated or refetched.
    Stale,
    /// The request asked for a fresh copy (`no-cache`, `max-age=0`).
    Request,
}

impl Forward {
    fn as_str(self) -> &'static str {
        match self {
            Forward::Bypass => "bypass",
            Forward::Method => "method",
            Forward::UriMiss => "uri-miss",
            Forward::VaryMiss => "vary-miss",
            Forward::Stale => "stale",
            Forward::Request => "request",
        }
    }
}

/// What the cache did with one request, rendered as `Cache-Status` and `X-Cache`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStatus {
    /// Served from cache without contacting the origin (fresh, or stale under
    /// `stale-while-revalidate` / `stale-if-error`).
    pub hit: bool,
    /// The stored response served was stale.
    pub stale: bool,
    /// Why the origin was contacted, if it was.
    pub forward: Option<Forward>,
    /// The origin's status code, if contacted.
    pub forward_status: Option<u16>,
    /// Freshness left (negative when stale), in seconds.
    pub ttl: Option<i64>,
    /// The origin's response was stored.
    pub stored: bool,
    /// The request waited on another request's trip to the origin (request collapsing).
    pub collapsed: bool,
    /// The cache key, shown only when debugging is on (it may reveal request details).
    pub key: Option<String>,
    /// Why the response was not stored, or other detail.
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    /// `Cache-Status: <cache>; hit; ttl=…` or `<cache>; fwd=…; fwd-status=…; stored; …`.
    pub fn header_value(&self, cache: &str) -> HeaderValue {
        let mut out = String::from(cache);
        if self.hit {
            out.push_str("; hit");
        }
        if let Some(fwd) = self.forward {
            let _ = write!(out, "; fwd={}", fwd.as_str());
        }
        if let Some(status) = self.forward_status {
            let _ = write!(out, "; fwd-status={status}");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(out, "; ttl={ttl}");
        }
        if self.stored {
            out.push_str("; stored");
        }
        if self.collapsed {
            out.push_str("; collapsed");
        }
        if let Some(key) = &self.key {
            // An sf-string: only `"` and `\` need escaping; anything not visible ASCII is
            // dropped so the header stays valid.
            out.push_str("; key=\"");
            for c in key.chars().filter(|c| (' '..='~').contains(c)) {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        if let Some(detail) = self.detail {
            let _ = write!(out, "; detail={detail}");
        }
        // Built from visible ASCII only.
        HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("strata"))
    }

    /// `X-Cache: HIT | MISS | STALE`.
    pub fn x_cache(&self) -> HeaderValue {
        HeaderValue::from_static(match (self.hit, self.stale) {
            (true, true) => "STALE",
            (true, false) => "HIT",
            (false, _) => "MISS",
        })
    }

    /// Seconds of freshness left, from a lifetime and an age.
    pub fn ttl_of(lifetime: Duration, age: Duration) -> i64 {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        secs(lifetime).saturating_sub(secs(age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc_9211() {
        let hit = CacheStatus {
            hit: true,
            ttl: Some(42),
            ..CacheStatus::default()
        };
        assert_eq!(hit.header_value("strata"), "strata; hit; ttl=42");
        assert_eq!(hit.x_cache(), "HIT");
        let miss = CacheStatus {
            forward: Some(Forward::UriMiss),
            forward_status: Some(200),
            stored: true,
            collapsed: true,
            key: Some("GET /a\"b".into()),
            ..CacheStatus::default()
        };
        assert_eq!(
            miss.header_value("strata"),
            r#"strata; fwd=uri-miss; fwd-status=200; stored; collapsed; key="GET /a\"b""#
        );
        assert_eq!(miss.x_cache(), "MISS");
        let stale = CacheStatus {
            hit: true,
            stale: true,
            ttl: Some(-3),
            ..CacheStatus::default()
        };
        assert_eq!(stale.header_value("strata"), "strata; hit; ttl=-3");
        assert_eq!(stale.x_cache(), "STALE");
        assert_eq!(
            CacheStatus::ttl_of(Duration::from_secs(10), Duration::from_secs(13)),
            -3
        );
    }
}
