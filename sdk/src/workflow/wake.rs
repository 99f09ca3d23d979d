//! Wake-ups inside a workflow: which waker to wake when a command resolves, and the waker the
//! driver polls the workflow with.
//!
//! The SDK's durable futures (activities, timers, signal streams, cancellation) store the
//! waker they were last polled with here when they return `Pending`. When the driver applies an
//! event that resolves one (an activity's outcome, a timer that fired, a signal, a cancellation
//! request) it takes that waker and wakes it, in the order of the events in history, so the
//! same history wakes the same futures in the same order on every replay.
//!
//! Combinators that re-poll only the children that were woken (`join_all` over more than 30
//! futures, `FuturesUnordered`, `FuturesOrdered`, `select_all`, `buffer_unordered`) depend on
//! this: polled with a waker that does nothing, they never poll a child again and the workflow
//! waits forever. The driver polls the workflow's root future with a [`WakeFlag`], which only
//! records that something asked for another poll, and polls again until nothing did.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Wake, Waker};

/// The waker of the workflow's root future: records that something asked for another poll.
/// The driver polls the root future again, within the same activation, while it is set.
#[derive(Debug, Default)]
pub(crate) struct WakeFlag(AtomicBool);

impl WakeFlag {
    /// Whether a wake-up came since the last call; clears it.
    pub(crate) fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The wakers of the futures waiting on something durable, by what they wait for.
///
/// Activities and timers are keyed by their command id (one future each). Signal streams and
/// cancellation futures are keyed by a token they take when created (several may wait for the
/// same signal): a `BTreeMap`, so they are woken in the order they were created, never in a
/// hash order that would differ between a run and its replay.
#[derive(Default)]
pub(crate) struct Waiters {
    activities: HashMap<String, Waker>,
    timers: HashMap<String, Waker>,
    children: HashMap<String, Waker>,
    signals: BTreeMap<u64, (String, Waker)>,
    cancellation: BTreeMap<u64, Waker>,
    next_token: u64,
}

/// Keeps `waker` in `slot`, cloning it only if it wakes another task than the one kept.
fn keep(slot: Option<&mut Waker>, waker: &Waker) -> Option<Waker> {
    match slot {
        Some(kept) if kept.will_wake(waker) => None,
        Some(kept) => {
            kept.clone_from(waker);
            None
        }
        None => Some(waker.clone()),
    }
}

impl Waiters {
    /// A token for a signal stream or cancellation future. Separate from the command sequence,
    /// so creating one never changes the ids of the commands that follow.
    pub(crate) fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// The activity `id` is pending, polled with `waker`.
    pub(crate) fn wait_activity(&mut self, id: &str, waker: &Waker) {
        if let Some(w) = keep(self.activities.get_mut(id), waker) {
            self.activities.insert(id.to_owned(), w);
        }
    }

    /// The timer `id` is pending, polled with `waker`.
    pub(crate) fn wait_timer(&mut self, id: &str, waker: &Waker) {
        if let Some(w) = keep(self.timers.get_mut(id), waker) {
            self.timers.insert(id.to_owned(), w);
        }
    }

    /// The child workflow `id` is awaited (its start or its result), polled with `waker`.
    pub(crate) fn wait_child(&mut self, id: &str, waker: &Waker) {
        if let Some(w) = keep(self.children.get_mut(id), waker) {
            self.children.insert(id.to_owned(), w);
        }
    }

    /// The future awaiting child `id` resolved or was dropped.
    pub(crate) fn forget_child(&mut self, id: &str) {
        self.children.remove(id);
    }

    /// Child `id` started, could not, or closed: its waker, to wake.
    pub(crate) fn child_resolved(&mut self, id: &str, wake: &mut Vec<Waker>) {
        wake.extend(self.children.remove(id));
    }

    /// The signal stream `token` waits for a signal named `name`.
    pub(crate) fn wait_signal(&mut self, token: u64, name: &str, waker: &Waker) {
        match self.signals.get_mut(&token) {
            Some((_, kept)) => {
                if !kept.will_wake(waker) {
                    kept.clone_from(waker);
                }
            }
            None => {
                self.signals.insert(token, (name.to_owned(), waker.clone()));
            }
        }
    }

    /// The cancellation future `token` waits for a cancellation request.
    pub(crate) fn wait_cancellation(&mut self, token: u64, waker: &Waker) {
        if let Some(w) = keep(self.cancellation.get_mut(&token), waker) {
            self.cancellation.insert(token, w);
        }
    }

