//! The loops that send the load: open (a constant arrival rate, each request's latency counted
//! from when it was due, so a stall's queue is measured — no coordinated omission) or closed
//! (`--concurrency` clients, each sending its next request when the last one is answered).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};
use tokio::sync::Semaphore;

use super::client::Client;
use super::ledger::Ledger;
use super::tally::{Ending, Outcome, Tally};
use super::template::{Template, Text, Values, pick};
use super::verdict::{cache_of, version_of};

/// How requests are sent.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// `rate` requests per second whatever the answers, at most `in_flight` at once.
    Open { rate: f64, in_flight: usize },
    /// `clients` loops of request, answer, request.
    Closed { clients: usize },
}

/// When a phase ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Until {
    Elapsed(Duration),
    Sent(u64),
}

/// A write: its template, the body for it, and headers of its own (a purge's token).
pub(crate) struct Write {
    pub(crate) template: Template,
    pub(crate) body: Option<Text>,
    pub(crate) headers: HeaderMap,
}

/// What every phase shares: the requests to make and where their answers go.
pub(crate) struct Load {
    pub(crate) client: Client,
    pub(crate) reads: Vec<Template>,
    pub(crate) writes: Vec<Write>,
    pub(crate) write_ratio: f64,
    pub(crate) version_field: Option<String>,
    pub(crate) ledger: Ledger,
    pub(crate) mode: Mode,
    draw: Mutex<Draw>,
    version: AtomicU64,
}

/// Weights and their sum, to draw an index from.
struct Weights(Vec<u32>, u64);

impl Weights {
    fn of<'a>(weights: impl Iterator<Item = &'a Template>) -> Weights {
        let w: Vec<u32> = weights.map(|t| t.weight).collect();
        let total = w.iter().map(|w| u64::from(*w)).sum();
        Weights(w, total)
    }

    fn draw(&self, rng: &mut StdRng) -> usize {
        pick(&self.0, rng.random_range(0..self.1.max(1)))
    }
}

/// The seeded stream of choices: which key, read or write, which template.
struct Draw {
    rng: StdRng,
    zipf: Zipf<f64>,
    reads: Weights,
    writes: Weights,
}

/// One request to make: which template of which kind.
#[derive(Clone, Copy)]
enum Op {
    Read(usize),
    Write(usize),
}

/// What to send: reads, writes, and the share of writes.
pub(crate) struct Requests {
    pub(crate) reads: Vec<Template>,
    pub(crate) writes: Vec<Write>,
    pub(crate) write_ratio: f64,
}

/// The keys' popularity: `{key}` from 1 to `keys`, Zipf with exponent `zipf`, seeded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keys {
    pub(crate) keys: u64,
    pub(crate) zipf: f64,
    pub(crate) seed: u64,
}

