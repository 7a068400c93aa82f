//! The mesh CA end to end: the real `skiff-xds serve` on port 0 with `--ca-dir` and
//! `--bootstrap-tokens`, a tonic `Identity` client with rcgen-made keys and CSRs, and a
//! discovery stream watching `MeshSettings` for the anchors. Waits are on responses.

mod common;

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use prost::Message as _;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, UnixTime};
use skiff_api::{
    pb::{self, discovery_client::DiscoveryClient, identity_client::IdentityClient},
    resource::MESH_SETTINGS_TYPE_URL,
};
use tokio::{
    io::AsyncReadExt,
    process::{Child, Command},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};
use x509_parser::{extensions::GeneralName, prelude::FromDer, prelude::X509Certificate};

const DEADLINE: Duration = Duration::from_secs(10);

/// The CA directory is polled every second; this leaves room for a loaded machine.
const RELOAD_DEADLINE: Duration = Duration::from_secs(20);

const LIFETIME_SECS: u64 = 3600;
const SKEW_SECS: u64 = 60;

const MESH: &str = r#"
services:
  - name: reviews
    endpoints: [ { workload: reviews-v1 } ]
workloads:
  - name: reviews-v1
    serviceAccount: reviews
    inbound: { listen: 127.0.0.1:16006, app: 127.0.0.1:9081 }
  - name: ratings-v1
    serviceAccount: ratings
    inbound: { listen: 127.0.0.1:16007, app: 127.0.0.1:9082 }
"#;

const TOKENS: &str = "\
default/reviews-v1: tok-reviews-5f2a
default/ratings-v1: tok-ratings-91c3
default/ghost: tok-ghost-0000
";

const REVIEWS_TOKEN: &str = "tok-reviews-5f2a";
const REVIEWS_ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";
const RATINGS_ID: &str = "spiffe://cluster.local/ns/default/sa/ratings";

struct Server {
    _child: Child,
    dir: tempfile::TempDir,
    grpc: SocketAddr,
    admin: SocketAddr,
    stderr: PathBuf,
}

impl Server {
    fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    async fn identity(&self) -> IdentityClient<tonic::transport::Channel> {
        IdentityClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect to the control plane")
    }

    async fn certify(&self, req: pb::CertifyRequest) -> Result<pb::CertifyResponse, tonic::Status> {
        let mut client = self.identity().await;
        tokio::time::timeout(DEADLINE, client.certify(req))
            .await
            .expect("an answer in time")
            .map(tonic::Response::into_inner)
    }

    async fn metrics(&self) -> String {
        let mut stream = tokio::net::TcpStream::connect(self.admin)
            .await
            .expect("connect admin");
        use tokio::io::AsyncWriteExt as _;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut body = String::new();
        tokio::time::timeout(DEADLINE, stream.read_to_string(&mut body))
            .await
            .expect("metrics in time")
            .expect("read metrics");
        body
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- skiff-xds stderr ----\n{}", self.stderr());
        }
    }
}

/// How to start a control plane; the CA directory is `<tmp>/ca` unless `ca` is false.
struct Setup {
    ca: bool,
    tokens: bool,
    /// Written into `<tmp>/ca` before the start.
    files: Vec<(&'static str, String)>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            ca: true,
            tokens: true,
            files: Vec::new(),
        }
    }
}

fn command(dir: &Path, setup: &Setup) -> Command {
    let config = dir.join("mesh.yaml");
    std::fs::write(&config, MESH).expect("write mesh file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff-xds"));
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .args(["--cert-lifetime", &format!("{LIFETIME_SECS}s")])
        .env("RUST_LOG", "info")
        .env_remove("SKIFF_XDS_CA_DIR")
        .env_remove("SKIFF_XDS_BOOTSTRAP_TOKENS")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if setup.ca {
        let ca = dir.join("ca");
        if !setup.files.is_empty() {
            std::fs::create_dir_all(&ca).expect("create the CA dir");
        }
        for (name, text) in &setup.files {
            std::fs::write(ca.join(name), text).expect("write a CA file");
        }
        cmd.arg("--ca-dir").arg(ca);
    }
    if setup.tokens {
        let tokens = dir.join("tokens.yaml");
        std::fs::write(&tokens, TOKENS).expect("write tokens");
        cmd.arg("--bootstrap-tokens").arg(tokens);
    }
    cmd
}

