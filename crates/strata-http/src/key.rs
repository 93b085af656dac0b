//! The cache key of a request, and the request the origin is sent for it.
//!
//! The key decides which requests share a stored response. By default a request reaches the
//! origin as nginx and Varnish forward it: every end-to-end header (the query reduced to its
//! keyed parameters), and the response's `Vary` keys the variants. With
//! [`KeyPolicy::strip_unkeyed`] a request that may be answered from the cache reaches the
//! origin with only what is in its key — the keyed query parameters and the keyed headers,
//! nothing else — so no unkeyed input (`X-Forwarded-Host`, a custom header the origin reflects
//! into its page) can change a response that others will be served: the hardening for origins
//! that read headers they do not list in `Vary` (cache poisoning).

use std::fmt::Write;

use http::header::HOST;
use http::{HeaderMap, HeaderName, Uri, request};

use strata::Error;

/// Which query parameters are part of the key (and reach the origin).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum QueryKey {
    /// All of them, in the order given.
    #[default]
    All,
    /// Only these names.
    Only(Vec<String>),
    /// All but these names (tracking parameters, say).
    Except(Vec<String>),
    /// None: the query is dropped.
    None,
}

impl QueryKey {
    fn keeps(&self, name: &str) -> bool {
        match self {
            QueryKey::All => true,
            QueryKey::Only(names) => names.iter().any(|n| n == name),
            QueryKey::Except(names) => !names.iter().any(|n| n == name),
            QueryKey::None => false,
        }
    }

    /// `query` with only the kept parameters, in their order; `None` when nothing is kept.
    pub fn filter<'q>(&self, query: Option<&'q str>) -> Option<std::borrow::Cow<'q, str>> {
        let query = query.filter(|q| !q.is_empty())?;
        match self {
            QueryKey::All => Some(query.into()),
            QueryKey::None => None,
            _ => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| self.keeps(pair.split('=').next().unwrap_or(pair)))
                    .collect();
                (!kept.is_empty()).then(|| kept.join("&").into())
            }
        }
    }
}

/// One piece of a key template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Host,
    Path,
    Query,
    Header(HeaderName),
}

/// How a request's cache key is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicy {
    template: Vec<Part>,
    query: QueryKey,
    headers: Vec<HeaderName>,
    strip_unkeyed: bool,
    pass_headers: Vec<HeaderName>,
}

impl Default for KeyPolicy {
    /// `{path}{query}`, all query parameters, no headers; every header forwarded (with
    /// [`strip_unkeyed`](KeyPolicy::strip_unkeyed), all but `traceparent`, `tracestate` and
    /// `x-request-id` stripped).
    fn default() -> Self {
        KeyPolicy {
            template: vec![Part::Path, Part::Query],
            query: QueryKey::All,
            headers: Vec::new(),
            strip_unkeyed: false,
            pass_headers: ["traceparent", "tracestate", "x-request-id"]
                .map(HeaderName::from_static)
                .to_vec(),
        }
    }
}

/// A request's place in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    /// The primary key (variants selected by `Vary` hang off it).
    pub primary: String,
    /// The tag every variant of this URL carries: purging it purges the URL.
    pub url_tag: String,
    /// The tags of the path's prefixes, `/a`, `/a/b`, … (at most [`MAX_PREFIX_DEPTH`]).
    pub prefix_tags: Vec<String>,
    /// The URI the origin is asked for (the query reduced to its keyed parameters).
    pub origin_uri: Uri,
}

/// Paths are tagged by at most this many leading segments; a prefix purge deeper than this is
/// refused.
pub const MAX_PREFIX_DEPTH: usize = 8;

/// The tag of a URL: path and keyed query.
pub(crate) fn url_tag(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("http:url:{path}?{q}"),
        None => format!("http:url:{path}"),
    }
}

/// The tag of a path prefix (`/products` covers `/products` and `/products/…`, not
/// `/products-old`). `None` when the prefix is deeper than [`MAX_PREFIX_DEPTH`] segments.
pub(crate) fn prefix_tag(prefix: &str) -> Option<String> {
    let trimmed = prefix.trim_end_matches('/');
    let depth = trimmed.split('/').filter(|s| !s.is_empty()).count();
    (depth <= MAX_PREFIX_DEPTH).then(|| {
        if trimmed.is_empty() {
            "http:prefix:/".to_owned()
        } else {
            format!("http:prefix:{trimmed}")
        }
    })
}

