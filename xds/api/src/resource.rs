//! Discovery resources: a validated mesh file compiled into named, versioned messages for the
//! control plane to stream (here), and received messages turned back into the model for the
//! proxy (`receive`). Owns type URLs and content versions; names and aliases are `names`';
//! the wire protocol is `pb`'s.
//!
//! A received resource is checked on its own before use: its shape (required fields, enum
//! values, durations, addresses), then the mesh file's rules that need no other resource
//! (names, ranges, regexes). An error names the field by its path in the resource, spelled
//! as in the mesh file (`routes[0].matches[1].path.value`), so the proxy can NACK it with
//! that message and keep applying the others.

mod decode;
mod encode;
mod names;
mod receive;

pub use self::{
    names::*,
    receive::{
        Decoded, Received, ResolvedEndpoint, ResourceError, ServiceEndpoints, decode, normalize,
    },
};

use std::{collections::BTreeMap, fmt, sync::Arc};

use prost::Message;

use crate::{
    model::{self, MeshFile},
    pb,
};

/// Type URL of [`pb::Service`].
pub const SERVICE_TYPE_URL: &str = "type.googleapis.com/skiff.xds.v1.Service";
/// Type URL of [`pb::Endpoints`].
pub const ENDPOINTS_TYPE_URL: &str = "type.googleapis.com/skiff.xds.v1.Endpoints";
/// Type URL of [`pb::Workload`].
pub const WORKLOAD_TYPE_URL: &str = "type.googleapis.com/skiff.xds.v1.Workload";
/// Type URL of [`pb::Authorization`].
pub const AUTHORIZATION_TYPE_URL: &str = "type.googleapis.com/skiff.xds.v1.Authorization";
/// Type URL of [`pb::MeshSettings`].
pub const MESH_SETTINGS_TYPE_URL: &str = "type.googleapis.com/skiff.xds.v1.MeshSettings";
/// The name of the one MeshSettings resource.
pub const MESH_SETTINGS_NAME: &str = "mesh";

/// The kinds of resource the discovery stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Service,
    Endpoints,
    Workload,
    Authorization,
    MeshSettings,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Service,
        Kind::Endpoints,
        Kind::Workload,
        Kind::Authorization,
        Kind::MeshSettings,
    ];

    pub const fn type_url(self) -> &'static str {
        match self {
            Kind::Service => SERVICE_TYPE_URL,
            Kind::Endpoints => ENDPOINTS_TYPE_URL,
            Kind::Workload => WORKLOAD_TYPE_URL,
            Kind::Authorization => AUTHORIZATION_TYPE_URL,
            Kind::MeshSettings => MESH_SETTINGS_TYPE_URL,
        }
    }

    /// The kind a type URL names; `None` for a type this API does not have.
    pub fn from_type_url(type_url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == type_url)
    }

    /// The message name: `Service`, `Endpoints`, `Workload`, `Authorization`, `MeshSettings`.
    pub const fn message_name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::Workload => "Workload",
            Kind::Authorization => "Authorization",
            Kind::MeshSettings => "MeshSettings",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message_name())
    }
}

/// The content version of an encoded message: FNV-1a (64-bit) of its bytes, as 16 lowercase
/// hex digits. Stable across processes and releases, unlike `std`'s hasher; messages encode
/// deterministically (maps are `BTreeMap`s), so equal content gives equal versions.
pub fn content_version(encoded: &[u8]) -> String {
    format!("{:016x}", fnv1a(encoded))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a::default();
    std::hash::Hasher::write(&mut h, bytes);
    std::hash::Hasher::finish(&h)
}

/// FNV-1a (64-bit): content versions here, and a cheap hasher for short trusted keys (the
/// proxy's host table), where SipHash's flood resistance buys nothing.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

// === impl Compiled ===

/// One compiled resource: the typed message, and the envelope to send, whose payload holds
/// the message encoded once and whose version is the hash of those bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Compiled<T> {
    pub message: T,
    pub resource: pb::Resource,
}

impl<T: Message> Compiled<T> {
    fn new(kind: Kind, name: String, message: T) -> Self {
        let value = message.encode_to_vec();
        let resource = pb::Resource {
            name,
            version: content_version(&value),
            resource: Some(prost_types::Any {
                type_url: kind.type_url().to_owned(),
                value,
            }),
            aliases: Vec::new(),
        };
        Compiled { message, resource }
    }
}

impl<T> Compiled<T> {
    pub fn name(&self) -> &str {
        &self.resource.name
    }

    pub fn version(&self) -> &str {
        &self.resource.version
    }
}

// === impl Resources ===

