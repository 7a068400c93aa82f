//! Certificate and trust-anchor rotation on running sidecars: 30 s certificates renew while
//! HTTP/1.1 and h2 traffic keeps flowing (connections made before a renewal keep working, new
//! handshakes use the new certificate), and an operator's trust-bundle change in the CA
//! directory (new root added, signer switched, old root removed) applies without a restart.
//! With 30 s certificates renewed at 70 %, each test takes under a minute (two renewals take
//! about 45 s), so they run with the rest of the suite.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::StatusCode;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::mtls::pki::accept_any_server;
use crate::support::{
    STEP,
    client::{self, H1Conn, H2Conn},
    control_plane::replace_file,
    eventually,
    mesh::{MeshCa, spiffe},
    proxy::Proxy,
    upstream::HttpUpstream,
    within,
};

/// Certificate lifetime under test: renewal at 70 % of it, so about every 21 s.
const LIFETIME: Duration = Duration::from_secs(30);

/// Bound on seeing two renewals on both sidecars (about 45 s when all is well).
const TWO_RENEWALS: Duration = Duration::from_secs(120);

/// Bound on a sidecar renewing onto the new signer (one renewal period and a CA re-read).
const ONE_RENEWAL: Duration = Duration::from_secs(60);

/// How often `/certs` is looked at while waiting for a renewal.
const POLL: Duration = Duration::from_millis(300);

/// The proxy closes idle upstream HTTP/1 connections after 3 s; bursts of new client
/// connections spaced further apart than that find no idle ones and make new mesh handshakes.
const FRESH_BURST_EVERY: Duration = Duration::from_millis(3500);

// === Background load ===

/// What one stream of requests saw: replies that were 200, and everything else.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    fn record(&self, what: &str, outcome: Result<client::Reply, String>) -> bool {
        match outcome {
            Ok(r) if r.status == StatusCode::OK => {
                self.ok.fetch_add(1, Ordering::SeqCst);
                true
            }
            Ok(r) => {
                self.fail(format!(
                    "{what}: {} {:?} {:?}",
                    r.status,
                    r.reason(),
                    r.text()
                ));
                true
            }
            Err(e) => {
                self.fail(format!("{what}: {e}"));
                false
            }
        }
    }

    fn fail(&self, what: String) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }

    fn failures(&self) -> Vec<String> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Continuous traffic to `host` through one sidecar's outbound listener, from three tasks:
