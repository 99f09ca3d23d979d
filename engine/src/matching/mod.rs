//! Matching: hands tasks to long-polling workers.
//!
//! A task is always committed to the store before it is offered here; this module only
//! shortens the wait. When a change creates a task while a poller of its queue waits on this
//! node, the decision takes that poller (`Reserved`, history's `Pollers`) and leases the task
//! to it in the change (so the hand-off costs no extra commit); the engine delivers it after
//! the commit, and gives back a poller whose change was not written. Losing
//! everything in here on a crash loses no work: leases run out and the store hands the tasks
//! out again.
//!
//! A poll that is on its way (looking in the store, not yet waiting) counts as well: under
//! load the pollers are mostly there, between one task and the next, so a new task would find
//! none waiting, be written unleased, and cost its poller a claim transaction of its own a
//! moment later. Instead the task is written leased to this node (a *hold*) and kept for that
//! poll, which takes it without touching the store. Holds never outnumber the polls on their
//! way, so a held task waits for a poll that is already coming. That poll may come back with
//! another task it found in the store, or not at all (its worker stopped): a task nobody took
//! within a short time is given back to the store (`Matching::take_stale`), so any poller of
//! any node can claim it. Only workflow tasks are held: an activity's lease is its attempt's
//! timeout, which a wait here must not eat into.
//!
//! Queries (`Engine::query_workflow`) come here too, as tasks of a workflow queue that live
//! only in this node's memory until their deadline: a waiting poller gets one before any task
//! of the store, and a poll that finds one kept takes it first. Nothing about a query is in
//! the store: losing it loses only an answer its caller stops waiting for.
//!
//! Queues are forgotten when idle: an entry with no waiter, nothing kept, no poll on its way
//! and no hold, untouched between two sweeps (`Matching::sweep_idle`, every half minute), goes,
//! so random or misspelled queue names do not grow the map for ever. Epochs come from one
//! counter for all queues, so a queue forgotten and met again never shows an epoch a poller
//! saw before it was forgotten.

use crate::clock::Millis;
use crate::history::{ActivityTask, Lease, LeasedTask, PollerId, Pollers};
use crate::ids::RunId;
use martix_proto::v1 as pb;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Which kind of task a queue holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskKind {
    Workflow,
    Activity,
}

/// One task queue of one kind in one namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueueKey {
    pub namespace: String,
    pub queue: String,
    pub kind: TaskKind,
}

impl QueueKey {
    pub fn new(namespace: &str, queue: &str, kind: TaskKind) -> Self {
        Self {
            namespace: namespace.to_owned(),
            queue: queue.to_owned(),
            kind,
        }
    }
}

/// What a waiting poller receives.
#[derive(Debug)]
pub enum Delivery {
    /// A workflow task, already leased in the store.
    Workflow { run_id: RunId, lease: Lease },
    /// An activity task, already leased in the store.
    Activity(Box<ActivityTask>),
    /// Something may be claimable in the store: look again.
    Recheck,
    /// A query for the poller's worker to answer (never in the store, nothing leased), with
    /// its id (`Engine::query_workflow`).
    Query {
        id: String,
        task: Box<pb::PollWorkflowTaskResponse>,
    },
}

impl From<LeasedTask> for Delivery {
    fn from(task: LeasedTask) -> Self {
        match task {
            LeasedTask::Workflow { run_id, lease } => Delivery::Workflow { run_id, lease },
            LeasedTask::Activity(task) => Delivery::Activity(task),
        }
    }
}

impl Delivery {
    fn lease_until(&self) -> Option<Millis> {
        match self {
            Delivery::Workflow { lease, .. } => Some(lease.until),
            Delivery::Activity(t) => t.lease.as_ref().map(|l| l.until),
            Delivery::Recheck | Delivery::Query { .. } => None,
        }
    }
}

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Delivery>,
}

#[derive(Default)]
struct QueueState {
    waiters: VecDeque<Waiter>,
    /// Leased deliveries kept for the next poller (held ones, and those whose poller went
    /// away before they arrived), with the time each was put here.
    ready: VecDeque<(Millis, Delivery)>,
    /// Polls on their way: looking in the store, not yet waiting here.
    seeking: usize,
    /// Holds reserved for commits not yet done.
    holds: usize,
    /// When a look in the store last found nothing, and the epoch it began at.
    empty: Option<(u64, Millis)>,
    /// Bumped whenever a task became claimable in the store without a reserved poller (from
    /// the node's one counter, `Matching::epochs`).
    epoch: u64,
    /// Queries no poller took yet, each with the time its caller stops waiting and its id.
    queries: VecDeque<(
        tokio::time::Instant,
        String,
        Box<pb::PollWorkflowTaskResponse>,
    )>,
    /// Used since the last sweep.
    touched: bool,
}

