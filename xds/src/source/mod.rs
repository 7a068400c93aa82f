//! Where the mesh config is kept once loaded: the current compiled [`Resources`] behind an
//! `ArcSwap`, a `watch` that wakes discovery streams when it changes, and the last refusal.
//! Sources (`file`, later Kubernetes) only ever install configs that passed validation.

pub mod file;

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use skiff_api::resource::{Kind, Resources, content_version};
use tokio::sync::watch;

/// The control plane's current config, shared by the source, the discovery streams and admin.
#[derive(Debug)]
pub struct ConfigStore {
    current: ArcSwap<Resources>,
    /// Bumped on every install that changed something; streams wait on it.
    changed: watch::Sender<u64>,
    last_error: ArcSwapOption<String>,
}

impl ConfigStore {
    pub fn new(initial: Resources) -> Arc<Self> {
        let (changed, _) = watch::channel(0);
        Arc::new(ConfigStore {
            current: ArcSwap::from_pointee(initial),
            changed,
            last_error: ArcSwapOption::empty(),
        })
    }

    /// The config to serve now; holds no lock, cheap to call per event.
    pub fn current(&self) -> Arc<Resources> {
        self.current.load_full()
    }

    /// A receiver that sees a new value after every config change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Installs a validated config and wakes the streams; `false` (and no wake-up) when it
    /// equals the current one, as after an edit that only touched comments.
    pub fn install(&self, next: Resources) -> bool {
        if **self.current.load() == next {
            return false;
        }
        self.current.store(Arc::new(next));
        self.changed.send_modify(|generation| *generation += 1);
        true
    }

    /// Records why the last reload was refused (`None` after a good one).
    pub fn set_last_error(&self, error: Option<String>) {
        self.last_error.store(error.map(Arc::new));
    }

    pub fn last_error(&self) -> Option<Arc<String>> {
        self.last_error.load_full()
    }

    /// A version of the whole config: changes when any resource of any kind does.
    pub fn version(&self) -> String {
        let resources = self.current();
        let text: Vec<String> = Kind::ALL
            .iter()
            .map(|&k| resources.kind_version(k))
            .collect();
        content_version(text.join(",").as_bytes())
    }
}
