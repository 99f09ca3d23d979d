//! Schedules through the SDK's own types (feature `testing`): created, described, listed,
//! acted on when the skipped clock passes a time, paused, resumed, triggered, backfilled and
//! deleted, each run started with the input the action was given.

use martix_sdk::schedule::{
    Schedule, ScheduleAction, ScheduleOverlap, ScheduleSpec, ScheduleTimes,
};
use martix_sdk::testing::TestEnv;
use martix_sdk::{ClientError, ListOptions, Workflow, WorkflowContext, WorkflowError};
use std::time::{Duration, UNIX_EPOCH};

const HOUR: Duration = Duration::from_secs(3600);

struct Tally;
impl Workflow for Tally {
    const NAME: &'static str = "tally";
    type Input = Vec<u32>;
    type Output = u32;
}

async fn tally(_ctx: WorkflowContext, input: Vec<u32>) -> Result<u32, WorkflowError> {
    Ok(input.iter().sum())
}

#[tokio::test]
async fn a_schedule_made_with_the_sdks_types_starts_its_workflow_and_obeys_its_operator() {
    let env = TestEnv::start().await.expect("start the test environment");
    let mut worker = env.worker("tallies");
    worker.workflow(Tally, tally);
    env.run(worker);
    let client = env.client();

    let schedule = Schedule::new(
        ScheduleSpec::every(HOUR),
        ScheduleAction::start(Tally, "tallies", &vec![1, 2, 3]).unwrap(),
    )
    .overlap(ScheduleOverlap::AllowAll);
    client.create_schedule("hourly", schedule).await.unwrap();
    let refused = client
        .create_schedule(
            "hourly",
            Schedule::new(
                ScheduleSpec::every(HOUR),
                ScheduleAction::start(Tally, "tallies", &vec![]).unwrap(),
            ),
        )
        .await;
    assert!(
        matches!(&refused, Err(ClientError::Status(s)) if s.code() == tonic::Code::AlreadyExists),
        "{refused:?}"
    );

    let d = client.describe_schedule("hourly").await.unwrap();
    assert_eq!(d.schedule.spec.times, ScheduleTimes::Every(HOUR));
    assert_eq!(d.schedule.overlap, ScheduleOverlap::AllowAll);
    assert_eq!(d.schedule.action.workflow_type, "tally");
    assert_eq!(d.schedule.action.input::<Vec<u32>>().unwrap(), [1, 2, 3]);
    assert_eq!(d.started, 0);
    let next = d.next_times[0];
    let since_epoch = next.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(since_epoch % 3600, 0, "on the hour");
    assert!(next > env.now() && next <= env.now() + HOUR);

    let listed = client.list_schedules().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].schedule_id, "hourly");
    assert_eq!(listed[0].next_time, Some(next));

    // The skipped clock passes one time: one run, which completes with the action's input.
    env.sleep(HOUR).await;
    let d = client.describe_schedule("hourly").await.unwrap();
    assert_eq!(d.started, 1, "{:?}", d.recent_actions);
    let run = d.recent_actions[0].run.clone().expect("a run was started");
    assert_eq!(d.recent_actions[0].scheduled_time, Some(next));
    let result: u32 = client
        .handle(run.workflow_id.clone())
        .result()
        .await
        .unwrap();
    assert_eq!(result, 6);

    // Paused, it acts on nothing; resumed, trigger and backfill start runs.
    client.pause_schedule("hourly", "audit").await.unwrap();
    let d = client.describe_schedule("hourly").await.unwrap();
    assert!(d.schedule.paused && d.next_times.is_empty());
    assert_eq!(d.schedule.note, "audit");
    env.sleep(HOUR).await;
    assert_eq!(client.describe_schedule("hourly").await.unwrap().started, 1);
    client
        .resume_schedule("hourly", "audit done")
        .await
        .unwrap();
    let triggered = client.trigger_schedule("hourly").await.unwrap();
    assert_eq!(triggered.len(), 1);
    assert!(triggered[0].run.is_some(), "{triggered:?}");
    let backfilled = client
        .backfill_schedule("hourly", next + 24 * HOUR, next + 26 * HOUR)
        .await
        .unwrap();
    assert_eq!(
        backfilled.len(),
        3,
        "three whole hours in the range: {backfilled:?}"
    );
    env.sleep(Duration::from_secs(1)).await;
    let runs = client
        .list_all_workflows(&ListOptions::default().workflow_id_prefix("hourly-"))
        .await
        .unwrap();
    assert_eq!(runs.len(), 5, "one time, a trigger and three backfilled");

    client.delete_schedule("hourly").await.unwrap();
    assert!(client.list_schedules().await.unwrap().is_empty());
    assert!(client.describe_schedule("hourly").await.is_err());
}
