//! `strata doctor --redis URL`: what to check on a Redis before Strata goes to production
//! there — memory limit and eviction policy against how Strata writes, persistence,
//! replicas, the cluster's state, the ACL permissions a namespace needs, latency, and the
//! server's features. One verdict per check (ok, warn, fail) with the fix.

mod permissions;
mod server;

use std::process::ExitCode;

use serde::Serialize;
use strata_redis::{RedisConfig, RedisConnection};

use crate::BoxError;

/// `strata doctor` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct DoctorArgs {
    /// The Redis to check, as the services will reach it (their URL, user and TLS settings
    /// included); default: $REDIS_URL.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// A namespace whose ACL permissions to check (keys `NS:*`, `NS#*`, channels `NS#*`);
    /// repeatable.
    #[arg(long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// Print one JSON object (schema `strata-doctor/1`).
    #[arg(long)]
    json: bool,
    /// Exit 1 on a warning too, not only on a failure.
    #[arg(long)]
    strict: bool,
}

/// How a check came out, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub(crate) name: String,
    pub(crate) verdict: Verdict,
    /// What was found.
    pub(crate) finding: String,
    /// What to do about it (empty when nothing).
    pub(crate) fix: String,
}

impl Check {
    pub(crate) fn new(name: &str, verdict: Verdict, finding: impl Into<String>) -> Check {
        Check {
            name: name.to_owned(),
            verdict,
            finding: finding.into(),
            fix: String::new(),
        }
    }

    pub(crate) fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = fix.into();
        self
    }
}

/// The report.
#[derive(Debug, Serialize)]
struct Report {
    schema: &'static str,
    /// The URL checked, without its password.
    redis: String,
    verdict: Verdict,
    checks: Vec<Check>,
}

pub(crate) async fn run(args: DoctorArgs) -> Result<ExitCode, BoxError> {
    let url = args
        .redis
        .or_else(|| std::env::var("REDIS_URL").ok())
        .ok_or("give --redis URL (or set REDIS_URL)")?;
    let config = RedisConfig::from_url(&url)?;
    for ns in &args.namespaces {
        if ns.is_empty()
            || ns.len() > 128
            || !ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(
                format!("--namespace {ns:?}: a namespace is 1 to 128 of [A-Za-z0-9_.-]").into(),
            );
        }
    }
    let mut checks = Vec::new();
    let conn: Option<RedisConnection> = match config.connect().await {
        Ok(c) => Some(c),
        Err(e) => {
            checks.push(
                Check::new("connection", Verdict::Fail, format!("cannot connect: {e}")).fix(
                    "check the host, port, user, password and TLS settings of the URL, and that the server is up",
                ),
            );
            None
        }
    };
    if let Some(conn) = conn {
        checks.extend(server::checks(&conn, config.is_cluster()).await);
        checks.push(permissions::check(&conn, &args.namespaces).await);
    }
    let verdict = checks
        .iter()
        .map(|c| c.verdict)
        .max()
        .unwrap_or(Verdict::Ok);
    let report = Report {
        schema: "strata-doctor/1",
        redis: config.to_string(),
        verdict,
        checks,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", table(&report));
    }
    let failing = if args.strict {
        Verdict::Warn
    } else {
        Verdict::Fail
    };
    Ok(if verdict >= failing {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn table(r: &Report) -> String {
    let mut out = format!("strata doctor — {}\n\n", r.redis);
    let width = r.checks.iter().map(|c| c.name.len()).max().unwrap_or(5);
    for c in &r.checks {
        out.push_str(&format!(
            "{:<width$}  {:<4}  {}\n",
            c.name,
            c.verdict.word(),
            c.finding
        ));
        if !c.fix.is_empty() {
            out.push_str(&format!("{:<width$}        fix: {}\n", "", c.fix));
        }
    }
    let (warn, fail) = (
        r.checks
            .iter()
            .filter(|c| c.verdict == Verdict::Warn)
            .count(),
        r.checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .count(),
    );
    out.push_str(&format!(
        "\n{} checks: {} ok, {warn} to look at, {fail} failing\n",
        r.checks.len(),
        r.checks.len() - warn - fail
    ));
    out
}
