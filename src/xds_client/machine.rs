//! The discovery stream's state machine, without I/O: what the proxy holds and subscribes
//! to, what each response changes, the ACK or NACK and subscriptions it calls for, and the
//! idle sweep. Compiling, installing and on-demand answers go through [`Port`], so every
//! decision here is unit-tested without a control plane, a socket or a runtime.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use skiff_api::{
    model::MeshFile,
    pb,
    resource::{self, CATCH_ALL_ALIAS, Decoded, Kind, MESH_SETTINGS_NAME, Received, is_alias},
};
use tracing::{debug, info, warn};

use crate::{ondemand::Answer, route::CompileError, snapshot::SnapshotError};

/// gRPC `INVALID_ARGUMENT`, the code of a NACK's error detail.
const NACK_CODE: i32 = 3;
/// Idle sweeps in a row a service must go unused before it is dropped: it goes between
/// 3/4 and the whole idle timeout after its last use.
pub const IDLE_SWEEPS: u32 = 4;

/// What the machine asks of the proxy: compile and install, report a refusal, tell waiting
/// requests, and say which services requests used.
pub trait Port {
    /// Compiles `mesh` and installs it: services that do not compile are left out and
    /// returned with why; `Err` (the workload itself is bad): nothing is installed.
    fn install(
        &mut self,
        mesh: &MeshFile,
        version: String,
    ) -> Result<Vec<(String, SnapshotError)>, SnapshotError>;
    /// Replaces, in place, the endpoints of the services named in `changed` with what
    /// `mesh` gives them, compiling nothing else. `Ok(false)`: not possible (a service is not
    /// installed yet): nothing changed, and the whole mesh is compiled instead.
    fn update_endpoints(
        &mut self,
        mesh: &MeshFile,
        changed: &[String],
        version: String,
    ) -> Result<bool, SnapshotError>;
    /// Which of this proxy's own listeners `addr` is (`"outbound"`, `"admin"`), if any: an
    /// endpoint there would loop requests back into the proxy.
    fn own_listener(&self, addr: SocketAddr) -> Option<&'static str>;
    /// A response was refused (NACK): shown by the admin side and counted.
    fn refused(&mut self, message: &str);
    /// Services of the installed snapshot by resource name, and whether a request used each
    /// since the last call (the call clears the marks).
    fn take_usage(&mut self) -> Vec<(String, bool)>;
    /// Aliases not answered `found`: requests wait on the pending ones; missing and refused
    /// ones are answered again when their service comes or changes.
    fn pending_lookups(&self) -> Vec<String>;
    fn answer(&mut self, alias: &str, answer: Answer);
    /// Aliases no longer subscribed: their lookups go.
    fn forget(&mut self, aliases: &[String]);
    /// Missing aliases no request asked for since the last sweep, now forgotten.
    fn sweep_missing(&mut self) -> Vec<String>;
    /// Answers given since the last call are ready: wake the waiting requests.
    fn lookups_settled(&mut self);
}

/// The discovery stream as `/config_dump` shows it.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct XdsStatus {
    pub control_plane: String,
    pub connected: bool,
    /// Per type: the control plane's version of the last response applied.
    pub versions: BTreeMap<&'static str, String>,
    /// Per type: the names subscribed to (aliases included).
    pub subscribed: BTreeMap<&'static str, Vec<String>>,
    /// Per type: the resources held, by name.
    pub held: BTreeMap<&'static str, Vec<String>>,
    pub last_nack: Option<Nack>,
}

