//! `ActivityOptions` and `RetryPolicy`: how an activity call is timed and retried, which of
//! it is left to defaults, and the values those defaults have.
//!
//! Every field is optional: an unset field is inherited, most specific first, from the
//! call's options, then the workflow's defaults (`WorkflowContext::with_activity_defaults`),
//! then the engine's, whose values the fields' docs give. Layering is one function,
//! [`ActivityOptions::or`].

use martix_proto::v1 as pb;
use std::time::Duration;

/// How the engine retries an activity's failed attempts. An unset field takes the engine's
/// default, written on each field; [`RetryPolicy::default`] leaves all of them unset, which
/// retries forever from 1 s doubling to 100 s.
///
/// A failure the activity marks non-retryable (`ActivityError::non_retryable`) is never
/// retried, whatever the policy.
///
/// ```
/// use martix_sdk::RetryPolicy;
/// use std::time::Duration;
/// let policy = RetryPolicy::new()
///     .initial_interval(Duration::from_millis(200))
///     .maximum_attempts(5)
///     .non_retryable(["Declined"]);
/// assert_eq!(policy.maximum_attempts, Some(5));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Delay before the first retry. Default: [`RetryPolicy::DEFAULT_INITIAL_INTERVAL`], 1 s.
    pub initial_interval: Option<Duration>,
    /// Factor the delay grows by after each retry, at least 1.0. Default:
    /// [`RetryPolicy::DEFAULT_BACKOFF_COEFFICIENT`], 2.0.
    pub backoff_coefficient: Option<f64>,
    /// Longest delay between two attempts. Default: 100 times the initial interval (100 s).
    pub maximum_interval: Option<Duration>,
    /// Most attempts, the first included: 1 runs it once, `Some(0)` is unlimited. Default:
    /// unlimited (bound the whole with `ActivityOptions::schedule_to_close_timeout`).
    pub maximum_attempts: Option<u32>,
    /// Failure types (`ActivityError::error_type`) that are not retried. Default: none. A
    /// non-empty list replaces an inherited one.
    pub non_retryable_error_types: Vec<String>,
}

impl RetryPolicy {
    /// The engine's delay before the first retry when none is set.
    pub const DEFAULT_INITIAL_INTERVAL: Duration = Duration::from_secs(1);
    /// The engine's backoff factor when none is set.
    pub const DEFAULT_BACKOFF_COEFFICIENT: f64 = 2.0;

    /// A policy with every field unset: the engine's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the delay before the first retry.
    pub fn initial_interval(mut self, d: Duration) -> Self {
        self.initial_interval = Some(d);
        self
    }

    /// Sets the factor the delay grows by after each retry.
    pub fn backoff_coefficient(mut self, factor: f64) -> Self {
        self.backoff_coefficient = Some(factor);
        self
    }

    /// Caps the delay between two attempts.
    pub fn maximum_interval(mut self, d: Duration) -> Self {
        self.maximum_interval = Some(d);
        self
    }

    /// Allows at most `n` attempts (0: unlimited).
    pub fn maximum_attempts(mut self, n: u32) -> Self {
        self.maximum_attempts = Some(n);
        self
    }

    /// Failures of these types are not retried.
    pub fn non_retryable<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.non_retryable_error_types
            .extend(types.into_iter().map(Into::into));
        self
    }

    /// Whether no field is set.
    pub fn is_unset(&self) -> bool {
        *self == Self::default()
    }

    /// This policy, its unset fields taken from `base`.
    pub fn or(self, base: &RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            initial_interval: self.initial_interval.or(base.initial_interval),
            backoff_coefficient: self.backoff_coefficient.or(base.backoff_coefficient),
            maximum_interval: self.maximum_interval.or(base.maximum_interval),
            maximum_attempts: self.maximum_attempts.or(base.maximum_attempts),
            non_retryable_error_types: if self.non_retryable_error_types.is_empty() {
                base.non_retryable_error_types.clone()
            } else {
                self.non_retryable_error_types
            },
        }
    }
}

