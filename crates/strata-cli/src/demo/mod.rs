//! `strata demo`: the reference e-commerce landscape — five services (each its own process
//! and database), the gateway in front, Redis between them — seeded, driven, and reported on.

mod load;
mod metrics;
mod outage;
mod processes;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use strata_demo::{SEED_PRODUCTS, SERVICES};
use strata_local::LocalRedis;

use load::{Http, Watch};
use processes::Process;

use crate::BoxError;

/// `strata demo`.
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Redis to use (else one started from PATH, else the embedded cache in each process).
    #[arg(long)]
    redis: Option<String>,
    /// How long the load runs, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent clients of the load.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Where the gateway listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Where the SQLite databases go (default: a temporary directory, removed at exit).
    #[arg(long)]
    data: Option<PathBuf>,
    /// A PostgreSQL server (`postgres://user:password@host:port/db`; else `$DATABASE_URL`;
    /// else SQLite files): each service gets its own database `strata_<service>` there,
    /// created when missing.
    #[arg(long)]
    database_url: Option<String>,
    /// Skip the outage (the inventory service killed and restarted after the load).
    #[arg(long)]
    no_outage: bool,
    /// Leave everything running after the report, until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// `strata demo-service` (started by `strata demo`).
#[derive(Args, Debug)]
pub(crate) struct ServiceArgs {
    /// Which service: product, inventory, user, order, payment.
    #[arg(long)]
    service: String,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Its database: sqlite://path or postgres://…
    #[arg(long)]
    database_url: String,
    /// Redis.
    #[arg(long)]
    redis: Option<String>,
    /// The user service (for the order service).
    #[arg(long)]
    user_url: Option<String>,
    /// The product service (for the order service).
    #[arg(long)]
    product_url: Option<String>,
    /// The inventory service (for the order service).
    #[arg(long)]
    inventory_url: Option<String>,
    /// Seed demo data into an empty database.
    #[arg(long)]
    seed: bool,
}

impl ServiceArgs {
    pub(crate) fn service_name(&self) -> &str {
        &self.service
    }
}

