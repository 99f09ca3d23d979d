//! Inbound messages: a RabbitMQ queue whose messages become signals.
//!
//! A message is acknowledged only after its signal is committed, and the signal carries the
//! message id as its request id, so a redelivered message signals once. A message that cannot
//! be turned into a signal (not JSON, no message id, no such workflow, ...) is copied to the
//! dead-letter queue `<queue>.dead` with the reason in header `x-martix-error`, then
//! acknowledged: never lost, never retried forever. When the engine cannot commit (database
//! down), the message is returned to the queue and the consumer backs off.
//!
//! The message shapes (content type JSON; the AMQP `message_id` property is required):
//! - a signal: `{"namespace": "default", "workflow_id": "...", "signal": "name", "input": <any
//!   JSON>}`; add `"start": {"workflow_type": "...", "task_queue": "...", "input": <any
//!   JSON>}` for signal-with-start (the run is started if none is open);
//! - a domain's own shapes: a [`Translator`] the domain registered turns a message of a type
//!   it knows (AMQP type or routing key) into one of the above.

use crate::engine::Engine;
use crate::error::EngineError;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use martix_proto::v1 as pb;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A message turned into the request it asks for.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    Signal(pb::SignalWorkflowRequest),
    SignalWithStart(pb::SignalWithStartWorkflowRequest),
}

/// A domain's own message shapes: turns a message of a type it knows into a request.
pub trait Translator: Send + Sync + 'static {
    /// The request `body` (a JSON object) of type `kind` asks for, or why it is malformed;
    /// `None` if `kind` is not a type of this domain. `message_id` is the request id to signal
    /// with, `namespace` the body's (or `default`).
    fn translate(
        &self,
        message_id: &str,
        kind: &str,
        namespace: &str,
        body: &serde_json::Value,
    ) -> Option<Result<Inbound, String>>;
}

/// The translators a consumer applies, in registration order.
pub type Translators = Arc<[Arc<dyn Translator>]>;

/// A JSON value as a payload.
pub fn json_payload(v: &serde_json::Value) -> pb::Payload {
    pb::Payload {
        encoding: "json/plain".into(),
        data: v.to_string().into_bytes(),
    }
}

/// A non-empty string field of `body`, or why not.
pub fn field<'a>(body: &'a serde_json::Value, name: &str) -> Result<&'a str, String> {
    match body.get(name) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(format!("field '{name}' must be a non-empty string")),
        None => Err(format!("field '{name}' is missing")),
    }
}

/// Parses one message: its id, its type (AMQP `type` or routing key) and its body, trying the
/// domains' `translators` before the generic shapes.
pub fn parse(
    message_id: Option<&str>,
    kind: &str,
    body: &[u8],
    translators: &[Arc<dyn Translator>],
) -> Result<Inbound, String> {
    let message_id = match message_id {
        Some(id) if !id.is_empty() && id.len() <= 255 => id.to_owned(),
        Some(_) => return Err("the message id must be 1 to 255 bytes".into()),
        None => {
            return Err("the message has no message_id property (needed to signal once)".into());
        }
    };
    let body: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    if !body.is_object() {
        return Err("the body must be a JSON object".into());
    }
    let namespace = match body.get("namespace") {
        None => "default".to_owned(),
        Some(_) => field(&body, "namespace")?.to_owned(),
    };
    if let Some(r) = translators
        .iter()
        .find_map(|t| t.translate(&message_id, kind, &namespace, &body))
    {
        return r;
    }
    let workflow_id = field(&body, "workflow_id")?.to_owned();
    let signal = field(&body, "signal")?.to_owned();
    let input = body.get("input").map(json_payload);
    match body.get("start") {
        None => Ok(Inbound::Signal(pb::SignalWorkflowRequest {
            namespace,
            execution: Some(pb::WorkflowExecution {
                workflow_id,
                run_id: String::new(),
            }),
            signal_name: signal,
            input,
            identity: "amqp".into(),
            request_id: message_id,
        })),
        Some(start) if start.is_object() => Ok(Inbound::SignalWithStart(
            pb::SignalWithStartWorkflowRequest {
                start: Some(pb::StartWorkflowRequest {
                    namespace,
                    workflow_id,
                    workflow_type: field(start, "workflow_type")?.to_owned(),
                    task_queue: field(start, "task_queue")?.to_owned(),
                    input: start.get("input").map(json_payload),
                    identity: "amqp".into(),
                    ..Default::default()
                }),
                signal_name: signal,
                signal_input: input,
                request_id: message_id,
            },
        )),
        Some(_) => Err("field 'start' must be an object".into()),
    }
}

/// What became of one message.
enum Outcome {
    Done,
    /// Cannot ever succeed: to the dead-letter queue, with the reason.
    Dead(String),
    /// May succeed later (the engine is unavailable).
    Later(String),
}

async fn handle(engine: &Engine, translators: &[Arc<dyn Translator>], d: &Delivery) -> Outcome {
    let kind = d
        .properties
        .kind()
        .as_ref()
        .map(|k| k.as_str().to_owned())
        .unwrap_or_else(|| d.routing_key.as_str().to_owned());
    let id = d
        .properties
        .message_id()
        .as_ref()
        .map(|m| m.as_str().to_owned());
    let request = match parse(id.as_deref(), &kind, &d.data, translators) {
        Ok(r) => r,
        Err(why) => return Outcome::Dead(why),
    };
    let result = match request {
        Inbound::Signal(r) => engine.signal_workflow(r).await.map(drop),
        Inbound::SignalWithStart(r) => engine.signal_with_start_workflow(r).await.map(drop),
    };
    match result {
        Ok(()) => Outcome::Done,
        Err(e @ (EngineError::Unavailable(_) | EngineError::Internal(_))) => {
            Outcome::Later(e.to_string())
        }
        Err(e) => Outcome::Dead(e.to_string()),
    }
}

