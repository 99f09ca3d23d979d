//! Conformance cases of tasks and timers: a task claimed once per lease, leases guarded and
//! reaped, timers due and fired once, a closing run's tasks and timers dropped.

use super::{T0, activity, namespace, start, stored, unique};
use crate::clock::Millis;
use crate::history::{self, Dispatch, Lease, Run, TaskOp, TimerOp};
use crate::store::{BreakerReport, BreakerState, Store, StoreError};

/// A workflow task is leased to one claimer until its lease runs out.
pub async fn a_workflow_task_is_claimed_once_per_lease(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let c = start(&ns, "wf", &q, T0);
    store.commit(&c).await.unwrap();
    let run = store
        .claim_workflow_task(&ns, &q, "lease-a", T0)
        .await
        .unwrap()
        .expect("claimable");
    let wft = run.wft.as_ref().unwrap();
    assert_eq!(wft.lease.as_ref().unwrap().id, "lease-a");
    assert_eq!(
        wft.lease.as_ref().unwrap().until,
        T0 + history::DEFAULT_WORKFLOW_TASK_TIMEOUT_MS
    );
    assert_eq!(run.version, 2, "a claim is a change of the run");
    assert!(
        store
            .claim_workflow_task(&ns, &q, "lease-b", T0 + 1)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .claim_workflow_task(&ns, &unique("other"), "x", T0)
            .await
            .unwrap()
            .is_none()
    );
    let later = T0 + history::DEFAULT_WORKFLOW_TASK_TIMEOUT_MS;
    let again = store
        .claim_workflow_task(&ns, &q, "lease-b", later)
        .await
        .unwrap();
    let again = again.unwrap();
    assert_eq!(
        again.wft.as_ref().unwrap().lease.as_ref().unwrap().id,
        "lease-b",
        "an expired lease makes the task available again"
    );
    // Given back by its holder (not by anyone else), it is claimable at once.
    assert!(
        !store
            .release_workflow_task(again.run_id, "lease-a")
            .await
            .unwrap()
    );
    assert!(
        store
            .release_workflow_task(again.run_id, "lease-b")
            .await
            .unwrap()
    );
    let released = store.load_run(again.run_id).await.unwrap().unwrap();
    assert_eq!(
        released.version,
        again.version + 1,
        "a release is a change of the run"
    );
    assert!(released.wft.as_ref().unwrap().lease.is_none());
    let taken = store
        .claim_workflow_task(&ns, &q, "lease-c", later + 1)
        .await
        .unwrap()
        .expect("claimable again");
    assert_eq!(taken.wft.unwrap().lease.unwrap().id, "lease-c");
}

