//! SPIFFE verification for rustls: the chain must lead to a current mesh trust anchor and
//! the leaf must carry exactly one `spiffe://` URI SAN (webpki cannot check URI names, so
//! the exact ID is compared after the handshake). Also reads what `/certs` shows.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    server::{
        ParsedCertificate,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{Shared, TlsError};

/// The leaf's only URI SAN, when it is a SPIFFE ID.
pub(super) fn spiffe_id(der: &CertificateDer<'_>) -> Result<String, TlsError> {
    let cert = webpki::EndEntityCert::try_from(der)
        .map_err(|e| TlsError::Certificate(format!("unparseable certificate: {e}")))?;
    let mut uris = cert.valid_uri_names();
    match (uris.next(), uris.next()) {
        (Some(id), None) if id.starts_with("spiffe://") => Ok(id.to_owned()),
        (None, _) => Err(TlsError::Certificate("no URI SAN".into())),
        (Some(_), Some(_)) => Err(TlsError::Certificate("more than one URI SAN".into())),
        (Some(other), None) => Err(TlsError::Certificate(format!(
            "URI SAN {other:?} is not a SPIFFE ID"
        ))),
    }
}

/// What `/certs` and the expiry metric need from a leaf.
pub(super) struct LeafInfo {
    pub spiffe_id: String,
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

pub(super) fn describe(der: &[u8]) -> Result<LeafInfo, TlsError> {
    let spiffe_id = spiffe_id(&CertificateDer::from(der))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::Certificate(format!("unparseable certificate: {e}")))?;
    let at =
        |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or_default());
    let validity = cert.validity();
    Ok(LeafInfo {
        spiffe_id,
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: at(validity.not_before.timestamp()),
        not_after: at(validity.not_after.timestamp()),
    })
}

/// SHA-256 of a DER certificate, lowercase hex.
pub(super) fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The handshake-signature checks both verifiers share: the provider's algorithms.
impl Shared {
    fn signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
        tls13: bool,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algs = &self.provider.signature_verification_algorithms;
        if tls13 {
            rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
        } else {
            rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
        }
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn spiffe_only(der: &CertificateDer<'_>) -> Result<(), Error> {
    spiffe_id(der)
        .map(|_| ())
        .map_err(|_| Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
}

/// The client side's check of a meshed endpoint: chain to a current anchor, serverAuth,
/// validity, one SPIFFE URI SAN. The TLS server name is ignored (SVIDs carry no DNS name).
#[derive(Debug)]
pub(super) struct PeerServerVerifier(Arc<Shared>);

impl PeerServerVerifier {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        PeerServerVerifier(shared)
    }
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let anchors = self.0.anchors.load();
        if anchors.roots.is_empty() {
            return Err(Error::InvalidCertificate(CertificateError::UnknownIssuer));
        }
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &anchors.roots,
            intermediates,
            now,
            self.0.provider.signature_verification_algorithms.all,
        )?;
        spiffe_only(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.signature(message, cert, dss, false)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.signature(message, cert, dss, true)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

/// The server side's check of a mesh client: a certificate is required, verified by
/// rustls's own verifier over the current anchors, then its SPIFFE URI SAN.
#[derive(Debug)]
pub(super) struct PeerClientVerifier(Arc<Shared>);

impl PeerClientVerifier {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        PeerClientVerifier(shared)
    }
}

impl ClientCertVerifier for PeerClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let inner = self
            .0
            .client_verifier
            .load_full()
            .ok_or(Error::InvalidCertificate(CertificateError::UnknownIssuer))?;
        inner.verify_client_cert(end_entity, intermediates, now)?;
        spiffe_only(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.signature(message, cert, dss, false)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.signature(message, cert, dss, true)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}
