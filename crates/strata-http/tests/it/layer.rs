//! The RFC 9111 rules, one instance on the embedded cache.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use strata_http::{KeyPolicy, Policy, Purge, QueryKey, StoreOptIns};

use crate::harness::{memory, origin};

fn policy() -> Policy {
    Policy::new("api")
}

/// One request, one read counted: the soft-purge marker every hit checks counts nowhere, so
/// the stats' hit ratio is the responses' and the marker never tops the hot keys.
#[tokio::test]
async fn each_request_counts_one_read() {
    let o = origin();
    let cache = strata::HybridCache::builder("shop").build().await.unwrap();
    assert!(cache.take_hot_keys().is_empty(), "sampling starts");
    let app = crate::harness::Instance::new(cache.clone(), &o, policy());
    for _ in 0..200 {
        assert_eq!(app.get("/products/1").await.status, StatusCode::OK);
    }
    let s = cache.stats();
    assert_eq!((s.misses, s.l1_hits, s.loader_calls), (1, 199, 1), "{s:?}");
    let hot = cache.take_hot_keys();
    assert!(hot.iter().all(|h| !h.key.contains("~soft")), "{hot:?}");
}

#[tokio::test]
async fn fresh_responses_are_hits_with_age_and_cache_status() {
    let o = origin();
    let app = memory(&o, policy()).await;
    let first = app.get("/products/1").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.x_cache(), "MISS");
    assert!(
        first
            .cache_status()
            .starts_with("strata; fwd=uri-miss; fwd-status=200; ttl="),
        "{}",
        first.cache_status()
    );
    assert!(first.cache_status().contains("; stored"));
    let second = app.get("/products/1").await;
    assert_eq!(second.x_cache(), "HIT");
    assert!(
        second.cache_status().starts_with("strata; hit; ttl="),
        "{}",
        second.cache_status()
    );
    assert_eq!(second.body, "product 1 v0");
    assert_eq!(second.header("age"), "0");
    assert_eq!(second.header("etag"), "\"v0\"");
    assert_eq!(o.hits("/products/1"), 1);
    // HEAD is answered from the stored GET, with its length and no body.
    let head = app.call(Method::HEAD, "/products/1").await;
    assert_eq!((head.x_cache(), head.body.as_str()), ("HIT", ""));
    assert_eq!(head.header("content-length"), "12");
    assert_eq!(o.hits("/products/1"), 1);
}

#[tokio::test]
async fn uncacheable_responses_are_not_stored() {
    let o = origin();
    let app = memory(&o, policy()).await;
    for (path, detail) in [
        ("/private", "private"),
        ("/nostore", "no-store"),
        ("/silent", "no-freshness"),
        ("/cookie", "set-cookie"),
        ("/varystar", "vary-star"),
    ] {
        let r = app.get(path).await;
        assert_eq!(r.x_cache(), "MISS", "{path}");
        assert!(
            r.cache_status().contains(detail),
            "{path}: {}",
            r.cache_status()
        );
        // Remembered: the next request goes straight to the origin.
        let r = app.get(path).await;
        assert!(
            r.cache_status().contains("detail=hit-for-pass"),
            "{path}: {}",
            r.cache_status()
        );
        assert_eq!(o.hits(path), 2, "{path} reached the origin each time");
    }
    // The private response's body reached the client (streamed, not dropped).
    assert_eq!(app.get("/private").await.body, "/private");
}

#[tokio::test]
async fn route_opt_ins_and_ttl_overrides() {
    let o = origin();
    let opt_ins = StoreOptIns::default().set_cookie(true).private(true);
    let app = memory(
        &o,
        policy()
            .store_opt_ins(opt_ins)
            .default_ttl(Duration::from_secs(30)),
    )
    .await;
    for path in ["/private", "/cookie", "/silent"] {
        app.get(path).await;
        assert_eq!(app.get(path).await.x_cache(), "HIT", "{path}");
        assert_eq!(o.hits(path), 1, "{path}");
    }
    // A TTL override makes even a `max-age=10, Age: 10` response fresh.
    let forced = memory(&o, policy().ttl(Duration::from_secs(60))).await;
    forced.get("/revalidate").await;
    assert_eq!(forced.get("/revalidate").await.x_cache(), "HIT");
}

