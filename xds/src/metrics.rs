//! The control plane's Prometheus metrics: families registered once at startup, one handle
//! per resource type resolved up front. `admin` encodes them; sources and streams count.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use skiff_api::resource::Kind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Handles to every metric the control plane keeps.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub connected_proxies: Gauge,
    pushes: Family<TypeLabels, Counter>,
    nacks: Family<TypeLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
}

impl Metrics {
    /// Registers the families in `registry`; prometheus-client appends `_total` to counters.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(
            "skiff_xds_connected_proxies",
            "Proxies with an open discovery stream",
            m.connected_proxies.clone(),
        );
        registry.register(
            "skiff_xds_pushes",
            "Discovery responses sent, by resource type",
            m.pushes.clone(),
        );
        registry.register(
            "skiff_xds_nacks",
            "Responses refused by a proxy, by resource type",
            m.nacks.clone(),
        );
        registry.register(
            "skiff_xds_config_reloads",
            "Config loads (the first one counts), by result: ok or failed",
            m.reloads.clone(),
        );
        // Every series exists from the start, so a scrape shows zeros rather than nothing.
        for kind in Kind::ALL {
            m.push(kind);
            m.nack(kind);
        }
        m.reload(true);
        m.reload(false);
        m
    }

    /// The push counter of `kind`; clone it once per stream.
    pub fn push(&self, kind: Kind) -> Counter {
        self.pushes
            .get_or_create(&TypeLabels {
                r#type: kind.message_name(),
            })
            .clone()
    }

    pub fn nack(&self, kind: Kind) -> Counter {
        self.nacks
            .get_or_create(&TypeLabels {
                r#type: kind.message_name(),
            })
            .clone()
    }

    pub fn reload(&self, ok: bool) -> Counter {
        self.reloads
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "failed" },
            })
            .clone()
    }
}

/// The mesh CA's metrics, registered only when the control plane runs with a CA.
#[derive(Clone, Debug, Default)]
pub struct CaMetrics {
    certificates: Family<ResultLabels, Counter>,
    /// Unix seconds; `Gauge` holds an `i64`, enough for any X.509 date.
    pub anchor_expiration: Gauge,
}

impl CaMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = CaMetrics::default();
        registry.register(
            "skiff_xds_ca_certificates",
            "Certify calls answered, by result: issued or refused",
            m.certificates.clone(),
        );
        registry.register(
            "skiff_xds_ca_anchor_expiration_timestamp_seconds",
            "When the trust anchor the CA signs under expires (Unix seconds)",
            m.anchor_expiration.clone(),
        );
        m.certificate(true);
        m.certificate(false);
        m
    }

    pub fn certificate(&self, issued: bool) -> Counter {
        self.certificates
            .get_or_create(&ResultLabels {
                result: if issued { "issued" } else { "refused" },
            })
            .clone()
    }
}