/// Activity tasks: claimed once, invisible before their time, and a change that assumes a
/// lease it does not hold is rolled back whole.
pub async fn activity_tasks_are_leased_and_guarded(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let c = start(&ns, "wf", &q, T0);
    store.commit(&c).await.unwrap();
    let run = stored(&c);
    let mut change = history::signal(&run, "s", None, "t", T0, Dispatch::nobody(T0))
        .unwrap()
        .commit;
    change
        .tasks
        .push(TaskOp::Insert(activity(&run, &q, T0 + 1000)));
    store.commit(&change).await.unwrap();
    assert!(
        store
            .claim_activity_task(&ns, &q, "l1", T0)
            .await
            .unwrap()
            .is_none(),
        "not visible before visible_at"
    );
    let task = store
        .claim_activity_task(&ns, &q, "l1", T0 + 1000)
        .await
        .unwrap()
        .expect("visible now");
    assert_eq!(task.activity, activity(&run, &q, T0 + 1000).activity);
    assert_eq!(
        task.lease,
        Some(Lease {
            id: "l1".into(),
            until: T0 + 6000
        })
    );
    assert!(
        store
            .claim_activity_task(&ns, &q, "l2", T0 + 1001)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .heartbeat_activity(&run.namespace, run.run_id, 3, "l1", Some(b"hb"), T0 + 1000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .heartbeat_activity(&run.namespace, run.run_id, 3, "l2", None, T0 + 1000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .heartbeat_activity("another-namespace", run.run_id, 3, "l1", None, T0 + 1000)
            .await
            .unwrap(),
        "a lease holds only in its run's namespace"
    );

    let run = stored(&change);
    let mut wrong = history::signal(
        &run,
        "s2",
        None,
        "t",
        T0 + 2000,
        Dispatch::nobody(T0 + 2000),
    )
    .unwrap()
    .commit;
    wrong.tasks.push(TaskOp::Delete {
        scheduled_event_id: 3,
        lease_id: Some("forged".into()),
    });
    let err = store.commit(&wrong).await.unwrap_err();
    assert!(matches!(err, StoreError::StaleTask), "{err}");
    let after = store.load_run(run.run_id).await.unwrap().unwrap();
    assert_eq!(
        after.version, run.version,
        "nothing of the change was written"
    );
    assert_eq!(
        store.history(run.run_id, 1, 100).await.unwrap().len() as i64,
        run.next_event_id - 1
    );

    let mut retry = history::signal(
        &run,
        "s3",
        None,
        "t",
        T0 + 2000,
        Dispatch::nobody(T0 + 2000),
    )
    .unwrap()
    .commit;
    retry.tasks.push(TaskOp::Retry {
        scheduled_event_id: 3,
        attempt: 2,
        visible_at: T0 + 3000,
        lease_id: "l1".into(),
    });
    store.commit(&retry).await.expect("the holder may retry");
    let task = store
        .claim_activity_task(&ns, &q, "l3", T0 + 3000)
        .await
        .unwrap()
        .expect("retried attempt");
    assert_eq!(task.attempt, 2);
    assert_eq!(task.heartbeat_details.as_deref(), Some(&b"hb"[..]));
    let leases = store.activity_leases(run.run_id).await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].attempt, 2);

    // An activity scheduled and cancelled by one change leaves no task behind.
    let run = stored(&retry);
    let mut both = history::signal(
        &run,
        "s4",
        None,
        "t",
        T0 + 4000,
        Dispatch::nobody(T0 + 4000),
    )
    .unwrap()
    .commit;
    let mut task = activity(&run, &q, T0 + 4000);
    task.scheduled_event_id = 90;
    both.tasks.push(TaskOp::Insert(task));
    both.tasks.push(TaskOp::Delete {
        scheduled_event_id: 90,
        lease_id: None,
    });
    store.commit(&both).await.unwrap();
    assert!(
        store
            .claim_activity_task(&ns, &q, "l4", T0 + 4000)
            .await
            .unwrap()
            .is_none(),
        "the cancelled activity's task is gone"
    );
}

/// Holding a task (pausing parks, resuming releases) moves when a row nobody holds becomes
/// available; a held row and a missing one are left as they are, and the change still writes.
pub async fn held_tasks_wait_and_held_rows_are_left_alone(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let c = start(&ns, "wf", &q, T0);
    store.commit(&c).await.unwrap();
    let run = stored(&c);
    let mut change = history::signal(&run, "s", None, "t", T0, Dispatch::nobody(T0))
        .unwrap()
        .commit;
    let mut second = activity(&run, &q, T0);
    second.scheduled_event_id = 4;
    change.tasks.push(TaskOp::Insert(activity(&run, &q, T0)));
    change.tasks.push(TaskOp::Insert(second));
    store.commit(&change).await.unwrap();
    let held = store
        .claim_activity_task(&ns, &q, "l1", T0)
        .await
        .unwrap()
        .expect("one is claimed");
    let hold = |run: &Run, at: Millis, visible_at: Millis| {
        let mut c = history::signal(run, "s", None, "t", at, Dispatch::nobody(at))
            .unwrap()
            .commit;
        for scheduled_event_id in [3, 4, 99] {
            c.tasks.push(TaskOp::Hold {
                scheduled_event_id,
                visible_at,
            });
        }
        c
    };
    let run = stored(&change);
    let parked = hold(&run, T0 + 1, history::PARKED_UNTIL);
    store
        .commit(&parked)
        .await
        .expect("a held row and a missing one do not refuse the change");
    assert!(
        store
            .claim_activity_task(&ns, &q, "l2", T0 + 10_000_000)
            .await
            .unwrap()
            .is_none(),
        "the row nobody held is parked"
    );
    let leases = store.activity_leases(run.run_id).await.unwrap();
    let held_row = leases
        .iter()
        .find(|l| l.scheduled_event_id == held.scheduled_event_id)
        .expect("the held row is there");
    assert_eq!(
        held_row.lease_until,
        held.lease.as_ref().map(|l| l.until),
        "the held row keeps its lease"
    );

    let run = stored(&parked);
    store.commit(&hold(&run, T0 + 2, T0 + 5_000)).await.unwrap();
    assert!(
        store
            .claim_activity_task(&ns, &q, "l3", T0 + 4_999)
            .await
            .unwrap()
            .is_none(),
        "released at the time given"
    );
    let task = store
        .claim_activity_task(&ns, &q, "l3", T0 + 5_000)
        .await
        .unwrap()
        .expect("released");
    assert_ne!(task.scheduled_event_id, held.scheduled_event_id);
}

