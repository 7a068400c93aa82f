//! The fields the Kubernetes source reads of Service, EndpointSlice, Pod and ConfigMap, as
//! serde types decoding the API server's JSON (unknown fields ignored, `null` read as absent).
//! Shapes only: what the fields mean for the mesh is `cluster`'s.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Deserializer};

use super::error::KubeError;
use crate::inject::{PROXY_CONTAINER, controller_workload};

/// Label of an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The env variable of the `skiff-proxy` container naming the workload its sidecar announces.
pub const WORKLOAD_ENV: &str = "SKIFF_WORKLOAD";

/// The kinds of object the source reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Service,
    EndpointSlice,
    Pod,
    ConfigMap,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Service => "Service",
            ObjectKind::EndpointSlice => "EndpointSlice",
            ObjectKind::Pod => "Pod",
            ObjectKind::ConfigMap => "ConfigMap",
        })
    }
}

/// `namespace/name`: an object of one kind, or a mesh service or workload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `null` or absent: the type's default.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub namespace: String,
    #[serde(default, deserialize_with = "nullable")]
    pub uid: String,
    #[serde(default)]
    pub generate_name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub owner_references: Vec<OwnerReference>,
}

impl ObjectMeta {
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(&self.namespace, &self.name)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    #[serde(default, deserialize_with = "nullable")]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub controller: bool,
}

// === Service ===

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "nullable")]
    pub spec: ServiceSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `ClusterIP` (default), `NodePort`, `LoadBalancer` or `ExternalName`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// `None` for a headless Service.
    #[serde(rename = "clusterIP", default)]
    pub cluster_ip: Option<String>,
    /// Every family's cluster IP (dual stack); the first is `clusterIP`.
    #[serde(rename = "clusterIPs", default, deserialize_with = "nullable")]
    pub cluster_ips: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<ServicePort>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Required (a DNS label) when the Service has several ports.
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    #[serde(default)]
    pub target_port: Option<IntOrString>,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub app_protocol: Option<String>,
}

/// A port given by number or by a container port's name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(u16),
    String(String),
}

// === EndpointSlice ===

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: ObjectMeta,
    /// `IPv4`, `IPv6` or `FQDN`.
    #[serde(default, deserialize_with = "nullable")]
    pub address_type: String,
    #[serde(default, deserialize_with = "nullable")]
    pub endpoints: Vec<SliceEndpoint>,
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<SlicePort>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceEndpoint {
    /// Fungible addresses of one endpoint; consumers may use the first only.
    #[serde(default, deserialize_with = "nullable")]
    pub addresses: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub conditions: Conditions,
    #[serde(default)]
    pub target_ref: Option<ObjectReference>,
}

/// Absent conditions are unknown; Kubernetes reads an unknown `ready` as ready.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conditions {
    #[serde(default)]
    pub ready: Option<bool>,
    #[serde(default)]
    pub serving: Option<bool>,
    #[serde(default)]
    pub terminating: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default, deserialize_with = "nullable")]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlicePort {
    /// The Service port's name (empty or absent for an unnamed one).
    #[serde(default)]
    pub name: Option<String>,
    /// The port on the endpoint (the Service's targetPort, resolved); absent: unknown.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub app_protocol: Option<String>,
}

// === Pod ===

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "nullable")]
    pub spec: PodSpec,
    #[serde(default, deserialize_with = "nullable")]
    pub status: PodStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// Default: `default`.
    #[serde(default)]
    pub service_account_name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub host_network: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub init_containers: Vec<Container>,
    #[serde(default, deserialize_with = "nullable")]
    pub containers: Vec<Container>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub env: Vec<EnvVar>,
}

/// A literal env variable (`valueFrom` ones have no `value`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(rename = "podIP", default)]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs", default, deserialize_with = "nullable")]
    pub pod_ips: Vec<PodIp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct PodIp {
    #[serde(default, deserialize_with = "nullable")]
    pub ip: String,
}

impl Pod {
    /// The `skiff-proxy` sidecar container (a native sidecar, so an init container, or a
    /// regular one from an older injection).
    pub fn proxy_container(&self) -> Option<&Container> {
        self.spec
            .init_containers
            .iter()
            .chain(&self.spec.containers)
            .find(|c| c.name == PROXY_CONTAINER)
    }

    /// Whether the pod is in the mesh: it carries the `skiff-proxy` sidecar and does not use
    /// the node's network (injection skips such pods; a redirect there would capture the node).
    pub fn is_meshed(&self) -> bool {
        !self.spec.host_network && self.proxy_container().is_some()
    }

    /// The service account; `default` when unset.
    pub fn service_account(&self) -> &str {
        self.spec
            .service_account_name
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
    }

    /// The workload name its sidecar announces: the `SKIFF_WORKLOAD` the injector wrote into
    /// `skiff-proxy`, else the injector's rule (labels `app.kubernetes.io/name`, `app`, the
    /// controlling workload, the pod's name, its `generateName`).
    pub fn workload_name(&self) -> Option<String> {
        let announced = self
            .proxy_container()
            .and_then(|c| c.env.iter().find(|e| e.name == WORKLOAD_ENV))
            .and_then(|e| e.value.as_deref())
            .map(str::trim)
            .filter(|v| !v.is_empty());
        if let Some(name) = announced {
            return Some(name.to_owned());
        }
        let m = &self.metadata;
        let owner = m
            .owner_references
            .iter()
            .find(|r| r.controller && !r.name.is_empty())
            .map(|r| {
                controller_workload(
                    Some(r.kind.as_str()),
                    &r.name,
                    m.labels.get("pod-template-hash").map(String::as_str),
                )
            });
        // Only the labels the rule reads.
        let labels: crate::inject::Map = ["app.kubernetes.io/name", "app"]
            .into_iter()
            .filter_map(|k| Some((k, crate::inject::Value::str(m.labels.get(k)?))))
            .collect();
        crate::inject::workload_name(
            Some(&labels),
            owner.as_deref(),
            Some(m.name.as_str()).filter(|n| !n.is_empty()),
            m.generate_name.as_deref(),
        )
    }
}

// === ConfigMap ===

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMap {
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "nullable")]
    pub data: BTreeMap<String, String>,
}

/// Decodes one object of `kind` from the API server's JSON.
pub(super) fn decode<T: for<'de> Deserialize<'de>>(
    kind: ObjectKind,
    json: &[u8],
) -> Result<T, KubeError> {
    serde_json::from_slice(json).map_err(|source| KubeError::Decode { kind, source })
}

pub(super) fn decode_value<T: for<'de> Deserialize<'de>>(
    kind: ObjectKind,
    json: serde_json::Value,
) -> Result<T, KubeError> {
    serde_json::from_value(json).map_err(|source| KubeError::Decode { kind, source })
}
