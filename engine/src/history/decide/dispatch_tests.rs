//! Canned histories decided with someone to hand tasks to (`Dispatch`): the completing
//! worker's sticky queue, its free activity slots, the reporting worker taking its workflow
//! task, pollers waiting. The change each decision returns is final: what it leases is what
//! it says it hands out, and to whom.

use super::tests::nobody;
use super::*;
use pb::command::Attributes as C;

const T0: Millis = 1_700_000_000_000;

/// Pollers waiting, by queue, for workflow and for activity tasks.
#[derive(Default)]
struct Waiting {
    workflow: HashMap<String, usize>,
    activity: HashMap<String, usize>,
    taken: usize,
}

impl Waiting {
    fn workflow(queue: &str, n: usize) -> Self {
        let mut w = Self::default();
        w.workflow.insert(queue.into(), n);
        w
    }

    fn activity(queue: &str, n: usize) -> Self {
        let mut w = Self::default();
        w.activity.insert(queue.into(), n);
        w
    }

    fn take(
        waiting: &mut HashMap<String, usize>,
        taken: &mut usize,
        queue: &str,
    ) -> Option<PollerId> {
        let n = waiting.get_mut(queue).filter(|n| **n > 0)?;
        *n -= 1;
        *taken += 1;
        Some(PollerId(*taken - 1))
    }
}

impl Pollers for Waiting {
    fn take_workflow(&mut self, namespace: &str, queue: &str) -> Option<PollerId> {
        assert_eq!(namespace, "default");
        Self::take(&mut self.workflow, &mut self.taken, queue)
    }

    fn take_activity(&mut self, namespace: &str, queue: &str) -> Option<PollerId> {
        assert_eq!(namespace, "default");
        Self::take(&mut self.activity, &mut self.taken, queue)
    }
}

fn params() -> StartParams {
    StartParams::new(
        Namespace::parse("default").unwrap(),
        WorkflowId::parse("w-1").unwrap(),
        WorkflowType::parse("thing").unwrap(),
        TaskQueue::parse("q").unwrap(),
    )
}

/// A started run (as stored) whose first workflow task is leased; the token of that lease.
fn leased_run() -> (Run, TaskToken) {
    let mut run = new_run(&params(), RunId::new(), T0, nobody(T0)).commit.run;
    run.version = 1;
    let wft = run.wft.as_mut().unwrap();
    let lease = Lease::new(T0, 10_000);
    wft.lease = Some(lease.clone());
    let token = TaskToken::for_workflow_task(&run, run.wft.as_ref().unwrap(), &lease.id);
    (run, token)
}

fn schedule_on(id: &str, queue: &str) -> pb::Command {
    pb::Command {
        attributes: Some(C::ScheduleActivity(pb::ScheduleActivityTaskCommand {
            activity_id: id.into(),
            activity_type: "reserve".into(),
            task_queue: queue.into(),
            ..Default::default()
        })),
    }
}

fn applied(o: WftOutcome) -> Decided {
    match o {
        WftOutcome::Applied(d) => d,
        WftOutcome::Rejected { error, .. } => panic!("rejected: {error}"),
    }
}