/// A mesh file as discovery resources, each map keyed by resource name. Each resource is
/// shared, so a copy that changes a few (an `Endpoints` update) costs the maps, not the
/// messages.
#[derive(Clone, Debug, PartialEq)]
pub struct Resources {
    pub services: BTreeMap<String, Arc<Compiled<pb::Service>>>,
    /// One per service, under the service's name, even when it has no endpoints.
    pub endpoints: BTreeMap<String, Arc<Compiled<pb::Endpoints>>>,
    pub workloads: BTreeMap<String, Arc<Compiled<pb::Workload>>>,
    pub authorizations: BTreeMap<String, Arc<Compiled<pb::Authorization>>>,
    /// Named [`MESH_SETTINGS_NAME`].
    pub mesh: Compiled<pb::MeshSettings>,
    /// Lowercase host (as in `hosts`, `*` included) → the service's resource name.
    pub hosts: BTreeMap<String, String>,
    /// Service address → the service's resource name.
    pub addresses: BTreeMap<std::net::SocketAddr, String>,
    /// Workload resource name → the policies that apply on its inbound side (those whose
    /// target service has it as an endpoint).
    pub policies_by_workload: BTreeMap<String, Vec<String>>,
    /// [`Resources::kind_version`] of each kind, computed once: every push reads it.
    kind_versions: BTreeMap<Kind, String>,
}

/// Compiles a mesh file that passed [`crate::validate::validate`] into resources. Values the
/// file leaves to context are resolved: a service's default hosts, each workload endpoint's
/// address (the workload's `inbound.listen`) and identity (its SPIFFE ID). On a mesh that
/// validation refuses the result is unspecified but nothing panics: duplicates keep the last
/// one, endpoints that do not resolve are left out.
pub fn compile(mesh: &MeshFile) -> Resources {
    let trust_domain = mesh.mesh.trust_domain.as_str();
    let workloads = encode::workload_index(&mesh.workloads);
    let mut resources = Resources {
        services: BTreeMap::new(),
        endpoints: BTreeMap::new(),
        workloads: BTreeMap::new(),
        authorizations: BTreeMap::new(),
        mesh: Compiled::new(
            Kind::MeshSettings,
            MESH_SETTINGS_NAME.to_owned(),
            encode::mesh_settings(&mesh.mesh),
        ),
        hosts: BTreeMap::new(),
        addresses: BTreeMap::new(),
        policies_by_workload: BTreeMap::new(),
        kind_versions: BTreeMap::new(),
    };
    for svc in &mesh.services {
        let name = resource_name(&svc.namespace, &svc.name);
        // First claim wins, as in the proxy's tables (validation keeps claims unique).
        for h in svc.effective_hosts(trust_domain) {
            resources
                .hosts
                .entry(h.to_ascii_lowercase())
                .or_insert_with(|| name.clone());
        }
        for a in &svc.addresses {
            resources
                .addresses
                .entry(*a)
                .or_insert_with(|| name.clone());
        }
        let endpoints = encode::endpoints(svc, &workloads, trust_domain);
        resources.endpoints.insert(
            name.clone(),
            Arc::new(Compiled::new(Kind::Endpoints, name.clone(), endpoints)),
        );
        let service = encode::service(svc, trust_domain);
        resources.services.insert(
            name.clone(),
            Arc::new(Compiled::new(Kind::Service, name, service)),
        );
    }
    for w in &mesh.workloads {
        let name = resource_name(&w.namespace, &w.name);
        let workload = encode::workload(w, trust_domain);
        resources.workloads.insert(
            name.clone(),
            Arc::new(Compiled::new(Kind::Workload, name, workload)),
        );
    }
    for p in &mesh.authorization {
        let name = resource_name(&p.namespace, &p.name);
        let target = mesh
            .services
            .iter()
            .find(|s| s.name == p.target && s.namespace == p.namespace);
        let mut workloads: Vec<String> = target
            .into_iter()
            .flat_map(|s| {
                s.endpoints.iter().filter_map(|e| {
                    let w = e.workload.as_deref()?;
                    Some(resource_name(
                        e.namespace.as_deref().unwrap_or(&s.namespace),
                        w,
                    ))
                })
            })
            .collect();
        workloads.sort();
        workloads.dedup();
        for w in workloads {
            resources
                .policies_by_workload
                .entry(w)
                .or_default()
                .push(name.clone());
        }
        let policy = encode::authorization(p);
        resources.authorizations.insert(
            name.clone(),
            Arc::new(Compiled::new(Kind::Authorization, name, policy)),
        );
    }
    resources.kind_versions = Kind::ALL
        .iter()
        .map(|&k| (k, resources.hash_kind(k)))
        .collect();
    resources
}

