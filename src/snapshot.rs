//! The compiled, immutable config the data plane runs on: services by address and authority,
//! route tables, clusters with their endpoints. Endpoint load, health and connections, breaker
//! counters, retry budgets and rate-limit buckets carry over from the previous snapshot, so a
//! reload keeps pools warm, an open breaker open and an ejected endpoint out.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use skiff_api::{
    model::{self, LoadBalancer, MeshFile, MtlsMode, Protocol},
    resource::{Fnv1a, strip_port},
};

use crate::{
    authz::{AuthzMetrics, Policies, applying_to},
    balance::{Endpoint, EndpointSet},
    bootstrap::Settings,
    cluster::{Cluster, Members},
    resilience::{
        Breaker, BreakerLimits, Bucket, Budget, BudgetState, Counters, OutlierPolicy, RateLimiter,
        ResilienceMetrics,
    },
    route::{CompileError, Route, Table},
    telemetry::{Direction, Metrics},
    tls::MeshTls,
    upstream::{EndpointPool, MeshPeer},
};

/// Route name in metrics for requests that no route matched.
pub const DEFAULT_ROUTE: &str = "default";
/// Cluster name of the local app on the inbound side.
const INBOUND_CLUSTER: &str = "inbound";
/// Connect timeout to the local app.
const APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Route(#[from] CompileError),
    #[error("workload {name:?} not found in namespace {namespace:?}")]
    UnknownWorkload { name: String, namespace: String },
    #[error("{path}: workload {name:?} in namespace {namespace:?} not found or has no inbound")]
    EndpointWorkload {
        path: String,
        name: String,
        namespace: String,
    },
    #[error("{path}: an endpoint needs a workload or an address")]
    EmptyEndpoint { path: String },
}

/// A service of the mesh as the outbound side sees it.
#[derive(Debug)]
pub struct Service {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub hosts: Vec<String>,
    pub addresses: Vec<SocketAddr>,
    pub protocol: Protocol,
    pub cluster: Arc<Cluster>,
    pub routes: Table,
    /// A request used it since the xDS client's last idle sweep (shared across snapshots).
    pub used: Arc<AtomicBool>,
}

/// This sidecar's workload (`--workload`): what its inbound side enforces on every
/// connection, redirected or not, and, with `inbound` settings, its own listener.
#[derive(Debug)]
pub struct Inbound {
    pub workload: Arc<str>,
    pub namespace: Arc<str>,
    /// `inbound.mtls`: what a client must speak; `permissive` without `inbound`.
    pub mtls: MtlsMode,
    /// The authorization policies that apply to this workload.
    pub authz: Policies,
    /// `rateLimit`: inbound requests beyond it get 429.
    pub limiter: Option<RateLimiter>,
    /// `inbound.listen` and `inbound.app`; none for a pod's sidecar, whose inbound side
    /// takes redirected connections only.
    pub listener: Option<InboundListener>,
}

/// Where the workload's inbound side listens, and its route to the app.
#[derive(Debug)]
pub struct InboundListener {
    pub listen: SocketAddr,
    pub app: SocketAddr,
    pub route: Route,
}

/// One config generation: immutable but for each cluster's endpoints (an `Endpoints` update
/// swaps them in place, see [`Snapshot::update_endpoints`]) and the version that says so.
#[derive(Debug)]
pub struct Snapshot {
    version: ArcSwap<String>,
    pub trust_domain: String,
    /// The mesh CA's trust anchors (DER); empty: no CA, meshed endpoints in plaintext.
    pub trust_anchors: Arc<Vec<Vec<u8>>>,
    /// This sidecar's SPIFFE ID, from its workload (`--workload`).
    pub identity: Option<Arc<str>>,
    /// `mesh.tracing.sampling`: the ratio of new traces sampled, when the mesh sets it.
    pub sampling: Option<f64>,
    pub services: Vec<Arc<Service>>,
    /// By resource name (`namespace/name`).
    by_name: HashMap<String, Arc<Service>>,
    by_addr: HashMap<SocketAddr, Arc<Service>>,
    by_host: HashMap<String, Arc<Service>, FastHash>,
    catch_all: Option<Arc<Service>>,
    pub inbound: Option<Inbound>,
}

