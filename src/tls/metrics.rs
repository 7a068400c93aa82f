//! Identity's own metric families: the certificate's expiry, renewals, TLS handshakes by
//! direction, result and reason, and inbound requests by peer identity. Registered once at
//! start by `MeshTls`'s owner; handshake and peer series appear on first use.

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    direction: &'static str,
    result: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer_identity: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Inbound,
    Outbound,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Inbound => "inbound",
            Side::Outbound => "outbound",
        }
    }
}

#[derive(Debug, Default)]
struct Families {
    expiration: Gauge<f64, std::sync::atomic::AtomicU64>,
    renewals: Family<ResultLabels, Counter>,
    handshakes: Family<HandshakeLabels, Counter>,
    peers: Family<PeerLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
}

/// Every identity family; cloned handles share the series.
#[derive(Clone, Debug, Default)]
pub struct TlsMetrics(Arc<Families>);

impl TlsMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = Families::default();
        reg.register(
            "skiff_identity_cert_expiration_timestamp_seconds",
            "When this proxy's workload certificate expires (Unix seconds); 0 before the first",
            m.expiration.clone(),
        );
        reg.register(
            "skiff_identity_renewals",
            "Certificate requests to the mesh CA by result (ok, failed); the first one counts",
            m.renewals.clone(),
        );
        reg.register(
            "skiff_tls_handshakes",
            "Mesh TLS handshakes by direction, result (ok, failed) and reason",
            m.handshakes.clone(),
        );
        reg.register(
            "skiff_inbound_peer_requests",
            "Inbound requests and TCP connections by the peer's identity (unauthenticated: none)",
            m.peers.clone(),
        );
        reg.register(
            "skiff_inbound_refused_connections",
            "Inbound connections refused by mTLS mode (reason: plaintext, non-mesh-tls)",
            m.refused.clone(),
        );
        TlsMetrics(Arc::new(m))
    }

    pub fn set_expiration(&self, unix_seconds: f64) {
        self.0.expiration.set(unix_seconds);
    }

    pub fn renewal(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.0
            .renewals
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn handshake(&self, side: Side, reason: Option<&'static str>) {
        let labels = HandshakeLabels {
            direction: side.label(),
            result: if reason.is_some() { "failed" } else { "ok" },
            reason: reason.unwrap_or(""),
        };
        self.0.handshakes.get_or_create(&labels).inc();
    }

    /// The counter of one peer identity's requests; resolve once per connection.
    pub fn peer(&self, identity: Option<&str>) -> Counter {
        let peer_identity = identity.unwrap_or("unauthenticated").to_owned();
        self.0
            .peers
            .get_or_create(&PeerLabels { peer_identity })
            .clone()
    }

    pub fn refused(&self, reason: &'static str) {
        self.0.refused.get_or_create(&ReasonLabels { reason }).inc();
    }
}