/// A task parked behind a breaker is held by it: not claimed, not reaped, found by the
/// breaker's queries, and claimable again at its attempt once released.
pub async fn tasks_parked_behind_a_breaker_wait_until_released(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let breaker = unique("gateway");
    let c = start(&ns, "wf", &q, T0);
    store.commit(&c).await.unwrap();
    let run = stored(&c);
    let mut change = history::signal(&run, "s", None, "t", T0, Dispatch::nobody(T0))
        .unwrap()
        .commit;
    change.tasks.push(TaskOp::Insert(activity(&run, &q, T0)));
    store.commit(&change).await.unwrap();
    let task = store
        .claim_activity_task(&ns, &q, "l1", T0)
        .await
        .unwrap()
        .expect("claimed");
    let change_with = |run: &Run, at: Millis, op: TaskOp| {
        let mut c = history::signal(run, "s", None, "t", at, Dispatch::nobody(at))
            .unwrap()
            .commit;
        c.tasks.push(op);
        c
    };
    let run = stored(&change);
    let forged = change_with(
        &run,
        T0 + 1,
        TaskOp::Park {
            scheduled_event_id: task.scheduled_event_id,
            lease_id: "forged".into(),
            breaker: breaker.clone(),
        },
    );
    assert!(matches!(
        store.commit(&forged).await.unwrap_err(),
        StoreError::StaleTask
    ));
    let parked = change_with(
        &run,
        T0 + 1,
        TaskOp::Park {
            scheduled_event_id: task.scheduled_event_id,
            lease_id: "l1".into(),
            breaker: breaker.clone(),
        },
    );
    store.commit(&parked).await.unwrap();
    let far = T0 + 10_000_000_000;
    assert!(
        store
            .claim_activity_task(&ns, &q, "l2", far)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !store
            .expired_activity_leases(far, 1000)
            .await
            .unwrap()
            .iter()
            .any(|l| l.run_id == run.run_id),
        "a parked task is no lease that ran out"
    );
    assert!(
        store
            .parked_breakers()
            .await
            .unwrap()
            .contains(&(ns.clone(), breaker.clone()))
    );
    assert_eq!(
        store.parked_tasks(&ns, &breaker, 10).await.unwrap(),
        [(run.run_id, task.scheduled_event_id)]
    );
    let run = stored(&parked);
    let released = change_with(
        &run,
        T0 + 2,
        TaskOp::Unpark {
            scheduled_event_id: task.scheduled_event_id,
            breaker: breaker.clone(),
            visible_at: T0 + 2,
        },
    );
    store.commit(&released).await.unwrap();
    assert!(
        store
            .parked_tasks(&ns, &breaker, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_activity_task(&ns, &q, "l3", T0 + 2)
        .await
        .unwrap()
        .expect("released");
    assert_eq!(again.attempt, task.attempt, "parking costs no attempt");
    // Releasing what is not parked behind the breaker changes nothing and refuses nothing.
    let run = stored(&released);
    store
        .commit(&change_with(
            &run,
            T0 + 3,
            TaskOp::Unpark {
                scheduled_event_id: task.scheduled_event_id,
                breaker,
                visible_at: T0 + 3,
            },
        ))
        .await
        .unwrap();
    let leases = store.activity_leases(run.run_id).await.unwrap();
    assert!(
        leases[0].lease_until.is_some(),
        "the new holder keeps its lease"
    );
}

/// The latest change of a breaker's state reported by any worker says whether it is open.
pub async fn a_breaker_is_open_while_its_latest_report_says_so(store: &dyn Store) {
    let ns = namespace(store).await;
    let report = |state| {
        [BreakerReport {
            adapter: "gateway".into(),
            state,
        }]
    };
    assert!(!store.breaker_open(&ns, "gateway", T0).await.unwrap());
    store
        .record_breakers(&ns, "w1", &report(BreakerState::Open), T0)
        .await
        .unwrap();
    store
        .record_breakers(&ns, "w2", &report(BreakerState::Open), T0 + 1)
        .await
        .unwrap();
    assert!(store.breaker_open(&ns, "gateway", T0).await.unwrap());
    assert!(!store.breaker_open(&ns, "mailer", T0).await.unwrap());
    store
        .record_breakers(&ns, "w1", &report(BreakerState::HalfOpen), T0 + 2)
        .await
        .unwrap();
    assert!(
        store.breaker_open(&ns, "gateway", T0).await.unwrap(),
        "a trial call is under way"
    );
    assert!(
        !store.breaker_open(&ns, "gateway", T0 + 3).await.unwrap(),
        "reports older than asked do not count (all of them say open or half-open)"
    );
    store
        .record_breakers(&ns, "w1", &report(BreakerState::Closed), T0 + 3)
        .await
        .unwrap();
    assert!(
        !store.breaker_open(&ns, "gateway", T0).await.unwrap(),
        "the latest change wins"
    );
}

/// A lease that runs out is listed for the reaper and never claimed again as is; heartbeats
/// extend a heartbeat-timed lease up to the start-to-close limit.
pub async fn expired_leases_are_reaped_not_reclaimed(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let c = start(&ns, "wf", &q, T0);
    store.commit(&c).await.unwrap();
    let run = stored(&c);
    let mut change = history::signal(&run, "s", None, "t", T0, Dispatch::nobody(T0))
        .unwrap()
        .commit;
    let mut task = activity(&run, &q, T0);
    task.heartbeat_ms = 1_000;
    change.tasks.push(TaskOp::Insert(task));
    store.commit(&change).await.unwrap();
    let claimed = store
        .claim_activity_task(&ns, &q, "l1", T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        claimed.lease.as_ref().unwrap().until,
        T0 + 1_000,
        "the heartbeat timeout is shorter"
    );
    assert_eq!(claimed.started_at, Some(T0));
    // A heartbeat at +800 extends the lease to +1800; one at +4500 only to +5000 (start-to-close).
    assert!(
        store
            .heartbeat_activity(&run.namespace, run.run_id, 3, "l1", None, T0 + 800)
            .await
            .unwrap()
    );
    let mine = |v: Vec<crate::store::ExpiredLease>| {
        v.into_iter()
            .filter(|e| e.run_id == run.run_id)
            .collect::<Vec<_>>()
    };
    assert!(
        mine(
            store
                .expired_activity_leases(T0 + 1_500, 100)
                .await
                .unwrap()
        )
        .is_empty()
    );
    for at in [1_700, 2_600, 3_500, 4_400] {
        assert!(
            store
                .heartbeat_activity(&run.namespace, run.run_id, 3, "l1", None, T0 + at)
                .await
                .unwrap()
        );
    }
    assert!(
        mine(
            store
                .expired_activity_leases(T0 + 4_999, 100)
                .await
                .unwrap()
        )
        .is_empty()
    );
    let expired = mine(
        store
            .expired_activity_leases(T0 + 5_000, 100)
            .await
            .unwrap(),
    );
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].lease_id, "l1");
    assert!(
        !expired[0].heartbeat,
        "start-to-close ran out, not the heartbeat"
    );
    assert!(
        store
            .claim_activity_task(&ns, &q, "l2", T0 + 9_000)
            .await
            .unwrap()
            .is_none(),
        "an expired lease waits for the reaper"
    );
    assert!(
        !store
            .heartbeat_activity(&run.namespace, run.run_id, 3, "l1", None, T0 + 9_000)
            .await
            .unwrap()
    );
}

