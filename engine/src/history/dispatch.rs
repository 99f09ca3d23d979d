//! Dispatch: who holds the tasks a change creates, decided with the change. Besides staying in
//! the store for a poll to claim, a task due now may go, leased in the same write, to the
//! worker whose report is decided (eager dispatch: the activities a workflow task's completion
//! schedules on that worker's queue, up to its free slots; the workflow task an activity's
//! result schedules on its sticky queue) or to a poller waiting on the deciding node. The
//! engine says who is there (`Dispatch`); the decision leases the tasks in the change and says
//! who gets which (`Decided`); the engine writes the change, answers the reporting worker and
//! delivers to the pollers as it says, and changes nothing in it.
//!
//! The reporting worker is served first: it is there now, and it took its slots for these
//! tasks. Then the waiting pollers, in the order the tasks are in the change. A run's workflow
//! task goes too when this change did not create it (it was scheduled and nobody claimed it
//! yet), since any change of the run is a chance to hand it over without a commit of its own.

use super::{ActivityTask, Lease, RunCommit, TaskOp};
use crate::clock::Millis;
use crate::ids::RunId;

/// Pollers waiting for tasks on the node that decides (the engine's `matching`).
pub trait Pollers {
    /// Takes a poller of the workflow task queue `queue` of `namespace`, if one is there: the
    /// task it is taken for is promised to it.
    fn take_workflow(&mut self, namespace: &str, queue: &str) -> Option<PollerId>;
    /// Takes a poller of the activity task queue `queue` of `namespace`, as `take_workflow`.
    fn take_activity(&mut self, namespace: &str, queue: &str) -> Option<PollerId>;
}

/// A poller taken through `Pollers`, as its taker names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollerId(pub usize);

/// The sticky queue of the worker completing a workflow task: it keeps the run cached, so the
/// run's next workflow task goes there, with only the events that worker has not seen.
#[derive(Clone, Copy, Debug)]
pub struct Sticky<'a> {
    pub queue: &'a str,
    /// The worker is answered with the events this change appends and applies them itself:
    /// its next workflow task starts after them.
    pub returns_history: bool,
}

/// Free activity slots of the reporting worker: up to `slots` of the activities a change
/// schedules on `queue` (its own) are leased to it and come back in its answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct EagerSlots<'a> {
    pub queue: &'a str,
    pub slots: usize,
}

/// What a decision needs to know, besides the run and the request, to say who holds the tasks
/// of its change.
pub struct Dispatch<'a> {
    /// The completing worker's sticky queue (read by a workflow task's completion only; none:
    /// the run's next workflow task goes to its task queue, with full history).
    pub sticky: Option<Sticky<'a>>,
    /// The reporting worker's free activity slots.
    pub eager_activities: EagerSlots<'a>,
    /// The reporting worker takes the workflow task the change schedules on this queue (its
    /// sticky queue): an eager workflow task, or the one whose decision it made ahead.
    pub eager_workflow_queue: Option<&'a str>,
    /// The pollers waiting on this node (none: nobody waits).
    pub pollers: Option<&'a mut dyn Pollers>,
    /// When the leases handed out begin, and what is due: the engine's clock now (a decision
    /// made ahead is recorded at its own, earlier time).
    pub lease_at: Millis,
}

impl<'a> Dispatch<'a> {
    /// Nobody to hand tasks to: they all stay in the store.
    pub fn nobody(lease_at: Millis) -> Self {
        Self {
            sticky: None,
            eager_activities: EagerSlots::default(),
            eager_workflow_queue: None,
            pollers: None,
            lease_at,
        }
    }

    /// The pollers waiting on this node, and no reporting worker.
    pub fn pollers(pollers: &'a mut dyn Pollers, lease_at: Millis) -> Self {
        Self {
            pollers: Some(pollers),
            ..Self::nobody(lease_at)
        }
    }
}

/// A change as decided: what to write, and who gets which of its tasks once it is written.
#[derive(Debug)]
pub struct Decided {
    pub commit: RunCommit,
    /// Tasks leased to the reporting worker, for its answer.
    pub to_reporter: ToReporter,
    /// Tasks leased to waiting pollers, to deliver once the change is written.
    pub to_pollers: Vec<ToPoller>,
}

