//! The inbound side: connections to this workload are forwarded to its app (in local mode
//! the workload's `inbound.app`). Mesh TLS termination and authorization join here later.

use std::{net::SocketAddr, sync::Arc};

use http::request::Parts;

use crate::{
    conn::Side,
    http::Handler,
    route::{Route, RouteError, authority},
    snapshot::{Cluster, Snapshot},
    state::State,
    telemetry::{RouteStats, TcpStats},
};

/// The inbound side has no per-connection state yet.
pub struct Inbound;

impl Handler for Inbound {
    fn resolve<'s>(&self, snap: &'s Snapshot, parts: &Parts) -> Result<&'s Route, RouteError> {
        snap.inbound
            .as_ref()
            .map(|ib| &ib.route)
            .ok_or_else(|| RouteError::UnknownService {
                authority: authority(parts).map(str::to_owned),
            })
    }

    fn unrouted<'s>(&self, state: &'s State) -> &'s RouteStats {
        &state.unrouted_inbound
    }
}

impl Side for Inbound {
    fn is_opaque(&self, state: &State, snap: &Snapshot, _dst: SocketAddr) -> bool {
        // The destination that matters is the app's port, not the listener's.
        snap.inbound
            .as_ref()
            .is_some_and(|ib| state.settings.is_opaque_port(ib.app.port()))
    }

    fn opaque_target(&self, snap: &Snapshot, _dst: SocketAddr) -> Option<Arc<Cluster>> {
        let route = &snap.inbound.as_ref()?.route;
        route.backends().next().map(|(c, _)| c.clone())
    }

    fn tcp_stats<'s>(&self, state: &'s State) -> &'s TcpStats {
        &state.tcp_inbound
    }
}
