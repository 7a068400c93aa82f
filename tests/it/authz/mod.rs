//! Authorization on the inbound side, end to end: policies from the mesh file decide on the
//! peer's SPIFFE ID (proved by mesh mTLS) and the request, by HTTP status and reason, by the
//! fate of a TCP connection, and by `skiff_authz_decisions_total`. `Reviews` is the shared
//! setup: a `reviews` server sidecar and two token-holding clients, `reader` and `writer`.

mod allow;
mod audit;
mod deny;
mod static_mode;
mod tcp;
mod unauthenticated;

use std::net::SocketAddr;

use http::StatusCode;

use crate::support::{
    STEP,
    client::{self, Metrics, Reply},
    eventually,
    mesh::MeshCa,
    proxy::Proxy,
    upstream::HttpUpstream,
};

/// The metric every decision is counted in.
pub const DECISIONS: &str = "skiff_authz_decisions_total";

/// The `policy` label of a decision no policy made (`authz::NO_POLICY`).
pub const NO_POLICY: &str = "";

/// `reader` may GET below `/reviews/`, nothing else.
pub const READERS: &str = r#"  - name: reviews-readers
    target: reviews
    action: allow
    from: [ "spiffe://cluster.local/ns/default/sa/reader" ]
    to: [ { methods: [GET], paths: ["/reviews/*"] } ]
"#;

/// `/reviews/secret` is refused to any peer (`{mode}`: enforce or audit).
pub fn secret(mode: &str) -> String {
    format!(
        r#"  - name: reviews-secret
    target: reviews
    action: deny
    mode: {mode}
    to: [ {{ paths: ["/reviews/secret"] }} ]
"#
    )
}

/// `skiff_authz_decisions_total{policy, result}` in `m`.
pub fn decided(m: &Metrics, policy: &str, result: &str) -> f64 {
    m.sum(DECISIONS, &[("policy", policy), ("result", result)])
}

/// How much `decided(policy, result)` grew from `before` to `after`.
pub fn grew(before: &Metrics, after: &Metrics, policy: &str, result: &str) -> f64 {
    decided(after, policy, result) - decided(before, policy, result)
}

/// Asserts a 403 the proxy made for an authorization denial.
#[track_caller]
pub fn assert_unauthorized(r: &Reply, what: &str) {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {r:?}");
    assert_eq!(r.reason(), Some("unauthorized"), "{what}: {r:?}");
    assert_eq!(r.served_by(), None, "{what}: never reached the app: {r:?}");
}

/// The `reviews` mesh: service `reviews` on workload `reviews` (permissive mTLS, its app
/// `app`), client workloads `reader` and `writer` (service accounts of the same names), and
/// `policies` (YAML list items) under `authorization:`.
fn reviews_mesh(listen: &str, app: SocketAddr, policies: &str) -> String {
    format!(
        r#"services:
  - name: reviews
    endpoints: [ {{ workload: reviews }} ]
workloads:
  - name: reviews
    serviceAccount: reviews
    inbound: {{ listen: "{listen}", app: "{app}", mtls: permissive }}
  - name: reader
    serviceAccount: reader
  - name: writer
    serviceAccount: writer
authorization:
{policies}"#
    )
}

/// A control plane with a CA, the `reviews` sidecar in front of an HTTP app, and the
/// `reader` and `writer` sidecars, each holding its certificate.
pub struct Reviews {
    pub ca: MeshCa,
    pub app: HttpUpstream,
    pub server: Proxy,
    pub reader: Proxy,
    pub writer: Proxy,
}

impl Reviews {
    /// Starts everything under `policies` and returns once both clients' requests reach the
    /// server sidecar (answered by the app, or refused by authorization there).
    pub async fn start(policies: &str) -> Reviews {
        let app = HttpUpstream::start("reviews-app").await;
        let ca = MeshCa::start(
            &reviews_mesh("127.0.0.1:1", app.addr(), policies),
            &["reviews", "reader", "writer"],
            None,
        )
        .await;
        let server = ca.sidecar("reviews", true).await;
        ca.set_mesh(&reviews_mesh(
            &server.inbound.to_string(),
            app.addr(),
            policies,
        ));
        let reader = ca.sidecar("reader", true).await;
        let writer = ca.sidecar("writer", true).await;
        for (name, p) in [("reader", &reader), ("writer", &writer)] {
            eventually(
                &format!("{name}'s requests reach the reviews sidecar"),
                STEP,
                || async {
                    let r = get(p, "/reviews/1").await;
                    r.status == StatusCode::OK || r.reason() == Some("unauthorized")
                },
            )
            .await;
        }
        Reviews {
            ca,
            app,
            server,
            reader,
            writer,
        }
    }

    /// Replaces the policies (a ConfigMap-style edit) and waits until the server sidecar
    /// holds exactly `names` (`namespace/name`).
    pub async fn set_policies(&self, policies: &str, names: &[&str]) {
        self.ca.set_mesh(&reviews_mesh(
            &self.server.inbound.to_string(),
            self.app.addr(),
            policies,
        ));
        let mut want: Vec<&str> = names.to_vec();
        want.sort_unstable();
        eventually(
            "the new policies reach the reviews sidecar",
            STEP,
            || async {
                let dump = self.server.config_dump().await;
                let mut held: Vec<String> = dump["inbound"]["authorization"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|n| n.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                held.sort_unstable();
                held == want
            },
        )
        .await;
    }
}

/// `GET path` (Host `reviews`) through `p`'s outbound listener.
pub async fn get(p: &Proxy, path: &str) -> Reply {
    client::send_h1(p.outbound, client::get("reviews", path)).await
}