/// Consumes `queue` until `stop`, reconnecting with backoff.
pub async fn run(
    engine: Arc<Engine>,
    translators: Translators,
    url: String,
    queue: String,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match consume(&engine, &translators, &url, &queue, &stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, queue = %queue, retry_in = ?backoff, "inbound consumer stopped; reconnecting");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The dead-letter queue of `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

async fn consume(
    engine: &Engine,
    translators: &[Arc<dyn Translator>],
    url: &str,
    queue: &str,
    stop: &CancellationToken,
) -> Result<(), lapin::Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel.basic_qos(64, BasicQosOptions::default()).await?;
    let dead = dead_letter_queue(queue);
    for q in [queue, dead.as_str()] {
        channel
            .queue_declare(
                q.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
    }
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "martix-inbound".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue, "consuming inbound messages");
    loop {
        let delivery = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            d = consumer.next() => d,
        };
        let Some(delivery) = delivery else {
            return Err(lapin::Error::from(
                lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed),
            ));
        };
        let d = delivery?;
        match handle(engine, translators, &d).await {
            Outcome::Done => {
                d.ack(BasicAckOptions::default()).await?;
            }
            Outcome::Dead(why) => {
                tracing::warn!(reason = %why, "inbound message dead-lettered");
                let mut headers = d.properties.headers().clone().unwrap_or_default();
                headers.insert(
                    ShortString::from("x-martix-error"),
                    AMQPValue::LongString(why.as_str().into()),
                );
                headers.insert(
                    ShortString::from("x-martix-original-routing-key"),
                    AMQPValue::LongString(d.routing_key.as_str().into()),
                );
                let props: BasicProperties = d
                    .properties
                    .clone()
                    .with_headers(headers)
                    .with_delivery_mode(2);
                let confirm = channel
                    .basic_publish(
                        "".into(),
                        dead.as_str().into(),
                        BasicPublishOptions::default(),
                        &d.data,
                        props,
                    )
                    .await?
                    .await?;
                if confirm.is_ack() {
                    d.ack(BasicAckOptions::default()).await?;
                } else {
                    d.nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await?;
                }
            }
            Outcome::Later(why) => {
                tracing::warn!(reason = %why, "inbound message returned to the queue");
                d.nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A domain's shape: `thing.stop` with `{"thing": id}` signals `stop` to that workflow.
    struct Stop;

    impl Translator for Stop {
        fn translate(
            &self,
            message_id: &str,
            kind: &str,
            namespace: &str,
            body: &serde_json::Value,
        ) -> Option<Result<Inbound, String>> {
            (kind == "thing.stop").then(|| {
                Ok(Inbound::Signal(pb::SignalWorkflowRequest {
                    namespace: namespace.to_owned(),
                    execution: Some(pb::WorkflowExecution {
                        workflow_id: field(body, "thing")?.to_owned(),
                        run_id: String::new(),
                    }),
                    signal_name: "stop".into(),
                    request_id: message_id.to_owned(),
                    ..Default::default()
                }))
            })
        }
    }

    #[test]
    fn messages_parse_or_say_why_not() {
        let domains: Vec<Arc<dyn Translator>> = vec![Arc::new(Stop)];
        let stop = parse(Some("m-1"), "thing.stop", br#"{"thing":"t-1"}"#, &domains);
        match stop {
            Ok(Inbound::Signal(r)) => {
                assert_eq!(r.signal_name, "stop");
                assert_eq!(r.request_id, "m-1");
                assert_eq!(r.namespace, "default");
                assert_eq!(r.execution.unwrap().workflow_id, "t-1");
            }
            other => panic!("{other:?}"),
        }
        let sws = parse(
            Some("m-2"),
            "anything",
            br#"{"workflow_id":"w","signal":"go","input":{"a":1},"start":{"workflow_type":"t","task_queue":"q"}}"#,
            &domains,
        );
        assert!(matches!(sws, Ok(Inbound::SignalWithStart(ref r)) if r.request_id == "m-2"));
        for (id, kind, body, why) in [
            (None, "x", &b"{}"[..], "no message_id"),
            (Some("m"), "x", b"not json", "not JSON"),
            (Some("m"), "x", b"[1]", "JSON object"),
            (
                Some("m"),
                "x",
                br#"{"signal":"s"}"#,
                "'workflow_id' is missing",
            ),
            (
                Some("m"),
                "x",
                br#"{"workflow_id":"w","signal":7}"#,
                "'signal' must be",
            ),
            (Some("m"), "thing.stop", b"{}", "'thing' is missing"),
            (
                Some("m"),
                "x",
                br#"{"workflow_id":"w","signal":"s","start":1}"#,
                "'start' must be",
            ),
        ] {
            let err = parse(id, kind, body, &domains).unwrap_err();
            assert!(err.contains(why), "{err} should say {why}");
        }
    }
}
