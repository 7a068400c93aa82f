//! The webhook's serving certificate: a key made in memory (never written), a DNS-named
//! certificate from the mesh CA, and the rustls resolver that hands out the current one.
//! Renewed at half its lifetime and whenever the CA is reloaded, without touching the server.

use std::{fmt, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use rcgen::PublicKeyData as _;
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::error::WebhookError;
use crate::ca::{Authority, Ca};

/// How often renewal is considered: a pointer comparison and a clock read.
const CHECK: Duration = Duration::from_secs(1);

/// After a failed renewal, how long the current certificate is kept before trying again.
const RETRY: Duration = Duration::from_secs(10);

/// One issued certificate with what it was issued from.
struct Issued {
    key: Arc<CertifiedKey>,
    /// The CA loaded when it was issued; a reloaded CA (another `Arc`) means re-issue.
    authority: Arc<Authority>,
    /// Half-way through its validity.
    renew_at: OffsetDateTime,
}

/// The certificate the webhook serves now, re-issued as needed; also its rustls resolver.
pub struct ServingCert {
    ca: Arc<Ca>,
    dns_names: Vec<String>,
    lifetime: Duration,
    current: ArcSwap<Issued>,
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCert")
            .field("dns_names", &self.dns_names)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl ServingCert {
    /// Issues the first certificate for `dns_names` (checked by the caller), valid for
    /// `lifetime` or until the CA's own certificate expires, whichever comes first.
    pub fn issue(
        ca: Arc<Ca>,
        dns_names: Vec<String>,
        lifetime: Duration,
    ) -> Result<Arc<ServingCert>, WebhookError> {
        let first = issue(&ca, &dns_names, lifetime, OffsetDateTime::now_utc())?;
        Ok(Arc::new(ServingCert {
            ca,
            dns_names,
            lifetime,
            current: ArcSwap::from_pointee(first),
        }))
    }

    /// The certificate chain served now (leaf first, DER).
    pub fn chain(&self) -> Vec<Vec<u8>> {
        self.current
            .load()
            .key
            .cert
            .iter()
            .map(|c| c.as_ref().to_vec())
            .collect()
    }

    /// Re-issues when the current certificate is half-way through its life or the CA was
    /// reloaded. On failure the current certificate stays (it is still valid) and the
    /// error is returned; the next attempt is `RETRY` later.
    pub fn renew_if_due(&self, now: OffsetDateTime) -> Result<bool, WebhookError> {
        let current = self.current.load_full();
        let reloaded = !Arc::ptr_eq(&current.authority, &self.ca.authority());
        if !reloaded && now < current.renew_at {
            return Ok(false);
        }
        match issue(&self.ca, &self.dns_names, self.lifetime, now) {
            Ok(next) => {
                self.current.store(Arc::new(next));
                Ok(true)
            }
            Err(e) => {
                // Marked as seen with the CA now loaded, so the next try waits for `renew_at`
                // instead of repeating every check.
                self.current.store(Arc::new(Issued {
                    key: current.key.clone(),
                    authority: self.ca.authority(),
                    renew_at: now + RETRY,
                }));
                Err(e)
            }
        }
    }

    /// Runs [`ServingCert::renew_if_due`] every `CHECK` until the task is aborted.
    pub fn keep_renewed(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.renew_if_due(OffsetDateTime::now_utc()) {
                    Ok(false) => {}
                    Ok(true) => tracing::info!(
                        dns_names = ?self.dns_names,
                        renew_at = %self.current.load().renew_at,
                        "webhook certificate renewed"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "webhook certificate renewal failed; serving the current one"
                    ),
                }
            }
        })
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

fn issue(
    ca: &Ca,
    dns_names: &[String],
    lifetime: Duration,
    now: OffsetDateTime,
) -> Result<Issued, WebhookError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|source| WebhookError::Key { source })?;
    let spki = rcgen::SubjectPublicKeyInfo::from_der(&key.subject_public_key_info())
        .map_err(|source| WebhookError::Key { source })?;
    let authority = ca.authority();
    let chain = authority
        .issue_server(&spki, dns_names, lifetime, now)
        .map_err(|source| WebhookError::Issue {
            ca_dir: ca.options().dir.clone(),
            source,
        })?;
    let not_after = chain
        .first()
        .and_then(|leaf| X509Certificate::from_der(leaf).ok())
        .map(|(_, cert)| cert.validity().not_after.to_datetime())
        .unwrap_or(now + lifetime);
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::ring::sign::any_ecdsa_type(&private)
        .map_err(|source| WebhookError::Tls { source })?;
    let certs = chain.into_iter().map(CertificateDer::from).collect();
    Ok(Issued {
        key: Arc::new(CertifiedKey::new(certs, signer)),
        authority,
        renew_at: now + (not_after - now) / 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ca::CaOptions, metrics::CaMetrics};

    fn ca(dir: &std::path::Path) -> Arc<Ca> {
        let options = CaOptions {
            dir: dir.to_owned(),
            bootstrap_tokens: None,
            cert_lifetime: Duration::from_secs(3600),
        };
        let mut registry = prometheus_client::registry::Registry::default();
        Ca::open(options, CaMetrics::register(&mut registry))
            .expect("CA opens")
            .0
    }

    #[test]
    fn renews_at_half_its_lifetime_not_before() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let names = vec!["skiff-xds.skiff-system.svc".to_owned()];
        let cert =
            ServingCert::issue(ca(tmp.path()), names, Duration::from_secs(3600)).expect("issued");
        let first = cert.chain();
        let now = OffsetDateTime::now_utc();
        assert!(!cert.renew_if_due(now).expect("no error"));
        assert_eq!(cert.chain(), first);
        // Issued with 60s of clock skew behind it: half of the 3600s ahead is at +1800s.
        assert!(
            !cert
                .renew_if_due(now + Duration::from_secs(1790))
                .expect("no error")
        );
        assert!(
            cert.renew_if_due(now + Duration::from_secs(1810))
                .expect("no error")
        );
        assert_ne!(cert.chain(), first);
    }

    #[test]
    fn the_leaf_names_its_dns_names_and_serves_server_auth_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let names = vec!["a.example.svc".to_owned(), "b.example.svc".to_owned()];
        let cert =
            ServingCert::issue(ca(tmp.path()), names, Duration::from_secs(600)).expect("issued");
        let chain = cert.chain();
        assert_eq!(chain.len(), 1);
        let (_, leaf) = X509Certificate::from_der(&chain[0]).expect("parses");
        assert!(!leaf.is_ca());
        let san = leaf
            .subject_alternative_name()
            .expect("san parses")
            .expect("san present");
        let dns: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => (*d).to_owned(),
                other => panic!("only DNS names expected, found {other:?}"),
            })
            .collect();
        assert_eq!(dns, ["a.example.svc", "b.example.svc"]);
        let eku = leaf
            .extended_key_usage()
            .expect("eku parses")
            .expect("eku present")
            .value;
        assert!(eku.server_auth);
        assert!(!eku.client_auth);
        assert_eq!(leaf.subject().to_string(), "CN=a.example.svc");
    }
}
