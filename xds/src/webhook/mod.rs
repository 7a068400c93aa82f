//! The Kubernetes mutating admission webhook: HTTPS `POST /inject` answering AdmissionReview v1
//! with the JSON Patch of `inject::inject_pod`, a serving certificate from the mesh CA kept
//! renewed, and the `caBundle` patch for its MutatingWebhookConfiguration. Injection itself
//! belongs to `inject`; the flags to `serve`.

mod ca_bundle;
mod cert;
mod error;
mod review;
mod server;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;

pub use self::{
    ca_bundle::{ca_bundle, ca_bundle_patch, pem_bundle},
    cert::ServingCert,
    error::{CaBundleError, ReviewError, WebhookError},
    review::{API_VERSION, Decision, KIND, answer},
    server::{MAX_BODY_BYTES, PATH},
};
use crate::{ca::Ca, inject::Settings};

/// The name the API server reaches the webhook by, in a cluster installed from `k8s/`.
pub const DEFAULT_DNS_NAME: &str = "skiff-xds.skiff-system.svc";

/// How the webhook runs (`skiff-xds serve --webhook-addr --webhook-dns`, the injection flags).
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    pub addr: SocketAddr,
    /// The serving certificate's DNS names; the first is also its common name.
    pub dns_names: Vec<String>,
    /// Lifetime of the serving certificate; renewed at half of it.
    pub cert_lifetime: Duration,
    /// What injected pods get: the same settings `skiff-xds inject` takes.
    pub settings: Settings,
}

/// A running webhook; dropping it stops the listener, its connections and the renewal.
pub struct Webhook {
    pub addr: SocketAddr,
    cert: Arc<ServingCert>,
    serve: tokio::task::JoinHandle<()>,
    renew: tokio::task::JoinHandle<()>,
}

impl Webhook {
    /// The certificate chain served now (leaf first, DER).
    pub fn chain(&self) -> Vec<Vec<u8>> {
        self.cert.chain()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.serve.abort();
        self.renew.abort();
    }
}

/// Issues the serving certificate from `ca`, binds `options.addr` and serves in the
/// background. Without a CA there is no certificate to serve: [`WebhookError::NoCa`].
pub async fn start(options: WebhookOptions, ca: Option<Arc<Ca>>) -> Result<Webhook, WebhookError> {
    let ca = ca.ok_or(WebhookError::NoCa)?;
    if options.dns_names.is_empty() {
        return Err(WebhookError::NoDnsNames);
    }
    for name in &options.dns_names {
        dns_name(name).map_err(|reason| WebhookError::BadDnsName {
            name: name.clone(),
            reason,
        })?;
    }
    let cert = ServingCert::issue(ca, options.dns_names.clone(), options.cert_lifetime)?;
    let tls = server::tls_config(cert.clone())?;
    let listener = TcpListener::bind(options.addr)
        .await
        .map_err(|source| WebhookError::Bind {
            addr: options.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| WebhookError::Bind {
        addr: options.addr,
        source,
    })?;
    let serve = tokio::spawn(server::serve(listener, tls, Arc::new(options.settings)));
    let renew = cert.clone().keep_renewed();
    tracing::info!(%addr, dns_names = ?options.dns_names, "admission webhook serving");
    Ok(Webhook {
        addr,
        cert,
        serve,
        renew,
    })
}

/// Checks one DNS name for the certificate: lowercase letters, digits and `-` in dot-separated
/// labels of 1 to 63 characters, not starting or ending with `-`, 253 characters at most.
pub fn dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("every dot-separated label must have 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("only lowercase letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label must not start or end with '-'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_checked() {
        for good in [DEFAULT_DNS_NAME, "localhost", "a-1.b2", "x"] {
            assert_eq!(dns_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "-a",
            "a-",
            "UPPER.svc",
            "a_b",
            "*.svc",
            "10.0.0.1:443",
        ] {
            assert!(dns_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(dns_name(&"a".repeat(64)).is_err());
        assert!(dns_name(&["a"; 128].join(".")).is_err());
    }
}