/// A due timer is listed, and firing it twice is refused.
pub async fn timers_come_due_and_fire_once(store: &dyn Store) {
    let ns = namespace(store).await;
    let c = start(&ns, "wf", &unique("q"), T0);
    store.commit(&c).await.unwrap();
    let run = stored(&c);
    let mut change = history::signal(&run, "s", None, "t", T0, Dispatch::nobody(T0))
        .unwrap()
        .commit;
    change.timers.push(TimerOp::Insert {
        key: "t:nap".into(),
        fire_at: T0 + 500,
    });
    store.commit(&change).await.unwrap();
    let run = stored(&change);
    let mine = |due: Vec<crate::store::DueTimer>| {
        due.into_iter()
            .filter(|t| t.run_id == run.run_id)
            .collect::<Vec<_>>()
    };
    assert!(mine(store.due_timers(T0 + 499, 1000).await.unwrap()).is_empty());
    let due = mine(store.due_timers(T0 + 500, 1000).await.unwrap());
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].key, "t:nap");
    let mut fire = history::signal(
        &run,
        "fired",
        None,
        "t",
        T0 + 500,
        Dispatch::nobody(T0 + 500),
    )
    .unwrap()
    .commit;
    fire.fired_timer = Some("t:nap".into());
    store.commit(&fire).await.unwrap();
    let mut again = history::signal(
        &stored(&fire),
        "fired",
        None,
        "t",
        T0 + 501,
        Dispatch::nobody(T0 + 501),
    )
    .unwrap()
    .commit;
    again.fired_timer = Some("t:nap".into());
    let err = store.commit(&again).await.unwrap_err();
    assert!(matches!(err, StoreError::StaleTask), "{err}");
    assert!(mine(store.due_timers(T0 + 10_000, 1000).await.unwrap()).is_empty());
}

