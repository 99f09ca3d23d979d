//! W3C trace context across processes: a client's `StartWorkflow` call carries `traceparent`
//! in its metadata, the engine keeps it with the run, and every task it hands out carries it
//! back, so a saga's spans form one trace however many workers and restarts it crosses. With
//! no OpenTelemetry layer installed all of this is a cheap no-op (empty strings).

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The metadata key of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The W3C `traceparent` of the current span; empty when tracing is off.
pub fn current() -> String {
    of(&tracing::Span::current())
}

/// The W3C `traceparent` of `span`; empty when tracing is off.
pub fn of(span: &tracing::Span) -> String {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = span.context();
    // Every SDK call asks: answer at once when there is no trace (tracing off).
    if !cx.span().span_context().is_valid() {
        return String::new();
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT).unwrap_or_default()
}

/// Makes `span` a child of the trace context `traceparent` (nothing if it is empty or bad).
/// Call it before the span is entered.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}