/// What compiling needs besides the mesh file.
pub struct CompileContext<'a> {
    pub settings: &'a Settings,
    pub metrics: &'a Metrics,
    pub resilience: &'a ResilienceMetrics,
    /// `--workload` and `--namespace`.
    pub workload: Option<(&'a str, &'a str)>,
    /// Mesh TLS, when this proxy has an identity: meshed endpoints are reached through it.
    pub tls: Option<&'a Arc<MeshTls>>,
    pub authz: &'a AuthzMetrics,
    /// xDS: the control plane sent only the authorization policies that apply to this
    /// workload (their target services need not be held). Static mode selects them here.
    pub policies_selected: bool,
    pub version: String,
}

type ServiceKey = (String, String);
/// An endpoint and its connections, as one snapshot hands them to the next.
type Paired = (Arc<Endpoint>, Arc<EndpointPool>);

/// What a new snapshot takes over from the previous one.
#[derive(Default)]
struct Carry {
    endpoints: HashMap<(String, String, SocketAddr), Paired>,
    used: HashMap<ServiceKey, Arc<AtomicBool>>,
    breakers: HashMap<ServiceKey, Arc<Counters>>,
    budgets: HashMap<ServiceKey, Arc<BudgetState>>,
    /// The workload's rate-limit bucket, by `namespace/name`.
    bucket: Option<(String, Arc<Mutex<Bucket>>)>,
}

/// A service left out of a leniently compiled snapshot: its `namespace/name` and why.
pub type Skipped = (String, SnapshotError);

impl Snapshot {
    /// Compiles a validated mesh file. `prev` lends its endpoints (load estimates and pooled
    /// connections) to endpoints that stay.
    pub fn compile(
        mesh: &MeshFile,
        cx: &CompileContext<'_>,
        prev: Option<&Snapshot>,
    ) -> Result<Snapshot, SnapshotError> {
        Snapshot::build(mesh, cx, prev, None)
    }

    /// Like [`Snapshot::compile`], but a service that does not compile is left out and
    /// reported instead of failing the whole snapshot (xDS: one bad resource is NACKed, the
    /// others apply). Errors outside services (the workload) still fail it.
    pub fn compile_lenient(
        mesh: &MeshFile,
        cx: &CompileContext<'_>,
        prev: Option<&Snapshot>,
    ) -> Result<(Snapshot, Vec<Skipped>), SnapshotError> {
        let mut skipped = Vec::new();
        let snap = Snapshot::build(mesh, cx, prev, Some(&mut skipped))?;
        Ok((snap, skipped))
    }

