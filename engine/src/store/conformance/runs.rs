//! Conformance cases of runs: a change written whole or not at all, one open run per
//! workflow id, history read back from any event, listings, continue-as-new, and concurrent
//! changes sharing a group commit yet failing alone.

use super::{T0, activity, namespace, start, stored, unique};
use crate::history::{self, Dispatch, Run, RunCommit, TaskOp};
use crate::ids::{Namespace, TaskQueue};
use crate::store::{ListAfter, ListQuery, Store, StoreError};
use martix_proto::v1 as pb;

/// A new run is stored whole: checkpoint, first events, its workflow task.
pub async fn a_started_run_reads_back_whole(store: &dyn Store) {
    let ns = namespace(store).await;
    let c = start(&ns, "wf-1", &unique("q"), T0);
    store.commit(&c).await.expect("insert run");
    let run = store.load_run(c.run.run_id).await.unwrap().expect("stored");
    assert_eq!(run, stored(&c));
    let events = store.history(run.run_id, 1, 100).await.unwrap();
    assert_eq!(events, c.events);
    assert_eq!(
        store.last_event(run.run_id).await.unwrap().as_ref(),
        c.events.last()
    );
    let latest = store
        .latest_run(&ns, "wf-1")
        .await
        .unwrap()
        .expect("latest");
    assert_eq!(latest.run_id, run.run_id);
    assert!(store.namespace_exists(&ns).await.unwrap());
    assert!(!store.namespace_exists(&unique("nope")).await.unwrap());
}

/// A change with more events than a history row holds (a reset copying a long history)
/// reads back whole and from any event on.
pub async fn a_long_change_reads_back_from_any_event(store: &dyn Store) {
    let ns = namespace(store).await;
    let mut c = start(&ns, &unique("wf"), &unique("q"), T0);
    let first_extra = c.run.next_event_id;
    for id in first_extra..first_extra + 600 {
        let mut e = c.events[0].clone();
        e.event_id = id;
        c.events.push(e);
    }
    c.run.next_event_id = first_extra + 600;
    store.commit(&c).await.unwrap();
    let run = c.run.run_id;
    assert_eq!(store.history(run, 1, 10_000).await.unwrap(), c.events);
    let ids: Vec<i64> = store
        .history(run, 300, 5)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(ids, [300, 301, 302, 303, 304]);
    assert_eq!(
        store.history(run, 259, 1000).await.unwrap(),
        c.events[258..]
    );
    assert_eq!(
        store.last_event(run).await.unwrap().as_ref(),
        c.events.last()
    );
}

/// A write from a stale read conflicts and writes nothing.
pub async fn a_stale_version_conflicts_and_writes_nothing(store: &dyn Store) {
    let ns = namespace(store).await;
    let c = start(&ns, "wf", &unique("q"), T0);
    store.commit(&c).await.unwrap();
    let run = store.load_run(c.run.run_id).await.unwrap().unwrap();
    let first = history::signal(&run, "a", None, "t", T0 + 1, Dispatch::nobody(T0 + 1))
        .unwrap()
        .commit;
    let second = history::signal(&run, "b", None, "t", T0 + 2, Dispatch::nobody(T0 + 2))
        .unwrap()
        .commit;
    store.commit(&first).await.expect("first writer wins");
    let err = store.commit(&second).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let events = store.history(run.run_id, 1, 100).await.unwrap();
    assert_eq!(events.len() as i64, first.run.next_event_id - 1);
    let after = store.load_run(run.run_id).await.unwrap().unwrap();
    assert_eq!(after.version, run.version + 1);
}

/// At most one open run per workflow id; a closed one may be followed by another.
pub async fn one_open_run_per_workflow_id(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let first = start(&ns, "w-7", &q, T0);
    store.commit(&first).await.unwrap();
    let err = store
        .commit(&start(&ns, "w-7", &q, T0 + 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyOpen), "{err}");
    let run = store.load_run(first.run.run_id).await.unwrap().unwrap();
    store
        .commit(&history::terminate(&run, "test", "t", T0 + 2).unwrap())
        .await
        .unwrap();
    let next = start(&ns, "w-7", &q, T0 + 3);
    store
        .commit(&next)
        .await
        .expect("a closed id may run again");
    let latest = store.latest_run(&ns, "w-7").await.unwrap().unwrap();
    assert_eq!(latest.run_id, next.run.run_id);
}

