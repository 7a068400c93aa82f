//! The mesh built from the cluster state and the ConfigMap: [`ClusterState::build`] (whose
//! doc holds the naming and merge rules), the services of one Service for an endpoint-only
//! update, and the free helpers only the build uses.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::{IpAddr, SocketAddr},
};

use skiff_api::{
    Dur,
    model::{self, LoadBalancer, MeshFile, Protocol},
};

use super::{Built, ClusterState, Membership, Note, is_dns_label, membership, protocol_of};
use crate::source::kube::{
    error::KubeError,
    objects::{Conditions, ObjectKey, ObjectReference, Pod, Service, ServicePort},
};

/// Pod labels that differ between revisions of one workload; never copied to the workload.
const REVISION_LABELS: [&str; 5] = [
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
];

/// One Service port as a mesh service.
pub(super) struct PortService<'a> {
    pub(super) name: String,
    port: &'a ServicePort,
    first: bool,
}

impl ClusterState {
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
    pub(super) fn port_services<'a>(
        &self,
        svc: &'a Service,
        notes: &mut Vec<Note>,
    ) -> Vec<PortService<'a>> {
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

/// Ready as Kubernetes defines it: `ready` (unset: `serving`, unset: true), never while
/// terminating.
fn is_ready(c: &Conditions) -> bool {
    !c.terminating.unwrap_or(false) && c.ready.unwrap_or_else(|| c.serving.unwrap_or(true))
}

fn is_tcp(protocol: Option<&str>) -> bool {
    matches!(protocol, None | Some("TCP"))
}
