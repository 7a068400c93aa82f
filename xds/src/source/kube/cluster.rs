//! `ClusterState`: the Services, EndpointSlices, Pods and mesh ConfigMap seen so far, by key;
//! the mesh built from them ([`ClusterState::build`], whose doc holds the naming and merge
//! rules); and which services' `Endpoints` and which workloads a change can touch.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt,
    net::{IpAddr, SocketAddr},
};

use skiff_api::{
    Dur,
    model::{self, LoadBalancer, MeshFile, Protocol},
};

use super::{
    error::KubeError,
    objects::{
        self, Conditions, ConfigMap, EndpointSlice, ObjectKey, ObjectKind, ObjectReference, Pod,
        SERVICE_NAME_LABEL, Service, ServicePort,
    },
};

/// The ConfigMap key holding the mesh file.
pub const MESH_KEY: &str = "mesh.yaml";

/// Pod labels that differ between revisions of one workload; never copied to the workload.
const REVISION_LABELS: [&str; 5] = [
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
];

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

/// What one change can alter in the built mesh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Impact {
    /// Anything may change (a Service or the ConfigMap): rebuild the whole mesh.
    pub everything: bool,
    /// Mesh services (`namespace/name` as built) whose endpoints may change.
    pub endpoints: BTreeSet<ObjectKey>,
    /// Workloads (`namespace/name`) that may appear, change or go.
    pub workloads: BTreeSet<ObjectKey>,
    /// The Kubernetes Services behind `endpoints`.
    pub services: BTreeSet<ObjectKey>,
}

impl Impact {
    fn everything() -> Self {
        Impact {
            everything: true,
            ..Impact::default()
        }
    }

    /// Nothing the mesh holds changes.
    pub fn is_empty(&self) -> bool {
        !self.everything && self.endpoints.is_empty() && self.workloads.is_empty()
    }

    /// Adds what `other` may change.
    pub fn merge(&mut self, other: Impact) {
        if self.everything || other.everything {
            *self = Impact::everything();
            return;
        }
        self.endpoints.extend(other.endpoints);
        self.workloads.extend(other.workloads);
        self.services.extend(other.services);
    }
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

/// What of a pod the mesh depends on (its readiness and address come from EndpointSlices).
#[derive(PartialEq, Eq)]
struct PodView<'a> {
    membership: Membership,
    service_account: &'a str,
    labels: Option<&'a BTreeMap<String, String>>,
}

impl<'a> PodView<'a> {
    fn of(pod: &'a Pod) -> Self {
        let membership = membership(pod);
        let meshed = matches!(membership, Membership::Meshed { .. });
        PodView {
            membership,
            service_account: pod.service_account(),
            labels: meshed.then_some(&pod.metadata.labels),
        }
    }
}