impl QueueState {
    /// Nothing here but the epoch: no live waiter, nothing kept, no poll on its way, no hold.
    fn idle(&self) -> bool {
        self.waiters.iter().all(|w| w.tx.is_closed())
            && self.ready.is_empty()
            && self.seeking == 0
            && self.holds == 0
            && self.queries.is_empty()
    }

    /// The oldest query whose caller still waits.
    fn pop_query(&mut self) -> Option<Delivery> {
        let now = tokio::time::Instant::now();
        while let Some((deadline, id, task)) = self.queries.pop_front() {
            if deadline > now {
                return Some(Delivery::Query { id, task });
            }
        }
        None
    }
}

/// A poller taken from a queue for a task about to be committed: one that waits, or (a hold)
/// the next poll of the queue on this node.
#[must_use = "deliver or cancel a reservation"]
pub struct Reservation {
    key: QueueKey,
    waiter: Option<Waiter>,
}

/// The pollers one change takes while it is decided (as `history::Pollers`), until it is
/// written: each is then delivered the task the decision leased to it (`deliver`), and every
/// one not delivered is given back when this drops (the write failed, or the decision that
/// took it was not the one written).
pub struct Reserved {
    matching: Arc<Matching>,
    taken: Vec<Option<Reservation>>,
}

impl Reserved {
    fn take(&mut self, key: QueueKey) -> Option<PollerId> {
        let reservation = self.matching.reserve(&key)?;
        self.taken.push(Some(reservation));
        Some(PollerId(self.taken.len() - 1))
    }

    /// Hands the written task leased to `poller` to it.
    pub fn deliver(&mut self, poller: PollerId, task: LeasedTask, now: Millis) {
        if let Some(reservation) = self.taken.get_mut(poller.0).and_then(Option::take) {
            self.matching.deliver(reservation, task.into(), now);
        }
    }
}

impl Pollers for Reserved {
    fn take_workflow(&mut self, namespace: &str, queue: &str) -> Option<PollerId> {
        self.take(QueueKey::new(namespace, queue, TaskKind::Workflow))
    }

    fn take_activity(&mut self, namespace: &str, queue: &str) -> Option<PollerId> {
        self.take(QueueKey::new(namespace, queue, TaskKind::Activity))
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        for reservation in self.taken.drain(..).flatten() {
            self.matching.cancel(reservation);
        }
    }
}

/// The waiting pollers and undelivered leased tasks of this node.
#[derive(Default)]
pub struct Matching {
    queues: Mutex<HashMap<QueueKey, QueueState>>,
    next_id: AtomicU64,
    /// The last epoch given to any queue.
    epochs: AtomicU64,
}

/// A registered wait: await `rx`, then call `Matching::forget` if it timed out.
pub struct Wait {
    id: u64,
    key: QueueKey,
    rx: oneshot::Receiver<Delivery>,
}

impl Matching {
    fn with<R>(&self, key: &QueueKey, f: impl FnOnce(&mut QueueState) -> R) -> R {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let q = queues.entry(key.clone()).or_insert_with(|| QueueState {
            epoch: self.next_epoch(),
            ..QueueState::default()
        });
        q.touched = true;
        f(q)
    }

    fn next_epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Forgets the queues idle since the last sweep; returns how many went.
    pub fn sweep_idle(&self) -> usize {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let before = queues.len();
        let now = tokio::time::Instant::now();
        queues.retain(|_, q| {
            q.queries.retain(|(deadline, _, _)| *deadline > now);
            let keep = !q.idle() || q.touched;
            q.touched = false;
            keep
        });
        before - queues.len()
    }