/// A start that assumed a fresh id is refused, with nothing written, once any run of the id
/// exists, open or closed; a start that read the id is not.
pub async fn a_start_on_a_fresh_id_is_refused_once_the_id_has_run(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let fresh = |at| {
        let mut c = start(&ns, "w-9", &q, at);
        c.fresh_id = true;
        c
    };
    let first = fresh(T0);
    store.commit(&first).await.expect("a new id starts");
    let second = fresh(T0 + 1);
    let err = store.commit(&second).await.unwrap_err();
    assert!(matches!(err, StoreError::IdUsed), "open: {err}");
    assert!(store.load_run(second.run.run_id).await.unwrap().is_none());
    let run = store.load_run(first.run.run_id).await.unwrap().unwrap();
    store
        .commit(&history::terminate(&run, "test", "t", T0 + 2).unwrap())
        .await
        .unwrap();
    let third = fresh(T0 + 3);
    let err = store.commit(&third).await.unwrap_err();
    assert!(matches!(err, StoreError::IdUsed), "closed: {err}");
    assert!(
        store
            .history(third.run.run_id, 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let read = start(&ns, "w-9", &q, T0 + 4);
    store.commit(&read).await.expect("a start that read the id");
    let latest = store.latest_run(&ns, "w-9").await.unwrap().unwrap();
    assert_eq!(latest.run_id, read.run.run_id);
}

/// Listing filters by status, type, queue, id prefix and time, newest first, in pages.
pub async fn runs_are_listed_filtered_and_paged(store: &dyn Store) {
    let ns = namespace(store).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let c = start(&ns, &format!("w-{i}"), "q", T0 + i);
        store.commit(&c).await.unwrap();
        ids.push(c.run.run_id);
    }
    let other = start(&ns, "bill-1", "billing", T0 + 10);
    store.commit(&other).await.unwrap();
    let run = store.load_run(ids[0]).await.unwrap().unwrap();
    store
        .commit(&history::terminate(&run, "x", "t", T0 + 20).unwrap())
        .await
        .unwrap();

    let q = |f: &dyn Fn(&mut ListQuery)| {
        let mut q = ListQuery::new(Namespace::parse(&ns).unwrap(), 100);
        f(&mut q);
        q
    };
    let all = store.list_runs(&q(&|_| {})).await.unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].workflow_id, "bill-1", "newest first");
    let ids_of = |runs: Vec<Run>| runs.into_iter().map(|r| r.workflow_id).collect::<Vec<_>>();
    assert_eq!(
        ids_of(
            store
                .list_runs(&q(&|q| q.workflow_id_prefix = Some("w-".into())))
                .await
                .unwrap()
        ),
        ["w-4", "w-3", "w-2", "w-1", "w-0"]
    );
    assert_eq!(
        ids_of(
            store
                .list_runs(&q(&|q| q.statuses = vec![pb::WorkflowStatus::Terminated]))
                .await
                .unwrap()
        ),
        ["w-0"]
    );
    assert_eq!(
        ids_of(
            store
                .list_runs(&q(
                    &|q| q.task_queue = Some(TaskQueue::parse("billing").unwrap())
                ))
                .await
                .unwrap()
        ),
        ["bill-1"]
    );
    assert_eq!(
        ids_of(
            store
                .list_runs(&q(&|q| {
                    q.start_time_from = Some(T0 + 1);
                    q.start_time_to = Some(T0 + 3);
                }))
                .await
                .unwrap()
        ),
        ["w-2", "w-1"]
    );
    // Pages of two, each continuing after the last row of the previous one.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_runs(&q(&|q| {
                q.limit = 2;
                q.after = after.clone();
            }))
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        after = Some(ListAfter {
            start_time: last.start_time,
            run_id: last.run_id.to_text(),
        });
        seen.extend(page.into_iter().map(|r| r.workflow_id));
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    let total: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(total.len(), 6, "no run twice: {seen:?}");
}

