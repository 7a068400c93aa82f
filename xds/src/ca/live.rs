//! The CA as served now: the loaded [`Authority`] and [`BootstrapTokens`] behind `ArcSwap`s,
//! and the poller that re-reads the CA directory and the token file when they change. A good
//! new CA is swapped in and its anchors pushed to every proxy; a bad one is logged and ignored.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;

use super::{
    authority::{self, Authority},
    error::CaError,
    token::BootstrapTokens,
};
use crate::{metrics::CaMetrics, source::ConfigStore};

/// How often the CA directory and the token file are looked at. A stat per file per second
/// costs nothing, and sees Kubernetes' symlink swaps, which inotify on the file would miss.
const POLL: Duration = Duration::from_secs(1);

/// How the CA is configured (`skiff-xds serve --ca-dir --bootstrap-tokens --cert-lifetime`).
#[derive(Clone, Debug)]
pub struct CaOptions {
    pub dir: PathBuf,
    /// Absent: no caller can prove who it is, so every Certify is refused.
    pub bootstrap_tokens: Option<PathBuf>,
    /// Lifetime of issued certificates.
    pub cert_lifetime: Duration,
}

/// The live CA, shared by the Identity service and the poller.
pub struct Ca {
    options: CaOptions,
    authority: ArcSwap<Authority>,
    tokens: ArcSwap<BootstrapTokens>,
    metrics: CaMetrics,
    /// The files as they were just before `open` read them: the poller starts from these,
    /// so a change made while the control plane was starting is not missed.
    opened: Stamps,
}

impl Ca {
    /// Opens the CA directory (generating an anchor there if it has none) and reads the
    /// token file. Any problem is an error naming the file. Returns whether an anchor was
    /// generated.
    pub fn open(options: CaOptions, metrics: CaMetrics) -> Result<(Arc<Ca>, bool), CaError> {
        let mut opened = Stamps::of(&options);
        let (authority, generated) = Authority::open(&options.dir)?;
        if generated {
            // Our own writes are not a change to react to.
            opened = Stamps::of(&options);
        }
        let tokens = match &options.bootstrap_tokens {
            Some(path) => BootstrapTokens::load(path)?,
            None => BootstrapTokens::default(),
        };
        metrics.anchor_expiration.set(authority.anchor_expiration());
        let ca = Ca {
            options,
            authority: ArcSwap::from_pointee(authority),
            tokens: ArcSwap::from_pointee(tokens),
            metrics,
            opened,
        };
        Ok((Arc::new(ca), generated))
    }

    pub fn options(&self) -> &CaOptions {
        &self.options
    }

    /// The signer now; hold the `Arc` for one call so its chain and anchors match.
    pub fn authority(&self) -> Arc<Authority> {
        self.authority.load_full()
    }

    pub fn tokens(&self) -> Arc<BootstrapTokens> {
        self.tokens.load_full()
    }

    pub fn metrics(&self) -> &CaMetrics {
        &self.metrics
    }

    /// The trust anchors (DER) valid now.
    pub fn trust_anchors(&self) -> Vec<Vec<u8>> {
        self.authority.load().trust_anchors().to_vec()
    }

    /// Starts polling the CA directory and the token file; new anchors go into `store`.
    /// Dropping the handle stops it.
    pub fn watch(self: &Arc<Self>, store: Arc<ConfigStore>) -> CaWatch {
        let ca = self.clone();
        let task = tokio::spawn(async move {
            let mut seen = ca.opened.clone();
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = ca.stamps().await;
                if now.dir != seen.dir {
                    ca.reload_dir(&store).await;
                }
                if now.tokens != seen.tokens {
                    ca.reload_tokens().await;
                }
                seen = now;
            }
        });
        CaWatch { task }
    }

    async fn stamps(&self) -> Stamps {
        let options = self.options.clone();
        let job = move || Stamps::of(&options);
        // Only a panic in a stat could fail the task; the empty stamps then differ from any
        // real ones, so the files are read again.
        tokio::task::spawn_blocking(job).await.unwrap_or_default()
    }

    async fn reload_dir(&self, store: &ConfigStore) {
        let dir = self.options.dir.clone();
        let loaded = match tokio::task::spawn_blocking(move || Authority::load(&dir)).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(error = %e, "CA reload task failed");
                return;
            }
        };
        match loaded {
            Ok(authority) => {
                let anchors = authority.trust_anchors().to_vec();
                self.metrics
                    .anchor_expiration
                    .set(authority.anchor_expiration());
                self.authority.store(Arc::new(authority));
                let pushed = store.set_trust_anchors(anchors.clone());
                tracing::info!(
                    dir = %self.options.dir.display(),
                    anchors = %fingerprints(&anchors),
                    pushed,
                    "CA directory reloaded"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "CA directory refused; keeping the current CA");
            }
        }
    }

    async fn reload_tokens(&self) {
        let Some(path) = self.options.bootstrap_tokens.clone() else {
            return;
        };
        let loaded = match tokio::task::spawn_blocking(move || BootstrapTokens::load(&path)).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(error = %e, "token reload task failed");
                return;
            }
        };
        match loaded {
            Ok(tokens) => {
                tracing::info!(workloads = tokens.len(), "bootstrap tokens reloaded");
                self.tokens.store(Arc::new(tokens));
            }
            Err(e) => {
                tracing::warn!(error = %e, "bootstrap tokens refused; keeping the current ones");
            }
        }
    }
}

/// A running poll of the CA's files; dropping it stops the poll.
pub struct CaWatch {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CaWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a file looked like at one poll: enough to see a write, a replace or a removal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Stamps {
    dir: Vec<Option<FileStamp>>,
    tokens: Option<Option<FileStamp>>,
}

impl Stamps {
    fn of(options: &CaOptions) -> Stamps {
        Stamps {
            dir: authority::watched_files(&options.dir)
                .iter()
                .map(|p| stamp(p))
                .collect(),
            tokens: options.bootstrap_tokens.as_deref().map(stamp),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// `None` for a file that is not there (or cannot be looked at). Follows symlinks, so a
/// swapped `..data` link shows as a different inode.
fn stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// `sha256:<hex>` of each anchor, comma-separated, for logs.
pub fn fingerprints(anchors: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for der in anchors {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str("sha256:");
        for b in ring::digest::digest(&ring::digest::SHA256, der).as_ref() {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out
}