impl Resources {
    /// These resources with the `Endpoints` of `services` replaced (each compiled as
    /// [`compile`] would, against `workloads` and `trust_domain` of the mesh they came from);
    /// everything else shared in content. `None` when one of them is not a service held
    /// here: only a whole compile can add a service.
    pub fn with_endpoints(
        &self,
        workloads: &[model::Workload],
        trust_domain: &str,
        services: &[model::Service],
    ) -> Option<Resources> {
        let index = encode::workload_index(workloads);
        let mut next = self.clone();
        for svc in services {
            let name = resource_name(&svc.namespace, &svc.name);
            let slot = next.endpoints.get_mut(&name)?;
            *slot = Arc::new(Compiled::new(
                Kind::Endpoints,
                name,
                encode::endpoints(svc, &index, trust_domain),
            ));
        }
        next.kind_versions
            .insert(Kind::Endpoints, next.hash_kind(Kind::Endpoints));
        Some(next)
    }

    /// These resources with `settings` as the `MeshSettings`. Only the trust anchors may
    /// differ from the settings they were compiled with: the trust domain and defaults reach
    /// into other resources.
    pub fn with_trust_anchors(&self, settings: &model::MeshSettings) -> Resources {
        let mut next = self.clone();
        next.mesh = Compiled::new(
            Kind::MeshSettings,
            MESH_SETTINGS_NAME.to_owned(),
            encode::mesh_settings(settings),
        );
        next.kind_versions
            .insert(Kind::MeshSettings, next.hash_kind(Kind::MeshSettings));
        next
    }

    /// The envelope of one resource, ready to send.
    pub fn get(&self, kind: Kind, name: &str) -> Option<&pb::Resource> {
        match kind {
            Kind::Service => self.services.get(name).map(|c| &c.resource),
            Kind::Endpoints => self.endpoints.get(name).map(|c| &c.resource),
            Kind::Workload => self.workloads.get(name).map(|c| &c.resource),
            Kind::Authorization => self.authorizations.get(name).map(|c| &c.resource),
            Kind::MeshSettings => (name == MESH_SETTINGS_NAME).then_some(&self.mesh.resource),
        }
    }

    /// The resource names a subscribed name stands for. A Service alias resolves to the
    /// service claiming that host (exactly, then without the port) or address; an
    /// Authorization alias to every policy applying to that workload; any other name to
    /// itself if such a resource exists.
    pub fn resolve<'a>(&'a self, kind: Kind, name: &'a str) -> Vec<&'a str> {
        match kind {
            Kind::Service if name.starts_with(HOST_ALIAS) || name.starts_with(ADDR_ALIAS) => {
                self.service_alias(name).into_iter().collect()
            }
            Kind::Authorization if name.starts_with(WORKLOAD_ALIAS) => self
                .policies_by_workload
                .get(&name[WORKLOAD_ALIAS.len()..])
                .map(|p| p.iter().map(String::as_str).collect())
                .unwrap_or_default(),
            _ => self
                .get(kind, name)
                .map(|r| r.name.as_str())
                .into_iter()
                .collect(),
        }
    }

    fn service_alias(&self, name: &str) -> Option<&str> {
        if let Some(authority) = name.strip_prefix(HOST_ALIAS) {
            let found = self.hosts.get(authority).or_else(|| {
                let host = strip_port(authority);
                (host.len() != authority.len())
                    .then(|| self.hosts.get(host))
                    .flatten()
            });
            return found.map(String::as_str);
        }
        let addr: std::net::SocketAddr = name.strip_prefix(ADDR_ALIAS)?.parse().ok()?;
        self.addresses.get(&addr).map(String::as_str)
    }

    /// Every resource of a kind, in name order.
    pub fn of_kind(&self, kind: Kind) -> Box<dyn Iterator<Item = &pb::Resource> + '_> {
        match kind {
            Kind::Service => Box::new(self.services.values().map(|c| &c.resource)),
            Kind::Endpoints => Box::new(self.endpoints.values().map(|c| &c.resource)),
            Kind::Workload => Box::new(self.workloads.values().map(|c| &c.resource)),
            Kind::Authorization => Box::new(self.authorizations.values().map(|c| &c.resource)),
            Kind::MeshSettings => Box::new(std::iter::once(&self.mesh.resource)),
        }
    }

    /// A version of every resource of a kind together (a response's `system_version_info`):
    /// changes when any resource of the kind is added, removed or changed.
    pub fn kind_version(&self, kind: Kind) -> String {
        match self.kind_versions.get(&kind) {
            Some(v) => v.clone(),
            None => self.hash_kind(kind),
        }
    }

    fn hash_kind(&self, kind: Kind) -> String {
        let mut text = Vec::new();
        for r in self.of_kind(kind) {
            text.extend_from_slice(r.name.as_bytes());
            text.push(0);
            text.extend_from_slice(r.version.as_bytes());
            text.push(0);
        }
        content_version(&text)
    }
}
