//! `inbound.mtls` with identity on: `strict` closes plaintext and TLS that is not mesh TLS
//! before the app sees a byte; `permissive` serves plaintext as unauthenticated and passes an
//! app's own TLS through untouched (the client completes its handshake with the app).

use std::net::SocketAddr;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    HANDSHAKES, PEER_REQUESTS, REFUSED,
    pki::{TlsEchoServer, TlsProbe, app_leaf, exchange},
};
use crate::support::{
    STEP,
    client::{self, RawConn},
    eventually,
    mesh::MeshCa,
    upstream::HttpUpstream,
    within,
};

/// Workloads `name` (service account the same) in front of each app, all in `mtls` mode.
fn mesh(workloads: &[(&str, SocketAddr)], mtls: &str) -> String {
    let mut yaml = String::from("workloads:\n");
    // Listen addresses must differ; nobody dials them (tests use the bound inbound).
    for (port, (name, app)) in (1..).zip(workloads) {
        yaml.push_str(&format!(
            "  - name: {name}\n    serviceAccount: {name}\n    inbound: {{ listen: \"127.0.0.1:{port}\", app: \"{app}\", mtls: {mtls} }}\n"
        ));
    }
    yaml
}

#[tokio::test]
async fn strict_closes_plaintext_and_foreign_tls_before_the_app() {
    let app = HttpUpstream::start("web-app").await;
    let mesh_ca = MeshCa::start(&mesh(&[("web", app.addr())], "strict"), &["web"], None).await;
    let side = mesh_ca.sidecar("web", true).await;

    // Plaintext HTTP: closed without an answer.
    let mut raw = RawConn::connect(side.inbound).await;
    raw.write_lenient(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n")
        .await;
    let answer = raw.read_to_end().await;
    assert!(
        answer.is_empty(),
        "plaintext gets no answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    eventually("the plaintext refusal is counted", STEP, || async {
        side.metric_values()
            .await
            .sum(REFUSED, &[("reason", "plaintext")])
            >= 1.0
    })
    .await;

    // TLS without mesh ALPN: closed before any ServerHello.
    let probe = TlsProbe::new(&[b"h2"]);
    let (answer, failure) = match probe.connect(side.inbound).await {
        Ok(mut tls) => exchange(&mut tls, b"hello").await,
        Err(e) => (Vec::new(), Some(e)),
    };
    assert!(answer.is_empty(), "foreign TLS gets no answer");
    assert!(failure.is_some(), "the TLS handshake cannot complete");
    assert!(
        probe.server_chain().is_empty(),
        "the sidecar never answered the ClientHello with a certificate"
    );
    eventually("the non-mesh TLS refusal is counted", STEP, || async {
        side.metric_values()
            .await
            .sum(REFUSED, &[("reason", "non-mesh-tls")])
            >= 1.0
    })
    .await;

    let m = side.metric_values().await;
    assert_eq!(
        m.sum(HANDSHAKES, &[("direction", "inbound")]),
        0.0,
        "neither connection got as far as a mesh handshake"
    );
    assert_eq!(m.sum(PEER_REQUESTS, &[]), 0.0, "no peer was served");
    assert_eq!(app.connections(), 0, "nothing reached the app");
}

#[tokio::test]
async fn permissive_serves_plaintext_unauthenticated_and_passes_app_tls_through() {
    let web = HttpUpstream::start("web-app").await;
    let app_cert = app_leaf();
    let app_cert_der = app_cert.chain[0].clone();
    let secure = TlsEchoServer::start(app_cert, &[b"h2"]).await;
    let mesh_ca = MeshCa::start(
        &mesh(
            &[("web", web.addr()), ("secure", secure.addr())],
            "permissive",
        ),
        &["web", "secure"],
        None,
    )
    .await;
    let web_side = mesh_ca.sidecar("web", true).await;
    let secure_side = mesh_ca.sidecar("secure", true).await;

    // Plaintext HTTP is served, its client unauthenticated.
    let r = client::send_h1(web_side.inbound, client::get("web", "/plain")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.served_by(), Some("web-app"));
    let m = web_side.metric_values().await;
    assert_eq!(
        m.sum(PEER_REQUESTS, &[("peer_identity", "unauthenticated")]),
        1.0,
        "the plaintext request is counted unauthenticated"
    );
    assert_eq!(m.sum(PEER_REQUESTS, &[]), 1.0, "and under no identity");
    assert_eq!(m.sum(HANDSHAKES, &[]), 0.0, "no mesh handshake took place");
    assert_eq!(m.sum(REFUSED, &[]), 0.0);

    // The app's own TLS (ALPN h2 only) goes through the sidecar untouched: the client
    // handshakes with the app itself, sees the app's certificate, and the bytes echo.
    let probe = TlsProbe::new(&[b"h2"]);
    let mut tls = probe
        .connect(secure_side.inbound)
        .await
        .expect("the handshake with the app completes through the sidecar");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "the app agreed ALPN"
    );
    let chain = probe.server_chain();
    assert_eq!(
        chain.first(),
        Some(&app_cert_der),
        "the client sees the app's certificate, not the sidecar's"
    );
    assert!(
        !probe.was_asked_for_client_cert(),
        "the app, not the sidecar, ran the handshake"
    );
    let payload = b"the app's own tls, end to end";
    let mut back = vec![0u8; payload.len()];
    within("echo through the app's TLS", STEP, async {
        tls.write_all(payload).await?;
        tls.flush().await?;
        tls.read_exact(&mut back).await
    })
    .await
    .expect("the app echoes over its own TLS");
    assert_eq!(&back[..], &payload[..]);
    let _ = tls.shutdown().await;
    assert_eq!(secure.handshakes(), 1, "the app completed the handshake");
    assert_eq!(secure.last_alpn().as_deref(), Some(&b"h2"[..]));
    assert_eq!(secure.received(), payload.len());

    let m = secure_side.metric_values().await;
    assert_eq!(m.sum(HANDSHAKES, &[]), 0.0, "the sidecar terminated no TLS");
    assert_eq!(
        m.sum(PEER_REQUESTS, &[("peer_identity", "unauthenticated")]),
        1.0,
        "the pass-through connection is unauthenticated"
    );
    assert_eq!(m.sum(REFUSED, &[]), 0.0);
}
