//! The admin API: `POST /_strata/purge`, `GET /_strata/health`,
//! `GET /_strata/api/dashboard` (bearer token), the dashboard page `GET /_strata/` (public:
//! it holds no data), and Prometheus `GET /metrics`.

use std::sync::Arc;

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use strata::HybridCache;
use strata_http::Purge;
use subtle::ConstantTimeEq;

use crate::dashboard::{self, Dashboard};
use crate::reply::{Reply, json, plain, text};
use crate::routes::Routes;

/// The largest purge body accepted.
const MAX_PURGE_BODY: usize = 1 << 20;

/// The admin API's token, compared in constant time.
#[derive(Clone)]
pub(crate) struct Token(Option<Vec<u8>>);

impl Token {
    pub(crate) fn new(token: Option<String>) -> Self {
        Token(token.filter(|t| !t.is_empty()).map(String::into_bytes))
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.is_some()
    }

    fn allows(&self, headers: &HeaderMap) -> bool {
        let (Some(expected), Some(given)) = (
            &self.0,
            headers
                .get(AUTHORIZATION)
                .and_then(|v| bearer(v.as_bytes())),
        ) else {
            return false;
        };
        // Compared over the expected token's length whatever was given, so the time taken
        // says nothing of the token, its length included (a shorter guess is padded, a
        // longer one cut, and the lengths compared apart).
        let padded: Vec<u8> = (0..expected.len())
            .map(|i| given.get(i).copied().unwrap_or(0))
            .collect();
        let same_len = u64::try_from(expected.len())
            .unwrap_or(u64::MAX)
            .ct_eq(&u64::try_from(given.len()).unwrap_or(u64::MAX));
        (expected.as_slice().ct_eq(padded.as_slice()) & same_len).into()
    }
}

/// The credentials of an `Authorization: Bearer …` value; the scheme is case-insensitive
/// (RFC 9110 §11.1), one or more spaces follow it.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"Bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii_start();
    (!token.is_empty()).then_some(token)
}

/// Whether `path` is the admin API's.
pub(crate) fn is_admin(path: &str) -> bool {
    path == "/metrics" || path.starts_with("/_strata/")
}

/// What the admin API answers from: the token, the metrics, the dashboard and the cache.
pub(crate) struct Admin {
    pub(crate) token: Token,
    /// `None` when the program embedding the gateway installed its own metrics recorder.
    pub(crate) metrics: Option<PrometheusHandle>,
    pub(crate) dashboard: Arc<Dashboard>,
    pub(crate) cache: HybridCache,
    /// `redis` or `embedded`, for the health answer.
    pub(crate) backend: &'static str,
}

impl Admin {
    /// Answers an admin request; purges go through `routes`.
    pub(crate) async fn handle(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: Incoming,
        routes: &Routes,
    ) -> Reply {
        if path == "/metrics" {
            return match &self.metrics {
                Some(metrics) => text(
                    StatusCode::OK,
                    metrics.render(),
                    "text/plain; version=0.0.4",
                ),
                None => plain(
                    StatusCode::NOT_FOUND,
                    "metrics are exported by the program embedding this gateway\n",
                ),
            };
        }
        if (method == Method::GET || method == Method::HEAD)
            && let Some((body, content_type)) = dashboard::asset(path)
        {
            let mut r = text(StatusCode::OK, body, content_type);
            let h = r.headers_mut();
            // Only its own script, style and API; nothing framed, sniffed or referred.
            h.insert(
                http::header::CONTENT_SECURITY_POLICY,
                http::HeaderValue::from_static(
                    "default-src 'none'; script-src 'self'; style-src 'self'; \
                     connect-src 'self'; frame-ancestors 'none'; form-action 'none'",
                ),
            );
            h.insert(
                http::header::X_CONTENT_TYPE_OPTIONS,
                http::HeaderValue::from_static("nosniff"),
            );
            h.insert(
                http::header::REFERRER_POLICY,
                http::HeaderValue::from_static("no-referrer"),
            );
            h.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-cache"),
            );
            return r;
        }
        if !self.token.allows(headers) {
            let mut r = json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "a valid bearer token is required"}),
            );
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
            return r;
        }
        match (method, path) {
            (&Method::POST, "/_strata/purge") => self.purge_request(body, routes).await,
            (&Method::GET, "/_strata/health") => self.health(routes),
            (&Method::GET, "/_strata/api/dashboard") => {
                let mut r = json(StatusCode::OK, self.dashboard.snapshot(self.backend));
                r.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("no-store"),
                );
                r
            }
            (_, "/_strata/purge" | "/_strata/health" | "/_strata/api/dashboard") => json(
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({"error": "method not allowed"}),
            ),
            _ => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "no such admin endpoint"}),
            ),
        }
    }

    async fn purge_request(&self, body: Incoming, routes: &Routes) -> Reply {
        let bytes = match Limited::new(body, MAX_PURGE_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": format!("reading the body: {e}")}),
                );
            }
        };
        let purge: Purge = match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": format!("expected {{\"urls\":[…],\"tags\":[…],\"prefixes\":[…],\"soft\":false}}: {e}")}),
                );
            }
        };
        match routes.purge(&purge).await {
            Ok(n) => {
                if self.backend == "embedded" {
                    self.dashboard.saw_purge(self.cache.namespace(), &purge);
                }
                json(
                    StatusCode::OK,
                    serde_json::json!({"purged": n, "soft": purge.soft}),
                )
            }
            Err(strata::Error::Config(e)) => {
                json(StatusCode::BAD_REQUEST, serde_json::json!({"error": e}))
            }
            Err(e) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": e.to_string()}),
            ),
        }
    }

    fn health(&self, routes: &Routes) -> Reply {
        let h = self.cache.health();
        let state = |s: strata::BreakerState| format!("{s:?}").to_lowercase();
        let ok = h.l2 == strata::BreakerState::Closed && h.log == strata::BreakerState::Closed;
        json(
            if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            serde_json::json!({
                "status": if ok { "ok" } else { "degraded" },
                "backend": self.backend,
                "l2": state(h.l2),
                "log": state(h.log),
                "deferred_writes": h.deferred_writes,
                "log_silent_for_ms": h.log_silent_for.map(|d| d.as_millis() as u64),
                "routes": routes.len(),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, http::HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn the_token_is_checked_whole_and_the_scheme_in_any_case() {
        let token = Token::new(Some("s3cret-token".into()));
        for ok in [
            "Bearer s3cret-token",
            "bearer s3cret-token",
            "BEARER   s3cret-token",
        ] {
            assert!(token.allows(&with(ok)), "{ok}");
        }
        for refused in [
            "Bearer s3cret-tokeN",
            "Bearer s3cret-toke",
            "Bearer s3cret-token2",
            "Bearer s3cret-token\t",
            "Bearer",
            "Bearer ",
            "Bearers3cret-token",
            "Basic s3cret-token",
            "s3cret-token",
        ] {
            assert!(!token.allows(&with(refused)), "{refused}");
        }
        assert!(!token.allows(&HeaderMap::new()), "no header");
        assert!(!Token::new(None).allows(&with("Bearer ")), "no token set");
        assert!(!Token::new(Some(String::new())).allows(&with("Bearer ")));
    }
}