/// One Service port as a mesh service.
struct PortService<'a> {
    name: String,
    port: &'a ServicePort,
    first: bool,
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

    /// What `event` would change in the built mesh, judged before it is applied. An
    /// EndpointSlice touches its Service's mesh services' endpoints (nothing when it is
    /// unchanged); a Pod the endpoints of the services whose slices point at it and its
    /// workload, and only when its sidecar, workload name, service account or (meshed)
    /// labels change; a Service or the mesh ConfigMap everything (hosts, addresses, names
    /// of other ports and the ConfigMap's merge can move).
    pub fn impact(&self, event: &Event) -> Impact {
        match event {
            Event::Applied(Object::Service(_)) | Event::Deleted(ObjectKind::Service, _) => {
                Impact::everything()
            }
            Event::Applied(Object::ConfigMap(cm)) => self.config_map_impact(&cm.metadata.key()),
            Event::Deleted(ObjectKind::ConfigMap, key) => self.config_map_impact(key),
            Event::Applied(Object::EndpointSlice(slice)) => {
                let old = self.slices.get(&slice.metadata.key());
                if old == Some(slice) {
                    return Impact::default();
                }
                let services = old
                    .and_then(service_of)
                    .into_iter()
                    .chain(service_of(slice));
                self.endpoints_impact(services)
            }
            Event::Deleted(ObjectKind::EndpointSlice, key) => {
                self.endpoints_impact(self.slices.get(key).and_then(service_of))
            }
            Event::Applied(Object::Pod(pod)) => self.pod_impact(&pod.metadata.key(), Some(pod)),
            Event::Deleted(ObjectKind::Pod, key) => self.pod_impact(key, None),
        }
    }

    fn config_map_impact(&self, key: &ObjectKey) -> Impact {
        if *key == self.settings.config_map {
            Impact::everything()
        } else {
            Impact::default()
        }
    }

    fn endpoints_impact(&self, services: impl IntoIterator<Item = ObjectKey>) -> Impact {
        let mut impact = Impact::default();
        for key in services {
            if let Some(svc) = self.services.get(&key) {
                for ps in self.port_services(svc, &mut Vec::new()) {
                    impact
                        .endpoints
                        .insert(ObjectKey::new(&key.namespace, ps.name));
                }
                impact.services.insert(key);
            }
        }
        impact
    }

    fn pod_impact(&self, key: &ObjectKey, new: Option<&Pod>) -> Impact {
        let old = self.pods.get(key).map(PodView::of);
        let new = new.map(PodView::of);
        if old == new {
            return Impact::default();
        }
        let services = self
            .slices_by_pod
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|slice| self.slices.get(slice).and_then(service_of));
        let mut impact = self.endpoints_impact(services.collect::<BTreeSet<_>>());
        for view in [old, new].into_iter().flatten() {
            if let Membership::Meshed { workload } = view.membership {
                impact
                    .workloads
                    .insert(ObjectKey::new(&key.namespace, workload));
            }
        }
        impact
    }

    /// The mesh to serve; see [`ClusterState::build`].
    pub fn mesh(&self) -> Result<MeshFile, KubeError> {
        self.build().map(|b| b.mesh)
    }

    /// Builds the mesh from the cluster and the ConfigMap, and validates it whole.
    ///
    /// Services: each TCP port of a Service with a cluster IP (`ClusterIP`, `NodePort`,
    /// `LoadBalancer`) is one mesh service. The first TCP port is named as the Service;
    /// each other port `<service>-<port name>`, or `<service>-<port number>` when it has no
    /// name or that name is taken by a Service of the namespace or is not a DNS label (the
    /// port is skipped when both are). Addresses: every cluster IP (both families of a
    /// dual-stack Service) with the port. Hosts: `name`, `name.ns`, `name.ns.svc`,
    /// `name.ns.svc.<cluster domain>` for the first port, the same with `:<port>` for the
    /// others. Protocol from `appProtocol`: `http` → http1, `h2c`/`kubernetes.io/h2c` →
    /// http2, `grpc` → grpc, `tcp` → tcp, anything else auto. Headless and ExternalName
    /// Services, UDP and SCTP ports are skipped (see [`Note`]).
    ///
    /// Endpoints: from every IPv4/IPv6 EndpointSlice of the Service, the endpoints that are
    /// ready (`ready`, read as `serving` when unset and true when both are, and never while
    /// `terminating`), at their first address and the slice port of the same name. An
    /// endpoint whose pod carries the `skiff-proxy` sidecar is that pod's workload's replica:
    /// `workload` (the name its sidecar announces), `address`, and `identity`
    /// `spiffe://<trust domain>/ns/<ns>/sa/<service account>`; others are plain addresses.
    /// An endpoint whose pod (its `targetRef`) has not been seen yet is left out until it is.
    /// An address listed twice counts once; endpoints are sorted by address.
    ///
    /// Workloads: one per namespace and workload name of meshed pods, with the service
    /// account most of its pods use (ties: the first by name) and the labels all its pods
    /// share (revision labels left out).
    ///
    /// The ConfigMap: its settings and authorization policies as written. Its services come
    /// first, in its order; one named as a cluster mesh service (same namespace) takes the
    /// cluster's hosts, addresses and endpoints where it states none, and the cluster's
    /// protocol when it states `auto`; the others stay as written. Its workloads come first
    /// too; one named as a cluster workload takes the cluster's service account and adds
    /// its labels (its own win) to the pods' shared ones, keeping its `inbound` and
    /// `rateLimit`. Cluster services follow sorted by namespace and name, without the hosts
    /// and addresses ConfigMap services claim; then a stand-in without endpoints for each
    /// service the ConfigMap names and nobody has (see `stand_ins`); then the cluster
    /// workloads.
    pub fn build(&self) -> Result<Built, KubeError> {
        let mut notes = Vec::new();
        let config = &self.config;
        let trust_domain = config.mesh.trust_domain.as_str();

        let mut cluster: BTreeMap<ObjectKey, model::Service> = BTreeMap::new();
        for (key, svc) in &self.services {
            for ps in self.port_services(svc, &mut notes) {
                let model_key = ObjectKey::new(&key.namespace, &ps.name);
                if cluster.contains_key(&model_key) {
                    notes.push(Note::Port {
                        service: key.clone(),
                        port: ps.port.port,
                        reason: "its mesh service name is another Service's",
                    });
                    continue;
                }
                let built = self.cluster_service(svc, &ps, trust_domain);
                cluster.insert(model_key, built);
            }
        }

        let mut services = Vec::with_capacity(config.services.len() + cluster.len());
        for written in &config.services {
            let key = ObjectKey::new(&written.namespace, &written.name);
            services.push(match cluster.remove(&key) {
                Some(found) => merge_service(written, found),
                None => written.clone(),
            });
        }
        let hosts: HashSet<String> = services
            .iter()
            .flat_map(|s| s.effective_hosts(trust_domain))
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let addresses: HashSet<SocketAddr> = services
            .iter()
            .flat_map(|s| s.addresses.iter().copied())
            .collect();
        for (key, mut svc) in cluster {
            if let Some(own) = &mut svc.hosts {
                own.retain(|h| !hosts.contains(h.as_str()));
                if own.is_empty() {
                    notes.push(Note::HostsClaimed { service: key });
                    continue;
                }
            }
            svc.addresses.retain(|a| !addresses.contains(a));
            services.push(svc);
        }

        self.stand_ins(&mut services, trust_domain, &mut notes);

        let mut derived = self.workloads(&mut notes);
        let mut workloads = Vec::with_capacity(config.workloads.len() + derived.len());
        for written in &config.workloads {
            let key = ObjectKey::new(&written.namespace, &written.name);
            workloads.push(match derived.remove(&key) {
                Some(found) => merge_workload(written, found),
                None => written.clone(),
            });
        }
        workloads.extend(derived.into_values());

        let mesh = MeshFile {
            mesh: config.mesh.clone(),
            services,
            workloads,
            authorization: config.authorization.clone(),
        };
        skiff_api::validate::validate(&mesh).map_err(KubeError::Merged)?;
        Ok(Built { mesh, notes })
    }

    /// A stand-in without endpoints for each service the ConfigMap names (as a route's backend
    /// or a policy's target) that neither it nor the cluster has: requests sent there get 503
    /// `no-healthy-endpoints` until the Service appears, instead of one missing Service (not
    /// yet created, or deleted) freezing the whole mesh. A stand-in takes the hosts a cluster
    /// Service of that name would have, less those another service claims; with none left, or
    /// a name that is no DNS label, the reference stays dangling and validation names it.
    fn stand_ins(&self, services: &mut Vec<model::Service>, td: &str, notes: &mut Vec<Note>) {
        let have: HashSet<(&str, &str)> = services
            .iter()
            .map(|s| (s.namespace.as_str(), s.name.as_str()))
            .collect();
        let config = &self.config;
        let backends = config.services.iter().flat_map(|s| {
            s.routes.iter().flat_map(|r| &r.backend_refs).map(|b| {
                let ns = b.namespace.as_deref().unwrap_or(&s.namespace);
                (ns, b.service.as_str())
            })
        });
        let targets = config
            .authorization
            .iter()
            .map(|p| (p.namespace.as_str(), p.target.as_str()));
        let missing: BTreeSet<ObjectKey> = backends
            .chain(targets)
            .filter(|&(ns, name)| !have.contains(&(ns, name)))
            .filter(|&(ns, name)| is_dns_label(ns) && is_dns_label(name))
            .map(|(ns, name)| ObjectKey::new(ns, name))
            .collect();
        if missing.is_empty() {
            return;
        }
        let mut claimed: HashSet<String> = services
            .iter()
            .flat_map(|s| s.effective_hosts(td))
            .map(|h| h.to_ascii_lowercase())
            .collect();
        for key in missing {
            let (name, ns) = (&key.name, &key.namespace);
            let domain = &self.settings.cluster_domain;
            let hosts: Vec<String> = [
                name.clone(),
                format!("{name}.{ns}"),
                format!("{name}.{ns}.svc"),
                format!("{name}.{ns}.svc.{domain}"),
            ]
            .into_iter()
            .filter(|h| claimed.insert(h.clone()))
            .collect();
            if hosts.is_empty() {
                continue;
            }
            services.push(model::Service {
                name: name.clone(),
                namespace: ns.clone(),
                hosts: Some(hosts),
                addresses: Vec::new(),
                protocol: Protocol::Auto,
                load_balancer: LoadBalancer::default(),
                connect_timeout: Dur::from_secs(1),
                endpoints: Vec::new(),
                circuit_breaker: None,
                outlier_detection: None,
                retry_budget: None,
                routes: Vec::new(),
            });
            notes.push(Note::Missing { service: key });
        }
    }

    /// The mesh services the Service `key` becomes, as [`ClusterState::build`] makes them,
    /// for an update of their endpoints alone; `None` when a whole build is needed for them:
    /// the ConfigMap writes one of them (the merge decides its endpoints) or an authorization
    /// policy targets one (its endpoints' workloads get the policy).
    pub fn endpoint_services(&self, key: &ObjectKey) -> Option<Vec<model::Service>> {
        let Some(svc) = self.services.get(key) else {
            return Some(Vec::new());
        };
        let config = &self.config;
        let trust_domain = config.mesh.trust_domain.as_str();
        let mut out = Vec::new();
        for ps in self.port_services(svc, &mut Vec::new()) {
            let written = |namespace: &str, name: &str| {
                namespace == key.namespace.as_str() && name == ps.name.as_str()
            };
            if config
                .services
                .iter()
                .any(|s| written(&s.namespace, &s.name))
                || config
                    .authorization
                    .iter()
                    .any(|p| written(&p.namespace, &p.target))
            {
                return None;
            }
            out.push(self.cluster_service(svc, &ps, trust_domain));
        }
        Some(out)
    }

    /// The Service's ports that become mesh services, with their names.
    fn port_services<'a>(&self, svc: &'a Service, notes: &mut Vec<Note>) -> Vec<PortService<'a>> {
        let key = svc.metadata.key();
        if svc.spec.kind.as_deref() == Some("ExternalName") {
            notes.push(Note::ExternalName { service: key });
            return Vec::new();
        }
        if svc.spec.cluster_ip.as_deref() == Some("None") {
            notes.push(Note::Headless { service: key });
            return Vec::new();
        }
        let mut out: Vec<PortService<'a>> = Vec::new();
        for port in &svc.spec.ports {
            if !is_tcp(port.protocol.as_deref()) {
                notes.push(Note::Port {
                    service: key.clone(),
                    port: port.port,
                    reason: "not TCP",
                });
                continue;
            }
            if port.port == 0 {
                continue;
            }
            let first = out.is_empty();
            let name = if first {
                Some(key.name.clone())
            } else {
                let by_name = port
                    .name
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .map(|n| format!("{}-{n}", key.name));
                let by_number = format!("{}-{}", key.name, port.port);
                by_name.into_iter().chain([by_number]).find(|c| {
                    is_dns_label(c)
                        && !out.iter().any(|p| p.name == *c)
                        && !self
                            .services
                            .contains_key(&ObjectKey::new(&key.namespace, c.as_str()))
                })
            };
            match name {
                Some(name) => out.push(PortService { name, port, first }),
                None => notes.push(Note::Port {
                    service: key.clone(),
                    port: port.port,
                    reason: "no free mesh service name",
                }),
            }
        }
        out
    }

    fn cluster_service(&self, svc: &Service, ps: &PortService<'_>, td: &str) -> model::Service {
        let key = svc.metadata.key();
        let (name, ns) = (key.name.as_str(), key.namespace.as_str());
        let domain = &self.settings.cluster_domain;
        let base = [
            name.to_owned(),
            format!("{name}.{ns}"),
            format!("{name}.{ns}.svc"),
            format!("{name}.{ns}.svc.{domain}"),
        ];
        let hosts = if ps.first {
            base.to_vec()
        } else {
            base.iter()
                .map(|h| format!("{h}:{}", ps.port.port))
                .collect()
        };
        let ips: Vec<&str> = if svc.spec.cluster_ips.is_empty() {
            svc.spec.cluster_ip.as_deref().into_iter().collect()
        } else {
            svc.spec.cluster_ips.iter().map(String::as_str).collect()
        };
        let mut addresses: Vec<SocketAddr> = ips
            .into_iter()
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, ps.port.port))
            .collect();
        addresses.dedup();
        model::Service {
            name: ps.name.clone(),
            namespace: key.namespace.clone(),
            hosts: Some(hosts),
            addresses,
            protocol: protocol_of(ps.port.app_protocol.as_deref()),
            load_balancer: LoadBalancer::default(),
            connect_timeout: Dur::from_secs(1),
            endpoints: self.endpoints(&key, ps.port, td),
            circuit_breaker: None,
            outlier_detection: None,
            retry_budget: None,
            routes: Vec::new(),
        }
    }

    /// The ready endpoints of one Service port, sorted by address.
    fn endpoints(&self, service: &ObjectKey, port: &ServicePort, td: &str) -> Vec<model::Endpoint> {
        let mut by_addr: BTreeMap<SocketAddr, model::Endpoint> = BTreeMap::new();
        let want = port.name.as_deref().unwrap_or("");
        for key in self.slices_by_service.get(service).into_iter().flatten() {
            let Some(slice) = self.slices.get(key) else {
                continue;
            };
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            let target = slice
                .ports
                .iter()
                .find(|p| p.name.as_deref().unwrap_or("") == want && is_tcp(p.protocol.as_deref()))
                .and_then(|p| p.port)
                .filter(|&p| p != 0);
            let Some(target) = target else {
                continue;
            };
            for ep in &slice.endpoints {
                if !is_ready(&ep.conditions) {
                    continue;
                }
                let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                    continue;
                };
                let addr = SocketAddr::new(ip, target);
                if by_addr.contains_key(&addr) {
                    continue;
                }
                // A pod not seen yet (watches of different kinds report in any order) may
                // carry a sidecar: held back until it is, rather than sent as a plain address
                // that callers would reach without mesh TLS. Its arrival updates these
                // endpoints.
                let pod = match &ep.target_ref {
                    Some(r) if r.kind == "Pod" => match self.pod(r, &slice.metadata.namespace) {
                        Some(pod) => Some(pod),
                        None => continue,
                    },
                    _ => None,
                };
                by_addr.insert(addr, endpoint(addr, pod, &service.namespace, td));
            }
        }
        by_addr.into_values().collect()
    }

    /// The pod a `targetRef` of kind Pod names, if seen.
    fn pod(&self, target: &ObjectReference, slice_namespace: &str) -> Option<&Pod> {
        let ns = target.namespace.as_deref().unwrap_or(slice_namespace);
        self.pods.get(&ObjectKey::new(ns, target.name.as_str()))
    }

    /// One workload per namespace and workload name of meshed pods.
    fn workloads(&self, notes: &mut Vec<Note>) -> BTreeMap<ObjectKey, model::Workload> {
        #[derive(Default)]
        struct Seen<'a> {
            accounts: BTreeMap<&'a str, usize>,
            labels: Option<BTreeMap<&'a str, &'a str>>,
        }
        let mut seen: BTreeMap<ObjectKey, Seen<'_>> = BTreeMap::new();
        for (key, pod) in &self.pods {
            let workload = match membership(pod) {
                Membership::Unmeshed => continue,
                Membership::Unrepresentable(reason) => {
                    notes.push(Note::Pod {
                        pod: key.clone(),
                        reason,
                    });
                    continue;
                }
                Membership::Meshed { workload } => workload,
            };
            let entry = seen
                .entry(ObjectKey::new(&key.namespace, workload))
                .or_default();
            *entry.accounts.entry(pod.service_account()).or_default() += 1;
            let labels = pod
                .metadata
                .labels
                .iter()
                .filter(|(k, _)| !REVISION_LABELS.contains(&k.as_str()))
                .map(|(k, v)| (k.as_str(), v.as_str()));
            entry.labels = Some(match entry.labels.take() {
                None => labels.collect(),
                Some(mut shared) => {
                    let these: BTreeMap<&str, &str> = labels.collect();
                    shared.retain(|k, v| these.get(k) == Some(v));
                    shared
                }
            });
        }
        seen.into_iter()
            .map(|(key, s)| {
                // Most pods' account; `max_by_key` keeps the last of equals, so walk in reverse
                // to let the first name win a tie.
                let account = s
                    .accounts
                    .iter()
                    .rev()
                    .max_by_key(|(_, n)| **n)
                    .map_or("default", |(a, _)| *a);
                let workload = model::Workload {
                    name: key.name.clone(),
                    namespace: key.namespace.clone(),
                    service_account: account.to_owned(),
                    labels: s
                        .labels
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    inbound: None,
                    rate_limit: None,
                };
                (key, workload)
            })
            .collect()
    }
}

