//! Schedules on PostgreSQL and SQLite, with an injected clock: each time starts one run (also
//! when two nodes act on it, or one acts twice), a time missed within the catch-up window is
//! acted on once and an older one not at all, the overlap policies, pause and resume, trigger,
//! backfill, and every bad request refused with why.

use martix_engine::clock::ManualClock;
use martix_engine::store::{SqliteStore, Store};
use martix_engine::{Engine, EngineConfig, EngineError};
use martix_proto::v1 as pb;
use martix_tests::{Backend, on_both_backends, postgres_store_apart, sqlite_url, unique};
use std::sync::Arc;

/// 2027-01-01T00:00:00Z: a whole hour, minute and second.
const T0: i64 = 1_798_761_600_000;
const MINUTE: i64 = 60_000;

/// A database of the test's own (`name`), its schedules emptied: no other test's engine acts
/// on these schedules, and these engines on no other's.
async fn store(backend: Backend, name: &str) -> Arc<dyn Store> {
    match backend {
        Backend::Postgres => {
            let (store, url) = postgres_store_apart(name).await;
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query("DELETE FROM schedules")
                .execute(&pool)
                .await
                .unwrap();
            store
        }
        Backend::Sqlite => Arc::new(SqliteStore::connect(&sqlite_url()).await.unwrap()),
    }
}

fn every(minutes: i64, overlap: pb::ScheduleOverlap, catchup_minutes: i64) -> pb::Schedule {
    pb::Schedule {
        spec: Some(pb::ScheduleSpec {
            interval: Some(pbjson_types::Duration {
                seconds: minutes * 60,
                nanos: 0,
            }),
            ..Default::default()
        }),
        action: Some(pb::ScheduleAction {
            workflow_type: "reconcile".into(),
            task_queue: "nightly".into(),
            ..Default::default()
        }),
        overlap: overlap as i32,
        catchup_window: Some(pbjson_types::Duration {
            seconds: catchup_minutes * 60,
            nanos: 0,
        }),
        ..Default::default()
    }
}

async fn create(engine: &Engine, id: &str, schedule: pb::Schedule) -> Result<(), EngineError> {
    engine
        .create_schedule(pb::CreateScheduleRequest {
            namespace: "default".into(),
            schedule_id: id.into(),
            schedule: Some(schedule),
            identity: "test".into(),
        })
        .await
        .map(drop)
}

async fn describe(engine: &Engine, id: &str) -> pb::ScheduleInfo {
    engine
        .describe_schedule(pb::DescribeScheduleRequest {
            namespace: "default".into(),
            schedule_id: id.into(),
        })
        .await
        .unwrap()
        .info
        .unwrap()
}

/// The workflow ids of the runs schedule `id` started, sorted.
async fn runs(engine: &Engine, id: &str) -> Vec<String> {
    let mut ids: Vec<String> = engine
        .list_workflows(pb::ListWorkflowsRequest {
            namespace: "default".into(),
            page_size: 1000,
            workflow_id_prefix: format!("{id}-"),
            ..Default::default()
        })
        .await
        .unwrap()
        .executions
        .into_iter()
        .map(|e| e.execution.unwrap().workflow_id)
        .collect();
    ids.sort();
    ids
}

async fn patch(
    engine: &Engine,
    id: &str,
    set: impl FnOnce(&mut pb::PatchScheduleRequest),
) -> Vec<pb::ScheduleActionRecord> {
    let mut r = pb::PatchScheduleRequest {
        namespace: "default".into(),
        schedule_id: id.into(),
        ..Default::default()
    };
    set(&mut r);
    engine.patch_schedule(r).await.unwrap().actions
}

fn config() -> EngineConfig {
    EngineConfig::default()
}

async fn each_time_starts_one_run_and_old_times_are_missed(backend: Backend) {
    let store = store(backend, "schedules_times").await;
    let clock = ManualClock::new(T0);
    let node_a = Engine::with_clock(store.clone(), config(), Arc::new(clock.clone()));
    let node_b = Engine::with_clock(store, config(), Arc::new(clock.clone()));
    let id = unique("every-min");
    let id = id.as_str();
    let at = |hms: &str| format!("{id}-2027-01-01T{hms}Z");
    create(&node_a, id, every(1, pb::ScheduleOverlap::AllowAll, 10))
        .await
        .unwrap();
    let next: Vec<i64> = describe(&node_a, id)
        .await
        .next_times
        .iter()
        .map(|t| t.seconds * 1000)
        .collect();
    assert_eq!(next, [1, 2, 3, 4, 5].map(|m| T0 + m * MINUTE));

    // Three minutes pass; two nodes act at once: one run per time.
    clock.advance(3 * MINUTE);
    let (a, b) = futures::join!(node_a.fire_due_schedules(), node_b.fire_due_schedules());
    a.unwrap();
    b.unwrap();
    node_a.fire_due_schedules().await.unwrap();
    assert_eq!(
        runs(&node_a, id).await,
        [at("00:01:00"), at("00:02:00"), at("00:03:00")]
    );
    assert_eq!(describe(&node_a, id).await.started, 3);

    // The engine was down for 30 minutes: the last 10 are within the catch-up window and
    // start once each; the 20 before are missed.
    clock.advance(30 * MINUTE);
    node_b.fire_due_schedules().await.unwrap();
    node_a.fire_due_schedules().await.unwrap();
    let started = runs(&node_a, id).await;
    assert_eq!(started.len(), 3 + 11, "{started:?}");
    assert_eq!(started.last().unwrap(), &at("00:33:00"));
    assert!(!started.contains(&at("00:22:00")));
    assert!(started.contains(&at("00:23:00")));
    let info = describe(&node_a, id).await;
    assert_eq!((info.started, info.missed), (14, 19));
    assert!(info.recent_actions.len() <= 10);
}

