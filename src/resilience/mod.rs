//! Everything that decides whether, when and how often a request goes upstream: the attempt
//! loop (request and per-try timeouts, retry decisions with backoff and budget, body replay),
//! circuit breakers, outlier detection, the inbound rate limit and fault injection. Owns no
//! sockets: the attempt itself (endpoint pick, connection, send) is the caller's.

mod attempts;
mod backoff;
mod breaker;
mod budget;
mod fault;
mod metrics;
mod outlier;
mod policy;
mod ratelimit;
mod replay;

use std::{sync::Arc, time::Duration};

pub use attempts::{Attempt, AttemptCx, Finished, Outcome, Plan, Reply, RetryState, Tried, run};
pub use backoff::Backoff;
pub use breaker::{Breaker, BreakerLimits, ConnGuard, Counters, Guard, Overflow, Threshold};
pub use budget::{Budget, BudgetState};
pub use fault::{Abort, FaultPolicy};
pub use metrics::{ClusterMetrics, FaultStats, ResilienceMetrics};
pub use outlier::OutlierPolicy;
pub use policy::{Condition, Failure, RetryPolicy, is_idempotent};
pub use ratelimit::{Bucket, RateLimiter};
pub use replay::ReplayBody;

/// A request the resilience layer ended or refused on its own.
#[derive(Debug, thiserror::Error)]
pub enum ResilienceError {
    /// The route's request timeout (or the last attempt's per-try timeout) passed.
    #[error("no response within {after:?}")]
    Timeout { after: Duration },
    #[error(transparent)]
    Overflow(#[from] Overflow),
    #[error("inbound rate limit of {workload}: retry after {retry_after}s")]
    RateLimited {
        workload: Arc<str>,
        retry_after: u32,
    },
    #[error("fault injected: abort with {abort:?}")]
    FaultAbort { abort: Abort },
}