fn endpoint(addr: SocketAddr, pod: Option<&Pod>, service_ns: &str, td: &str) -> model::Endpoint {
    let meshed = pod.and_then(|p| match membership(p) {
        Membership::Meshed { workload } => Some((p, workload)),
        Membership::Unmeshed | Membership::Unrepresentable(_) => None,
    });
    match meshed {
        Some((pod, workload)) => {
            let ns = pod.metadata.namespace.as_str();
            model::Endpoint {
                workload: Some(workload),
                namespace: (ns != service_ns).then(|| ns.to_owned()),
                address: Some(addr),
                identity: Some(format!(
                    "spiffe://{td}/ns/{ns}/sa/{}",
                    pod.service_account()
                )),
                labels: BTreeMap::new(),
            }
        }
        None => model::Endpoint {
            address: Some(addr),
            ..model::Endpoint::default()
        },
    }
}

fn merge_service(written: &model::Service, cluster: model::Service) -> model::Service {
    model::Service {
        hosts: written.hosts.clone().or(cluster.hosts),
        addresses: if written.addresses.is_empty() {
            cluster.addresses
        } else {
            written.addresses.clone()
        },
        protocol: if written.protocol == Protocol::Auto {
            cluster.protocol
        } else {
            written.protocol
        },
        endpoints: if written.endpoints.is_empty() {
            cluster.endpoints
        } else {
            written.endpoints.clone()
        },
        ..written.clone()
    }
}

fn merge_workload(written: &model::Workload, cluster: model::Workload) -> model::Workload {
    let mut labels = cluster.labels;
    labels.extend(written.labels.clone());
    model::Workload {
        service_account: cluster.service_account,
        labels,
        ..written.clone()
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

/// Ready as Kubernetes defines it: `ready` (unset: `serving`, unset: true), never while
/// terminating.
fn is_ready(c: &Conditions) -> bool {
    !c.terminating.unwrap_or(false) && c.ready.unwrap_or_else(|| c.serving.unwrap_or(true))
}

fn is_tcp(protocol: Option<&str>) -> bool {
    matches!(protocol, None | Some("TCP"))
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
