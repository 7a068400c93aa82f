//! Endpoint selection for one service: power of two choices over peak-EWMA latency weighted by
//! requests in flight, or round robin. Owns each endpoint's load estimate; knows nothing of routes.

use std::{
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rand::RngExt;
use skiff_api::model::LoadBalancer;

use crate::http::pool::EndpointPool;

/// RTT assumed for an endpoint nothing has been measured on yet.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Time constant of the moving average: a sample's weight halves in about 7 s.
const DECAY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    #[error("service {service} has no endpoint to try")]
    NoHealthyEndpoints { service: Arc<str> },
}

fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Peak-EWMA load of one endpoint: latency jumps up at once on a slow response and decays
/// back down over `DECAY`; the cost is that latency times the requests in flight plus one.
#[derive(Debug)]
pub struct Load {
    in_flight: AtomicU32,
    /// EWMA latency in nanoseconds, as `f64` bits.
    ewma_ns: AtomicU64,
    /// `clock()` of the last sample.
    stamp: AtomicU64,
}

impl Default for Load {
    fn default() -> Self {
        Load {
            in_flight: AtomicU32::new(0),
            ewma_ns: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            stamp: AtomicU64::new(clock()),
        }
    }
}

impl Load {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The decayed latency estimate now, in milliseconds.
    pub fn ewma_ms(&self) -> f64 {
        self.decayed(clock()) / 1e6
    }

    fn decayed(&self, now: u64) -> f64 {
        let ewma = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        // Decay toward zero while idle so a once-slow endpoint is tried again.
        ewma * (-elapsed / DECAY.as_nanos() as f64).exp()
    }

    fn cost(&self, now: u64) -> f64 {
        let pending = f64::from(self.in_flight.load(Ordering::Relaxed)) + 1.0;
        let ewma = self.decayed(now).max(1.0);
        ewma * pending
    }

    /// Records one latency sample. Races between concurrent samples lose one of them, which
    /// an average tolerates; no lock on the request path.
    pub fn observe(&self, rtt: Duration) {
        let now = clock();
        let sample = rtt.as_nanos() as f64;
        let prev = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(self.stamp.swap(now, Ordering::Relaxed)) as f64;
        let next = if sample > prev {
            sample
        } else {
            let w = (-elapsed / DECAY.as_nanos() as f64).exp();
            prev * w + sample * (1.0 - w)
        };
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
    }
}

/// One endpoint of a service, with its load and its connections.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The workload it stands for, when it is a meshed workload.
    pub workload: Option<Arc<str>>,
    pub load: Load,
    pub pool: Arc<EndpointPool>,
}

/// A picked endpoint; its in-flight count drops when this is dropped.
#[derive(Debug)]
pub struct Pick {
    pub endpoint: Arc<Endpoint>,
    started: Instant,
}

impl Pick {
    /// Records the latency of the response headers (or of a failure) into the estimate.
    pub fn observe(&self) {
        self.endpoint.load.observe(self.started.elapsed());
    }

    /// Records a failure as a slow sample, so P2C steers away from a failing endpoint.
    pub fn observe_failure(&self, penalty: Duration) {
        self.endpoint
            .load
            .observe(self.started.elapsed().max(penalty));
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.endpoint.load.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints of one service and how to choose among them.
#[derive(Debug)]
pub struct EndpointSet {
    service: Arc<str>,
    kind: LoadBalancer,
    endpoints: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
}

impl EndpointSet {
    pub fn new(service: Arc<str>, kind: LoadBalancer, endpoints: Vec<Arc<Endpoint>>) -> Self {
        EndpointSet {
            service,
            kind,
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    pub fn kind(&self) -> LoadBalancer {
        self.kind
    }

    pub fn pick(&self) -> Result<Pick, BalanceError> {
        let endpoint = match self.endpoints.len() {
            0 => {
                return Err(BalanceError::NoHealthyEndpoints {
                    service: self.service.clone(),
                });
            }
            1 => &self.endpoints[0],
            n => match self.kind {
                LoadBalancer::RoundRobin => {
                    &self.endpoints[self.next.fetch_add(1, Ordering::Relaxed) % n]
                }
                LoadBalancer::P2cEwma => {
                    let mut rng = rand::rng();
                    let a = rng.random_range(0..n);
                    let b = (a + rng.random_range(1..n)) % n;
                    let now = clock();
                    let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
                    if eb.load.cost(now) < ea.load.cost(now) {
                        eb
                    } else {
                        ea
                    }
                }
            },
        };
        endpoint.load.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Pick {
            endpoint: endpoint.clone(),
            started: Instant::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(kind: LoadBalancer, n: u16) -> EndpointSet {
        let eps = (0..n)
            .map(|i| {
                let addr = SocketAddr::from(([127, 0, 0, 1], 1000 + i));
                Arc::new(Endpoint {
                    addr,
                    workload: None,
                    load: Load::default(),
                    pool: Arc::new(EndpointPool::new(
                        addr,
                        Duration::from_secs(1),
                        Duration::from_secs(1),
                        1,
                    )),
                })
            })
            .collect();
        EndpointSet::new("svc".into(), kind, eps)
    }

    #[test]
    fn round_robin_cycles() {
        let s = set(LoadBalancer::RoundRobin, 3);
        let ports: Vec<u16> = (0..6)
            .map(|_| s.pick().unwrap().endpoint.addr.port())
            .collect();
        assert_eq!(ports, [1000, 1001, 1002, 1000, 1001, 1002]);
    }

    #[test]
    fn p2c_avoids_slow_endpoint() {
        let s = set(LoadBalancer::P2cEwma, 2);
        s.endpoints[0].load.observe(Duration::from_millis(500));
        s.endpoints[1].load.observe(Duration::from_millis(1));
        let slow = (0..1000)
            .filter(|_| s.pick().unwrap().endpoint.addr.port() == 1000)
            .count();
        assert_eq!(
            slow, 0,
            "with two endpoints P2C compares both, so the slow one never wins"
        );
    }

    #[test]
    fn in_flight_is_released() {
        let s = set(LoadBalancer::P2cEwma, 1);
        let p = s.pick().unwrap();
        assert_eq!(s.endpoints[0].load.in_flight(), 1);
        drop(p);
        assert_eq!(s.endpoints[0].load.in_flight(), 0);
    }

    #[test]
    fn empty_set_has_no_endpoint() {
        assert!(matches!(
            set(LoadBalancer::P2cEwma, 0).pick(),
            Err(BalanceError::NoHealthyEndpoints { .. })
        ));
    }
}