fn prefix_tags(path: &str) -> Vec<String> {
    let mut tags = vec!["http:prefix:/".to_owned()];
    let mut end = 0;
    for (depth, segment) in path.split('/').skip(1).enumerate() {
        if depth == MAX_PREFIX_DEPTH || segment.is_empty() {
            break;
        }
        end += 1 + segment.len();
        tags.push(format!("http:prefix:{}", &path[..end]));
    }
    tags
}

impl KeyPolicy {
    /// A key from a template of literal text and `{host}`, `{path}`, `{query}` and
    /// `{header:<name>}` (a header named in the template is keyed, as with
    /// [`headers`](Self::headers)). The route's name is always prepended, so routes never
    /// share entries.
    pub fn template(mut self, template: &str) -> Result<Self, Error> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..].find('}').ok_or_else(|| {
                Error::Config(format!("key template {template:?}: unclosed `{{`"))
            })? + open;
            let name = &rest[open + 1..close];
            parts.push(match name {
                "host" => Part::Host,
                "path" => Part::Path,
                "query" => Part::Query,
                _ => match name.strip_prefix("header:") {
                    Some(h) => {
                        Part::Header(HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                            Error::Config(format!("key template: bad header name {h:?}"))
                        })?)
                    }
                    None => {
                        return Err(Error::Config(format!(
                            "key template {template:?}: unknown placeholder {{{name}}} \
                             (expected host, path, query or header:<name>)"
                        )));
                    }
                },
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        if !parts.contains(&Part::Path) {
            return Err(Error::Config(format!(
                "key template {template:?} has no {{path}}: every URL would share one entry"
            )));
        }
        self.template = parts;
        Ok(self)
    }

    /// Which query parameters are keyed.
    pub fn query(mut self, query: QueryKey) -> Self {
        self.query = query;
        self
    }

    /// Request headers that are part of the key (and so may reach the origin).
    pub fn headers(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.headers = headers.into_iter().collect();
        self
    }

    /// Whether a cacheable request reaches the origin with only its keyed headers (default
    /// `false`: the origin sees every end-to-end header, and its `Vary` must list those its
    /// answer depends on).
    ///
    /// Turn it on for an origin that reads headers it does not list in `Vary`: an attacker
    /// who sends `X-Forwarded-Host: evil.example` to an origin that builds absolute links
    /// from it would otherwise get a page with their links stored and served to everyone
    /// (web cache poisoning). Stripped, such a header never reaches the origin on a request
    /// whose answer may be shared; requests passed on as they came still carry everything.
    pub fn strip_unkeyed(mut self, strip: bool) -> Self {
        self.strip_unkeyed = strip;
        self
    }

    /// Unkeyed headers that still reach the origin because they cannot change a response
    /// (tracing ids). Default: `traceparent`, `tracestate`, `x-request-id`.
    pub fn pass_headers(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.pass_headers = headers.into_iter().collect();
        self
    }

    /// The query parameters kept in the key.
    pub fn query_key(&self) -> &QueryKey {
        &self.query
    }

    fn keyed_headers(&self) -> impl Iterator<Item = &HeaderName> {
        let in_template = self.template.iter().filter_map(|p| match p {
            Part::Header(h) => Some(h),
            _ => None,
        });
        self.headers.iter().chain(in_template)
    }

    /// The primary key of a request on route `route` (what a lookup needs; [`key`](Self::key)
    /// adds what a trip to the origin needs).
    pub fn primary(&self, route: &str, parts: &request::Parts) -> String {
        let query = self.query.filter(parts.uri.query());
        self.primary_with(route, parts, query.as_deref())
    }

    fn primary_with(&self, route: &str, parts: &request::Parts, query: Option<&str>) -> String {
        let path = parts.uri.path();
        let mut primary =
            String::with_capacity(8 + route.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        primary.push_str("http:");
        primary.push_str(route);
        primary.push('\n');
        for part in &self.template {
            match part {
                Part::Literal(text) => primary.push_str(text),
                Part::Host => {
                    let host = parts
                        .headers
                        .get(HOST)
                        .map(http::HeaderValue::as_bytes)
                        .or_else(|| parts.uri.host().map(str::as_bytes))
                        .unwrap_or_default();
                    push_escaped(&mut primary, &host.to_ascii_lowercase());
                }
                Part::Path => primary.push_str(path),
                Part::Query => {
                    if let Some(q) = query {
                        primary.push('?');
                        primary.push_str(q);
                    }
                }
                Part::Header(name) => header_values(&mut primary, &parts.headers, name),
            }
        }
        for name in &self.headers {
            let _ = write!(primary, "\n{name}:");
            header_values(&mut primary, &parts.headers, name);
        }
        primary
    }

    /// The key of a request on route `route`, with its tags and the origin's URI.
    pub fn key(&self, route: &str, parts: &request::Parts) -> RequestKey {
        let path = parts.uri.path();
        let query = self.query.filter(parts.uri.query());
        let primary = self.primary_with(route, parts, query.as_deref());
        let origin_uri = match (&query, parts.uri.query()) {
            (Some(q), Some(original)) if q == original => parts.uri.clone(),
            (None, None) => parts.uri.clone(),
            (query, _) => {
                let pq = match query {
                    Some(q) => format!("{path}?{q}"),
                    None => path.to_owned(),
                };
                let mut uri = Uri::builder().path_and_query(pq);
                if let (Some(scheme), Some(authority)) = (parts.uri.scheme(), parts.uri.authority())
                {
                    uri = uri.scheme(scheme.clone()).authority(authority.clone());
                }
                // Path and kept parameters come from a valid URI, so this cannot fail;
                // keep the original rather than panic if it ever did.
                uri.build().unwrap_or_else(|_| parts.uri.clone())
            }
        };
        RequestKey {
            url_tag: url_tag(path, query.as_deref()),
            prefix_tags: prefix_tags(path),
            primary,
            origin_uri,
        }
    }

    /// The headers of a cacheable request as the origin should get them: with
    /// [`strip_unkeyed`](Self::strip_unkeyed), only the keyed and pass-through ones.
    pub fn origin_headers(&self, headers: &HeaderMap) -> HeaderMap {
        if !self.strip_unkeyed {
            let mut out = headers.clone();
            crate::hop::strip_conditionals(&mut out);
            return out;
        }
        let mut out = HeaderMap::new();
        for name in self.keyed_headers().chain(&self.pass_headers) {
            for value in headers.get_all(name) {
                out.append(name.clone(), value.clone());
            }
        }
        if self.template.contains(&Part::Host)
            && let Some(host) = headers.get(HOST)
        {
            out.insert(HOST, host.clone());
        }
        out
    }
}

