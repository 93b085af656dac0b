//! What a request carries to the upstream besides the client's own headers, as nginx and
//! Varnish forward: hop-by-hop headers removed, `X-Forwarded-For`/`-Host`/`-Proto` set, and
//! `Via` (RFC 9110 §7.6.3) added both ways.

use std::io::Write as _;
use std::net::SocketAddr;

use http::header::{HOST, VIA};
use http::{HeaderMap, HeaderName, HeaderValue, Version};
use strata_http::strip_hop_by_hop;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Readies a client's request headers for its route: the connection's own headers go (first,
/// so a client cannot name ours in `Connection` to have them removed), the client's address,
/// host and scheme are added. The cache's key policy decides afterwards what of this a
/// request it may share carries (with `strip_unkeyed`, none of it).
pub(crate) fn from_client(headers: &mut HeaderMap, peer: SocketAddr) {
    // The other hop-by-hop headers go in the proxy, on the way out; only what `Connection`
    // names must go before ours are added. (Most requests carry no `Connection`: a hit then
    // pays one lookup here, not ten.)
    if headers.contains_key(http::header::CONNECTION) {
        strip_hop_by_hop(headers);
    }
    // `<earlier>, <ip>` written once, into the value's own buffer.
    let mut forwarded = Vec::with_capacity(48);
    if let Some(earlier) = headers.get(&X_FORWARDED_FOR) {
        forwarded.extend_from_slice(earlier.as_bytes());
        forwarded.extend_from_slice(b", ");
    }
    let _ = write!(forwarded, "{}", peer.ip());
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(forwarded)) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if let Some(host) = headers.get(HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

/// Adds this hop to `Via`: the protocol the message was received with, and the pseudonym
/// `strata` (no host or port revealed).
pub(crate) fn via(headers: &mut HeaderMap, received: Version) {
    let hop = match received {
        Version::HTTP_09 => "0.9 strata",
        Version::HTTP_10 => "1.0 strata",
        Version::HTTP_2 => "2 strata",
        Version::HTTP_3 => "3 strata",
        _ => "1.1 strata",
    };
    let mut earlier = headers.get_all(VIA).iter().peekable();
    if earlier.peek().is_none() {
        headers.insert(VIA, HeaderValue::from_static(hop));
        return;
    }
    // Several `Via` lines are one list: folded into one, ours last.
    let mut list = Vec::new();
    for value in earlier {
        list.extend_from_slice(value.as_bytes());
        list.extend_from_slice(b", ");
    }
    list.extend_from_slice(hop.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&list) {
        headers.insert(VIA, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_headers_are_readied_in_order() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("x-forwarded-for"));
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.insert(HOST, HeaderValue::from_static("shop.example"));
        h.insert("x-api-key", HeaderValue::from_static("k"));
        from_client(&mut h, "192.0.2.7:5000".parse().unwrap());
        // The client's `Connection` removed its own X-Forwarded-For, not ours.
        assert_eq!(h[&X_FORWARDED_FOR], "192.0.2.7");
        assert_eq!(h[&X_FORWARDED_HOST], "shop.example");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h["x-api-key"], "k");
        assert!(!h.contains_key("connection"));
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        from_client(&mut h, "[::1]:5000".parse().unwrap());
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, ::1");
    }

    #[test]
    fn via_appends_this_hop() {
        let mut h = HeaderMap::new();
        via(&mut h, Version::HTTP_11);
        assert_eq!(h[VIA], "1.1 strata");
        h.append(VIA, HeaderValue::from_static("1.0 fred"));
        via(&mut h, Version::HTTP_10);
        assert_eq!(h.get_all(VIA).iter().count(), 1);
        assert_eq!(h[VIA], "1.1 strata, 1.0 fred, 1.0 strata");
    }
}
