//! Whether a shared cache may store a response (RFC 9111 §3, §3.5), with the per-route
//! opt-ins Strata allows.

use http::header::{AUTHORIZATION, SET_COOKIE};
use http::{HeaderMap, Method, StatusCode};

use crate::cache_control::CacheControl;
use crate::vary::Vary;

/// What a route allows beyond the shared-cache defaults. Everything is off by default: a
/// response for one user is never shared by accident.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreOptIns {
    /// Store responses that carry `Set-Cookie` (the cookie is stored and replayed to everyone).
    pub set_cookie: bool,
    /// Store `Cache-Control: private` responses.
    pub private: bool,
    /// Store responses to requests with `Authorization` even when the response does not say
    /// it may be shared.
    pub authorized: bool,
}

impl StoreOptIns {
    /// Store responses that set cookies.
    pub fn set_cookie(mut self, yes: bool) -> Self {
        self.set_cookie = yes;
        self
    }

    /// Store `private` responses.
    pub fn private(mut self, yes: bool) -> Self {
        self.private = yes;
        self
    }

    /// Store responses to requests with `Authorization` whatever the response says.
    pub fn authorized(mut self, yes: bool) -> Self {
        self.authorized = yes;
        self
    }
}

/// Why a response was not stored (for `Cache-Status: …; detail=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotStored {
    /// Only `GET` responses are stored (`HEAD` is answered from them).
    Method,
    /// A status code this cache does not store (1xx, 206, 304, or one without explicit
    /// freshness that is not heuristically cacheable).
    Status,
    /// `no-store` in the request or the response.
    NoStore,
    /// `Cache-Control: private`.
    Private,
    /// The request carried `Authorization` and the response did not allow sharing.
    Authorization,
    /// The response sets a cookie.
    SetCookie,
    /// `Vary: *`.
    VaryStar,
    /// No explicit freshness or `public`, and heuristic freshness is off.
    NoFreshness,
}

impl NotStored {
    /// A short token, as used in `Cache-Status` details.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary-star",
            NotStored::NoFreshness => "no-freshness",
        }
    }
}

/// Status codes "heuristically cacheable" (RFC 9110 §15.1): storable without explicit
/// freshness when the response says `public`.
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether a shared cache may store this response to this request.
pub fn storable(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    opt_ins: StoreOptIns,
) -> Result<(), NotStored> {
    let res = CacheControl::from_headers(response);
    storable_with(method, request, status, response, &res, false, opt_ins)
}

