//! Workload identity and mesh TLS: this proxy's certificate (its key lives in memory only)
//! and the mesh's trust anchors, the rustls client and server configs built on them, SPIFFE
//! verification of peers, and recognition of mesh TLS by its ALPN.

pub mod certify;
pub mod hello;
pub mod metrics;
#[cfg(test)]
mod tests;
mod verify;

use std::{
    io,
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    client::ResolvesClientCert,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

pub use metrics::{Side, TlsMetrics};

/// The ALPN protocol a mesh TLS client offers first.
pub const MESH_ALPN: &[u8] = b"skiff-mesh/1";

/// SNI sent to meshed endpoints. Peers are checked by SPIFFE ID, never by this name.
const SNI: &str = "mesh.skiff.internal";

/// Why a mesh TLS handshake failed or its peer was refused.
#[derive(Clone, Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls handshake ({reason}): {message}")]
    Handshake {
        reason: &'static str,
        message: Arc<str>,
    },
    #[error("peer identity {presented:?}, expected {expected:?}")]
    IdentityMismatch {
        expected: Arc<str>,
        presented: Arc<str>,
    },
    #[error("this proxy holds no certificate yet")]
    NoCertificate,
    #[error("certificate: {0}")]
    Certificate(String),
}

impl TlsError {
    /// The `reason` label of `skiff_tls_handshakes_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            TlsError::Handshake { reason, .. } => reason,
            TlsError::IdentityMismatch { .. } => "identity-mismatch",
            TlsError::NoCertificate => "no-certificate",
            TlsError::Certificate(_) => "bad-certificate",
        }
    }

    /// The peer could not prove the identity expected of it (as opposed to a network
    /// failure): the client gets 502 `peer-identity-mismatch`.
    pub fn is_identity_failure(&self) -> bool {
        matches!(
            self.reason(),
            "identity-mismatch"
                | "expired"
                | "not-yet-valid"
                | "unknown-issuer"
                | "bad-certificate"
        )
    }

    fn handshake(e: &io::Error) -> Self {
        let reason = match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::InvalidCertificate(c)) => {
                use rustls::CertificateError as C;
                match c {
                    C::Expired | C::ExpiredContext { .. } => "expired",
                    C::NotValidYet | C::NotValidYetContext { .. } => "not-yet-valid",
                    // No anchor by name, or one by name whose signature does not match (two
                    // CAs with the same subject): either way, not our mesh.
                    C::UnknownIssuer | C::BadSignature => "unknown-issuer",
                    _ => "bad-certificate",
                }
            }
            Some(rustls::Error::NoCertificatesPresented) => "no-client-certificate",
            Some(rustls::Error::AlertReceived(_)) => "alert-received",
            Some(rustls::Error::NoApplicationProtocol) => "alpn",
            Some(_) => "protocol",
            None => "io",
        };
        TlsError::Handshake {
            reason,
            message: e.to_string().into(),
        }
    }
}

/// What the ALPN offer says the connection will carry; the server answers with the inner
/// protocol, so both ends know it before the first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inner {
    Http1,
    Http2,
    Opaque,
}

impl Inner {
    fn index(self) -> usize {
        match self {
            Inner::Http1 => 0,
            Inner::Http2 => 1,
            Inner::Opaque => 2,
        }
    }

    fn alpn(self) -> Vec<Vec<u8>> {
        let mut offer = vec![MESH_ALPN.to_vec()];
        match self {
            Inner::Http1 => offer.push(b"http/1.1".to_vec()),
            Inner::Http2 => offer.push(b"h2".to_vec()),
            Inner::Opaque => {}
        }
        offer
    }
}

/// This proxy's certificate as issued, with what `/certs` shows of it.
#[derive(Debug)]
pub struct Certified {
    pub key: Arc<CertifiedKey>,
    pub spiffe_id: Arc<str>,
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub issued_at: SystemTime,
}

impl Certified {
    /// From when the lifetime counts for renewal: receipt, or `notBefore` if that is later.
    pub fn usable_from(&self) -> SystemTime {
        self.not_before.max(self.issued_at)
    }

    /// When the certificate task renews it (70 % of the usable lifetime).
    pub fn renew_at(&self) -> SystemTime {
        certify::renewal_point(self.usable_from(), self.not_after)
    }
}

/// The trust anchors in force.
#[derive(Debug)]
pub struct Anchors {
    pub roots: Arc<RootCertStore>,
    pub der: Vec<CertificateDer<'static>>,
    /// SHA-256 of each anchor, hex, for `/certs` and logs.
    pub fingerprints: Vec<String>,
}

