//! How the operators' commands print: JSON answers, payloads, history event lines, times
//! (RFC 3339). Status and state names are the SDK's (`WorkflowStatus::as_str`).

use anyhow::Result;
use martix_proto::v1 as pb;
use std::time::UNIX_EPOCH;

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

pub(crate) use martix_proto::time::rfc3339_seconds as time;

/// A time as [`time`] prints it, `-` if none.
pub(crate) fn when(t: Option<std::time::SystemTime>) -> String {
    let ts = t.map(|t| match t.duration_since(UNIX_EPOCH) {
        Ok(d) => pbjson_types::Timestamp {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: 0,
        },
        // Before 1970: whole seconds, rounded down as protobuf timestamps are.
        Err(e) => pbjson_types::Timestamp {
            seconds: -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX)
                - i64::from(e.duration().subsec_nanos() > 0),
            nanos: 0,
        },
    });
    time(ts.as_ref())
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
    use std::time::Duration;

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
        assert_eq!(when(None), "-");
        assert_eq!(
            when(Some(UNIX_EPOCH + Duration::new(1_795_539_541, 5))),
            "2026-11-24T16:59:01Z"
        );
        assert_eq!(when(Some(UNIX_EPOCH - Duration::from_secs(5))), "-5s");
        assert_eq!(at(253_402_300_800), "253402300800s");
    }
}
