//! Where a backend's requests go: a service's endpoint set (balance) paired, index for index,
//! with each endpoint's connection pool (upstream), and the service's breaker, retry budget and
//! outlier policy (resilience). The one place decisions meet sockets; built per snapshot, with
//! its members swappable alone when only the service's endpoints change.

use std::sync::Arc;

use arc_swap::ArcSwap;
use skiff_api::model::Protocol;

use crate::{
    balance::{EndpointSet, Pick},
    resilience::{Breaker, Budget, ClusterMetrics, Failure, OutlierPolicy},
    upstream::EndpointPool,
};

#[derive(Debug)]
pub struct Cluster {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub protocol: Protocol,
    /// Replaced alone by an `Endpoints` update; a request loads it once and keeps it for all
    /// its attempts (a pick's index means the same endpoint throughout).
    members: ArcSwap<Members>,
    pub breaker: Breaker,
    pub budget: Option<Budget>,
    pub outlier: Option<OutlierPolicy>,
    pub metrics: ClusterMetrics,
}

/// A cluster's endpoints, each with its connection pool.
#[derive(Debug)]
pub struct Members {
    pub endpoints: EndpointSet,
    /// `pools[i]` holds the connections of `endpoints.endpoints()[i]`.
    pub pools: Vec<Arc<EndpointPool>>,
}

impl Members {
    pub fn pool(&self, pick: &Pick) -> &Arc<EndpointPool> {
        &self.pools[pick.index]
    }
}

/// How an attempt on an endpoint ended, as the endpoint's load and health see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Response headers arrived with this status.
    Status(u16),
    /// An opaque TCP connection was established.
    Connected,
    Failed(Failure),
}

impl Cluster {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: Arc<str>,
        namespace: Arc<str>,
        protocol: Protocol,
        members: Members,
        breaker: Breaker,
        budget: Option<Budget>,
        outlier: Option<OutlierPolicy>,
        metrics: ClusterMetrics,
    ) -> Cluster {
        Cluster {
            name,
            namespace,
            protocol,
            members: ArcSwap::from_pointee(members),
            breaker,
            budget,
            outlier,
            metrics,
        }
    }

    /// The endpoints now: a request takes them once, for all its attempts.
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// Replaces the endpoints (an `Endpoints` update); requests under way keep theirs.
    pub fn set_members(&self, members: Members) {
        self.metrics.set_ejected(members.endpoints.ejected());
        self.members.store(Arc::new(members));
    }

    /// Feeds an attempt's outcome to the endpoint's load estimate and outlier state. Only
    /// what the upstream did counts: the proxy's own refusals are not the endpoint's fault.
    pub fn observe(&self, members: &Members, pick: &Pick, outcome: Observed) {
        let failed = match outcome {
            Observed::Status(status) => status >= 500,
            Observed::Connected => false,
            Observed::Failed(Failure::Local) => return,
            // Refused requests reached nothing; neither slow nor failing.
            Observed::Failed(Failure::Refused) => {
                pick.observe();
                return;
            }
            Observed::Failed(_) => true,
        };
        match outcome {
            Observed::Status(_) | Observed::Connected => pick.observe(),
            _ => pick.observe_failure(members.pool(pick).connect_timeout()),
        }
        if let Some(policy) = &self.outlier {
            policy.observe(&members.endpoints, pick, failed, &self.metrics);
        }
    }
}