    /// How many queues this node keeps an entry for.
    pub fn queues(&self) -> usize {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Pollers waiting on this node: (workflow, activity).
    pub fn waiting_by_kind(&self) -> (usize, usize) {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.iter().fold((0, 0), |(w, a), (k, q)| match k.kind {
            TaskKind::Workflow => (w + q.waiters.len(), a),
            TaskKind::Activity => (w, a + q.waiters.len()),
        })
    }

    /// The queue's epoch: read it before looking in the store, pass it to `wait`.
    pub fn epoch(&self, key: &QueueKey) -> u64 {
        self.with(key, |q| q.epoch)
    }

    /// How many pollers wait on the queue now.
    pub fn waiting(&self, key: &QueueKey) -> usize {
        self.with(key, |q| q.waiters.len())
    }

    /// The pollers a change about to be decided may take (see `Reserved`).
    pub fn reserving(self: &Arc<Self>) -> Reserved {
        Reserved {
            matching: Arc::clone(self),
            taken: Vec::new(),
        }
    }

    /// Takes a poller waiting on `key`, if any; else holds the task for a poll on its way,
    /// if one is not yet promised a task.
    pub fn reserve(&self, key: &QueueKey) -> Option<Reservation> {
        self.with(key, |q| {
            while let Some(waiter) = q.waiters.pop_front() {
                if !waiter.tx.is_closed() {
                    return Some(Reservation {
                        key: key.clone(),
                        waiter: Some(waiter),
                    });
                }
            }
            // A poll on its way takes a kept query first: it is not free for a hold.
            let promised = q.ready.len() + q.holds + q.queries.len();
            (key.kind == TaskKind::Workflow && q.seeking > promised).then(|| {
                q.holds += 1;
                Reservation {
                    key: key.clone(),
                    waiter: None,
                }
            })
        })
    }

    /// Hands a committed, leased task to the reserved poller; a held one, or one whose poller
    /// went away, to a poller waiting now or else the next poller of the queue on this node.
    pub fn deliver(&self, reservation: Reservation, delivery: Delivery, now: Millis) {
        let mut delivery = delivery;
        let held = match reservation.waiter {
            Some(waiter) => match waiter.tx.send(delivery) {
                Ok(()) => return,
                Err(d) => {
                    delivery = d;
                    false
                }
            },
            None => true,
        };
        self.with(&reservation.key, |q| {
            if held {
                q.holds -= 1;
            }
            while let Some(waiter) = q.waiters.pop_front() {
                match waiter.tx.send(delivery) {
                    Ok(()) => return,
                    Err(d) => delivery = d,
                }
            }
            q.ready.push_back((now, delivery));
        });
    }

    /// The commit failed: the poller looks in the store again.
    pub fn cancel(&self, reservation: Reservation) {
        match reservation.waiter {
            Some(waiter) => {
                let _ = waiter.tx.send(Delivery::Recheck);
            }
            None => self.with(&reservation.key, |q| q.holds -= 1),
        }
    }

    /// Whether the store surely holds nothing claimable for `key` now: a look that began at
    /// the current epoch found nothing less than `within` ago. Every commit that leaves a task
    /// claimable bumps the epoch (here, or by a notice from another node); what becomes
    /// claimable by time alone (a lease that ran out) waits at most `within`, as it would for
    /// a poller already waiting, which looks again that often.
    pub fn known_empty(&self, key: &QueueKey, now: Millis, within: Millis) -> bool {
        self.with(key, |q| {
            q.empty.is_some_and(|(epoch, at)| {
                // A clock set back proves nothing either.
                epoch == q.epoch && now >= at && now - at < within
            })
        })
    }

    /// A look in the store that began at `epoch` found nothing.
    pub fn found_empty(&self, key: &QueueKey, epoch: u64, now: Millis) {
        self.with(key, |q| {
            if q.epoch == epoch {
                q.empty = Some((epoch, now));
            }
        });
    }

    /// A task kept for the queue's next poller on this node whose lease still runs at `now`.
    pub fn take_ready(&self, key: &QueueKey, now: Millis) -> Option<Delivery> {
        self.with(key, |q| Self::pop_ready(q, now))
    }

    fn pop_ready(q: &mut QueueState, now: Millis) -> Option<Delivery> {
        if let Some(query) = q.pop_query() {
            return Some(query);
        }
        while let Some((_, d)) = q.ready.pop_front() {
            if d.lease_until().is_some_and(|until| until > now) {
                return Some(d);
            }
        }
        None
    }

    /// Takes out the workflow tasks kept here since `before` or earlier, for the engine to
    /// give back to the store: no poll of this node came for them.
    pub fn take_stale(&self, before: Millis) -> Vec<(QueueKey, Delivery)> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (key, q) in queues.iter_mut() {
            if key.kind != TaskKind::Workflow {
                continue;
            }
            while q.ready.front().is_some_and(|(since, _)| *since <= before) {
                if let Some((_, d)) = q.ready.pop_front() {
                    out.push((key.clone(), d));
                }
            }
        }
        out
    }