on_both_backends!(each_time_starts_one_run_and_old_times_are_missed);

async fn overlap_pause_trigger_and_backfill(backend: Backend) {
    let store = store(backend, "schedules_overlap").await;
    let clock = ManualClock::new(T0);
    let engine = Engine::with_clock(store, config(), Arc::new(clock.clone()));
    let (skipper, buffer, manual) = (unique("skipper"), unique("buffer"), unique("manual"));
    let (skipper, buffer, manual) = (skipper.as_str(), buffer.as_str(), manual.as_str());

    // Skip: no worker runs the first run, so the next times are skipped.
    create(&engine, skipper, every(1, pb::ScheduleOverlap::Skip, 60))
        .await
        .unwrap();
    // Buffer one: one time waits, the rest are skipped; it starts once the run closed.
    create(
        &engine,
        buffer,
        every(1, pb::ScheduleOverlap::BufferOne, 60),
    )
    .await
    .unwrap();
    clock.advance(3 * MINUTE);
    engine.fire_due_schedules().await.unwrap();
    assert_eq!(
        runs(&engine, skipper).await,
        [format!("{skipper}-2027-01-01T00:01:00Z")]
    );
    let info = describe(&engine, skipper).await;
    assert_eq!((info.started, info.skipped), (1, 2));
    assert!(info.running.is_some());
    let info = describe(&engine, buffer).await;
    assert_eq!((info.started, info.skipped), (1, 1));
    assert_eq!(info.buffered_time.unwrap().seconds * 1000, T0 + 2 * MINUTE);
    engine
        .terminate_workflow(pb::TerminateWorkflowRequest {
            namespace: "default".into(),
            execution: Some(pb::WorkflowExecution {
                workflow_id: format!("{buffer}-2027-01-01T00:01:00Z"),
                run_id: String::new(),
            }),
            reason: "done".into(),
            identity: "test".into(),
        })
        .await
        .unwrap();
    clock.advance(1_000);
    engine.fire_due_schedules().await.unwrap();
    assert_eq!(
        runs(&engine, buffer).await,
        [
            format!("{buffer}-2027-01-01T00:01:00Z"),
            format!("{buffer}-2027-01-01T00:02:00Z")
        ]
    );

    // Paused, it acts on nothing; resumed, the times of the pause are not acted on.
    patch(&engine, skipper, |r| r.pause = "audit".into()).await;
    assert!(describe(&engine, skipper).await.next_times.is_empty());
    clock.advance(10 * MINUTE);
    engine.fire_due_schedules().await.unwrap();
    assert_eq!(runs(&engine, skipper).await.len(), 1);
    patch(&engine, skipper, |r| r.resume = "audit done".into()).await;
    let next = describe(&engine, skipper).await.next_times[0].seconds * 1000;
    assert!(next > clock_now(&clock), "no time of the pause is due");

    // Trigger: now, by the policy (the first run still runs: skipped); allow-all starts.
    let t = patch(&engine, skipper, |r| r.trigger = true).await;
    assert!(t[0].outcome.contains("skipped"), "{t:?}");
    create(
        &engine,
        manual,
        every(60, pb::ScheduleOverlap::AllowAll, 60),
    )
    .await
    .unwrap();
    let t = patch(&engine, manual, |r| r.trigger = true).await;
    assert_eq!(t[0].outcome, "triggered: started");
    assert!(t[0].workflow_execution.is_some());

    // Backfill: every time in the range, whatever runs; asked again, the same runs.
    let range = |r: &mut pb::PatchScheduleRequest| {
        r.backfill_start = Some(pbjson_types::Timestamp {
            seconds: (T0 - 3 * 60 * MINUTE) / 1000,
            nanos: 0,
        });
        r.backfill_end = Some(pbjson_types::Timestamp {
            seconds: (T0 - 60 * MINUTE) / 1000,
            nanos: 0,
        });
    };
    assert_eq!(patch(&engine, manual, range).await.len(), 3);
    assert_eq!(patch(&engine, manual, range).await.len(), 3);
    let manual_runs = runs(&engine, manual).await;
    assert_eq!(
        manual_runs.len(),
        4,
        "3 backfilled, 1 triggered: {manual_runs:?}"
    );
    assert_eq!(manual_runs[0], format!("{manual}-2026-12-31T21:00:00Z"));

    // Deleted: gone, its runs stay.
    engine
        .delete_schedule(pb::DeleteScheduleRequest {
            namespace: "default".into(),
            schedule_id: manual.into(),
        })
        .await
        .unwrap();
    assert_eq!(runs(&engine, manual).await.len(), 4);
    let gone = engine
        .describe_schedule(pb::DescribeScheduleRequest {
            namespace: "default".into(),
            schedule_id: manual.into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(gone, EngineError::NotFound(_)), "{gone}");
}

fn clock_now(clock: &ManualClock) -> i64 {
    use martix_engine::clock::Clock;
    clock.now()
}

on_both_backends!(overlap_pause_trigger_and_backfill);

async fn bad_schedules_are_refused_with_why(backend: Backend) {
    let store = store(backend, "schedules_bad").await;
    let engine = Engine::with_clock(store, config(), Arc::new(ManualClock::new(T0)));
    let mut no_type = every(1, pb::ScheduleOverlap::Skip, 60);
    no_type.action.as_mut().unwrap().workflow_type.clear();
    let mut cron_and_interval = every(1, pb::ScheduleOverlap::Skip, 60);
    cron_and_interval.spec.as_mut().unwrap().cron = "0 2 * * *".into();
    let mut bad_zone = every(1, pb::ScheduleOverlap::Skip, 60);
    bad_zone.spec = Some(pb::ScheduleSpec {
        cron: "0 2 * * *".into(),
        timezone: "Europe/Atlantis".into(),
        ..Default::default()
    });
    let mut short_catchup = every(1, pb::ScheduleOverlap::Skip, 60);
    short_catchup.catchup_window = Some(pbjson_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    for (schedule, why) in [
        (no_type, "schedule.action.workflow_type"),
        (cron_and_interval, "both a cron expression and an interval"),
        (bad_zone, "'Europe/Atlantis' is not an IANA time zone"),
        (short_catchup, "at least 10s"),
    ] {
        let e = create(&engine, "bad", schedule).await.unwrap_err();
        assert!(e.to_string().contains(why), "{e} lacks {why}");
    }
    create(&engine, "twice", every(1, pb::ScheduleOverlap::Skip, 60))
        .await
        .unwrap();
    let e = create(&engine, "twice", every(1, pb::ScheduleOverlap::Skip, 60))
        .await
        .unwrap_err();
    assert!(matches!(e, EngineError::AlreadyExists(_)), "{e}");
}

on_both_backends!(bad_schedules_are_refused_with_why);

async fn a_long_outage_is_skipped_at_once_not_walked_forever(backend: Backend) {
    let store = store(backend, "schedules_outage").await;
    let clock = ManualClock::new(T0);
    let engine = Engine::with_clock(store, config(), Arc::new(clock.clone()));
    let id = unique("every-second");
    let mut s = every(1, pb::ScheduleOverlap::AllowAll, 1);
    s.spec.as_mut().unwrap().interval = Some(pbjson_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    s.catchup_window = Some(pbjson_types::Duration {
        seconds: 10,
        nanos: 0,
    });
    create(&engine, &id, s).await.unwrap();
    // Three hours down: 10,800 times, all but the last 10 s of them missed.
    clock.advance(3 * 60 * MINUTE);
    engine.fire_due_schedules().await.unwrap();
    let info = describe(&engine, &id).await;
    assert!((10..=11).contains(&info.started), "{info:?}");
    assert!(info.missed >= 10_000, "{info:?}");
    // The last actions are the starts within the window (the skip is older than them).
    assert!(
        info.recent_actions
            .iter()
            .all(|a| a.outcome == "started" || a.outcome.contains("too many to count")),
        "{info:?}"
    );
    assert_eq!(runs(&engine, &id).await.len() as i64, info.started);
}

on_both_backends!(a_long_outage_is_skipped_at_once_not_walked_forever);

/// On the wall clock, the engine's timer loop acts on a schedule by itself.
async fn the_timer_loop_acts_on_schedules(backend: Backend) {
    let t = martix_tests::TestEngine::start(backend, config()).await;
    let id = unique("ticks");
    create(&t.engine, &id, {
        let mut s = every(1, pb::ScheduleOverlap::AllowAll, 60);
        s.spec.as_mut().unwrap().interval = Some(pbjson_types::Duration {
            seconds: 1,
            nanos: 0,
        });
        s
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while runs(&t.engine, &id).await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the loop started {:?}",
            runs(&t.engine, &id).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    t.engine
        .delete_schedule(pb::DeleteScheduleRequest {
            namespace: "default".into(),
            schedule_id: id.clone(),
        })
        .await
        .unwrap();
}

on_both_backends!(the_timer_loop_acts_on_schedules);
