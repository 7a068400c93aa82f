//! Two sidecars on loopback: an endpoint `{ workload: X }` is X's inbound listener, whose proxy
//! forwards to X's app.

use http::StatusCode;

use crate::support::{
    client,
    proxy::{Proxy, ProxyBuilder},
    upstream::HttpUpstream,
};

#[tokio::test]
async fn workload_endpoint_goes_through_the_peer_sidecar() {
    let app = HttpUpstream::start("reviews-app").await;
    // The server side: reviews-v1's sidecar, its inbound on a port chosen at bind.
    let server_mesh = format!(
        r#"
workloads:
  - name: reviews-v1
    namespace: default
    inbound: {{ listen: "127.0.0.1:1", app: "{}" }}
"#,
        app.addr()
    );
    let server = ProxyBuilder::new(&server_mesh)
        .workload("reviews-v1", "default")
        .start()
        .await;

    // The client side knows reviews-v1 by the inbound address the server sidecar bound.
    let client_mesh = format!(
        r#"
services:
  - name: reviews
    endpoints:
      - workload: reviews-v1
workloads:
  - name: reviews-v1
    namespace: default
    inbound: {{ listen: "{}", app: "{}" }}
"#,
        server.inbound,
        app.addr()
    );
    let client_side = Proxy::start(&client_mesh).await;

    let r = client::send_h1(
        client_side.outbound,
        client::post("reviews", "/rate", "5 stars"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.served_by(), Some("reviews-app"));
    assert_eq!(r.text(), "5 stars");

    let h2 = client::send_h2(client_side.outbound, client::get("reviews", "/h2")).await;
    assert_eq!(h2.status, StatusCode::OK, "{h2:?}");
    assert_eq!(h2.text(), "reviews-app GET /h2");

    let m = server.metric_values().await;
    assert!(
        m.sum("skiff_requests_total", &[("direction", "inbound")]) >= 2.0,
        "the server sidecar counts the requests inbound"
    );
    assert_eq!(app.requests().len(), 2);
}