#[tokio::test]
async fn vary_keys_variants_by_the_listed_request_headers() {
    let o = origin();
    let app = memory(&o, policy().key(KeyPolicy::default().headers([]))).await;
    let de = app.get_with("/vary", &[("accept-language", "de")]).await;
    let en = app.get_with("/vary", &[("accept-language", "en")]).await;
    assert_eq!((de.body.as_str(), en.body.as_str()), ("de", "en"));
    assert_eq!(en.x_cache(), "MISS");
    assert!(
        en.cache_status().contains("fwd=vary-miss"),
        "{}",
        en.cache_status()
    );
    let de2 = app.get_with("/vary", &[("accept-language", "de")]).await;
    let en2 = app.get_with("/vary", &[("accept-language", "en")]).await;
    assert_eq!((de2.x_cache(), de2.body.as_str()), ("HIT", "de"));
    assert_eq!((en2.x_cache(), en2.body.as_str()), ("HIT", "en"));
    assert_eq!(o.hits("/vary"), 2);
}

#[tokio::test]
async fn stripped_only_keyed_input_reaches_the_origin() {
    let o = origin();
    let app = memory(
        &o,
        policy().key(
            KeyPolicy::default()
                .strip_unkeyed(true)
                .headers([http::HeaderName::from_static("accept-language")])
                .query(QueryKey::Except(vec!["utm_source".into()])),
        ),
    )
    .await;
    let poisoned = app
        .get_with(
            "/headers?utm_source=mail",
            &[
                ("x-forwarded-host", "evil.example"),
                ("accept-language", "de"),
                ("traceparent", "00-a-b-01"),
            ],
        )
        .await;
    assert_eq!(poisoned.body, "accept-language: de\ntraceparent: 00-a-b-01");
    // The same key without the unkeyed header is the same (clean) entry.
    let clean = app.get_with("/headers", &[("accept-language", "de")]).await;
    assert_eq!(
        (clean.x_cache(), clean.body.as_str()),
        ("HIT", poisoned.body.as_str())
    );
    // A keyed header is a different entry.
    assert_eq!(
        app.get_with("/headers", &[("accept-language", "fr")])
            .await
            .x_cache(),
        "MISS"
    );
    // Query parameters not in the key do not reach the origin either.
    let q = app.get("/query?a=1&utm_source=x").await;
    assert_eq!(q.body, "a=1");
    assert_eq!(app.get("/query?a=1").await.x_cache(), "HIT");
}