/// Closing a run drops its task rows and timers.
pub async fn closing_a_run_drops_its_tasks_and_timers(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let c = start(&ns, "wf", &q, T0);
    store.commit(&c).await.unwrap();
    let run = stored(&c);
    let mut change = history::signal(&run, "s", None, "t", T0, Dispatch::nobody(T0))
        .unwrap()
        .commit;
    change.tasks.push(TaskOp::Insert(activity(&run, &q, T0)));
    change.timers.push(TimerOp::Insert {
        key: "t:x".into(),
        fire_at: T0,
    });
    store.commit(&change).await.unwrap();
    let end = history::terminate(&stored(&change), "done", "t", T0 + 1).unwrap();
    store.commit(&end).await.unwrap();
    assert!(store.activity_leases(run.run_id).await.unwrap().is_empty());
    assert!(
        store
            .due_timers(T0 + 10, 1000)
            .await
            .unwrap()
            .iter()
            .all(|t| t.run_id != run.run_id)
    );
    assert!(
        store
            .claim_workflow_task(&ns, &q, "l", T0 + 2)
            .await
            .unwrap()
            .is_none()
    );
}

/// Breakers are kept per namespace, each report renews when it was reported (not when its
/// state changed), old reports stop showing and are purged.
pub async fn breakers_are_kept_per_namespace_and_forgotten_when_stale(store: &dyn Store) {
    use crate::store::{BreakerReport, BreakerState, OpenBreaker};
    let (a, b) = (namespace(store).await, namespace(store).await);
    let worker = unique("w");
    let report = |adapter: &str, state| BreakerReport {
        adapter: adapter.into(),
        state,
    };
    let mine = |found: Vec<OpenBreaker>| {
        found
            .into_iter()
            .filter(|o| o.worker == worker)
            .map(|o| (o.adapter, o.since))
            .collect::<Vec<_>>()
    };
    store
        .record_breakers(&a, &worker, &[report("gateway", BreakerState::Open)], T0)
        .await
        .unwrap();
    store
        .record_breakers(&b, &worker, &[report("stock", BreakerState::Open)], T0 + 10)
        .await
        .unwrap();
    assert_eq!(
        mine(store.open_breakers(Some(&a), T0).await.unwrap()),
        [("gateway".to_owned(), T0)],
        "each namespace sees its own"
    );
    assert_eq!(
        mine(store.open_breakers(Some(&b), T0).await.unwrap()),
        [("stock".to_owned(), T0 + 10)]
    );
    // Reported again, still open: it opened at T0 and was reported at T0 + 500.
    store
        .record_breakers(
            &a,
            &worker,
            &[report("gateway", BreakerState::Open)],
            T0 + 500,
        )
        .await
        .unwrap();
    assert_eq!(
        mine(store.open_breakers(Some(&a), T0 + 100).await.unwrap()),
        [("gateway".to_owned(), T0)]
    );
    assert!(
        mine(store.open_breakers(Some(&b), T0 + 100).await.unwrap()).is_empty(),
        "a report older than asked for no longer shows"
    );
    // Purged: b's report (T0 + 10) goes, a's (T0 + 500) stays.
    assert!(store.purge_breakers(T0 + 100).await.unwrap() >= 1);
    store
        .record_breakers(
            &b,
            &worker,
            &[report("stock", BreakerState::Open)],
            T0 + 700,
        )
        .await
        .unwrap();
    assert_eq!(
        mine(store.open_breakers(Some(&b), T0).await.unwrap()),
        [("stock".to_owned(), T0 + 700)],
        "b's row was deleted: reported anew, it opened now"
    );
    assert_eq!(
        mine(store.open_breakers(Some(&a), T0).await.unwrap()),
        [("gateway".to_owned(), T0)]
    );
    store
        .record_breakers(
            &a,
            &worker,
            &[report("gateway", BreakerState::Closed)],
            T0 + 800,
        )
        .await
        .unwrap();
    assert!(mine(store.open_breakers(Some(&a), T0).await.unwrap()).is_empty());
}

