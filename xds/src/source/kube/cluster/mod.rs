//! `ClusterState`: the Services, EndpointSlices, Pods and mesh ConfigMap seen so far, by key;
//! the mesh built from them ([`ClusterState::build`], whose doc holds the naming and merge
//! rules; in `build`); and which services' `Endpoints` and which workloads a change can touch
//! (in `impact`). This file: the objects as delivered, the state and its bookkeeping.

mod build;
mod impact;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
};

use skiff_api::model::{MeshFile, Protocol};

pub use self::impact::Impact;
use super::{
    error::KubeError,
    objects::{
        self, ConfigMap, EndpointSlice, ObjectKey, ObjectKind, Pod, SERVICE_NAME_LABEL, Service,
    },
};

/// The ConfigMap key holding the mesh file.
pub const MESH_KEY: &str = "mesh.yaml";

/// What the source needs to know besides the objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The cluster's DNS domain, the suffix of `name.ns.svc.<domain>`. Default: `cluster.local`.
    pub cluster_domain: String,
    /// The mesh ConfigMap (its key `mesh.yaml`). Default: `skiff-system/skiff-mesh`.
    pub config_map: ObjectKey,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            cluster_domain: "cluster.local".to_owned(),
            config_map: ObjectKey::new("skiff-system", "skiff-mesh"),
        }
    }
}

/// One object as a watcher delivers it.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Service(Service),
    EndpointSlice(EndpointSlice),
    Pod(Pod),
    ConfigMap(ConfigMap),
}

impl Object {
    /// Decodes an object of `kind` from the API server's JSON.
    pub fn from_json(kind: ObjectKind, json: &[u8]) -> Result<Object, KubeError> {
        Ok(match kind {
            ObjectKind::Service => Object::Service(objects::decode(kind, json)?),
            ObjectKind::EndpointSlice => Object::EndpointSlice(objects::decode(kind, json)?),
            ObjectKind::Pod => Object::Pod(objects::decode(kind, json)?),
            ObjectKind::ConfigMap => Object::ConfigMap(objects::decode(kind, json)?),
        })
    }

    /// [`Object::from_json`] from an already parsed document (what a watcher hands over).
    pub fn from_value(kind: ObjectKind, json: serde_json::Value) -> Result<Object, KubeError> {
        Ok(match kind {
            ObjectKind::Service => Object::Service(objects::decode_value(kind, json)?),
            ObjectKind::EndpointSlice => Object::EndpointSlice(objects::decode_value(kind, json)?),
            ObjectKind::Pod => Object::Pod(objects::decode_value(kind, json)?),
            ObjectKind::ConfigMap => Object::ConfigMap(objects::decode_value(kind, json)?),
        })
    }

    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Service(_) => ObjectKind::Service,
            Object::EndpointSlice(_) => ObjectKind::EndpointSlice,
            Object::Pod(_) => ObjectKind::Pod,
            Object::ConfigMap(_) => ObjectKind::ConfigMap,
        }
    }

    pub fn key(&self) -> ObjectKey {
        match self {
            Object::Service(o) => o.metadata.key(),
            Object::EndpointSlice(o) => o.metadata.key(),
            Object::Pod(o) => o.metadata.key(),
            Object::ConfigMap(o) => o.metadata.key(),
        }
    }
}

/// A change a watcher reports: an object added or updated, or one deleted.
#[derive(Clone, Debug, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "an event is moved once from the watcher into the state, never stored"
)]
pub enum Event {
    Applied(Object),
    Deleted(ObjectKind, ObjectKey),
}

