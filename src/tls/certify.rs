//! Getting and renewing this proxy's certificate from the mesh CA (`Identity/Certify` on the
//! control plane's gRPC port): a fresh key pair in memory and a CSR for the workload's
//! SPIFFE ID, renewed at 70 % of the lifetime; a failure keeps the current certificate and
//! retries with jittered backoff. [`plan`] decides when; [`run`] is the thin task around it.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use rand::RngExt;
use skiff_api::pb::{self, identity_client::IdentityClient};
use tracing::{info, warn};

use super::{MeshTls, TlsError};
use crate::resilience::Backoff;

/// Share of the lifetime after which the certificate is renewed.
pub const RENEW_AT: f64 = 0.7;

/// Where and as whom to ask.
#[derive(Clone, Debug)]
pub struct CertifyConfig {
    pub url: String,
    pub workload: String,
    pub namespace: String,
    pub token_file: PathBuf,
}

/// What the certificate loop does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Ask for a certificate now.
    Certify,
    /// Sleep this long, then decide again (sooner if the wanted identity changes).
    Wait(Duration),
}

/// The loop's decision: no certificate, one for another identity, or one past the renewal
/// point means asking now; otherwise wait until that point. `held` is the certificate's
/// SPIFFE ID, usable-from time and `notAfter`. Pure, for tests.
pub fn plan(now: SystemTime, held: Option<(&str, SystemTime, SystemTime)>, wanted: &str) -> Step {
    let Some((id, start, not_after)) = held else {
        return Step::Certify;
    };
    if id != wanted {
        return Step::Certify;
    }
    let at = renewal_point(start, not_after);
    match at.duration_since(now) {
        Ok(left) if !left.is_zero() => Step::Wait(left),
        _ => Step::Certify,
    }
}

/// `start` + 70 % of the time from `start` to `not_after`. `start` is when the certificate
/// became usable here ([`super::Certified::renew_at`]): the CA backdates `notBefore` for clock
/// skew, which must not count as lifetime already spent.
pub fn renewal_point(start: SystemTime, not_after: SystemTime) -> SystemTime {
    let life = not_after.duration_since(start).unwrap_or_default();
    start + life.mul_f64(RENEW_AT)
}

/// Why one certificate request failed.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error("token file {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("key or CSR: {0}")]
    Csr(#[from] rcgen::Error),
    #[error("control plane {url}: {source}")]
    Connect {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("the mesh CA refused: {} ({})", .0.message(), .0.code())]
    Refused(tonic::Status),
    #[error(transparent)]
    Install(#[from] TlsError),
}

/// Runs forever: waits for the workload's SPIFFE ID (from the first snapshot), then keeps a
/// valid certificate installed in `tls`.
pub async fn run(cfg: CertifyConfig, tls: Arc<MeshTls>) {
    let mut wanted = tls.wanted();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let Some(id) = wanted.borrow_and_update().clone() else {
            if wanted.changed().await.is_err() {
                return;
            }
            continue;
        };
        let held = tls.certified();
        let step = plan(
            SystemTime::now(),
            held.as_deref()
                .map(|c| (&*c.spiffe_id, c.usable_from(), c.not_after)),
            &id,
        );
        let wait = match step {
            Step::Wait(d) => d,
            Step::Certify => match certify_once(&cfg, &tls, &id).await {
                Ok(()) => {
                    tls.metrics.renewal(true);
                    backoff.reset();
                    continue;
                }
                Err(e) => {
                    tls.metrics.renewal(false);
                    let wait = jitter(backoff.next_wait());
                    warn!(error = %e, identity = %id, retry_in = ?wait, "certificate request failed; keeping the current certificate");
                    wait
                }
            },
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = wanted.changed() => if changed.is_err() { return },
        }
    }
}

/// Up to 20 % less, so proxies started together do not retry together.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..=1.0))
}

async fn certify_once(cfg: &CertifyConfig, tls: &MeshTls, id: &str) -> Result<(), CertifyError> {
    let token = std::fs::read_to_string(&cfg.token_file).map_err(|source| CertifyError::Token {
        path: cfg.token_file.display().to_string(),
        source,
    })?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(rcgen::string::Ia5String::try_from(
        id.to_owned(),
    )?)];
    let csr = params.serialize_request(&key)?;
    let channel = tonic::transport::Endpoint::from_shared(cfg.url.clone())
        .map_err(|source| CertifyError::Connect {
            url: cfg.url.clone(),
            source,
        })?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|source| CertifyError::Connect {
            url: cfg.url.clone(),
            source,
        })?;
    let rsp = IdentityClient::new(channel)
        .certify(pb::CertifyRequest {
            workload: cfg.workload.clone(),
            namespace: cfg.namespace.clone(),
            token: token.trim().to_owned(),
            csr: csr.der().to_vec(),
        })
        .await
        .map_err(CertifyError::Refused)?
        .into_inner();
    tls.set_anchors(&rsp.trust_anchors);
    let certified = tls.install(rsp.certificate_chain, key.serialize_der())?;
    info!(
        identity = %certified.spiffe_id,
        serial = %certified.serial,
        expires = ?certified.not_after,
        "certificate installed"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

    #[test]
    fn no_certificate_or_another_identity_means_certify_now() {
        let now = SystemTime::now();
        assert_eq!(plan(now, None, ID), Step::Certify);
        let later = now + Duration::from_secs(100);
        assert_eq!(
            plan(
                now,
                Some(("spiffe://cluster.local/ns/default/sa/x", now, later)),
                ID
            ),
            Step::Certify
        );
    }

    #[test]
    fn renewal_waits_until_seventy_percent_of_the_lifetime() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(100);
        assert_eq!(
            plan(start + Duration::from_secs(10), Some((ID, start, end)), ID),
            Step::Wait(Duration::from_secs(60))
        );
        assert_eq!(
            plan(start + Duration::from_secs(70), Some((ID, start, end)), ID),
            Step::Certify
        );
        assert_eq!(
            plan(start + Duration::from_secs(500), Some((ID, start, end)), ID),
            Step::Certify
        );
    }

    #[test]
    fn a_backdated_not_before_does_not_count_as_spent_lifetime() {
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // A 30 s certificate whose notBefore the CA set 60 s back.
        let not_before = issued - Duration::from_secs(60);
        let not_after = issued + Duration::from_secs(30);
        let start = not_before.max(issued);
        assert_eq!(
            renewal_point(start, not_after),
            issued + Duration::from_secs(21)
        );
        assert_eq!(
            plan(
                issued + Duration::from_secs(1),
                Some((ID, start, not_after)),
                ID
            ),
            Step::Wait(Duration::from_secs(20))
        );
    }

    #[test]
    fn jitter_only_shortens_and_by_at_most_a_fifth() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10));
            assert!(j <= Duration::from_secs(10) && j >= Duration::from_secs(8));
        }
    }
}