    fn build(
        mesh: &MeshFile,
        cx: &CompileContext<'_>,
        prev: Option<&Snapshot>,
        mut skipped: Option<&mut Vec<Skipped>>,
    ) -> Result<Snapshot, SnapshotError> {
        let mut skip = |svc: &model::Service, e: SnapshotError| match skipped.as_deref_mut() {
            Some(list) => {
                list.push((
                    skiff_api::resource::resource_name(&svc.namespace, &svc.name),
                    e,
                ));
                Ok(())
            }
            None => Err(e),
        };
        let carry = prev.map(carry_from).unwrap_or_default();
        let workloads = workload_index(mesh);

        let mut clusters: HashMap<(String, String), Arc<Cluster>> = HashMap::new();
        for (i, svc) in mesh.services.iter().enumerate() {
            match compile_cluster(i, svc, &workloads, &mesh.mesh.trust_domain, cx, &carry) {
                Ok(cluster) => {
                    clusters.insert((svc.name.clone(), svc.namespace.clone()), Arc::new(cluster));
                }
                Err(e) => skip(svc, e)?,
            }
        }

        let mut services = Vec::with_capacity(mesh.services.len());
        for (i, svc) in mesh.services.iter().enumerate() {
            let key = (svc.name.clone(), svc.namespace.clone());
            let Some(own) = clusters.get(&key).cloned() else {
                continue;
            };
            let resolve = |name: &str, ns: Option<&str>| -> Option<Arc<Cluster>> {
                clusters
                    .get(&(name.to_owned(), ns.unwrap_or(&svc.namespace).to_owned()))
                    .cloned()
            };
            let compiled: Result<Vec<Route>, CompileError> = svc
                .routes
                .iter()
                .enumerate()
                .map(|(k, r)| {
                    let name = r.name.clone().unwrap_or_else(|| format!("route-{k}"));
                    let stats = cx.metrics.route(Direction::Outbound, &svc.name, &name);
                    Route::compile(
                        &format!("services[{i}].routes[{k}]"),
                        &name,
                        r,
                        &own,
                        &resolve,
                        stats,
                        cx.resilience,
                    )
                })
                .collect();
            let routes = match compiled {
                Ok(routes) => routes,
                Err(e) => {
                    skip(svc, e.into())?;
                    continue;
                }
            };
            let used = carry
                .used
                .get(&key)
                .cloned()
                .unwrap_or_else(|| Arc::new(AtomicBool::new(true)));
            let default = Route::fallback(
                DEFAULT_ROUTE,
                own.clone(),
                cx.metrics
                    .route(Direction::Outbound, &svc.name, DEFAULT_ROUTE),
            );
            services.push(Arc::new(Service {
                name: svc.name.as_str().into(),
                namespace: svc.namespace.as_str().into(),
                hosts: svc.effective_hosts(&mesh.mesh.trust_domain),
                addresses: svc.addresses.clone(),
                protocol: svc.protocol,
                cluster: own,
                routes: Table::new(routes, default),
                used,
            }));
        }

        let mut by_addr = HashMap::new();
        let mut by_host = HashMap::with_hasher(FastHash::default());
        let mut catch_all = None;
        for svc in &services {
            for a in &svc.addresses {
                by_addr.entry(*a).or_insert_with(|| svc.clone());
            }
            for h in &svc.hosts {
                if h == "*" {
                    catch_all.get_or_insert_with(|| svc.clone());
                } else {
                    by_host
                        .entry(h.to_ascii_lowercase())
                        .or_insert_with(|| svc.clone());
                }
            }
        }

        let inbound = match cx.workload {
            None => None,
            Some((name, namespace)) => {
                let w = workloads.get(&(name, namespace)).ok_or_else(|| {
                    SnapshotError::UnknownWorkload {
                        name: name.to_owned(),
                        namespace: namespace.to_owned(),
                    }
                })?;
                let listener = w.inbound.as_ref().map(|ib| {
                    let carried = carry
                        .endpoints
                        .get(&(INBOUND_CLUSTER.to_owned(), String::new(), ib.app))
                        .cloned();
                    let cluster = Arc::new(single_cluster(
                        INBOUND_CLUSTER,
                        ib.app,
                        cx.settings,
                        cx.resilience,
                        carried,
                    ));
                    InboundListener {
                        listen: ib.listen,
                        app: ib.app,
                        route: Route::fallback(
                            DEFAULT_ROUTE,
                            cluster,
                            cx.metrics.route(Direction::Inbound, name, DEFAULT_ROUTE),
                        ),
                    }
                });
                let workload_key = format!("{namespace}/{name}");
                let limiter = w.rate_limit.as_ref().map(|rl| {
                    let bucket = carry
                        .bucket
                        .as_ref()
                        .filter(|(k, _)| *k == workload_key)
                        .map(|(_, b)| b.clone());
                    RateLimiter::new(name.into(), rl, bucket, cx.resilience.rate_limited(name))
                });
                Some(Inbound {
                    workload: name.into(),
                    namespace: namespace.into(),
                    mtls: w
                        .inbound
                        .as_ref()
                        .map_or(MtlsMode::Permissive, |ib| ib.mtls),
                    authz: if cx.policies_selected {
                        Policies::compile(&mesh.authorization, cx.authz)
                    } else {
                        Policies::compile(applying_to(mesh, namespace, name), cx.authz)
                    },
                    limiter,
                    listener,
                })
            }
        };

        let identity = cx.workload.and_then(|(name, namespace)| {
            let w = workloads.get(&(name, namespace))?;
            Some(Arc::from(w.spiffe_id(&mesh.mesh.trust_domain)))
        });
        Ok(Snapshot {
            version: ArcSwap::from_pointee(cx.version.clone()),
            trust_domain: mesh.mesh.trust_domain.clone(),
            trust_anchors: Arc::new(mesh.mesh.trust_anchors.clone()),
            identity,
            sampling: mesh.mesh.tracing.as_ref().and_then(|t| t.sampling),
            by_name: services
                .iter()
                .map(|s| {
                    (
                        skiff_api::resource::resource_name(&s.namespace, &s.name),
                        s.clone(),
                    )
                })
                .collect(),
            services,
            by_addr,
            by_host,
            catch_all,
            inbound,
        })
    }