impl From<RunCommit> for Decided {
    /// A change that hands no task to anyone (it closes the run, or leaves its tasks as
    /// they are).
    fn from(commit: RunCommit) -> Self {
        Self {
            commit,
            to_reporter: ToReporter::default(),
            to_pollers: Vec::new(),
        }
    }
}

/// Tasks of a change leased to the worker whose report it records.
#[derive(Debug, Default)]
pub struct ToReporter {
    /// Activity tasks, in the order scheduled.
    pub activities: Vec<ActivityTask>,
    /// The lease of the run's workflow task.
    pub workflow_task: Option<Lease>,
}

impl ToReporter {
    /// Whether nothing was leased to the reporting worker.
    pub fn is_empty(&self) -> bool {
        self.activities.is_empty() && self.workflow_task.is_none()
    }
}

/// A task of a change leased to a waiting poller.
#[derive(Debug)]
pub struct ToPoller {
    pub poller: PollerId,
    pub task: LeasedTask,
}

/// A task leased in a change, as its holder is given it.
#[derive(Debug)]
pub enum LeasedTask {
    /// The workflow task of run `run_id`, leased as `lease`.
    Workflow {
        run_id: RunId,
        lease: Lease,
    },
    Activity(Box<ActivityTask>),
}

/// The change `commit` with its tasks (and those of the run it starts) leased to whom `d` says
/// is there: the decision's last step.
pub(crate) fn hand_out(mut commit: RunCommit, d: Dispatch<'_>) -> Decided {
    let Dispatch {
        eager_activities,
        eager_workflow_queue,
        pollers,
        lease_at,
        ..
    } = d;
    let mut to_reporter = ToReporter::default();
    if let Some(queue) = eager_workflow_queue {
        let timeout = commit.run.state.workflow_task_timeout_ms;
        if let Some(wft) = commit
            .run
            .wft
            .as_mut()
            .filter(|w| w.queue == queue && w.lease.is_none() && w.visible_at <= lease_at)
        {
            let lease = Lease::new(lease_at, timeout);
            to_reporter.workflow_task = Some(lease.clone());
            wft.lease = Some(lease);
        }
    }
    for op in &mut commit.tasks {
        if to_reporter.activities.len() == eager_activities.slots {
            break;
        }
        if let TaskOp::Insert(task) = op
            && task.task_queue == eager_activities.queue
            && due(task, lease_at)
        {
            lease_activity(task, lease_at);
            to_reporter.activities.push(task.clone());
        }
    }
    let mut to_pollers = Vec::new();
    if let Some(pollers) = pollers {
        to_waiting(&mut commit, pollers, lease_at, &mut to_pollers);
        if let Some(next) = commit.new_run.as_deref_mut() {
            to_waiting(next, pollers, lease_at, &mut to_pollers);
        }
    }
    Decided {
        commit,
        to_reporter,
        to_pollers,
    }
}

/// An activity task nobody holds whose attempt may start at `at`.
fn due(task: &ActivityTask, at: Millis) -> bool {
    task.lease.is_none() && task.visible_at <= at
}

fn lease_activity(task: &mut ActivityTask, at: Millis) {
    task.lease = Some(Lease::new(at, task.first_lease_ms()));
    task.started_at = Some(at);
}

/// Leases the tasks of `c` that are due and held by nobody to the pollers waiting for them.
fn to_waiting(c: &mut RunCommit, pollers: &mut dyn Pollers, at: Millis, out: &mut Vec<ToPoller>) {
    let timeout = c.run.state.workflow_task_timeout_ms;
    if let Some(wft) = c.run.wft.as_mut()
        && wft.lease.is_none()
        && wft.visible_at <= at
        && let Some(poller) = pollers.take_workflow(&c.run.namespace, &wft.queue)
    {
        let lease = Lease::new(at, timeout);
        wft.lease = Some(lease.clone());
        out.push(ToPoller {
            poller,
            task: LeasedTask::Workflow {
                run_id: c.run.run_id,
                lease,
            },
        });
    }
    for op in &mut c.tasks {
        if let TaskOp::Insert(task) = op
            && due(task, at)
            && let Some(poller) = pollers.take_activity(&task.namespace, &task.task_queue)
        {
            lease_activity(task, at);
            out.push(ToPoller {
                poller,
                task: LeasedTask::Activity(Box::new(task.clone())),
            });
        }
    }
}