/// one kept-alive HTTP/1.1 connection and one h2 connection, each sending one request after
/// the other and never re-made (a transport error ends the task, recorded), and bursts of
/// requests on new connections.
struct Load {
    name: String,
    stop: Arc<AtomicBool>,
    h1: Arc<Tally>,
    h2: Arc<Tally>,
    fresh: Arc<Tally>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    async fn start(name: &str, addr: SocketAddr, host: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (h1, h2, fresh) = (
            Arc::new(Tally::default()),
            Arc::new(Tally::default()),
            Arc::new(Tally::default()),
        );
        // Both long-lived connections are made here, before any renewal.
        let mut h1_conn = H1Conn::connect(addr).await;
        let h2_conn = H2Conn::connect(addr).await;
        let mut tasks = Vec::new();
        {
            let (stop, tally) = (stop.clone(), h1.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let r = h1_conn
                        .try_send(client::get(host, &format!("/h1/{i}")))
                        .await;
                    if !tally.record("kept-alive h1", r) {
                        return;
                    }
                }
            }));
        }
        {
            let (stop, tally) = (stop.clone(), h2.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let r = h2_conn
                        .try_send(client::get(host, &format!("/h2/{i}")))
                        .await;
                    if !tally.record("kept-alive h2", r) {
                        return;
                    }
                }
            }));
        }
        {
            let (stop, tally) = (stop.clone(), fresh.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    // Held long enough that the three overlap and need three upstream
                    // connections beside the kept-alive one.
                    let burst = (0..3).map(|i| {
                        let req = client::request(http::Method::GET, host, &format!("/new/{i}"))
                            .header("x-delay-ms", "100")
                            .body(http_body_util::Full::default())
                            .expect("request");
                        client::try_send_h1(addr, req)
                    });
                    for r in futures_util::future::join_all(burst).await {
                        tally.record("new h1 connection", r);
                    }
                    let r = H2Conn::connect(addr)
                        .await
                        .try_send(client::get(host, "/new/h2"))
                        .await;
                    tally.record("new h2 connection", r);
                    tokio::time::sleep(FRESH_BURST_EVERY).await;
                }
            }));
        }
        Load {
            name: name.to_owned(),
            stop,
            h1,
            h2,
            fresh,
            tasks,
        }
    }

    /// Successful requests so far on the kept-alive h1, the h2 and new connections.
    fn ok(&self) -> [usize; 3] {
        [self.h1.ok(), self.h2.ok(), self.fresh.ok()]
    }

    /// Waits until every stream has had more successful requests than `since` shows, with
    /// the kept-alive ones still alive.
    async fn progressed(&self, since: [usize; 3], what: &str) {
        eventually(
            &format!("{}: traffic succeeds on every connection {what}", self.name),
            STEP,
            || async {
                let now = self.ok();
                now.iter().zip(since).all(|(n, s)| *n > s)
            },
        )
        .await;
    }

    /// Stops the tasks and asserts that every request of every stream got a 200.
    async fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            within("the load task ends", STEP, t)
                .await
                .expect("load task");
        }
        let failures: Vec<String> = [&self.h1, &self.h2, &self.fresh]
            .iter()
            .flat_map(|t| t.failures())
            .collect();
        let [h1, h2, fresh] = [self.h1.ok(), self.h2.ok(), self.fresh.ok()];
        assert!(
            failures.is_empty(),
            "{}: {} failed request(s) (ok: h1 {h1}, h2 {h2}, new {fresh}): {failures:#?}",
            self.name,
            failures.len()
        );
        assert!(
            h1 > 0 && h2 > 0 && fresh > 0,
            "{}: every stream carried traffic (h1 {h1}, h2 {h2}, new {fresh})",
            self.name
        );
    }
}

// === Helpers ===

async fn certs(p: &Proxy) -> Value {
    let r = p.admin_get("/certs").await;
    assert_eq!(r.status, StatusCode::OK, "/certs: {r:?}");
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("/certs is not JSON: {e}"))
}

fn serial(c: &Value) -> String {
    c["certificate"]["serial"]
        .as_str()
        .unwrap_or_else(|| panic!("/certs without a serial: {c}"))
        .to_owned()
}

fn anchors(c: &Value) -> BTreeSet<String> {
    c["trustAnchors"]
        .as_array()
        .unwrap_or_else(|| panic!("/certs without trustAnchors: {c}"))
        .iter()
        .map(|a| a["sha256"].as_str().expect("an anchor's sha256").to_owned())
        .collect()
}

fn sha256(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("a PEM certificate");
    block.contents
}

fn handshakes(m: &client::Metrics, direction: &str, result: &str) -> f64 {
    m.sum(
        "skiff_tls_handshakes_total",
        &[("direction", direction), ("result", result)],
    )
}

/// A workload that both serves (its app behind its inbound, strict mTLS) and calls.
fn workload(name: &str, listen: &str, app: SocketAddr) -> String {
    format!(
        "  - name: {name}\n    serviceAccount: {name}\n    inbound: {{ listen: \"{listen}\", app: \"{app}\", mtls: strict }}\n"
    )
}

fn service(name: &str) -> String {
    format!("  - name: {name}\n    endpoints: [ {{ workload: {name} }} ]\n")
}

// === A CA of the test's own, for the new root and for probes ===

/// A self-signed P-256 CA made in the test, as an operator would bring for a rotation.
struct Root {
    pem: String,
    der: Vec<u8>,
    key_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Root {
    fn generate(cn: &str) -> Root {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let key_pem = key.serialize_pem();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-signed root");
        Root {
            pem: issuer.pem(),
            der: issuer.der().to_vec(),
            key_pem,
            issuer,
        }
    }
}

/// A leaf for `spiffe_id` signed by `issuer`: what a mesh client presents.
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    spiffe_id: &str,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(
        spiffe_id.try_into().expect("an IA5 SPIFFE ID"),
    )];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, issuer).expect("leaf");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.der().clone(), key)
}

