//! The live state of one proxy: the current `Snapshot` behind `ArcSwap` (readers `load`,
//! the config source `install`s), readiness and drain flags, the last config error, and
//! the settings and metrics every connection shares.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::{
    authz::AuthzMetrics,
    bootstrap::Settings,
    cluster::Cluster,
    ondemand::OnDemand,
    resilience::ResilienceMetrics,
    snapshot::Snapshot,
    telemetry::{DetectStats, Direction, LogControl, Metrics, Recorder, RouteStats, TcpStats},
    tls::{MeshTls, TlsMetrics},
};

/// The addresses the listeners actually bound: the first of each direction, and any more
/// (a dual-stack pod listens on both families).
#[derive(Clone, Debug)]
pub struct BoundAddrs {
    pub admin: SocketAddr,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub more_outbound: Vec<SocketAddr>,
    pub more_inbound: Vec<SocketAddr>,
}

impl BoundAddrs {
    /// Every outbound address, comma-separated, as the startup line prints it.
    pub fn outbound_list(&self) -> String {
        joined(self.outbound, &self.more_outbound)
    }

    /// Every inbound address, comma-separated.
    pub fn inbound_list(&self) -> String {
        joined(self.inbound, &self.more_inbound)
    }

    /// Whether `addr` is one of the outbound listeners.
    pub fn is_outbound(&self, addr: SocketAddr) -> bool {
        addr == self.outbound || self.more_outbound.contains(&addr)
    }
}

