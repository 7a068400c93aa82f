//! Certificates and raw TLS for the mTLS tests: leaves signed by the control plane's mesh CA
//! (its `ca.crt`/`ca.key`) or by a foreign CA, a TLS client that records what the server shows
//! and whether it asks for a client certificate, and a small TLS echo server (an impostor
//! sidecar, or an app that speaks its own TLS).

use std::{
    io,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, date_time_ymd,
};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    client::{
        ResolvesClientCert,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    server::ParsedCertificate,
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};
use x509_parser::{extensions::GeneralName, prelude::FromDer, prelude::X509Certificate};

use crate::support::{STEP, within};

/// The ALPN protocol that marks mesh TLS.
pub const MESH_ALPN: &[u8] = b"skiff-mesh/1";

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain (leaf first) and its key.
pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Signs leaves: the mesh CA itself, or a stranger.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
}

impl Signer {
    /// The control plane's own signer, read from its CA directory.
    pub fn mesh(ca_dir: &Path) -> Signer {
        let (cert_pem, key_pem) = read_ca(ca_dir);
        let key = KeyPair::from_pem(&key_pem).expect("ca.key is a PEM key");
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).expect("ca.crt is a CA certificate");
        Signer { issuer }
    }

    /// A CA of its own, unrelated to the mesh.
    pub fn foreign() -> Signer {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "not the mesh CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a key");
        Signer {
            issuer: Issuer::new(params, key),
        }
    }

    /// A CA that is not the mesh's but carries exactly the mesh CA's subject name, so only
    /// the signature tells them apart.
    pub fn foreign_named_like(ca_dir: &Path) -> Signer {
        let (cert_pem, _) = read_ca(ca_dir);
        let mesh_ca = ca_der(&cert_pem);
        let (_, parsed) = X509Certificate::from_der(&mesh_ca).expect("ca.crt parses");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for attr in parsed.subject().iter_attributes() {
            let oid: Vec<u64> = attr.attr_type().iter().expect("small OID arcs").collect();
            let value = attr.as_str().expect("a string attribute");
            let ty = match oid[..] {
                [2, 5, 4, 3] => rcgen::DnType::CommonName,
                [2, 5, 4, 10] => rcgen::DnType::OrganizationName,
                _ => rcgen::DnType::CustomDnType(oid),
            };
            params.distinguished_name.push(ty, value);
        }
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a key");
        let cert = params.self_signed(&key).expect("self-signed foreign CA");
        assert_eq!(
            subject_of(cert.der()),
            subject_of(&mesh_ca),
            "the foreign CA must be named like the mesh CA"
        );
        drop(cert);
        Signer {
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf as the mesh CA would issue it for `spiffe_id`; `expired` dates it in 2020.
    pub fn leaf(&self, spiffe_id: &str, expired: bool) -> Leaf {
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(
            spiffe_id.try_into().expect("an IA5 SPIFFE ID"),
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2020, 1, 2);
        }
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        Leaf {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::try_from(key.serialize_der()).expect("PKCS#8"),
        }
    }
}

fn read_ca(ca_dir: &Path) -> (String, String) {
    let read = |name: &str| {
        std::fs::read_to_string(ca_dir.join(name))
            .unwrap_or_else(|e| panic!("read {}: {e}", ca_dir.join(name).display()))
    };
    (read("ca.crt"), read("ca.key"))
}

/// The first certificate of a PEM file, as DER.
pub fn ca_der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate")
}

/// The subject name of a certificate, DER.
fn subject_of(der: &[u8]) -> Vec<u8> {
    let (_, cert) = X509Certificate::from_der(der).expect("a certificate");
    cert.subject().as_raw().to_vec()
}

/// The URI SANs of a certificate.
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).expect("a certificate");
    cert.subject_alternative_name()
        .expect("a well-formed SAN extension")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some((*u).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `leaf` chains to `anchor` (signature, validity, serverAuth), as a mesh peer would
/// check it.
pub fn chains_to(leaf: &CertificateDer<'_>, anchor: &CertificateDer<'static>) -> bool {
    let mut roots = RootCertStore::empty();
    roots.add(anchor.clone()).expect("the anchor parses");
    let parsed = ParsedCertificate::try_from(leaf).expect("the leaf parses");
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        &[],
        UnixTime::now(),
        provider().signature_verification_algorithms.all,
    )
    .is_ok()
}

/// SHA-256 of `der`, lowercase hex (as `/certs` shows anchors).
pub fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a [`TlsProbe`] saw of the server.
#[derive(Debug)]
struct Record {
    provider: Arc<CryptoProvider>,
    server_chain: Mutex<Vec<CertificateDer<'static>>>,
    asked_for_client_cert: AtomicBool,
}

