//! The outbound side: a connection from the local app is resolved to a service by its
//! original destination, then (HTTP) by authority, then by the `"*"` catch-all, and sent
//! along that service's routes.

use std::{net::SocketAddr, sync::Arc};

use http::request::Parts;
use skiff_api::model::Protocol;

use crate::{
    conn::Side,
    http::Handler,
    route::{Route, RouteError, authority},
    snapshot::{Cluster, Snapshot},
    state::State,
    telemetry::{RouteStats, TcpStats},
};

/// Per outbound connection: the original destination, when it differs from the listener.
pub struct Outbound {
    dst: Option<SocketAddr>,
}

impl Outbound {
    pub fn new(dst: SocketAddr, local: SocketAddr) -> Self {
        Outbound {
            dst: (dst != local).then_some(dst),
        }
    }
}

impl Handler for Outbound {
    fn resolve<'a>(&'a self, snap: &'a Snapshot, parts: &Parts) -> Result<&'a Route, RouteError> {
        let by_dst = self.dst.and_then(|d| snap.service_by_addr(d));
        let svc = by_dst
            .or_else(|| snap.service_by_authority(authority(parts)))
            .ok_or_else(|| RouteError::UnknownService {
                authority: authority(parts).map(str::to_owned),
            })?;
        Ok(svc.route(parts))
    }

    fn unrouted<'s>(&self, state: &'s State) -> &'s RouteStats {
        &state.unrouted_outbound
    }
}

impl Side for Outbound {
    fn is_opaque(&self, state: &State, snap: &Snapshot, dst: SocketAddr) -> bool {
        state.settings.is_opaque_port(dst.port())
            || self
                .dst
                .and_then(|d| snap.service_by_addr(d))
                .is_some_and(|s| s.protocol == Protocol::Tcp)
            // Without redirection a `protocol: tcp` catch-all means this listener is TCP-only.
            || (self.dst.is_none() && snap.catch_all().is_some_and(|s| s.protocol == Protocol::Tcp))
    }

    fn opaque_target(&self, snap: &Snapshot, _dst: SocketAddr) -> Option<Arc<Cluster>> {
        self.dst
            .and_then(|d| snap.service_by_addr(d))
            .or_else(|| snap.catch_all())
            .map(|s| s.cluster.clone())
    }

    fn tcp_stats<'s>(&self, state: &'s State) -> &'s TcpStats {
        &state.tcp_outbound
    }
}
