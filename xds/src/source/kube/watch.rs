//! The Kubernetes source's I/O: one kube-rs watcher per kind (Services, EndpointSlices and
//! Pods cluster-wide, the mesh ConfigMap by name), their reports folded into a [`Feed`] by
//! one task that builds the mesh and installs it into the [`ConfigStore`].

use std::{collections::BTreeSet, sync::Arc};

use futures_util::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{ConfigMap, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use super::{
    ClusterSettings, Event, Impact, Note, Object, ObjectKey, ObjectKind,
    feed::{Change, Feed},
};
use crate::{metrics::Metrics, source::ConfigStore};

/// How many reports a watcher may have queued before it waits for the builder.
const QUEUE: usize = 1024;

/// At most this many queued reports are folded into one build, so a long burst still
/// reaches proxies in steps.
const BATCH: usize = 4096;

/// The running watchers and builder; dropping it stops them.
#[derive(Debug)]
pub struct KubeSource {
    tasks: Vec<JoinHandle<()>>,
    synced: watch::Receiver<bool>,
}

impl KubeSource {
    /// Starts watching through `client` and building into `store`. Nothing is installed
    /// before every kind has been listed once; see [`KubeSource::synced`].
    pub fn start(
        client: Client,
        settings: ClusterSettings,
        store: Arc<ConfigStore>,
        metrics: Metrics,
    ) -> KubeSource {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (synced_tx, synced) = watch::channel(false);
        let config_map = settings.config_map.clone();
        let mut tasks = vec![
            tokio::spawn(watch_kind(
                Api::all_with(client.clone(), &ApiResource::erase::<Service>(&())),
                watcher::Config::default(),
                ObjectKind::Service,
                tx.clone(),
            )),
            tokio::spawn(watch_kind(
                Api::all_with(client.clone(), &ApiResource::erase::<EndpointSlice>(&())),
                watcher::Config::default(),
                ObjectKind::EndpointSlice,
                tx.clone(),
            )),
            tokio::spawn(watch_kind(
                Api::all_with(client.clone(), &ApiResource::erase::<Pod>(&())),
                watcher::Config::default(),
                ObjectKind::Pod,
                tx.clone(),
            )),
            tokio::spawn(watch_kind(
                Api::namespaced_with(
                    client,
                    &config_map.namespace,
                    &ApiResource::erase::<ConfigMap>(&()),
                ),
                watcher::Config::default().fields(&format!("metadata.name={}", config_map.name)),
                ObjectKind::ConfigMap,
                tx,
            )),
        ];
        let builder = Builder {
            feed: Feed::new(settings),
            store,
            metrics,
            synced: synced_tx,
            notes: BTreeSet::new(),
            workloads: None,
        };
        tasks.push(tokio::spawn(builder.run(rx)));
        KubeSource { tasks, synced }
    }

    /// Resolves once the first mesh built from the whole cluster is installed.
    pub async fn synced(&mut self) {
        // An error means the builder is gone, which only a panic does: stop waiting.
        let _ = self.synced.wait_for(|synced| *synced).await;
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Watches one kind for as long as the builder listens, retrying with kube-rs's backoff.
async fn watch_kind(
    api: Api<DynamicObject>,
    config: watcher::Config,
    kind: ObjectKind,
    tx: mpsc::Sender<Change>,
) {
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
    while let Some(next) = stream.next().await {
        let change = match next {
            Ok(watcher::Event::Init) => Change::List(kind),
            Ok(watcher::Event::InitDone) => Change::ListDone(kind),
            Ok(watcher::Event::InitApply(object)) => match decode(kind, object) {
                Some(object) => Change::Listed(object),
                None => continue,
            },
            Ok(watcher::Event::Apply(object)) => match decode(kind, object) {
                Some(object) => Change::Watched(Event::Applied(object)),
                None => continue,
            },
            Ok(watcher::Event::Delete(object)) => {
                let key = ObjectKey::new(
                    object.metadata.namespace.unwrap_or_default(),
                    object.metadata.name.unwrap_or_default(),
                );
                Change::Watched(Event::Deleted(kind, key))
            }
            Err(e) => {
                tracing::warn!(%kind, error = %e, "watch failed; retrying");
                continue;
            }
        };
        if tx.send(change).await.is_err() {
            return;
        }
    }
}

/// The source's shape of an object; one that does not decode is skipped with a warning
/// (its previous version, if any, stays).
fn decode(kind: ObjectKind, object: DynamicObject) -> Option<Object> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let decoded = serde_json::to_value(object)
        .map_err(|source| super::KubeError::Decode { kind, source })
        .and_then(|value| Object::from_value(kind, value));
    match decoded {
        Ok(object) => Some(object),
        Err(e) => {
            tracing::warn!(%kind, object = %ObjectKey::new(namespace, name), error = %e, "skipped");
            None
        }
    }
}

/// Folds reports into the feed and installs what it builds.
struct Builder {
    feed: Feed,
    store: Arc<ConfigStore>,
    metrics: Metrics,
    synced: watch::Sender<bool>,
    /// The notes of the last build, so each is logged once.
    notes: BTreeSet<String>,
    /// The workloads of the last installed build, which endpoint updates resolve against;
    /// `None` until a build is installed and after one fails (the next change builds all).
    workloads: Option<Vec<skiff_api::model::Workload>>,
}

impl Builder {
    async fn run(mut self, mut rx: mpsc::Receiver<Change>) {
        while let Some(change) = rx.recv().await {
            self.take(change);
            // What is already queued goes into the same build.
            for _ in 0..BATCH {
                match rx.try_recv() {
                    Ok(change) => self.take(change),
                    Err(_) => break,
                }
            }
            if !self.feed.synced() {
                continue;
            }
            let impact = self.feed.take_impact();
            if impact.is_empty() && *self.synced.borrow() {
                continue;
            }
            if !impact.everything && impact.workloads.is_empty() && self.update_endpoints(&impact) {
                continue;
            }
            self.build();
        }
    }

    fn take(&mut self, change: Change) {
        if let Err(e) = self.feed.handle(change) {
            tracing::warn!(error = %e, "mesh ConfigMap refused; keeping the previous one");
            self.metrics.reload(false).inc();
        }
    }

    /// Replaces only the endpoints of the services `impact` names; `false` when that cannot
    /// stand for a whole build.
    fn update_endpoints(&mut self, impact: &Impact) -> bool {
        let Some(workloads) = &self.workloads else {
            return false;
        };
        let state = self.feed.state();
        let mut services = Vec::new();
        for key in &impact.services {
            match state.endpoint_services(key) {
                Some(built) => services.extend(built),
                None => return false,
            }
        }
        let trust_domain = state.config().mesh.trust_domain.as_str();
        match self
            .store
            .update_endpoints(workloads, trust_domain, &services)
        {
            Some(changed) => {
                if changed {
                    tracing::debug!(services = services.len(), "endpoints applied");
                }
                true
            }
            None => false,
        }
    }

    fn build(&mut self) {
        match self.feed.state().build() {
            Ok(built) => {
                self.workloads = Some(built.mesh.workloads.clone());
                self.log_notes(&built.notes);
                let services = built.mesh.services.len();
                let changed = self.store.install(built.mesh);
                self.store
                    .set_last_error(self.feed.refusal().map(str::to_owned));
                if changed {
                    self.metrics.reload(true).inc();
                    tracing::info!(services, "config applied");
                }
                self.synced
                    .send_if_modified(|synced| !std::mem::replace(synced, true));
            }
            Err(e) => {
                self.workloads = None;
                tracing::warn!(error = %e, "the cluster's mesh is refused; keeping the current one");
                self.metrics.reload(false).inc();
                self.store.set_last_error(Some(e.to_string()));
                // Serve what there is (proxies pass unknown traffic through) and let
                // `status` show why, rather than never coming up.
                self.synced
                    .send_if_modified(|synced| !std::mem::replace(synced, true));
            }
        }
    }

    fn log_notes(&mut self, notes: &[Note]) {
        let now: BTreeSet<String> = notes.iter().map(Note::to_string).collect();
        for note in now.difference(&self.notes) {
            tracing::info!("{note}");
        }
        self.notes = now;
    }
}