    /// Hands a query to a poller waiting on `key` now, or keeps it for the queue's next poll
    /// on this node until `deadline`.
    pub fn offer_query(
        &self,
        key: &QueueKey,
        deadline: tokio::time::Instant,
        id: String,
        task: Box<pb::PollWorkflowTaskResponse>,
    ) {
        self.with(key, |q| {
            let mut delivery = Delivery::Query { id, task };
            while let Some(waiter) = q.waiters.pop_front() {
                match waiter.tx.send(delivery) {
                    Ok(()) => return,
                    Err(d) => delivery = d,
                }
            }
            if let Delivery::Query { id, task } = delivery {
                q.queries.push_back((deadline, id, task));
            }
        });
    }

    /// Takes back a query its caller no longer waits for, if no poller took it yet.
    pub fn withdraw_query(&self, key: &QueueKey, id: &str) {
        self.with(key, |q| q.queries.retain(|(_, kept, _)| kept != id));
    }

    /// Counts a poll on its way to the store until the guard drops: tasks committed meanwhile
    /// are held for it instead of being left for it to claim.
    pub fn seek<'a>(&'a self, key: &'a QueueKey) -> Seeking<'a> {
        self.with(key, |q| q.seeking += 1);
        Seeking {
            matching: self,
            key,
        }
    }

    /// A task of `key` became claimable in the store: wake one poller to claim it.
    pub fn notify(&self, key: &QueueKey) {
        let epoch = self.next_epoch();
        self.with(key, |q| Self::wake_one(q, epoch));
    }

    /// Tasks of any queue may have become claimable unannounced (notices from other nodes
    /// were lost): every queue's next poll looks in the store.
    pub fn notify_all(&self) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        for q in queues.values_mut() {
            Self::wake_one(q, self.next_epoch());
        }
    }

    fn wake_one(q: &mut QueueState, epoch: u64) {
        q.epoch = epoch;
        while let Some(waiter) = q.waiters.pop_front() {
            if waiter.tx.send(Delivery::Recheck).is_ok() {
                break;
            }
        }
    }

    /// Registers a poller. Returns a delivery at once if one is ready, or `Recheck` if the
    /// epoch moved since `seen`; otherwise a `Wait` to await.
    pub fn register(&self, key: &QueueKey, seen: u64, now: Millis) -> Result<Wait, Delivery> {
        self.with(key, |q| {
            if let Some(d) = Self::pop_ready(q, now) {
                return Err(d);
            }
            if q.epoch != seen {
                return Err(Delivery::Recheck);
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            q.waiters.push_back(Waiter { id, tx });
            Ok(Wait {
                id,
                key: key.clone(),
                rx,
            })
        })
    }

    /// Waits for a delivery until `deadline` passes.
    ///
    /// # Cancel safety
    /// If the future is dropped, a task already reserved for it stays leased to this node and
    /// is handed to the next poller of the queue.
    pub async fn wait(&self, mut wait: Wait, deadline: tokio::time::Instant) -> Option<Delivery> {
        let guard = Forget {
            matching: self,
            id: wait.id,
            key: &wait.key,
        };
        let got = tokio::time::timeout_at(deadline, &mut wait.rx).await;
        drop(guard);
        match got {
            Ok(Ok(d)) => Some(d),
            Ok(Err(_)) => None,
            Err(_) => {
                // Timed out; a reservation may have raced us. It is already on its way.
                wait.rx.close();
                wait.rx.try_recv().ok()
            }
        }
    }

    fn forget(&self, key: &QueueKey, id: u64) {
        self.with(key, |q| q.waiters.retain(|w| w.id != id));
    }
}

/// A poll on its way to the store (see `Matching::seek`).
pub struct Seeking<'a> {
    matching: &'a Matching,
    key: &'a QueueKey,
}

impl Drop for Seeking<'_> {
    fn drop(&mut self) {
        self.matching.with(self.key, |q| q.seeking -= 1);
    }
}

struct Forget<'a> {
    matching: &'a Matching,
    id: u64,
    key: &'a QueueKey,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.matching.forget(self.key, self.id);
    }
}

#[cfg(test)]
mod tests;
