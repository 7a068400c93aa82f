//! Traffic between two sidecars with identities, the server's inbound strict: HTTP/1.1, h2,
//! gRPC and opaque TCP reach the app in plaintext, and the sidecars' handshake and peer
//! counters, `/config_dump` and `/certs` show it went over mesh TLS between the two IDs.

use http::{StatusCode, Version};
use skiff_xds::pb::EchoRequest;

use super::{
    CLIENT_SA, PEER_REQUESTS, Pair, REFUSED, SERVER, SERVER_SA, SERVICE, endpoint, handshakes,
    pki::{self, sha256_hex},
};
use crate::{
    grpc::grpc_client,
    support::{
        STEP,
        client::{self, Metrics, RawConn},
        mesh::spiffe,
        upstream::{GrpcUpstream, HttpUpstream, TcpEcho},
        within,
    },
    tcp::opaque_payload,
};

/// The server side terminated mesh TLS from the client's identity only: `ok` handshakes,
/// none failed, `requests` counted for the client's ID and none unauthenticated or refused.
fn assert_server_saw_the_client(m: &Metrics, min_handshakes: f64, requests: f64) {
    assert!(
        handshakes(m, "inbound", "ok") >= min_handshakes,
        "inbound handshakes ok: {}",
        handshakes(m, "inbound", "ok")
    );
    assert_eq!(
        handshakes(m, "inbound", "failed"),
        0.0,
        "no inbound failure"
    );
    assert_eq!(
        m.sum(PEER_REQUESTS, &[("peer_identity", &spiffe(CLIENT_SA))]),
        requests,
        "requests counted for the client's SPIFFE ID"
    );
    assert_eq!(
        m.sum(PEER_REQUESTS, &[("peer_identity", "unauthenticated")]),
        0.0,
        "nothing arrived unauthenticated"
    );
    assert_eq!(m.sum(REFUSED, &[]), 0.0, "nothing refused");
}

fn assert_client_handshakes_ok(m: &Metrics, min: f64) {
    assert!(
        handshakes(m, "outbound", "ok") >= min,
        "outbound handshakes ok: {}",
        handshakes(m, "outbound", "ok")
    );
    assert_eq!(
        handshakes(m, "outbound", "failed"),
        0.0,
        "no outbound failure"
    );
}

#[tokio::test]
async fn http1_and_h2_cross_two_sidecars_over_mesh_tls() {
    let app = HttpUpstream::start("reviews-app").await;
    let pair = Pair::start("auto", app.addr(), "strict").await;

    let h1 = client::send_h1(
        pair.client.outbound,
        client::post(SERVICE, "/rate", "5 stars"),
    )
    .await;
    assert_eq!(h1.status, StatusCode::OK, "{h1:?}");
    assert_eq!(h1.served_by(), Some("reviews-app"));
    assert_eq!(h1.text(), "5 stars");

    // h2c from the client into its sidecar; `auto` keeps h2 all the way.
    let h2 = client::send_h2(pair.client.outbound, client::get(SERVICE, "/h2")).await;
    assert_eq!(h2.status, StatusCode::OK, "{h2:?}");
    assert_eq!(h2.text(), "reviews-app GET /h2");
    assert_eq!(h2.header("x-echo-version"), Some("HTTP/2.0"));

    // The app got ordinary plaintext requests, mTLS removed in front of it.
    let seen = app.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("POST", "/rate")
    );
    assert_eq!(seen[0].version, Version::HTTP_11);
    assert_eq!(&seen[0].body[..], b"5 stars");
    assert_eq!(
        (seen[1].target.as_str(), seen[1].version),
        ("/h2", Version::HTTP_2)
    );

    // h1 and h2 cannot share a connection: at least two mesh handshakes.
    assert_server_saw_the_client(&pair.server.metric_values().await, 2.0, 2.0);
    assert_client_handshakes_ok(&pair.client.metric_values().await, 2.0);

    // xDS mode: the client knows the endpoint as a workload with an identity.
    let dump = pair.client.config_dump().await;
    let ep = endpoint(&dump);
    assert_eq!(ep["workload"], SERVER, "{ep}");
    assert_eq!(ep["identity"], spiffe(SERVER_SA).as_str(), "{ep}");
    assert_eq!(ep["address"], pair.server.inbound.to_string().as_str());
    assert_eq!(dump["identity"], spiffe(CLIENT_SA).as_str());
    let server_dump = pair.server.config_dump().await;
    assert_eq!(server_dump["inbound"]["mtls"], "strict", "{server_dump}");
    assert_eq!(server_dump["identity"], spiffe(SERVER_SA).as_str());

    // Both hold a certificate for their own ID, under the control plane's CA.
    let ca = pki::ca_der(
        &std::fs::read_to_string(pair.mesh.ca_dir().join("ca.crt")).expect("read ca.crt"),
    );
    for (proxy, sa) in [(&pair.client, CLIENT_SA), (&pair.server, SERVER_SA)] {
        let r = proxy.admin_get("/certs").await;
        assert_eq!(r.status, StatusCode::OK, "/certs: {}", r.text());
        let certs: serde_json::Value = serde_json::from_slice(&r.body).expect("/certs is JSON");
        assert_eq!(
            certs["certificate"]["spiffeId"],
            spiffe(sa).as_str(),
            "{certs}"
        );
        assert_eq!(
            certs["trustAnchors"][0]["sha256"],
            sha256_hex(&ca).as_str(),
            "{certs}"
        );
    }
}

#[tokio::test]
async fn grpc_unary_crosses_two_sidecars_over_mesh_tls() {
    let echo = GrpcUpstream::start("echo-app").await;
    let pair = Pair::start("grpc", echo.addr(), "strict").await;

    let mut grpc = grpc_client(pair.client.outbound, SERVICE).await;
    let reply = within(
        "unary",
        STEP,
        grpc.unary(EchoRequest {
            message: "over mesh tls".into(),
            fail_with: 0,
        }),
    )
    .await
    .expect("the call succeeds")
    .into_inner();
    assert_eq!(reply.message, "over mesh tls");
    assert_eq!(reply.served_by, "echo-app");
    assert_eq!(echo.calls(), 1);

    assert_server_saw_the_client(&pair.server.metric_values().await, 1.0, 1.0);
    assert_client_handshakes_ok(&pair.client.metric_values().await, 1.0);
}

#[tokio::test]
async fn opaque_tcp_crosses_two_sidecars_over_mesh_tls() {
    let echo = TcpEcho::start().await;
    let pair = Pair::start("tcp", echo.addr(), "strict").await;

    // Half-close across both sidecars: the echo answers only after the client's FIN.
    let payload = opaque_payload(64 * 1024);
    let mut raw = RawConn::connect(pair.client.outbound).await;
    raw.write(&payload).await;
    raw.shutdown_write().await;
    let back = raw.read_to_end().await;
    assert_eq!(back.len(), payload.len(), "every byte comes back");
    assert!(back == payload, "the echoed bytes are the bytes sent");
    assert_eq!(echo.connections(), 1);

    // One connection: one handshake, one TCP "request" for the client's identity.
    assert_server_saw_the_client(&pair.server.metric_values().await, 1.0, 1.0);
    assert_client_handshakes_ok(&pair.client.metric_values().await, 1.0);
}