/// Continue-as-new closes one run and opens the next in one transaction.
pub async fn continue_as_new_writes_both_runs(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let c = start(&ns, "loop", &q, T0);
    store.commit(&c).await.unwrap();
    let run = store
        .claim_workflow_task(&ns, &q, "l", T0)
        .await
        .unwrap()
        .unwrap();
    let token = history::TaskToken {
        namespace: ns.clone(),
        run_id: run.run_id.to_text(),
        kind: history::TOKEN_KIND_WORKFLOW,
        scheduled_event_id: 2,
        attempt: 1,
        lease_id: "l".into(),
        history_len: run.next_event_id - 1,
    };
    let cmd = pb::Command {
        attributes: Some(pb::command::Attributes::ContinueAsNew(Default::default())),
    };
    let commit = match history::complete_workflow_task(
        &run,
        &token,
        &[cmd],
        "w",
        T0 + 1,
        Dispatch::nobody(T0 + 1),
    )
    .unwrap()
    {
        history::WftOutcome::Applied(c) => c.commit,
        history::WftOutcome::Rejected { error, .. } => panic!("{error}"),
    };
    store.commit(&commit).await.unwrap();
    let old = store.load_run(run.run_id).await.unwrap().unwrap();
    assert_eq!(old.status, pb::WorkflowStatus::ContinuedAsNew);
    let latest = store.latest_run(&ns, "loop").await.unwrap().unwrap();
    assert_eq!(latest.run_id, commit.new_run.as_ref().unwrap().run.run_id);
    assert!(latest.is_open());
}

