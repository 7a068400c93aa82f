//! Where a backend's requests go: a service's endpoint set (balance) paired, index for index,
//! with each endpoint's connection pool (upstream), and the service's breaker, retry budget and
//! outlier policy (resilience). The one place decisions meet sockets; built per snapshot.

use std::sync::Arc;

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
    pub endpoints: EndpointSet,
    /// `pools[i]` holds the connections of `endpoints.endpoints()[i]`.
    pub pools: Vec<Arc<EndpointPool>>,
    pub breaker: Breaker,
    pub budget: Option<Budget>,
    pub outlier: Option<OutlierPolicy>,
    pub metrics: ClusterMetrics,
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
    pub fn pool(&self, pick: &Pick) -> &Arc<EndpointPool> {
        &self.pools[pick.index]
    }

    /// Feeds an attempt's outcome to the endpoint's load estimate and outlier state. Only
    /// what the upstream did counts: the proxy's own refusals are not the endpoint's fault.
    pub fn observe(&self, pick: &Pick, outcome: Observed) {
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
            _ => pick.observe_failure(self.pool(pick).connect_timeout()),
        }
        if let Some(policy) = &self.outlier {
            policy.observe(&self.endpoints, pick, failed, &self.metrics);
        }
    }
}
