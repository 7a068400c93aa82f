//! The CA's error types: loading the CA directory and the token file (`CaError`), checking a
//! CSR (`CsrError`), and answering one Certify call (`CertifyError`, the only one with a gRPC
//! status, chosen in `CertifyError::status`).

use std::path::PathBuf;

/// Why the CA directory or the bootstrap-token file was refused. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{present} is there but {missing} is not; both are needed, or neither (to generate them)"
    )]
    Missing { present: PathBuf, missing: PathBuf },
    #[error("{path}: no PEM CERTIFICATE block")]
    NoCertificate { path: PathBuf },
    #[error("{path}: certificate #{index} does not parse: {reason}")]
    BadCertificate {
        path: PathBuf,
        /// 1-based position in the file.
        index: usize,
        reason: x509_parser::error::X509Error,
    },
    #[error("{path}: not a CA certificate (basicConstraints CA:TRUE and keyCertSign are required)")]
    NotCa { path: PathBuf },
    #[error("{path}: valid from {not_before} to {not_after}, not now")]
    OutsideValidity {
        path: PathBuf,
        not_before: String,
        not_after: String,
    },
    #[error(
        "{path}: not a usable private key (PKCS#8 or SEC1 PEM, ECDSA, Ed25519 or RSA): {source}"
    )]
    BadKey {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path}: cannot sign with this certificate: {source}")]
    Unusable {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("{key} is not the private key of {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{cert} is not signed by {root}")]
    NotSignedByRoot { cert: PathBuf, root: PathBuf },
    #[error("generating the CA in {dir}: {source}")]
    Generate {
        dir: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    /// The parser's own message is left out: it may quote the value it choked on, a token.
    #[error("{path}:{line}:{column}: not a YAML map of `<namespace>/<workload>: <token>` strings")]
    TokensSyntax {
        path: PathBuf,
        /// 1-based; 0 when the parser gave no position.
        line: u64,
        column: u64,
    },
    #[error("{path}: entry {key:?}: {problem}")]
    TokenEntry {
        path: PathBuf,
        key: String,
        problem: &'static str,
    },
}

/// Why a CSR was refused; all of these are the caller's fault (INVALID_ARGUMENT).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR is {len} bytes; at most {max} are accepted")]
    TooLarge { len: usize, max: usize },
    #[error("not a DER PKCS#10 certificate signing request")]
    Parse,
    #[error("the CSR's signature does not verify with its own public key")]
    Signature,
    #[error(
        "the CSR must name exactly one subject alternative name, a spiffe:// URI; it names {uris} URI(s) and {others} other name(s)"
    )]
    Names { uris: usize, others: usize },
    #[error("the CSR's URI {uri:?} is not a spiffe:// ID")]
    NotSpiffe { uri: String },
    #[error("the CSR's public key algorithm is not supported (ECDSA P-256/P-384, Ed25519, RSA)")]
    UnsupportedKey,
}

/// Why one Certify call was refused. The token never appears in any of these.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error("this control plane runs without a CA (no --ca-dir)")]
    NoCa,
    /// Wrong or missing token, no token configured, or a workload the config does not have:
    /// one answer for all, so a caller cannot tell which workloads exist.
    #[error("workload {workload}: token refused")]
    TokenRefused { workload: String },
    /// The API server could not review the token; the caller retries.
    #[error("workload {workload}: TokenReview failed: {reason}")]
    ReviewUnavailable { workload: String, reason: String },
    #[error("workload {workload}: {source}")]
    BadCsr {
        workload: String,
        #[source]
        source: CsrError,
    },
    #[error(
        "workload {workload}: the CSR asks for {requested}, but the workload is entitled to {granted}"
    )]
    NotEntitled {
        workload: String,
        requested: String,
        granted: String,
    },
    #[error("workload {workload}: signing failed: {source}")]
    Sign {
        workload: String,
        #[source]
        source: rcgen::Error,
    },
}

impl CertifyError {
    /// The gRPC status the proto promises for each refusal.
    pub fn status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            CertifyError::NoCa => tonic::Status::failed_precondition(message),
            CertifyError::TokenRefused { .. } => tonic::Status::unauthenticated(message),
            CertifyError::ReviewUnavailable { .. } => tonic::Status::unavailable(message),
            CertifyError::BadCsr { .. } => tonic::Status::invalid_argument(message),
            CertifyError::NotEntitled { .. } => tonic::Status::permission_denied(message),
            CertifyError::Sign { .. } => tonic::Status::internal(message),
        }
    }
}
