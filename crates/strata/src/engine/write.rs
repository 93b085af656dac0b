//! The shared half of a write: its log entry (appended by the store beside the data, or
//! published apart) and, with acknowledged writes, the wait for the other instances.

use super::Engine;
use crate::error::Result;
use crate::invalidation::{Invalidation, LogAppend, Position, Target};
use crate::resilience::Call;
use crate::stats::Counter;
use crate::store::ReplicaWait;

impl Engine {
    /// `target`'s log entry for the L2 store to append with its change, when the log lives
    /// beside the data; `None` otherwise (or if the log cannot say now: it is published apart).
    pub(crate) async fn log_append(&self, target: &Target) -> Option<LogAppend> {
        let invalidation = Invalidation {
            origin: self.instance_id,
            target: target.clone(),
        };
        self.log
            .beside(&self.namespace, &invalidation)
            .await
            .ok()
            .flatten()
    }

    /// Tells the other instances about `target`: counted if the store logged it already (at
    /// `logged`), published otherwise; with acknowledged writes, returns once they all
    /// applied it (or the wait is over).
    pub(crate) async fn announce(&self, target: Target, logged: Option<Position>) -> Result<()> {
        let position = match logged {
            Some(position) => {
                self.counters.incr(Counter::invalidations_sent);
                Some(position)
            }
            None => self.publish(target).await?,
        };
        if let (Some(ack), Some(position)) = (&self.acknowledged, position) {
            let acknowledged = self
                .log
                .await_acknowledged(&self.namespace, self.instance_id, position, ack.within)
                .await;
            if !matches!(acknowledged, Ok(true)) {
                self.counters.incr(Counter::writes_unacknowledged);
            }
        }
        Ok(())
    }

    /// [`announce`](Self::announce), with the L2 write's `replica` wait (a cluster's) run
    /// beside it: the log's append needs the write done, not replicated. Both outcomes, the
    /// wait's counted as L2's.
    pub(crate) async fn announce_beside(
        &self,
        replica: Option<ReplicaWait>,
        target: Target,
        logged: Option<Position>,
    ) -> (Result<()>, Result<()>) {
        let replicated = async {
            match replica {
                Some(wait) => self.note_l2(wait.await),
                None => Ok(()),
            }
        };
        tokio::join!(replicated, self.announce(target, logged))
    }

    pub(crate) async fn publish(&self, target: Target) -> Result<Option<Position>> {
        let invalidation = Invalidation {
            origin: self.instance_id,
            target,
        };
        let published = self
            .log_guard
            .call(Call::Write, || {
                self.log.publish(&self.namespace, &invalidation)
            })
            .await;
        match published {
            Ok(position) => {
                self.counters.incr(Counter::invalidations_sent);
                Ok(position)
            }
            Err(e) => {
                self.counters.incr(Counter::log_errors);
                Err(e)
            }
        }
    }
}
