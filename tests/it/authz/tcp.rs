//! Opaque TCP is decided once per connection, on the peer alone: an allowed peer's connection
//! reaches the app, any other is closed before a byte does.

use std::net::SocketAddr;

use crate::authz::{NO_POLICY, grew};
use crate::resilience::noise;
use crate::support::{
    STEP, client::RawConn, eventually, mesh::MeshCa, proxy::Proxy, upstream::TcpEcho,
};

/// A `protocol: tcp` catch-all on workload `echo`, and only `reader` allowed to it.
fn echo_mesh(listen: &str, app: SocketAddr) -> String {
    format!(
        r#"services:
  - name: echo
    hosts: ["*"]
    protocol: tcp
    endpoints: [ {{ workload: echo }} ]
workloads:
  - name: echo
    serviceAccount: echo
    inbound: {{ listen: "{listen}", app: "{app}", mtls: permissive }}
  - name: reader
    serviceAccount: reader
  - name: writer
    serviceAccount: writer
authorization:
  - name: echo-readers
    target: echo
    from: [ "spiffe://cluster.local/ns/default/sa/reader" ]
"#
    )
}

/// Sends `payload` through `p`'s outbound listener, half-closes, and returns what came back.
async fn exchange(p: &Proxy, payload: &[u8]) -> Vec<u8> {
    let mut raw = RawConn::connect(p.outbound).await;
    // A refused connection may be reset while we write: what matters is what comes back.
    raw.write_lenient(payload).await;
    raw.shutdown_write_lenient().await;
    raw.read_to_end().await
}

#[tokio::test]
async fn tcp_connection_is_admitted_by_peer_identity() {
    let echo = TcpEcho::start().await;
    let ca = MeshCa::start(
        &echo_mesh("127.0.0.1:1", echo.addr()),
        &["echo", "reader", "writer"],
        None,
    )
    .await;
    let server = ca.sidecar("echo", true).await;
    ca.set_mesh(&echo_mesh(&server.inbound.to_string(), echo.addr()));
    let reader = ca.sidecar("reader", true).await;
    let writer = ca.sidecar("writer", true).await;
    eventually("reader's connections reach the echo", STEP, || async {
        exchange(&reader, b"ping").await == b"ping"
    })
    .await;

    let (before, conns) = (server.metric_values().await, echo.connections());
    let payload = noise(64 * 1024, 11);
    let back = exchange(&reader, &payload).await;
    assert_eq!(back.len(), payload.len(), "reader: every byte echoed");
    assert!(back == payload, "reader: the bytes sent come back");

    let back = exchange(&writer, &payload).await;
    assert!(
        back.is_empty(),
        "writer: closed without data, got {} bytes",
        back.len()
    );

    let after = server.metric_values().await;
    assert_eq!(grew(&before, &after, "default/echo-readers", "allow"), 1.0);
    assert_eq!(grew(&before, &after, NO_POLICY, "deny"), 1.0);
    assert_eq!(
        echo.connections() - conns,
        1,
        "only reader's connection reached the app"
    );
}