fn header_values(out: &mut String, headers: &HeaderMap, name: &HeaderName) {
    for (i, value) in headers.get_all(name).iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_escaped(out, value.as_bytes().trim_ascii());
    }
}

/// Visible ASCII except `%` and the newline that separates key fields, as is; the rest
/// percent-encoded, so a value can neither forge another field nor collide.
fn push_escaped(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if (b' '..=b'~').contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a keyed header holds, the key has exactly one line per keyed header: a
        /// value cannot add a field, so two requests share a key only if their values do.
        #[test]
        fn keyed_values_cannot_forge_fields(
            a in proptest::collection::vec(any::<u8>(), 0..60),
            b in proptest::collection::vec(any::<u8>(), 0..60),
        ) {
            let policy = KeyPolicy::default().headers([
                HeaderName::from_static("x-a"),
                HeaderName::from_static("x-b"),
            ]);
            let request = |a: &[u8], b: &[u8]| {
                let mut req = Request::get("/p").body(()).unwrap();
                if let (Ok(a), Ok(b)) = (http::HeaderValue::from_bytes(a), http::HeaderValue::from_bytes(b)) {
                    req.headers_mut().insert("x-a", a);
                    req.headers_mut().insert("x-b", b);
                    Some(req.into_parts().0)
                } else {
                    None
                }
            };
            if let (Some(one), Some(two)) = (request(&a, &b), request(&b, &a)) {
                let (k1, k2) = (policy.primary("r", &one), policy.primary("r", &two));
                prop_assert_eq!(k1.lines().count(), 4);
                prop_assert_eq!(k1 == k2, a.trim_ascii() == b.trim_ascii());
            }
        }
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> request::Parts {
        let mut req = Request::get(uri);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn query_filtering_reaches_the_origin_uri() {
        let policy = KeyPolicy::default().query(QueryKey::Except(vec!["utm_source".into()]));
        let a = policy.key("r", &parts("/p/1?utm_source=x&color=red", &[]));
        let b = policy.key("r", &parts("/p/1?color=red", &[]));
        assert_eq!(a.primary, b.primary);
        assert_eq!(a.origin_uri, "/p/1?color=red");
        assert_eq!(a.url_tag, "http:url:/p/1?color=red");
        let only = KeyPolicy::default().query(QueryKey::Only(vec!["id".into()]));
        assert_eq!(only.key("r", &parts("/x?a=1", &[])).origin_uri, "/x");
        let none = KeyPolicy::default().query(QueryKey::None);
        assert_eq!(none.key("r", &parts("/x?id=1", &[])).url_tag, "http:url:/x");
    }

    #[test]
    fn keyed_headers_split_and_cannot_forge() {
        let policy = KeyPolicy::default().headers([HeaderName::from_static("x-tenant")]);
        let a = policy.key("r", &parts("/a", &[("x-tenant", "a")]));
        let b = policy.key("r", &parts("/a", &[("x-tenant", "b")]));
        // A newline cannot be in a header value, and `%` is escaped, so an escape sequence
        // cannot pose as one either.
        let forged = policy.key("r", &parts("/a", &[("x-tenant", "a%0Ax-tenant:b")]));
        assert_ne!(a.primary, b.primary);
        assert_eq!(a.url_tag, b.url_tag);
        assert!(
            forged.primary.ends_with("\nx-tenant:a%250Ax-tenant:b"),
            "{}",
            forged.primary
        );
        assert_ne!(
            policy.key("s", &parts("/a", &[])).primary,
            policy.key("r", &parts("/a", &[])).primary
        );
    }

    #[test]
    fn every_header_reaches_the_origin_unless_stripped() {
        let p = parts(
            "/a",
            &[
                ("accept", "text/html"),
                ("x-api-key", "k"),
                ("if-none-match", "\"v1\""),
            ],
        );
        let out = KeyPolicy::default().origin_headers(&p.headers);
        // The client's conditionals are the cache's to answer: its own go instead.
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out["accept"], "text/html");
        assert_eq!(out["x-api-key"], "k");
    }

    #[test]
    fn stripped_only_keyed_and_pass_headers_reach_the_origin() {
        let policy = KeyPolicy::default()
            .strip_unkeyed(true)
            .template("{host}{path}{query}|{header:accept-language}")
            .unwrap();
        let p = parts(
            "/a",
            &[
                ("host", "Shop.Example"),
                ("accept-language", "de"),
                ("x-forwarded-host", "evil.example"),
                ("cookie", "s=1"),
                ("traceparent", "00-1-2-01"),
            ],
        );
        let out = policy.origin_headers(&p.headers);
        let names: Vec<&str> = out.keys().map(http::HeaderName::as_str).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(out.contains_key("accept-language") && out.contains_key("host"));
        assert!(policy.key("r", &p).primary.contains("shop.example/a|de"));
    }

    #[test]
    fn templates_are_checked() {
        assert!(KeyPolicy::default().template("{host}").is_err());
        assert!(KeyPolicy::default().template("{path}{nope}").is_err());
        assert!(KeyPolicy::default().template("{path").is_err());
    }

    #[test]
    fn prefixes_tag_whole_segments() {
        assert_eq!(
            prefix_tags("/products/42/reviews"),
            [
                "http:prefix:/",
                "http:prefix:/products",
                "http:prefix:/products/42",
                "http:prefix:/products/42/reviews"
            ]
        );
        assert_eq!(
            prefix_tag("/products/").as_deref(),
            Some("http:prefix:/products")
        );
        assert_eq!(prefix_tag("/").as_deref(), Some("http:prefix:/"));
        assert_eq!(
            prefix_tags("/a/b/c/d/e/f/g/h/i/j").len(),
            MAX_PREFIX_DEPTH + 1
        );
        assert!(prefix_tag("/a/b/c/d/e/f/g/h/i").is_none());
    }
}
