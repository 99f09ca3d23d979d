//! Result waiters: clients waiting for a run to close. A waiter registers for the run's close
//! before it looks at the run, so that a close committed on this node in between is not missed:
//! the commit hands it over with the closing event, and no read is needed. A close on another
//! node is found by reading the run again each recheck interval, once per run for all its
//! waiters on this node: the waiter whose turn it is reads, and hands a close it finds to the
//! others. This module owns the registrations and the wait; what the outcome says is built by
//! `reads`.

use super::Engine;
use crate::error::EngineError;
use crate::history::Run;
use crate::ids::{Namespace, RunId};
use martix_proto::v1 as pb;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A run that closed on this node, with its closing event.
pub(super) type Closed = Arc<(Run, Option<pb::HistoryEvent>)>;

/// The waiters of one run on this node, and when one of them last read the run.
#[derive(Default)]
pub(super) struct RunWaiters {
    senders: Vec<oneshot::Sender<Closed>>,
    read_at: Option<Instant>,
}

/// A result waiter's registration for one run's close (see `Engine::watch_close`); removed
/// when dropped.
struct CloseWatch<'a> {
    engine: &'a Engine,
    run_id: RunId,
    rx: oneshot::Receiver<Closed>,
}

impl Drop for CloseWatch<'_> {
    fn drop(&mut self) {
        self.rx.close();
        let mut waiters = self
            .engine
            .close_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(w) = waiters.get_mut(&self.run_id) {
            w.senders.retain(|tx| !tx.is_closed());
            if w.senders.is_empty() {
                waiters.remove(&self.run_id);
            }
        }
    }
}

impl Engine {
    /// Result waiters registered on this node now.
    pub fn result_waiters(&self) -> usize {
        self.close_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|w| w.senders.len())
            .sum()
    }

    /// Registers a result waiter for `run_id`'s close on this node. Register before looking
    /// at the run, so that a close in between is not missed.
    fn watch_close(&self, run_id: RunId) -> CloseWatch<'_> {
        let (tx, rx) = oneshot::channel();
        self.close_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(run_id)
            .or_default()
            .senders
            .push(tx);
        CloseWatch {
            engine: self,
            run_id,
            rx,
        }
    }

    /// Hands a close committed on this node to its run's result waiters, if any.
    pub(super) fn announce_close(&self, run: &Run, last: Option<&pb::HistoryEvent>) {
        let waiters = self
            .close_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run.run_id);
        if let Some(waiters) = waiters {
            let closed: Closed = Arc::new((run.clone(), last.cloned()));
            for tx in waiters.senders {
                let _ = tx.send(closed.clone());
            }
        }
    }

    /// Whether it is this waiter's turn to read `run_id` again: no waiter of the run on this
    /// node read it within the recheck interval. Taking the turn marks the read.
    fn take_read_turn(&self, run_id: RunId) -> bool {
        let mut waiters = self.close_waiters.lock().unwrap_or_else(|p| p.into_inner());
        let Some(w) = waiters.get_mut(&run_id) else {
            return true;
        };
        let now = Instant::now();
        match w.read_at {
            Some(at) if now.duration_since(at) < self.config.recheck_interval => false,
            _ => {
                w.read_at = Some(now);
                true
            }
        }
    }

    /// Waits up to `deadline` for the run an execution names to close. Answers the run as last
    /// seen, still open if the deadline came first (then as read from the store, not from this
    /// node's copy), and its closing event when the close was committed on this node.
    pub(super) async fn wait_closed(
        &self,
        ns: &Namespace,
        execution: Option<&pb::WorkflowExecution>,
        deadline: Instant,
    ) -> Result<(Run, Option<pb::HistoryEvent>), EngineError> {
        let named =
            execution.and_then(|e| Some((e, RunId::parse("execution.run_id", &e.run_id).ok()?)));
        // Watching before looking: a close on this node after the look is handed over.
        let mut watch = named.as_ref().map(|(_, id)| self.watch_close(*id));
        // An open run this node keeps needs no read to start waiting: a close on this node is
        // announced (watched above), one on another node is read at the next recheck.
        let kept = named.and_then(|(e, id)| {
            self.cached(id).filter(|r| {
                r.is_open() && r.namespace == ns.as_str() && r.workflow_id == e.workflow_id
            })
        });
        // Not answered "still open" from the copy alone: another node may have closed the run.
        let mut from_copy = kept.is_some();
        let mut run = match kept {
            Some(run) => run,
            None => self.resolve(ns, execution).await?,
        };
        if run.is_open()
            && Instant::now() < deadline
            && watch.as_ref().is_none_or(|w| w.run_id != run.run_id)
        {
            // Found by workflow id: watch it, then look again (it may have closed between):
            // at the copy this node keeps, if open, else in the store.
            watch = Some(self.watch_close(run.run_id));
            match self.cached(run.run_id).filter(Run::is_open) {
                Some(copy) => {
                    run = copy;
                    from_copy = true;
                }
                None => {
                    run = self.load(run.run_id).await?;
                    from_copy = false;
                }
            }
        }
        let mut closing_event = None;
        while run.is_open() {
            let now = Instant::now();
            if now >= deadline && from_copy {
                from_copy = false;
                run = self.load(run.run_id).await?;
                continue;
            }
            if now >= deadline {
                return Ok((run, None));
            }
            let step = (deadline - now).min(self.config.recheck_interval);
            let w = match &mut watch {
                Some(w) if w.run_id == run.run_id => w,
                _ => watch.insert(self.watch_close(run.run_id)),
            };
            let seen = match tokio::time::timeout(step, &mut w.rx).await {
                Ok(Ok(c)) => {
                    // Handed over and used up: watch again if the loop goes on.
                    watch = None;
                    Some(c)
                }
                Ok(Err(_)) => {
                    watch = None;
                    None
                }
                Err(_) => None,
            };
            // Closed on this node: the commit told its outcome; else read it.
            use pb::history_event::Attributes as A;
            let closes = |e: &Option<pb::HistoryEvent>| {
                matches!(
                    e.as_ref().and_then(|e| e.attributes.as_ref()),
                    Some(
                        A::WorkflowExecutionCompleted(_)
                            | A::WorkflowExecutionFailed(_)
                            | A::WorkflowExecutionCanceled(_)
                            | A::WorkflowExecutionTerminated(_)
                            | A::WorkflowExecutionContinuedAsNew(_)
                            | A::WorkflowExecutionTimedOut(_)
                    )
                )
            };
            match seen {
                // Closed: by a commit on this node (with its closing event), or found closed
                // by another waiter's read (the outcome is read from history).
                Some(c) if !c.0.is_open() => {
                    run = c.0.clone();
                    closing_event = c.1.clone().filter(|_| closes(&c.1));
                }
                Some(_) => {
                    run = self.load(run.run_id).await?;
                    from_copy = false;
                }
                // The interval passed: one waiter of the run reads it for all.
                None if self.take_read_turn(run.run_id) => {
                    run = self.load(run.run_id).await?;
                    from_copy = false;
                    if !run.is_open() {
                        self.announce_close(&run, None);
                    }
                }
                None => {}
            }
        }
        Ok((run, closing_event))
    }
}
