//! Protobuf timestamps and milliseconds since the epoch, the one conversion every crate of
//! Martix uses (engine and SDK alike).

use pbjson_types::Timestamp;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch as a protobuf timestamp.
pub fn to_timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A protobuf timestamp as milliseconds since the epoch (saturating: a timestamp from a
/// caller may be anything).
pub fn from_timestamp(ts: &Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(ts.nanos) / 1_000_000)
}

/// A system time as a protobuf timestamp, to the nanosecond; times before 1970 count as
/// 1970-01-01T00:00:00Z.
pub fn system_time_to_timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// The last second humantime writes (9999-12-31T23:59:59Z).
const LAST_SECOND: u64 = 253_402_300_799;

/// A timestamp in RFC 3339, UTC, to the second (`2026-11-24T16:59:01Z`), `-` if none. A
/// timestamp before 1970 or after 9999 prints as its seconds since the epoch (`-5s`).
pub fn rfc3339_seconds(ts: Option<&Timestamp>) -> String {
    ts.map_or("-".into(), |t| match u64::try_from(t.seconds) {
        Ok(s) if s <= LAST_SECOND => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(s))
                .to_string()
        }
        _ => format!("{}s", t.seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_times_keep_their_nanoseconds_and_stop_at_the_epoch() {
        let t = UNIX_EPOCH + std::time::Duration::new(1_732_000_000, 123_456_789);
        let ts = system_time_to_timestamp(t);
        assert_eq!((ts.seconds, ts.nanos), (1_732_000_000, 123_456_789));
        let before = UNIX_EPOCH - std::time::Duration::from_secs(5);
        let ts = system_time_to_timestamp(before);
        assert_eq!((ts.seconds, ts.nanos), (0, 0));
    }

    #[test]
    fn timestamps_round_trip_including_before_the_epoch() {
        for ms in [0, 1, 999, 1000, 1_732_000_000_123, -1, -1001] {
            assert_eq!(from_timestamp(&to_timestamp(ms)), ms);
        }
    }

    #[test]
    fn timestamps_out_of_range_saturate() {
        let ts = |seconds, nanos| Timestamp { seconds, nanos };
        assert_eq!(from_timestamp(&ts(i64::MAX, 999_999_999)), i64::MAX);
        assert_eq!(from_timestamp(&ts(i64::MIN, -999_999_999)), i64::MIN);
    }
}