impl XdsStatus {
    /// As `/config_dump` prints it.
    pub fn render(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The last response refused, in whole or in part.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Nack {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The control plane's version of the refused response.
    pub version: String,
    pub message: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// What the proxy holds from the control plane, kept across reconnects, and the state of the
/// stream it is on.
pub struct Machine {
    received: Received,
    /// Per type: resource name → version, sent back on a new stream.
    versions: HashMap<Kind, BTreeMap<String, String>>,
    /// Per type: the control plane's `system_version_info` of the last applied response.
    system_versions: BTreeMap<&'static str, String>,
    generation: u64,
    /// Per type: the names subscribed to, Service aliases included.
    subscribed: HashMap<Kind, BTreeSet<String>>,
    /// Service alias → the service it resolved to.
    aliases: BTreeMap<String, String>,
    /// Subscribed resource names the control plane said do not exist.
    absent: HashSet<(Kind, String)>,
    /// Resources refused (NACKed) with no good version held: answered, but unusable; with
    /// the reason, for the lookups they answer.
    refused: HashMap<(Kind, String), Arc<str>>,
    /// Service → idle sweeps in a row it went unused.
    idle: HashMap<String, u32>,
    last_nack: Option<Nack>,
    connected: bool,
    /// Types that answered on the current stream: nothing is compiled until all have.
    first_seen: HashSet<Kind>,
    /// This proxy, for the first request of each stream.
    node: pb::Node,
    /// How long an unused service stays subscribed (for the log).
    idle_timeout: Duration,
}

impl Machine {
    /// Subscribed from the start: this workload, the mesh settings, the catch-all service,
    /// every `Endpoints` named later, and the policies on this workload's inbound side.
    pub fn new(workload: &str, namespace: &str, idle_timeout: Duration) -> Machine {
        let own = resource::resource_name(namespace, workload);
        let subscribed = [
            (Kind::Workload, own),
            (Kind::MeshSettings, MESH_SETTINGS_NAME.to_owned()),
            (Kind::Service, CATCH_ALL_ALIAS.to_owned()),
            (Kind::Endpoints, String::new()),
            (
                Kind::Authorization,
                resource::workload_alias(namespace, workload),
            ),
        ]
        .into_iter()
        .map(|(k, n)| (k, BTreeSet::from_iter((!n.is_empty()).then_some(n))))
        .collect();
        Machine {
            received: Received::default(),
            versions: HashMap::new(),
            system_versions: BTreeMap::new(),
            generation: 0,
            subscribed,
            aliases: BTreeMap::new(),
            absent: HashSet::new(),
            refused: HashMap::new(),
            idle: HashMap::new(),
            last_nack: None,
            connected: false,
            first_seen: HashSet::new(),
            node: pb::Node {
                workload: workload.to_owned(),
                namespace: namespace.to_owned(),
                proxy_version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            idle_timeout,
        }
    }

    /// A new stream: one request per type with what is subscribed and the versions held
    /// (the first carries this proxy's node). Nothing is compiled until every type answers.
    pub fn open(&mut self) -> Vec<pb::DiscoveryRequest> {
        self.connected = true;
        self.first_seen.clear();
        let mut node = Some(self.node.clone());
        Kind::ALL
            .iter()
            .map(|&kind| pb::DiscoveryRequest {
                node: node.take(),
                type_url: kind.type_url().to_owned(),
                resource_names_subscribe: self
                    .subscribed
                    .get(&kind)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default(),
                initial_resource_versions: self
                    .versions
                    .get(&kind)
                    .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
                ..Default::default()
            })
            .collect()
    }

    /// Whether what the proxy subscribed to at start is installed: every type answered on
    /// this stream and, when a service claims the catch-all, that service is whole (with its
    /// endpoints and backends). Until then `/ready` stays false, so the first requests do
    /// not meet a catch-all whose endpoints are still on their way.
    pub fn ready(&self) -> bool {
        self.first_seen.len() == Kind::ALL.len()
            && self
                .aliases
                .get(CATCH_ALL_ALIAS)
                .is_none_or(|service| self.complete(service))
    }

    /// The stream ended; what is held stays for the next one.
    pub fn closed(&mut self) {
        self.connected = false;
    }

    /// Services held, for the gauge.
    pub fn services_held(&self) -> usize {
        self.received.services.len()
    }

    /// Aliases requests asked for: subscribed once each.
    pub fn on_wanted(&mut self, mut aliases: Vec<String>) -> Vec<pb::DiscoveryRequest> {
        let subs = self.subscribed.entry(Kind::Service).or_default();
        aliases.retain(|a| subs.insert(a.clone()));
        if aliases.is_empty() {
            return Vec::new();
        }
        debug!(?aliases, "subscribing on demand");
        vec![subscription(Kind::Service, aliases, Vec::new())]
    }

    /// Applies one response; returns its ACK or NACK and any subscriptions it calls for.
    pub fn on_response(
        &mut self,
        rsp: pb::DiscoveryResponse,
        port: &mut dyn Port,
    ) -> Vec<pb::DiscoveryRequest> {
        let nonce = rsp.nonce.clone();
        let type_url = rsp.type_url.clone();
        let version = rsp.system_version_info.clone();
        let kind = Kind::from_type_url(&rsp.type_url);
        let nack = match kind {
            None => Some((None, format!("unknown type URL {:?}", rsp.type_url))),
            Some(kind) => {
                self.first_seen.insert(kind);
                let complete = self.first_seen.len() == Kind::ALL.len();
                self.apply(kind, rsp, complete, port)
                    .map(|message| (Some(kind), message))
            }
        };
        if let Some((kind, message)) = &nack {
            warn!(type_url = %type_url, error = %message, "NACK: config refused; keeping the last good one");
            port.refused(message);
            self.last_nack = Some(Nack {
                kind: kind.map_or("unknown", Kind::message_name),
                version,
                message: message.clone(),
                at: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            });
        }
        // Found means "in the installed snapshot": nothing is installed until every type
        // answered on this stream.
        let installed = self.first_seen.len() == Kind::ALL.len();
        self.settle_lookups(installed, port);
        let mut out = vec![pb::DiscoveryRequest {
            type_url,
            response_nonce: nonce,
            error_detail: nack.map(|(_, message)| pb::Status {
                code: NACK_CODE,
                message,
            }),
            ..Default::default()
        }];
        out.extend(
            self.missing_subscriptions()
                .into_iter()
                .map(|(kind, names)| subscription(kind, names, Vec::new())),
        );
        // An alias that now means another service leaves the old one unneeded: drop it at
        // once, or both would claim the host until the next idle sweep.
        if kind == Some(Kind::Service) && installed {
            out.extend(self.release(&[], port));
        }
        out
    }

    /// Drops what no request used for the idle timeout: aliases of unused services and
    /// unused missing aliases, then every service and endpoints nothing needs any more.
    pub fn on_sweep(&mut self, port: &mut dyn Port) -> Vec<pb::DiscoveryRequest> {
        let mut seen = HashSet::new();
        for (name, used) in port.take_usage() {
            if used {
                self.idle.remove(&name);
            } else {
                *self.idle.entry(name.clone()).or_default() += 1;
            }
            seen.insert(name);
        }
        // A service asked for but not in the snapshot (it cannot compile) serves nothing:
        // it idles too.
        let unserved: BTreeSet<String> = self
            .aliases
            .values()
            .filter(|s| !seen.contains(*s))
            .cloned()
            .collect();
        for name in unserved {
            *self.idle.entry(name).or_default() += 1;
        }
        let mut gone: Vec<String> = self
            .aliases
            .iter()
            .filter(|(alias, svc)| {
                alias.as_str() != CATCH_ALL_ALIAS
                    && self.idle.get(*svc).is_some_and(|n| *n >= IDLE_SWEEPS)
            })
            .map(|(alias, _)| alias.clone())
            .collect();
        gone.extend(port.sweep_missing());
        let requests = self.release(&gone, port);
        if !requests.is_empty() {
            info!(
                aliases = gone.len(),
                "unsubscribed from services unused for {:?}", self.idle_timeout
            );
        }
        requests
    }

    pub fn status(&self, control_plane: &str) -> XdsStatus {
        XdsStatus {
            control_plane: control_plane.to_owned(),
            connected: self.connected,
            versions: self.system_versions.clone(),
            subscribed: self
                .subscribed
                .iter()
                .map(|(k, names)| (k.message_name(), names.iter().cloned().collect()))
                .collect(),
            held: Kind::ALL
                .iter()
                .map(|&k| {
                    let r = &self.received;
                    let names: Vec<String> = match k {
                        Kind::Service => r.services.keys().cloned().collect(),
                        Kind::Endpoints => r.endpoints.keys().cloned().collect(),
                        Kind::Workload => r.workloads.keys().cloned().collect(),
                        Kind::Authorization => r.authorizations.keys().cloned().collect(),
                        Kind::MeshSettings => r
                            .mesh
                            .iter()
                            .map(|_| MESH_SETTINGS_NAME.to_owned())
                            .collect(),
                    };
                    (k.message_name(), names)
                })
                .collect(),
            last_nack: self.last_nack.clone(),
        }
    }

    fn is_subscribed(&self, kind: Kind, name: &str) -> bool {
        self.subscribed
            .get(&kind)
            .is_some_and(|s| s.contains(name) || s.contains("*"))
    }

    /// Whether the control plane answered for a resource: sent it or said it does not exist.
    fn answered(&self, kind: Kind, name: &str) -> bool {
        let held = match kind {
            Kind::Service => self.received.services.contains_key(name),
            Kind::Endpoints => self.received.endpoints.contains_key(name),
            _ => true,
        };
        let key = (kind, name.to_owned());
        held || self.absent.contains(&key) || self.refused.contains_key(&key)
    }

    /// The services a service's routes send to, by resource name.
    fn backends(&self, service: &str) -> Vec<String> {
        let Some(svc) = self.received.services.get(service) else {
            return Vec::new();
        };
        let mut out: Vec<String> = svc
            .routes
            .iter()
            .flat_map(|r| &r.backend_refs)
            .map(|b| {
                resource::resource_name(
                    b.namespace.as_deref().unwrap_or(&svc.namespace),
                    &b.service,
                )
            })
            .filter(|b| b != service)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// A service with everything it needs answered: its endpoints, and each backend with
    /// its endpoints.
    fn complete(&self, service: &str) -> bool {
        self.answered(Kind::Service, service)
            && self.answered(Kind::Endpoints, service)
            && self.backends(service).iter().all(|b| {
                self.answered(Kind::Service, b)
                    && (self.absent.contains(&(Kind::Service, b.clone()))
                        || self.answered(Kind::Endpoints, b))
            })
    }

    /// Services reached from a subscribed alias (and the catch-all), then what they route
    /// to: everything the outbound side needs.
    fn needed(&self) -> BTreeSet<String> {
        let roots: BTreeSet<String> = self.aliases.values().cloned().collect();
        let mut needed = roots.clone();
        for r in &roots {
            needed.extend(self.backends(r));
        }
        needed
    }

    /// Subscriptions the held services call for and do not have yet.
    fn missing_subscriptions(&mut self) -> Vec<(Kind, Vec<String>)> {
        let needed = self.needed();
        let mut out = Vec::new();
        for kind in [Kind::Service, Kind::Endpoints] {
            let new: Vec<String> = needed
                .iter()
                .filter(|n| !self.is_subscribed(kind, n))
                .cloned()
                .collect();
            if !new.is_empty() {
                self.subscribed
                    .entry(kind)
                    .or_default()
                    .extend(new.iter().cloned());
                out.push((kind, new));
            }
        }
        out
    }

    /// The mesh to compile: every held service whose endpoints are answered (a service
    /// without them would fail requests it could soon serve).
    fn mesh_file(&self, received: &Received) -> MeshFile {
        let mut mesh = received.to_mesh_file();
        mesh.services.retain(|s| {
            let name = resource::resource_name(&s.namespace, &s.name);
            received.endpoints.contains_key(&name) || self.absent.contains(&(Kind::Endpoints, name))
        });
        mesh
    }

    /// Applies one response: good resources replace their previous versions, bad ones are
    /// kept out (the previous version stays) and named in the NACK. Until every type has
    /// answered once on this stream nothing is compiled, so the first snapshot is whole.
    fn apply(
        &mut self,
        kind: Kind,
        rsp: pb::DiscoveryResponse,
        complete: bool,
        port: &mut dyn Port,
    ) -> Option<String> {
        let mut next = self.received.clone();
        let mut versions = self.versions.get(&kind).cloned().unwrap_or_default();
        let mut errors = Vec::new();
        let mut updated = Vec::new();
        for r in &rsp.resources {
            let decoded = resource::decode(r)
                .map_err(|e| e.to_string())
                .and_then(|d| check(kind, &r.name, d, &*port));
            let key = (kind, r.name.clone());
            match decoded {
                Ok(d) => {
                    versions.insert(r.name.clone(), r.version.clone());
                    self.absent.remove(&key);
                    self.refused.remove(&key);
                    next.insert(d);
                    updated.push(r.name.clone());
                }
                Err(e) => {
                    if !versions.contains_key(&r.name) {
                        self.refused.insert(key, Arc::from(e.as_str()));
                    }
                    errors.push(e);
                }
            }
            if kind == Kind::Service {
                for alias in &r.aliases {
                    self.aliases.insert(alias.clone(), r.name.clone());
                }
            }
        }
        for name in &rsp.removed_resources {
            if is_alias(name) {
                if kind == Kind::Service {
                    self.aliases.remove(name);
                    port.answer(name, Answer::Missing);
                }
                continue;
            }
            next.remove(kind, name);
            versions.remove(name);
            self.refused.remove(&(kind, name.clone()));
            if self.is_subscribed(kind, name) {
                self.absent.insert((kind, name.clone()));
            }
        }
        self.system_versions
            .insert(kind.message_name(), rsp.system_version_info.clone());
        // Pod churn: only endpoints of installed services changed, so only their endpoint
        // sets are replaced (their state kept); anything else compiles the whole mesh.
        let endpoints_only = kind == Kind::Endpoints
            && rsp.removed_resources.is_empty()
            && !updated.is_empty()
            && complete
            && self.update_endpoints(&next, &updated, port);
        if complete && !endpoints_only {
            let refused = self.install(&mut next, port);
            for (name, error) in refused {
                if kind == Kind::Service {
                    versions.remove(&name);
                }
                // Refused with no good version to fall back on: what its lookups answer.
                if !name.is_empty() && !next.services.contains_key(&name) {
                    self.refused
                        .insert((Kind::Service, name.clone()), Arc::from(error.as_str()));
                }
                errors.push(if name.is_empty() {
                    error
                } else {
                    format!("Service {name}: {error}")
                });
            }
        }
        self.received = next;
        self.versions.insert(kind, versions);
        if errors.is_empty() {
            None
        } else {
            Some(errors.join("; "))
        }
    }

    /// The version of the next install: a generation count and each type's version.
    fn next_version(&self) -> (u64, String) {
        let generation = self.generation + 1;
        let versions = self
            .system_versions
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        (generation, format!("{generation}:{versions}"))
    }

    /// Replaces the endpoint sets of the `changed` services in place; false when that is not
    /// possible and the whole mesh must be compiled (which then names any error).
    fn update_endpoints(
        &mut self,
        next: &Received,
        changed: &[String],
        port: &mut dyn Port,
    ) -> bool {
        let (generation, version) = self.next_version();
        match port.update_endpoints(&next.services_file(changed), changed, version) {
            Ok(true) => {
                self.generation = generation;
                true
            }
            Ok(false) => false,
            Err(e) => {
                debug!(error = %e, "endpoints update needs a full compile");
                false
            }
        }
    }

    /// Compiles and installs `next`. A service that does not compile for want of a backend
    /// not held yet is left out quietly (it comes once the backend does); one that does not
    /// compile otherwise is refused: its previous version is put back into `next`, and it
    /// is returned for the NACK.
    fn install(&mut self, next: &mut Received, port: &mut dyn Port) -> Vec<(String, String)> {
        let (generation, version) = self.next_version();
        let mut refused = Vec::new();
        for attempt in 0..2 {
            let mesh = self.mesh_file(next);
            match port.install(&mesh, version.clone()) {
                Ok(skipped) => {
                    let bad: Vec<_> = skipped
                        .into_iter()
                        .filter(|(_, e)| {
                            !matches!(e, SnapshotError::Route(CompileError::UnknownBackend { .. }))
                        })
                        .collect();
                    if bad.is_empty() || attempt == 1 {
                        self.generation = generation;
                        return refused;
                    }
                    // Installed without them; compiled again with their previous versions.
                    for (name, e) in bad {
                        match self.received.services.get(&name) {
                            Some(old) => next.services.insert(name.clone(), old.clone()),
                            None => next.services.remove(&name),
                        };
                        refused.push((name, e.to_string()));
                    }
                }
                Err(e) => {
                    // Not a service's fault (the workload): nothing of the response is kept.
                    *next = self.received.clone();
                    refused.push((String::new(), e.to_string()));
                    return refused;
                }
            }
        }
        refused
    }

    /// Tells waiting requests which of their aliases are answered now: `refused` when the
    /// service, its endpoints or a backend was refused with no good version held, `found`
    /// once it is installed with everything it needs.
    fn settle_lookups(&self, installed: bool, port: &mut dyn Port) {
        for alias in port.pending_lookups() {
            let Some(service) = self.aliases.get(&alias) else {
                continue;
            };
            if let Some(reason) = self.refusal(service) {
                port.answer(&alias, Answer::Refused(reason));
            } else if installed && self.complete(service) {
                port.answer(&alias, Answer::Found);
            }
        }
        // Missing answers were recorded while applying; one wake-up covers both.
        port.lookups_settled();
    }

    /// Why `service` cannot be used: its own refusal, its endpoints', or a backend's.
    fn refusal(&self, service: &str) -> Option<Arc<str>> {
        let of = |kind: Kind, name: &str| self.refused.get(&(kind, name.to_owned())).cloned();
        of(Kind::Service, service)
            .or_else(|| of(Kind::Endpoints, service))
            .or_else(|| {
                self.backends(service)
                    .iter()
                    .find_map(|b| of(Kind::Service, b).or_else(|| of(Kind::Endpoints, b)))
            })
    }

    /// Forgets the `gone` aliases, then every service and endpoints nothing needs any more
    /// (an alias may also have come to mean another service); reinstalls without them and
    /// returns the unsubscriptions to send.
    fn release(&mut self, gone: &[String], port: &mut dyn Port) -> Vec<pb::DiscoveryRequest> {
        for alias in gone {
            self.aliases.remove(alias);
        }
        port.forget(gone);
        let needed = self.needed();
        let services = self.drop_unneeded(Kind::Service, gone, &needed);
        let endpoints = self.drop_unneeded(Kind::Endpoints, gone, &needed);
        if services.is_empty() && endpoints.is_empty() {
            return Vec::new();
        }
        debug!(?services, ?endpoints, "unsubscribing");
        let mut next = self.received.clone();
        self.install(&mut next, port);
        self.received = next;
        vec![
            subscription(Kind::Service, Vec::new(), services),
            subscription(Kind::Endpoints, Vec::new(), endpoints),
        ]
    }

    /// Unsubscribes `kind` names that are `gone` aliases or resources nothing needs, and
    /// forgets what was held of them.
    fn drop_unneeded(
        &mut self,
        kind: Kind,
        gone: &[String],
        needed: &BTreeSet<String>,
    ) -> Vec<String> {
        let subs = self.subscribed.entry(kind).or_default();
        let dropped: Vec<String> = subs
            .iter()
            .filter(|n| {
                n.as_str() != CATCH_ALL_ALIAS
                    && (gone.contains(n) || (!is_alias(n) && !needed.contains(*n)))
            })
            .cloned()
            .collect();
        for n in &dropped {
            subs.remove(n);
        }
        for n in &dropped {
            self.absent.remove(&(kind, n.clone()));
            self.refused.remove(&(kind, n.clone()));
            self.received.remove(kind, n);
            if let Some(v) = self.versions.get_mut(&kind) {
                v.remove(n);
            }
            self.idle.remove(n);
        }
        dropped
    }
}

/// Checks a decoded resource against this proxy: the kind its response promised, and no
/// endpoint on one of this proxy's own listeners (requests would loop).
fn check(kind: Kind, name: &str, d: Decoded, port: &dyn Port) -> Result<Decoded, String> {
    if d.kind() != kind {
        return Err(format!(
            "{name}: a {} resource in a {kind} response",
            d.kind()
        ));
    }
    if let Decoded::Endpoints(eps) = &d {
        for (i, e) in eps.endpoints.iter().enumerate() {
            if let Some(listener) = port.own_listener(e.address) {
                return Err(format!(
                    "Endpoints {name}: endpoints[{i}].address: {} is this proxy's own {listener} listener; requests would loop",
                    e.address,
                ));
            }
        }
    }
    Ok(d)
}

/// A request that only subscribes or unsubscribes.
fn subscription(
    kind: Kind,
    subscribe: Vec<String>,
    unsubscribe: Vec<String>,
) -> pb::DiscoveryRequest {
    pb::DiscoveryRequest {
        type_url: kind.type_url().to_owned(),
        resource_names_subscribe: subscribe,
        resource_names_unsubscribe: unsubscribe,
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