/// Changes committed at the same time share transactions (group commit), yet each stays all or
/// nothing: a conflicting one is refused alone, the others are written whole.
pub async fn concurrent_changes_commit_together_and_fail_alone(store: &dyn Store) {
    let ns = namespace(store).await;
    let starts: Vec<RunCommit> = (0..20)
        .map(|i| start(&ns, &unique("wf"), &unique("q"), T0 + i))
        .collect();
    let before = store.write_transactions();
    let results = futures::future::join_all(starts.iter().map(|c| store.commit(c))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let used = store.write_transactions() - before;
    assert!(used < 20, "20 concurrent starts took {used} transactions");
    // Signal every run; one run also gets a second, stale signal in the same burst.
    let mut changes = Vec::new();
    for c in &starts {
        let run = store.load_run(c.run.run_id).await.unwrap().unwrap();
        changes.push(
            history::signal(&run, "go", None, "t", T0 + 100, Dispatch::nobody(T0 + 100))
                .unwrap()
                .commit,
        );
    }
    let victim = store.load_run(starts[7].run.run_id).await.unwrap().unwrap();
    let stale = history::signal(
        &victim,
        "late",
        None,
        "t",
        T0 + 101,
        Dispatch::nobody(T0 + 101),
    )
    .unwrap()
    .commit;
    let mut all: Vec<&RunCommit> = changes.iter().collect();
    all.insert(3, &stale);
    let results = futures::future::join_all(all.iter().map(|c| store.commit(c))).await;
    let conflicts = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(conflicts, 1, "{results:?}");
    for c in &changes {
        let events = store.history(c.run.run_id, 1, 100).await.unwrap();
        let is_victim = c.run.run_id == victim.run_id;
        let stale_won = results[3].is_ok();
        if !is_victim || !stale_won {
            assert_eq!(
                events.len() as i64,
                c.run.next_event_id - 1,
                "written whole"
            );
        }
    }
    let victim_events = store.history(victim.run_id, 1, 100).await.unwrap();
    assert_eq!(
        victim_events.len() as i64,
        victim.next_event_id,
        "exactly one of the two signals was written"
    );
    // A burst where one change fails in the database itself (a second open run of an id):
    // that change alone fails, the others are written.
    let more: Vec<RunCommit> = (0..10)
        .map(|i| start(&ns, &unique("wf"), &unique("q"), T0 + 200 + i))
        .collect();
    let twin = start(&ns, &starts[0].run.workflow_id, &unique("q"), T0 + 300);
    let mut burst: Vec<&RunCommit> = more.iter().collect();
    burst.insert(5, &twin);
    let results = futures::future::join_all(burst.iter().map(|c| store.commit(c))).await;
    for (i, r) in results.iter().enumerate() {
        if i == 5 {
            assert!(matches!(r, Err(StoreError::AlreadyOpen)), "{r:?}");
        } else {
            assert!(r.is_ok(), "{i}: {r:?}");
        }
    }
    assert!(store.load_run(twin.run.run_id).await.unwrap().is_none());
    for c in &more {
        let events = store.history(c.run.run_id, 1, 100).await.unwrap();
        assert_eq!(
            events.len() as i64,
            c.run.next_event_id - 1,
            "written whole"
        );
    }
    // A burst where one change names a task it does not hold, and another a stale checkpoint
    // and a task it does not hold: refused as stale and as a conflict, nothing of them written.
    let q = unique("q");
    let holder = start(&ns, &unique("wf"), &q, T0 + 400);
    store.commit(&holder).await.unwrap();
    let run = stored(&holder);
    let mut with_task = history::signal(&run, "s", None, "t", T0 + 401, Dispatch::nobody(T0 + 401))
        .unwrap()
        .commit;
    with_task
        .tasks
        .push(TaskOp::Insert(activity(&run, &q, T0 + 401)));
    store.commit(&with_task).await.unwrap();
    let run = stored(&with_task);
    let mut forged = history::signal(
        &run,
        "forged",
        None,
        "t",
        T0 + 402,
        Dispatch::nobody(T0 + 402),
    )
    .unwrap()
    .commit;
    forged.tasks.push(TaskOp::Delete {
        scheduled_event_id: 3,
        lease_id: Some("forged".into()),
    });
    let mut stale = history::signal(
        &stored(&holder),
        "stale",
        None,
        "t",
        T0 + 402,
        Dispatch::nobody(T0 + 402),
    )
    .unwrap()
    .commit;
    stale.tasks.push(TaskOp::Delete {
        scheduled_event_id: 3,
        lease_id: Some("forged".into()),
    });
    let others: Vec<RunCommit> = (0..6)
        .map(|i| start(&ns, &unique("wf"), &unique("q"), T0 + 410 + i))
        .collect();
    let mut burst: Vec<&RunCommit> = others.iter().collect();
    burst.insert(2, &forged);
    burst.insert(4, &stale);
    let results = futures::future::join_all(burst.iter().map(|c| store.commit(c))).await;
    assert!(
        matches!(results[2], Err(StoreError::StaleTask)),
        "{:?}",
        results[2]
    );
    assert!(
        matches!(results[4], Err(StoreError::Conflict { .. })),
        "{:?}",
        results[4]
    );
    let after = store.load_run(run.run_id).await.unwrap().unwrap();
    assert_eq!(
        after.version, run.version,
        "the refused changes wrote nothing"
    );
    assert_eq!(
        store.history(run.run_id, 1, 100).await.unwrap().len() as i64,
        run.next_event_id - 1
    );
    for (i, r) in results.iter().enumerate() {
        if i != 2 && i != 4 {
            assert!(r.is_ok(), "{i}: {r:?}");
        }
    }
    // A burst where one change's history event collides with a stored one, so a statement
    // the batch's changes share fails: that change alone fails, the others are written whole.
    let runs: Vec<RunCommit> = (0..6)
        .map(|i| start(&ns, &unique("wf"), &unique("q"), T0 + 500 + i))
        .collect();
    let started = futures::future::join_all(runs.iter().map(|c| store.commit(c))).await;
    assert!(started.iter().all(Result::is_ok), "{started:?}");
    let signals: Vec<RunCommit> = runs
        .iter()
        .map(|c| {
            history::signal(
                &stored(c),
                "go",
                None,
                "t",
                T0 + 510,
                Dispatch::nobody(T0 + 510),
            )
            .unwrap()
            .commit
        })
        .collect();
    let mut bad = signals[3].clone();
    bad.events[0].event_id = 1;
    let mut burst: Vec<&RunCommit> = signals.iter().collect();
    burst[3] = &bad;
    let before = store.write_transactions();
    let results = futures::future::join_all(burst.iter().map(|c| store.commit(c))).await;
    assert_eq!(
        store.write_transactions() - before,
        1,
        "the burst went to the writers as one batch"
    );
    for (i, (r, c)) in results.iter().zip(&signals).enumerate() {
        let events = store.history(c.run.run_id, 1, 100).await.unwrap();
        if i == 3 {
            assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
            let run = store.load_run(c.run.run_id).await.unwrap().unwrap();
            assert_eq!(run.version, 1, "nothing of the bad change was written");
            assert_eq!(events.len() as i64, runs[i].run.next_event_id - 1);
        } else {
            assert!(r.is_ok(), "{i}: {r:?}");
            assert_eq!(
                events.len() as i64,
                c.run.next_event_id - 1,
                "written whole"
            );
        }
    }
    // A burst where two changes of different runs carry one request id: refused after the
    // checkpoint was written, so the batch is written again without it; exactly one of the
    // two is recorded, the other answered as a duplicate with nothing of it written.
    let runs: Vec<RunCommit> = (0..5)
        .map(|i| start(&ns, &unique("wf"), &unique("q"), T0 + 600 + i))
        .collect();
    let started = futures::future::join_all(runs.iter().map(|c| store.commit(c))).await;
    assert!(started.iter().all(Result::is_ok), "{started:?}");
    let request = unique("req");
    let signals: Vec<RunCommit> = runs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut s = history::signal(
                &stored(c),
                "go",
                None,
                "t",
                T0 + 610,
                Dispatch::nobody(T0 + 610),
            )
            .unwrap()
            .commit;
            if i == 1 || i == 3 {
                s.request_id = Some(request.clone());
            }
            s
        })
        .collect();
    let results = futures::future::join_all(signals.iter().map(|c| store.commit(c))).await;
    let duplicates: Vec<usize> = (0..results.len())
        .filter(|&i| matches!(results[i], Err(StoreError::Duplicate)))
        .collect();
    assert!(
        duplicates == [1] || duplicates == [3],
        "one of the two is a duplicate: {results:?}"
    );
    for (i, (r, c)) in results.iter().zip(&signals).enumerate() {
        let run = store.load_run(c.run.run_id).await.unwrap().unwrap();
        if duplicates.contains(&i) {
            assert_eq!(
                run,
                stored(&runs[i]),
                "nothing of the duplicate was written"
            );
        } else {
            assert!(r.is_ok(), "{i}: {r:?}");
            assert_eq!(run.next_event_id, c.run.next_event_id, "written whole");
        }
    }
}

