//! Circuit breaker thresholds per service, Envoy style: requests, pending requests, connections
//! and retries in flight are counted; over a configured limit the next one fails at once
//! (503 `overflow`) instead of queueing. Counters outlive snapshots; limits come with each.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use skiff_api::model;

use super::ClusterMetrics;

/// One of the four thresholds, named as in the mesh file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Threshold {
    MaxConnections,
    MaxPendingRequests,
    MaxRequests,
    MaxRetries,
}

impl Threshold {
    pub fn as_str(self) -> &'static str {
        match self {
            Threshold::MaxConnections => "maxConnections",
            Threshold::MaxPendingRequests => "maxPendingRequests",
            Threshold::MaxRequests => "maxRequests",
            Threshold::MaxRetries => "maxRetries",
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is open now toward one service; shared by every snapshot that holds the service.
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU32,
    pending: AtomicU32,
    connections: AtomicU32,
    retries: AtomicU32,
}

impl Counters {
    fn counter(&self, t: Threshold) -> &AtomicU32 {
        match t {
            Threshold::MaxConnections => &self.connections,
            Threshold::MaxPendingRequests => &self.pending,
            Threshold::MaxRequests => &self.requests,
            Threshold::MaxRetries => &self.retries,
        }
    }

    /// `(connections, pendingRequests, requests, retries)` now.
    pub fn open(&self) -> (u32, u32, u32, u32) {
        let get = |c: &AtomicU32| c.load(Ordering::Relaxed);
        (
            get(&self.connections),
            get(&self.pending),
            get(&self.requests),
            get(&self.retries),
        )
    }
}

/// The configured limits (`circuitBreaker`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerLimits {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

impl BreakerLimits {
    pub fn compile(spec: &model::CircuitBreaker) -> Self {
        BreakerLimits {
            max_connections: spec.max_connections,
            max_pending_requests: spec.max_pending_requests,
            max_requests: spec.max_requests,
            max_retries: spec.max_retries,
        }
    }

    fn limit(&self, t: Threshold) -> u32 {
        match t {
            Threshold::MaxConnections => self.max_connections,
            Threshold::MaxPendingRequests => self.max_pending_requests,
            Threshold::MaxRequests => self.max_requests,
            Threshold::MaxRetries => self.max_retries,
        }
    }
}

/// A threshold was full: the request, connection or retry was refused.
#[derive(Clone, Debug, thiserror::Error)]
#[error("circuit breaker of {service}: {threshold} is full")]
pub struct Overflow {
    pub service: Arc<str>,
    pub threshold: Threshold,
}

/// A service's breaker: its limits (none = never trips) and its live counters.
#[derive(Clone, Debug)]
pub struct Breaker {
    service: Arc<str>,
    pub limits: Option<BreakerLimits>,
    pub counters: Arc<Counters>,
    metrics: ClusterMetrics,
}

/// One counted request, pending request or retry; uncounted when dropped.
#[derive(Debug)]
pub struct Guard {
    counters: Arc<Counters>,
    which: Threshold,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.counters
            .counter(self.which)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// One open upstream connection, counted whether or not a limit is set (a limit pushed later
/// sees the connections already open); held by the connection's task.
#[derive(Debug)]
pub struct ConnGuard {
    _counted: Guard,
}

impl Breaker {
    pub fn new(
        service: Arc<str>,
        limits: Option<BreakerLimits>,
        counters: Arc<Counters>,
        metrics: ClusterMetrics,
    ) -> Self {
        Breaker {
            service,
            limits,
            counters,
            metrics,
        }
    }

    fn admit(&self, which: Threshold, limit: Option<u32>) -> Result<Guard, Overflow> {
        let counter = self.counters.counter(which);
        let before = counter.fetch_add(1, Ordering::Relaxed);
        let guard = Guard {
            counters: self.counters.clone(),
            which,
        };
        match limit {
            Some(max) if before >= max => {
                drop(guard);
                self.metrics.overflow(which);
                Err(Overflow {
                    service: self.service.clone(),
                    threshold: which,
                })
            }
            _ => Ok(guard),
        }
    }

    /// Admission of a counted kind only when a limit is configured; no limit, no cost.
    fn admit_limited(&self, which: Threshold) -> Result<Option<Guard>, Overflow> {
        match &self.limits {
            None => Ok(None),
            Some(l) => self.admit(which, Some(l.limit(which))).map(Some),
        }
    }

    /// A request to the service, held until its response head (or failure).
    pub fn request(&self) -> Result<Option<Guard>, Overflow> {
        self.admit_limited(Threshold::MaxRequests)
    }

    /// A request waiting for a connection to be opened.
    pub fn pending(&self) -> Result<Option<Guard>, Overflow> {
        self.admit_limited(Threshold::MaxPendingRequests)
    }

    /// A retry, held while the retried attempt runs.
    pub fn retry(&self) -> Result<Option<Guard>, Overflow> {
        self.admit_limited(Threshold::MaxRetries)
    }

    /// A new upstream connection.
    pub fn connection(&self) -> Result<ConnGuard, Overflow> {
        let limit = self.limits.map(|l| l.max_connections);
        self.admit(Threshold::MaxConnections, limit)
            .map(|g| ConnGuard { _counted: g })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::ResilienceMetrics;

    fn breaker(limits: Option<BreakerLimits>) -> Breaker {
        let mut reg = prometheus_client::registry::Registry::default();
        let m = ResilienceMetrics::register(&mut reg);
        Breaker::new("svc".into(), limits, Arc::default(), m.cluster("svc"))
    }

    #[test]
    fn over_the_limit_fails_and_releases() {
        let b = breaker(Some(BreakerLimits {
            max_connections: 1,
            max_pending_requests: 1,
            max_requests: 2,
            max_retries: 1,
        }));
        let one = b.request().unwrap();
        let two = b.request().unwrap();
        assert!(matches!(
            b.request(),
            Err(Overflow {
                threshold: Threshold::MaxRequests,
                ..
            })
        ));
        assert_eq!(b.counters.open().2, 2, "a refused request is not counted");
        drop(one);
        assert!(b.request().is_ok());
        drop(two);
        let c = b.connection().unwrap();
        assert!(b.connection().is_err());
        drop(c);
        assert_eq!(b.counters.open().0, 0);
    }

    #[test]
    fn without_limits_only_connections_are_counted() {
        let b = breaker(None);
        assert!(b.request().unwrap().is_none());
        let conns: Vec<_> = (0..3).map(|_| b.connection().unwrap()).collect();
        assert_eq!(b.counters.open().0, 3);
        drop(conns);
        assert_eq!(b.counters.open().0, 0);
    }
}
