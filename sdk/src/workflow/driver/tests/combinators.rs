//! Combinators that poll only the futures that were woken (`join_all` over more than 30
//! futures, `FuturesUnordered`, `select_all`, `buffer_unordered`), and the workflow that
//! awaits something no durable event can wake.

use super::*;
use futures::stream::FuturesUnordered;

/// The result the workflow completed with, decoded.
fn completed<T: serde::de::DeserializeOwned>(h: &Hist) -> T {
    let result = h.events.iter().find_map(|e| match &e.attributes {
        Some(A::WorkflowExecutionCompleted(c)) => c.result.clone(),
        _ => None,
    });
    from_payload(result.as_ref()).expect("the workflow completed")
}

async fn forty_timers(ctx: WorkflowContext, _: ()) -> Result<usize, WorkflowError> {
    let timers = (0..40).map(|i| ctx.sleep(Duration::from_secs(i + 1)));
    Ok(futures::future::join_all(timers).await.len())
}

#[test]
fn join_all_over_forty_timers_completes_when_the_last_fires() {
    let f = erase(forty_timers);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    let started = step(&mut d, &mut h);
    assert_eq!(started.len(), 40);
    assert_eq!(started[39], "StartTimer(id=40)");
    // Half fire in one task, in another order than they were started.
    for i in (1..=20).rev() {
        h.timer_fired(&i.to_string());
    }
    h.wft();
    assert!(step(&mut d, &mut h).is_empty(), "twenty still to fire");
    for i in 21..=40 {
        h.timer_fired(&i.to_string());
    }
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["CompleteWorkflow"]);
    assert_eq!(completed::<usize>(&h), 40);
    replays(f, &h).expect("replays");
}

/// 500 activities through `FuturesUnordered`; the first result to come in names one more
/// activity, so a replay that took them in another order would issue another command.
async fn five_hundred(ctx: WorkflowContext, _: ()) -> Result<u64, WorkflowError> {
    let mut running: FuturesUnordered<_> = (0..500u64)
        .map(|i| ctx.activity_by_name::<_, String>("square", &i, opts()))
        .collect();
    let mut sum = 0;
    let mut first = None;
    while let Some(r) = running.next().await {
        let n: u64 = r?.parse().expect("a number");
        first.get_or_insert(n);
        sum += n;
    }
    let kind = format!("first-{}", first.unwrap_or_default());
    let _: String = ctx.activity_by_name(&kind, &(), opts()).await?;
    Ok(sum)
}

#[test]
fn futures_unordered_over_five_hundred_activities_sums_every_result() {
    let f = erase(five_hundred);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    assert_eq!(step(&mut d, &mut h).len(), 500);
    // Results come back last first, a hundred per workflow task.
    for batch in (0..5).rev() {
        for i in (batch * 100..(batch + 1) * 100).rev() {
            let id = (i + 1).to_string();
            h.activity_done(&id, &(i * i).to_string());
        }
        h.wft();
        let cmds = step(&mut d, &mut h);
        if batch > 0 {
            assert!(cmds.is_empty(), "{cmds:?}");
        } else {
            assert_eq!(cmds, ["ScheduleActivity(id=501, type=first-249001)"]);
        }
    }
    h.activity_done("501", "");
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["CompleteWorkflow"]);
    let expected: u64 = (0..500u64).map(|i| i * i).sum();
    assert_eq!(completed::<u64>(&h), expected);
    replays(f, &h).expect("a replay takes the results in the same order");
}

async fn first_of_three(ctx: WorkflowContext, _: ()) -> Result<(usize, String), WorkflowError> {
    let racers = vec![
        ctx.activity_by_name::<_, String>("a", &(), opts()).boxed(),
        async {
            ctx.sleep(Duration::from_secs(60)).await;
            Ok("timeout".to_owned())
        }
        .boxed(),
        ctx.activity_by_name::<_, String>("c", &(), opts()).boxed(),
    ];
    let (won, index, rest) = futures::future::select_all(racers).await;
    drop(rest);
    Ok((index, won?))
}

#[test]
fn select_all_takes_the_first_ready_and_cancels_the_others() {
    let f = erase(first_of_three);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    assert_eq!(
        step(&mut d, &mut h),
        [
            "ScheduleActivity(id=1, type=a)",
            "StartTimer(id=2)",
            "ScheduleActivity(id=3, type=c)"
        ]
    );
    h.activity_done("3", "C");
    h.wft();
    assert_eq!(
        step(&mut d, &mut h),
        [
            "RequestCancelActivity(id=1)",
            "CancelTimer(id=2)",
            "CompleteWorkflow"
        ]
    );
    assert_eq!(completed::<(usize, String)>(&h), (2, "C".to_owned()));
    replays(f, &h).expect("replays");
}

/// Fifty activities, at most five at a time.
async fn five_at_a_time(ctx: WorkflowContext, _: ()) -> Result<u64, WorkflowError> {
    let results: Vec<Result<String, _>> = futures::stream::iter(0..50u64)
        .map(|i| ctx.activity_by_name::<_, String>("double", &i, opts()))
        .buffer_unordered(5)
        .collect()
        .await;
    let mut sum = 0;
    for r in results {
        sum += r?.parse::<u64>().expect("a number");
    }
    Ok(sum)
}

