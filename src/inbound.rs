//! The inbound side: connections to this workload are forwarded to its app: with redirection
//! to `127.0.0.1:<original destination port>` (or, for an app that listens on the pod's IPv4
//! address only, to that address from [`POD_SOURCE`]), in local mode to the workload's
//! `inbound.app`.
//! Mesh TLS is terminated by `conn` as `inbound.mtls` says; the peer identity it proves stays
//! with the connection here, for the workload's rate limit, authorization and metrics.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, OnceLock},
};

use http::request::Parts;
use prometheus_client::metrics::counter::Counter;
use skiff_api::model::MtlsMode;

use tracing::{debug, info};

use crate::{
    authz::{self, AuthzError},
    cluster::Cluster,
    conn::Side,
    http::{Handler, ProxyError},
    resilience::RateLimiter,
    route::{Route, RouteError, authority},
    snapshot::{DEFAULT_ROUTE, Snapshot, redirected_app_cluster},
    state::State,
    telemetry::{Direction, RouteStats, TcpStats},
    tls::TlsMetrics,
};

/// The source address of the sidecar's connections to the app at the pod's own IPv4 address:
/// `skiff init` lets traffic from it through `lo` untouched, where the sidecar's other
/// connections to the pod's address are redirected to the inbound side.
pub const POD_SOURCE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)), 0);

/// [`POD_SOURCE`] for the pod's IPv6 address: `::6`, which `skiff init` puts on `lo` (IPv6
/// loopback is `::1` alone) when it installs the IPv6 rules.
pub const POD_SOURCE_V6_IP: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);
pub const POD_SOURCE_V6: SocketAddr = SocketAddr::new(IpAddr::V6(POD_SOURCE_V6_IP), 0);

/// The source of the sidecar's connections to the app at the pod's address `dst`.
pub fn pod_source(dst: SocketAddr) -> SocketAddr {
    if dst.is_ipv4() {
        POD_SOURCE
    } else {
        POD_SOURCE_V6
    }
}

/// Per inbound connection: where a redirected connection was going, as a route to the app,
/// and who the client proved to be.
pub struct Inbound {
    redirected: Option<Route>,
    /// The app port a redirected connection was for (authorization's `ports`).
    redirected_port: Option<u16>,
    peer: OnceLock<Client>,
    tls_metrics: TlsMetrics,
}

/// The client of one inbound connection.
struct Client {
    /// Its SPIFFE ID; `None`: unauthenticated (plaintext under permissive).
    identity: Option<Arc<str>>,
    /// Its series of `skiff_inbound_peer_requests_total`.
    requests: Counter,
}

impl Inbound {
    /// A connection whose original destination is not the listener itself was redirected:
    /// the app listens on that port on loopback (the pod's own port), or else on the pod's
    /// IPv4 address, the original destination.
    pub fn new(state: &State, dst: SocketAddr, local: SocketAddr) -> Self {
        let tls_metrics = state.tls_metrics.clone();
        if dst == local {
            return Inbound {
                redirected: None,
                redirected_port: None,
                peer: OnceLock::new(),
                tls_metrics,
            };
        }
        let loopback = match dst.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        let app = SocketAddr::new(loopback, dst.port());
        let snap = state.snapshot();
        let stats = snap
            .inbound
            .as_ref()
            .and_then(|ib| ib.listener.as_ref())
            .map_or_else(
                || state.redirected_inbound.clone(),
                |l| l.route.stats.clone(),
            );
        let pod = (!dst.ip().is_loopback()).then_some(dst);
        let cluster = state.app_cluster(app, || {
            redirected_app_cluster(app, pod, &state.settings, &state.resilience)
        });
        Inbound {
            redirected: Some(Route::fallback(DEFAULT_ROUTE, cluster, stats)),
            redirected_port: Some(app.port()),
            peer: OnceLock::new(),
            tls_metrics,
        }
    }

    /// The client's SPIFFE ID, if it proved one.
    pub fn peer_identity(&self) -> Option<&Arc<str>> {
        self.peer.get()?.identity.as_ref()
    }

    fn count_peer(&self) {
        if let Some(p) = self.peer.get() {
            p.requests.inc();
        }
    }

