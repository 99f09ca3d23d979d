//! When a schedule acts: its cron expression in its time zone, or its interval, and the jitter
//! each time gets. Pure functions of the spec and a time: every node computes the same times.

use crate::clock::Millis;
use crate::error::EngineError;
use crate::history::duration_to_ms;
use chrono::TimeZone;
use martix_proto::v1 as pb;
use std::str::FromStr;

/// The shortest interval a schedule may have.
pub const MIN_INTERVAL_MS: Millis = 1_000;
/// The longest jitter a schedule may have.
pub const MAX_JITTER_MS: Millis = 24 * 3600 * 1000;

/// A checked schedule spec.
#[derive(Clone, Debug)]
pub struct Spec {
    when: When,
    jitter_ms: Millis,
}

#[derive(Clone, Debug)]
enum When {
    Cron(Box<croner::Cron>, chrono_tz::Tz),
    Every(Millis),
}

impl Spec {
    /// Checks `spec`; the error names the field (`schedule.spec.cron`, ...).
    pub fn parse(spec: &pb::ScheduleSpec) -> Result<Self, EngineError> {
        let interval = duration_to_ms(spec.interval.as_ref());
        let jitter_ms = duration_to_ms(spec.jitter.as_ref());
        if jitter_ms > MAX_JITTER_MS {
            return Err(EngineError::invalid(
                "schedule.spec.jitter",
                "is longer than 24 hours",
            ));
        }
        let when = match (spec.cron.trim(), interval) {
            ("", 0) => {
                return Err(EngineError::invalid(
                    "schedule.spec",
                    "needs a cron expression or an interval",
                ));
            }
            (cron, 0) => {
                let fields = cron.split_whitespace().count();
                if fields != 5 {
                    return Err(EngineError::invalid(
                        "schedule.spec.cron",
                        format!(
                            "'{cron}' has {fields} fields; it needs 5: minute hour \
                             day-of-month month day-of-week (\"0 2 * * *\")"
                        ),
                    ));
                }
                let parsed = croner::Cron::from_str(cron).map_err(|e| {
                    EngineError::invalid("schedule.spec.cron", format!("'{cron}': {e}"))
                })?;
                let tz = match spec.timezone.as_str() {
                    "" => chrono_tz::UTC,
                    name => chrono_tz::Tz::from_str(name).map_err(|_| {
                        EngineError::invalid(
                            "schedule.spec.timezone",
                            format!("'{name}' is not an IANA time zone (\"Europe/Paris\")"),
                        )
                    })?,
                };
                When::Cron(Box::new(parsed), tz)
            }
            ("", ms) if ms < MIN_INTERVAL_MS => {
                return Err(EngineError::invalid(
                    "schedule.spec.interval",
                    "must be at least 1s",
                ));
            }
            ("", ms) => {
                if !spec.timezone.is_empty() {
                    return Err(EngineError::invalid(
                        "schedule.spec.timezone",
                        "applies to a cron expression, not to an interval",
                    ));
                }
                When::Every(ms)
            }
            _ => {
                return Err(EngineError::invalid(
                    "schedule.spec",
                    "has both a cron expression and an interval; give one",
                ));
            }
        };
        Ok(Self { when, jitter_ms })
    }

    /// The first time strictly after `t` the schedule acts at (before jitter); `None` if
    /// there is none (a cron expression that never matches again).
    pub fn next_after(&self, t: Millis) -> Option<Millis> {
        match &self.when {
            When::Every(ms) => Some((t.div_euclid(*ms) + 1) * ms),
            When::Cron(cron, tz) => {
                let from = tz.timestamp_millis_opt(t).single()?;
                cron.find_next_occurrence(&from, false)
                    .ok()
                    .map(|next| next.timestamp_millis())
            }
        }
    }

    /// How long the action for time `t` of schedule `id` waits after `t`: a fixed share of
    /// the jitter, the same on every node.
    pub fn jitter(&self, id: &str, t: Millis) -> Millis {
        if self.jitter_ms == 0 {
            return 0;
        }
        // FNV-1a over the id and the time.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.as_bytes().iter().chain(t.to_le_bytes().iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        (h % self.jitter_ms as u64) as Millis
    }

