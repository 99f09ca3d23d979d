//! Matching's hand-offs: reservations, holds, stale tasks, idle queues and queries.

use super::*;
use tokio::time::{Duration, Instant};

fn key() -> QueueKey {
    QueueKey::new("default", "jobs", TaskKind::Workflow)
}

fn task(until: Millis) -> Delivery {
    Delivery::Workflow {
        run_id: RunId::new(),
        lease: Lease {
            id: "l".into(),
            until,
        },
    }
}

#[tokio::test]
async fn a_reserved_poller_gets_the_task_delivered() {
    let m = Matching::default();
    let w = m.register(&key(), m.epoch(&key()), 0).ok().unwrap();
    let r = m.reserve(&key()).expect("a poller waits");
    m.deliver(r, task(100), 0);
    let got = m.wait(w, Instant::now() + Duration::from_secs(1)).await;
    assert!(matches!(got, Some(Delivery::Workflow { .. })));
    assert_eq!(m.waiting(&key()), 0);
}

#[tokio::test]
async fn a_task_for_a_vanished_poller_goes_to_the_next_one() {
    let m = Matching::default();
    let w = m.register(&key(), m.epoch(&key()), 0).ok().unwrap();
    let r = m.reserve(&key()).unwrap();
    drop(w);
    m.deliver(r, task(100), 0);
    assert!(matches!(
        m.register(&key(), m.epoch(&key()), 50),
        Err(Delivery::Workflow { .. })
    ));
    // An expired lease is not handed out: the store will give the task out again.
    let w = m.register(&key(), m.epoch(&key()), 50).ok().unwrap();
    let r = m.reserve(&key()).unwrap();
    drop(w);
    m.deliver(r, task(100), 0);
    assert!(m.register(&key(), m.epoch(&key()), 200).is_ok());
}

#[tokio::test]
async fn a_notify_between_looking_and_waiting_is_not_lost() {
    let m = Matching::default();
    let seen = m.epoch(&key());
    m.notify(&key());
    assert!(matches!(
        m.register(&key(), seen, 0),
        Err(Delivery::Recheck)
    ));
}

#[tokio::test]
async fn a_task_is_held_for_a_poll_on_its_way_and_no_more() {
    let m = Matching::default();
    // Nobody polls: nothing is held, the task is left in the store.
    assert!(m.reserve(&key()).is_none());
    let k = key();
    let seeking = m.seek(&k);
    let held = m.reserve(&key()).expect("held for the poll on its way");
    // One poll on its way, one task promised to it: a second task is not held.
    assert!(m.reserve(&key()).is_none());
    m.deliver(held, task(100), 0);
    assert!(m.reserve(&key()).is_none(), "the ready task is the poll's");
    drop(seeking);
    assert!(matches!(
        m.take_ready(&key(), 50),
        Some(Delivery::Workflow { .. })
    ));
    assert!(m.take_ready(&key(), 50).is_none());
}

#[tokio::test]
async fn held_tasks_nobody_took_are_given_back_and_activities_are_never_held() {
    let m = Matching::default();
    let k = key();
    let seeking = m.seek(&k);
    let held = m.reserve(&k).unwrap();
    m.deliver(held, task(10_000), 100);
    drop(seeking);
    assert!(m.take_stale(99).is_empty(), "not stale yet");
    let stale = m.take_stale(100);
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].0, k);
    assert!(
        m.take_ready(&k, 200).is_none(),
        "given back, not handed out"
    );

    let activities = QueueKey::new("default", "jobs", TaskKind::Activity);
    let _seeking = m.seek(&activities);
    assert!(m.reserve(&activities).is_none());
}

#[tokio::test]
async fn a_held_task_goes_to_the_poll_that_began_waiting_meanwhile() {
    let m = Matching::default();
    let k = key();
    let seeking = m.seek(&k);
    let held = m.reserve(&key()).unwrap();
    drop(seeking);
    let w = m.register(&key(), m.epoch(&key()), 0).ok().unwrap();
    m.deliver(held, task(100), 0);
    let got = m.wait(w, Instant::now() + Duration::from_secs(1)).await;
    assert!(matches!(got, Some(Delivery::Workflow { .. })));
    assert!(m.take_ready(&key(), 0).is_none());
}

#[tokio::test]
async fn a_failed_commit_gives_its_hold_back() {
    let m = Matching::default();
    let k = key();
    let _seeking = m.seek(&k);
    let held = m.reserve(&key()).unwrap();
    m.cancel(held);
    assert!(m.take_ready(&key(), 0).is_none());
    assert!(
        m.reserve(&key()).is_some(),
        "the poll can be promised a task again"
    );
}

#[test]
fn the_store_is_known_empty_until_a_notify_or_the_interval() {
    let m = Matching::default();
    assert!(!m.known_empty(&key(), 0, 1000), "never looked");
    let epoch = m.epoch(&key());
    m.found_empty(&key(), epoch, 100);
    assert!(m.known_empty(&key(), 500, 1000));
    assert!(
        !m.known_empty(&key(), 1100, 1000),
        "time may have freed a lease"
    );
    m.notify(&key());
    assert!(
        !m.known_empty(&key(), 500, 1000),
        "a task was committed since"
    );
    // A look that began before a notify proves nothing.
    m.found_empty(&key(), epoch, 600);
    assert!(!m.known_empty(&key(), 700, 1000));
    // Lost notices from other nodes: nothing is known empty any more.
    m.found_empty(&key(), m.epoch(&key()), 800);
    assert!(m.known_empty(&key(), 900, 1000));
    m.notify_all();
    assert!(!m.known_empty(&key(), 900, 1000));
}