#[test]
fn buffer_unordered_keeps_five_in_flight_until_all_are_done() {
    let f = erase(five_at_a_time);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    assert_eq!(step(&mut d, &mut h).len(), 5);
    let mut done = 0u64;
    while done < 50 {
        // The oldest in flight completes; one more is scheduled in its place.
        done += 1;
        h.activity_done(&done.to_string(), &((done - 1) * 2).to_string());
        h.wft();
        let cmds = step(&mut d, &mut h);
        if done + 5 <= 50 {
            assert_eq!(
                cmds,
                [format!("ScheduleActivity(id={}, type=double)", done + 5)]
            );
        } else if done < 50 {
            assert!(cmds.is_empty(), "{cmds:?}");
        } else {
            assert_eq!(cmds, ["CompleteWorkflow"]);
        }
    }
    assert_eq!(completed::<u64>(&h), (0..50u64).map(|i| i * 2).sum::<u64>());
    replays(f, &h).expect("replays");
}

/// One branch waits on a channel the other feeds after a timer: the send wakes the waiting
/// branch, which must run in the same workflow task.
async fn handed_over(ctx: WorkflowContext, _: ()) -> Result<u32, WorkflowError> {
    let (tx, rx) = futures::channel::oneshot::channel::<u32>();
    let (got, ()) = futures::join!(async { rx.await.unwrap_or_default() }, async {
        ctx.sleep(Duration::from_secs(1)).await;
        let _ = tx.send(7);
    });
    let _: String = ctx.activity_by_name("after", &got, opts()).await?;
    Ok(got)
}

#[test]
fn a_wake_up_between_branches_is_served_in_the_same_task() {
    let f = erase(handed_over);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    assert_eq!(step(&mut d, &mut h), ["StartTimer(id=1)"]);
    h.timer_fired("1");
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["ScheduleActivity(id=2, type=after)"]);
    h.activity_done("2", "");
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["CompleteWorkflow"]);
    assert_eq!(completed::<u32>(&h), 7);
    replays(f, &h).expect("replays");
}

/// Awaits a timer, then something that is not Martix's and that nothing will ever complete.
async fn stuck_after_a_timer(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    ctx.sleep(Duration::from_secs(1)).await;
    let (_tx, rx) = futures::channel::oneshot::channel::<()>();
    let _ = rx.await;
    Ok(())
}

#[test]
fn a_workflow_blocked_on_nothing_durable_fails_its_task_saying_why() {
    let f = erase(stuck_after_a_timer);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    assert_eq!(
        step(&mut d, &mut h),
        ["StartTimer(id=1)"],
        "waiting on a timer is fine"
    );
    h.timer_fired("1");
    h.wft();
    d.apply_history(&h.events).unwrap();
    let err = d.activate_live().unwrap_err();
    assert!(
        matches!(err, ActivationError::BlockedOnNothingDurable),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("blocked on nothing durable"), "{msg}");
    assert!(
        msg.contains("tokio::time::sleep"),
        "names the usual culprit: {msg}"
    );
    // A replay of what was recorded is not a live decision: it is not judged.
    replays(f, &h).expect("replays");
}

/// Waits only for a signal or for cancellation: durable, however long it takes.
async fn waits_for_the_engine(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    let mut go = ctx.signal_by_name::<String>("go");
    let mut cancelled = ctx.cancelled();
    futures::select! {
        s = go.next() => Ok(s.expect("signals never end")?),
        () = cancelled => Err(WorkflowError::Canceled),
    }
}

#[test]
fn waiting_only_for_a_signal_or_cancellation_is_not_blocked() {
    let f = erase(waits_for_the_engine);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    assert!(step(&mut d, &mut h).is_empty());
    h.signal("other", "x");
    h.wft();
    assert!(
        step(&mut d, &mut h).is_empty(),
        "another signal wakes nothing"
    );
    h.signal("go", "now");
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["CompleteWorkflow"]);
    assert_eq!(completed::<String>(&h), "now");
    replays(f.clone(), &h).expect("replays");

    let mut d = driver(f);
    let mut h = Hist::start("");
    assert!(step(&mut d, &mut h).is_empty());
    h.push(A::WorkflowExecutionCancelRequested(Default::default()));
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["CancelWorkflow"]);
}

async fn busy(_ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    std::future::poll_fn(|cx| {
        cx.waker().wake_by_ref();
        std::task::Poll::<()>::Pending
    })
    .await;
    Ok(())
}

#[test]
fn a_workflow_that_never_stops_waking_itself_fails_its_task() {
    let mut d = driver(erase(busy));
    let h = Hist::start("");
    d.apply_history(&h.events).unwrap();
    match d.activate_live() {
        Err(ActivationError::Spinning(n)) => assert_eq!(n, MAX_POLLS_PER_ACTIVATION),
        other => panic!("{other:?}"),
    }
}
