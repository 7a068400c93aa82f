//! An impostor in place of the server's sidecar (at the workload's `inbound.listen`): a TLS
//! server of the test's own that speaks mesh ALPN but cannot prove the workload's identity.
//! The client sidecar answers 502 `peer-identity-mismatch`, counts the outbound handshake
//! failure with the reason, and sends the impostor no request byte.

use http::StatusCode;

use super::{
    CLIENT, HANDSHAKES, PLACEHOLDER, SERVER, SERVER_SA, SERVICE, endpoint, handshakes, pair_mesh,
    pki::{Leaf, MESH_ALPN, Signer, TlsEchoServer},
};
use crate::support::{
    STEP, client, eventually,
    mesh::{MeshCa, spiffe},
};

/// Puts the leaf `make` returns (given the mesh CA's directory) in front of the client
/// sidecar as the server workload and checks the refusal is counted as `reason`.
async fn refused_with(reason: &str, make: impl FnOnce(&std::path::Path) -> Leaf) {
    // The app address is never used: the impostor is the whole server side.
    let app: std::net::SocketAddr = "127.0.0.1:2".parse().expect("literal");
    let mesh = MeshCa::start(
        &pair_mesh("auto", PLACEHOLDER, app, "strict"),
        &[CLIENT, SERVER],
        None,
    )
    .await;
    let impostor =
        TlsEchoServer::start(make(&mesh.ca_dir()), &[b"http/1.1", b"h2", MESH_ALPN]).await;
    mesh.set_mesh_and_wait(&pair_mesh(
        "auto",
        &impostor.addr().to_string(),
        app,
        "strict",
    ))
    .await;
    let client_side = mesh.sidecar(CLIENT, true).await;

    let r = client::send_h1(client_side.outbound, client::get(SERVICE, "/secret")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{r:?}");
    assert_eq!(r.reason(), Some("peer-identity-mismatch"), "{r:?}");
    assert!(impostor.accepted() >= 1, "the client sidecar did dial it");
    let ep = endpoint(&client_side.config_dump().await);
    assert_eq!(ep["address"], impostor.addr().to_string().as_str(), "{ep}");
    assert_eq!(ep["identity"], spiffe(SERVER_SA).as_str(), "{ep}");

    eventually("the outbound failure is counted", STEP, || async {
        client_side.metric_values().await.sum(
            HANDSHAKES,
            &[
                ("direction", "outbound"),
                ("result", "failed"),
                ("reason", reason),
            ],
        ) >= 1.0
    })
    .await;
    let m = client_side.metric_values().await;
    assert_eq!(
        handshakes(&m, "outbound", "ok"),
        0.0,
        "no handshake with the impostor counts as ok"
    );
    assert_eq!(
        handshakes(&m, "outbound", "failed"),
        m.sum(HANDSHAKES, &[("direction", "outbound"), ("reason", reason)]),
        "every failure has reason {reason}"
    );
    assert_eq!(
        impostor.received(),
        0,
        "no request byte reached the impostor"
    );
}

#[tokio::test]
async fn a_mesh_certificate_for_another_identity_is_refused() {
    refused_with("identity-mismatch", |ca_dir| {
        Signer::mesh(ca_dir).leaf(&spiffe("ratings"), false)
    })
    .await;
}

#[tokio::test]
async fn an_expired_mesh_certificate_is_refused() {
    refused_with("expired", |ca_dir| {
        Signer::mesh(ca_dir).leaf(&spiffe(SERVER_SA), true)
    })
    .await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    refused_with("unknown-issuer", |_| {
        Signer::foreign().leaf(&spiffe(SERVER_SA), false)
    })
    .await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_with_the_mesh_ca_name_is_refused() {
    refused_with("unknown-issuer", |ca_dir| {
        Signer::foreign_named_like(ca_dir).leaf(&spiffe(SERVER_SA), false)
    })
    .await;
}

/// With a retry policy on connect failures, an endpoint that failed to prove its identity is
/// not dialled again by the same request: the one impostor sees one connection, and the
/// client still gets 502 `peer-identity-mismatch`.
#[tokio::test]
async fn an_endpoint_that_failed_its_identity_is_not_dialled_again_by_a_retry() {
    let app: std::net::SocketAddr = "127.0.0.1:2".parse().expect("literal");
    let with_retry = |listen: &str| {
        pair_mesh("auto", listen, app, "strict").replace(
            "    endpoints:\n",
            "    routes:\n      - name: retried\n        \
             retry: { attempts: 3, retryOn: [connect-failure], backoff: { base: 1ms, max: 2ms } }\n    \
             endpoints:\n",
        )
    };
    let mesh = MeshCa::start(&with_retry(PLACEHOLDER), &[CLIENT, SERVER], None).await;
    let impostor = TlsEchoServer::start(
        Signer::mesh(&mesh.ca_dir()).leaf(&spiffe("ratings"), false),
        &[b"http/1.1", b"h2", MESH_ALPN],
    )
    .await;
    mesh.set_mesh_and_wait(&with_retry(&impostor.addr().to_string()))
        .await;
    let client_side = mesh.sidecar(CLIENT, true).await;

    let r = client::send_h1(client_side.outbound, client::get(SERVICE, "/secret")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{r:?}");
    assert_eq!(r.reason(), Some("peer-identity-mismatch"), "{r:?}");
    assert_eq!(impostor.accepted(), 1, "one dial, however many attempts");
    let m = client_side.metric_values().await;
    assert_eq!(
        m.sum(
            HANDSHAKES,
            &[("direction", "outbound"), ("reason", "identity-mismatch")]
        ),
        1.0
    );
}
