//! The discovery stream to the control plane. Subscribes to this workload, the mesh settings
//! and policies, the catch-all service, and outbound services on demand (by the host or
//! address the app used, plus what those services route to); unsubscribes services no request
//! used for the idle timeout. Compiles what it holds into a `Snapshot`, installs it, and ACKs
//! or NACKs each response per resource. Reconnects with jittered backoff, resending the
//! subscriptions and versions it holds; the last good snapshot keeps serving meanwhile.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use skiff_api::{
    model::MeshFile,
    pb::{self, discovery_client::DiscoveryClient},
    resource::{self, CATCH_ALL_ALIAS, Decoded, Kind, MESH_SETTINGS_NAME, Received, is_alias},
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::{
    ondemand::{Answer, OnDemand},
    resilience::Backoff,
    route::CompileError,
    snapshot::{CompileContext, Snapshot, SnapshotError},
    state::State,
    telemetry::ReloadResult,
};

/// gRPC `INVALID_ARGUMENT`, the code of a NACK's error detail.
const NACK_CODE: i32 = 3;
/// Longest wait for the control plane to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle sweeps in a row a service must go unused before it is dropped: it goes between
/// 3/4 and the whole idle timeout after its last use.
const IDLE_SWEEPS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("invalid control-plane address {url:?}: {source}")]
    Address {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("connect: {0}")]
    Connect(#[source] tonic::transport::Error),
    #[error("stream: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the stream's request channel closed")]
    RequestsClosed,
}