    /// The snapshot before any config arrived: no services, no workload.
    pub fn empty() -> Snapshot {
        Snapshot {
            version: ArcSwap::from_pointee(String::new()),
            trust_domain: String::new(),
            trust_anchors: Arc::default(),
            identity: None,
            sampling: None,
            services: Vec::new(),
            by_name: HashMap::new(),
            by_addr: HashMap::new(),
            by_host: HashMap::with_hasher(FastHash::default()),
            catch_all: None,
            inbound: None,
        }
    }

    /// The version of what is installed: the compile's, or the last in-place update's.
    pub fn version(&self) -> Arc<String> {
        self.version.load_full()
    }

    /// Replaces the endpoints of the services named in `changed` (`namespace/name`) with
    /// what `mesh` (which may hold only those services) now gives them, in place: each keeps its cluster (so the routes that
    /// send to it), breaker, budget and outlier policy, and an endpoint that stays keeps its
    /// load estimate, ejection and pooled connections. Nothing else is compiled. `Ok(false)`:
    /// a named service is not in this snapshot (or not in `mesh`), and nothing changed; the
    /// caller compiles the whole mesh instead. On an error nothing changed either.
    pub fn update_endpoints(
        &self,
        mesh: &MeshFile,
        changed: &[String],
        cx: &CompileContext<'_>,
    ) -> Result<bool, SnapshotError> {
        let workloads = workload_index(mesh);
        let mut next = Vec::with_capacity(changed.len());
        for name in changed {
            let found =
                mesh.services.iter().enumerate().find(|(_, s)| {
                    skiff_api::resource::resource_name(&s.namespace, &s.name) == *name
                });
            let Some((i, svc)) = found else {
                return Ok(false);
            };
            let Some(live) = self.by_name.get(name) else {
                return Ok(false);
            };
            let cluster = &live.cluster;
            let current = cluster.members();
            let kept = |addr: SocketAddr| -> Option<Paired> {
                let j = current
                    .endpoints
                    .endpoints()
                    .iter()
                    .position(|e| e.addr == addr)?;
                Some((
                    current.endpoints.endpoints()[j].clone(),
                    current.pools[j].clone(),
                ))
            };
            let members = compile_members(i, svc, &workloads, &mesh.mesh.trust_domain, cx, &kept)?;
            next.push((cluster.clone(), members));
        }
        for (cluster, members) in next {
            cluster.set_members(members);
        }
        self.version.store(Arc::new(cx.version.clone()));
        Ok(true)
    }

