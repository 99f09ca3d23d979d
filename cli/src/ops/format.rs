//! How the operators' commands print: JSON answers, payloads, history event lines, times
//! (RFC 3339), and the short names of workflow statuses and pending activity states.

use anyhow::Result;
use martix_proto::v1 as pb;
use std::time::{Duration, UNIX_EPOCH};

/// Prints `v` as pretty JSON.
pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A payload's bytes as text, `-` if none.
pub(super) fn show_payload(p: Option<&pb::Payload>) -> String {
    match p {
        None => "-".into(),
        Some(p) => String::from_utf8_lossy(&p.data).into_owned(),
    }
}

/// The last second humantime writes (9999-12-31T23:59:59Z).
const LAST_SECOND: u64 = 253_402_300_799;

/// A timestamp in RFC 3339, UTC, to the second (`2026-11-24T16:59:01Z`), `-` if none. A
/// timestamp before 1970 or after 9999 prints as its seconds since the epoch (`-5s`).
pub(crate) fn time(ts: Option<&pbjson_types::Timestamp>) -> String {
    ts.map_or("-".into(), |t| match u64::try_from(t.seconds) {
        Ok(s) if s <= LAST_SECOND => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string()
        }
        _ => format!("{}s", t.seconds),
    })
}

/// A workflow status as the cli prints it (`running`, `continued_as_new`), or its number.
pub(super) fn status_name(s: i32) -> String {
    pb::WorkflowStatus::try_from(s)
        .map(|s| short_name(s.as_str_name(), "WORKFLOW_STATUS_"))
        .unwrap_or_else(|_| s.to_string())
}

/// A pending activity's state as the cli prints it (`scheduled`, `backing_off`), or nothing.
pub(super) fn activity_state_name(s: i32) -> String {
    pb::PendingActivityState::try_from(s)
        .map(|s| short_name(s.as_str_name(), "PENDING_ACTIVITY_STATE_"))
        .unwrap_or_default()
}

/// A proto enum value's name without its type's prefix, in lower case.
fn short_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_lowercase()
}

/// One line of `martix workflow history`: id, time, kind and the attributes (cut at 100
/// characters).
pub(super) fn event_line(e: &pb::HistoryEvent) -> String {
    let json = serde_json::to_value(e).unwrap_or_default();
    let (kind, attrs) = json
        .as_object()
        .and_then(|o| {
            o.iter()
                .find(|(k, _)| *k != "eventId" && *k != "eventTime")
                .map(|(k, v)| (k.clone(), v.to_string()))
        })
        .unwrap_or_default();
    let attrs = if attrs.len() > 100 {
        format!(
            "{}...",
            &attrs[..attrs
                .char_indices()
                .nth(100)
                .map_or(attrs.len(), |(i, _)| i)]
        )
    } else {
        attrs
    };
    format!(
        "{:>5}  {}  {kind:<36} {attrs}",
        e.event_id,
        time(e.event_time.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> String {
        time(Some(&pbjson_types::Timestamp { seconds, nanos: 0 }))
    }

    #[test]
    fn times_are_rfc3339_to_the_second() {
        assert_eq!(time(None), "-");
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(1_795_539_541), "2026-11-24T16:59:01Z");
        assert_eq!(at(253_402_300_799), "9999-12-31T23:59:59Z");
        let nanos = pbjson_types::Timestamp {
            seconds: 1,
            nanos: 999_999_999,
        };
        assert_eq!(time(Some(&nanos)), "1970-01-01T00:00:01Z");
        assert_eq!(at(-5), "-5s");
        assert_eq!(at(253_402_300_800), "253402300800s");
    }

    #[test]
    fn names_lose_their_prefix() {
        assert_eq!(
            status_name(pb::WorkflowStatus::ContinuedAsNew as i32),
            "continued_as_new"
        );
        assert_eq!(status_name(999), "999");
        assert_eq!(activity_state_name(999), "");
    }
}