/// The workers seen polling a queue: the latest sighting per worker and kind, only those seen
/// since the time asked, purged once old.
pub async fn pollers_are_kept_per_queue_and_forgotten_when_old(store: &dyn Store) {
    let ns = namespace(store).await;
    let queue = unique("q");
    store
        .record_poller(&ns, &queue, "workflow", "w-1", T0)
        .await
        .unwrap();
    store
        .record_poller(&ns, &queue, "workflow", "w-1", T0 + 100)
        .await
        .unwrap();
    store
        .record_poller(&ns, &queue, "activity", "w-2", T0 + 50)
        .await
        .unwrap();
    store
        .record_poller(&ns, &unique("other"), "workflow", "w-3", T0 + 100)
        .await
        .unwrap();
    let seen = store.pollers(&ns, &queue, T0).await.unwrap();
    let seen: Vec<_> = seen
        .iter()
        .map(|p| (p.identity.as_str(), p.kind.as_str(), p.last_seen))
        .collect();
    assert_eq!(
        seen,
        [("w-1", "workflow", T0 + 100), ("w-2", "activity", T0 + 50)]
    );
    assert_eq!(store.pollers(&ns, &queue, T0 + 60).await.unwrap().len(), 1);
    assert!(store.purge_pollers(T0 + 60).await.unwrap() >= 1);
    assert_eq!(store.pollers(&ns, &queue, 0).await.unwrap().len(), 1);
}
