//! The mesh CA: the trust anchor and signer read from `--ca-dir` (generated on first start),
//! caller authentication (bootstrap tokens; service-account tokens by TokenReview), and signing their CSRs into short-lived SPIFFE
//! certificates (`Identity` gRPC service). The anchors reach proxies through `ConfigStore`.

mod authority;
mod csr;
mod error;
mod live;
mod service;
mod token;
pub mod token_review;

pub use self::{
    authority::{Authority, CA_CERT, CA_KEY, CLOCK_SKEW, EXTRA_ANCHORS, ROOT_CERT},
    csr::MAX_CSR_BYTES,
    error::{CaError, CertifyError, CsrError},
    live::{Ca, CaOptions, CaWatch, fingerprints},
    service::IdentityService,
    token::BootstrapTokens,
};