async fn start(setup: Setup) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let stderr = dir.path().join("skiff-xds.stderr");
    let mut child = command(dir.path(), &setup)
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("spawn skiff-xds");
    let (grpc, admin) = common::startup_addrs(&mut child, DEADLINE)
        .await
        .unwrap_or_else(|line| {
            panic!(
                "unexpected startup line {line:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        });
    Server {
        _child: child,
        dir,
        grpc,
        admin,
        stderr,
    }
}

/// A proxy's key and a CSR naming `sans`.
fn csr(sans: &[&str]) -> Vec<u8> {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans
        .iter()
        .map(|s| SanType::URI((*s).try_into().expect("ia5")))
        .collect();
    // Asks to be a CA too: the signer must ignore it.
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .serialize_request(&key)
        .expect("serialize CSR")
        .der()
        .to_vec()
}

fn request(workload: &str, token: &str, csr: Vec<u8>) -> pb::CertifyRequest {
    pb::CertifyRequest {
        workload: workload.to_owned(),
        namespace: "default".to_owned(),
        token: token.to_owned(),
        csr,
    }
}

/// The DER of every certificate in a PEM file.
fn pem_certs(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).expect("read PEM");
    x509_parser::pem::Pem::iter_from_buffer(&bytes)
        .map(|p| p.expect("valid PEM").contents)
        .collect()
}

/// Verifies `chain` (leaf first) against `anchors` for both TLS usages, webpki-style, and
/// returns the leaf's URI names.
fn verify(chain: &[Vec<u8>], anchors: &[Vec<u8>]) -> Vec<String> {
    let anchor_ders: Vec<CertificateDer<'_>> = anchors
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let trust: Vec<_> = anchor_ders
        .iter()
        .map(|d| webpki::anchor_from_trusted_cert(d).expect("anchor parses"))
        .collect();
    let leaf = CertificateDer::from(chain[0].as_slice());
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let ee = webpki::EndEntityCert::try_from(&leaf).expect("leaf parses");
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &trust,
            &intermediates,
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .expect("the chain verifies to an anchor");
    }
    ee.valid_uri_names().map(str::to_owned).collect()
}

#[tokio::test]
async fn generates_an_anchor_in_a_missing_dir() {
    let server = start(Setup::default()).await;
    let ca = server.ca_dir();
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&ca), 0o700);
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    let anchor = pem_certs(&ca.join("ca.crt"));
    assert_eq!(anchor.len(), 1);
    let (_, cert) = X509Certificate::from_der(&anchor[0]).expect("parses");
    assert!(cert.is_ca());
    assert_eq!(cert.subject().to_string(), "CN=Skiff mesh CA");

    let metrics = server.metrics().await;
    let expiry = format!(
        "skiff_xds_ca_anchor_expiration_timestamp_seconds {}",
        cert.validity().not_after.timestamp()
    );
    assert!(metrics.contains(&expiry), "{expiry} not in\n{metrics}");
}