    /// The next `n` times after `t`.
    pub fn next_times(&self, mut t: Millis, n: usize) -> Vec<Millis> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(expr: &str, tz: &str) -> Spec {
        Spec::parse(&pb::ScheduleSpec {
            cron: expr.into(),
            timezone: tz.into(),
            ..Default::default()
        })
        .unwrap()
    }

    /// 2026-03-27T00:00:00Z and 2026-10-23T00:00:00Z.
    const MARCH_27: Millis = 1_774_569_600_000;
    const OCTOBER_23: Millis = 1_792_713_600_000;
    const HOUR: Millis = 3_600_000;
    const DAY: Millis = 24 * HOUR;

    #[test]
    fn a_nightly_time_in_paris_fires_once_a_day_across_both_daylight_saving_changes() {
        let s = cron("30 2 * * *", "Europe/Paris");
        // Spring: 2026-03-29 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
        let spring = s.next_times(MARCH_27, 4);
        assert_eq!(
            spring,
            [
                MARCH_27 + HOUR + 30 * 60_000,       // 27th 02:30 CET = 01:30Z
                MARCH_27 + DAY + HOUR + 30 * 60_000, // 28th 02:30 CET
                MARCH_27 + 2 * DAY + HOUR, // 29th: right after the jump, 03:00 CEST = 01:00Z
                MARCH_27 + 3 * DAY + 30 * 60_000, // 30th 02:30 CEST = 00:30Z
            ]
        );
        // Autumn: 2026-10-25 03:00 CEST goes back to 02:00 CET; 02:30 happens twice, fires once.
        let autumn = s.next_times(OCTOBER_23, 4);
        assert_eq!(
            autumn,
            [
                OCTOBER_23 + 30 * 60_000,                  // 23rd 02:30 CEST = 00:30Z
                OCTOBER_23 + DAY + 30 * 60_000,            // 24th
                OCTOBER_23 + 2 * DAY + 30 * 60_000,        // 25th, the first 02:30 only
                OCTOBER_23 + 3 * DAY + HOUR + 30 * 60_000, // 26th 02:30 CET = 01:30Z
            ]
        );
    }

    #[test]
    fn intervals_count_from_the_epoch_and_jitter_is_fixed_per_time() {
        let s = Spec::parse(&pb::ScheduleSpec {
            interval: Some(crate::history::ms_to_duration(15 * 60_000)),
            jitter: Some(crate::history::ms_to_duration(30_000)),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.next_after(MARCH_27 + 1), Some(MARCH_27 + 15 * 60_000));
        assert_eq!(s.next_after(MARCH_27), Some(MARCH_27 + 15 * 60_000));
        let j = s.jitter("nightly", MARCH_27);
        assert!((0..30_000).contains(&j));
        assert_eq!(j, s.jitter("nightly", MARCH_27), "the same on every node");
        let spread: std::collections::HashSet<Millis> = (0..20)
            .map(|i| s.jitter("nightly", MARCH_27 + i * 900_000))
            .collect();
        assert!(spread.len() > 10, "times get different delays: {spread:?}");
    }

    #[test]
    fn bad_specs_say_which_field_and_why() {
        let bad = |spec: pb::ScheduleSpec, want: &str| {
            let e = Spec::parse(&spec).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        };
        bad(
            pb::ScheduleSpec::default(),
            "needs a cron expression or an interval",
        );
        bad(
            pb::ScheduleSpec {
                cron: "0 2 * *".into(),
                ..Default::default()
            },
            "has 4 fields; it needs 5",
        );
        bad(
            pb::ScheduleSpec {
                cron: "0 25 * * *".into(),
                ..Default::default()
            },
            "schedule.spec.cron",
        );
        bad(
            pb::ScheduleSpec {
                cron: "0 2 * * *".into(),
                timezone: "Mars/Olympus".into(),
                ..Default::default()
            },
            "'Mars/Olympus' is not an IANA time zone",
        );
        bad(
            pb::ScheduleSpec {
                interval: Some(crate::history::ms_to_duration(10)),
                ..Default::default()
            },
            "at least 1s",
        );
        bad(
            pb::ScheduleSpec {
                cron: "0 2 * * *".into(),
                interval: Some(crate::history::ms_to_duration(60_000)),
                ..Default::default()
            },
            "both a cron expression and an interval",
        );
    }
}
