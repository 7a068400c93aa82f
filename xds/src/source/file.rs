//! The YAML file source: loads and validates the mesh file with `skiff_api::load`, then
//! watches its directory (Kubernetes swaps a ConfigMap's `..data` symlink, so the file itself
//! is replaced, not written) and reloads after ~100 ms of quiet. A refused file is never pushed.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{EventKind, RecursiveMode, Watcher as _};
use skiff_api::{ConfigError, model::MeshFile};
use tokio::sync::mpsc;

use super::ConfigStore;
use crate::metrics::Metrics;

/// Editors and `kubectl` touch the directory several times per change; wait this long after
/// the last event before reading.
const DEBOUNCE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {error}")]
    Invalid { path: PathBuf, error: ConfigError },
    #[error("watching {dir}: {source}")]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// Reads and validates the mesh file; the store compiles it.
pub fn load(path: &Path) -> Result<MeshFile, FileError> {
    let text = read(path)?;
    parse(path, &text)
}

fn read(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse(path: &Path, text: &str) -> Result<MeshFile, FileError> {
    skiff_api::load(text).map_err(|error| FileError::Invalid {
        path: path.to_owned(),
        error,
    })
}

/// A running watch on the mesh file's directory; dropping it stops the watch.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `path`'s directory and installs every valid new version into `store`.
pub fn watch(
    path: PathBuf,
    store: Arc<ConfigStore>,
    metrics: Metrics,
) -> Result<FileWatch, FileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            // Our own reads show up as access events; reacting to them would loop.
            Ok(e) if matches!(e.kind, EventKind::Access(_)) => {}
            Ok(_) => {
                let _ = tx.send(());
            }
            Err(e) => tracing::warn!(error = %e, "file watch error"),
        })
        .map_err(|source| FileError::Watch {
            dir: dir.clone(),
            source,
        })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| FileError::Watch {
            dir: dir.clone(),
            source,
        })?;
    let task = tokio::spawn(async move {
        // The file's bytes as last read: events for other files in the directory (logs, a
        // ConfigMap's other keys) must not re-read, re-log and re-count the same file.
        let mut last: Option<String> = std::fs::read_to_string(&path).ok();
        while rx.recv().await.is_some() {
            // Debounce: keep draining until the directory has been quiet for DEBOUNCE.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_quiet) => break,
                }
            }
            reload(&path, &store, &metrics, &mut last).await;
        }
    });
    Ok(FileWatch {
        _watcher: watcher,
        task,
    })
}

async fn reload(path: &Path, store: &ConfigStore, metrics: &Metrics, last: &mut Option<String>) {
    let owned = path.to_owned();
    let seen = last.clone();
    let job = move || -> Option<(Option<String>, Result<MeshFile, FileError>)> {
        match read(&owned) {
            Ok(text) if seen.as_ref() == Some(&text) => None,
            Ok(text) => {
                let parsed = parse(&owned, &text);
                Some((Some(text), parsed))
            }
            Err(e) => Some((None, Err(e))),
        }
    };
    let loaded = match tokio::task::spawn_blocking(job).await {
        Ok(Some((text, r))) => {
            *last = text;
            r
        }
        Ok(None) => {
            tracing::debug!(path = %path.display(), "directory changed, mesh file unchanged");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "config load task failed");
            return;
        }
    };
    match loaded {
        Ok(mesh) => {
            // A good file after a refused one is applied news, even when it equals the config
            // still served (the edit was reverted): the refusal is over.
            let recovered = store.last_error().is_some();
            store.set_last_error(None);
            let changed = store.install(mesh);
            if changed || recovered {
                tracing::info!(path = %path.display(), version = %store.version(), changed, "config applied");
                metrics.reload(true).inc();
            } else {
                // A rewrite with the same meaning (comments, order): not counted.
                tracing::debug!(path = %path.display(), "config unchanged");
            }
        }
        Err(e) => {
            metrics.reload(false).inc();
            // One line naming every bad field; the last good config keeps being served.
            let message = e.to_string().replace(['\r', '\n'], " ");
            tracing::warn!(error = %message, "config refused; keeping the last good one");
            store.set_last_error(Some(message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unchanged_file_is_not_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mesh.yaml");
        std::fs::write(&path, "services: []\n").expect("write");
        let store = ConfigStore::new(load(&path).expect("valid"));
        let metrics = Metrics::default();
        let mut last = std::fs::read_to_string(&path).ok();

        // An event for another file in the directory: the mesh file is not parsed again.
        reload(&path, &store, &metrics, &mut last).await;
        assert_eq!(metrics.reload(true).get(), 0);

        std::fs::write(&path, "services: 7\n").expect("write");
        for _ in 0..3 {
            reload(&path, &store, &metrics, &mut last).await;
        }
        assert_eq!(
            metrics.reload(false).get(),
            1,
            "one refusal per bad version"
        );
        assert!(store.last_error().is_some());

        std::fs::write(&path, "services: [ { name: a } ]\n").expect("write");
        reload(&path, &store, &metrics, &mut last).await;
        assert_eq!(metrics.reload(true).get(), 1);
        assert!(store.last_error().is_none());
    }

    #[tokio::test]
    async fn a_good_file_after_a_refusal_counts_even_when_it_equals_the_served_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mesh.yaml");
        let good = "services: [ { name: a } ]\n";
        std::fs::write(&path, good).expect("write");
        let store = ConfigStore::new(load(&path).expect("valid"));
        let version = store.version();
        let metrics = Metrics::default();
        let mut last = std::fs::read_to_string(&path).ok();

        std::fs::write(&path, "services: 7\n").expect("write");
        reload(&path, &store, &metrics, &mut last).await;
        assert_eq!(metrics.reload(false).get(), 1);
        assert!(store.last_error().is_some());

        // The edit is reverted: same config, same version, but the refusal is over.
        std::fs::write(&path, good).expect("write");
        reload(&path, &store, &metrics, &mut last).await;
        assert_eq!(metrics.reload(true).get(), 1, "the recovery counts as ok");
        assert!(store.last_error().is_none());
        assert_eq!(store.version(), version, "nothing new to push");

        // The same meaning written again, with nothing refused in between: not counted.
        std::fs::write(&path, "# a comment\nservices: [ { name: a } ]\n").expect("write");
        reload(&path, &store, &metrics, &mut last).await;
        assert_eq!(metrics.reload(true).get(), 1);
    }
}