    /// The service an original destination means, if any.
    pub fn service_by_addr(&self, dst: SocketAddr) -> Option<&Arc<Service>> {
        self.by_addr.get(&dst)
    }

    /// The service an authority means: `host:port` as written, then the host alone
    /// (case-insensitive), then the `"*"` catch-all.
    pub fn service_by_authority(&self, authority: Option<&str>) -> Option<&Arc<Service>> {
        self.service_by_host(authority).or(self.catch_all.as_ref())
    }

    /// Like [`Snapshot::service_by_authority`] without the catch-all.
    pub fn service_by_host(&self, authority: Option<&str>) -> Option<&Arc<Service>> {
        if let Some(a) = authority {
            let lowered;
            let a = if a.bytes().any(|b| b.is_ascii_uppercase()) {
                lowered = a.to_ascii_lowercase();
                lowered.as_str()
            } else {
                a
            };
            if !self.by_host.is_empty() {
                if let Some(s) = self.by_host.get(a) {
                    return Some(s);
                }
                let host = strip_port(a);
                if host.len() != a.len()
                    && let Some(s) = self.by_host.get(host)
                {
                    return Some(s);
                }
            }
        }
        None
    }

    /// The catch-all service, for opaque connections no address claimed.
    pub fn catch_all(&self) -> Option<&Arc<Service>> {
        self.catch_all.as_ref()
    }
}

/// Host lookups hash short strings from the config, probed with client input: FNV-1a is far
/// cheaper than SipHash here, and a snapshot's table is rebuilt on every config change.
type FastHash = std::hash::BuildHasherDefault<Fnv1a>;

/// The mesh's workloads by `(name, namespace)`.
fn workload_index(mesh: &MeshFile) -> HashMap<(&str, &str), &model::Workload> {
    mesh.workloads
        .iter()
        .map(|w| ((w.name.as_str(), w.namespace.as_str()), w))
        .collect()
}

fn carry_from(prev: &Snapshot) -> Carry {
    let mut carry = Carry::default();
    let mut add = |c: &Cluster| {
        let members = c.members();
        for (e, pool) in members.endpoints.endpoints().iter().zip(&members.pools) {
            carry.endpoints.insert(
                (c.name.to_string(), c.namespace.to_string(), e.addr),
                (e.clone(), pool.clone()),
            );
        }
    };
    for s in &prev.services {
        add(&s.cluster);
        let key = (s.name.to_string(), s.namespace.to_string());
        carry.used.insert(key.clone(), s.used.clone());
        carry
            .breakers
            .insert(key.clone(), s.cluster.breaker.counters.clone());
        if let Some(b) = &s.cluster.budget {
            carry.budgets.insert(key, b.state.clone());
        }
    }
    if let Some(ib) = &prev.inbound {
        for (c, _) in ib.listener.iter().flat_map(|l| l.route.backends()) {
            add(c);
        }
        if let Some(l) = &ib.limiter {
            carry.bucket = Some((
                format!("{}/{}", ib.namespace, ib.workload),
                l.bucket.clone(),
            ));
        }
    }
    carry
}

/// A cluster of one address with no policies (the local app on the inbound side); `carried`
/// is that endpoint and its pool from the previous snapshot.
pub fn single_cluster(
    name: &str,
    addr: SocketAddr,
    settings: &Settings,
    resilience: &ResilienceMetrics,
    carried: Option<Paired>,
) -> Cluster {
    let (endpoint, pool) = carried.unwrap_or_else(|| {
        (
            Arc::new(Endpoint::new(addr, None, None)),
            new_pool(addr, None, APP_CONNECT_TIMEOUT, settings),
        )
    });
    let metrics = resilience.cluster(name);
    Cluster::new(
        name.into(),
        "".into(),
        Protocol::Auto,
        Members {
            endpoints: EndpointSet::new(name.into(), LoadBalancer::RoundRobin, vec![endpoint]),
            pools: vec![pool],
        },
        Breaker::new(name.into(), None, Arc::default(), metrics.clone()),
        None,
        None,
        metrics,
    )
}

