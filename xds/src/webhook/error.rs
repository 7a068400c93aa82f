//! The webhook's error types: why it cannot start or renew its certificate (`WebhookError`),
//! why a request body is not an AdmissionReview (`ReviewError`, answered with HTTP 400), and
//! why the caBundle patch cannot be built (`CaBundleError`).

use std::{net::SocketAddr, path::PathBuf};

/// Why the webhook could not start, or could not (re)issue its serving certificate.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The serving certificate comes from the mesh CA, so there must be one.
    #[error("--webhook-addr needs the mesh CA to issue its certificate: give --ca-dir too")]
    NoCa,
    #[error("--webhook-dns: no name given")]
    NoDnsNames,
    #[error("--webhook-dns {name:?}: {reason}")]
    BadDnsName { name: String, reason: &'static str },
    #[error("binding the webhook address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("generating the webhook's key: {source}")]
    Key {
        #[source]
        source: rcgen::Error,
    },
    #[error("issuing the webhook's certificate from the CA in {ca_dir}: {source}")]
    Issue {
        ca_dir: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("the webhook's certificate or key is refused by TLS: {source}")]
    Tls {
        #[source]
        source: rustls::Error,
    },
}

/// Why a request body is not an AdmissionReview the webhook can answer (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not JSON of an AdmissionReview: {reason}")]
    Syntax { reason: String },
    #[error(
        "expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, found {api_version:?} and {kind:?}"
    )]
    NotAdmissionReview { api_version: String, kind: String },
    #[error("the AdmissionReview has no request")]
    NoRequest,
    #[error("the AdmissionReview's request.uid is empty")]
    NoUid,
}

/// Why the caBundle patch of a MutatingWebhookConfiguration cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaBundleError {
    #[error("no trust anchor to put in caBundle")]
    NoAnchors,
    #[error("webhooks: expected a list, found {found}")]
    NoWebhooks { found: &'static str },
    #[error("webhooks[{index}]: {problem}")]
    Webhook { index: usize, problem: &'static str },
}
