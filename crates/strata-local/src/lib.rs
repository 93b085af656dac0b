//! Local servers for Strata's tools: what `strata bench` and `strata demo` run when no Redis
//! is given, and what the test kit builds on.
//!
//! [`LocalRedis`] starts a `redis-server` from `PATH` on a loopback port (a free one, or the
//! one asked for), in a data directory of its own, with persistence off and its log captured
//! in that directory; it waits until the server answers, says clearly why when it cannot
//! (the binary missing, the port taken, the server exiting — with the end of its log), and
//! stops it when dropped. Faults for benchmarks are one call each: [`kill`](LocalRedis::kill)
//! (a crash), [`restart`](LocalRedis::restart) (same port, empty), [`freeze`](LocalRedis::freeze)
//! and [`thaw`](LocalRedis::thaw) (a hung server and its recovery).
//!
//! ```no_run
//! use strata_local::LocalRedis;
//!
//! let redis = LocalRedis::start()?;
//! println!("redis-server on {} (log: {})", redis.url(), redis.log_path().display());
//! # Ok::<(), strata_local::Error>(())
//! ```
//!
//! The server is a child in the caller's process group, so Ctrl-C in a terminal stops it with
//! the program; a program that exits normally stops it on drop.

mod error;
mod redis;

pub use error::Error;
pub use redis::{LocalRedis, LocalRedisBuilder};