pub(crate) async fn service(args: ServiceArgs) -> Result<ExitCode, BoxError> {
    strata_demo::run(strata_demo::RunArgs {
        service: args.service,
        listen: args.listen,
        database_url: args.database_url,
        redis_url: args.redis,
        user_url: args.user_url,
        product_url: args.product_url,
        inventory_url: args.inventory_url,
        seed: args.seed,
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn run(args: DemoArgs) -> Result<ExitCode, BoxError> {
    // Redis: given, else started from PATH, else none — said clearly.
    let mut _started: Option<LocalRedis> = None;
    let redis = match args.redis.clone() {
        Some(url) => Some(url),
        None => match LocalRedis::start() {
            Ok(server) => {
                let url = server.url();
                eprintln!("started redis-server on {url}");
                _started = Some(server);
                Some(url)
            }
            Err(e) => {
                eprintln!(
                    "no Redis ({e}): every process uses the embedded in-memory cache (one \
                     instance each, no shared L2), and the order service polls the other \
                     services' outboxes over HTTP instead of Redis Streams; the gateway cannot \
                     follow the services' invalidations — install redis-server or pass --redis \
                     for the full landscape"
                );
                None
            }
        },
    };
    let temp;
    let data = match &args.data {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_owned()
        }
    };
    // Each service's database: its own on the PostgreSQL server, else a SQLite file.
    let postgres = args
        .database_url
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()));
    let mut databases = std::collections::HashMap::new();
    for name in SERVICES {
        let url = match &postgres {
            Some(server) => strata_demo::Db::provision(server, name).await?,
            None => format!("sqlite://{}", data.join(format!("{name}.db")).display()),
        };
        databases.insert(name, url);
    }
    eprintln!(
        "databases: {}",
        match &postgres {
            Some(_) => "PostgreSQL, one database per service (strata_<service>)".to_owned(),
            None => format!("SQLite files in {}", data.display()),
        }
    );
    let service_args = |name: &str, extra: &[String]| {
        let mut a = vec![
            "demo-service".to_owned(),
            "--service".into(),
            name.into(),
            "--database-url".into(),
            databases.get(name).cloned().unwrap_or_default(),
            "--seed".into(),
        ];
        if let Some(url) = &redis {
            a.extend(["--redis".into(), url.clone()]);
        }
        a.extend_from_slice(extra);
        a
    };
    let marker = |name: &str| format!("strata demo-service {name} on");
    let mut services = Vec::new();
    for name in SERVICES.iter().filter(|s| **s != "order") {
        services.push(Process::start(
            name,
            &service_args(name, &[]),
            &marker(name),
        )?);
    }
    let url_of = |name: &str, services: &[Process]| {
        services
            .iter()
            .find(|p| p.name == name)
            .map(Process::url)
            .unwrap_or_default()
    };
    let order_extra = [
        "--user-url".to_owned(),
        url_of("user", &services),
        "--product-url".into(),
        url_of("product", &services),
        "--inventory-url".into(),
        url_of("inventory", &services),
    ];
    services.push(Process::start(
        "order",
        &service_args("order", &order_extra),
        &marker("order"),
    )?);
    let token = admin_token()?;
    let config = gateway_config(&args, redis.as_deref(), &token, &services, &url_of);
    let config_path = data.join("gateway.toml");
    std::fs::write(&config_path, config)?;
    let gateway = Process::start(
        "gateway",
        &[
            "gateway".into(),
            "--config".into(),
            config_path.display().to_string(),
        ],
        "strata gateway on",
    )?;
    let admin = gateway
        .url_after("admin on")
        .ok_or("the gateway announced no admin listener")?;
    let http = Http::new();
    let measured = load::drive(
        &http,
        &gateway.url(),
        Watch {
            gateway: gateway.url(),
            product: url_of("product", &services),
            order: url_of("order", &services),
        },
        SEED_PRODUCTS as u64,
        Duration::from_secs(args.seconds),
        args.clients,
    )
    .await?;
    let mut stats = Vec::new();
    for p in &services {
        let (_, body) = http.send("GET", &format!("{}/_stats", p.url()), "").await?;
        stats.push(serde_json::from_str::<serde_json::Value>(&body)?);
    }
    let (_, gateway_metrics) = http.send("GET", &format!("{admin}/metrics"), "").await?;
    let outage = if args.no_outage {
        serde_json::Value::Null
    } else {
        let order = url_of("order", &services);
        let inventory = services
            .iter_mut()
            .find(|p| p.name == "inventory")
            .ok_or("no inventory service")?;
        eprintln!("killing the inventory service; the order service goes on without it");
        outage::inventory_down(&http, &order, inventory).await?
    };
    let mut report = report(
        &measured,
        &stats,
        &gateway_hits(&gateway_metrics),
        redis.is_some(),
        urls(&gateway, &admin, &services, &token),
    );
    report["metrics_exported"] = exported(&http, &services, &admin).await.into();
    report["database"] = if postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    }
    .into();
    report["inventory_down"] = outage;
    if args.json {
        println!("{report}");
    } else {
        print_report(&report);
    }
    if args.keep_running {
        eprintln!("running; Ctrl-C to stop");
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(gateway);
    // Dependents first, so none of them calls a service already gone.
    for p in services.into_iter().rev() {
        drop(p);
    }
    let outage_errors = report
        .pointer("/inventory_down/errors")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    Ok(if measured.errors == 0 && outage_errors == 0.0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The metric families every process exports now (`# TYPE` lines of each `/metrics`),
/// sorted: what dashboards and alert rules may name.
async fn exported(http: &Http, services: &[Process], admin: &str) -> Vec<String> {
    let urls = services
        .iter()
        .map(|p| format!("{}/metrics", p.url()))
        .chain([format!("{admin}/metrics")]);
    let mut names = std::collections::BTreeSet::new();
    for url in urls {
        if let Ok((200, text)) = http.send("GET", &url, "").await {
            names.extend(text.lines().filter_map(|l| {
                Some(
                    l.strip_prefix("# TYPE ")?
                        .split_whitespace()
                        .next()?
                        .to_owned(),
                )
            }));
        }
    }
    names.into_iter().collect()
}

/// A fresh admin token for this run's gateway: 16 bytes from the kernel's generator, in hex.
fn admin_token() -> Result<String, BoxError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn gateway_config(
    args: &DemoArgs,
    redis: Option<&str>,
    token: &str,
    services: &[Process],
    url_of: &dyn Fn(&str, &[Process]) -> String,
) -> String {
    let mut c = format!(
        "listen = \"{}\"\nadmin_token = \"{token}\"\nfollow = [\"product\", \"inventory\"]\n",
        args.listen
    );
    if let Some(url) = redis {
        c.push_str(&format!("redis = \"{url}\"\n"));
    }
    let routes: [(&str, &str, &str, &str); 8] = [
        ("products", "/products", "product", ""),
        ("categories", "/categories", "product", ""),
        ("stock", "/stock", "inventory", ""),
        ("quotes", "/quotes", "order", ""),
        ("orders", "/orders", "order", ""),
        ("users", "/users", "user", "headers = [\"x-user-id\"]\n"),
        ("countries", "/countries", "user", ""),
        ("payments", "/payments", "payment", "enabled = false\n"),
    ];
    for (name, prefix, service, cache) in routes {
        c.push_str(&format!(
            "\n[[route]]\nname = \"{name}\"\nprefix = \"{prefix}\"\nupstream = \"{}\"\n",
            url_of(service, services)
        ));
        if !cache.is_empty() {
            c.push_str(&format!("[route.cache]\n{cache}"));
        }
    }
    c
}

/// The gateway's answers by outcome, from its `strata_http_responses_total{route,cache}`.
fn gateway_hits(text: &str) -> serde_json::Value {
    let mut by_outcome = serde_json::Map::new();
    for (labels, value) in metrics::samples(text, "strata_http_responses_total") {
        let Some(outcome) = metrics::label(labels, "cache") else {
            continue;
        };
        let entry = by_outcome.entry(outcome.to_owned()).or_insert(0.0.into());
        *entry = (entry.as_f64().unwrap_or(0.0) + value).into();
    }
    let n = |k: &str| {
        by_outcome
            .get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    let total: f64 = by_outcome
        .values()
        .filter_map(serde_json::Value::as_f64)
        .sum();
    serde_json::json!({
        "answers": total,
        "hit_ratio": ratio(n("hit") + n("stale"), total),
        "by_outcome": by_outcome,
    })
}

fn ratio(hits: f64, total: f64) -> f64 {
    if total > 0.0 { hits / total } else { 0.0 }
}

fn report(
    m: &load::Measured,
    stats: &[serde_json::Value],
    gateway_cache: &serde_json::Value,
    coherent: bool,
    urls: serde_json::Value,
) -> serde_json::Value {
    let n = |v: &serde_json::Value, k: &str| {
        v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0)
    };
    let per_service: Vec<serde_json::Value> = stats
        .iter()
        .map(|s| {
            let (l1, l2, misses) = (n(s, "l1_hits"), n(s, "l2_hits"), n(s, "misses"));
            let reads = l1 + l2 + misses;
            // Loads: database queries, or (the order service) calls to other services.
            let loads = n(s, "loader_calls");
            serde_json::json!({
                "service": s.get("service"),
                "reads": reads,
                "hit_ratio": ratio(l1 + l2, reads),
                "l1_hit_ratio": ratio(l1, reads),
                "db_queries": n(s, "db_queries"),
                "loads": loads,
                "loads_saved": (reads - loads).max(0.0),
                "stale_served": n(s, "stale_served"),
            })
        })
        .collect();
    let q = |p: f64| m.latency.value_at_quantile(p) as f64 / 1000.0;
    serde_json::json!({
        "redis": coherent,
        "requests": m.requests,
        "errors": m.errors,
        "gateway_ms": {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99)},
        "gateway_cache": gateway_cache,
        "services": per_service,
        "update": {
            "product": m.updated_product,
            "serving_new_price_after_ms": m.propagation.iter().map(|(layer, t)| {
                (layer.clone(), t.map(|t| t.as_secs_f64() * 1000.0).into())
            }).collect::<serde_json::Map<String, serde_json::Value>>(),
        },
        "urls": urls,
    })
}

/// Where to look: the gateway, its admin listener, the services' metrics, a purge to try.
fn urls(gateway: &Process, admin: &str, services: &[Process], token: &str) -> serde_json::Value {
    serde_json::json!({
        "gateway": gateway.url(),
        "admin": admin,
        "dashboard": format!("{admin}/_strata/#token={token}"),
        "product": format!("{}/products/1", gateway.url()),
        "quote": format!("{}/quotes/1", gateway.url()),
        "metrics": services.iter().map(|p| format!("{}/metrics", p.url())).chain([format!("{admin}/metrics")]).collect::<Vec<_>>(),
        "purge": format!("curl -X POST {admin}/_strata/purge -H 'authorization: Bearer {token}' -d '{{\"tags\":[\"product:1\"]}}'"),
    })
}

fn print_report(r: &serde_json::Value) {
    let f = |v: &serde_json::Value, p: &str| {
        v.pointer(p)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    println!(
        "\nstrata demo — {} requests through the gateway, {} errors",
        f(r, "/requests"),
        f(r, "/errors")
    );
    println!(
        "gateway latency: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
        f(r, "/gateway_ms/p50"),
        f(r, "/gateway_ms/p95"),
        f(r, "/gateway_ms/p99")
    );
    println!(
        "gateway cache: {:.1}% of {:.0} answers from the cache (hit or stale)",
        f(r, "/gateway_cache/hit_ratio") * 100.0,
        f(r, "/gateway_cache/answers")
    );
    println!("\nbehind the gateway (misses, quotes):");
    println!(
        "{:<10} {:>8} {:>10} {:>9} {:>11} {:>11}",
        "service", "reads", "hit ratio", "L1 ratio", "DB queries", "loads saved"
    );
    for s in r
        .pointer("/services")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        println!(
            "{:<10} {:>8.0} {:>9.1}% {:>8.1}% {:>11.0} {:>11.0}",
            s.get("service").and_then(|v| v.as_str()).unwrap_or("?"),
            f(s, "/reads"),
            f(s, "/hit_ratio") * 100.0,
            f(s, "/l1_hit_ratio") * 100.0,
            f(s, "/db_queries"),
            f(s, "/loads_saved"),
        );
    }
    println!(
        "\nproduct {} repriced mid-run; serving the new price after:",
        f(r, "/update/product")
    );
    if let Some(layers) = r
        .pointer("/update/serving_new_price_after_ms")
        .and_then(|v| v.as_object())
    {
        for (layer, ms) in layers {
            match ms.as_f64() {
                Some(ms) => println!("  {layer:<16} {ms:.1} ms"),
                None => println!("  {layer:<16} not within 10 s"),
            }
        }
    }
    if !r
        .get("redis")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
    {
        println!(
            "  (no Redis: the order service learnt it from the product service's outbox feed; \
             the gateway dropped it as the update passed through it)"
        );
    }
    if let Some(o) = r.get("inventory_down").filter(|o| !o.is_null()) {
        println!(
            "\ninventory service killed: the order service answered {:.0} quotes in {} s, \
             {:.0} errors, {:.0} from stale stock levels, {:.0} with the level unknown; \
             its breaker {}",
            f(o, "/quotes"),
            outage::DOWN_FOR.as_secs(),
            f(o, "/errors"),
            f(o, "/stale_served"),
            f(o, "/units_unknown"),
            if o.get("breaker_opened") == Some(&serde_json::Value::Bool(true)) {
                "opened (calls to inventory fail at once)"
            } else {
                "stayed closed"
            }
        );
        match o
            .pointer("/breaker_closed_after_restart_ms")
            .and_then(serde_json::Value::as_f64)
        {
            Some(ms) => println!("restarted: breaker closed again after {ms:.0} ms"),
            None => println!("restarted: breaker still not closed after 15 s"),
        }
    }
    println!("\nopen:");
    if let Some(urls) = r.get("urls") {
        for key in ["dashboard", "gateway", "product", "quote", "purge"] {
            println!(
                "  {key:<9} {}",
                urls.get(key).and_then(|v| v.as_str()).unwrap_or("")
            );
        }
        println!(
            "  metrics   {}",
            urls.get("metrics")
                .map(std::string::ToString::to_string)
                .unwrap_or_default()
        );
    }
}
