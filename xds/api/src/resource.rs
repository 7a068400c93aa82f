//! Discovery resources: a validated mesh file compiled into named, versioned messages for the
//! control plane to stream, and received messages turned back into the model for the proxy.
//! Owns resource names, type URLs and content versions; the wire protocol is `pb`'s.
//!
//! A received resource is checked on its own before use: its shape (required fields, enum
//! values, durations, addresses), then the mesh file's rules that need no other resource
//! (names, ranges, regexes). An error names the field by its path in the resource, spelled
//! as in the mesh file (`routes[0].matches[1].path.value`), so the proxy can NACK it with
//! that message and keep applying the others.

mod decode;
mod encode;

use std::{collections::BTreeMap, fmt};

use prost::Message;

use crate::{
    ConfigError, FieldError,
    model::{self, MeshFile},
    pb,
    validate::validate_partial,
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

/// The name of a namespaced resource: `<namespace>/<name>` (Endpoints take their service's).
pub fn resource_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Prefix of a Service alias by authority: `host:reviews:9080`.
pub const HOST_ALIAS: &str = "host:";
/// Prefix of a Service alias by original destination: `addr:10.96.0.7:80`.
pub const ADDR_ALIAS: &str = "addr:";
/// The alias of the catch-all service (`hosts: ["*"]`).
pub const CATCH_ALL_ALIAS: &str = "host:*";
/// Prefix of an Authorization alias: `workload:<namespace>/<name>` stands for every policy
/// that applies on that workload's inbound side.
pub const WORKLOAD_ALIAS: &str = "workload:";

/// The Authorization alias for a workload.
pub fn workload_alias(namespace: &str, name: &str) -> String {
    format!("{WORKLOAD_ALIAS}{namespace}/{name}")
}

/// Longest subscribed name the control plane takes: far above any resource name or
/// alias of a real host, low enough that names cannot grow a stream's memory without bound.
pub const MAX_NAME_LEN: usize = 512;

/// Whether an authority can name a service, so is worth an on-demand subscription: a
/// hostname or IP literal with an optional port, in DNS characters, short enough that its
/// alias stays within [`MAX_NAME_LEN`]. Anything else cannot be claimed by a service.
pub fn is_plausible_authority(authority: &str) -> bool {
    !authority.is_empty()
        && authority.len() + HOST_ALIAS.len() <= 261
        && authority.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_' | b'[' | b']' | b'*')
        })
}

/// The Service alias for an authority as a request wrote it (lowercased).
pub fn host_alias(authority: &str) -> String {
    let mut alias = String::with_capacity(HOST_ALIAS.len() + authority.len());
    alias.push_str(HOST_ALIAS);
    alias.extend(authority.chars().map(|c| c.to_ascii_lowercase()));
    alias
}

/// The Service alias for an original destination.
pub fn addr_alias(addr: std::net::SocketAddr) -> String {
    format!("{ADDR_ALIAS}{addr}")
}