    /// Authorization of one request (`method` and `path`) or one TCP connection (neither).
    fn decide(
        &self,
        snap: &Snapshot,
        method: Option<&str>,
        path: Option<&str>,
    ) -> Result<(), AuthzError> {
        self.count_peer();
        let Some(ib) = snap.inbound.as_ref() else {
            return Ok(());
        };
        if ib.authz.is_empty() {
            return Ok(());
        }
        // A connection that was not redirected reached the workload's own listener.
        let port = self
            .redirected_port
            .or_else(|| ib.listener.as_ref().map(|l| l.app.port()))
            .unwrap_or(0);
        let normal = path.map(authz::normalize_path);
        let req = authz::Request {
            method,
            path: normal.as_deref(),
            port,
        };
        let peer = authz::Peer::from(self.peer_identity().map(|p| &**p));
        let decision = ib.authz.decide(peer, &req);
        if let Some(audit) = decision.audit().filter(|v| !v.is_allowed()) {
            info!(
                peer = ?peer,
                method,
                path = req.path,
                port,
                policy = audit.policy().unwrap_or("none allows it"),
                enforced = decision.enforced().as_str(),
                "authorization audit: would deny"
            );
        }
        decision.check().inspect_err(|e| {
            debug!(peer = ?peer, method, path = req.path, port, error = %e, "authorization denied");
        })
    }

    fn route<'a>(&'a self, snap: &'a Snapshot) -> Option<&'a Route> {
        self.redirected.as_ref().or(snap
            .inbound
            .as_ref()
            .and_then(|ib| ib.listener.as_ref())
            .map(|l| &l.route))
    }
}

impl Handler for Inbound {
    fn direction(&self) -> Direction {
        Direction::Inbound
    }

    fn peer_identity(&self) -> Option<&Arc<str>> {
        Inbound::peer_identity(self)
    }

    fn resolve<'a>(&'a self, snap: &'a Snapshot, parts: &Parts) -> Result<&'a Route, RouteError> {
        self.route(snap).ok_or_else(|| RouteError::UnknownService {
            authority: authority(parts).map(str::to_owned),
        })
    }

    fn unrouted<'s>(&self, state: &'s State) -> &'s RouteStats {
        &state.unrouted_inbound
    }

    fn rate_limit<'a>(&self, snap: &'a Snapshot) -> Option<&'a RateLimiter> {
        snap.inbound.as_ref()?.limiter.as_ref()
    }

    fn authorize(&self, snap: &Snapshot, parts: &Parts) -> Result<(), ProxyError> {
        Ok(self.decide(snap, Some(parts.method.as_str()), Some(parts.uri.path()))?)
    }
}

impl Side for Inbound {
    fn is_opaque(&self, state: &State, snap: &Snapshot, _dst: SocketAddr) -> bool {
        // The destination that matters is the app's port, not the listener's.
        self.opaque_target(snap, _dst).is_some_and(|c| {
            c.members()
                .endpoints
                .endpoints()
                .iter()
                .any(|e| state.settings.is_opaque_port(e.addr.port()))
        })
    }

    fn opaque_target(&self, snap: &Snapshot, _dst: SocketAddr) -> Option<Arc<Cluster>> {
        self.route(snap)?.backends().next().map(|(c, _)| c.clone())
    }

    fn tcp_stats<'s>(&self, state: &'s State) -> &'s TcpStats {
        &state.tcp_inbound
    }

    fn mtls(&self, snap: &Snapshot) -> Option<MtlsMode> {
        // No workload, or one with no inbound settings (a pod's sidecar): permissive.
        Some(
            snap.inbound
                .as_ref()
                .map_or(MtlsMode::Permissive, |ib| ib.mtls),
        )
    }

    fn set_peer(&self, identity: Option<Arc<str>>) {
        let requests = self.tls_metrics.peer(identity.as_deref());
        let _ = self.peer.set(Client { identity, requests });
    }

    fn admit_tcp(&self, state: &State, _dst: SocketAddr) -> bool {
        self.decide(&state.snapshot(), None, None).is_ok()
    }
}
