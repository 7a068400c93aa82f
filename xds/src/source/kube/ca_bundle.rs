//! Keeps the webhook configuration's `caBundle` equal to the mesh CA's trust anchors: reads
//! the MutatingWebhookConfiguration, sends the JSON Patch `webhook::ca_bundle_patch` builds
//! when it differs, at start, when the anchors change and once a minute (a configuration
//! re-applied by an operator loses its bundle). The patch itself is the webhook module's.

use std::{sync::Arc, time::Duration};

use http::{Request, header};
use kube::Client;
use tokio::task::JoinHandle;

use crate::{ca::Ca, source::ConfigStore, webhook};

/// How often the configuration is checked when nothing changed.
const RECHECK: Duration = Duration::from_secs(60);
/// The first wait after a failed check; doubles up to [`RECHECK`].
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// The running patcher; dropping it stops it.
#[derive(Debug)]
pub struct CaBundlePatcher {
    task: JoinHandle<()>,
}

impl CaBundlePatcher {
    pub fn start(
        client: Client,
        configuration: String,
        ca: Arc<Ca>,
        store: Arc<ConfigStore>,
    ) -> CaBundlePatcher {
        let task = tokio::spawn(async move {
            let mut changes = store.subscribe();
            let mut retry = FIRST_RETRY;
            loop {
                let anchors = ca.trust_anchors();
                let wait = match patch_once(&client, &configuration, &anchors).await {
                    Ok(patched) => {
                        if patched {
                            tracing::info!(%configuration, "webhook caBundle set to the mesh anchors");
                        }
                        retry = FIRST_RETRY;
                        RECHECK
                    }
                    Err(e) => {
                        tracing::warn!(%configuration, error = %e, "cannot set the webhook caBundle; retrying");
                        let wait = retry;
                        retry = (retry * 2).min(RECHECK);
                        wait
                    }
                };
                // The store changes with every endpoint; only new anchors cut the wait short.
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    tokio::select! {
                        changed = changes.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            if ca.trust_anchors() != anchors {
                                break;
                            }
                        }
                        () = tokio::time::sleep_until(deadline) => break,
                    }
                }
            }
        });
        CaBundlePatcher { task }
    }
}

impl Drop for CaBundlePatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why one check failed.
#[derive(Debug, thiserror::Error)]
enum PatchError {
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Bundle(#[from] webhook::CaBundleError),
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
    #[error("encoding the patch: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Reads the configuration and patches it when its bundle differs; `true` when it did.
async fn patch_once(client: &Client, name: &str, anchors: &[Vec<u8>]) -> Result<bool, PatchError> {
    let path =
        format!("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}");
    let current: serde_json::Value = client
        .request(Request::get(&path).body(Vec::new())?)
        .await?;
    let Some(patch) = webhook::ca_bundle_patch(&current, anchors)? else {
        return Ok(false);
    };
    let request = Request::patch(&path)
        .header(header::CONTENT_TYPE, "application/json-patch+json")
        .body(serde_json::to_vec(&patch)?)?;
    let _: serde_json::Value = client.request(request).await?;
    Ok(true)
}
