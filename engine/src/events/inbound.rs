//! Inbound messages: a RabbitMQ queue whose messages become signals.
//!
//! A message is acknowledged only after its signal is committed, and the signal carries the
//! message id as its request id, so a redelivered message signals once. A message that cannot
//! be turned into a signal (not JSON, no message id, no such workflow, ...) is copied to the
//! dead-letter queue `<queue>.dead` with the reason in header `x-martix-error`, then
//! acknowledged: never lost, never retried forever. When the engine cannot commit (database
//! down), the message is returned to the queue and the consumer backs off.
//!
//! The consumer is an identity of its own at the edge (`amqp:<queue>`, role client): it acts
//! only in the namespaces, with the signal names and starting only the workflow types its
//! [`InboundRules`] allow (a message outside them is dead-lettered with the reason), and its
//! requests and starts count against the edge's rate limits like any caller's (past them it
//! waits, the message unacknowledged).
//!
//! The message shapes (content type JSON; the AMQP `message_id` property is required):
//! - a signal: `{"namespace": "default", "workflow_id": "...", "signal": "name", "input": <any
//!   JSON>}`; add `"start": {"workflow_type": "...", "task_queue": "...", "input": <any
//!   JSON>}` for signal-with-start (the run is started if none is open);
//! - a domain's own shapes: a [`Translator`] the domain registered turns a message of a type
//!   it knows (AMQP type or routing key) into one of the above.

use crate::edge::auth::Denied;
use crate::edge::{Edge, Op, Principal, Refusal, Role};
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

/// What the inbound consumer may do; `*` in a list allows anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundRules {
    /// Namespaces it may signal and start in (`--consume-namespaces`; default `default`).
    pub namespaces: Vec<String>,
    /// Signal names it may send (`--consume-signals`; default `*`: a signal only reaches a
    /// run that is already open).
    pub signals: Vec<String>,
    /// Workflow types a signal-with-start may start (`--consume-workflow-types`; default none:
    /// starting work from a message is opted into type by type).
    pub workflow_types: Vec<String>,
}

impl Default for InboundRules {
    fn default() -> Self {
        Self {
            namespaces: vec!["default".into()],
            signals: vec!["*".into()],
            workflow_types: Vec::new(),
        }
    }
}

fn allows(list: &[String], name: &str) -> bool {
    list.iter().any(|n| n == "*" || n == name)
}

impl InboundRules {
    /// The consumer of `queue` as a caller of the edge: a client in the allowed namespaces.
    pub fn principal(&self, queue: &str) -> Principal {
        Principal {
            subject: format!("amqp:{queue}"),
            roles: vec![Role::Client],
            namespaces: (!self.namespaces.iter().any(|n| n == "*"))
                .then(|| self.namespaces.clone()),
            namespace_roles: Default::default(),
        }
    }

    /// Whether the signal name and any workflow type `request` asks for are allowed, or why
    /// not (the namespace is the edge's to check).
    pub fn check(&self, request: &Inbound) -> Result<(), String> {
        let (signal, start) = match request {
            Inbound::Signal(r) => (&r.signal_name, None),
            Inbound::SignalWithStart(r) => (
                &r.signal_name,
                Some(r.start.as_ref().map_or("", |s| s.workflow_type.as_str())),
            ),
        };
        if !allows(&self.signals, signal) {
            return Err(format!(
                "signal '{signal}' is not one the inbound consumer may send (--consume-signals)"
            ));
        }
        match start {
            Some(t) if !allows(&self.workflow_types, t) => Err(format!(
                "workflow type '{t}' is not one the inbound consumer may start \
                 (--consume-workflow-types)"
            )),
            _ => Ok(()),
        }
    }
}

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
    /// The node is stopping: the broker gives the unacknowledged message to another consumer.
    Stopped,
}

/// Where the consumer stands at the edge.
struct Consumer<'a> {
    engine: &'a Engine,
    edge: &'a Edge,
    translators: &'a [Arc<dyn Translator>],
    rules: &'a InboundRules,
    principal: Principal,
}