/// The cluster of an app reached by redirected inbound connections: `app` on loopback, and
/// `pod` (the connection's original destination) from [`crate::inbound::pod_source`] when the
/// app refuses on loopback because it listens on the pod's address only.
pub fn redirected_app_cluster(
    app: SocketAddr,
    pod: Option<SocketAddr>,
    settings: &Settings,
    resilience: &ResilienceMetrics,
) -> Cluster {
    let mut pool = EndpointPool::new(
        app,
        None,
        APP_CONNECT_TIMEOUT,
        settings.h1_idle_timeout,
        settings.h1_max_idle,
    );
    if let Some(pod) = pod {
        pool = pool.with_alternate(pod, crate::inbound::pod_source(pod));
    }
    let carried = (Arc::new(Endpoint::new(app, None, None)), Arc::new(pool));
    single_cluster("inbound", app, settings, resilience, Some(carried))
}

fn new_pool(
    addr: SocketAddr,
    mesh: Option<MeshPeer>,
    connect_timeout: Duration,
    settings: &Settings,
) -> Arc<EndpointPool> {
    Arc::new(EndpointPool::new(
        addr,
        mesh,
        connect_timeout,
        settings.h1_idle_timeout,
        settings.h1_max_idle,
    ))
}

fn compile_cluster(
    i: usize,
    svc: &model::Service,
    workloads: &HashMap<(&str, &str), &model::Workload>,
    trust_domain: &str,
    cx: &CompileContext<'_>,
    carry: &Carry,
) -> Result<Cluster, SnapshotError> {
    let kept = |addr: SocketAddr| {
        carry
            .endpoints
            .get(&(svc.name.clone(), svc.namespace.clone(), addr))
            .cloned()
    };
    let members = compile_members(i, svc, workloads, trust_domain, cx, &kept)?;
    let key = (svc.name.clone(), svc.namespace.clone());
    let name: Arc<str> = svc.name.as_str().into();
    let metrics = cx.resilience.cluster(&svc.name);
    let counters = carry.breakers.get(&key).cloned().unwrap_or_default();
    let breaker = Breaker::new(
        name.clone(),
        svc.circuit_breaker.as_ref().map(BreakerLimits::compile),
        counters,
        metrics.clone(),
    );
    let budget = svc
        .retry_budget
        .as_ref()
        .map(|b| Budget::new(b, carry.budgets.get(&key).cloned().unwrap_or_default()));
    let outlier = svc.outlier_detection.as_ref().map(OutlierPolicy::compile);
    let cluster = Cluster::new(
        name,
        svc.namespace.as_str().into(),
        svc.protocol,
        members,
        breaker,
        budget,
        outlier,
        metrics,
    );
    cluster
        .metrics
        .set_ejected(cluster.members().endpoints.ejected());
    Ok(cluster)
}