/// Whether a subscribed name is an alias rather than a resource name (resource names hold no
/// `:`, being DNS labels around one `/`, or `mesh`).
pub fn is_alias(name: &str) -> bool {
    name.starts_with(HOST_ALIAS) || name.starts_with(ADDR_ALIAS) || name.starts_with(WORKLOAD_ALIAS)
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`; anything else unchanged.
pub fn strip_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']')) =>
        {
            host
        }
        _ => authority,
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

/// A mesh file as discovery resources, each map keyed by resource name.
#[derive(Clone, Debug, PartialEq)]
pub struct Resources {
    pub services: BTreeMap<String, Compiled<pb::Service>>,
    /// One per service, under the service's name, even when it has no endpoints.
    pub endpoints: BTreeMap<String, Compiled<pb::Endpoints>>,
    pub workloads: BTreeMap<String, Compiled<pb::Workload>>,
    pub authorizations: BTreeMap<String, Compiled<pb::Authorization>>,
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
    let workloads = encode::workload_index(mesh);
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
            Compiled::new(Kind::Endpoints, name.clone(), endpoints),
        );
        let service = encode::service(svc, trust_domain);
        resources
            .services
            .insert(name.clone(), Compiled::new(Kind::Service, name, service));
    }
    for w in &mesh.workloads {
        let name = resource_name(&w.namespace, &w.name);
        let workload = encode::workload(w, trust_domain);
        resources
            .workloads
            .insert(name.clone(), Compiled::new(Kind::Workload, name, workload));
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
            Compiled::new(Kind::Authorization, name, policy),
        );
    }
    resources.kind_versions = Kind::ALL
        .iter()
        .map(|&k| (k, resources.hash_kind(k)))
        .collect();
    resources
}

impl Resources {
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

// === receiving ===

/// An endpoint as received: as the mesh file wrote it, plus where it resolved to.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedEndpoint {
    /// The mesh file's endpoint: a workload reference or a plain address.
    pub endpoint: model::Endpoint,
    /// Where to connect: the plain address, or the workload's inbound listener.
    pub address: std::net::SocketAddr,
    /// The peer identity to expect: as written for an address, the workload's SPIFFE ID
    /// for a workload; `None`: unmeshed.
    pub identity: Option<String>,
}

/// A received Endpoints resource: the endpoints of one service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceEndpoints {
    pub service: String,
    pub namespace: String,
    pub endpoints: Vec<ResolvedEndpoint>,
}

/// A received resource, converted and checked.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    Service(model::Service),
    Endpoints(ServiceEndpoints),
    Workload(model::Workload),
    Authorization(model::AuthorizationPolicy),
    MeshSettings(model::MeshSettings),
}

impl Decoded {
    pub fn kind(&self) -> Kind {
        match self {
            Decoded::Service(_) => Kind::Service,
            Decoded::Endpoints(_) => Kind::Endpoints,
            Decoded::Workload(_) => Kind::Workload,
            Decoded::Authorization(_) => Kind::Authorization,
            Decoded::MeshSettings(_) => Kind::MeshSettings,
        }
    }

    /// The resource name its content implies.
    pub fn name(&self) -> String {
        match self {
            Decoded::Service(s) => resource_name(&s.namespace, &s.name),
            Decoded::Endpoints(e) => resource_name(&e.namespace, &e.service),
            Decoded::Workload(w) => resource_name(&w.namespace, &w.name),
            Decoded::Authorization(p) => resource_name(&p.namespace, &p.name),
            Decoded::MeshSettings(_) => MESH_SETTINGS_NAME.to_owned(),
        }
    }
}

/// A received resource that cannot be used: which one, and every bad field found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} {name}: {error}", short_type(type_url))]
pub struct ResourceError {
    /// The payload's type URL (empty when there was no payload).
    pub type_url: String,
    /// The envelope's resource name.
    pub name: String,
    pub error: ConfigError,
}

/// `type.googleapis.com/skiff.xds.v1.Service` → `Service`, for messages.
fn short_type(type_url: &str) -> &str {
    match type_url.rsplit(['.', '/']).next() {
        Some(short) if !short.is_empty() => short,
        _ => "resource",
    }
}

/// Converts and checks one received resource: the payload must be of a known type, decode,
/// pass the checks a resource can pass on its own, and match the envelope's name. The caller
/// compares [`Decoded::kind`] with the response's type URL.
pub fn decode(resource: &pb::Resource) -> Result<Decoded, ResourceError> {
    let fail = |type_url: &str, error: ConfigError| ResourceError {
        type_url: type_url.to_owned(),
        name: resource.name.clone(),
        error,
    };
    let Some(any) = &resource.resource else {
        return Err(fail("", whole("carries no payload")));
    };
    let Some(kind) = Kind::from_type_url(&any.type_url) else {
        return Err(fail(
            &any.type_url,
            whole(format!("unknown type URL {:?}", any.type_url)),
        ));
    };
    let decoded = decode_payload(kind, &any.value).map_err(|e| fail(&any.type_url, e))?;
    let implied = decoded.name();
    if implied != resource.name {
        return Err(fail(
            &any.type_url,
            whole(format!(
                "resource name {:?} does not match its content, {implied:?}",
                resource.name
            )),
        ));
    }
    Ok(decoded)
}

fn decode_payload(kind: Kind, bytes: &[u8]) -> Result<Decoded, ConfigError> {
    fn message<T: Message + Default>(kind: Kind, bytes: &[u8]) -> Result<T, ConfigError> {
        T::decode(bytes).map_err(|e| whole(format!("not a valid skiff.xds.v1.{kind} message: {e}")))
    }
    Ok(match kind {
        Kind::Service => Decoded::Service(message::<pb::Service>(kind, bytes)?.try_into()?),
        Kind::Endpoints => Decoded::Endpoints(message::<pb::Endpoints>(kind, bytes)?.try_into()?),
        Kind::Workload => Decoded::Workload(message::<pb::Workload>(kind, bytes)?.try_into()?),
        Kind::Authorization => {
            Decoded::Authorization(message::<pb::Authorization>(kind, bytes)?.try_into()?)
        }
        Kind::MeshSettings => {
            Decoded::MeshSettings(message::<pb::MeshSettings>(kind, bytes)?.try_into()?)
        }
    })
}

/// An error about the resource as a whole.
fn whole(message: impl Into<String>) -> ConfigError {
    ConfigError {
        errors: vec![FieldError {
            path: String::new(),
            message: message.into(),
        }],
    }
}

/// Validation of a mesh file holding one resource reports paths like `services[0].routes[1]`;
/// the resource's own paths drop the `services[0]` part. `rename` maps a remaining first
/// key to the resource's field (Endpoints' `service` is the wrapping service's `name`).
fn relative(mut error: ConfigError, prefix: &str, rename: &[(&str, &str)]) -> ConfigError {
    for e in &mut error.errors {
        let rest = match e.path.strip_prefix(prefix) {
            Some("") => String::new(),
            Some(rest) => rest.strip_prefix('.').unwrap_or(rest).to_owned(),
            None => continue,
        };
        e.path = match rename.iter().find(|(from, _)| *from == rest) {
            Some((_, to)) => (*to).to_owned(),
            None => rest,
        };
    }
    error
}

fn one_error(e: FieldError) -> ConfigError {
    ConfigError { errors: vec![e] }
}

impl TryFrom<pb::Service> for model::Service {
    type Error = ConfigError;

    fn try_from(m: pb::Service) -> Result<Self, ConfigError> {
        let svc = decode::service(m).map_err(one_error)?;
        let mut mesh = MeshFile {
            services: vec![svc],
            ..MeshFile::default()
        };
        validate_partial(&mesh).map_err(|e| relative(e, "services[0]", &[]))?;
        mesh.services
            .pop()
            .ok_or_else(|| whole("lost in validation"))
    }
}

impl TryFrom<pb::Endpoints> for ServiceEndpoints {
    type Error = ConfigError;

    fn try_from(m: pb::Endpoints) -> Result<Self, ConfigError> {
        let (service, namespace, endpoints) = decode::endpoints(m).map_err(one_error)?;
        // The endpoints are checked as the mesh file checks them: inside their service.
        let holder = model::Service {
            name: service.clone(),
            namespace: namespace.clone(),
            hosts: None,
            addresses: Vec::new(),
            protocol: model::Protocol::default(),
            load_balancer: model::LoadBalancer::default(),
            connect_timeout: crate::Dur::from_secs(1),
            endpoints: endpoints.iter().map(|r| r.endpoint.clone()).collect(),
            circuit_breaker: None,
            outlier_detection: None,
            retry_budget: None,
            routes: Vec::new(),
        };
        let mesh = MeshFile {
            services: vec![holder],
            ..MeshFile::default()
        };
        validate_partial(&mesh).map_err(|e| relative(e, "services[0]", &[("name", "service")]))?;
        Ok(ServiceEndpoints {
            service,
            namespace,
            endpoints,
        })
    }
}

impl TryFrom<pb::Workload> for model::Workload {
    type Error = ConfigError;

    fn try_from(mut m: pb::Workload) -> Result<Self, ConfigError> {
        let spiffe = std::mem::take(&mut m.spiffe_id);
        let w = decode::workload(m).map_err(one_error)?;
        let mut mesh = MeshFile {
            workloads: vec![w],
            ..MeshFile::default()
        };
        validate_partial(&mesh).map_err(|e| relative(e, "workloads[0]", &[]))?;
        let w = mesh
            .workloads
            .pop()
            .ok_or_else(|| whole("lost in validation"))?;
        decode::check_spiffe_id(&w, &spiffe).map_err(one_error)?;
        Ok(w)
    }
}

impl TryFrom<pb::Authorization> for model::AuthorizationPolicy {
    type Error = ConfigError;

    fn try_from(m: pb::Authorization) -> Result<Self, ConfigError> {
        let policy = decode::authorization(m).map_err(one_error)?;
        let mut mesh = MeshFile {
            authorization: vec![policy],
            ..MeshFile::default()
        };
        validate_partial(&mesh).map_err(|e| relative(e, "authorization[0]", &[]))?;
        mesh.authorization
            .pop()
            .ok_or_else(|| whole("lost in validation"))
    }
}

impl TryFrom<pb::MeshSettings> for model::MeshSettings {
    type Error = ConfigError;

    fn try_from(m: pb::MeshSettings) -> Result<Self, ConfigError> {
        let settings = decode::mesh_settings(m).map_err(one_error)?;
        let mesh = MeshFile {
            mesh: settings,
            ..MeshFile::default()
        };
        validate_partial(&mesh).map_err(|e| relative(e, "mesh", &[]))?;
        Ok(mesh.mesh)
    }
}

// === impl Received ===

/// The resources a proxy holds, converted, keyed by resource name: what it subscribed to and
/// accepted, rebuilt into a mesh file for the proxy's compiler with [`Received::to_mesh_file`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Received {
    pub services: BTreeMap<String, model::Service>,
    pub endpoints: BTreeMap<String, ServiceEndpoints>,
    pub workloads: BTreeMap<String, model::Workload>,
    pub authorizations: BTreeMap<String, model::AuthorizationPolicy>,
    /// `None` until received: the defaults apply.
    pub mesh: Option<model::MeshSettings>,
}

impl Received {
    /// Adds or replaces a resource under the name its content implies.
    pub fn insert(&mut self, resource: Decoded) {
        let name = resource.name();
        match resource {
            Decoded::Service(s) => {
                self.services.insert(name, s);
            }
            Decoded::Endpoints(e) => {
                self.endpoints.insert(name, e);
            }
            Decoded::Workload(w) => {
                self.workloads.insert(name, w);
            }
            Decoded::Authorization(p) => {
                self.authorizations.insert(name, p);
            }
            Decoded::MeshSettings(m) => self.mesh = Some(m),
        }
    }

    /// Drops a resource (a response's `removed_resources`); whether it was held.
    pub fn remove(&mut self, kind: Kind, name: &str) -> bool {
        match kind {
            Kind::Service => self.services.remove(name).is_some(),
            Kind::Endpoints => self.endpoints.remove(name).is_some(),
            Kind::Workload => self.workloads.remove(name).is_some(),
            Kind::Authorization => self.authorizations.remove(name).is_some(),
            Kind::MeshSettings => self.mesh.take().is_some(),
        }
    }

    /// The mesh file these resources describe, in resource-name order, each service with the
    /// endpoints of its Endpoints resource (none if that was not received; Endpoints without
    /// their Service are left out).
    ///
    /// A workload endpoint stays a `workload:` reference when its Workload (with an inbound)
    /// is held too. Otherwise, as for a proxy that subscribed only to services, it becomes
    /// the plain address it resolved to with the workload's identity: the same destination and
    /// the same expected peer, which is all the outbound side uses.
    ///
    /// The result is not meant for [`crate::validate::validate`]: routes may name services
    /// this set does not hold (a proxy holds only what it subscribed to).
    pub fn to_mesh_file(&self) -> MeshFile {
        let services = self
            .services
            .iter()
            .map(|(name, svc)| {
                let mut svc = svc.clone();
                if let Some(eps) = self.endpoints.get(name) {
                    svc.endpoints = eps
                        .endpoints
                        .iter()
                        .map(|r| self.rebuild_endpoint(r, &svc.namespace))
                        .collect();
                }
                svc
            })
            .collect();
        MeshFile {
            mesh: self.mesh.clone().unwrap_or_default(),
            services,
            workloads: self.workloads.values().cloned().collect(),
            authorization: self.authorizations.values().cloned().collect(),
        }
    }

    fn rebuild_endpoint(&self, r: &ResolvedEndpoint, service_namespace: &str) -> model::Endpoint {
        let Some(workload) = &r.endpoint.workload else {
            return r.endpoint.clone();
        };
        let ns = r.endpoint.namespace.as_deref().unwrap_or(service_namespace);
        let held = self
            .workloads
            .get(&resource_name(ns, workload))
            .is_some_and(|w| w.inbound.is_some());
        if held {
            r.endpoint.clone()
        } else {
            model::Endpoint {
                workload: None,
                namespace: None,
                address: Some(r.address),
                identity: r.identity.clone(),
                labels: r.endpoint.labels.clone(),
            }
        }
    }
}

/// The mesh file that `compile` then `to_mesh_file` gives back for `mesh`: the same content,
/// with every service's `hosts` made explicit (resources carry effective hosts) and services,
/// workloads and policies in resource-name order (resources are keyed by name). For a valid
/// mesh neither changes its meaning: hosts and addresses are unique across services, so
/// their order decides nothing.
pub fn normalize(mesh: &MeshFile) -> MeshFile {
    let trust_domain = &mesh.mesh.trust_domain;
    let mut out = mesh.clone();
    for svc in &mut out.services {
        svc.hosts = Some(svc.effective_hosts(trust_domain));
    }
    out.services
        .sort_by_cached_key(|s| resource_name(&s.namespace, &s.name));
    out.workloads
        .sort_by_cached_key(|w| resource_name(&w.namespace, &w.name));
    out.authorization
        .sort_by_cached_key(|p| resource_name(&p.namespace, &p.name));
    out
}
