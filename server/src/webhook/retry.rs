//! The retry schedule of outcome webhooks and how an attempt is judged
//! (pure). Standard Webhooks: a 2xx answer is success, anything else
//! (redirects included, which are not followed) a failure that is retried
//! with exponential backoff; `410 Gone` says the endpoint is gone for good,
//! so the message is dead-lettered at once instead of retried.

use std::time::Duration;

/// How deliveries are retried (WEBHOOK_MAX_ATTEMPTS, WEBHOOK_RETRY_BASE,
/// WEBHOOK_RETRY_MAX, WEBHOOK_TIMEOUT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before a message is dead (the first included).
    pub max_attempts: u32,
    /// Wait after the first failure; doubled after each further one.
    pub base: Duration,
    /// Longest wait between attempts.
    pub cap: Duration,
    /// How long one attempt may take (connect, send, answer).
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            base: Duration::from_secs(5),
            cap: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
        }
    }
}

/// How one attempt went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered with this HTTP status.
    Answered(u16),
    /// No answer: unreachable, broken off, or over the timeout (why, without the URL).
    NoAnswer(String),
}

/// What becomes of the message after an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered (a 2xx).
    Delivered,
    /// Tried again after this long.
    RetryAfter(Duration),
    /// Given up: kept, visible, as dead.
    Dead,
}

impl RetryPolicy {
    /// The wait after the `failures`-th failure (1-based): `base · 2^(failures−1)`,
    /// capped, then scaled by `jitter` in [0.5, 1] ("equal jitter": replicas
    /// and messages that failed together do not retry together, and the wait
    /// never drops below half the schedule).
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let full = self.base.saturating_mul(1u32 << exp).min(self.cap);
        full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// The verdict on an attempt, the `attempts`-th of the message (1-based).
    pub fn judge(&self, attempt: &Attempt, attempts: u32, jitter: f64) -> Verdict {
        match attempt {
            Attempt::Answered(s) if (200..300).contains(s) => Verdict::Delivered,
            Attempt::Answered(410) => Verdict::Dead,
            _ if attempts >= self.max_attempts => Verdict::Dead,
            _ => Verdict::RetryAfter(self.delay(attempts, jitter)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_within_half() {
        let p = policy();
        assert_eq!(p.delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(2, 1.0), Duration::from_secs(2));
        assert_eq!(p.delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(p.delay(4, 1.0), Duration::from_secs(5));
        assert_eq!(p.delay(40, 1.0), Duration::from_secs(5));
        assert_eq!(p.delay(2, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(2, 7.0), Duration::from_secs(2));
    }

    #[test]
    fn only_2xx_delivers_410_kills_and_the_last_attempt_dead_letters() {
        let p = policy();
        assert_eq!(p.judge(&Attempt::Answered(204), 1, 0.5), Verdict::Delivered);
        assert_eq!(p.judge(&Attempt::Answered(410), 1, 0.5), Verdict::Dead);
        for failure in [
            Attempt::Answered(302),
            Attempt::Answered(400),
            Attempt::Answered(503),
            Attempt::NoAnswer("x".into()),
        ] {
            assert!(
                matches!(p.judge(&failure, 1, 0.5), Verdict::RetryAfter(_)),
                "{failure:?}"
            );
            assert_eq!(p.judge(&failure, 4, 0.5), Verdict::Dead, "{failure:?}");
        }
    }
}
