//! Endpoint selection for one service: power of two choices over peak-EWMA latency weighted by
//! requests in flight, or round robin, skipping ejected endpoints and preferring ones a request
//! has not tried. Owns each endpoint's health view (load, ejection); owns no sockets.

use std::{
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rand::RngExt;
use skiff_api::model::LoadBalancer;

/// RTT assumed for an endpoint nothing has been measured on yet.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Time constant of the moving average: a sample's weight halves in about 7 s.
const DECAY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    #[error("service {service} has no endpoint to try")]
    NoHealthyEndpoints { service: Arc<str> },
}

/// Endpoints already tried by this request, by index in the cluster's set (the first 64).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tried(u64);

impl Tried {
    pub fn contains(self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }

    pub fn add(&mut self, index: usize) {
        if index < 64 {
            self.0 |= 1 << index;
        }
    }
}

/// Nanoseconds since the first call: the one clock of load samples and ejections.
pub fn clock() -> u64 {
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

/// Outlier state of one endpoint; `resilience::OutlierPolicy` decides, this only holds.
#[derive(Debug, Default)]
pub struct Health {
    /// Upstream failures in a row.
    pub consecutive: AtomicU32,
    /// Ejections so far (the ejection-time multiplier).
    pub ejections: AtomicU32,
    /// `clock()` until which the endpoint is out; 0 while in service. Once passed, the
    /// endpoint stays out until one probe request succeeds.
    pub ejected_until: AtomicU64,
    /// A probe request is in flight.
    pub probing: AtomicBool,
    /// `clock()` since which the endpoint has had no ejection lowered.
    pub healthy_since: AtomicU64,
}

impl Health {
    pub fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) != 0
    }

    /// Puts the endpoint back in service (outlier detection turned off).
    pub fn reset(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
        self.ejections.store(0, Ordering::Relaxed);
        self.ejected_until.store(0, Ordering::Relaxed);
        self.probing.store(false, Ordering::Relaxed);
    }
}

/// One endpoint of a service: where it is, what it stands for, its load and its health.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The workload it stands for, when it is a meshed workload.
    pub workload: Option<Arc<str>>,
    /// The SPIFFE ID to expect from it (mesh mTLS); `None`: unmeshed, plaintext.
    pub identity: Option<Arc<str>>,
    pub load: Load,
    pub health: Health,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, workload: Option<Arc<str>>, identity: Option<Arc<str>>) -> Self {
        Endpoint {
            addr,
            workload,
            identity,
            load: Load::default(),
            health: Health::default(),
        }
    }
}

/// A picked endpoint; its in-flight count drops (and a probe is released) when dropped.
#[derive(Debug)]
pub struct Pick {
    pub endpoint: Arc<Endpoint>,
    /// Its index in the set (the same in every attempt of a request).
    pub index: usize,
    /// It was ejected and this request probes it.
    pub probe: bool,
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
        if self.probe {
            self.endpoint.health.probing.store(false, Ordering::Relaxed);
        }
    }
}

/// Whether an endpoint may take a request now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Eligible {
    Yes,
    /// Its ejection time passed: it may take one probe request.
    Probe,
    No,
}

