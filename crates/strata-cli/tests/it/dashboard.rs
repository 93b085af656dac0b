//! The gateway's `/_strata/` page, rendered by a real headless Chromium (Debian's
//! `chromium`, installed by `scripts/test`).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use strata_testkit::{RedisServer, eventually};

use crate::gateway::{Gateway, Http, TOKEN, config, service_cache, upstream};

/// Chromium, headless, as root in a container: no sandbox, no GPU.
fn chromium(args: &[&str]) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1200,700",
            // Virtual time runs the page's timers (its 2 s polls) without waiting for them;
            // fetches still go to the real gateway.
            "--virtual-time-budget=8000",
        ])
        .args(args)
        .output()
        .expect("run chromium (scripts/test installs it: apt-get install chromium)");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_hit_ratios_and_recent_invalidations_in_chromium() {
    let redis = RedisServer::start();
    let (_up, addr, _stop) = upstream().await;
    let gw = Gateway::start(&config(addr, Some(&redis), r#"follow = ["product"]"#), &[]);
    let http = Http::new();
    // A miss, then hits.
    for _ in 0..4 {
        http.get(&gw.url("/products/7")).await;
    }
    // A service invalidates a tag; the gateway follows its namespace.
    let service = service_cache(&redis, "product").await;
    service.invalidate_tag("product:7").await.unwrap();

    // The data, behind the token; the counters reach Redis within the 2 s report interval.
    let auth = format!("Bearer {TOKEN}");
    let api = gw.admin_url("/_strata/api/dashboard");
    assert_eq!(http.get(&api).await.status, 401, "the data needs the token");
    let dashboard = || async {
        let reply = http
            .send("GET", &api, &[("authorization", &auth)], "")
            .await;
        serde_json::from_str::<Value>(&reply.body).unwrap()
    };
    let namespace = |v: &Value, name: &str| {
        v["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["namespace"] == name)
            .cloned()
    };
    eventually(
        "the dashboard has the gateway's counters and the invalidation",
        Duration::from_secs(10),
        || async {
            let v = dashboard().await;
            let counted = namespace(&v, "gateway").is_some_and(|n| n["l1_hits"].as_u64() > Some(0));
            let listed = v["invalidations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["namespace"] == "product" && i["name"] == "product:7");
            counted && listed
        },
    )
    .await;
    let data = dashboard().await;
    // What the page must show: the counters do not move any more (no traffic; the page's
    // own requests are not cache reads).
    let gateway = namespace(&data, "gateway").unwrap();
    let ratio = gateway["hit_ratio"].as_f64().unwrap();
    assert!(ratio > 0.5 && ratio < 1.0, "a miss and hits: {data}");
    let shown_ratio = format!(r#"<td class="hit-ratio">{:.1} %</td>"#, ratio * 100.0);
    let shown_reads = format!("<td>{}</td>", gateway["reads"]);

    // The page: public, locked down, and rendered by a browser from the JSON above.
    let page = http.get(&gw.admin_url("/_strata/")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-security-policy")
            .contains("script-src 'self'"),
        "{:?}",
        page.headers
    );
    let dom = chromium(&[
        "--dump-dom",
        &gw.admin_url(&format!("/_strata/#token={TOKEN}")),
    ]);
    assert!(
        dom.contains(r#"data-ready="1""#),
        "the page never rendered data:\n{dom}"
    );
    let row = dom
        .split(r#"<tr data-namespace="gateway">"#)
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no gateway row in:\n{dom}"));
    assert!(row.contains(&shown_ratio), "{shown_ratio} in {row}");
    assert!(row.contains(&shown_reads), "{shown_reads} in {row}");
    assert!(
        dom.contains(r#"<span class="what">tag product:7</span>"#),
        "the invalidation is listed:\n{dom}"
    );

    // Without the token the page asks for it and shows nothing.
    let locked = chromium(&["--dump-dom", &gw.admin_url("/_strata/")]);
    assert!(locked.contains("the admin token is needed"), "{locked}");
    assert!(!locked.contains("data-namespace"), "{locked}");

    // And it paints: a screenshot of the rendered page.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&[
        &format!("--screenshot={}", shot.display()),
        &gw.admin_url(&format!("/_strata/#token={TOKEN}")),
    ]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(png.len() > 10_000, "an empty page? {} bytes", png.len());
}