impl ServerCertVerifier for Record {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.server_chain.lock().expect("probe lock") = chain;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ResolvesClientCert for Record {
    /// Called only when the server sends a CertificateRequest; the probe has nothing to give.
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.asked_for_client_cert.store(true, Ordering::SeqCst);
        None
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A server-certificate verifier that accepts anything (it records the chain, unused here),
/// for probes that only want to see which certificate a sidecar serves.
pub fn accept_any_server() -> Arc<dyn rustls::client::danger::ServerCertVerifier> {
    Arc::new(Record {
        provider: provider(),
        server_chain: Mutex::new(Vec::new()),
        asked_for_client_cert: AtomicBool::new(false),
    })
}

/// A TLS client without a certificate that accepts any server certificate and records it,
/// and records whether the server asked for a client certificate.
pub struct TlsProbe {
    config: Arc<ClientConfig>,
    record: Arc<Record>,
}

impl TlsProbe {
    /// A probe offering `alpn`, in this order.
    pub fn new(alpn: &[&[u8]]) -> TlsProbe {
        let provider = provider();
        let record = Arc::new(Record {
            provider: provider.clone(),
            server_chain: Mutex::new(Vec::new()),
            asked_for_client_cert: AtomicBool::new(false),
        });
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .dangerous()
            .with_custom_certificate_verifier(record.clone())
            .with_client_cert_resolver(record.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsProbe {
            config: Arc::new(config),
            record,
        }
    }

    /// Connects and handshakes (TLS 1.3: the client is done before the server has judged
    /// the client's certificate, so a refusal may only show on the first read).
    pub async fn connect(
        &self,
        addr: SocketAddr,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = within("probe connect", STEP, TcpStream::connect(addr)).await?;
        let name = ServerName::try_from("probe.skiff.test").expect("a DNS name");
        within(
            "probe handshake",
            STEP,
            tokio_rustls::TlsConnector::from(self.config.clone()).connect(name, tcp),
        )
        .await
    }

    /// The server's chain as presented (leaf first); empty if it showed none.
    pub fn server_chain(&self) -> Vec<CertificateDer<'static>> {
        self.record.server_chain.lock().expect("probe lock").clone()
    }

    /// Whether the server sent a CertificateRequest.
    pub fn was_asked_for_client_cert(&self) -> bool {
        self.record.asked_for_client_cert.load(Ordering::SeqCst)
    }
}

/// Writes `request` on an established TLS stream and reads until EOF or error; returns the
/// bytes that came back and whether the stream ended in an error (e.g. a TLS alert).
pub async fn exchange(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    request: &[u8],
) -> (Vec<u8>, Option<io::Error>) {
    within("exchange over a probe", STEP, async {
        if let Err(e) = async {
            tls.write_all(request).await?;
            tls.flush().await
        }
        .await
        {
            return (Vec::new(), Some(e));
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) => return (got, None),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (got, Some(e)),
            }
        }
    })
    .await
}

/// Counters of a [`TlsEchoServer`].
#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicUsize,
    handshakes: AtomicUsize,
    received: AtomicUsize,
    alpn: Mutex<Option<Vec<u8>>>,
}

/// A TLS server with one certificate that echoes what it reads after the handshake. With
/// a mesh leaf and the mesh ALPN it plays a sidecar; with its own certificate, an app that
/// speaks TLS itself. Stops when dropped.
pub struct TlsEchoServer {
    addr: SocketAddr,
    counts: Arc<Counts>,
    task: JoinHandle<()>,
}

impl TlsEchoServer {
    /// Serves `leaf` with `alpn` in preference order (empty: no ALPN), TLS 1.3 and 1.2, no
    /// client authentication.
    pub async fn start(leaf: Leaf, alpn: &[&[u8]]) -> TlsEchoServer {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_single_cert(leaf.chain, leaf.key)
            .expect("the key matches the leaf");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let counts = Arc::new(Counts::default());
        let task = tokio::spawn({
            let counts = counts.clone();
            async move {
                let mut conns = JoinSet::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((tcp, _)) = accepted else { continue };
                            counts.accepted.fetch_add(1, Ordering::SeqCst);
                            conns.spawn(echo(acceptor.clone(), tcp, counts.clone()));
                        }
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    }
                }
            }
        });
        TlsEchoServer { addr, counts, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted.
    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed from this server's side.
    pub fn handshakes(&self) -> usize {
        self.counts.handshakes.load(Ordering::SeqCst)
    }

    /// Application bytes received over TLS, all connections together.
    pub fn received(&self) -> usize {
        self.counts.received.load(Ordering::SeqCst)
    }

    /// The ALPN protocol agreed on the last completed handshake.
    pub fn last_alpn(&self) -> Option<Vec<u8>> {
        self.counts.alpn.lock().expect("server lock").clone()
    }
}

impl Drop for TlsEchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(acceptor: tokio_rustls::TlsAcceptor, tcp: TcpStream, counts: Arc<Counts>) {
    let Ok(mut tls) = acceptor.accept(tcp).await else {
        return;
    };
    *counts.alpn.lock().expect("server lock") = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    counts.handshakes.fetch_add(1, Ordering::SeqCst);
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                counts.received.fetch_add(n, Ordering::SeqCst);
                if tls.write_all(&buf[..n]).await.is_err() || tls.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = tls.shutdown().await;
}

/// A self-signed certificate for an app's own TLS (a DNS name, no SPIFFE ID).
pub fn app_leaf() -> Leaf {
    let ck = rcgen::generate_simple_self_signed(vec!["app.skiff.test".to_owned()])
        .expect("self-signed app certificate");
    Leaf {
        chain: vec![ck.cert.der().clone()],
        key: PrivateKeyDer::try_from(ck.signing_key.serialize_der()).expect("PKCS#8"),
    }
}