#[tokio::test]
async fn a_good_token_and_csr_get_a_verifiable_svid() {
    let server = start(Setup::default()).await;
    let rsp = server
        .certify(request("reviews-v1", REVIEWS_TOKEN, csr(&[REVIEWS_ID])))
        .await
        .expect("issued");
    let anchor = pem_certs(&server.ca_dir().join("ca.crt"));
    assert_eq!(rsp.trust_anchors, anchor, "the anchor is ca.crt");
    assert_eq!(rsp.certificate_chain.len(), 1, "the leaf, no intermediate");
    assert_eq!(
        verify(&rsp.certificate_chain, &rsp.trust_anchors),
        [REVIEWS_ID]
    );

    let (_, leaf) = X509Certificate::from_der(&rsp.certificate_chain[0]).expect("parses");
    let san = leaf
        .subject_alternative_name()
        .expect("san")
        .expect("present");
    let names: Vec<_> = san.value.general_names.iter().collect();
    assert!(
        matches!(names[..], [GeneralName::URI(u)] if *u == REVIEWS_ID),
        "{names:?}"
    );
    let eku = leaf
        .extended_key_usage()
        .expect("eku")
        .expect("present")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!leaf.is_ca(), "the CSR asked to be a CA; the leaf is not");
    let span = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    let want = (LIFETIME_SECS + SKEW_SECS) as i64;
    assert!((span - want).abs() <= 1, "validity {span}s, want {want}s");

    let metrics = server.metrics().await;
    assert!(
        metrics.contains("skiff_xds_ca_certificates_total{result=\"issued\"} 1"),
        "{metrics}"
    );
    assert!(
        !server.stderr().contains(REVIEWS_TOKEN),
        "a token was logged"
    );
}

#[tokio::test]
async fn refusals_have_the_promised_statuses() {
    let server = start(Setup::default()).await;

    let wrong = server
        .certify(request("reviews-v1", "tok-guess", csr(&[REVIEWS_ID])))
        .await
        .expect_err("wrong token");
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    assert!(wrong.message().contains("default/reviews-v1"), "{wrong:?}");
    assert!(!wrong.message().contains("tok-guess"), "{wrong:?}");

    let missing = server
        .certify(request("reviews-v1", "", csr(&[REVIEWS_ID])))
        .await
        .expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated);

    // A token, but no such workload in the mesh config.
    let ghost = server
        .certify(request("ghost", "tok-ghost-0000", csr(&[REVIEWS_ID])))
        .await
        .expect_err("unknown workload");
    assert_eq!(ghost.code(), Code::Unauthenticated);
    assert!(!ghost.message().contains("tok-ghost"), "{ghost:?}");

    let other = server
        .certify(request("reviews-v1", REVIEWS_TOKEN, csr(&[RATINGS_ID])))
        .await
        .expect_err("another workload's identity");
    assert_eq!(other.code(), Code::PermissionDenied, "{other:?}");
    assert!(other.message().contains(RATINGS_ID), "{other:?}");
    assert!(other.message().contains(REVIEWS_ID), "{other:?}");

    let garbage = server
        .certify(request("reviews-v1", REVIEWS_TOKEN, b"not a CSR".to_vec()))
        .await
        .expect_err("garbage CSR");
    assert_eq!(garbage.code(), Code::InvalidArgument, "{garbage:?}");

    let two = server
        .certify(request(
            "reviews-v1",
            REVIEWS_TOKEN,
            csr(&[REVIEWS_ID, RATINGS_ID]),
        ))
        .await
        .expect_err("two SANs");
    assert_eq!(two.code(), Code::InvalidArgument, "{two:?}");

    let metrics = server.metrics().await;
    assert!(
        metrics.contains("skiff_xds_ca_certificates_total{result=\"refused\"} 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains("skiff_xds_ca_certificates_total{result=\"issued\"} 0"),
        "{metrics}"
    );
    let logs = server.stderr();
    for token in ["tok-guess", REVIEWS_TOKEN, "tok-ghost"] {
        assert!(!logs.contains(token), "{token} was logged");
    }
}

