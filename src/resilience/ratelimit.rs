//! The inbound rate limit of a workload (`rateLimit`): a token bucket refilled at
//! `requestsPerSecond` up to `burst`. Over it a request gets 429 `rate-limited` with the
//! whole seconds until a token is back in `retry-after`.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use prometheus_client::metrics::counter::Counter;
use skiff_api::model;

use super::ResilienceError;

/// Tokens left and when they were last counted; outlives snapshots while the limit stays.
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    workload: Arc<str>,
    pub rate: f64,
    pub burst: f64,
    pub bucket: Arc<Mutex<Bucket>>,
    rejected: Counter,
}

impl RateLimiter {
    /// `carried`: the bucket of the previous snapshot's limiter, kept so a reload neither
    /// refills nor empties it.
    pub fn new(
        workload: Arc<str>,
        spec: &model::RateLimit,
        carried: Option<Arc<Mutex<Bucket>>>,
        rejected: Counter,
    ) -> Self {
        let rate = f64::from(spec.requests_per_second.max(1));
        let burst = f64::from(spec.burst.unwrap_or(spec.requests_per_second).max(1));
        let bucket = carried.unwrap_or_else(|| {
            Arc::new(Mutex::new(Bucket {
                tokens: burst,
                at: Instant::now(),
            }))
        });
        RateLimiter {
            workload,
            rate,
            burst,
            bucket,
            rejected,
        }
    }

    /// Takes a token, or says how long until one is back.
    pub fn acquire(&self) -> Result<(), ResilienceError> {
        let wait = {
            let mut b = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let refill = now.duration_since(b.at).as_secs_f64() * self.rate;
            b.tokens = (b.tokens + refill).min(self.burst);
            b.at = now;
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                return Ok(());
            }
            (1.0 - b.tokens) / self.rate
        };
        self.rejected.inc();
        Err(ResilienceError::RateLimited {
            workload: self.workload.clone(),
            retry_after: (wait.ceil() as u32).max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let l = RateLimiter::new(
            "w".into(),
            &model::RateLimit {
                requests_per_second: 1,
                burst: Some(3),
            },
            None,
            Counter::default(),
        );
        for _ in 0..3 {
            assert!(l.acquire().is_ok());
        }
        match l.acquire() {
            Err(ResilienceError::RateLimited { retry_after, .. }) => assert_eq!(retry_after, 1),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
