//! Business events after they are committed: the relay that sends the outbox to RabbitMQ,
//! the projection host that folds it into the read models domains register, the purge of what
//! was sent, the rebuild of the read models from the histories, and inbound messages that
//! become signals.
//!
//! One loop per node does the outbound work. It leases outbox shards (a subject's events are
//! all in one shard, so one node at a time sends them, in order) and, for its shards, folds
//! new events into the projections and publishes unsent ones with publisher confirms, marking
//! them sent only once the broker confirmed. A crash between the confirm and the mark sends a
//! row again: delivery is at least once, with the same message id and body.

pub mod inbound;
pub mod projection;

pub use projection::{Pools, Projection, ProjectionError, ProjectionTx, Projections};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::ids::{Namespace, WorkflowType};
use crate::store::events::StoredEvent;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use martix_proto::v1 as pb;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The topic exchange events are published to; the routing key is the event type.
pub const EXCHANGE: &str = "martix.events";

/// Outbox rows one purge pass deletes from each shard at most.
const PURGE_BATCH: usize = 10_000;

/// How the node handles events.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EventsConfig {
    /// RabbitMQ to publish to (`MARTIX_AMQP_URL`); `None`: events stay in the outbox.
    pub amqp_url: Option<String>,
    /// A queue whose messages become signals (`--consume-queue`).
    pub consume_queue: Option<String>,
    /// What the consumer of that queue may do.
    pub inbound: inbound::InboundRules,
    /// Outbox rows sent and folded that occurred longer ago than this (and signal request ids
    /// older than it) are purged.
    pub retention: Duration,
    /// How long a node holds a shard without renewing.
    pub shard_lease: Duration,
    /// Most events sent or folded per round.
    pub batch: usize,
    /// How long the relay waits after a commit wrote events before it works, so that one
    /// round takes the events of many commits.
    pub linger: Duration,
    /// A domain's own name for the subject in the published document, by workflow type
    /// (for example `("renewal", "renewal_id")`): the envelope carries it beside `subject`.
    pub subject_names: Vec<(String, String)>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            amqp_url: None,
            consume_queue: None,
            inbound: inbound::InboundRules::default(),
            retention: Duration::from_secs(7 * 24 * 3600),
            shard_lease: Duration::from_secs(10),
            batch: 1024,
            linger: Duration::from_millis(50),
            subject_names: Vec::new(),
        }
    }
}

/// The JSON document an event is published as (and shown by `martix events tail`):
/// `subject` is the workflow id that published it, also under the domain's own name for it
/// when `subject_names` has one for its workflow type.
pub fn envelope(e: &StoredEvent, subject_names: &[(String, String)]) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "id": e.event_id,
        "type": e.event_type,
        "namespace": e.namespace,
        "subject": e.subject,
        "workflow_type": e.workflow_type,
        "run_id": e.run_id,
        "sequence": e.sequence,
        "time": crate::clock::rfc3339(e.occurred_at),
        "data": serde_json::from_str::<serde_json::Value>(&e.body).unwrap_or(serde_json::Value::Null),
    });
    if let Some((_, name)) = subject_names.iter().find(|(t, _)| *t == e.workflow_type) {
        doc[name.as_str()] = serde_json::Value::String(e.subject.clone());
    }
    doc
}

/// A channel to RabbitMQ with publisher confirms and the exchange declared.
struct Link {
    _conn: Connection,
    channel: Channel,
}

async fn connect(url: &str) -> Result<Link, lapin::Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(Link {
        _conn: conn,
        channel,
    })
}

