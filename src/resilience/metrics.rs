//! Resilience's own metric families (`skiff_retry_*`, `skiff_breaker_*`, `skiff_outlier_*`,
//! `skiff_rate_limit_*`, `skiff_fault_*`), registered once at start. Series appear when the
//! event first happens: retries, overflows and ejections are the rare path, not per request.

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{Condition, Threshold};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    service: String,
    reason: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OverflowLabels {
    service: String,
    threshold: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkloadLabels {
    workload: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    service: String,
    route: String,
    fault: &'static str,
}

#[derive(Debug, Default)]
struct Families {
    retries: Family<RetryLabels, Counter>,
    budget_exhausted: Family<ServiceLabels, Counter>,
    overflow: Family<OverflowLabels, Counter>,
    ejections: Family<ServiceLabels, Counter>,
    ejected: Family<ServiceLabels, Gauge>,
    rate_limited: Family<WorkloadLabels, Counter>,
    faults: Family<FaultLabels, Counter>,
}

/// Every resilience family; cloned handles share the series.
#[derive(Clone, Debug, Default)]
pub struct ResilienceMetrics(Arc<Families>);

impl ResilienceMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = Families::default();
        reg.register(
            "skiff_retry_attempts",
            "Attempts after the first, by the condition that caused them and how they ended",
            m.retries.clone(),
        );
        reg.register(
            "skiff_retry_budget_exhausted",
            "Retries not made because the service's retry budget was spent",
            m.budget_exhausted.clone(),
        );
        reg.register(
            "skiff_breaker_overflow",
            "Requests, connections and retries refused by a circuit-breaker threshold",
            m.overflow.clone(),
        );
        reg.register(
            "skiff_outlier_ejections",
            "Endpoints ejected by outlier detection",
            m.ejections.clone(),
        );
        reg.register(
            "skiff_outlier_ejected_endpoints",
            "Endpoints ejected now",
            m.ejected.clone(),
        );
        reg.register(
            "skiff_rate_limit_rejected",
            "Inbound requests refused by the workload's rate limit",
            m.rate_limited.clone(),
        );
        reg.register(
            "skiff_fault_injected",
            "Faults injected by a route's fault policy",
            m.faults.clone(),
        );
        ResilienceMetrics(Arc::new(m))
    }

    /// Handles for one service; called when a snapshot is compiled.
    pub fn cluster(&self, service: &str) -> ClusterMetrics {
        ClusterMetrics {
            families: self.0.clone(),
            service: service.into(),
        }
    }

    /// The refusal counter of a workload's rate limit.
    pub fn rate_limited(&self, workload: &str) -> Counter {
        self.0.rate_limited.get_or_create_owned(&WorkloadLabels {
            workload: workload.to_owned(),
        })
    }

    /// Counters of a route with a fault policy.
    pub fn faults(&self, service: &str, route: &str) -> FaultStats {
        let get = |fault| {
            self.0.faults.get_or_create_owned(&FaultLabels {
                service: service.to_owned(),
                route: route.to_owned(),
                fault,
            })
        };
        FaultStats {
            aborts: get("abort"),
            delays: get("delay"),
        }
    }
}

/// One service's resilience series, created on first use.
#[derive(Clone, Debug)]
pub struct ClusterMetrics {
    families: Arc<Families>,
    service: Arc<str>,
}

impl ClusterMetrics {
    fn service(&self) -> ServiceLabels {
        ServiceLabels {
            service: self.service.to_string(),
        }
    }

    /// A retried attempt ended; `success`: the policy would not have retried its outcome.
    pub fn retried(&self, reason: Condition, success: bool) {
        self.families
            .retries
            .get_or_create(&RetryLabels {
                service: self.service.to_string(),
                reason: reason.as_str(),
                outcome: if success { "success" } else { "failure" },
            })
            .inc();
    }

    pub fn budget_exhausted(&self) {
        self.families
            .budget_exhausted
            .get_or_create(&self.service())
            .inc();
    }

    pub fn overflow(&self, threshold: Threshold) {
        self.families
            .overflow
            .get_or_create(&OverflowLabels {
                service: self.service.to_string(),
                threshold: threshold.as_str(),
            })
            .inc();
    }

    pub fn ejected(&self) {
        let labels = self.service();
        self.families.ejections.get_or_create(&labels).inc();
        self.families.ejected.get_or_create(&labels).inc();
    }

    /// A failed probe sent an ejected endpoint out again (the gauge already counts it).
    pub fn reejected(&self) {
        self.families.ejections.get_or_create(&self.service()).inc();
    }

    pub fn readmitted(&self) {
        self.families.ejected.get_or_create(&self.service()).dec();
    }

    /// Sets the ejected-endpoints gauge when a snapshot is compiled (endpoints may have left).
    pub fn set_ejected(&self, n: usize) {
        let labels = self.service();
        if n > 0 || self.families.ejected.get(&labels).is_some() {
            self.families
                .ejected
                .get_or_create(&labels)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// A route's fault counters.
#[derive(Clone, Debug, Default)]
pub struct FaultStats {
    pub aborts: Counter,
    pub delays: Counter,
}