#[tokio::test]
async fn a_changed_token_file_is_read_again() {
    let server = start(Setup::default()).await;
    let tokens = server.dir.path().join("tokens.yaml");
    let tmp = server.dir.path().join(".tokens.tmp");
    std::fs::write(&tmp, "default/reviews-v1: tok-rotated-77aa\n").expect("write");
    std::fs::rename(&tmp, &tokens).expect("rename");

    // The poller reads the file within a second or so; ask until the new token works.
    let deadline = tokio::time::Instant::now() + RELOAD_DEADLINE;
    loop {
        let answer = server
            .certify(request(
                "reviews-v1",
                "tok-rotated-77aa",
                csr(&[REVIEWS_ID]),
            ))
            .await;
        match answer {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the new token was never admitted"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let old = server
        .certify(request("reviews-v1", REVIEWS_TOKEN, csr(&[REVIEWS_ID])))
        .await
        .expect_err("the old token is gone");
    assert_eq!(old.code(), Code::Unauthenticated);
    assert!(
        !server.stderr().contains("tok-rotated"),
        "a token was logged"
    );
}

#[tokio::test]
async fn without_a_ca_certify_is_failed_precondition() {
    let server = start(Setup {
        ca: false,
        tokens: false,
        ..Setup::default()
    })
    .await;
    let err = server
        .certify(request("reviews-v1", REVIEWS_TOKEN, csr(&[REVIEWS_ID])))
        .await
        .expect_err("no CA");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    let mut stream = MeshStream::open(server.grpc).await;
    assert!(stream.next_settings().await.trust_anchors.is_empty());
}

#[tokio::test]
async fn a_bad_ca_dir_is_refused_at_startup_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = KeyPair::generate().expect("key");
    let setup = Setup {
        files: vec![("ca.key", key.serialize_pem())],
        ..Setup::default()
    };
    let out = tokio::time::timeout(DEADLINE, command(dir.path(), &setup).output())
        .await
        .expect("exits in time")
        .expect("runs");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no startup line");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ca.crt"), "{stderr}");
    assert!(stderr.contains("ca.key"), "{stderr}");
}

/// A discovery stream subscribed to `MeshSettings` as `default/reviews-v1`.
struct MeshStream {
    tx: mpsc::Sender<pb::DiscoveryRequest>,
    rx: Streaming<pb::DiscoveryResponse>,
}

impl MeshStream {
    async fn open(addr: SocketAddr) -> MeshStream {
        let mut client = DiscoveryClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let (tx, rx) = mpsc::channel(16);
        tx.send(pb::DiscoveryRequest {
            node: Some(pb::Node {
                workload: "reviews-v1".to_owned(),
                namespace: "default".to_owned(),
                proxy_version: "test".to_owned(),
            }),
            type_url: MESH_SETTINGS_TYPE_URL.to_owned(),
            resource_names_subscribe: vec!["mesh".to_owned()],
            ..Default::default()
        })
        .await
        .expect("queue");
        let rsp = tokio::time::timeout(DEADLINE, client.stream(ReceiverStream::new(rx)))
            .await
            .expect("stream opened in time")
            .expect("stream accepted");
        MeshStream {
            tx,
            rx: rsp.into_inner(),
        }
    }

    /// Waits for the next MeshSettings response, ACKs it and decodes its resource.
    async fn next_settings_within(&mut self, deadline: Duration) -> pb::MeshSettings {
        let rsp = tokio::time::timeout(deadline, self.rx.message())
            .await
            .expect("a MeshSettings response in time")
            .expect("stream healthy")
            .expect("stream open");
        assert_eq!(rsp.type_url, MESH_SETTINGS_TYPE_URL);
        self.tx
            .send(pb::DiscoveryRequest {
                type_url: rsp.type_url.clone(),
                response_nonce: rsp.nonce.clone(),
                ..Default::default()
            })
            .await
            .expect("ack");
        let [resource] = &rsp.resources[..] else {
            panic!("one MeshSettings resource, got {:?}", rsp.resources);
        };
        let any = resource.resource.as_ref().expect("payload");
        pb::MeshSettings::decode(any.value.as_slice()).expect("decodes")
    }