/// [`storable`] with the response's directives read already: from a targeted field
/// (`targeted`: `Expires` is then no freshness of its own, RFC 9213 §2.2) or `Cache-Control`.
pub(crate) fn storable_with(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    res: &CacheControl,
    targeted: bool,
    opt_ins: StoreOptIns,
) -> Result<(), NotStored> {
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    let status_code = status.as_u16();
    if status.is_informational() || status_code == 206 || status_code == 304 {
        return Err(NotStored::Status);
    }
    let req = CacheControl::from_headers(request);
    if req.no_store || res.no_store {
        return Err(NotStored::NoStore);
    }
    if res.private && !opt_ins.private {
        return Err(NotStored::Private);
    }
    if request.contains_key(AUTHORIZATION)
        && !(opt_ins.authorized || res.public || res.must_revalidate || res.s_maxage.is_some())
    {
        return Err(NotStored::Authorization);
    }
    if response.contains_key(SET_COOKIE) && !opt_ins.set_cookie {
        return Err(NotStored::SetCookie);
    }
    if matches!(Vary::of(response), Vary::Any) {
        return Err(NotStored::VaryStar);
    }
    let explicit = res.s_maxage.is_some()
        || res.max_age.is_some()
        || (!targeted && response.contains_key(http::header::EXPIRES));
    if explicit {
        return Ok(());
    }
    if res.public || (res.private && opt_ins.private) {
        return if heuristically_cacheable(status) {
            Ok(())
        } else {
            Err(NotStored::Status)
        };
    }
    Err(NotStored::NoFreshness)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::{CACHE_CONTROL, VARY};

    fn map(pairs: &[(http::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(n.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn check(
        method: Method,
        req: &[(http::HeaderName, &str)],
        status: u16,
        res: &[(http::HeaderName, &str)],
    ) -> Result<(), NotStored> {
        storable(
            &method,
            &map(req),
            StatusCode::from_u16(status).unwrap(),
            &map(res),
            StoreOptIns::default(),
        )
    }

    #[test]
    fn the_rules_of_a_shared_cache() {
        let fresh = [(CACHE_CONTROL, "max-age=60")];
        assert_eq!(check(Method::GET, &[], 200, &fresh), Ok(()));
        assert_eq!(
            check(Method::POST, &[], 200, &fresh),
            Err(NotStored::Method)
        );
        assert_eq!(check(Method::GET, &[], 206, &fresh), Err(NotStored::Status));
        assert_eq!(check(Method::GET, &[], 304, &fresh), Err(NotStored::Status));
        assert_eq!(
            check(Method::GET, &[(CACHE_CONTROL, "no-store")], 200, &fresh),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            check(
                Method::GET,
                &[],
                200,
                &[(CACHE_CONTROL, "max-age=60, no-store")]
            ),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            check(
                Method::GET,
                &[],
                200,
                &[(CACHE_CONTROL, "private, max-age=60")]
            ),
            Err(NotStored::Private)
        );
        assert_eq!(
            check(
                Method::GET,
                &[],
                200,
                &[(CACHE_CONTROL, "max-age=60"), (SET_COOKIE, "s=1")]
            ),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            check(
                Method::GET,
                &[],
                200,
                &[(CACHE_CONTROL, "max-age=60"), (VARY, "Accept, *")]
            ),
            Err(NotStored::VaryStar)
        );
        assert_eq!(
            check(Method::GET, &[], 200, &[]),
            Err(NotStored::NoFreshness)
        );
        assert_eq!(
            check(Method::GET, &[], 200, &[(CACHE_CONTROL, "public")]),
            Ok(())
        );
        assert_eq!(
            check(Method::GET, &[], 500, &[(CACHE_CONTROL, "public")]),
            Err(NotStored::Status)
        );
        assert_eq!(
            check(Method::GET, &[], 500, &[(CACHE_CONTROL, "s-maxage=5")]),
            Ok(()),
            "explicit freshness: any final status"
        );
    }

    #[test]
    fn authorized_requests_are_shared_only_when_the_response_says_so() {
        let auth = [(AUTHORIZATION, "Bearer x")];
        assert_eq!(
            check(Method::GET, &auth, 200, &[(CACHE_CONTROL, "max-age=60")]),
            Err(NotStored::Authorization)
        );
        for allowed in [
            "public, max-age=60",
            "s-maxage=60",
            "max-age=60, must-revalidate",
        ] {
            assert_eq!(
                check(Method::GET, &auth, 200, &[(CACHE_CONTROL, allowed)]),
                Ok(()),
                "{allowed}"
            );
        }
        let opted = StoreOptIns {
            authorized: true,
            ..StoreOptIns::default()
        };
        let res = map(&[(CACHE_CONTROL, "max-age=60")]);
        assert_eq!(
            storable(&Method::GET, &map(&auth), StatusCode::OK, &res, opted),
            Ok(())
        );
    }

    #[test]
    fn routes_can_opt_in() {
        let res = map(&[(CACHE_CONTROL, "private, max-age=60"), (SET_COOKIE, "s=1")]);
        let all = StoreOptIns {
            set_cookie: true,
            private: true,
            authorized: false,
        };
        assert_eq!(
            storable(&Method::GET, &HeaderMap::new(), StatusCode::OK, &res, all),
            Ok(())
        );
    }
}