async fn handle(c: &Consumer<'_>, d: &Delivery, stop: &CancellationToken) -> Outcome {
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
    let request = match parse(id.as_deref(), &kind, &d.data, c.translators) {
        Ok(r) => r,
        Err(why) => return Outcome::Dead(why),
    };
    if let Err(why) = c.rules.check(&request) {
        return Outcome::Dead(why);
    }
    let (op, namespace) = match &request {
        Inbound::Signal(r) => (Op::SignalWorkflow, r.namespace.as_str()),
        Inbound::SignalWithStart(r) => (
            Op::StartWorkflow,
            r.start.as_ref().map_or("", |s| s.namespace.as_str()),
        ),
    };
    // Past a rate limit the consumer waits as any caller would be told to, then asks again;
    // the message stays unacknowledged meanwhile (the prefetch bounds how many wait).
    let _admission = loop {
        match c.edge.admit(&c.principal, op, namespace) {
            Ok(a) => break a,
            Err(Refusal::Limited(l)) => tokio::select! {
                () = stop.cancelled() => return Outcome::Stopped,
                () = tokio::time::sleep(l.retry_after) => {}
            },
            Err(Refusal::Denied(Denied::Namespace(ns))) => {
                return Outcome::Dead(format!(
                    "namespace '{ns}' is not one the inbound consumer may act in \
                     (--consume-namespaces)"
                ));
            }
            Err(refused) => return Outcome::Dead(refused.to_string()),
        }
    };
    let result = match request {
        Inbound::Signal(r) => c.engine.signal_workflow(r).await.map(drop),
        // A message names no one: the consumer's identity is the queue's, shared by every
        // sender, so it is not the caller a domain records (`StartInput`).
        Inbound::SignalWithStart(r) => c
            .engine
            .signal_with_start_workflow_as(r, None)
            .await
            .map(drop),
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
    edge: Arc<Edge>,
    translators: Translators,
    rules: InboundRules,
    url: String,
    queue: String,
    stop: CancellationToken,
) {
    let consumer = Consumer {
        engine: &engine,
        edge: &edge,
        translators: &translators,
        rules: &rules,
        principal: rules.principal(&queue),
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        match consume(&consumer, &url, &queue, &stop).await {
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
    c: &Consumer<'_>,
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
        match handle(c, &d, stop).await {
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
            Outcome::Stopped => return Ok(()),
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
    fn the_consumer_is_held_to_its_rules_and_to_the_edges_limits() {
        use crate::edge::{EdgeConfig, LimitsConfig, Rate};
        let rules = InboundRules {
            namespaces: vec!["default".into(), "eu".into()],
            signals: vec!["cancel".into()],
            workflow_types: vec!["renewal".into()],
        };
        let signal = |name: &str| {
            Inbound::Signal(pb::SignalWorkflowRequest {
                signal_name: name.into(),
                ..Default::default()
            })
        };
        let start = |t: &str| {
            Inbound::SignalWithStart(pb::SignalWithStartWorkflowRequest {
                signal_name: "cancel".into(),
                start: Some(pb::StartWorkflowRequest {
                    workflow_type: t.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        assert_eq!(rules.check(&signal("cancel")), Ok(()));
        assert!(rules.check(&signal("pay")).unwrap_err().contains("'pay'"));
        assert_eq!(rules.check(&start("renewal")), Ok(()));
        assert!(
            rules
                .check(&start("payroll"))
                .unwrap_err()
                .contains("'payroll'")
        );
        let defaults = InboundRules::default();
        assert_eq!(defaults.check(&signal("anything")), Ok(()));
        assert!(
            defaults.check(&start("renewal")).is_err(),
            "no start by default"
        );

        let limits = LimitsConfig {
            requests_per_identity: Rate {
                per_sec: 1,
                burst: 1,
            },
            ..LimitsConfig::default()
        };
        let edge = Edge::new(&EdgeConfig { auth: None, limits }).unwrap();
        let me = rules.principal("q");
        assert_eq!(me.subject, "amqp:q");
        assert!(matches!(
            edge.admit(&me, Op::SignalWorkflow, "payroll"),
            Err(Refusal::Denied(Denied::Namespace(ns))) if ns == "payroll"
        ));
        assert!(edge.admit(&me, Op::SignalWorkflow, "eu").is_ok());
        assert!(matches!(
            edge.admit(&me, Op::SignalWorkflow, "eu"),
            Err(Refusal::Limited(_))
        ));
        let everywhere = InboundRules {
            namespaces: vec!["*".into()],
            ..InboundRules::default()
        };
        assert!(
            edge.admit(&everywhere.principal("r"), Op::SignalWorkflow, "payroll")
                .is_ok()
        );
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