/// Closed runs past a cutoff are deleted with their histories, oldest first, a batch at a
/// time; open runs and runs closed after the cutoff are kept.
pub async fn closed_runs_past_retention_are_purged(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let mut runs = Vec::new();
    for (i, close_at) in [Some(T0 + 10), Some(T0 + 20), Some(T0 + 30), None]
        .into_iter()
        .enumerate()
    {
        let c = start(&ns, &format!("kept-{i}"), &q, T0);
        store.commit(&c).await.unwrap();
        if let Some(at) = close_at {
            let run = store.load_run(c.run.run_id).await.unwrap().unwrap();
            store
                .commit(&history::terminate(&run, "done", "t", at).unwrap())
                .await
                .unwrap();
        }
        runs.push(c.run.run_id);
    }
    assert_eq!(store.oldest_closed_run(&ns).await.unwrap(), Some(T0 + 10));
    // Closed before T0 + 25, one per batch: the oldest first.
    assert_eq!(store.purge_closed_runs(&ns, T0 + 25, 1).await.unwrap(), 1);
    assert!(store.load_run(runs[0]).await.unwrap().is_none());
    assert!(store.history(runs[0], 1, 100).await.unwrap().is_empty());
    assert!(store.load_run(runs[1]).await.unwrap().is_some());
    assert_eq!(store.purge_closed_runs(&ns, T0 + 25, 10).await.unwrap(), 1);
    assert!(store.load_run(runs[1]).await.unwrap().is_none());
    assert_eq!(store.purge_closed_runs(&ns, T0 + 25, 10).await.unwrap(), 0);
    // Closed after the cutoff, and open: kept, with their histories.
    assert!(store.load_run(runs[2]).await.unwrap().is_some());
    let open = store.load_run(runs[3]).await.unwrap().unwrap();
    assert!(open.is_open());
    assert_eq!(
        store.history(runs[3], 1, 100).await.unwrap().len() as i64,
        open.next_event_id - 1
    );
    assert_eq!(store.oldest_closed_run(&ns).await.unwrap(), Some(T0 + 30));
    assert_eq!(
        store.purge_closed_runs(&ns, T0 + 1_000, 10).await.unwrap(),
        1
    );
    assert_eq!(store.oldest_closed_run(&ns).await.unwrap(), None);
    assert!(
        store.load_run(runs[3]).await.unwrap().is_some(),
        "never an open run"
    );
}