fn joined(first: SocketAddr, more: &[SocketAddr]) -> String {
    std::iter::once(first)
        .chain(more.iter().copied())
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

pub struct State {
    live: ArcSwap<Snapshot>,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// Resilience's own families (retries, breakers, outliers, rate limits, faults).
    pub resilience: ResilienceMetrics,
    pub authz: AuthzMetrics,
    /// Identity's metric families, registered with or without an identity (inbound peers
    /// and mTLS refusals are counted either way).
    pub tls_metrics: TlsMetrics,
    /// Spans and the access log.
    pub recorder: Arc<Recorder>,
    pub logs: LogControl,
    last_error: ArcSwapOption<String>,
    listening: AtomicBool,
    /// A config from the source has been applied (static mode: at start).
    applied: AtomicBool,
    draining: AtomicBool,
    bound: OnceLock<BoundAddrs>,
    /// Counters for requests that reached no service, per direction.
    pub unrouted_outbound: RouteStats,
    pub unrouted_inbound: RouteStats,
    /// Counters for redirected inbound requests when no workload is configured.
    /// Redirected outbound HTTP no service takes, sent on to its original destination.
    pub passthrough_outbound: RouteStats,
    pub redirected_inbound: RouteStats,
    pub tcp_outbound: TcpStats,
    pub tcp_inbound: TcpStats,
    pub detect: DetectStats,
    /// Ports whose detection timeout was already logged (logged once per port).
    timeout_ports: Mutex<HashSet<u16>>,
    /// xDS mode: outbound services fetched when first addressed.
    on_demand: OnceLock<Arc<OnDemand>>,
    /// xDS mode: the discovery stream's state, for `/config_dump`.
    /// Rendered by the xDS client, which owns its shape (state knows no xDS types).
    xds: ArcSwapOption<serde_json::Value>,
    tls: OnceLock<Arc<MeshTls>>,
    /// Redirected inbound: one cluster (and connection pool) per app address, shared by
    /// every client connection to it.
    app_clusters: Mutex<HashMap<SocketAddr, Arc<Cluster>>>,
}

/// What a proxy's state holds besides its first snapshot, each made by its own concern.
pub struct Parts {
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub resilience: ResilienceMetrics,
    pub authz: AuthzMetrics,
    pub tls_metrics: TlsMetrics,
    pub recorder: Arc<Recorder>,
    pub logs: LogControl,
}

impl State {
    pub fn new(first: Snapshot, parts: Parts) -> Self {
        let Parts {
            settings,
            metrics,
            resilience,
            authz,
            tls_metrics,
            recorder,
            logs,
        } = parts;
        let unrouted_outbound = metrics.route(Direction::Outbound, "unknown", "unknown");
        let unrouted_inbound = metrics.route(Direction::Inbound, "unknown", "unknown");
        let redirected_inbound = metrics.route(Direction::Inbound, "passthrough", "default");
        let passthrough_outbound = metrics.route(Direction::Outbound, "passthrough", "default");
        State {
            live: ArcSwap::from_pointee(first),
            settings,
            resilience,
            authz,
            tls_metrics,
            recorder,
            logs,
            last_error: ArcSwapOption::empty(),
            listening: AtomicBool::new(false),
            applied: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            bound: OnceLock::new(),
            unrouted_outbound,
            unrouted_inbound,
            redirected_inbound,
            passthrough_outbound,
            tcp_outbound: metrics.tcp(Direction::Outbound),
            tcp_inbound: metrics.tcp(Direction::Inbound),
            detect: DetectStats::new(&metrics),
            timeout_ports: Mutex::new(HashSet::new()),
            on_demand: OnceLock::new(),
            xds: ArcSwapOption::empty(),
            tls: OnceLock::new(),
            app_clusters: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The current snapshot, kept alive for as long as the caller holds it.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// Installs a snapshot that already passed validation; requests in flight keep theirs.
    pub fn install(&self, next: Snapshot) {
        if let Some(tls) = self.tls() {
            // A mesh without a CA sends no anchors: then there is no certificate to get.
            if !next.trust_anchors.is_empty() {
                tls.set_anchors(&next.trust_anchors);
            }
            tls.want(
                next.identity
                    .clone()
                    .filter(|_| !next.trust_anchors.is_empty()),
            );
        }
        self.live.store(Arc::new(next));
        self.last_error.store(None);
        self.applied.store(true, Ordering::Release);
    }

    pub fn is_applied(&self) -> bool {
        self.applied.load(Ordering::Acquire)
    }

    /// For a source that delivers its first config later (xDS): not ready until `install`.
    pub fn await_first_config(&self) {
        self.applied.store(false, Ordering::Release);
    }

    /// Records a refused config; the running snapshot stays.
    pub fn reject(&self, error: String) {
        self.last_error.store(Some(Arc::new(error)));
    }

    pub fn last_error(&self) -> Option<Arc<String>> {
        self.last_error.load_full()
    }

    pub fn set_listening(&self, bound: BoundAddrs) {
        let _ = self.bound.set(bound);
        self.listening.store(true, Ordering::Release);
    }

    pub fn bound(&self) -> Option<BoundAddrs> {
        self.bound.get().cloned()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// True the first time a port's detection times out (the rare path; a lock is fine).
    pub fn first_detect_timeout(&self, port: u16) -> bool {
        self.timeout_ports
            .lock()
            .map(|mut s| s.insert(port))
            .unwrap_or(false)
    }

    /// xDS mode: turns on on-demand outbound discovery (once, at start).
    pub fn set_on_demand(&self, od: Arc<OnDemand>) {
        let _ = self.on_demand.set(od);
    }

    pub fn on_demand(&self) -> Option<&Arc<OnDemand>> {
        self.on_demand.get()
    }

    /// The cluster of a redirected inbound connection's app, made on first use.
    pub fn app_cluster(&self, app: SocketAddr, make: impl FnOnce() -> Cluster) -> Arc<Cluster> {
        let mut clusters = self
            .app_clusters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        clusters
            .entry(app)
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }

    /// xDS mode with a token: turns on identity (once, at start).
    pub fn set_tls(&self, tls: Arc<MeshTls>) {
        let _ = self.tls.set(tls);
    }

    /// Mesh TLS, when this proxy has (or is getting) an identity.
    pub fn tls(&self) -> Option<&Arc<MeshTls>> {
        self.tls.get()
    }

    /// Identity is on and the mesh has a CA, but no certificate is held yet.
    pub fn awaits_certificate(&self) -> bool {
        self.tls()
            .is_some_and(|tls| !tls.is_ready() && !self.live.load().trust_anchors.is_empty())
    }

    pub fn set_xds_status(&self, status: serde_json::Value) {
        self.xds.store(Some(Arc::new(status)));
    }

    pub fn xds_status(&self) -> Option<Arc<serde_json::Value>> {
        self.xds.load_full()
    }

    /// Ready: a config is applied, listeners are bound, not draining, and with identity on
    /// (a mesh CA) a certificate is held. A source that loses its connection keeps the proxy
    /// ready on the last config.
    pub fn is_ready(&self) -> bool {
        self.applied.load(Ordering::Acquire)
            && self.listening.load(Ordering::Acquire)
            && !self.is_draining()
            && !self.awaits_certificate()
    }
}
