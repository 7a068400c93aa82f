//! What a mesh file declares, looked up by name: services and workloads by (namespace, name)
//! and the hosts services claim by default. Built before the walk, so a reference may point
//! forward in the file. A partial index (one received resource) takes what it lacks on trust.

use std::collections::HashMap;

use crate::model::{MeshFile, Workload};

/// The first declaration of each name; later duplicates are errors at their own position.
pub(super) struct MeshIndex<'a> {
    /// `None` for a partial index: the trust domain is another resource's.
    pub(super) trust_domain: Option<&'a str>,
    /// Holds only part of the mesh: a reference to what it lacks is not an error.
    partial: bool,
    services: HashMap<(&'a str, &'a str), usize>,
    workloads: HashMap<(&'a str, &'a str), (usize, &'a Workload)>,
    default_hosts: HashMap<String, usize>,
}

impl<'a> MeshIndex<'a> {
    pub(super) fn new(mesh: &'a MeshFile) -> Self {
        Self::build(mesh, false)
    }

    /// An index of a mesh file holding one received resource: references to services and
    /// workloads it does not hold are taken on trust, and the trust domain is unknown.
    pub(super) fn partial(mesh: &'a MeshFile) -> Self {
        Self::build(mesh, true)
    }

    /// An index of a mesh file that another source completes (the Kubernetes source adds
    /// services, endpoints and workloads): references to services and workloads it does not
    /// hold are taken on trust, and identities are checked against its trust domain.
    pub(super) fn fragment(mesh: &'a MeshFile) -> Self {
        let mut index = Self::build(mesh, true);
        index.trust_domain = Some(mesh.mesh.trust_domain.as_str());
        index
    }

    fn build(mesh: &'a MeshFile, partial: bool) -> Self {
        let trust_domain = mesh.mesh.trust_domain.as_str();
        let mut services = HashMap::new();
        let mut default_hosts = HashMap::new();
        for (i, svc) in mesh.services.iter().enumerate() {
            services
                .entry((svc.namespace.as_str(), svc.name.as_str()))
                .or_insert(i);
            if svc.hosts.is_none() {
                for host in svc.effective_hosts(trust_domain) {
                    default_hosts.entry(host).or_insert(i);
                }
            }
        }
        let mut workloads = HashMap::new();
        for (i, w) in mesh.workloads.iter().enumerate() {
            workloads
                .entry((w.namespace.as_str(), w.name.as_str()))
                .or_insert((i, w));
        }
        MeshIndex {
            trust_domain: (!partial).then_some(trust_domain),
            partial,
            services,
            workloads,
            default_hosts,
        }
    }

    /// Index of the first service with this namespace and name.
    pub(super) fn service(&self, namespace: &str, name: &str) -> Option<usize> {
        self.services.get(&(namespace, name)).copied()
    }

    /// Whether a reference to this service resolves (always, in a partial index).
    pub(super) fn has_service(&self, namespace: &str, name: &str) -> bool {
        self.partial || self.service(namespace, name).is_some()
    }

    /// Whether this index lacks parts of the mesh, so a missing workload is no error.
    pub(super) fn is_partial(&self) -> bool {
        self.partial
    }

    /// Index and declaration of the first workload with this namespace and name.
    pub(super) fn workload(&self, namespace: &str, name: &str) -> Option<(usize, &'a Workload)> {
        self.workloads.get(&(namespace, name)).copied()
    }

    /// The service (without `hosts`) that claims `host` by default, if any.
    pub(super) fn default_host_owner(&self, host: &str) -> Option<usize> {
        self.default_hosts.get(host).copied()
    }
}
