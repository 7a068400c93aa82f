//! What one change can alter in the built mesh: [`Impact`], and [`ClusterState::impact`],
//! which judges an event before it is applied from the state's indexes (slices by service
//! and by pod) rather than by walking the cluster.

use std::collections::{BTreeMap, BTreeSet};

use super::{ClusterState, Event, Membership, Object, membership, service_of};
use crate::source::kube::objects::{ObjectKey, ObjectKind, Pod};

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

impl ClusterState {
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
}
