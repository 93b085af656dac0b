//! `strata load`: drives any HTTP service with a Zipf key distribution and forced
//! invalidations, measures latency (open loop: from when each request was due), the hit ratio
//! (from the responses' cache headers and, with `--redis`, from the services' own counters)
//! and staleness, and gates CI on them. The reference is `docs/load.md`.

mod client;
mod counted;
mod drive;
mod ledger;
mod report;
mod tally;
mod template;
mod verdict;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderValue};

use crate::BoxError;
use crate::gate;
use client::Client;
use counted::{Counted, Counter};
use drive::{Keys, Load, Mode, Requests, Until, Write};
use report::Report;
use tally::Tally;
use template::{Template, Text};

/// `strata load` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// A URL to read, with `{key}` where the key goes, e.g.
    /// 'http://staging:8080/products/{key}'; repeatable, `WEIGHT=URL` to weigh one against
    /// the others ('3=http://…/products/{key}').
    #[arg(long = "get", value_name = "[WEIGHT=]URL", required = true)]
    gets: Vec<String>,
    /// A write that invalidates, e.g. 'PUT http://staging:8080/products/{key}'; repeatable,
    /// weighted like --get. Sent for a share --writes of the requests.
    #[arg(long = "write", value_name = "[WEIGHT=]METHOD URL")]
    writes: Vec<String>,
    /// The body of every --write, read from FILE; `{key}`, `{version}` (grows with every
    /// write) and `{rand}` (0–999,999) are replaced.
    #[arg(long, value_name = "FILE")]
    body: Option<PathBuf>,
    /// Invalidate through a gateway's admin API instead of (or besides) --write: its base
    /// URL, e.g. http://127.0.0.1:8081; with --purge-tag and/or --purge-path.
    #[arg(long, value_name = "ADMIN_URL")]
    purge: Option<String>,
    /// A tag to purge, e.g. 'product:{key}'.
    #[arg(long, value_name = "TEMPLATE", requires = "purge")]
    purge_tag: Option<String>,
    /// A URL path to purge (every variant), e.g. '/products/{key}'.
    #[arg(long, value_name = "TEMPLATE", requires = "purge")]
    purge_path: Option<String>,
    /// The admin API's bearer token (default: $STRATA_ADMIN_TOKEN).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// The share of requests that are writes (or purges), 0 to 1.
    #[arg(long = "writes", value_name = "RATIO", default_value_t = 0.0)]
    write_ratio: f64,
    /// Distinct keys: `{key}` runs from 1 to N.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// The Zipf exponent of the keys' popularity (0: uniform).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Seed of the request stream: the same seed, the same keys in the same order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A header for every request, 'Name: value'; repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// `Authorization: Bearer TOKEN` on every request.
    #[arg(long, value_name = "TOKEN")]
    bearer: Option<String>,
    /// `Authorization: Basic …` on every request, from USER:PASSWORD.
    #[arg(long, value_name = "USER:PASSWORD")]
    user: Option<String>,
    /// Open loop: this many requests per second, whatever the answers; latency counts from
    /// when each was due, so a stalled service's queue shows.
    #[arg(long, value_name = "PER_SECOND", conflicts_with = "concurrency")]
    rate: Option<f64>,
    /// Open loop: at most this many requests outstanding (more wait, and their wait counts).
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Closed loop: this many clients, each sending its next request when answered
    /// (the default mode, with 16).
    #[arg(long)]
    concurrency: Option<usize>,
    /// How long to measure: `30s`, `2m`, `500ms` (default 30s unless --requests).
    #[arg(long, value_parser = strata_gateway::parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,
    /// How many requests to measure.
    #[arg(long)]
    requests: Option<u64>,
    /// A warm-up before measuring, not counted: `5s`.
    #[arg(long, value_parser = strata_gateway::parse_duration, default_value = "0s")]
    warmup: Duration,
    /// More CA certificates (a PEM file) to trust for https:// targets, beside the system's:
    /// a staging environment's own CA.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Time allowed per request.
    #[arg(long, value_parser = strata_gateway::parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Redis the services keep their counters in: the hit ratio as they counted it, per
    /// namespace (`strata stats`), over the measured phase.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Only these namespaces' counters (default: every one that reports); repeatable.
    #[arg(long = "namespace", value_name = "NS", requires = "redis")]
    namespaces: Vec<String>,
    /// How often the services publish their counters (their `StatsReporter`'s period).
    #[arg(long, value_parser = strata_gateway::parse_duration, default_value = "2s")]
    stats_every: Duration,
    /// Check staleness: the JSON field (dotted path) holding an entity's version. A read
    /// returning a version older than a write of its key acknowledged before the read was
    /// sent is stale; a write's version is the one it answers, else the `{version}` it sent.
    #[arg(long, value_name = "FIELD")]
    version_field: Option<String>,
    /// Print the report as one JSON object (schema `strata-load/1`, docs/load.md).
    #[arg(long)]
    json: bool,
    /// Write plots (SVG and PNG) into this directory: latency by percentile, hit ratio and
    /// throughput over time.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// A CI gate, e.g. 'hit_ratio>=0.85', 'p95_ms<=150', 'stale_reads==0', 'errors==0';
    /// repeatable; exit code 1 if any fails.
    #[arg(long = "gate", value_name = "EXPR")]
    gates: Vec<String>,
}

