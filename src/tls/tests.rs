//! Real rustls handshakes over in-memory pipes between two `MeshTls`, with certificates from a
//! throwaway CA: the right identity passes, and each way a peer can fail is named.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, date_time_ymd,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: Vec<u8>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let der = params.self_signed(&key).unwrap().der().to_vec();
    Ca {
        issuer: Issuer::new(params, key),
        der,
    }
}

/// A leaf for `id` and its PKCS#8 key; `expired` dates it in the past.
fn leaf(ca: &Ca, id: &str, expired: bool) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    if expired {
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2020, 1, 2);
    }
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

const A: &str = "spiffe://cluster.local/ns/default/sa/a";
const B: &str = "spiffe://cluster.local/ns/default/sa/b";

fn mesh(ca: &Ca, anchors: &[&Ca], id: &str, expired: bool) -> Arc<MeshTls> {
    let tls = MeshTls::new(TlsMetrics::default()).unwrap();
    let roots: Vec<Vec<u8>> = anchors.iter().map(|a| a.der.clone()).collect();
    tls.set_anchors(&roots);
    let (cert, key) = leaf(ca, id, expired);
    tls.install(vec![cert], key).unwrap();
    Arc::new(tls)
}

/// Connects `client` (expecting `expected`) to `server`; the server's result comes back too.
async fn handshake(
    client: &Arc<MeshTls>,
    server: &Arc<MeshTls>,
    inner: Inner,
    expected: &str,
) -> (Result<(), TlsError>, Result<Arc<str>, TlsError>) {
    let (c, s) = tokio::io::duplex(1 << 16);
    let server = server.clone();
    let accepted = tokio::spawn(async move {
        let (mut stream, peer) = server.accept(s).await?;
        let mut buf = [0u8; 4];
        let _ = stream.read_exact(&mut buf).await;
        let _ = stream.write_all(&buf).await;
        let _ = stream.flush().await;
        Ok::<_, TlsError>(peer)
    });
    let expected: Arc<str> = expected.into();
    let connected = match client.connect(c, inner, &expected).await {
        Ok(mut stream) => {
            // TLS 1.3: the client is done before the server has checked its certificate, so
            // a refusal shows on the first read.
            let mut back = [0u8; 4];
            let echoed = async {
                stream.write_all(b"ping").await?;
                stream.read_exact(&mut back).await
            };
            // A refusal is asserted on the server's result; a success must echo.
            if echoed.await.is_ok() {
                assert_eq!(&back, b"ping");
            }
            Ok(())
        }
        Err(e) => Err(e),
    };
    let served = accepted.await.unwrap();
    (connected, served)
}

#[tokio::test]
async fn the_expected_identity_passes_both_ways_with_the_inner_protocol_agreed() {
    let ca = ca();
    let (client, server) = (mesh(&ca, &[&ca], A, false), mesh(&ca, &[&ca], B, false));
    let (c, s) = handshake(&client, &server, Inner::Http2, B).await;
    c.unwrap();
    assert_eq!(&*s.unwrap(), A);
    assert_eq!(client.identity().as_deref(), Some(A));
}

#[tokio::test]
async fn another_identity_is_a_mismatch() {
    let ca = ca();
    let (client, server) = (mesh(&ca, &[&ca], A, false), mesh(&ca, &[&ca], B, false));
    let (c, _) = handshake(&client, &server, Inner::Http1, A).await;
    let e = c.unwrap_err();
    assert_eq!(e.reason(), "identity-mismatch");
    assert!(e.is_identity_failure());
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused_as_expired() {
    let ca = ca();
    let client = mesh(&ca, &[&ca], A, false);
    let server = mesh(&ca, &[&ca], B, true);
    let (c, _) = handshake(&client, &server, Inner::Opaque, B).await;
    let e = c.unwrap_err();
    assert_eq!(e.reason(), "expired", "{e}");
    assert!(e.is_identity_failure());
}

#[tokio::test]
async fn a_server_from_another_anchor_is_an_unknown_issuer() {
    let (ours, theirs) = (ca(), ca());
    let client = mesh(&ours, &[&ours], A, false);
    let server = mesh(&theirs, &[&theirs], B, false);
    let (c, _) = handshake(&client, &server, Inner::Http1, B).await;
    assert_eq!(c.unwrap_err().reason(), "unknown-issuer");
}

#[tokio::test]
async fn a_client_from_another_anchor_is_refused_by_the_server() {
    let (ours, theirs) = (ca(), ca());
    // The client trusts the server's anchor, but its own certificate is from elsewhere.
    let client = mesh(&theirs, &[&ours], A, false);
    let server = mesh(&ours, &[&ours], B, false);
    let (_, s) = handshake(&client, &server, Inner::Http1, B).await;
    assert_eq!(s.unwrap_err().reason(), "unknown-issuer");
}

#[tokio::test]
async fn an_added_anchor_applies_to_the_next_handshake() {
    let (old, new) = (ca(), ca());
    let client = mesh(&old, &[&old], A, false);
    let server = mesh(&new, &[&old, &new], B, false);
    let (c, _) = handshake(&client, &server, Inner::Http1, B).await;
    assert_eq!(c.unwrap_err().reason(), "unknown-issuer");
    client.set_anchors(&[old.der.clone(), new.der.clone()]);
    let (c, s) = handshake(&client, &server, Inner::Http1, B).await;
    c.unwrap();
    s.unwrap();
}

#[tokio::test]
async fn a_renewed_certificate_is_used_by_the_next_handshake() {
    let ca = ca();
    let (client, server) = (mesh(&ca, &[&ca], A, false), mesh(&ca, &[&ca], B, false));
    let before = server.certified().unwrap().serial.clone();
    let (cert, key) = leaf(&ca, B, false);
    server.install(vec![cert], key).unwrap();
    let after = server.certified().unwrap().serial.clone();
    assert_ne!(before, after);
    let (c, s) = handshake(&client, &server, Inner::Http2, B).await;
    c.unwrap();
    s.unwrap();
}

#[test]
fn a_certificate_without_a_spiffe_id_is_not_installed() {
    let ca = ca();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["example.com".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let tls = MeshTls::new(TlsMetrics::default()).unwrap();
    let e = tls
        .install(vec![cert.der().to_vec()], key.serialize_der())
        .unwrap_err();
    assert!(e.to_string().contains("no URI SAN"), "{e}");
    assert!(tls.certified().is_none());
}
