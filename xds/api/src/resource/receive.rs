//! The receiving side: one resource checked on its own and converted to the model
//! ([`decode`]), the set a proxy holds ([`Received`]) rebuilt into a mesh file, and the
//! normal form that round trip gives ([`normalize`]).

use std::collections::BTreeMap;

use prost::Message;

use super::{Kind, MESH_SETTINGS_NAME, decode as fields, resource_name};
use crate::{
    ConfigError, FieldError,
    model::{self, MeshFile},
    pb,
    validate::validate_partial,
};

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
        let svc = fields::service(m).map_err(one_error)?;
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
        let (service, namespace, endpoints) = fields::endpoints(m).map_err(one_error)?;
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
        let w = fields::workload(m).map_err(one_error)?;
        let mut mesh = MeshFile {
            workloads: vec![w],
            ..MeshFile::default()
        };
        validate_partial(&mesh).map_err(|e| relative(e, "workloads[0]", &[]))?;
        let w = mesh
            .workloads
            .pop()
            .ok_or_else(|| whole("lost in validation"))?;
        fields::check_spiffe_id(&w, &spiffe).map_err(one_error)?;
        Ok(w)
    }
}

impl TryFrom<pb::Authorization> for model::AuthorizationPolicy {
    type Error = ConfigError;

    fn try_from(m: pb::Authorization) -> Result<Self, ConfigError> {
        let policy = fields::authorization(m).map_err(one_error)?;
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
        let settings = fields::mesh_settings(m).map_err(one_error)?;
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
    /// the plain address it resolved to with the workload's identity, still naming the
    /// workload: the same destination and the same expected peer, which is all the outbound
    /// side uses (an endpoint with both `workload` and `address` means the address).
    ///
    /// The result is not meant for [`crate::validate::validate`]: routes may name services
    /// this set does not hold (a proxy holds only what it subscribed to).
    pub fn to_mesh_file(&self) -> MeshFile {
        let services = self
            .services
            .iter()
            .map(|(name, svc)| self.with_endpoints(name, svc))
            .collect();
        MeshFile {
            mesh: self.mesh.clone().unwrap_or_default(),
            services,
            workloads: self.workloads.values().cloned().collect(),
            authorization: self.authorizations.values().cloned().collect(),
        }
    }

    /// Like [`Received::to_mesh_file`] for the named services only (those held), with the
    /// mesh settings and workloads their endpoints may name but no policies: what replacing
    /// those services' endpoints needs, at a cost that does not grow with the services held.
    pub fn services_file(&self, names: &[String]) -> MeshFile {
        MeshFile {
            mesh: self.mesh.clone().unwrap_or_default(),
            services: names
                .iter()
                .filter_map(|name| Some(self.with_endpoints(name, self.services.get(name)?)))
                .collect(),
            workloads: self.workloads.values().cloned().collect(),
            authorization: Vec::new(),
        }
    }

    /// A held service with the endpoints of its Endpoints resource.
    fn with_endpoints(&self, name: &str, svc: &model::Service) -> model::Service {
        let mut svc = svc.clone();
        if let Some(eps) = self.endpoints.get(name) {
            svc.endpoints = eps
                .endpoints
                .iter()
                .map(|r| self.rebuild_endpoint(r, &svc.namespace))
                .collect();
        }
        svc
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
                workload: r.endpoint.workload.clone(),
                namespace: r.endpoint.namespace.clone(),
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
