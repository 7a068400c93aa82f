//! Exponential backoff with full jitter: the n-th wait is uniform in `[0, min(max, base·2ⁿ)]`,
//! which spreads reconnecting proxies apart instead of having them retry in lockstep.

use std::time::Duration;

use rand::RngExt;

/// Successive waits between attempts; `reset` after a success.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// `base` is the first ceiling, doubled per attempt up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The ceiling of the next wait, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next wait: uniform up to the ceiling, which then doubles.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(b.ceiling());
            let wait = b.next_wait();
            assert!(
                wait <= *ceilings.last().unwrap(),
                "a wait never exceeds its ceiling"
            );
        }
        assert_eq!(ceilings[0], Duration::from_millis(100));
        assert_eq!(ceilings[1], Duration::from_millis(200));
        assert_eq!(ceilings[5], Duration::from_millis(3200));
        assert_eq!(ceilings[11], Duration::from_secs(30), "capped");
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn waits_are_spread() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10));
        let waits: std::collections::HashSet<_> = (0..20).map(|_| b.next_wait()).collect();
        assert!(waits.len() > 10, "jitter gives different waits: {waits:?}");
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..100 {
            b.next_wait();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(30));
    }
}
