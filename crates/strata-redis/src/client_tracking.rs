//! `CLIENT TRACKING` on the engine's own sockets: what each socket asks of the server when it
//! opens, and a count of the sockets opened. The receiver of the invalidations
//! ([`crate::tracking`]) sets the request and watches the count; the connection
//! ([`crate::connection`], [`crate::wire`]) reads the request on every socket it opens.

use std::sync::{Arc, Mutex, PoisonError};

use redis::Cmd;
use tokio::sync::watch;

/// Server-assisted invalidation on the connections that share it: what to ask of each
/// socket, and a count of the sockets opened, so that the receiver of the invalidations
/// knows when a new socket began to track (writes before that were not reported).
pub(crate) struct Tracking {
    spec: Mutex<Option<TrackingSpec>>,
    opened: watch::Sender<u64>,
}

/// `CLIENT TRACKING ON REDIRECT <redirect> BCAST PREFIX <prefixes…> NOLOOP`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TrackingSpec {
    /// The client id of the connection the server sends the invalidations to.
    pub(crate) redirect: i64,
    pub(crate) prefixes: Vec<String>,
}

impl TrackingSpec {
    pub(crate) fn command(&self) -> Cmd {
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("TRACKING")
            .arg("ON")
            .arg("REDIRECT")
            .arg(self.redirect)
            .arg("BCAST");
        for prefix in &self.prefixes {
            cmd.arg("PREFIX").arg(prefix);
        }
        cmd.arg("NOLOOP");
        cmd
    }
}

impl Tracking {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Tracking {
            spec: Mutex::new(None),
            opened: watch::Sender::new(0),
        })
    }

    /// Told of every socket opened from now on.
    pub(crate) fn opened(&self) -> watch::Receiver<u64> {
        self.opened.subscribe()
    }

    /// A socket opened (and turned tracking on, if it could).
    pub(crate) fn opened_one(&self) {
        self.opened.send_modify(|n| *n += 1);
    }

    /// What sockets ask for from now on.
    pub(crate) fn set(&self, spec: TrackingSpec) {
        *self.spec.lock().unwrap_or_else(PoisonError::into_inner) = Some(spec);
    }

    /// What a socket opening now asks for.
    pub(crate) fn spec(&self) -> Option<TrackingSpec> {
        self.spec
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