impl Load {
    pub(crate) fn new(
        client: Client,
        Requests {
            reads,
            writes,
            write_ratio,
        }: Requests,
        Keys { keys, zipf, seed }: Keys,
        version_field: Option<String>,
        mode: Mode,
    ) -> Result<Load, String> {
        let zipf = Zipf::new(keys as f64, zipf)
            .map_err(|e| format!("--keys {keys} --zipf {zipf}: {e}"))?;
        Ok(Load {
            client,
            draw: Mutex::new(Draw {
                rng: StdRng::seed_from_u64(seed),
                zipf,
                reads: Weights::of(reads.iter()),
                writes: Weights::of(writes.iter().map(|w| &w.template)),
            }),
            reads,
            writes,
            write_ratio,
            version_field,
            ledger: Ledger::default(),
            mode,
            // Versions of `{version}` grow across runs too: a service that keeps them never
            // sees one go back.
            version: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_secs() * 1_000),
            ),
        })
    }

    fn next(&self) -> (Op, Values) {
        let mut d = self
            .draw
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Draw {
            rng,
            zipf,
            reads,
            writes,
        } = &mut *d;
        let key = zipf.sample(rng) as u64;
        let write = !self.writes.is_empty() && rng.random::<f64>() < self.write_ratio;
        let op = if write {
            Op::Write(writes.draw(rng))
        } else {
            Op::Read(reads.draw(rng))
        };
        let rand = rng.random_range(0..1_000_000);
        drop(d);
        let values = Values {
            key,
            version: self.version.fetch_add(1, Ordering::Relaxed) + 1,
            rand,
        };
        (op, values)
    }

    /// Makes one request and records it; `due` is when it was meant to start.
    async fn one(&self, due: Instant, tally: &Mutex<Tally>) {
        let (op, values) = self.next();
        let no_headers = HeaderMap::new();
        let (template, body, extra) = match op {
            Op::Write(w) => {
                let w = &self.writes[w];
                (&w.template, w.body.as_ref(), &w.headers)
            }
            Op::Read(r) => (&self.reads[r], None, &no_headers),
        };
        let sent = Instant::now();
        let ending = match template.uri(&values) {
            Err(detail) => Ending::Failed {
                kind: "url",
                detail,
            },
            Ok(uri) => match (self.client)
                .send(
                    &template.method,
                    uri,
                    body.map(|b| b.render(&values)),
                    extra,
                )
                .await
            {
                Ok(r) => {
                    let version = (self.version_field.as_deref())
                        .and_then(|field| version_of(&r.body, field));
                    let ok = (200..300).contains(&r.status);
                    let stale = match op {
                        Op::Write(_) if ok => {
                            // The version the service answered, else the one sent.
                            let sent_version = body
                                .filter(|b| b.holds_version())
                                .and_then(|_| i64::try_from(values.version).ok());
                            if let Some(v) = version.or(sent_version) {
                                self.ledger.acknowledged(values.key, v, Instant::now());
                            }
                            false
                        }
                        Op::Read(_) if ok => {
                            version.is_some_and(|v| self.ledger.is_stale(values.key, v, sent))
                        }
                        _ => false,
                    };
                    Ending::Answered {
                        status: r.status,
                        cache: cache_of(&r.headers),
                        stale,
                    }
                }
                Err(f) => Ending::Failed {
                    kind: f.kind,
                    detail: f.detail,
                },
            },
        };
        let done = Instant::now();
        let outcome = Outcome {
            write: matches!(op, Op::Write(_)),
            latency_us: u64::try_from(done.saturating_duration_since(due).as_micros())
                .unwrap_or(u64::MAX),
            done,
            ending,
            request: format!("{} {}", template.method, template.url.render(&values)),
        };
        tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record(outcome);
    }

    /// Runs one phase until `until`, or until `stop` is set (a flood of failures, Ctrl-C).
    pub(crate) async fn phase(
        self: &Arc<Self>,
        until: Until,
        tally: &Arc<Mutex<Tally>>,
        stop: &Arc<AtomicBool>,
    ) {
        let started = Instant::now();
        let sent = Arc::new(AtomicU64::new(0));
        // Claims the next request, or says the phase is over.
        let claim = {
            let (sent, stop, tally) = (Arc::clone(&sent), Arc::clone(stop), Arc::clone(tally));
            move |due: Instant| {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                if tally
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .flood
                    .is_some()
                {
                    stop.store(true, Ordering::Relaxed);
                    return false;
                }
                match until {
                    Until::Elapsed(d) => due < started + d,
                    Until::Sent(n) => sent.fetch_add(1, Ordering::Relaxed) < n,
                }
            }
        };
        match self.mode {
            Mode::Open { rate, in_flight } => {
                let slots = Arc::new(Semaphore::new(in_flight));
                let interval = Duration::from_secs_f64(1.0 / rate);
                let mut n: u32 = 0;
                loop {
                    let due = started + interval * n;
                    if !claim(due) {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    // Waiting for a slot delays the requests behind it; their latency counts
                    // from when they were due, so the wait is measured.
                    let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                        break;
                    };
                    let (load, tally) = (Arc::clone(self), Arc::clone(tally));
                    tokio::spawn(async move {
                        load.one(due, &tally).await;
                        drop(slot);
                    });
                    n = n.saturating_add(1);
                }
                let all = u32::try_from(in_flight).unwrap_or(u32::MAX);
                let _ = slots.acquire_many(all).await;
            }
            Mode::Closed { clients } => {
                let claim = Arc::new(claim);
                let loops: Vec<_> = (0..clients)
                    .map(|_| {
                        let (load, tally, claim) =
                            (Arc::clone(self), Arc::clone(tally), Arc::clone(&claim));
                        tokio::spawn(async move {
                            loop {
                                let due = Instant::now();
                                if !claim(due) {
                                    break;
                                }
                                load.one(due, &tally).await;
                            }
                        })
                    })
                    .collect();
                for l in loops {
                    let _ = l.await;
                }
            }
        }
    }
}