/// The inserted task rows of a change, by activity id: (leased, started at).
fn rows(c: &RunCommit) -> Vec<(&str, bool, Option<Millis>)> {
    c.tasks
        .iter()
        .filter_map(|op| match op {
            TaskOp::Insert(t) => Some((
                t.activity.activity_id.as_str(),
                t.lease.is_some(),
                t.started_at,
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_completion_with_a_sticky_queue_sends_the_next_task_there_with_what_the_worker_lacks() {
    let (run, token) = leased_run();
    let sticky = |returns_history| Dispatch {
        sticky: Some(Sticky {
            queue: "sticky-1",
            returns_history,
        }),
        ..nobody(T0 + 1)
    };
    let c = applied(complete_workflow_task(&run, &token, &[], "w", T0 + 1, sticky(false)).unwrap())
        .commit;
    assert_eq!(c.run.state.sticky_queue, "sticky-1");
    assert_eq!(
        c.run.state.sticky_from,
        token.history_len + 1,
        "the worker has seen what its task held"
    );
    let c = applied(complete_workflow_task(&run, &token, &[], "w", T0 + 1, sticky(true)).unwrap())
        .commit;
    assert_eq!(
        c.run.state.sticky_from, c.run.next_event_id,
        "the worker is answered with this change's events"
    );
    // The next workflow task goes to the sticky queue.
    let mut stored = c.run;
    stored.version += 1;
    let next = signal(&stored, "go", None, "ops", T0 + 2, nobody(T0 + 2)).unwrap();
    assert_eq!(next.commit.run.wft.unwrap().queue, "sticky-1");

    let c =
        applied(complete_workflow_task(&run, &token, &[], "w", T0 + 1, nobody(T0 + 1)).unwrap())
            .commit;
    assert!(c.run.state.sticky_queue.is_empty() && c.run.state.sticky_from == 0);
}

#[test]
fn eager_slots_lease_the_activities_on_the_workers_queue_up_to_its_slots() {
    let (run, token) = leased_run();
    let commands = [
        schedule_on("a", ""),
        schedule_on("b", "elsewhere"),
        schedule_on("c", "q"),
        schedule_on("d", "q"),
    ];
    let d = Dispatch {
        eager_activities: EagerSlots {
            queue: "q",
            slots: 2,
        },
        ..nobody(T0 + 5)
    };
    let decided = applied(complete_workflow_task(&run, &token, &commands, "w", T0, d).unwrap());
    let eager: Vec<&str> = decided
        .to_reporter
        .activities
        .iter()
        .map(|t| t.activity.activity_id.as_str())
        .collect();
    assert_eq!(
        eager,
        ["a", "c"],
        "in the order scheduled, on its queue only"
    );
    assert_eq!(
        rows(&decided.commit),
        [
            ("a", true, Some(T0 + 5)),
            ("b", false, None),
            ("c", true, Some(T0 + 5)),
            ("d", false, None),
        ],
        "what is handed over is leased in the change, from the lease time"
    );
    for t in &decided.to_reporter.activities {
        let row = decided
            .commit
            .tasks
            .iter()
            .find_map(|op| match op {
                TaskOp::Insert(r) if r.scheduled_event_id == t.scheduled_event_id => Some(r),
                _ => None,
            })
            .unwrap();
        assert_eq!(row, t, "the worker gets the row as written");
    }
    assert!(decided.to_pollers.is_empty());
}

#[test]
fn waiting_pollers_get_what_the_reporting_worker_does_not_take() {
    let (run, token) = leased_run();
    let commands = [
        schedule_on("a", "q"),
        schedule_on("b", "q"),
        schedule_on("c", "q"),
    ];
    let mut waiting = Waiting::activity("q", 1);
    let d = Dispatch {
        eager_activities: EagerSlots {
            queue: "q",
            slots: 1,
        },
        ..Dispatch::pollers(&mut waiting, T0)
    };
    let decided = applied(complete_workflow_task(&run, &token, &commands, "w", T0, d).unwrap());
    assert_eq!(decided.to_reporter.activities.len(), 1, "the worker first");
    assert_eq!(decided.to_pollers.len(), 1);
    let ToPoller { poller, task } = &decided.to_pollers[0];
    assert_eq!(*poller, PollerId(0));
    let LeasedTask::Activity(task) = task else {
        panic!("an activity task");
    };
    assert_eq!(task.activity.activity_id, "b");
    assert_eq!(
        rows(&decided.commit),
        [
            ("a", true, Some(T0)),
            ("b", true, Some(T0)),
            ("c", false, None)
        ],
        "the last one stays in the store for a poll to claim"
    );
    assert_eq!(waiting.activity["q"], 0);
}

#[test]
fn a_workflow_task_nobody_claimed_goes_to_a_waiting_poller_with_any_change() {
    let mut waiting = Waiting::workflow("q", 1);
    let decided = new_run(
        &params(),
        RunId::new(),
        T0,
        Dispatch::pollers(&mut waiting, T0),
    );
    let lease = decided.commit.run.wft.as_ref().unwrap().lease.clone();
    assert!(lease.is_some(), "leased in the change that creates it");
    match &decided.to_pollers[..] {
        [
            ToPoller {
                task:
                    LeasedTask::Workflow {
                        run_id,
                        lease: given,
                    },
                ..
            },
        ] => {
            assert_eq!(*run_id, decided.commit.run.run_id);
            assert_eq!(Some(given), lease.as_ref());
        }
        other => panic!("one workflow task for the poller, not {other:?}"),
    }

    // Scheduled, unclaimed: a signal's change hands it over (and schedules no other).
    let mut run = new_run(&params(), RunId::new(), T0, nobody(T0)).commit.run;
    run.version = 1;
    let mut waiting = Waiting::workflow("q", 1);
    let decided = signal(
        &run,
        "go",
        None,
        "ops",
        T0 + 1,
        Dispatch::pollers(&mut waiting, T0 + 1),
    )
    .unwrap();
    assert_eq!(decided.to_pollers.len(), 1);
    assert!(decided.commit.run.wft.unwrap().lease.is_some());
}

#[test]
fn a_workflow_task_waiting_for_its_backoff_goes_to_nobody() {
    let (run, token) = leased_run();
    let failure = pb::Failure::default();
    let cause = pb::WorkflowTaskFailedCause::WorkflowWorkerError;
    let mut waiting = Waiting::workflow("q", 2);
    let first = fail_workflow_task(
        &run,
        &token,
        cause,
        failure.clone(),
        "w",
        T0,
        Dispatch::pollers(&mut waiting, T0),
    )
    .unwrap();
    assert_eq!(first.to_pollers.len(), 1, "a first retry is due at once");
    let mut run = first.commit.run;
    run.version += 1;
    let lease = run.wft.as_ref().unwrap().lease.clone().unwrap();
    let token = TaskToken::for_workflow_task(&run, run.wft.as_ref().unwrap(), &lease.id);
    let second = fail_workflow_task(
        &run,
        &token,
        cause,
        failure,
        "w",
        T0 + 10,
        Dispatch::pollers(&mut waiting, T0 + 10),
    )
    .unwrap();
    assert!(
        second.to_pollers.is_empty(),
        "later ones wait for their backoff"
    );
    assert!(second.commit.run.wft.unwrap().lease.is_none());
    assert_eq!(waiting.workflow["q"], 1);
}

#[test]
fn an_activity_result_hands_its_workflow_task_to_the_reporting_worker_on_its_queue() {
    let (run, token) = leased_run();
    let sticky = Dispatch {
        sticky: Some(Sticky {
            queue: "sticky-1",
            returns_history: false,
        }),
        ..nobody(T0)
    };
    let mut run = applied(
        complete_workflow_task(&run, &token, &[schedule_on("a", "")], "w", T0, sticky).unwrap(),
    )
    .commit
    .run;
    run.version += 1;
    let act = &run.state.activities[0];
    let token = TaskToken {
        namespace: run.namespace.to_string(),
        run_id: run.run_id.to_text(),
        kind: TOKEN_KIND_ACTIVITY,
        scheduled_event_id: act.scheduled_event_id,
        attempt: 1,
        lease_id: "l1".into(),
        history_len: 0,
    };
    let mut waiting = Waiting::workflow("sticky-1", 1);
    let reporter = |queue| Dispatch {
        eager_workflow_queue: Some(queue),
        ..nobody(T0 + 3)
    };
    let decided = complete_activity(&run, &token, None, "w", T0 + 2, reporter("sticky-1")).unwrap();
    let lease = decided
        .to_reporter
        .workflow_task
        .expect("the worker takes it");
    assert_eq!(lease.until, T0 + 3 + run.state.workflow_task_timeout_ms);
    assert_eq!(decided.commit.run.wft.unwrap().lease, Some(lease));

    // Another queue's worker does not; a poller waiting on the sticky queue does.
    let d = Dispatch {
        pollers: Some(&mut waiting),
        ..reporter("other")
    };
    let decided = complete_activity(&run, &token, None, "w", T0 + 2, d).unwrap();
    assert!(decided.to_reporter.is_empty());
    assert_eq!(decided.to_pollers.len(), 1);
}

#[test]
fn a_refused_completion_hands_its_redelivery_to_a_waiting_poller() {
    let (run, token) = leased_run();
    let run = {
        let mut r = signal(&run, "late", None, "ops", T0 + 1, nobody(T0 + 1))
            .unwrap()
            .commit
            .run;
        r.version += 1;
        r
    };
    let close = pb::Command {
        attributes: Some(C::CompleteWorkflow(Default::default())),
    };
    let mut waiting = Waiting::workflow("q", 1);
    let d = Dispatch::pollers(&mut waiting, T0 + 2);
    match complete_workflow_task(&run, &token, &[close], "w", T0 + 2, d).unwrap() {
        WftOutcome::Rejected { decided, .. } => {
            assert_eq!(decided.to_pollers.len(), 1);
            assert!(decided.commit.run.wft.unwrap().lease.is_some());
        }
        WftOutcome::Applied(_) => panic!("must not close over an unseen signal"),
    }
}