#[tokio::test]
async fn requests_with_cookies_or_authorization() {
    let o = origin();
    let app = memory(&o, policy()).await;
    // A cookie: passed through with everything, nothing stored.
    let with_cookie = app.get_with("/headers", &[("cookie", "s=1")]).await;
    assert!(with_cookie.body.contains("cookie: s=1"));
    assert!(with_cookie.cache_status().contains("detail=cookie"));
    assert_eq!(app.get("/headers").await.x_cache(), "MISS");
    // Authorization: stored only if the response says it may be shared.
    let auth = [("authorization", "Bearer t")];
    app.get_with("/auth", &auth).await;
    let again = app.get_with("/auth", &auth).await;
    assert_eq!(again.x_cache(), "MISS");
    assert!(
        again.cache_status().contains("detail=authorization"),
        "{}",
        again.cache_status()
    );
    assert_eq!(app.get("/auth").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(o.hits("/auth"), 3);
    app.get_with("/auth-public", &auth).await;
    assert_eq!(app.get("/auth-public").await.x_cache(), "HIT");
    assert_eq!(o.hits("/auth-public"), 1);
}

#[tokio::test]
async fn a_route_that_caches_requests_with_cookies_never_forwards_them() {
    let o = origin();
    let app = memory(&o, policy().cache_requests_with_cookies(true)).await;
    let first = app
        .get_with("/headers", &[("cookie", "session=alice"), ("x-kept", "1")])
        .await;
    assert!(!first.body.contains("cookie"), "{}", first.body);
    assert!(first.body.contains("x-kept: 1"), "{}", first.body);
    let other = app.get_with("/headers", &[("cookie", "session=bob")]).await;
    assert_eq!(
        (other.x_cache(), other.body.as_str()),
        ("HIT", first.body.as_str())
    );
    assert_eq!(o.hits("/headers"), 1);
}

#[tokio::test]
async fn stale_responses_revalidate_with_a_conditional_request() {
    let o = origin();
    let app = memory(&o, policy()).await;
    let first = app.get("/revalidate").await;
    assert_eq!(first.x_cache(), "MISS");
    // Stale on arrival, no stale use allowed: the next request revalidates; the 304 freshens.
    let second = app.get("/revalidate").await;
    assert_eq!(second.x_cache(), "MISS");
    assert!(
        second.cache_status().contains("fwd=stale; fwd-status=304"),
        "{}",
        second.cache_status()
    );
    assert_eq!(second.body, "revalidated");
    assert_eq!(o.not_modified(), 1);
    let third = app.get("/revalidate").await;
    assert_eq!(third.x_cache(), "HIT");
    assert_eq!(o.hits("/revalidate"), 2);
    // `no-cache` responses are revalidated on every use.
    for _ in 0..3 {
        assert_eq!(app.get("/nocache").await.body, "no-cache");
    }
    assert_eq!(o.hits("/nocache"), 3);
    assert_eq!(o.not_modified(), 3);
}

#[tokio::test]
async fn last_modified_alone_revalidates_both_ways() {
    let o = origin();
    let app = memory(&o, policy()).await;
    app.get("/lastmod").await;
    // To the origin: If-Modified-Since from the stored Last-Modified; its 304 freshens.
    let r = app.get("/lastmod").await;
    assert!(
        r.cache_status().contains("fwd=stale; fwd-status=304"),
        "{}",
        r.cache_status()
    );
    assert_eq!((r.body.as_str(), o.not_modified()), ("by date", 1));
    // To the client: its If-Modified-Since, answered from the cache.
    let c = app
        .get_with(
            "/lastmod",
            &[("if-modified-since", "Mon, 07 Nov 1994 08:49:37 GMT")],
        )
        .await;
    assert_eq!((c.status, c.x_cache()), (StatusCode::NOT_MODIFIED, "HIT"));
    assert_eq!(o.hits("/lastmod"), 2);
}

#[tokio::test]
async fn client_validators_get_304_from_the_cache() {
    let o = origin();
    let app = memory(&o, policy()).await;
    app.get("/products/2").await;
    let r = app
        .get_with("/products/2", &[("if-none-match", "\"v0\"")])
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(
        (r.x_cache(), r.body.as_str()),
        ("HIT", ""),
        "{}",
        r.cache_status()
    );
    assert_eq!(r.header("etag"), "\"v0\"");
    let changed = app
        .get_with("/products/2", &[("if-none-match", "\"v9\"")])
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(o.hits("/products/2"), 1);
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once() {
    let o = origin();
    let app = memory(&o, policy()).await;
    app.get("/stale/a").await;
    o.version.fetch_add(1, Ordering::SeqCst);
    let r = app.get("/stale/a").await;
    assert_eq!((r.x_cache(), r.body.as_str()), ("STALE", "a v0"));
    assert!(r.cache_status().contains("detail=stale-while-revalidate"));
    // The background revalidation stores the new version.
    strata_testkit::eventually("the background refresh", Duration::from_secs(5), || async {
        let r = app.get("/stale/a").await;
        r.body == "a v1"
    })
    .await;
    assert_eq!(o.hits("/stale/a"), 2);
}

#[tokio::test]
async fn stale_if_error_serves_stale_when_the_origin_fails() {
    let o = origin();
    let app = memory(&o, policy()).await;
    app.get("/revalidate").await;
    o.failing.store(true, Ordering::SeqCst);
    // No stale-if-error on /revalidate: the failure reaches the client.
    assert_eq!(
        app.get("/revalidate").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // With it (and a client that refuses stale-while-revalidate), the stale copy answers.
    o.failing.store(false, Ordering::SeqCst);
    app.get("/stale/b").await;
    o.failing.store(true, Ordering::SeqCst);
    let r = app
        .get_with("/stale/b", &[("cache-control", "no-cache")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.cache_status());
    assert_eq!((r.x_cache(), r.body.as_str()), ("STALE", "b v0"));
    // The origin was asked (the client's no-cache), failed with 503, and the stale copy answered.
    let cs = r.cache_status();
    assert!(
        cs.starts_with("strata; hit; fwd=request; fwd-status=503; ttl="),
        "{cs}"
    );
    assert!(cs.ends_with("; detail=stale-if-error"), "{cs}");
}

#[tokio::test]
async fn must_revalidate_is_never_served_stale_while_revalidating() {
    let o = origin();
    // The route's stale-while-revalidate does not override the origin's s-maxage.
    let app = memory(&o, policy().stale_while_revalidate(Duration::from_secs(60))).await;
    app.get("/must-revalidate").await;
    let r = app.get("/must-revalidate").await;
    assert_eq!(r.x_cache(), "MISS", "{}", r.cache_status());
    assert!(
        r.cache_status().contains("fwd=stale; fwd-status=304"),
        "{}",
        r.cache_status()
    );
    // Nor when the origin fails, whatever `stale-if-error` says (its own, the request's):
    // s-maxage forbids stale (RFC 9111 §4.2.4). The origin's failure is passed on.
    o.failing.store(true, Ordering::SeqCst);
    let failed = app
        .get_with(
            "/must-revalidate",
            &[("cache-control", "no-cache, stale-if-error=600")],
        )
        .await;
    assert_eq!(
        failed.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        failed.cache_status()
    );
    assert!(
        failed
            .cache_status()
            .contains("fwd-status=503; detail=origin-error"),
        "{}",
        failed.cache_status()
    );
}

#[tokio::test]
async fn a_request_may_allow_stale_if_error() {
    let o = origin();
    let app = memory(&o, policy()).await;
    app.get("/revalidate").await;
    o.failing.store(true, Ordering::SeqCst);
    // Stale on arrival, no stale-if-error of its own: the failure is passed on…
    let failed = app.get("/revalidate").await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    // …unless the client accepts a stale answer when the origin fails (RFC 5861 §3).
    let stale = app
        .get_with("/revalidate", &[("cache-control", "stale-if-error=600")])
        .await;
    assert_eq!(
        (stale.status, stale.x_cache(), stale.body.as_str()),
        (StatusCode::OK, "STALE", "revalidated"),
        "{}",
        stale.cache_status()
    );
    assert!(
        stale.cache_status().contains("fwd-status=503"),
        "{}",
        stale.cache_status()
    );
}

#[tokio::test]
async fn request_directives_are_honoured() {
    let o = origin();
    let app = memory(&o, policy()).await;
    app.get("/products/3").await;
    let forced = app
        .get_with("/products/3", &[("cache-control", "no-cache")])
        .await;
    assert!(
        forced
            .cache_status()
            .contains("fwd=request; fwd-status=304"),
        "{}",
        forced.cache_status()
    );
    let only = app
        .get_with("/revalidate", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(only.status, StatusCode::GATEWAY_TIMEOUT);
    let cached = app
        .get_with("/products/3", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(cached.x_cache(), "HIT");
    assert_eq!(o.hits("/revalidate"), 0);
    let ignoring = memory(&o, policy().honour_request_directives(false)).await;
    ignoring.get("/products/3").await;
    let r = ignoring
        .get_with("/products/3", &[("cache-control", "no-cache")])
        .await;
    assert_eq!(r.x_cache(), "HIT");
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_target() {
    let o = origin();
    let app = memory(&o, policy()).await;
    app.get("/products/4").await;
    assert_eq!(app.get("/products/4").await.x_cache(), "HIT");
    let post = app.call(Method::POST, "/products/4").await;
    assert_eq!(post.status, StatusCode::NO_CONTENT);
    assert!(
        post.cache_status()
            .contains("fwd=method; fwd-status=204; detail=invalidated")
    );
    let after = app.get("/products/4").await;
    assert_eq!(
        (after.x_cache(), after.body.as_str()),
        ("MISS", "product 4 v1")
    );
    // RFC 9875: Cache-Group-Invalidation on the answer to an unsafe request.
    app.get("/groups").await;
    assert_eq!(app.get("/groups").await.x_cache(), "HIT");
    app.call(Method::POST, "/groups").await;
    assert_eq!(app.get("/groups").await.x_cache(), "MISS");
}

#[tokio::test]
async fn purges_by_url_tag_and_prefix_hard_and_soft() {
    let o = origin();
    let app = memory(&o, policy()).await;
    let warm = |paths: &'static [&'static str]| {
        let app = &app;
        async move {
            for p in paths {
                app.get(p).await;
                assert_eq!(app.get(p).await.x_cache(), "HIT", "{p}");
            }
        }
    };
    warm(&["/products/5", "/products/6", "/groups"]).await;
    let purge = |p: Purge| {
        let app = &app;
        async move { app.http.purge(&p).await }
    };
    assert_eq!(
        purge(Purge {
            urls: vec!["http://shop.example/products/5".into()],
            ..Purge::default()
        })
        .await
        .unwrap(),
        1
    );
    assert_eq!(app.get("/products/5").await.x_cache(), "MISS");
    assert_eq!(app.get("/products/6").await.x_cache(), "HIT");
    purge(Purge {
        tags: vec!["product:6".into()],
        ..Purge::default()
    })
    .await
    .unwrap();
    assert_eq!(app.get("/products/6").await.x_cache(), "MISS");
    purge(Purge {
        tags: vec!["scripts".into()],
        ..Purge::default()
    })
    .await
    .unwrap();
    assert_eq!(app.get("/groups").await.x_cache(), "MISS");
    purge(Purge {
        prefixes: vec!["/products".into()],
        ..Purge::default()
    })
    .await
    .unwrap();
    assert_eq!(app.get("/products/5").await.x_cache(), "MISS");
    assert_eq!(
        app.get("/groups").await.x_cache(),
        "HIT",
        "outside the prefix"
    );
    // Soft: marked stale, revalidated (304) on next use instead of refetched.
    app.get("/products/5").await;
    let before = o.not_modified();
    purge(Purge {
        tags: vec!["product:5".into()],
        soft: true,
        ..Purge::default()
    })
    .await
    .unwrap();
    let r = app.get("/products/5").await;
    assert!(
        r.cache_status().contains("fwd=stale; fwd-status=304"),
        "{}",
        r.cache_status()
    );
    assert_eq!(o.not_modified(), before + 1);
    assert_eq!(app.get("/products/5").await.x_cache(), "HIT");
    // Malformed purges are refused whole.
    assert!(
        purge(Purge {
            prefixes: vec!["products".into()],
            tags: vec!["x".into()],
            ..Purge::default()
        })
        .await
        .is_err()
    );
    assert!(
        purge(Purge {
            prefixes: vec!["/a/b/c/d/e/f/g/h/i".into()],
            ..Purge::default()
        })
        .await
        .is_err()
    );
}

#[tokio::test]
async fn large_bodies_stream_and_are_not_stored() {
    let o = origin();
    let app = memory(&o, policy().max_body_bytes(1 << 20)).await;
    for detail in ["detail=too-large", "detail=hit-for-pass"] {
        let r = app.get("/big").await;
        assert_eq!(r.body.len(), 2 << 20);
        assert!(r.cache_status().contains(detail), "{}", r.cache_status());
    }
    assert_eq!(o.hits("/big"), 2);
}

#[tokio::test]
async fn concurrent_misses_collapse_into_one_origin_request() {
    let o = origin();
    let app = std::sync::Arc::new(memory(&o, policy()).await);
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.get("/slow").await })
        })
        .collect();
    let mut collapsed = 0;
    for r in requests {
        let r = r.await.unwrap();
        assert_eq!(r.body, "slow");
        collapsed += usize::from(r.cache_status().contains("collapsed"));
    }
    assert_eq!(o.hits("/slow"), 1);
    assert!(collapsed >= 50, "{collapsed} answered as collapsed");
    // Failures are shared by the waiters too, and not remembered.
    let errors: Vec<_> = (0..20)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.get("/error").await.status })
        })
        .collect();
    for e in errors {
        assert_eq!(e.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(o.hits("/error"), 1);
    app.get("/error").await;
    assert_eq!(o.hits("/error"), 2);
}

#[tokio::test]
async fn a_follower_stops_waiting_after_collapse_wait() {
    let o = origin();
    let app =
        std::sync::Arc::new(memory(&o, policy().collapse_wait(Duration::from_millis(50))).await);
    let leader = {
        let app = app.clone();
        tokio::spawn(async move { app.get("/slow").await })
    };
    strata_testkit::eventually(
        "the leader reaches the origin",
        Duration::from_secs(5),
        || async { o.hits("/slow") == 1 },
    )
    .await;
    let follower = app.get("/slow").await;
    assert!(
        follower.cache_status().contains("detail=collapse-timeout"),
        "{}",
        follower.cache_status()
    );
    assert_eq!(leader.await.unwrap().body, "slow");
    assert_eq!(o.hits("/slow"), 2);
}

#[tokio::test]
async fn hit_for_pass_lets_uncacheable_urls_through_without_queueing() {
    let o = origin();
    let app = memory(&o, policy()).await;
    app.get("/private").await;
    let r = app.get("/private").await;
    assert!(
        r.cache_status().contains("detail=hit-for-pass"),
        "{}",
        r.cache_status()
    );
    assert_eq!(r.body, "/private");
}

#[tokio::test]
async fn debug_shows_the_key() {
    let o = origin();
    let app = memory(&o, policy().debug(true)).await;
    let r = app
        .send(Request::get("/products/7?x=1").body(Body::empty()).unwrap())
        .await;
    // The key's field separator (a newline) is not header-safe and is left out.
    assert!(
        r.cache_status()
            .contains(r#"key="http:api/products/7?x=1""#),
        "{}",
        r.cache_status()
    );
}