/// A service's endpoints, each with its pool. `kept` lends an endpoint of the previous
/// config at an address (with its load estimate, ejection and connections); it is taken
/// only if its workload, identity and connect timeout are still the same.
fn compile_members(
    i: usize,
    svc: &model::Service,
    workloads: &HashMap<(&str, &str), &model::Workload>,
    trust_domain: &str,
    cx: &CompileContext<'_>,
    kept: &dyn Fn(SocketAddr) -> Option<Paired>,
) -> Result<Members, SnapshotError> {
    let connect_timeout = svc.connect_timeout.get();
    let mut endpoints = Vec::with_capacity(svc.endpoints.len());
    let mut pools = Vec::with_capacity(svc.endpoints.len());
    for (j, ep) in svc.endpoints.iter().enumerate() {
        // An address wins: a received workload endpoint whose Workload the proxy does not hold
        // comes with the address and identity it resolved to.
        let (addr, workload, identity) = match (&ep.workload, ep.address) {
            (w, Some(a)) => {
                // A replica of a workload proves the workload's identity unless it names one
                // (received endpoints come with theirs resolved).
                let identity = ep.identity.clone().or_else(|| {
                    let w = w.as_deref()?;
                    let ns = ep.namespace.as_deref().unwrap_or(&svc.namespace);
                    Some(workloads.get(&(w, ns))?.spiffe_id(trust_domain))
                });
                (
                    a,
                    w.as_deref().map(Arc::<str>::from),
                    identity.as_deref().map(Arc::<str>::from),
                )
            }
            (Some(w), None) => {
                let ns = ep.namespace.as_deref().unwrap_or(&svc.namespace);
                let found = workloads
                    .get(&(w.as_str(), ns))
                    .and_then(|wl| Some((wl, wl.inbound.as_ref()?.listen)));
                let Some((wl, addr)) = found else {
                    return Err(SnapshotError::EndpointWorkload {
                        path: format!("services[{i}].endpoints[{j}].workload"),
                        name: w.clone(),
                        namespace: ns.to_owned(),
                    });
                };
                (
                    addr,
                    Some(Arc::<str>::from(w.as_str())),
                    Some(Arc::<str>::from(wl.spiffe_id(trust_domain))),
                )
            }
            (None, None) => {
                return Err(SnapshotError::EmptyEndpoint {
                    path: format!("services[{i}].endpoints[{j}]"),
                });
            }
        };
        let kept = kept(addr).filter(|(e, pool)| {
            pool.connect_timeout() == connect_timeout
                && e.workload == workload
                && e.identity == identity
        });
        let (endpoint, pool) = kept.unwrap_or_else(|| {
            let mesh = cx
                .tls
                .zip(identity.clone())
                .map(|(tls, identity)| MeshPeer {
                    tls: tls.clone(),
                    identity,
                });
            (
                Arc::new(Endpoint::new(addr, workload, identity)),
                new_pool(addr, mesh, connect_timeout, cx.settings),
            )
        });
        endpoints.push(endpoint);
        pools.push(pool);
    }
    if svc.outlier_detection.is_none() {
        // Nothing would ever re-admit an endpoint ejected under a policy now gone.
        for e in &endpoints {
            e.health.reset();
        }
    }
    Ok(Members {
        endpoints: EndpointSet::new(svc.name.as_str().into(), svc.load_balancer, endpoints),
        pools,
    })
}

impl Service {
    /// Picks the route for a request.
    pub fn route(&self, req: &http::request::Parts) -> &Route {
        self.routes.select(req)
    }

    /// Marks the service used (kept subscribed); a load first, so the hot path rarely writes.
    pub fn touch(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// What compiling borrows, owned by the test.
    struct Env {
        settings: Settings,
        metrics: Metrics,
        resilience: ResilienceMetrics,
        authz: AuthzMetrics,
    }

    impl Env {
        fn new() -> Env {
            Env {
                settings: Settings {
                    drain_timeout: Duration::from_secs(5),
                    detect_timeout: Duration::from_secs(10),
                    opaque_ports: vec![],
                    max_header_bytes: 65536,
                    h1_idle_timeout: Duration::from_secs(3),
                    h1_max_idle: 64,
                },
                metrics: Metrics::new(),
                resilience: ResilienceMetrics::default(),
                authz: AuthzMetrics::default(),
            }
        }

        fn cx(&self, version: &str) -> CompileContext<'_> {
            CompileContext {
                settings: &self.settings,
                metrics: &self.metrics,
                resilience: &self.resilience,
                tls: None,
                authz: &self.authz,
                policies_selected: false,
                workload: None,
                version: version.to_owned(),
            }
        }
    }

    fn mesh(reviews_endpoints: &str) -> MeshFile {
        skiff_api::load(&format!(
            "services:
  - name: web
    endpoints: [ {{ address: 127.0.0.1:9001 }} ]
    routes:
      - name: to-reviews
        backendRefs: [ {{ service: reviews }} ]
  - name: reviews
    outlierDetection: {{ consecutiveErrors: 5 }}
    endpoints: [ {reviews_endpoints} ]
"
        ))
        .expect("the test mesh is valid")
    }

