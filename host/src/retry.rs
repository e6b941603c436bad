//! When to try a failed channel send again: the *schedule*. Whether a failure
//! is worth retrying at all is the plugin's call (its `classify`) or, for a
//! provider that never answered, always yes.
//!
//! Backoff is capped exponential with full jitter (AWS architecture blog,
//! "Exponential Backoff And Jitter"): before retry n the host waits a uniform
//! random time in `[0, min(max_backoff, initial_backoff * 2^(n-1))]`, so many
//! events failing together do not retry in lockstep. A delay the provider
//! asked for (`Retry-After`, via the plugin) is a floor, capped at
//! `max_retry_after` so one answer cannot park an event for hours.
//!
//! With the defaults (5 attempts, 500 ms initial, 30 s max) the four waits
//! are drawn from at most 0.5 s, 1 s, 2 s and 4 s: an event that keeps
//! failing is dead-lettered within about 8 s of waiting, plus the attempts.

use std::time::Duration;

/// A channel's retry policy, validated (see `config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Sends in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The longest provider-requested delay honoured.
    pub max_retry_after: Duration,
    /// Give up on a delivery this long after its first attempt, even while
    /// its channel is down. `None` (the default): never on time alone, so an
    /// outage of any length loses nothing.
    pub give_up_after: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            // Five tries ride out a provider blip of several seconds without
            // holding an event's key for long.
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            // Mailgun's rate-limit answers ask for up to ~2 minutes.
            max_retry_after: Duration::from_secs(300),
            give_up_after: None,
        }
    }
}

impl RetryPolicy {
    /// Whether another send may follow attempt number `attempt` (1-based).
    pub fn allows_retry_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The upper bound of the jittered wait after attempt `attempt` failed.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        self.initial_backoff
            .saturating_mul(1u32 << exp.min(31))
            .min(self.max_backoff)
    }

    /// The wait after attempt `attempt` failed. `jitter(n)` returns a uniform
    /// value in `0..=n` (injected so tests are deterministic).
    pub fn delay(
        &self,
        attempt: u32,
        provider_after: Option<Duration>,
        jitter: impl FnOnce(u64) -> u64,
    ) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        let drawn = Duration::from_millis(jitter(ceiling).min(ceiling));
        match provider_after {
            Some(after) => drawn.max(after.min(self.max_retry_after)),
            None => drawn,
        }
    }

    /// [`Self::delay`] with real randomness.
    pub fn random_delay(&self, attempt: u32, provider_after: Option<Duration>) -> Duration {
        self.delay(attempt, provider_after, |n| fastrand::u64(0..=n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: MS(500),
            max_backoff: MS(3000),
            max_retry_after: MS(10_000),
            give_up_after: None,
        };
        let ceilings: Vec<_> = (1..=6).map(|a| p.ceiling(a)).collect();
        assert_eq!(
            ceilings,
            [MS(500), MS(1000), MS(2000), MS(3000), MS(3000), MS(3000)]
        );
        assert_eq!(p.ceiling(u32::MAX), MS(3000));
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(3, None, |_| 0), MS(0));
        assert_eq!(p.delay(3, None, |n| n), MS(2000));
        // A misbehaving source of randomness cannot exceed the ceiling.
        assert_eq!(p.delay(3, None, |_| u64::MAX), MS(2000));
        for _ in 0..1000 {
            assert!(p.random_delay(2, None) <= MS(1000));
        }
    }

    #[test]
    fn provider_delay_is_a_capped_floor() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, Some(MS(7000)), |_| 0), MS(7000));
        assert_eq!(p.delay(1, Some(MS(100)), |n| n), MS(500));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3600)), |_| 0),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn attempts_are_bounded() {
        let p = RetryPolicy::default();
        assert!(p.allows_retry_after(4));
        assert!(!p.allows_retry_after(5));
        let once = RetryPolicy {
            max_attempts: 1,
            ..p
        };
        assert!(!once.allows_retry_after(1));
    }
}
