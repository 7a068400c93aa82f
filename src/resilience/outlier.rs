//! Outlier detection per service (`outlierDetection`): upstream failures in a row eject an
//! endpoint for `baseEjectionTime` × its ejections (capped), never more than
//! `maxEjectionPercent` of the endpoints at once; after the time one probe request decides.
//! Decides only; the state lives on `balance::Endpoint::health`.

use std::{sync::atomic::Ordering, time::Duration};

use skiff_api::model;

use super::ClusterMetrics;
use crate::balance::{EndpointSet, Pick, clock};

/// The longest ejection, unless `baseEjectionTime` alone is longer.
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// A compiled `outlierDetection` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlierPolicy {
    pub consecutive_errors: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl OutlierPolicy {
    pub fn compile(spec: &model::OutlierDetection) -> Self {
        OutlierPolicy {
            consecutive_errors: spec.consecutive_errors.max(1),
            interval: spec.interval.get(),
            base_ejection_time: spec.base_ejection_time.get(),
            max_ejection_percent: spec.max_ejection_percent.min(100),
        }
    }

    fn ejection_time(&self, ejections: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(ejections.max(1))
            .min(MAX_EJECTION.max(self.base_ejection_time))
    }

    /// Records an upstream outcome of `pick` (`failed`: a 5xx, reset, connect failure or
    /// per-try timeout); ejects or re-admits as the policy says.
    pub fn observe(&self, set: &EndpointSet, pick: &Pick, failed: bool, metrics: &ClusterMetrics) {
        let h = &pick.endpoint.health;
        let now = clock();
        if !failed {
            h.consecutive.store(0, Ordering::Relaxed);
            if pick.probe {
                h.ejected_until.store(0, Ordering::Relaxed);
                h.healthy_since.store(now, Ordering::Relaxed);
                metrics.readmitted();
            } else if h.ejections.load(Ordering::Relaxed) > 0
                && now.saturating_sub(h.healthy_since.load(Ordering::Relaxed))
                    >= nanos(self.interval)
            {
                // Each interval in service lowers the multiplier of the next ejection.
                h.ejections.fetch_sub(1, Ordering::Relaxed);
                h.healthy_since.store(now, Ordering::Relaxed);
            }
            return;
        }
        if pick.probe {
            let ejections = h.ejections.fetch_add(1, Ordering::Relaxed) + 1;
            let until = now.saturating_add(nanos(self.ejection_time(ejections)));
            h.ejected_until.store(until, Ordering::Relaxed);
            metrics.reejected();
            return;
        }
        let in_a_row = h.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row < self.consecutive_errors {
            return;
        }
        let cap = set.endpoints().len() * self.max_ejection_percent as usize / 100;
        if set.ejected() >= cap {
            return;
        }
        let ejections = h.ejections.load(Ordering::Relaxed) + 1;
        let until = now.saturating_add(nanos(self.ejection_time(ejections)));
        // Concurrent failures race to eject; one wins.
        if h.ejected_until
            .compare_exchange(0, until, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            h.ejections.store(ejections, Ordering::Relaxed);
            h.consecutive.store(0, Ordering::Relaxed);
            metrics.ejected();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::Arc};

    use skiff_api::model::LoadBalancer;

    use super::*;
    use crate::{
        balance::Endpoint,
        resilience::{ResilienceMetrics, Tried},
    };

    fn setup(n: u16, percent: u32) -> (EndpointSet, OutlierPolicy, ClusterMetrics) {
        let eps = (0..n)
            .map(|i| {
                Arc::new(Endpoint::new(
                    SocketAddr::from(([127, 0, 0, 1], 1000 + i)),
                    None,
                    None,
                ))
            })
            .collect();
        let set = EndpointSet::new("svc".into(), LoadBalancer::RoundRobin, eps);
        let policy = OutlierPolicy {
            consecutive_errors: 3,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: percent,
        };
        let mut reg = prometheus_client::registry::Registry::default();
        let m = ResilienceMetrics::register(&mut reg).cluster("svc");
        (set, policy, m)
    }

    fn pick_index(set: &EndpointSet, i: usize) -> Pick {
        loop {
            let p = set.pick(Tried::default()).expect("an endpoint");
            if p.index == i {
                return p;
            }
        }
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_count() {
        let (set, policy, m) = setup(3, 50);
        for _ in 0..2 {
            policy.observe(&set, &pick_index(&set, 0), true, &m);
        }
        policy.observe(&set, &pick_index(&set, 0), false, &m);
        policy.observe(&set, &pick_index(&set, 0), true, &m);
        policy.observe(&set, &pick_index(&set, 0), true, &m);
        assert_eq!(set.ejected(), 0, "the success broke the run");
        policy.observe(&set, &pick_index(&set, 0), true, &m);
        assert_eq!(set.ejected(), 1);
        assert!(set.endpoints()[0].health.is_ejected());
    }

    #[test]
    fn max_ejection_percent_holds() {
        let (set, policy, m) = setup(3, 50);
        for _ in 0..30 {
            let p = set.pick(Tried::default()).expect("never all ejected");
            policy.observe(&set, &p, true, &m);
        }
        assert_eq!(set.ejected(), 1, "50% of 3 is 1");
    }

    #[test]
    fn a_failed_probe_ejects_for_longer_and_a_good_one_readmits() {
        let (set, policy, m) = setup(2, 100);
        for _ in 0..3 {
            policy.observe(&set, &pick_index(&set, 0), true, &m);
        }
        let h = &set.endpoints()[0].health;
        let first = h.ejected_until.load(Ordering::Relaxed);
        h.ejected_until.store(1, Ordering::Relaxed); // time is up
        let probe = pick_index(&set, 0);
        assert!(probe.probe);
        policy.observe(&set, &probe, true, &m);
        drop(probe);
        assert_eq!(h.ejections.load(Ordering::Relaxed), 2);
        assert!(
            h.ejected_until.load(Ordering::Relaxed) > first,
            "60 s now, not 30"
        );
        h.ejected_until.store(1, Ordering::Relaxed);
        let probe = pick_index(&set, 0);
        policy.observe(&set, &probe, false, &m);
        drop(probe);
        assert!(!h.is_ejected());
        assert_eq!(set.ejected(), 0);
    }
}
