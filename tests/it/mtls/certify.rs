//! The CA signs only what a token grants: a CSR for another workload's identity is
//! PERMISSION_DENIED, and a sidecar holding the wrong token gets no certificate, so it stays
//! not ready, logs the refusal and keeps asking (counted as failed renewals); meanwhile it
//! sends nothing in plaintext to a meshed endpoint.

use http::StatusCode;
use rcgen::{CertificateParams, KeyPair, SanType};
use skiff_api::pb::{self, identity_client::IdentityClient};
use tonic::Code;

use super::{
    CLIENT, CLIENT_SA, HANDSHAKES, PLACEHOLDER, RENEWALS, SERVER, SERVER_SA, SERVICE, pair_mesh,
    pki::uri_sans,
};
use crate::support::{
    STEP, client, eventually,
    mesh::{MeshCa, spiffe, token},
    upstream::HttpUpstream,
    within,
};

/// A DER PKCS#10 request, with a fresh key, for `spiffe_id`.
fn csr_for(spiffe_id: &str) -> Vec<u8> {
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(
        spiffe_id.try_into().expect("an IA5 SPIFFE ID"),
    )];
    params
        .serialize_request(&key)
        .expect("a CSR")
        .der()
        .to_vec()
}

async fn certify(
    mesh: &MeshCa,
    workload: &str,
    token: &str,
    csr: Vec<u8>,
) -> Result<pb::CertifyResponse, tonic::Status> {
    let mut identity = within(
        "connect to Identity",
        STEP,
        IdentityClient::connect(mesh.url()),
    )
    .await
    .expect("the control plane's gRPC port answers");
    within(
        "Identity/Certify",
        STEP,
        identity.certify(pb::CertifyRequest {
            workload: workload.to_owned(),
            namespace: "default".to_owned(),
            token: token.to_owned(),
            csr,
        }),
    )
    .await
    .map(tonic::Response::into_inner)
}

fn app() -> std::net::SocketAddr {
    "127.0.0.1:2".parse().expect("literal")
}

#[tokio::test]
async fn a_csr_for_an_identity_the_token_does_not_grant_is_permission_denied() {
    let mesh = MeshCa::start(
        &pair_mesh("auto", PLACEHOLDER, app(), "strict"),
        &[CLIENT, SERVER],
        None,
    )
    .await;

    // The client's own token, asking for the server's identity.
    let denied = certify(&mesh, CLIENT, &token(CLIENT), csr_for(&spiffe(SERVER_SA)))
        .await
        .expect_err("another workload's identity is not granted");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    // The same token for the client's own identity is signed: the refusal was the identity.
    let granted = certify(&mesh, CLIENT, &token(CLIENT), csr_for(&spiffe(CLIENT_SA)))
        .await
        .expect("the token's own identity is granted");
    let leaf = granted
        .certificate_chain
        .first()
        .expect("a leaf in the chain");
    assert_eq!(uri_sans(leaf), vec![spiffe(CLIENT_SA)]);

    // And a token proves only its own workload.
    let refused = certify(&mesh, SERVER, &token(CLIENT), csr_for(&spiffe(SERVER_SA)))
        .await
        .expect_err("the client's token does not prove the server");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

#[tokio::test]
async fn a_sidecar_with_a_wrong_token_stays_not_ready_and_keeps_asking() {
    let mesh = MeshCa::start(
        &pair_mesh("auto", PLACEHOLDER, app(), "strict"),
        &[CLIENT, SERVER],
        None,
    )
    .await;
    // The server's (valid) token presented as the client.
    let token_file = mesh.dir.path().join("stolen.token");
    std::fs::write(&token_file, token(SERVER)).expect("write the token file");
    let mut proxy = mesh
        .builder(CLIENT, false)
        .arg("--token-file", token_file.to_str().expect("utf-8 path"))
        .spawn()
        .await;

    let failed = || async {
        proxy
            .metric_values()
            .await
            .sum(RENEWALS, &[("result", "failed")])
    };
    let first = std::cell::Cell::new(0.0);
    eventually("a failed certificate request is counted", STEP, || async {
        first.set(failed().await);
        first.get() >= 1.0
    })
    .await;
    eventually("the proxy asks again after a failure", STEP, || async {
        failed().await > first.get()
    })
    .await;

    assert_eq!(
        proxy.ready_status().await,
        Some(StatusCode::SERVICE_UNAVAILABLE),
        "no certificate, not ready"
    );
    let m = proxy.metric_values().await;
    assert_eq!(m.sum(RENEWALS, &[("result", "ok")]), 0.0, "never certified");
    let certs = proxy.admin_get("/certs").await;
    assert_eq!(
        certs.status,
        StatusCode::OK,
        "identity is on: {}",
        certs.text()
    );
    let certs: serde_json::Value = serde_json::from_slice(&certs.body).expect("/certs is JSON");
    assert!(certs["certificate"].is_null(), "no certificate: {certs}");

    let log = proxy.stderr();
    assert!(
        log.contains("certificate request failed") && log.contains("refused"),
        "the refusal is logged:\n{log}"
    );
    assert!(
        !log.contains(&token(SERVER)),
        "the token itself is never logged"
    );
    assert!(proxy.exit_status().is_none(), "the proxy keeps running");
}

/// A sidecar with identity on that holds no certificate (its token is refused) cannot prove
/// itself nor check the peer, so it must not fall back to plaintext towards a meshed
/// endpoint: a plain listener at the workload's address gets no request.
#[tokio::test]
async fn a_sidecar_without_its_certificate_sends_no_plaintext_to_a_meshed_endpoint() {
    let plain = HttpUpstream::start("plaintext-listener").await;
    let mesh = MeshCa::start(
        &pair_mesh("auto", &plain.addr().to_string(), app(), "strict"),
        &[CLIENT, SERVER],
        None,
    )
    .await;
    let token_file = mesh.dir.path().join("wrong.token");
    std::fs::write(&token_file, "not-the-token").expect("write the token file");
    let client_side = mesh
        .builder(CLIENT, false)
        .arg("--token-file", token_file.to_str().expect("utf-8 path"))
        .spawn()
        .await;
    eventually("the certificate request is refused", STEP, || async {
        client_side
            .metric_values()
            .await
            .sum(RENEWALS, &[("result", "failed")])
            >= 1.0
    })
    .await;
    assert_eq!(
        client_side.ready_status().await,
        Some(StatusCode::SERVICE_UNAVAILABLE),
        "no certificate, not ready"
    );

    let r = client::send_h1(client_side.outbound, client::get(SERVICE, "/secret")).await;
    let seen = plain.requests();
    assert!(
        seen.is_empty(),
        "a request went out in plaintext to a meshed endpoint (answer {} {:?}): {seen:?}",
        r.status,
        r.served_by()
    );
    assert_ne!(r.status, StatusCode::OK, "{r:?}");
    let m = client_side.metric_values().await;
    assert!(
        m.sum(
            HANDSHAKES,
            &[
                ("direction", "outbound"),
                ("result", "failed"),
                ("reason", "no-certificate")
            ]
        ) >= 1.0,
        "the refusal to connect is counted as reason no-certificate"
    );
}