#[tokio::test]
async fn pollers_a_change_took_are_delivered_its_tasks_or_given_back() {
    let m = Arc::new(Matching::default());
    let deadline = || Instant::now() + Duration::from_secs(1);
    let w = m.register(&key(), m.epoch(&key()), 0).ok().unwrap();
    let mut reserved = m.reserving();
    let poller = reserved
        .take_workflow("default", "jobs")
        .expect("one waits");
    assert!(
        reserved.take_workflow("default", "jobs").is_none(),
        "only one"
    );
    let lease = Lease {
        id: "l".into(),
        until: 100,
    };
    let run_id = RunId::new();
    reserved.deliver(poller, LeasedTask::Workflow { run_id, lease }, 0);
    drop(reserved);
    assert!(matches!(
        m.wait(w, deadline()).await,
        Some(Delivery::Workflow { run_id: r, .. }) if r == run_id
    ));

    // Taken for a change that was not written: told to look in the store again.
    let w = m.register(&key(), m.epoch(&key()), 0).ok().unwrap();
    let mut reserved = m.reserving();
    assert!(reserved.take_workflow("default", "jobs").is_some());
    drop(reserved);
    assert!(matches!(
        m.wait(w, deadline()).await,
        Some(Delivery::Recheck)
    ));
    // A hold for a poll on its way is given back too.
    let k = key();
    let _seeking = m.seek(&k);
    let mut reserved = m.reserving();
    assert!(reserved.take_workflow("default", "jobs").is_some());
    drop(reserved);
    assert!(
        m.reserve(&k).is_some(),
        "the poll can be promised a task again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_times_out_empty_and_unregisters() {
    let m = Matching::default();
    let w = m.register(&key(), m.epoch(&key()), 0).ok().unwrap();
    let got = m.wait(w, Instant::now() + Duration::from_secs(30)).await;
    assert!(got.is_none());
    assert_eq!(m.waiting(&key()), 0);
    assert!(m.reserve(&key()).is_none());
}

#[tokio::test]
async fn idle_queues_are_forgotten_and_their_epochs_never_come_back() {
    let m = Matching::default();
    for i in 0..1000 {
        let k = QueueKey::new("default", &format!("typo-{i}"), TaskKind::Activity);
        m.notify(&k);
        let seen = m.epoch(&k);
        // A poll that was cancelled while it waited.
        drop(m.register(&k, seen, 0).ok().unwrap());
    }
    let kept = QueueKey::new("default", "busy", TaskKind::Workflow);
    let seen = m.epoch(&kept);
    let wait = m.register(&kept, seen, 0).ok().unwrap();
    assert_eq!(m.queues(), 1001);
    // Used since the last sweep: kept once; then the idle ones go, the waited-on stays.
    assert_eq!(m.sweep_idle(), 0);
    assert_eq!(m.sweep_idle(), 1000);
    assert_eq!(m.queues(), 1);
    // A forgotten queue met again starts from an epoch no poller has seen: a poller that
    // read the old one looks again instead of waiting past a notify.
    let k = QueueKey::new("default", "typo-7", TaskKind::Activity);
    let old = m.epoch(&k);
    m.sweep_idle();
    m.sweep_idle();
    m.notify(&k);
    m.sweep_idle();
    m.sweep_idle();
    assert!(matches!(m.register(&k, old, 0), Err(Delivery::Recheck)));
    drop(wait);
}

#[tokio::test]
async fn a_query_goes_to_a_waiting_poller_or_the_next_poll_until_withdrawn_or_expired() {
    let m = Matching::default();
    let later = Instant::now() + Duration::from_secs(60);
    let query = || Box::new(martix_proto::v1::PollWorkflowTaskResponse::default());
    // A waiting poller takes it at once.
    let w = m.register(&key(), m.epoch(&key()), 0).ok().unwrap();
    m.offer_query(&key(), later, "q1".into(), query());
    let got = m.wait(w, Instant::now() + Duration::from_secs(1)).await;
    assert!(matches!(got, Some(Delivery::Query { id, .. }) if id == "q1"));
    // Kept for the next poll, before any held task, and not given back to the store.
    m.offer_query(&key(), later, "q2".into(), query());
    assert!(m.take_stale(i64::MAX).is_empty());
    assert!(matches!(m.take_ready(&key(), 0), Some(Delivery::Query { id, .. }) if id == "q2"));
    // Withdrawn when its caller stops waiting, or past its deadline: nobody gets it, and the
    // idle queue is forgotten.
    m.offer_query(&key(), later, "q3".into(), query());
    m.withdraw_query(&key(), "q3");
    m.offer_query(&key(), Instant::now(), "q4".into(), query());
    assert!(m.take_ready(&key(), 0).is_none());
    m.offer_query(&key(), Instant::now(), "q5".into(), query());
    m.sweep_idle();
    assert_eq!(
        m.sweep_idle(),
        1,
        "an expired query does not keep its queue"
    );
}
