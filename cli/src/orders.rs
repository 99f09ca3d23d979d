//! The order worker: the order saga and its activities on a task queue.

use anyhow::{Context, Result};
use martix_activities::{Backend, BreakerSettings, Faults, OrderActivities, ReferenceAdapters};
use martix_sdk::{Worker, WorkerOptions};
use std::sync::Arc;
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
    activities.set_closed_catalog(closed_catalog()?);
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
    worker.workflow(
        martix_workflows::ReconcilePaymentsWorkflow,
        martix_workflows::reconcile_payments,
    );
    activities.register(&mut worker);
    let stop = shutdown.clone();
    tokio::spawn(
        activities
            .breakers()
            .clone()
            .report_to(worker.breaker_reporter(), async move {
                stop.cancelled().await;
            }),
    );
    worker.run(shutdown).await;
    Ok(())
}

/// `MARTIX_CATALOG`: `open` (the default: an item of a SKU the catalogue does not list keeps
/// the client's price) or `closed` (it is refused).
fn closed_catalog() -> Result<bool> {
    match std::env::var("MARTIX_CATALOG").as_deref() {
        Err(_) | Ok("open") => Ok(false),
        Ok("closed") => Ok(true),
        Ok(other) => anyhow::bail!("MARTIX_CATALOG is '{other}'; it must be open or closed"),
    }
}