/// Something of the cluster the mesh leaves out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// `clusterIP: None`: clients reach pods directly; not a mesh service.
    Headless { service: ObjectKey },
    /// `type: ExternalName`: a DNS alias, no addresses of its own.
    ExternalName { service: ObjectKey },
    /// One port of a Service left out.
    Port {
        service: ObjectKey,
        port: u16,
        reason: &'static str,
    },
    /// Every host of a mesh service built from the cluster is claimed by a ConfigMap service.
    HostsClaimed { service: ObjectKey },
    /// The ConfigMap names a service the cluster does not have: served without endpoints.
    Missing { service: ObjectKey },
    /// A pod with the sidecar that cannot be named in the mesh; its endpoints are plain.
    Pod {
        pod: ObjectKey,
        reason: &'static str,
    },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Headless { service } => write!(f, "Service {service}: headless, skipped"),
            Note::ExternalName { service } => {
                write!(f, "Service {service}: type ExternalName, skipped")
            }
            Note::Port {
                service,
                port,
                reason,
            } => write!(f, "Service {service} port {port}: {reason}, skipped"),
            Note::HostsClaimed { service } => write!(
                f,
                "service {service}: every host is claimed by a ConfigMap service, skipped"
            ),
            Note::Missing { service } => write!(
                f,
                "service {service}: the ConfigMap names it and the cluster has no such Service; \
                 served without endpoints (503 no-healthy-endpoints) until it appears"
            ),
            Note::Pod { pod, reason } => write!(f, "Pod {pod}: {reason}; its endpoints are plain"),
        }
    }
}

/// A built mesh and what it left out.
#[derive(Clone, Debug, PartialEq)]
pub struct Built {
    /// Passed `skiff_api::validate::validate`.
    pub mesh: MeshFile,
    pub notes: Vec<Note>,
}

/// The cluster as the source has seen it.
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    settings: ClusterSettings,
    services: BTreeMap<ObjectKey, Service>,
    slices: BTreeMap<ObjectKey, EndpointSlice>,
    /// Service → its EndpointSlices (by the `kubernetes.io/service-name` label).
    slices_by_service: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    pods: BTreeMap<ObjectKey, Pod>,
    /// Pod → the EndpointSlices whose endpoints point at it.
    slices_by_pod: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// The ConfigMap's last mesh file that passed its own validation; empty without one.
    config: MeshFile,
    /// The mesh ConfigMap exists (its last version may have been refused).
    config_seen: bool,
}

/// How a pod takes part in the mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Membership {
    Unmeshed,
    Meshed {
        workload: String,
    },
    /// It has the sidecar, but its names do not fit the mesh model.
    Unrepresentable(&'static str),
}

fn membership(pod: &Pod) -> Membership {
    if !pod.is_meshed() {
        return Membership::Unmeshed;
    }
    let Some(workload) = pod.workload_name() else {
        return Membership::Unrepresentable("no workload name");
    };
    if !is_dns_label(&workload) {
        return Membership::Unrepresentable("its workload name is not a DNS label");
    }
    if !is_dns_label(pod.service_account()) {
        return Membership::Unrepresentable("its service account name is not a DNS label");
    }
    Membership::Meshed { workload }
}

// === impl ClusterState ===

