//! The order worker: the order saga and its activities on a task queue.

use anyhow::{Context, Result};
use martix_activities::{Backend, BreakerSettings, Faults, OrderActivities, ReferenceAdapters};
use martix_sdk::{Worker, WorkerOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Which adapters the activities use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Adapters {
    /// The reference inventory, ledger, shipper and notifications in the database.
    Reference,
    /// No I/O: every step answers at once (for benchmarks of the engine).
    Noop,
}

/// Builds the order activities: reference adapters on `database_url`, RabbitMQ if `amqp_url`.
pub(crate) async fn activities(
    adapters: Adapters,
    database_url: Option<&str>,
    amqp_url: Option<&str>,
) -> Result<(Arc<OrderActivities>, Option<ReferenceAdapters>)> {
    let notifier = match amqp_url {
        Some(url) => Some(
            martix_activities::notify::AmqpNotifier::connect(url)
                .await
                .context("connecting to RabbitMQ (MARTIX_AMQP_URL)")?,
        ),
        None => None,
    };
    let (backend, reference) = match adapters {
        Adapters::Noop => (Backend::noop(), None),
        Adapters::Reference => {
            let url = database_url
                .context("the reference adapters need --database-url (or use --adapters noop)")?;
            let r = ReferenceAdapters::connect(url)
                .await
                .context("opening the reference adapters' database")?;
            (Backend::reference(r.clone(), notifier), Some(r))
        }
    };
    let activities = OrderActivities::new(backend, Faults::from_env(), BreakerSettings::default());
    Ok((activities, reference))
}

/// Runs the order worker until `shutdown`.
pub(crate) async fn run_worker(
    address: &str,
    connection: &martix_sdk::ConnectOptions,
    task_queue: &str,
    activities: Arc<OrderActivities>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut worker = Worker::connect_with(address, connection, WorkerOptions::new(task_queue))?;
    worker.workflow(martix_workflows::OrderSaga, martix_workflows::order);
    activities.register(&mut worker);
    tokio::spawn(report_breakers(
        activities.breakers().clone(),
        worker.breaker_reporter(),
        shutdown.clone(),
    ));
    worker.run(shutdown).await;
    Ok(())
}

/// Reports the breakers' states to the engine when one changes (and every minute, so an engine
/// that lost them learns them again) until `stop`; a report that fails is sent again.
async fn report_breakers(
    registry: martix_activities::breaker::BreakerRegistry,
    reporter: martix_sdk::BreakerReporter,
    stop: CancellationToken,
) {
    loop {
        let states: Vec<(String, martix_sdk::BreakerState)> = registry
            .snapshot()
            .into_iter()
            .map(|(adapter, (state, _))| (adapter.to_owned(), state))
            .collect();
        let wait = if states.is_empty() {
            Duration::from_secs(60)
        } else {
            match reporter.report(&states).await {
                Ok(()) => Duration::from_secs(60),
                Err(e) => {
                    tracing::debug!(error = %e, "breaker report not delivered; sending again");
                    Duration::from_secs(1)
                }
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = registry.changed() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
