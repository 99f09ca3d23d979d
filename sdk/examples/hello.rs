//! A workflow, an activity, a worker and a client in one program.
//!
//! Start the engine in one terminal (`cargo run --release -- dev`), then:
//! `cargo run -p martix-sdk --example hello -- world`

use martix_sdk::{
    Activity, ActivityContext, ActivityError, ActivityOptions, Client, StartOptions, Worker,
    WorkerOptions, Workflow, WorkflowContext, WorkflowError,
};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Composes a greeting: takes a name, gives the greeting back.
struct Compose;
impl Activity for Compose {
    const NAME: &'static str = "compose";
    type Input = String;
    type Output = String;
    fn options() -> ActivityOptions {
        ActivityOptions::new(Duration::from_secs(5))
    }
}

/// Greets someone, durably: the greeting is composed by an activity, then the workflow sleeps
/// on a durable timer before answering.
struct Greet;
impl Workflow for Greet {
    const NAME: &'static str = "greet";
    type Input = String;
    type Output = String;
}

async fn greet(ctx: WorkflowContext, name: String) -> Result<String, WorkflowError> {
    let greeting = ctx.activity(Compose, &name).await?;
    ctx.sleep(Duration::from_millis(500)).await;
    Ok(greeting)
}

async fn compose(ctx: ActivityContext, name: String) -> Result<String, ActivityError> {
    Ok(format!("hello, {name} (attempt {})", ctx.attempt()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint =
        std::env::var("MARTIX_ADDRESS").unwrap_or_else(|_| "http://127.0.0.1:7233".into());
    let name = std::env::args().nth(1).unwrap_or_else(|| "world".into());

    let mut worker = Worker::new(&endpoint, WorkerOptions::new("hello"))?;
    worker.workflow(Greet, greet).activity(Compose, compose);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));

    let client = Client::connect(endpoint).await?;
    let id = format!("greet-{name}-{}", uuid::Uuid::new_v4().simple());
    let run = client
        .start(Greet, StartOptions::for_id(&id, "hello"), &name)
        .await?;
    let greeting: String = run.result().await?;
    println!("{greeting}  (workflow {id})");

    shutdown.cancel();
    running.await?;
    Ok(())
}