impl From<&RetryPolicy> for pb::RetryPolicy {
    fn from(p: &RetryPolicy) -> Self {
        pb::RetryPolicy {
            initial_interval: p.initial_interval.map(dur),
            backoff_coefficient: p.backoff_coefficient.unwrap_or(0.0),
            maximum_interval: p.maximum_interval.map(dur),
            maximum_attempts: p
                .maximum_attempts
                .map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX)),
            non_retryable_error_types: p.non_retryable_error_types.clone(),
        }
    }
}

/// Options of one activity call. Every field is optional; an unset one is inherited from the
/// workflow's defaults ([`WorkflowContext::with_activity_defaults`]), then from the engine,
/// with the defaults each field's doc gives. [`ActivityOptions::default`] sets nothing.
///
/// ```
/// use martix_sdk::ActivityOptions;
/// use std::time::Duration;
/// let opts = ActivityOptions::new(Duration::from_secs(10))
///     .initial_interval(Duration::from_millis(200))
///     .maximum_attempts(5);
/// assert_eq!(opts.start_to_close_timeout, Some(Duration::from_secs(10)));
/// ```
///
/// [`WorkflowContext::with_activity_defaults`]: crate::WorkflowContext::with_activity_defaults
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ActivityOptions {
    /// Run it on another queue than the workflow's. Default: the workflow's queue.
    pub task_queue: Option<String>,
    /// Longest time one attempt may take; an attempt past it fails as timed out and is
    /// retried. Default: the schedule-to-close timeout if set, else
    /// [`ActivityOptions::DEFAULT_START_TO_CLOSE_TIMEOUT`] (10 minutes).
    pub start_to_close_timeout: Option<Duration>,
    /// Longest time all attempts together may take, retries included. Default: no limit.
    pub schedule_to_close_timeout: Option<Duration>,
    /// Longest time the activity may wait for a worker. Default: no limit.
    pub schedule_to_start_timeout: Option<Duration>,
    /// Longest gap between heartbeats of a running attempt. Default: none expected.
    pub heartbeat_timeout: Option<Duration>,
    /// How failed attempts are retried. Default: [`RetryPolicy::default`], forever from 1 s
    /// doubling to 100 s.
    pub retry_policy: RetryPolicy,
}

impl ActivityOptions {
    /// What the engine gives an attempt when neither a start-to-close nor a schedule-to-close
    /// timeout is set.
    pub const DEFAULT_START_TO_CLOSE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

    /// Options with a start-to-close timeout, the one most activities need.
    pub fn new(start_to_close_timeout: Duration) -> Self {
        Self {
            start_to_close_timeout: Some(start_to_close_timeout),
            ..Default::default()
        }
    }

    /// Sets the start-to-close timeout.
    pub fn start_to_close_timeout(mut self, d: Duration) -> Self {
        self.start_to_close_timeout = Some(d);
        self
    }

    /// Sets the schedule-to-close timeout.
    pub fn schedule_to_close_timeout(mut self, d: Duration) -> Self {
        self.schedule_to_close_timeout = Some(d);
        self
    }

    /// Sets the schedule-to-start timeout.
    pub fn schedule_to_start_timeout(mut self, d: Duration) -> Self {
        self.schedule_to_start_timeout = Some(d);
        self
    }

