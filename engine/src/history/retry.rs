//! Backoff between activity attempts: a small pure function, tested.

use martix_proto::v1::RetryPolicy;
use std::time::Duration;

const DEFAULT_INITIAL: Duration = Duration::from_secs(1);
const DEFAULT_COEFFICIENT: f64 = 2.0;

/// The delay before attempt `attempt + 1`, after `attempt` (from 1) failed. `jitter` in
/// `[0, 1)` spreads retries of many activities up to 20% below the nominal delay, so they do
/// not stampede a recovering downstream.
pub fn retry_delay(policy: Option<&RetryPolicy>, attempt: i32, jitter: f64) -> Duration {
    let initial = policy
        .and_then(|p| p.initial_interval.as_ref())
        .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_INITIAL);
    let coefficient = policy
        .map(|p| p.backoff_coefficient)
        .filter(|c| *c >= 1.0)
        .unwrap_or(DEFAULT_COEFFICIENT);
    let maximum = policy
        .and_then(|p| p.maximum_interval.as_ref())
        .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
        .filter(|d| !d.is_zero())
        .unwrap_or(initial * 100)
        .max(initial);
    let exponent = (attempt.max(1) - 1).min(64);
    let nominal = initial.as_secs_f64() * coefficient.powi(exponent);
    let capped = nominal.min(maximum.as_secs_f64());
    let jittered = capped * (1.0 - 0.2 * jitter.clamp(0.0, 1.0));
    Duration::from_secs_f64(jittered.max(0.001))
}

/// Whether the policy allows another attempt after `attempt` failed with `failure_type`.
pub(crate) fn may_retry(policy: Option<&RetryPolicy>, attempt: i32, failure_type: &str) -> bool {
    let Some(p) = policy else { return true };
    if p.maximum_attempts > 0 && attempt >= p.maximum_attempts {
        return false;
    }
    !p.non_retryable_error_types
        .iter()
        .any(|t| t == failure_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> Option<pbjson_types::Duration> {
        Some(pbjson_types::Duration {
            seconds: s,
            nanos: 0,
        })
    }

    #[test]
    fn defaults_double_from_one_second_and_cap_at_a_hundred() {
        assert_eq!(retry_delay(None, 1, 0.0), Duration::from_secs(1));
        assert_eq!(retry_delay(None, 2, 0.0), Duration::from_secs(2));
        assert_eq!(retry_delay(None, 5, 0.0), Duration::from_secs(16));
        assert_eq!(retry_delay(None, 40, 0.0), Duration::from_secs(100));
    }

    #[test]
    fn policy_fields_are_honoured_and_jitter_only_shortens() {
        let p = RetryPolicy {
            initial_interval: secs(2),
            backoff_coefficient: 3.0,
            maximum_interval: secs(10),
            ..Default::default()
        };
        assert_eq!(retry_delay(Some(&p), 1, 0.0), Duration::from_secs(2));
        assert_eq!(retry_delay(Some(&p), 2, 0.0), Duration::from_secs(6));
        assert_eq!(retry_delay(Some(&p), 3, 0.0), Duration::from_secs(10));
        let j = retry_delay(Some(&p), 3, 0.999);
        assert!(
            j < Duration::from_secs(10) && j >= Duration::from_secs(8),
            "{j:?}"
        );
    }

    #[test]
    fn maximum_attempts_and_non_retryable_types_stop_retries() {
        let p = RetryPolicy {
            maximum_attempts: 3,
            non_retryable_error_types: vec!["Declined".into()],
            ..Default::default()
        };
        assert!(may_retry(Some(&p), 2, "Io"));
        assert!(!may_retry(Some(&p), 3, "Io"));
        assert!(!may_retry(Some(&p), 1, "Declined"));
        assert!(may_retry(None, 1000, "Declined"));
        // Zero attempts: no limit.
        let unlimited = RetryPolicy::default();
        assert!(may_retry(Some(&unlimited), 1000, "Io"));
    }
}