/// Publishes `events` in order, pipelined, and returns how many the broker confirmed: the
/// longest confirmed prefix (a later event of a subject is never marked sent before an earlier
/// one) and the error that ended it, if any.
async fn publish(
    link: &Link,
    events: &[StoredEvent],
    subject_names: &[(String, String)],
) -> (usize, Option<String>) {
    let mut confirms = Vec::with_capacity(events.len());
    let mut error = None;
    for e in events {
        let body = envelope(e, subject_names).to_string();
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(e.event_id.as_str().into())
            .with_type(e.event_type.as_str().into())
            .with_content_type("application/json".into())
            .with_timestamp((e.occurred_at / 1000).max(0) as u64);
        match link
            .channel
            .basic_publish(
                EXCHANGE.into(),
                e.event_type.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await
        {
            Ok(c) => confirms.push(c),
            Err(err) => {
                error = Some(err.to_string());
                break;
            }
        }
    }
    let mut sent = 0;
    for confirm in confirms {
        match confirm.await {
            Ok(c) if c.is_ack() => {
                if error.is_none() {
                    sent += 1;
                }
            }
            Ok(_) => {
                error.get_or_insert_with(|| "the broker refused a message (nack)".into());
            }
            Err(err) => {
                error.get_or_insert_with(|| err.to_string());
            }
        }
    }
    (sent, error)
}

/// The outbound loop of one node, until `stop`: folds into `projections`, sends to RabbitMQ.
pub async fn run_relay(
    engine: Arc<Engine>,
    config: EventsConfig,
    projections: Projections,
    stop: CancellationToken,
) {
    let store = engine.store().clone();
    let owner = format!("node-{}", uuid::Uuid::new_v4().simple());
    let lease_ms = config.shard_lease.as_millis() as i64;
    let mut link: Option<Link> = None;
    let mut backoff = Duration::from_millis(200);
    let mut next_connect = tokio::time::Instant::now();
    let mut next_purge = tokio::time::Instant::now();
    let mut shards = Vec::new();
    let mut leased_at = tokio::time::Instant::now() - config.shard_lease;
    loop {
        if stop.is_cancelled() {
            break;
        }
        let mut busy = false;
        let now = tokio::time::Instant::now();
        if now.duration_since(leased_at) >= config.shard_lease / 3 {
            match store.lease_shards(&owner, engine.now(), lease_ms).await {
                Ok(s) => {
                    shards = s;
                    leased_at = now;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot lease outbox shards");
                    shards.clear();
                }
            }
        }
        // The read models first: they need no broker.
        match store.unprojected_events(&shards, config.batch).await {
            Ok(events) if !events.is_empty() => {
                busy |= events.len() == config.batch;
                let lag = engine.now() - events[0].occurred_at;
                engine.metrics().projection_lag(lag);
                match store.project(&events, &projections).await {
                    Ok(()) => engine.metrics().projected(events.len()),
                    // A rebuild set the cursors back meanwhile: read again from them.
                    Err(crate::store::StoreError::CursorMoved) => busy = true,
                    Err(e) => {
                        // One event a read model cannot take must not hold up the others:
                        // fold them one at a time, and set aside (logged) the one that fails
                        // for a reason other than the database being away.
                        tracing::warn!(error = %e, "projection failed; folding one by one");
                        for event in &events {
                            match store
                                .project(std::slice::from_ref(event), &projections)
                                .await
                            {
                                Ok(()) => engine.metrics().projected(1),
                                Err(crate::store::StoreError::Unavailable(why)) => {
                                    tracing::warn!(error = %why, "projection paused");
                                    break;
                                }
                                Err(crate::store::StoreError::CursorMoved) => {
                                    busy = true;
                                    break;
                                }
                                Err(e) => {
                                    tracing::error!(
                                        event_id = %event.event_id, error = %e,
                                        "event set aside: a read model cannot fold it"
                                    );
                                    let _ = store.set_aside(std::slice::from_ref(event)).await;
                                }
                            }
                        }
                    }
                }
            }
            Ok(_) => engine.metrics().projection_lag(0),
            Err(e) => tracing::warn!(error = %e, "cannot read the outbox"),
        }
        if let Some(url) = &config.amqp_url {
            if link.is_none() && tokio::time::Instant::now() >= next_connect {
                let connected = tokio::time::timeout(Duration::from_secs(5), connect(url))
                    .await
                    .unwrap_or_else(|_| {
                        Err(lapin::Error::from(
                            lapin::ErrorKind::InvalidConnectionState(
                                lapin::ConnectionState::Closed,
                            ),
                        ))
                    });
                match connected {
                    Ok(l) => {
                        tracing::info!("event relay connected to RabbitMQ");
                        link = Some(l);
                        backoff = Duration::from_millis(200);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "RabbitMQ unreachable; events wait in the outbox");
                        next_connect = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            // Only while the shards are surely still ours: a node that stalled past its lease
            // must not send what another node may be sending now.
            let fenced = leased_at.elapsed() >= config.shard_lease / 2;
            if let (Some(l), false) = (&link, fenced) {
                match store.unsent_events(&shards, config.batch).await {
                    Ok(events) if !events.is_empty() => {
                        let (sent, error) = match tokio::time::timeout(
                            config.shard_lease / 3,
                            publish(l, &events, &config.subject_names),
                        )
                        .await
                        {
                            Ok(r) => r,
                            Err(_) => (0, Some("the broker did not confirm in time".into())),
                        };
                        if sent > 0 {
                            match store.mark_sent(&events[..sent]).await {
                                Ok(()) => engine.metrics().events_sent(sent),
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot mark events sent; they will be sent again")
                                }
                            }
                        }
                        busy |= sent == config.batch;
                        if let Some(e) = error {
                            tracing::warn!(error = %e, "publishing failed; reconnecting");
                            link = None;
                            next_connect = tokio::time::Instant::now() + backoff;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot read the outbox"),
                }
            }
        }
        if tokio::time::Instant::now() >= next_purge {
            let before = engine.now() - config.retention.as_millis() as i64;
            // Without a broker nothing is ever sent: what the read models folded goes. (Every
            // node of a database must agree on whether there is a broker.)
            let sent_required = config.amqp_url.is_some();
            // A pass takes at most `PURGE_BATCH` rows a shard; one that took a full batch
            // comes again a second later, so the purge keeps up with any steady rate of
            // events (a pass a minute of 10,000 rows a shard fell behind 5,000 events/s).
            let mut again = Duration::from_secs(60);
            match store.purge_events(before, PURGE_BATCH, sent_required).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(rows = n, "purged events past retention");
                    if n as usize >= PURGE_BATCH {
                        again = Duration::from_secs(1);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "outbox purge failed"),
            }
            next_purge = tokio::time::Instant::now() + again;
        }
        if !busy {
            tokio::select! {
                () = stop.cancelled() => break,
                () = engine.outbox_wake.notified() => {
                    // Let the events of concurrent commits gather: one fold and one publish
                    // round for many, off the commits' path.
                    tokio::time::sleep(config.linger).await;
                }
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
    let _ = store.release_shards(&owner).await;
}

/// Every business event the histories hold that one of `projections` takes, for a rebuild.
pub async fn events_from_histories(
    engine: &Engine,
    projections: &[Arc<dyn Projection>],
) -> Result<Vec<StoredEvent>, EngineError> {
    let store = engine.store();
    // The workflow types whose histories to read: those the projections name, or every type
    // if one of them names none.
    let mut types: Vec<Option<WorkflowType>> = Vec::new();
    for p in projections {
        match p.workflow_types() {
            [] => {
                types = vec![None];
                break;
            }
            named => {
                for t in named {
                    let t = WorkflowType::parse(t).map_err(|e| {
                        EngineError::Internal(format!("projection '{}': {e}", p.name()))
                    })?;
                    types.push(Some(t));
                }
            }
        }
    }
    types.sort();
    types.dedup();
    let mut out = Vec::new();
    let mut scans = Vec::new();
    for ns in store.list_namespaces().await? {
        let ns = Namespace::parse(&ns)
            .map_err(|e| EngineError::Internal(format!("stored namespace: {e}")))?;
        for t in &types {
            scans.push((ns.clone(), t.clone()));
        }
    }
    for (ns, workflow_type) in scans {
        let mut after = None;
        loop {
            let runs = store
                .list_runs(&crate::store::ListQuery {
                    workflow_type: workflow_type.clone(),
                    after: after.clone(),
                    ..crate::store::ListQuery::new(ns.clone(), 500)
                })
                .await?;
            let Some(last) = runs.last() else { break };
            after = Some(crate::store::ListAfter {
                start_time: last.start_time,
                run_id: last.run_id.to_text(),
            });
            for run in &runs {
                let mut from = 1;
                loop {
                    let page = store.history(run.run_id, from, 1000).await?;
                    let Some(last) = page.last() else { break };
                    from = last.event_id + 1;
                    for ev in &page {
                        if let Some(pb::history_event::Attributes::EventPublished(p)) =
                            &ev.attributes
                        {
                            let event = StoredEvent {
                                position: 0,
                                xact: 0,
                                shard: crate::store::events::shard_of(
                                    &run.namespace,
                                    &run.workflow_id,
                                ),
                                event_id: p.event_id.clone(),
                                namespace: run.namespace.to_string(),
                                subject: run.workflow_id.to_string(),
                                workflow_type: run.workflow_type.to_string(),
                                run_id: p.event_id.split('/').next().unwrap_or_default().into(),
                                sequence: p.sequence,
                                event_type: p.event_type.clone(),
                                occurred_at: ev
                                    .event_time
                                    .as_ref()
                                    .map_or(0, crate::clock::from_timestamp),
                                body: String::from_utf8_lossy(
                                    &p.body.as_ref().map(|b| b.data.clone()).unwrap_or_default(),
                                )
                                .into_owned(),
                                sent: false,
                            };
                            if projections.iter().any(|p| p.takes(&event)) {
                                out.push(event);
                            }
                        }
                    }
                    if page.len() < 1000 {
                        break;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Rebuilds `projections` from the histories; returns how many events they folded.
pub async fn rebuild(
    engine: &Engine,
    projections: &[Arc<dyn Projection>],
) -> Result<usize, EngineError> {
    let mut events = events_from_histories(engine, projections).await?;
    projection::rebuild_order(&mut events);
    engine
        .store()
        .rebuild_projections(projections, &events)
        .await?;
    Ok(events.len())
}