    /// Sets the retry policy (its unset fields are still inherited).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = policy;
        self
    }

    /// Allows at most `n` attempts (0: unlimited).
    pub fn maximum_attempts(mut self, n: u32) -> Self {
        self.retry_policy.maximum_attempts = Some(n);
        self
    }

    /// Sets the first retry interval.
    pub fn initial_interval(mut self, d: Duration) -> Self {
        self.retry_policy.initial_interval = Some(d);
        self
    }

    /// Caps the interval between retries.
    pub fn maximum_interval(mut self, d: Duration) -> Self {
        self.retry_policy.maximum_interval = Some(d);
        self
    }

    /// Failures of these types are not retried.
    pub fn non_retryable(mut self, types: &[&str]) -> Self {
        self.retry_policy = self.retry_policy.non_retryable(types.iter().copied());
        self
    }

    /// Runs the activity on `queue`.
    pub fn task_queue(mut self, queue: impl Into<String>) -> Self {
        self.task_queue = Some(queue.into());
        self
    }

    /// Sets the heartbeat timeout.
    pub fn heartbeat_timeout(mut self, d: Duration) -> Self {
        self.heartbeat_timeout = Some(d);
        self
    }

    /// These options, their unset fields (and unset retry policy fields) taken from `base`.
    ///
    /// ```
    /// use martix_sdk::ActivityOptions;
    /// use std::time::Duration;
    /// let workflow = ActivityOptions::new(Duration::from_secs(10)).maximum_attempts(3);
    /// let call = ActivityOptions::default().maximum_attempts(1).or(&workflow);
    /// assert_eq!(call.start_to_close_timeout, Some(Duration::from_secs(10)));
    /// assert_eq!(call.retry_policy.maximum_attempts, Some(1));
    /// ```
    pub fn or(self, base: &ActivityOptions) -> ActivityOptions {
        ActivityOptions {
            task_queue: self.task_queue.or_else(|| base.task_queue.clone()),
            start_to_close_timeout: self.start_to_close_timeout.or(base.start_to_close_timeout),
            schedule_to_close_timeout: self
                .schedule_to_close_timeout
                .or(base.schedule_to_close_timeout),
            schedule_to_start_timeout: self
                .schedule_to_start_timeout
                .or(base.schedule_to_start_timeout),
            heartbeat_timeout: self.heartbeat_timeout.or(base.heartbeat_timeout),
            retry_policy: self.retry_policy.or(&base.retry_policy),
        }
    }

    /// The schedule command's fields for these options.
    pub(crate) fn schedule_command(
        &self,
        activity_id: String,
        activity_type: String,
        input: Option<pb::Payload>,
    ) -> pb::ScheduleActivityTaskCommand {
        pb::ScheduleActivityTaskCommand {
            activity_id,
            activity_type,
            task_queue: self.task_queue.clone().unwrap_or_default(),
            input,
            schedule_to_close_timeout: self.schedule_to_close_timeout.map(dur),
            schedule_to_start_timeout: self.schedule_to_start_timeout.map(dur),
            start_to_close_timeout: self.start_to_close_timeout.map(dur),
            heartbeat_timeout: self.heartbeat_timeout.map(dur),
            retry_policy: (!self.retry_policy.is_unset()).then(|| (&self.retry_policy).into()),
        }
    }
}

pub(crate) fn dur(d: Duration) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_wins_then_the_base_field_by_field() {
        let base = ActivityOptions::new(Duration::from_secs(10))
            .heartbeat_timeout(Duration::from_secs(2))
            .initial_interval(Duration::from_millis(200))
            .non_retryable(&["Declined"]);
        let call = ActivityOptions::default()
            .start_to_close_timeout(Duration::from_secs(1))
            .maximum_attempts(3)
            .or(&base);
        assert_eq!(call.start_to_close_timeout, Some(Duration::from_secs(1)));
        assert_eq!(call.heartbeat_timeout, Some(Duration::from_secs(2)));
        assert_eq!(
            call.retry_policy,
            RetryPolicy::new()
                .initial_interval(Duration::from_millis(200))
                .maximum_attempts(3)
                .non_retryable(["Declined"])
        );
        assert_eq!(
            ActivityOptions::default().or(&ActivityOptions::default()),
            ActivityOptions::default()
        );
    }

    #[test]
    fn an_unset_retry_policy_is_left_to_the_engine() {
        let c = ActivityOptions::new(Duration::from_secs(1)).schedule_command(
            "1".into(),
            "a".into(),
            None,
        );
        assert_eq!(c.retry_policy, None);
        let c = ActivityOptions::default()
            .maximum_attempts(0)
            .schedule_command("1".into(), "a".into(), None);
        let p = c.retry_policy.expect("a policy with a field set");
        assert_eq!(p.maximum_attempts, 0, "0 is unlimited on the wire too");
        assert_eq!(c.start_to_close_timeout, None, "the engine's default");
    }
}
