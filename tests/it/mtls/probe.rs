//! A raw TLS probe against a strict inbound listener: it offers mesh ALPN but holds no
//! certificate. The sidecar shows its workload's SPIFFE certificate under the mesh CA,
//! demands a client certificate, and refuses the probe before anything reaches the app.

use super::{
    HANDSHAKES, PLACEHOLDER, SERVER, SERVER_SA,
    pki::{self, MESH_ALPN, TlsProbe, chains_to, exchange, uri_sans},
};
use crate::support::{STEP, eventually, mesh::MeshCa, mesh::spiffe, upstream::HttpUpstream};

fn mesh(app: std::net::SocketAddr) -> String {
    format!(
        r#"
workloads:
  - name: {SERVER}
    serviceAccount: {SERVER_SA}
    inbound: {{ listen: "{PLACEHOLDER}", app: "{app}", mtls: strict }}
"#
    )
}

#[tokio::test]
async fn strict_inbound_shows_its_spiffe_id_and_demands_a_client_certificate() {
    let app = HttpUpstream::start("reviews-app").await;
    let mesh_ca = MeshCa::start(&mesh(app.addr()), &[SERVER], None).await;
    let server = mesh_ca.sidecar(SERVER, true).await;

    let probe = TlsProbe::new(&[MESH_ALPN, b"http/1.1"]);
    // TLS 1.3 lets the client finish first; the refusal of its empty certificate comes as
    // an alert on the first read, or the handshake itself fails.
    let (answer, failure) = match probe.connect(server.inbound).await {
        Ok(mut tls) => exchange(&mut tls, b"GET / HTTP/1.1\r\nhost: reviews\r\n\r\n").await,
        Err(e) => (Vec::new(), Some(e)),
    };
    assert!(
        answer.is_empty(),
        "nothing answers a client without a certificate: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        failure.is_some(),
        "the connection ends in a TLS error, not a clean close"
    );

    assert!(
        probe.was_asked_for_client_cert(),
        "the sidecar sent a CertificateRequest"
    );
    let chain = probe.server_chain();
    let leaf = chain.first().expect("the sidecar presented a certificate");
    assert_eq!(
        uri_sans(leaf),
        vec![spiffe(SERVER_SA)],
        "one URI SAN: its ID"
    );
    let ca = pki::ca_der(
        &std::fs::read_to_string(mesh_ca.ca_dir().join("ca.crt")).expect("read ca.crt"),
    );
    assert!(chains_to(leaf, &ca), "the certificate is the mesh CA's");

    eventually("the sidecar counts the refused handshake", STEP, || async {
        server.metric_values().await.sum(
            HANDSHAKES,
            &[
                ("direction", "inbound"),
                ("result", "failed"),
                ("reason", "no-client-certificate"),
            ],
        ) >= 1.0
    })
    .await;
    assert_eq!(app.connections(), 0, "nothing reached the app");
}