/// Where the control plane is, who this proxy is, and how on-demand discovery behaves.
#[derive(Clone, Debug)]
pub struct XdsConfig {
    pub url: String,
    pub workload: String,
    pub namespace: String,
    /// How long a request waits for a service it asked for.
    pub fetch_timeout: Duration,
    /// How long an unused service stays subscribed.
    pub idle_timeout: Duration,
    /// HTTP/2 PING interval, and how long a PING may go unanswered.
    pub keepalive: Duration,
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

/// What the proxy holds from the control plane, kept across reconnects.
struct Held {
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
    /// Resources refused (NACKed) with no good version held: answered, but unusable.
    refused: HashSet<(Kind, String)>,
    /// Service → idle sweeps in a row it went unused.
    idle: HashMap<String, u32>,
    last_nack: Option<Nack>,
    connected: bool,
}

impl Held {
    fn new(cfg: &XdsConfig) -> Held {
        let own = resource::resource_name(&cfg.namespace, &cfg.workload);
        let subscribed = [
            (Kind::Workload, own),
            (Kind::MeshSettings, MESH_SETTINGS_NAME.to_owned()),
            (Kind::Service, CATCH_ALL_ALIAS.to_owned()),
            (Kind::Endpoints, String::new()),
            // The policies that apply on this workload's inbound side.
            (
                Kind::Authorization,
                resource::workload_alias(&cfg.namespace, &cfg.workload),
            ),
        ]
        .into_iter()
        .map(|(k, n)| (k, BTreeSet::from_iter((!n.is_empty()).then_some(n))))
        .collect();
        Held {
            received: Received::default(),
            versions: HashMap::new(),
            system_versions: BTreeMap::new(),
            generation: 0,
            subscribed,
            aliases: BTreeMap::new(),
            absent: HashSet::new(),
            refused: HashSet::new(),
            idle: HashMap::new(),
            last_nack: None,
            connected: false,
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
        held || self.absent.contains(&key) || self.refused.contains(&key)
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

    fn status(&self, cfg: &XdsConfig) -> XdsStatus {
        XdsStatus {
            control_plane: cfg.url.clone(),
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
}

/// Runs the client forever. `applied` turns true once the first snapshot is installed.
pub async fn run(cfg: XdsConfig, state: Arc<State>, applied: watch::Sender<bool>) {
    let (od, mut wanted) = OnDemand::new(cfg.fetch_timeout, &state.metrics);
    state.set_on_demand(od.clone());
    let mut held = Held::new(&cfg);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    let client = Client {
        cfg: &cfg,
        state: &state,
        od: &od,
        applied: &applied,
    };
    loop {
        match client.session(&mut held, &mut wanted, &mut backoff).await {
            Ok(()) => info!(url = %cfg.url, "control-plane stream ended; reconnecting"),
            Err(e) => {
                warn!(url = %cfg.url, error = %e, "control-plane stream failed; keeping the last config")
            }
        }
        held.connected = false;
        state.metrics.xds_connected.set(0);
        state.set_xds_status(held.status(&cfg).render());
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

struct Client<'a> {
    cfg: &'a XdsConfig,
    state: &'a State,
    od: &'a OnDemand,
    applied: &'a watch::Sender<bool>,
}

impl Client<'_> {
    async fn session(
        &self,
        held: &mut Held,
        wanted: &mut mpsc::Receiver<String>,
        backoff: &mut Backoff,
    ) -> Result<(), XdsError> {
        let cfg = self.cfg;
        let endpoint = tonic::transport::Endpoint::from_shared(cfg.url.clone())
            .map_err(|source| XdsError::Address {
                url: cfg.url.clone(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(cfg.keepalive)
            .keep_alive_timeout(cfg.keepalive)
            .keep_alive_while_idle(true);
        let channel = endpoint.connect().await.map_err(XdsError::Connect)?;
        let mut client = DiscoveryClient::new(channel);
        let (tx, rx) = mpsc::channel::<pb::DiscoveryRequest>(64);
        let mut node = Some(pb::Node {
            workload: cfg.workload.clone(),
            namespace: cfg.namespace.clone(),
            proxy_version: env!("CARGO_PKG_VERSION").to_owned(),
        });
        for kind in Kind::ALL {
            let names = held
                .subscribed
                .get(&kind)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            let req = pb::DiscoveryRequest {
                node: node.take(),
                type_url: kind.type_url().to_owned(),
                resource_names_subscribe: names,
                initial_resource_versions: held
                    .versions
                    .get(&kind)
                    .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
                ..Default::default()
            };
            tx.send(req).await.map_err(|_| XdsError::RequestsClosed)?;
        }
        let mut stream = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        info!(url = %cfg.url, "control-plane stream open");
        held.connected = true;
        self.state.metrics.xds_connected.set(1);
        self.state.set_xds_status(held.status(cfg).render());
        let period = (cfg.idle_timeout / IDLE_SWEEPS).max(Duration::from_millis(100));
        let mut sweeps = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first_seen: HashSet<Kind> = HashSet::new();
        loop {
            let requests = tokio::select! {
                msg = stream.message() => {
                    let Some(rsp) = msg? else { return Ok(()) };
                    backoff.reset();
                    self.on_response(held, rsp, &mut first_seen)
                }
                Some(alias) = wanted.recv() => {
                    let mut aliases = vec![alias];
                    while let Ok(more) = wanted.try_recv() {
                        aliases.push(more);
                    }
                    let subs = held.subscribed.entry(Kind::Service).or_default();
                    aliases.retain(|a| subs.insert(a.clone()));
                    debug!(?aliases, "subscribing on demand");
                    vec![subscription(Kind::Service, aliases, Vec::new())]
                }
                _ = sweeps.tick() => self.sweep(held),
            };
            for req in requests {
                if req.response_nonce.is_empty()
                    && req.resource_names_subscribe.is_empty()
                    && req.resource_names_unsubscribe.is_empty()
                {
                    continue;
                }
                tx.send(req).await.map_err(|_| XdsError::RequestsClosed)?;
            }
            self.state
                .metrics
                .xds_services
                .set(i64::try_from(held.received.services.len()).unwrap_or(i64::MAX));
            self.state.set_xds_status(held.status(cfg).render());
        }
    }

    /// Applies one response; returns its ACK or NACK and any subscriptions it calls for.
    fn on_response(
        &self,
        held: &mut Held,
        rsp: pb::DiscoveryResponse,
        first_seen: &mut HashSet<Kind>,
    ) -> Vec<pb::DiscoveryRequest> {
        let nonce = rsp.nonce.clone();
        let type_url = rsp.type_url.clone();
        let version = rsp.system_version_info.clone();
        let kind = Kind::from_type_url(&rsp.type_url);
        let nack = match kind {
            None => Some((None, format!("unknown type URL {:?}", rsp.type_url))),
            Some(kind) => {
                first_seen.insert(kind);
                let complete = first_seen.len() == Kind::ALL.len();
                self.apply(held, kind, rsp, complete)
                    .map(|message| (Some(kind), message))
            }
        };
        if let Some((kind, message)) = &nack {
            warn!(type_url = %type_url, error = %message, "NACK: config refused; keeping the last good one");
            self.state.reject(message.clone());
            self.state.metrics.reload(ReloadResult::Failed);
            held.last_nack = Some(Nack {
                kind: kind.map_or("unknown", Kind::message_name),
                version,
                message: message.clone(),
                at: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            });
        }
        if self.state.is_applied() {
            self.applied.send_replace(true);
        }
        // Found means "in the installed snapshot": nothing is installed until every type
        // answered on this stream.
        let installed = first_seen.len() == Kind::ALL.len();
        self.settle_lookups(held, installed);
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
            held.missing_subscriptions()
                .into_iter()
                .map(|(kind, names)| subscription(kind, names, Vec::new())),
        );
        // An alias that now means another service leaves the old one unneeded: drop it at
        // once, or both would claim the host until the next idle sweep.
        if kind == Some(Kind::Service) && installed {
            out.extend(self.release(held, &[]));
        }
        out
    }

    /// Applies one response: good resources replace their previous versions, bad ones are
    /// kept out (the previous version stays) and named in the NACK. Until every type has
    /// answered once on this stream nothing is compiled, so the first snapshot is whole.
    fn apply(
        &self,
        held: &mut Held,
        kind: Kind,
        rsp: pb::DiscoveryResponse,
        complete: bool,
    ) -> Option<String> {
        let mut next = held.received.clone();
        let mut versions = held.versions.get(&kind).cloned().unwrap_or_default();
        let mut errors = Vec::new();
        for r in &rsp.resources {
            let decoded = resource::decode(r)
                .map_err(|e| e.to_string())
                .and_then(|d| self.check(kind, &r.name, d));
            let key = (kind, r.name.clone());
            match decoded {
                Ok(d) => {
                    versions.insert(r.name.clone(), r.version.clone());
                    held.absent.remove(&key);
                    held.refused.remove(&key);
                    next.insert(d);
                }
                Err(e) => {
                    if !versions.contains_key(&r.name) {
                        held.refused.insert(key);
                    }
                    errors.push(e);
                }
            }
            if kind == Kind::Service {
                for alias in &r.aliases {
                    held.aliases.insert(alias.clone(), r.name.clone());
                }
            }
        }
        for name in &rsp.removed_resources {
            if is_alias(name) {
                if kind == Kind::Service {
                    held.aliases.remove(name);
                    self.od.answer(name, Answer::Missing);
                }
                continue;
            }
            next.remove(kind, name);
            versions.remove(name);
            held.refused.remove(&(kind, name.clone()));
            if held.is_subscribed(kind, name) {
                held.absent.insert((kind, name.clone()));
            }
        }
        held.system_versions
            .insert(kind.message_name(), rsp.system_version_info.clone());
        if complete {
            let refused = self.install(held, &mut next);
            for (name, error) in refused {
                if kind == Kind::Service {
                    versions.remove(&name);
                }
                errors.push(if name.is_empty() {
                    error
                } else {
                    format!("Service {name}: {error}")
                });
            }
        }
        held.received = next;
        held.versions.insert(kind, versions);
        if errors.is_empty() {
            None
        } else {
            Some(errors.join("; "))
        }
    }

    /// Checks a decoded resource against this proxy: the kind its response promised, and
    /// no endpoint on one of this proxy's own listeners (requests would loop).
    fn check(&self, kind: Kind, name: &str, d: Decoded) -> Result<Decoded, String> {
        if d.kind() != kind {
            return Err(format!(
                "{name}: a {} resource in a {kind} response",
                d.kind()
            ));
        }
        if let (Decoded::Endpoints(eps), Some(bound)) = (&d, self.state.bound()) {
            for (i, e) in eps.endpoints.iter().enumerate() {
                if e.address == bound.outbound || e.address == bound.admin {
                    return Err(format!(
                        "Endpoints {name}: endpoints[{i}].address: {} is this proxy's own {} listener; requests would loop",
                        e.address,
                        if e.address == bound.outbound {
                            "outbound"
                        } else {
                            "admin"
                        },
                    ));
                }
            }
        }
        Ok(d)
    }

    /// Compiles and installs `next`. A service that does not compile for want of a backend
    /// not held yet is left out quietly (it comes once the backend does); one that does not
    /// compile otherwise is refused: its previous version is put back into `next`, and it
    /// is returned for the NACK.
    fn install(&self, held: &mut Held, next: &mut Received) -> Vec<(String, String)> {
        let prev = self.state.snapshot();
        let generation = held.generation + 1;
        let version = held
            .system_versions
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let cx = CompileContext {
            settings: &self.state.settings,
            metrics: &self.state.metrics,
            resilience: &self.state.resilience,
            authz: &self.state.authz,
            policies_selected: true,
            tls: self.state.tls(),
            workload: Some((self.cfg.workload.as_str(), self.cfg.namespace.as_str())),
            version: format!("{generation}:{version}"),
        };
        let mut refused = Vec::new();
        for attempt in 0..2 {
            let mesh = held.mesh_file(next);
            match Snapshot::compile_lenient(&mesh, &cx, Some(&prev)) {
                Ok((snap, skipped)) => {
                    let bad: Vec<_> = skipped
                        .into_iter()
                        .filter(|(_, e)| {
                            !matches!(e, SnapshotError::Route(CompileError::UnknownBackend { .. }))
                        })
                        .collect();
                    if bad.is_empty() || attempt == 1 {
                        debug!(version = %snap.version, "applying config from the control plane");
                        self.state.install(snap);
                        self.state.metrics.reload(ReloadResult::Ok);
                        held.generation = generation;
                        return refused;
                    }
                    for (name, e) in bad {
                        match held.received.services.get(&name) {
                            Some(old) => next.services.insert(name.clone(), old.clone()),
                            None => next.services.remove(&name),
                        };
                        refused.push((name, e.to_string()));
                    }
                }
                Err(e) => {
                    // Not a service's fault (the workload): nothing of the response is kept.
                    *next = held.received.clone();
                    refused.push((String::new(), e.to_string()));
                    return refused;
                }
            }
        }
        refused
    }

    /// Tells waiting requests which of their aliases are answered now.
    fn settle_lookups(&self, held: &Held, installed: bool) {
        for alias in self.od.pending().into_iter().filter(|_| installed) {
            if let Some(service) = held.aliases.get(&alias)
                && held.complete(service)
            {
                self.od.answer(&alias, Answer::Found);
            }
        }
        // Missing answers were recorded while applying; one wake-up covers both.
        self.od.notify();
    }

    /// Drops what no request used for the idle timeout: aliases of unused services and
    /// unused missing aliases, then every service and endpoints nothing needs any more.
    fn sweep(&self, held: &mut Held) -> Vec<pb::DiscoveryRequest> {
        let snap = self.state.snapshot();
        let mut seen = HashSet::new();
        for svc in &snap.services {
            let name = resource::resource_name(&svc.namespace, &svc.name);
            if svc.used.swap(false, std::sync::atomic::Ordering::Relaxed) {
                held.idle.remove(&name);
            } else {
                *held.idle.entry(name.clone()).or_default() += 1;
            }
            seen.insert(name);
        }
        // A service asked for but not in the snapshot (it cannot compile) serves nothing:
        // it idles too.
        let unserved: BTreeSet<String> = held
            .aliases
            .values()
            .filter(|s| !seen.contains(*s))
            .cloned()
            .collect();
        for name in unserved {
            *held.idle.entry(name).or_default() += 1;
        }
        let mut gone: Vec<String> = held
            .aliases
            .iter()
            .filter(|(alias, svc)| {
                alias.as_str() != CATCH_ALL_ALIAS
                    && held.idle.get(*svc).is_some_and(|n| *n >= IDLE_SWEEPS)
            })
            .map(|(alias, _)| alias.clone())
            .collect();
        gone.extend(self.od.sweep_missing());
        let requests = self.release(held, &gone);
        if !requests.is_empty() {
            info!(
                aliases = gone.len(),
                "unsubscribed from services unused for {:?}", self.cfg.idle_timeout
            );
        }
        requests
    }

    /// Forgets the `gone` aliases, then every service and endpoints nothing needs any more
    /// (an alias may also have come to mean another service); reinstalls without them and
    /// returns the unsubscriptions to send.
    fn release(&self, held: &mut Held, gone: &[String]) -> Vec<pb::DiscoveryRequest> {
        for alias in gone {
            held.aliases.remove(alias);
        }
        self.od.forget(gone);
        let needed = held.needed();
        let drop_names = |kind: Kind, held: &mut Held| -> Vec<String> {
            let subs = held.subscribed.entry(kind).or_default();
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
                held.absent.remove(&(kind, n.clone()));
                held.refused.remove(&(kind, n.clone()));
                held.received.remove(kind, n);
                if let Some(v) = held.versions.get_mut(&kind) {
                    v.remove(n);
                }
                held.idle.remove(n);
            }
            dropped
        };
        let services = drop_names(Kind::Service, held);
        let endpoints = drop_names(Kind::Endpoints, held);
        if services.is_empty() && endpoints.is_empty() {
            return Vec::new();
        }
        debug!(?services, ?endpoints, "unsubscribing");
        let mut next = held.received.clone();
        self.install(held, &mut next);
        held.received = next;
        vec![
            subscription(Kind::Service, Vec::new(), services),
            subscription(Kind::Endpoints, Vec::new(), endpoints),
        ]
    }
}

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