pub(crate) async fn run(args: LoadArgs) -> Result<ExitCode, BoxError> {
    // Everything that can be wrong with the arguments is said before any request is sent.
    let gates = gate::parse_all(&args.gates)?;
    let load = Arc::new(plan(&args)?);
    reachable(&load.reads[0]).await?;
    let counter = match &args.redis {
        Some(url) => Some(Counter::connect(url, args.namespaces.clone(), args.stats_every).await?),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: finishing the requests in flight, then the report");
                stop.store(true, Ordering::Relaxed);
            }
        });
    }
    let until = match (args.requests, args.duration) {
        (Some(n), _) => Until::Sent(n),
        (None, Some(d)) => Until::Elapsed(d),
        (None, None) => Until::Elapsed(Duration::from_secs(30)),
    };

    if !args.warmup.is_zero() {
        let tally = Arc::new(Mutex::new(Tally::new(Instant::now())));
        let bar = progress(Until::Elapsed(args.warmup), "warm-up", args.json);
        with_progress(
            load.phase(Until::Elapsed(args.warmup), &tally, &stop),
            &bar,
            &tally,
            Until::Elapsed(args.warmup),
        )
        .await;
        bar.finish_and_clear();
        if let Some(why) = tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .flood
            .clone()
        {
            return Err(format!("stopped in the warm-up: {why}").into());
        }
    }
    let before = match &counter {
        Some(c) => Some(c.settled().await?),
        None => None,
    };

    let started = Instant::now();
    let tally = Arc::new(Mutex::new(Tally::new(started)));
    let bar = progress(until, "load", args.json);
    with_progress(load.phase(until, &tally, &stop), &bar, &tally, until).await;
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let counted = match (&counter, &before) {
        (Some(c), Some(before)) => Some(Counted::between(before, &c.settled().await?)),
        _ => None,
    };
    let tally = tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let stopped_early = tally.flood.clone().or_else(|| {
        stop.load(Ordering::Relaxed)
            .then(|| "interrupted (Ctrl-C)".to_owned())
    });
    let report = Report::new(
        load.mode,
        params(&args),
        &tally,
        elapsed,
        counted,
        args.version_field.is_some(),
        stopped_early,
    );
    if let Some(dir) = &args.out {
        draw(dir, &report, &tally.reads);
    }
    drop(tally);
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        );
    } else {
        print!("{}", report.table());
    }
    if let Some(why) = &report.stopped_early {
        eprintln!("the load stopped early: {why}");
    }
    let failed = gate::any_failed(&gates, &[&report]);
    Ok(if failed || report.stopped_early.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The requests to make, checked.
fn plan(args: &LoadArgs) -> Result<Load, BoxError> {
    if !(0.0..=1.0).contains(&args.write_ratio) {
        return Err(format!("--writes {}: a share from 0 to 1", args.write_ratio).into());
    }
    if args.keys == 0 {
        return Err("--keys: at least 1".into());
    }
    if !(args.zipf >= 0.0 && args.zipf.is_finite()) {
        return Err(format!("--zipf {}: a finite exponent ≥ 0", args.zipf).into());
    }
    let reads = args
        .gets
        .iter()
        .map(|g| Template::get(g))
        .collect::<Result<Vec<_>, _>>()?;
    let body = match &args.body {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--body {}: {e}", path.display()))?;
            Some(Text::parse("--body", &text)?)
        }
        None => None,
    };
    let mut writes = args
        .writes
        .iter()
        .map(|w| {
            Ok(Write {
                template: Template::write(w)?,
                body: body.clone(),
                headers: HeaderMap::new(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if let Some(purge) = purge(args)? {
        writes.push(purge);
    }
    if args.write_ratio > 0.0 && writes.is_empty() {
        return Err("--writes: give what a write is (--write 'PUT http://…/{key}', or --purge ADMIN_URL with --purge-tag/--purge-path)".into());
    }
    if args.write_ratio == 0.0 && !writes.is_empty() {
        return Err("--write/--purge given but --writes is 0: say which share of requests are writes, e.g. --writes 0.02".into());
    }
    if args.body.is_some() && args.writes.is_empty() {
        return Err("--body is the body of --write requests; there are none".into());
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate: requests per second, more than 0".into());
    }
    let mode = match (args.rate, args.concurrency) {
        (Some(rate), _) => Mode::Open {
            rate,
            in_flight: args.max_in_flight.max(1),
        },
        (None, c) => Mode::Closed {
            clients: c.unwrap_or(16).max(1),
        },
    };
    let client = Client::new(&client::Settings {
        headers: &args.headers,
        bearer: args.bearer.as_deref(),
        basic: args.user.as_deref(),
        timeout: args.timeout,
        cacert: args.cacert.as_deref(),
    })?;
    let keys = Keys {
        keys: args.keys,
        zipf: args.zipf,
        seed: args.seed,
    };
    Ok(Load::new(
        client,
        Requests {
            reads,
            writes,
            write_ratio: args.write_ratio,
        },
        keys,
        args.version_field.clone(),
        mode,
    )?)
}

/// `--purge ADMIN_URL --purge-tag T --purge-path P`: a write that is a purge request.
fn purge(args: &LoadArgs) -> Result<Option<Write>, String> {
    let Some(admin) = &args.purge else {
        return Ok(None);
    };
    if args.purge_tag.is_none() && args.purge_path.is_none() {
        return Err("--purge: say what to purge with --purge-tag and/or --purge-path".into());
    }
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("STRATA_ADMIN_TOKEN").ok())
        .filter(|t| !t.is_empty())
        .ok_or("--purge: the admin API needs its token (--token or $STRATA_ADMIN_TOKEN)")?;
    let url = format!("{}/_strata/purge", admin.trim_end_matches('/'));
    let template = Template::write(&format!("POST {url}"))?;
    // The templates go into JSON strings; a placeholder survives escaping unchanged.
    let quoted = |t: &Option<String>| {
        t.as_ref()
            .map(|t| serde_json::to_string(t).unwrap_or_default())
    };
    let body = match (quoted(&args.purge_tag), quoted(&args.purge_path)) {
        (Some(tag), Some(path)) => format!("{{\"tags\":[{tag}],\"urls\":[{path}]}}"),
        (Some(tag), None) => format!("{{\"tags\":[{tag}]}}"),
        (None, Some(path)) => format!("{{\"urls\":[{path}]}}"),
        (None, None) => unreachable!("checked above"),
    };
    let mut headers = HeaderMap::new();
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "--token: not a valid header value".to_owned())?;
    value.set_sensitive(true);
    headers.insert(AUTHORIZATION, value);
    Ok(Some(Write {
        template,
        body: Some(Text::parse("--purge-tag/--purge-path", &body)?),
        headers,
    }))
}

/// Connects to the first read's host once: a target that cannot be reached is one clear
/// error, not a flood of failed requests. No request is sent, so nothing is counted twice.
async fn reachable(first: &Template) -> Result<(), BoxError> {
    let sample = first.uri(&template::Values {
        key: 1,
        version: 1,
        rand: 1,
    })?;
    let host = sample.host().unwrap_or_default();
    let port = sample
        .port_u16()
        .unwrap_or(if sample.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let address = format!(
        "{}:{port}",
        host.trim_start_matches('[').trim_end_matches(']')
    );
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&address),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot reach {host}:{port} (from --get {sample}): {e}").into()),
        Err(_) => Err(format!(
            "cannot reach {host}:{port} (from --get {sample}): no answer within 5 s"
        )
        .into()),
    }
}

/// What the run was asked to do, for the report.
fn params(args: &LoadArgs) -> serde_json::Value {
    serde_json::json!({
        "gets": args.gets,
        "writes": args.writes,
        "purge_tag": args.purge_tag,
        "purge_path": args.purge_path,
        "write_ratio": args.write_ratio,
        "keys": args.keys,
        "zipf": args.zipf,
        "seed": args.seed,
        "duration_s": args.duration.map(|d| d.as_secs_f64()),
        "requests": args.requests,
        "warmup_s": args.warmup.as_secs_f64(),
        "version_field": args.version_field,
    })
}

fn progress(until: Until, what: &str, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let (len, template) = match until {
        Until::Elapsed(d) => (
            d.as_secs().max(1),
            "{msg:>8} [{bar:40}] {pos}/{len} s {prefix}",
        ),
        Until::Sent(n) => (n, "{msg:>8} [{bar:40}] {pos}/{len} requests {prefix}"),
    };
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// Runs `phase`, moving `bar` and showing the figures so far four times a second.
async fn with_progress(
    phase: impl std::future::Future<Output = ()>,
    bar: &indicatif::ProgressBar,
    tally: &Mutex<Tally>,
    until: Until,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tokio::pin!(phase);
    loop {
        tokio::select! {
            () = &mut phase => return,
            _ = tick.tick() => {
                let t = tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let hits = t.hit_ratio().map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0));
                bar.set_prefix(format!(
                    "({:.0} req/s, hit ratio {hits}, {} errors)",
                    t.requests() as f64 / started.elapsed().as_secs_f64().max(0.001),
                    t.errors
                ));
                bar.set_position(match until {
                    Until::Elapsed(_) => started.elapsed().as_secs(),
                    Until::Sent(_) => t.requests(),
                });
            }
        }
    }
}

/// The plots: read latency by percentile, hit ratio and throughput over time.
#[cfg(feature = "plots")]
fn draw(dir: &std::path::Path, report: &Report, latency: &hdrhistogram::Histogram<u64>) {
    use crate::plot::{Chart, Kind};
    let over_time = |f: &dyn Fn(&report::TimelinePoint) -> Option<f64>| {
        let points = report.timeline.iter();
        vec![(
            "load",
            points.filter_map(|p| Some((p.t_s, f(p)?))).collect(),
        )]
    };
    let charts = [
        Chart {
            file: "latency",
            title: "strata load: read latency by percentile".into(),
            kind: Kind::Latency(vec![("load", latency)]),
        },
        Chart {
            file: "hit_ratio",
            title: "strata load: hit ratio over time (from the responses)".into(),
            kind: Kind::OverTime {
                y_desc: "hit ratio",
                unit: true,
                series: over_time(&|p| p.hit_ratio),
            },
        },
        Chart {
            file: "throughput",
            title: "strata load: throughput and errors over time".into(),
            kind: Kind::OverTime {
                y_desc: "requests per second",
                unit: false,
                series: vec![
                    over_time(&|p| Some(p.requests as f64)).remove(0),
                    ("errors", over_time(&|p| Some(p.errors as f64)).remove(0).1),
                ],
            },
        },
    ];
    crate::plot::report(crate::plot::draw(dir, "load", &charts));
}

#[cfg(not(feature = "plots"))]
fn draw(_dir: &std::path::Path, _report: &Report, _latency: &hdrhistogram::Histogram<u64>) {
    eprintln!("plots: this `strata` was built without them (cargo feature `plots`)");
}