    #[test]
    fn an_endpoints_update_swaps_one_cluster_in_place_and_keeps_endpoint_state() {
        let env = Env::new();
        let cx = |version: &str| env.cx(version);
        let snap = Snapshot::compile(
            &mesh("{ address: 127.0.0.1:9002 }, { address: 127.0.0.1:9003 }"),
            &cx("1"),
            None,
        )
        .unwrap();
        let reviews = snap.services[1].cluster.clone();
        let web = snap.services[0].cluster.clone();
        let before = reviews.members();
        let kept = before.endpoints.endpoints()[1].clone();
        let kept_pool = before.pools[1].clone();
        kept.health.consecutive.store(3, Ordering::Relaxed);

        let next = mesh("{ address: 127.0.0.1:9003 }, { address: 127.0.0.1:9004 }");
        let changed = ["default/reviews".to_owned()];
        assert!(snap.update_endpoints(&next, &changed, &cx("2")).unwrap());
        assert_eq!(*snap.version(), "2");
        // The same cluster (the route of `web` that sends to it sees the change), new members.
        assert!(Arc::ptr_eq(&snap.services[1].cluster, &reviews));
        let backend = snap.services[0].routes.routes()[0]
            .backends()
            .next()
            .unwrap()
            .0;
        assert!(Arc::ptr_eq(backend, &reviews));
        let after = reviews.members();
        let addrs: Vec<String> = after
            .endpoints
            .endpoints()
            .iter()
            .map(|e| e.addr.to_string())
            .collect();
        assert_eq!(addrs, ["127.0.0.1:9003", "127.0.0.1:9004"]);
        assert!(
            Arc::ptr_eq(&after.endpoints.endpoints()[0], &kept),
            "an endpoint that stays keeps its state"
        );
        assert_eq!(
            after.endpoints.endpoints()[0]
                .health
                .consecutive
                .load(Ordering::Relaxed),
            3
        );
        assert!(
            Arc::ptr_eq(&after.pools[0], &kept_pool),
            "and its connections"
        );
        assert_eq!(
            before.endpoints.endpoints().len(),
            2,
            "requests under way keep theirs"
        );
        assert!(
            Arc::ptr_eq(&snap.services[0].cluster, &web),
            "others untouched"
        );

        // A service this snapshot does not hold: not possible, nothing changed.
        let unknown = ["default/ratings".to_owned()];
        assert!(!snap.update_endpoints(&next, &unknown, &cx("3")).unwrap());
        assert_eq!(*snap.version(), "2");
    }

    #[test]
    fn a_workload_replica_at_an_address_proves_the_workloads_identity() {
        let env = Env::new();
        let cx = env.cx("1");
        let mesh = skiff_api::load(
            "services:
  - name: reviews
    endpoints:
      - { workload: reviews-v1, address: 10.0.0.7:9080 }
      - { workload: reviews-v1, address: 10.0.0.8:9080, identity: spiffe://cluster.local/ns/default/sa/other }
workloads:
  - name: reviews-v1
    serviceAccount: reviews
",
        )
        .expect("valid");
        let snap = Snapshot::compile(&mesh, &cx, None).unwrap();
        let members = snap.services[0].cluster.members();
        let ids: Vec<Option<&str>> = members
            .endpoints
            .endpoints()
            .iter()
            .map(|e| e.identity.as_deref())
            .collect();
        assert_eq!(
            ids,
            [
                Some("spiffe://cluster.local/ns/default/sa/reviews"),
                Some("spiffe://cluster.local/ns/default/sa/other")
            ]
        );
        assert_eq!(
            members.endpoints.endpoints()[0].workload.as_deref(),
            Some("reviews-v1")
        );
    }
}