/// What a mesh client of the test's own saw at a sidecar's inbound listener.
struct Probe {
    /// The leaf the sidecar served; `None` when the handshake failed on our side.
    served: Option<Vec<u8>>,
    /// Everything read after sending one HTTP/1.1 request (empty if the sidecar refused us).
    response: String,
}

/// Mesh TLS to `addr` (ALPN `skiff-mesh/1`, then `http/1.1`) presenting `cert`, then one
/// `GET /probe` with `connection: close`, read to the end.
async fn probe(
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Probe {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(accept_any_server())
        .with_client_auth_cert(vec![cert], key)
        .expect("client certificate");
    cfg.alpn_protocols = vec![b"skiff-mesh/1".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    within("a probe of a sidecar's inbound", STEP, async move {
        let tcp = TcpStream::connect(addr)
            .await
            .expect("connect to the inbound");
        let name = ServerName::try_from("mesh.skiff.internal").expect("a DNS name");
        let mut tls = match connector.connect(name, tcp).await {
            Ok(tls) => tls,
            Err(e) => {
                return Probe {
                    served: None,
                    response: format!("handshake: {e}"),
                };
            }
        };
        let served = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        let mut response = Vec::new();
        if tls
            .write_all(b"GET /probe HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n\r\n")
            .await
            .is_ok()
        {
            let mut buf = [0u8; 4096];
            // EOF, a missing close_notify or a refusal alert all end the read.
            while let Ok(n) = tls.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                response.extend_from_slice(&buf[..n]);
            }
        }
        Probe {
            served,
            response: String::from_utf8_lossy(&response).into_owned(),
        }
    })
    .await
}

/// Whether `leaf` (DER) is signed by `root` (DER).
fn signed_by(leaf: &[u8], root: &[u8]) -> bool {
    let (_, leaf) = X509Certificate::from_der(leaf).expect("the served leaf parses");
    let (_, root) = X509Certificate::from_der(root).expect("the root parses");
    leaf.verify_signature(Some(root.public_key())).is_ok()
}

fn serial_of(leaf: &[u8]) -> String {
    let (_, leaf) = X509Certificate::from_der(leaf).expect("the served leaf parses");
    leaf.raw_serial_as_string().replace(':', "")
}

// === Tests ===

/// Two sidecars calling each other (each the other's server, strict mTLS), with certificates
/// of [`LIFETIME`], serving `a`'s and `b`'s apps once both inbound listeners are in the mesh.
async fn pair(a: &str, b: &str) -> (MeshCa, Proxy, Proxy, HttpUpstream, HttpUpstream) {
    let (app_a, app_b) = (
        HttpUpstream::start(&format!("{a}-app")).await,
        HttpUpstream::start(&format!("{b}-app")).await,
    );
    let mesh = |listen_a: &str, listen_b: &str| {
        format!(
            "services:\n{}{}workloads:\n{}{}",
            service(a),
            service(b),
            workload(a, listen_a, app_a.addr()),
            workload(b, listen_b, app_b.addr())
        )
    };
    let ca = MeshCa::start(&mesh("127.0.0.1:1", "127.0.0.1:2"), &[a, b], Some(LIFETIME)).await;
    let (pa, pb) = (ca.sidecar(a, true).await, ca.sidecar(b, true).await);
    ca.set_mesh(&mesh(&pa.inbound.to_string(), &pb.inbound.to_string()));
    for (from, to) in [(&pa, b), (&pb, a)] {
        eventually(
            &format!("{to} is reachable through the mesh"),
            STEP,
            || async {
                let r = client::send_h1(from.outbound, client::get(to, "/warm-up")).await;
                r.status == StatusCode::OK
            },
        )
        .await;
    }
    (ca, pa, pb, app_a, app_b)
}

#[tokio::test]
async fn certificates_renew_under_load_without_a_failed_request() {
    let app = HttpUpstream::start("server-app").await;
    let mesh = |listen: &str| {
        format!(
            "services:\n{}workloads:\n  - name: client\n    serviceAccount: client\n{}",
            service("server"),
            workload("server", listen, app.addr())
        )
    };
    let ca = MeshCa::start(&mesh("127.0.0.1:1"), &["client", "server"], Some(LIFETIME)).await;
    let server = ca.sidecar("server", true).await;
    ca.set_mesh(&mesh(&server.inbound.to_string()));
    let client_side = ca.sidecar("client", true).await;
    eventually("the server is reachable through the mesh", STEP, || async {
        let r = client::send_h1(client_side.outbound, client::get("server", "/")).await;
        r.status == StatusCode::OK
    })
    .await;

    let load = Load::start("client → server", client_side.outbound, "server").await;

    // Two renewals on each side: three distinct serials in a row.
    let proxies = [("client", &client_side), ("server", &server)];
    let mut serials: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    within("two renewals on both sidecars", TWO_RENEWALS, async {
        loop {
            for (seen, (_, p)) in serials.iter_mut().zip(proxies) {
                let s = serial(&certs(p).await);
                if seen.last() != Some(&s) {
                    assert!(!seen.contains(&s), "a serial came back: {s} after {seen:?}");
                    seen.push(s);
                }
            }
            if serials.iter().all(|s| s.len() >= 3) {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;

    // After the last renewal: the connections made before it still carry requests, and new
    // handshakes (client outbound = server inbound) succeed with the new certificates.
    let before = [
        handshakes(&client_side.metric_values().await, "outbound", "ok"),
        handshakes(&server.metric_values().await, "inbound", "ok"),
    ];
    load.progressed(load.ok(), "after the last renewal").await;
    eventually(
        "new mesh handshakes after the last renewal",
        STEP,
        || async {
            handshakes(&client_side.metric_values().await, "outbound", "ok") > before[0]
                && handshakes(&server.metric_values().await, "inbound", "ok") > before[1]
        },
    )
    .await;
    load.finish().await;

    for ((name, p), seen) in proxies.iter().zip(&serials) {
        let m = p.metric_values().await;
        let ok = m.sum("skiff_identity_renewals_total", &[("result", "ok")]);
        assert!(
            ok >= 3.0,
            "{name}: {ok} certificates installed, serials {seen:?}"
        );
        assert_eq!(
            m.sum("skiff_identity_renewals_total", &[("result", "failed")]),
            0.0,
            "{name}: no failed renewal"
        );
        assert_eq!(
            m.sum("skiff_tls_handshakes_total", &[("result", "failed")]),
            0.0,
            "{name}: no failed handshake across the renewals"
        );
        assert_eq!(
            certs(p).await["certificate"]["spiffeId"],
            spiffe(name),
            "{name}: renewed for the same identity"
        );
    }
}

#[tokio::test]
async fn renewal_comes_at_seventy_percent_of_the_lifetime() {
    let ca = MeshCa::start(
        "workloads:\n  - name: solo\n    serviceAccount: solo\n",
        &["solo"],
        Some(LIFETIME),
    )
    .await;
    let solo = ca.sidecar("solo", true).await;
    let first = certs(&solo).await;
    let (issued, renew_at, not_after) = (
        time_of(&first, "issuedAt"),
        time_of(&first, "renewAt"),
        time_of(&first, "notAfter"),
    );
    let lifetime = LIFETIME.as_secs_f64();
    let due = 0.6 * lifetime..=0.8 * lifetime;
    // Issued for `lifetime` from now (its notBefore lies further back, by the CA's clock-skew
    // allowance, which is no part of the lifetime): renewal is due at 70 % of it.
    assert!(
        (not_after - issued - lifetime).abs() <= 2.0,
        "notAfter is the lifetime after the issue: {first}"
    );
    assert!(
        due.contains(&(renew_at - issued)),
        "renewAt {:.1} s after the issue, not at about 70 % of the {lifetime} s lifetime: {first}",
        renew_at - issued
    );
    // And the renewal happens then.
    let renewed = within("the first renewal", ONE_RENEWAL, async {
        loop {
            let c = certs(&solo).await;
            if serial(&c) != serial(&first) {
                return c;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    let after = time_of(&renewed, "issuedAt") - issued;
    assert!(
        (*due.start()..=*due.end() + 2.0).contains(&after),
        "renewed {after:.1} s after the issue, not at about 70 % of the {lifetime} s lifetime: \
         {first} then {renewed}"
    );
}

/// A time field of `/certs`' certificate, in seconds since the Unix epoch.
fn time_of(c: &Value, field: &str) -> f64 {
    let s = c["certificate"][field]
        .as_str()
        .unwrap_or_else(|| panic!("/certs without {field}: {c}"));
    unix_seconds(s)
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time with milliseconds, as `/certs` writes.
fn unix_seconds(s: &str) -> f64 {
    let (date, time) = s
        .strip_suffix('Z')
        .and_then(|s| s.split_once('T'))
        .unwrap_or_else(|| panic!("not an RFC 3339 UTC time: {s:?}"));
    let num = |v: &str| -> i64 { v.parse().unwrap_or_else(|_| panic!("bad number in {s:?}")) };
    let d: Vec<i64> = date.split('-').map(num).collect();
    let (y, m, day) = (d[0], d[1], d[2]);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t: Vec<&str> = time.split(':').collect();
    let secs: f64 = t[2]
        .parse()
        .unwrap_or_else(|_| panic!("bad seconds in {s:?}"));
    (days * 86_400 + num(t[0]) * 3600 + num(t[1]) * 60) as f64 + secs
}

#[tokio::test]
async fn trust_anchor_rotation_applies_without_restart() {
    let (ca, a, b, _app_a, _app_b) = pair("alpha", "beta").await;
    let sidecars = [("alpha", &a), ("beta", &b)];
    let pids = [a.pid(), b.pid()];
    let dir = ca.ca_dir();
    let old_pem = std::fs::read_to_string(dir.join("ca.crt")).expect("read ca.crt");
    let old_key = std::fs::read_to_string(dir.join("ca.key")).expect("read ca.key");
    let old_der = pem_to_der(&old_pem);
    let old_issuer = Issuer::from_ca_cert_pem(&old_pem, KeyPair::from_pem(&old_key).expect("key"))
        .expect("the generated CA");
    let new = Root::generate("Skiff mesh CA (rotated)");
    let (old_sha, new_sha) = (sha256(&old_der), sha256(&new.der));
    for (name, p) in sidecars {
        assert_eq!(
            anchors(&certs(p).await),
            BTreeSet::from([old_sha.clone()]),
            "{name}: only the generated anchor at first"
        );
        let (cert, key) = leaf(&old_issuer, &spiffe("probe"));
        let first = probe(p.inbound, cert, key).await;
        assert!(
            first
                .served
                .as_deref()
                .is_some_and(|s| signed_by(s, &old_der)),
            "{name}: serves a certificate from the generated root"
        );
        assert!(
            first.response.starts_with("HTTP/1.1 200"),
            "{name}: {:?}",
            first.response
        );
    }

    let loads = [
        Load::start("alpha → beta", a.outbound, "beta").await,
        Load::start("beta → alpha", b.outbound, "alpha").await,
    ];

    // (a) The new root becomes an extra anchor: both sidecars trust both roots.
    replace_file(&dir.join("trust-anchors.crt"), &new.pem);
    let both = BTreeSet::from([old_sha.clone(), new_sha.clone()]);
    for (name, p) in sidecars {
        eventually(&format!("{name} trusts both roots"), STEP, || async {
            anchors(&certs(p).await) == both
        })
        .await;
    }

    // (b) The signer switches to the new root; the old one stays an anchor. The old signer
    // is kept aside. The extra anchors name both roots first, so no state of the directory
    // between the writes drops an anchor a held certificate needs.
    std::fs::write(dir.join("old-ca.crt"), &old_pem).expect("keep the old ca.crt");
    std::fs::write(dir.join("old-ca.key"), &old_key).expect("keep the old ca.key");
    replace_file(
        &dir.join("trust-anchors.crt"),
        &format!("{}{}", old_pem, new.pem),
    );
    replace_file(&dir.join("ca.key"), &new.key_pem);
    replace_file(&dir.join("ca.crt"), &new.pem);
    replace_file(&dir.join("trust-anchors.crt"), &old_pem);
    for (name, p) in sidecars {
        renewed_onto(p, &new, name).await;
        assert_eq!(
            anchors(&certs(p).await),
            both,
            "{name}: still both anchors while the old root is listed"
        );
    }
    for l in &loads {
        l.progressed(l.ok(), "with certificates from the new root")
            .await;
    }

    // (c) The old root leaves the bundle (an empty file: no extra anchors).
    replace_file(&dir.join("trust-anchors.crt"), "");
    for (name, p) in sidecars {
        eventually(
            &format!("{name} trusts only the new root"),
            STEP,
            || async { anchors(&certs(p).await) == BTreeSet::from([new_sha.clone()]) },
        )
        .await;
    }
    let before: Vec<f64> = futures_util::future::join_all(
        sidecars
            .map(|(_, p)| async move { handshakes(&p.metric_values().await, "outbound", "ok") }),
    )
    .await;
    for l in &loads {
        l.progressed(l.ok(), "once the old root is gone").await;
    }
    for ((name, p), before) in sidecars.iter().zip(before) {
        eventually(
            &format!("{name} makes new mesh handshakes on the new root alone"),
            STEP,
            || async { handshakes(&p.metric_values().await, "outbound", "ok") > before },
        )
        .await;
    }
    for l in loads {
        l.finish().await;
    }
    for ((name, p), pid) in sidecars.iter().zip(pids) {
        let m = p.metric_values().await;
        assert_eq!(
            m.sum("skiff_tls_handshakes_total", &[("result", "failed")]),
            0.0,
            "{name}: no failed handshake through the rotation"
        );
        assert_eq!(p.pid(), pid, "{name}: the same process throughout");
    }

    // The old root is no longer trusted: a client certificate from it is refused, one from
    // the new root is served.
    for (name, p) in sidecars {
        let (cert, key) = leaf(&old_issuer, &spiffe("probe"));
        let refused = probe(p.inbound, cert, key).await;
        assert!(
            !refused.response.starts_with("HTTP/1.1 200"),
            "{name}: a client certificate from the removed root is refused: {:?}",
            refused.response
        );
        let served = probe_cert(p, &new).await;
        assert!(
            served.response.starts_with("HTTP/1.1 200"),
            "{name}: a client certificate from the new root is served: {:?}",
            served.response
        );
        eventually(
            &format!("{name} counts the refused handshake as an unknown issuer"),
            STEP,
            || async {
                let m = p.metric_values().await;
                let refused = m.sum(
                    "skiff_tls_handshakes_total",
                    &[
                        ("direction", "inbound"),
                        ("result", "failed"),
                        ("reason", "unknown-issuer"),
                    ],
                );
                assert!(refused <= 1.0, "{name}: one refusal, counted {refused}");
                refused == 1.0
            },
        )
        .await;
    }
}

/// Waits until `p` serves a certificate signed by `root` and `/certs` shows that very
/// certificate. Probes only when `/certs` shows a serial not probed yet.
async fn renewed_onto(p: &Proxy, root: &Root, name: &str) {
    let mut probed: Option<String> = None;
    let what = format!("{name} renews onto a certificate from the new root");
    within(&what, ONE_RENEWAL, async {
        loop {
            let shown = serial(&certs(p).await);
            if probed.as_ref() != Some(&shown) {
                let served = probe_cert(p, root).await.served;
                if served
                    .as_deref()
                    .is_some_and(|s| signed_by(s, &root.der) && serial_of(s) == shown)
                {
                    return;
                }
                probed = Some(shown);
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
}

/// A probe of `p`'s inbound presenting a client certificate from `root`.
async fn probe_cert(p: &Proxy, root: &Root) -> Probe {
    let (cert, key) = leaf(&root.issuer, &spiffe("probe"));
    probe(p.inbound, cert, key).await
}