    /// The activity future `id` resolved or was dropped.
    pub(crate) fn forget_activity(&mut self, id: &str) {
        self.activities.remove(id);
    }

    /// The timer future `id` resolved or was dropped.
    pub(crate) fn forget_timer(&mut self, id: &str) {
        self.timers.remove(id);
    }

    /// The signal stream `token` took a signal or was dropped.
    pub(crate) fn forget_signal(&mut self, token: u64) {
        self.signals.remove(&token);
    }

    /// The cancellation future `token` resolved or was dropped.
    pub(crate) fn forget_cancellation(&mut self, token: u64) {
        self.cancellation.remove(&token);
    }

    /// The activity `id` resolved: its waker, to wake.
    pub(crate) fn activity_resolved(&mut self, id: &str, wake: &mut Vec<Waker>) {
        wake.extend(self.activities.remove(id));
    }

    /// The timer `id` fired: its waker, to wake.
    pub(crate) fn timer_fired(&mut self, id: &str, wake: &mut Vec<Waker>) {
        wake.extend(self.timers.remove(id));
    }

    /// A signal named `name` arrived: the wakers of the streams waiting for it, in the order
    /// the streams were created. Each is woken once; a stream that finds the signal taken by
    /// another waits again when polled.
    pub(crate) fn signal_arrived(&mut self, name: &str, wake: &mut Vec<Waker>) {
        let tokens: Vec<u64> = self
            .signals
            .iter()
            .filter(|(_, (n, _))| n == name)
            .map(|(t, _)| *t)
            .collect();
        for t in tokens {
            if let Some((_, w)) = self.signals.remove(&t) {
                wake.push(w);
            }
        }
    }

    /// Cancellation was requested: the wakers of every cancellation future, in creation order.
    pub(crate) fn cancellation_requested(&mut self, wake: &mut Vec<Waker>) {
        wake.extend(std::mem::take(&mut self.cancellation).into_values());
    }

    /// Whether some future waits for a signal or for cancellation: something the engine can
    /// deliver later, so a workflow waiting on it is not stuck.
    pub(crate) fn waits_for_signal_or_cancellation(&self) -> bool {
        !self.signals.is_empty() || !self.cancellation.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag_waker() -> (Arc<WakeFlag>, Waker) {
        let flag = Arc::new(WakeFlag::default());
        (flag.clone(), Waker::from(flag))
    }

    #[test]
    fn the_flag_records_a_wake_up_until_taken() {
        let (flag, waker) = flag_waker();
        assert!(!flag.take());
        waker.wake_by_ref();
        assert!(flag.take());
        assert!(!flag.take(), "taking clears it");
        waker.wake();
        assert!(flag.take());
    }

    #[test]
    fn a_resolved_command_hands_out_its_waker_once() {
        let (flag, waker) = flag_waker();
        let mut w = Waiters::default();
        w.wait_activity("1", &waker);
        w.wait_timer("2", &waker);
        let mut wake = Vec::new();
        w.activity_resolved("1", &mut wake);
        w.activity_resolved("1", &mut wake);
        w.timer_fired("3", &mut wake);
        assert_eq!(wake.len(), 1);
        wake.pop().unwrap().wake();
        assert!(flag.take());
        w.forget_timer("2");
        w.timer_fired("2", &mut wake);
        assert!(wake.is_empty(), "a dropped timer is not woken");
    }

    #[test]
    fn signal_waiters_are_woken_by_name_in_creation_order() {
        let mut w = Waiters::default();
        let flags: Vec<_> = (0..3).map(|_| flag_waker()).collect();
        let (a, b, c) = (w.token(), w.token(), w.token());
        // Registered out of order: woken in token order all the same.
        w.wait_signal(c, "go", &flags[2].1);
        w.wait_signal(a, "go", &flags[0].1);
        w.wait_signal(b, "stop", &flags[1].1);
        assert!(w.waits_for_signal_or_cancellation());
        let mut wake = Vec::new();
        w.signal_arrived("go", &mut wake);
        assert_eq!(wake.len(), 2);
        assert!(wake[0].will_wake(&flags[0].1) && wake[1].will_wake(&flags[2].1));
        w.forget_signal(b);
        assert!(!w.waits_for_signal_or_cancellation());
        let t = w.token();
        w.wait_cancellation(t, &flags[0].1);
        assert!(w.waits_for_signal_or_cancellation());
        wake.clear();
        w.cancellation_requested(&mut wake);
        assert_eq!(wake.len(), 1);
        assert!(!w.waits_for_signal_or_cancellation());
    }
}