/// The state both directions' rustls configs read at handshake time: a renewal or an anchor
/// change applies to the next handshake without rebuilding any config.
#[derive(Debug)]
pub(crate) struct Shared {
    provider: Arc<CryptoProvider>,
    cert: ArcSwapOption<Certified>,
    anchors: ArcSwap<Anchors>,
    /// The server side's client verifier over the current anchors (rustls's own, rebuilt
    /// when the anchors change).
    client_verifier: ArcSwapOption<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

/// Mesh TLS for this proxy: identity on. Shared by the connector, the inbound side, the
/// certificate task and the admin endpoint.
pub struct MeshTls {
    shared: Arc<Shared>,
    clients: [Arc<ClientConfig>; 3],
    server: Arc<ServerConfig>,
    /// The SPIFFE ID this proxy should hold, from its Workload; the certificate task waits
    /// on it.
    wanted: watch::Sender<Option<Arc<str>>>,
    /// Bumped on every installed certificate, for anyone waiting on one.
    issued: watch::Sender<u64>,
    pub metrics: TlsMetrics,
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls").finish_non_exhaustive()
    }
}

impl MeshTls {
    pub fn new(metrics: TlsMetrics) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let shared = Arc::new(Shared {
            provider: provider.clone(),
            cert: ArcSwapOption::empty(),
            anchors: ArcSwap::from_pointee(Anchors {
                roots: Arc::new(RootCertStore::empty()),
                der: Vec::new(),
                fingerprints: Vec::new(),
            }),
            client_verifier: ArcSwapOption::empty(),
        });
        let build = |inner: Inner| -> Result<Arc<ClientConfig>, TlsError> {
            let mut cfg = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| TlsError::Certificate(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verify::PeerServerVerifier::new(
                    shared.clone(),
                )))
                .with_client_cert_resolver(Arc::new(Resolver(shared.clone())));
            cfg.alpn_protocols = inner.alpn();
            // Peers are checked by SPIFFE ID after every handshake; a resumed session would
            // skip the certificate, so there is none.
            cfg.resumption = rustls::client::Resumption::disabled();
            Ok(Arc::new(cfg))
        };
        let clients = [
            build(Inner::Http1)?,
            build(Inner::Http2)?,
            build(Inner::Opaque)?,
        ];
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Certificate(e.to_string()))?
            .with_client_cert_verifier(Arc::new(verify::PeerClientVerifier::new(shared.clone())))
            .with_cert_resolver(Arc::new(Resolver(shared.clone())));
        // Ours in preference order: the client's inner protocol wins, so it knows what the
        // hop speaks; a client offering only the mesh protocol gets that (opaque TCP).
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), MESH_ALPN.to_vec()];
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        Ok(MeshTls {
            shared,
            clients,
            server: Arc::new(server),
            wanted: watch::channel(None).0,
            issued: watch::channel(0).0,
            metrics,
        })
    }

    /// The certificate held now, if any.
    pub fn certified(&self) -> Option<Arc<Certified>> {
        self.shared.cert.load_full()
    }

    pub fn anchors(&self) -> Arc<Anchors> {
        self.shared.anchors.load_full()
    }

    /// This proxy's SPIFFE ID once it holds a certificate.
    pub fn identity(&self) -> Option<Arc<str>> {
        self.certified().map(|c| c.spiffe_id.clone())
    }

    /// Ready to mesh: a certificate and at least one anchor.
    pub fn is_ready(&self) -> bool {
        self.certified().is_some() && !self.shared.anchors.load().der.is_empty()
    }

    /// Replaces the trust anchors (from MeshSettings or a certificate response); unchanged
    /// anchors are a no-op. An anchor that does not parse is skipped and logged.
    pub fn set_anchors(&self, der: &[Vec<u8>]) {
        if self
            .shared
            .anchors
            .load()
            .der
            .iter()
            .map(|c| c.as_ref())
            .eq(der.iter().map(Vec::as_slice))
        {
            return;
        }
        let mut roots = RootCertStore::empty();
        let mut kept = Vec::new();
        let mut fingerprints = Vec::new();
        for (i, d) in der.iter().enumerate() {
            let cert = CertificateDer::from(d.clone());
            match roots.add(cert.clone()) {
                Ok(()) => {
                    fingerprints.push(verify::fingerprint(d));
                    kept.push(cert);
                }
                Err(e) => tracing::warn!(index = i, error = %e, "trust anchor skipped"),
            }
        }
        let roots = Arc::new(roots);
        let verifier = if roots.is_empty() {
            None
        } else {
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.clone(),
                self.shared.provider.clone(),
            )
            .build()
            .map_err(|e| tracing::warn!(error = %e, "no client verifier for these anchors"))
            .ok()
        };
        self.shared.client_verifier.store(verifier.map(Arc::new));
        tracing::info!(anchors = ?fingerprints, "trust anchors updated");
        self.shared.anchors.store(Arc::new(Anchors {
            roots,
            der: kept,
            fingerprints,
        }));
    }

    /// Installs a newly issued certificate chain for `key` (PKCS#8 DER). New handshakes use
    /// it at once; connections already open keep the one they were made with.
    pub fn install(&self, chain: Vec<Vec<u8>>, key: Vec<u8>) -> Result<Arc<Certified>, TlsError> {
        let leaf = chain
            .first()
            .ok_or_else(|| TlsError::Certificate("empty certificate chain".into()))?;
        let info = verify::describe(leaf)?;
        let chain: Vec<CertificateDer<'static>> =
            chain.into_iter().map(CertificateDer::from).collect();
        let key = PrivateKeyDer::try_from(key).map_err(|e| TlsError::Certificate(e.into()))?;
        let key = CertifiedKey::from_der(chain, key, &self.shared.provider)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let certified = Arc::new(Certified {
            key: Arc::new(key),
            spiffe_id: info.spiffe_id.into(),
            serial: info.serial,
            not_before: info.not_before,
            not_after: info.not_after,
            issued_at: SystemTime::now(),
        });
        self.metrics.set_expiration(
            certified
                .not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64(),
        );
        self.shared.cert.store(Some(certified.clone()));
        self.issued.send_modify(|n| *n += 1);
        Ok(certified)
    }

    /// Records the SPIFFE ID this proxy's workload has (from the snapshot).
    pub fn want(&self, spiffe_id: Option<Arc<str>>) {
        self.wanted.send_if_modified(|w| {
            let changed = *w != spiffe_id;
            *w = spiffe_id;
            changed
        });
    }

    pub fn wanted(&self) -> watch::Receiver<Option<Arc<str>>> {
        self.wanted.subscribe()
    }

    pub fn issued(&self) -> watch::Receiver<u64> {
        self.issued.subscribe()
    }

    /// Opens mesh TLS to a peer that must be `expected`, offering `inner` after the mesh
    /// protocol. Counted in the handshake metrics.
    pub async fn connect<IO>(
        &self,
        io: IO,
        inner: Inner,
        expected: &Arc<str>,
    ) -> Result<client::TlsStream<IO>, TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let result = self.connect_inner(io, inner, expected).await;
        self.metrics
            .handshake(Side::Outbound, result.as_ref().err().map(TlsError::reason));
        result
    }

    async fn connect_inner<IO>(
        &self,
        io: IO,
        inner: Inner,
        expected: &Arc<str>,
    ) -> Result<client::TlsStream<IO>, TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        if self.shared.cert.load().is_none() {
            return Err(TlsError::NoCertificate);
        }
        let config = self.clients[inner.index()].clone();
        let name = ServerName::try_from(SNI).map_err(|e| TlsError::Certificate(e.to_string()))?;
        let tls = TlsConnector::from(config)
            .connect(name, io)
            .await
            .map_err(|e| TlsError::handshake(&e))?;
        let presented = peer_identity(tls.get_ref().1.peer_certificates());
        match presented {
            Some(id) if *id == **expected => Ok(tls),
            other => Err(TlsError::IdentityMismatch {
                expected: expected.clone(),
                presented: other.unwrap_or_else(|| "".into()),
            }),
        }
    }

    /// Terminates mesh TLS from a peer, which must present a mesh certificate; returns the
    /// stream and the peer's SPIFFE ID.
    pub async fn accept<IO>(&self, io: IO) -> Result<(server::TlsStream<IO>, Arc<str>), TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let result = async {
            if self.shared.cert.load().is_none() {
                return Err(TlsError::NoCertificate);
            }
            let tls = TlsAcceptor::from(self.server.clone())
                .accept(io)
                .await
                .map_err(|e| TlsError::handshake(&e))?;
            let peer = peer_identity(tls.get_ref().1.peer_certificates()).ok_or_else(|| {
                TlsError::Certificate("the client certificate has no SPIFFE ID".into())
            })?;
            Ok((tls, peer))
        }
        .await;
        self.metrics
            .handshake(Side::Inbound, result.as_ref().err().map(TlsError::reason));
        result
    }
}

/// The SPIFFE ID of a verified peer chain's leaf.
fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<Arc<str>> {
    let leaf = certs?.first()?;
    verify::spiffe_id(leaf).ok().map(Arc::from)
}

/// Hands rustls the current certificate on both sides.
#[derive(Debug)]
struct Resolver(Arc<Shared>);

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.cert.load().as_ref().map(|c| c.key.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.cert.load().is_some()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.cert.load().as_ref().map(|c| c.key.clone())
    }
}