fn eligible(e: &Endpoint, now: u64) -> Eligible {
    match e.health.ejected_until.load(Ordering::Relaxed) {
        0 => Eligible::Yes,
        until if now < until => Eligible::No,
        _ if e.health.probing.load(Ordering::Relaxed) => Eligible::No,
        _ => Eligible::Probe,
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

    /// Picks an endpoint for an attempt: ejected endpoints are skipped (one whose ejection
    /// ended may take a probe), endpoints in `tried` only when nothing else is left.
    pub fn pick(&self, tried: Tried) -> Result<Pick, BalanceError> {
        let now = clock();
        let n = self.endpoints.len();
        // The common case: nothing to avoid among the two candidates.
        let fast = match (n, self.kind) {
            (0, _) => return Err(self.none()),
            (1, _) => Some(0),
            (_, LoadBalancer::RoundRobin) => Some(self.next.fetch_add(1, Ordering::Relaxed) % n),
            (_, LoadBalancer::P2cEwma) => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
                let usable = |i: usize, e: &Endpoint| {
                    !tried.contains(i) && eligible(e, now) == Eligible::Yes
                };
                match (usable(a, ea), usable(b, eb)) {
                    (true, true) if eb.load.cost(now) < ea.load.cost(now) => Some(b),
                    (true, true) => Some(a),
                    _ => None,
                }
            }
        };
        if let Some(i) = fast
            && !tried.contains(i)
            && eligible(&self.endpoints[i], now) == Eligible::Yes
        {
            return Ok(self.take(i, false));
        }
        self.pick_slow(tried, now)
    }

    /// Untried endpoints in service first (the cheaper of two, or the next in turn), then
    /// untried ones due a probe, then tried ones; never an ejected one.
    fn pick_slow(&self, tried: Tried, now: u64) -> Result<Pick, BalanceError> {
        let n = self.endpoints.len();
        let offset = match self.kind {
            LoadBalancer::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed),
            LoadBalancer::P2cEwma => rand::rng().random_range(0..n),
        };
        for pass in [false, true] {
            let mut best: Option<usize> = None;
            let mut probe: Option<usize> = None;
            for k in 0..n {
                let i = (offset + k) % n;
                if tried.contains(i) != pass {
                    continue;
                }
                match eligible(&self.endpoints[i], now) {
                    Eligible::Yes => {
                        best = match (best, self.kind) {
                            (None, _) => Some(i),
                            (Some(b), LoadBalancer::P2cEwma)
                                if self.endpoints[i].load.cost(now)
                                    < self.endpoints[b].load.cost(now) =>
                            {
                                Some(i)
                            }
                            (keep, _) => keep,
                        };
                    }
                    Eligible::Probe => {
                        probe = probe.or(Some(i));
                    }
                    Eligible::No => {}
                }
            }
            if let Some(i) = probe {
                // Claimed by at most one request; a lost race falls back to the others.
                let health = &self.endpoints[i].health;
                if health
                    .probing
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(self.take(i, true));
                }
            }
            if let Some(i) = best {
                return Ok(self.take(i, false));
            }
        }
        Err(self.none())
    }

    fn take(&self, i: usize, probe: bool) -> Pick {
        let endpoint = &self.endpoints[i];
        endpoint.load.in_flight.fetch_add(1, Ordering::Relaxed);
        Pick {
            endpoint: endpoint.clone(),
            index: i,
            probe,
            started: Instant::now(),
        }
    }

    fn none(&self) -> BalanceError {
        BalanceError::NoHealthyEndpoints {
            service: self.service.clone(),
        }
    }

    /// Endpoints out of service now (ejected, probe pending or not).
    pub fn ejected(&self) -> usize {
        self.endpoints
            .iter()
            .filter(|e| e.health.is_ejected())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(kind: LoadBalancer, n: u16) -> EndpointSet {
        let eps = (0..n)
            .map(|i| {
                let addr = SocketAddr::from(([127, 0, 0, 1], 1000 + i));
                Arc::new(Endpoint::new(addr, None, None))
            })
            .collect();
        EndpointSet::new("svc".into(), kind, eps)
    }

    #[test]
    fn round_robin_cycles() {
        let s = set(LoadBalancer::RoundRobin, 3);
        let ports: Vec<u16> = (0..6)
            .map(|_| s.pick(Tried::default()).unwrap().endpoint.addr.port())
            .collect();
        assert_eq!(ports, [1000, 1001, 1002, 1000, 1001, 1002]);
    }

    #[test]
    fn p2c_avoids_slow_endpoint() {
        let s = set(LoadBalancer::P2cEwma, 2);
        s.endpoints[0].load.observe(Duration::from_millis(500));
        s.endpoints[1].load.observe(Duration::from_millis(1));
        let slow = (0..1000)
            .filter(|_| s.pick(Tried::default()).unwrap().endpoint.addr.port() == 1000)
            .count();
        assert_eq!(
            slow, 0,
            "with two endpoints P2C compares both, so the slow one never wins"
        );
    }

    #[test]
    fn in_flight_is_released() {
        let s = set(LoadBalancer::P2cEwma, 1);
        let p = s.pick(Tried::default()).unwrap();
        assert_eq!(s.endpoints[0].load.in_flight(), 1);
        drop(p);
        assert_eq!(s.endpoints[0].load.in_flight(), 0);
    }

    #[test]
    fn empty_set_has_no_endpoint() {
        assert!(matches!(
            set(LoadBalancer::P2cEwma, 0).pick(Tried::default()),
            Err(BalanceError::NoHealthyEndpoints { .. })
        ));
    }

    #[test]
    fn ejected_endpoints_are_skipped_and_probed_once_due() {
        for kind in [LoadBalancer::P2cEwma, LoadBalancer::RoundRobin] {
            let s = set(kind, 3);
            let far = clock() + 60_000_000_000;
            s.endpoints[0]
                .health
                .ejected_until
                .store(far, Ordering::Relaxed);
            for _ in 0..200 {
                assert_ne!(s.pick(Tried::default()).unwrap().index, 0, "{kind:?}");
            }
            // Ejection over: exactly one request at a time probes it.
            s.endpoints[0]
                .health
                .ejected_until
                .store(1, Ordering::Relaxed);
            let picks: Vec<Pick> = (0..10).map(|_| s.pick(Tried::default()).unwrap()).collect();
            assert_eq!(picks.iter().filter(|p| p.probe).count(), 1, "{kind:?}");
            assert_eq!(picks.iter().filter(|p| p.index == 0).count(), 1, "{kind:?}");
            drop(picks);
            assert!(
                !s.endpoints[0].health.probing.load(Ordering::Relaxed),
                "released"
            );
        }
    }

    #[test]
    fn retries_prefer_untried_endpoints() {
        for kind in [LoadBalancer::P2cEwma, LoadBalancer::RoundRobin] {
            let s = set(kind, 3);
            let mut tried = Tried::default();
            tried.add(0);
            tried.add(2);
            for _ in 0..100 {
                assert_eq!(s.pick(tried).unwrap().index, 1, "{kind:?}");
            }
            tried.add(1);
            assert!(s.pick(tried).is_ok(), "all tried: any endpoint will do");
        }
    }

    #[test]
    fn all_ejected_fails_at_once() {
        let s = set(LoadBalancer::P2cEwma, 2);
        let far = clock() + 60_000_000_000;
        for e in s.endpoints() {
            e.health.ejected_until.store(far, Ordering::Relaxed);
        }
        assert!(matches!(
            s.pick(Tried::default()),
            Err(BalanceError::NoHealthyEndpoints { .. })
        ));
        assert_eq!(s.ejected(), 2);
    }
}
