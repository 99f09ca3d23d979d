//! `TestEnv` (feature `testing`): a month-long durable sleep completes at once on the skipped
//! clock, the workflow sees the skipped time, and the run replays.

use martix_sdk::testing::TestEnv;
use martix_sdk::{
    Activity, ActivityError, Replayer, StartOptions, Workflow, WorkflowContext, WorkflowError,
};
use std::time::{Duration, Instant, SystemTime};

const MONTH: Duration = Duration::from_secs(30 * 24 * 3600);

struct Remind;
impl Activity for Remind {
    const NAME: &'static str = "remind";
    type Input = String;
    type Output = String;
}

struct Renewal;
impl Workflow for Renewal {
    const NAME: &'static str = "renewal";
    type Input = String;
    type Output = (String, u64);
}

/// Sleeps a month, then reminds the customer; returns the reminder and how many days the
/// workflow saw pass.
async fn renewal(ctx: WorkflowContext, customer: String) -> Result<(String, u64), WorkflowError> {
    let before = ctx.now();
    ctx.sleep(MONTH).await;
    let days = ctx
        .now()
        .duration_since(before)
        .unwrap_or_default()
        .as_secs()
        / 86_400;
    Ok((ctx.activity(Remind, &customer).await?, days))
}

#[tokio::test]
async fn a_month_long_sleep_completes_at_once_on_the_skipped_clock() {
    let began = Instant::now();
    let env = TestEnv::start().await.expect("start the test environment");
    let mut worker = env.worker("renewals");
    worker
        .workflow(Renewal, renewal)
        .activity(Remind, |_ctx, customer: String| async move {
            Ok::<_, ActivityError>(format!("reminded {customer}"))
        });
    env.run(worker);

    let wall_before = SystemTime::now();
    let run = env
        .client()
        .start(
            Renewal,
            StartOptions::for_id("renewal-1", "renewals"),
            &"ada".to_owned(),
        )
        .await
        .expect("start");
    env.sleep(MONTH).await;
    let (reminder, days) = run.result::<(String, u64)>().await.expect("result");
    assert_eq!(reminder, "reminded ada");
    assert_eq!(days, 30, "the workflow sees the month pass");
    let skipped = env.now().duration_since(wall_before).expect("after");
    assert!(
        skipped >= MONTH,
        "the environment's clock moved a month: {skipped:?}"
    );

    let mut replayer = Replayer::new();
    replayer.workflow(Renewal, renewal);
    env.assert_replays(&replayer, &run).await;
    println!(
        "a month-long sleep, run and replayed in {:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn a_sleep_shorter_than_the_timer_leaves_it_waiting() {
    let env = TestEnv::start().await.expect("start the test environment");
    let mut worker = env.worker("renewals");
    worker
        .workflow(Renewal, renewal)
        .activity(Remind, |_ctx, customer: String| async move {
            Ok::<_, ActivityError>(format!("reminded {customer}"))
        });
    env.run(worker);
    let run = env
        .client()
        .start(
            Renewal,
            StartOptions::for_id("renewal-2", "renewals"),
            &"bob".to_owned(),
        )
        .await
        .expect("start");
    env.sleep(MONTH - Duration::from_secs(3600)).await;
    let description = run.describe().await.expect("describe");
    assert_eq!(description.pending_timers.len(), 1, "still waiting");
    env.sleep(Duration::from_secs(3600)).await;
    let (reminder, _) = run.result::<(String, u64)>().await.expect("result");
    assert_eq!(reminder, "reminded bob");
}