    async fn next_settings(&mut self) -> pb::MeshSettings {
        self.next_settings_within(DEADLINE).await
    }
}

/// A fresh self-signed CA certificate, PEM.
fn another_anchor() -> (String, Vec<u8>) {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "next mesh CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let issuer =
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
    (issuer.pem(), issuer.der().to_vec())
}

#[tokio::test]
async fn mesh_settings_carry_the_anchors_and_follow_a_rotation() {
    let server = start(Setup::default()).await;
    let anchor = pem_certs(&server.ca_dir().join("ca.crt"));
    let mut stream = MeshStream::open(server.grpc).await;
    assert_eq!(stream.next_settings().await.trust_anchors, anchor);

    // Rotation: the next anchor is trusted too. Written aside and renamed into place, the
    // way a Secret update lands.
    let (next_pem, next_der) = another_anchor();
    let tmp = server.ca_dir().join(".trust-anchors.tmp");
    std::fs::write(&tmp, next_pem).expect("write");
    std::fs::rename(&tmp, server.ca_dir().join("trust-anchors.crt")).expect("rename");

    let settings = stream.next_settings_within(RELOAD_DEADLINE).await;
    assert_eq!(
        settings.trust_anchors,
        [anchor[0].clone(), next_der.clone()]
    );

    // New certificates come with both anchors, and still verify.
    let rsp = server
        .certify(request("reviews-v1", REVIEWS_TOKEN, csr(&[REVIEWS_ID])))
        .await
        .expect("issued");
    assert_eq!(rsp.trust_anchors, settings.trust_anchors);
    assert_eq!(
        verify(&rsp.certificate_chain, &rsp.trust_anchors),
        [REVIEWS_ID]
    );

    // A broken anchor file is refused; the CA and the anchors stay as they were.
    std::fs::write(
        server.ca_dir().join("trust-anchors.crt"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let deadline = tokio::time::Instant::now() + RELOAD_DEADLINE;
    while !server.stderr().contains("trust-anchors.crt") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refusal was not logged naming the file:\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rsp = server
        .certify(request("reviews-v1", REVIEWS_TOKEN, csr(&[REVIEWS_ID])))
        .await
        .expect("still issuing");
    assert_eq!(rsp.trust_anchors, [anchor[0].clone(), next_der]);
}

#[tokio::test]
async fn an_intermediate_is_sent_after_the_leaf_and_the_root_is_the_anchor() {
    let root_key = KeyPair::generate().expect("key");
    let mut root_params = CertificateParams::default();
    root_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test root");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root = CertifiedIssuer::self_signed(root_params, root_key).expect("root");
    let mid_key = KeyPair::generate().expect("key");
    let mid_key_pem = mid_key.serialize_pem();
    let mut mid_params = CertificateParams::default();
    mid_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test intermediate");
    mid_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let mid = CertifiedIssuer::signed_by(mid_params, mid_key, &root).expect("intermediate");

    let server = start(Setup {
        files: vec![
            ("ca.crt", mid.pem()),
            ("ca.key", mid_key_pem),
            ("root.crt", root.pem()),
        ],
        ..Setup::default()
    })
    .await;
    let rsp = server
        .certify(request("reviews-v1", REVIEWS_TOKEN, csr(&[REVIEWS_ID])))
        .await
        .expect("issued");
    assert_eq!(rsp.certificate_chain.len(), 2);
    assert_eq!(rsp.certificate_chain[1], mid.der().to_vec());
    assert_eq!(rsp.trust_anchors, [root.der().to_vec()]);
    assert_eq!(
        verify(&rsp.certificate_chain, &rsp.trust_anchors),
        [REVIEWS_ID]
    );

    let mut stream = MeshStream::open(server.grpc).await;
    assert_eq!(
        stream.next_settings().await.trust_anchors,
        [root.der().to_vec()]
    );
}
