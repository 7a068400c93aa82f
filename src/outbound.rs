//! The outbound side: a connection from the local app is resolved to a service by its
//! original destination, then (HTTP) by authority, then by the `"*"` catch-all, and sent
//! along that service's routes. Redirected traffic no service takes (opaque TCP, and HTTP
//! once the control plane said no service claims it) goes on to its original destination
//! (passthrough): an unknown destination stays reachable.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use http::request::Parts;
use skiff_api::{
    model::Protocol,
    resource::{addr_alias, host_alias, is_plausible_authority},
};

use crate::{
    cluster::Cluster,
    conn::Side,
    http::Handler,
    ondemand::OnDemand,
    route::{Route, RouteError, authority},
    snapshot::{Snapshot, single_cluster},
    state::State,
    telemetry::{Direction, RouteStats, TcpStats},
};

/// Per outbound connection: its original destination. Without redirection that is the
/// listener's own address, which a service may claim too (a local TCP forward).
pub struct Outbound {
    dst: SocketAddr,
    /// iptables sent it here: `dst` is where the app meant to go.
    redirected: bool,
    /// xDS mode: services not held yet are fetched on demand.
    on_demand: Option<Arc<OnDemand>>,
    /// For a passthrough: the settings and metrics its one-off cluster is built with.
    state: Arc<State>,
    /// Redirected HTTP no service takes: the route to the original destination, made once
    /// per connection when first needed.
    passthrough_route: OnceLock<Route>,
}

/// The cluster name (and `skiff_cluster_*` label) of connections passed through to their
/// original destination.
pub const PASSTHROUGH: &str = "passthrough";

impl Outbound {
    pub fn new(state: &Arc<State>, dst: SocketAddr, local: SocketAddr) -> Self {
        Outbound {
            dst,
            redirected: dst != local,
            on_demand: state.on_demand().cloned(),
            state: state.clone(),
            passthrough_route: OnceLock::new(),
        }
    }

    /// A redirected connection no service takes goes where the app meant it to: the proxy's
    /// own connections are not redirected, so this reaches the destination itself. Built per
    /// connection: destinations are unbounded and must not pile up in a cache.
    fn passthrough(&self) -> Option<Arc<Cluster>> {
        if !self.redirected {
            return None;
        }
        let state = &self.state;
        Some(Arc::new(single_cluster(
            PASSTHROUGH,
            self.dst,
            &state.settings,
            &state.resilience,
            None,
        )))
    }

    /// The route of redirected HTTP no service takes: to the original destination. In xDS
    /// mode only once the control plane was asked about that destination and the request's
    /// host (either may be a service not held yet); `None` when the connection was not
    /// redirected.
    fn passthrough_http(&self, host: Option<&str>) -> Option<&Route> {
        let unanswered = |od: &Arc<OnDemand>| {
            !od.asked(&addr_alias(self.dst))
                || host.is_some_and(|h| is_plausible_authority(h) && !od.asked(&host_alias(h)))
        };
        if !self.redirected || self.on_demand.as_ref().is_some_and(unanswered) {
            return None;
        }
        if let Some(route) = self.passthrough_route.get() {
            return Some(route);
        }
        let cluster = self.passthrough()?;
        let stats = self.state.passthrough_outbound.clone();
        Some(
            self.passthrough_route
                .get_or_init(|| Route::fallback(PASSTHROUGH, cluster, stats)),
        )
    }

    /// Where the connection was going, when that names a service. On demand only a
    /// redirected destination is looked up: the listener's own is no alias worth asking for.
    fn by_dst<'s>(&self, snap: &'s Snapshot) -> Option<&'s Arc<crate::snapshot::Service>> {
        snap.service_by_addr(self.dst)
    }
}

impl Handler for Outbound {
    fn direction(&self) -> Direction {
        Direction::Outbound
    }

    fn resolve<'a>(&'a self, snap: &'a Snapshot, parts: &Parts) -> Result<&'a Route, RouteError> {
        let host = authority(parts);
        let found = self.by_dst(snap).or_else(|| snap.service_by_host(host));
        let svc = match (found, snap.catch_all()) {
            (Some(svc), _) => svc,
            // On demand, the catch-all takes a host only once the control plane was asked
            // about it: the host may be a service not held yet.
            (None, Some(any))
                if self.on_demand.as_ref().is_none_or(|od| {
                    host.is_none_or(|h| !is_plausible_authority(h) || od.asked(&host_alias(h)))
                }) =>
            {
                any
            }
            (None, _) => {
                return self
                    .passthrough_http(host)
                    .ok_or_else(|| RouteError::UnknownService {
                        authority: host.map(str::to_owned),
                    });
            }
        };
        svc.touch();
        Ok(svc.route(parts))
    }

    fn on_demand_aliases(&self, parts: &Parts) -> Vec<String> {
        let mut aliases = Vec::with_capacity(2);
        if self.redirected {
            aliases.push(addr_alias(self.dst));
        }
        // A host no service could claim is not worth a subscription (and an app cannot grow
        // the stream with junk).
        if let Some(a) = authority(parts).filter(|a| is_plausible_authority(a)) {
            aliases.push(host_alias(a));
        }
        aliases
    }

    fn unrouted<'s>(&self, state: &'s State) -> &'s RouteStats {
        &state.unrouted_outbound
    }
}

impl Side for Outbound {
    fn prefetch(&self, state: &State) -> impl Future<Output = ()> + Send {
        let wanted = match state.on_demand() {
            Some(od) if self.redirected && state.snapshot().service_by_addr(self.dst).is_none() => {
                Some((od, [addr_alias(self.dst)]))
            }
            _ => None,
        };
        async move {
            if let Some((od, alias)) = wanted {
                od.fetch(&alias).await;
            }
        }
    }

    fn is_opaque(&self, state: &State, snap: &Snapshot, dst: SocketAddr) -> bool {
        state.settings.is_opaque_port(dst.port())
            || self
                .by_dst(snap)
                .is_some_and(|s| s.protocol == Protocol::Tcp)
            // Without redirection a `protocol: tcp` catch-all means this listener is TCP-only.
            || (!self.redirected && snap.catch_all().is_some_and(|s| s.protocol == Protocol::Tcp))
    }

    fn opaque_target(&self, snap: &Snapshot, _dst: SocketAddr) -> Option<Arc<Cluster>> {
        let Some(svc) = self.by_dst(snap).or_else(|| snap.catch_all()) else {
            let cluster = self.passthrough();
            if cluster.is_some() {
                self.state.tcp_outbound.passthrough.inc();
            }
            return cluster;
        };
        svc.touch();
        Some(svc.cluster.clone())
    }

    fn tcp_stats<'s>(&self, state: &'s State) -> &'s TcpStats {
        &state.tcp_outbound
    }
}
