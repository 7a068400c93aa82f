//! Mesh identity and mTLS end to end: a control plane with its CA in this process, real
//! `skiff --xds --token-file` sidecars, and raw TLS clients and servers of the tests' own
//! (`pki`). Each test asserts the outcome and the metric or admin output that proves how.

mod certify;
mod impostor;
mod keys;
mod modes;
pub mod pki;
mod probe;
mod traffic;

use std::net::SocketAddr;

use crate::support::{client::Metrics, mesh::MeshCa, proxy::Proxy, proxy::ProxyBuilder};

/// The client workload and its service account.
pub const CLIENT: &str = "productpage-v1";
pub const CLIENT_SA: &str = "productpage";
/// The server workload, the endpoint of service [`SERVICE`].
pub const SERVER: &str = "reviews-v1";
pub const SERVER_SA: &str = "reviews";
pub const SERVICE: &str = "reviews";

pub const HANDSHAKES: &str = "skiff_tls_handshakes_total";
pub const PEER_REQUESTS: &str = "skiff_inbound_peer_requests_total";
pub const REFUSED: &str = "skiff_inbound_refused_connections_total";
pub const RENEWALS: &str = "skiff_identity_renewals_total";

/// Where nothing listens: a workload's `inbound.listen` until its sidecar has bound. (The
/// client workload, which nobody dials, keeps another one: listen addresses are unique.)
pub const PLACEHOLDER: &str = "127.0.0.1:1";

/// The mesh of one client and one server workload: service [`SERVICE`] speaking `protocol`
/// (`tcp` also catches every authority), whose one endpoint is the server workload,
/// listening on `listen` in front of `app` with `mtls`.
pub fn pair_mesh(protocol: &str, listen: &str, app: SocketAddr, mtls: &str) -> String {
    let hosts = if protocol == "tcp" { r#""*""# } else { SERVICE };
    format!(
        r#"
services:
  - name: {SERVICE}
    hosts: [{hosts}]
    protocol: {protocol}
    endpoints:
      - workload: {SERVER}
workloads:
  - name: {CLIENT}
    serviceAccount: {CLIENT_SA}
    inbound: {{ listen: "127.0.0.1:3", app: "127.0.0.1:2" }}
  - name: {SERVER}
    serviceAccount: {SERVER_SA}
    inbound: {{ listen: "{listen}", app: "{app}", mtls: {mtls} }}
"#
    )
}

/// A control plane with its CA and two sidecars with their tokens: the server's in front
/// of `app`, and the client's, which knows the server by its bound inbound address.
pub struct Pair {
    pub mesh: MeshCa,
    pub server: Proxy,
    pub client: Proxy,
}

impl Pair {
    pub async fn start(protocol: &str, app: SocketAddr, mtls: &str) -> Pair {
        Pair::start_with(protocol, app, mtls, |_, b| b).await
    }

    /// As [`Pair::start`], with `adjust(workload, builder)` applied to each sidecar's builder.
    pub async fn start_with(
        protocol: &str,
        app: SocketAddr,
        mtls: &str,
        mut adjust: impl FnMut(&str, ProxyBuilder) -> ProxyBuilder,
    ) -> Pair {
        let mesh = MeshCa::start(
            &pair_mesh(protocol, PLACEHOLDER, app, mtls),
            &[CLIENT, SERVER],
            None,
        )
        .await;
        let server = adjust(SERVER, mesh.builder(SERVER, true)).start().await;
        // The client fetches the service on its first request, so it gets this edit.
        mesh.set_mesh_and_wait(&pair_mesh(protocol, &server.inbound.to_string(), app, mtls))
            .await;
        let client = adjust(CLIENT, mesh.builder(CLIENT, true)).start().await;
        Pair {
            mesh,
            server,
            client,
        }
    }
}

/// [`SERVICE`]'s first endpoint in a `/config_dump`.
pub fn endpoint(dump: &serde_json::Value) -> serde_json::Value {
    dump["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == SERVICE))
        .map(|s| s["endpoints"][0].clone())
        .unwrap_or(serde_json::Value::Null)
}

/// `skiff_tls_handshakes_total` for one direction and result, any reason.
pub fn handshakes(m: &Metrics, direction: &str, result: &str) -> f64 {
    m.sum(HANDSHAKES, &[("direction", direction), ("result", result)])
}