impl ClusterState {
    pub fn new(settings: ClusterSettings) -> Self {
        ClusterState {
            settings,
            ..ClusterState::default()
        }
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// The ConfigMap's mesh file in use (empty before one was accepted).
    pub fn config(&self) -> &MeshFile {
        &self.config
    }

    /// The keys of every object of `kind` held (the mesh ConfigMap's, when one is in use).
    pub fn keys(&self, kind: ObjectKind) -> Vec<ObjectKey> {
        match kind {
            ObjectKind::Service => self.services.keys().cloned().collect(),
            ObjectKind::EndpointSlice => self.slices.keys().cloned().collect(),
            ObjectKind::Pod => self.pods.keys().cloned().collect(),
            ObjectKind::ConfigMap => self
                .config_seen
                .then(|| self.settings.config_map.clone())
                .into_iter()
                .collect(),
        }
    }

    /// Applies one event; see [`ClusterState::apply`] and [`ClusterState::delete`].
    pub fn handle(&mut self, event: Event) -> Result<(), KubeError> {
        match event {
            Event::Applied(object) => self.apply(object),
            Event::Deleted(kind, key) => {
                self.delete(kind, &key);
                Ok(())
            }
        }
    }

    /// Adds or replaces an object. Only the mesh ConfigMap can be refused: one without
    /// `mesh.yaml`, or whose `mesh.yaml` fails validation (references to services and
    /// workloads of the cluster taken on trust), leaves the previous one in use. Other
    /// ConfigMaps are ignored.
    pub fn apply(&mut self, object: Object) -> Result<(), KubeError> {
        match object {
            Object::Service(svc) => {
                self.services.insert(svc.metadata.key(), svc);
            }
            Object::EndpointSlice(slice) => {
                let key = slice.metadata.key();
                self.unindex_slice(&key);
                self.index_slice(&key, &slice);
                self.slices.insert(key, slice);
            }
            Object::Pod(pod) => {
                self.pods.insert(pod.metadata.key(), pod);
            }
            Object::ConfigMap(cm) => {
                let key = cm.metadata.key();
                if key != self.settings.config_map {
                    return Ok(());
                }
                self.config_seen = true;
                let Some(text) = cm.data.get(MESH_KEY) else {
                    return Err(KubeError::MissingMeshKey {
                        namespace: key.namespace,
                        name: key.name,
                        key: MESH_KEY,
                    });
                };
                self.config =
                    skiff_api::load_fragment(text).map_err(|source| KubeError::ConfigMap {
                        namespace: key.namespace,
                        name: key.name,
                        key: MESH_KEY,
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// Forgets an object. Deleting the mesh ConfigMap returns to an empty mesh file (default
    /// settings, no routes or policies).
    pub fn delete(&mut self, kind: ObjectKind, key: &ObjectKey) {
        match kind {
            ObjectKind::Service => {
                self.services.remove(key);
            }
            ObjectKind::EndpointSlice => {
                self.unindex_slice(key);
                self.slices.remove(key);
            }
            ObjectKind::Pod => {
                self.pods.remove(key);
            }
            ObjectKind::ConfigMap => {
                if *key == self.settings.config_map {
                    self.config = MeshFile::default();
                    self.config_seen = false;
                }
            }
        }
    }

    fn index_slice(&mut self, key: &ObjectKey, slice: &EndpointSlice) {
        if let Some(service) = service_of(slice) {
            self.slices_by_service
                .entry(service)
                .or_default()
                .insert(key.clone());
        }
        for pod in pods_of(slice) {
            self.slices_by_pod
                .entry(pod)
                .or_default()
                .insert(key.clone());
        }
    }

    fn unindex_slice(&mut self, key: &ObjectKey) {
        let Some(old) = self.slices.get(key) else {
            return;
        };
        let service = service_of(old);
        let pods: Vec<ObjectKey> = pods_of(old).collect();
        if let Some(service) = service
            && let Some(set) = self.slices_by_service.get_mut(&service)
        {
            set.remove(key);
            if set.is_empty() {
                self.slices_by_service.remove(&service);
            }
        }
        for pod in pods {
            if let Some(set) = self.slices_by_pod.get_mut(&pod) {
                set.remove(key);
                if set.is_empty() {
                    self.slices_by_pod.remove(&pod);
                }
            }
        }
    }
}

/// The Service an EndpointSlice belongs to.
fn service_of(slice: &EndpointSlice) -> Option<ObjectKey> {
    slice
        .metadata
        .labels
        .get(SERVICE_NAME_LABEL)
        .filter(|n| !n.is_empty())
        .map(|n| ObjectKey::new(&slice.metadata.namespace, n.as_str()))
}

/// The pods an EndpointSlice's endpoints point at.
fn pods_of(slice: &EndpointSlice) -> impl Iterator<Item = ObjectKey> + '_ {
    slice.endpoints.iter().filter_map(|ep| {
        let r = ep.target_ref.as_ref().filter(|r| r.kind == "Pod")?;
        let ns = r.namespace.as_deref().unwrap_or(&slice.metadata.namespace);
        Some(ObjectKey::new(ns, r.name.as_str()))
    })
}

/// The mesh protocol an `appProtocol` asks for.
pub fn protocol_of(app_protocol: Option<&str>) -> Protocol {
    match app_protocol.map(str::to_ascii_lowercase).as_deref() {
        Some("http") => Protocol::Http1,
        Some("h2c" | "kubernetes.io/h2c") => Protocol::Http2,
        Some("grpc") => Protocol::Grpc,
        Some("tcp") => Protocol::Tcp,
        _ => Protocol::Auto,
    }
}

/// RFC 1123 label, as the mesh model requires of names.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}
