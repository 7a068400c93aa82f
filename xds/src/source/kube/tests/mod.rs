//! The Kubernetes source's core on JSON fixtures shaped as the API server sends them:
//! services, endpoints and identities built, readiness, naming, the ConfigMap merge and
//! refusals, deletions, and which services a change touches. This file holds the shared
//! fixtures; the tests are in one file per topic.

mod changes;
mod config_map;
mod deletions;
mod feed;
mod services;

use serde_json::{Value, json};
use skiff_api::model::{Endpoint, MeshFile};

use super::{ClusterSettings, ClusterState, Object, ObjectKind};

// === fixtures ===

fn object(kind: ObjectKind, v: Value) -> Object {
    Object::from_json(kind, v.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("fixture does not decode: {e}"))
}

fn service(ns: &str, name: &str, ips: &[&str], ports: Value) -> Object {
    object(
        ObjectKind::Service,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": name, "namespace": ns, "uid": format!("svc-{name}"),
                          "resourceVersion": "1", "creationTimestamp": "2024-01-01T00:00:00Z" },
            "spec": { "type": "ClusterIP", "clusterIP": ips.first(), "clusterIPs": ips,
                      "ipFamilyPolicy": "SingleStack", "ports": ports,
                      "selector": { "app": name }, "sessionAffinity": "None" },
            "status": { "loadBalancer": {} }
        }),
    )
}

/// One endpoint of a slice: `(address, pod name, ready, serving, terminating)`.
type Ep<'a> = (&'a str, &'a str, Option<bool>, Option<bool>, Option<bool>);

fn slice(ns: &str, name: &str, svc: &str, family: &str, eps: &[Ep<'_>], ports: Value) -> Object {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(addr, pod, ready, serving, terminating)| {
            json!({
                "addresses": [addr],
                "conditions": { "ready": ready, "serving": serving, "terminating": terminating },
                "nodeName": "node-1",
                "targetRef": { "kind": "Pod", "name": pod, "namespace": ns, "uid": format!("pod-{pod}") }
            })
        })
        .collect();
    object(
        ObjectKind::EndpointSlice,
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": { "name": name, "namespace": ns,
                          "labels": { "kubernetes.io/service-name": svc,
                                      "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io" } },
            "addressType": family,
            "endpoints": endpoints,
            "ports": ports
        }),
    )
}

fn ready(addr: &str, pod: &str) -> Ep<'static> {
    let (addr, pod) = (leak(addr), leak(pod));
    (addr, pod, Some(true), Some(true), Some(false))
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn pod_json(ns: &str, name: &str, ip: &str, sa: &str, meshed: bool, labels: Value) -> Value {
    let init: Vec<Value> = if meshed {
        vec![
            json!({ "name": "skiff-init", "image": "skiff" }),
            json!({ "name": "skiff-proxy", "image": "skiff", "restartPolicy": "Always",
                    "env": [ { "name": "SKIFF_POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } } ] }),
        ]
    } else {
        Vec::new()
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": ns, "uid": format!("pod-{name}"), "labels": labels },
        "spec": { "serviceAccountName": sa, "initContainers": init,
                  "containers": [ { "name": "app", "image": "app" } ] },
        "status": { "phase": "Running", "podIP": ip, "podIPs": [ { "ip": ip } ] }
    })
}

fn pod(name: &str, ip: &str, sa: &str, meshed: bool, app: &str) -> Object {
    object(
        ObjectKind::Pod,
        pod_json(
            "default",
            name,
            ip,
            sa,
            meshed,
            json!({ "app": app, "pod-template-hash": "abc" }),
        ),
    )
}

fn config_map(mesh_yaml: &str) -> Object {
    object(
        ObjectKind::ConfigMap,
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "skiff-mesh", "namespace": "skiff-system" },
            "data": { "mesh.yaml": mesh_yaml }
        }),
    )
}

fn state(objects: impl IntoIterator<Item = Object>) -> ClusterState {
    let mut s = ClusterState::new(ClusterSettings::default());
    for o in objects {
        s.apply(o).unwrap_or_else(|e| panic!("refused: {e}"));
    }
    s
}

fn built(s: &ClusterState) -> MeshFile {
    s.mesh().unwrap_or_else(|e| panic!("mesh refused: {e}"))
}

fn svc<'m>(mesh: &'m MeshFile, name: &str) -> &'m skiff_api::model::Service {
    mesh.services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service {name} in {:?}", names(mesh)))
}

fn names(mesh: &MeshFile) -> Vec<&str> {
    mesh.services.iter().map(|s| s.name.as_str()).collect()
}

fn addrs(eps: &[Endpoint]) -> Vec<String> {
    eps.iter()
        .map(|e| e.address.map(|a| a.to_string()).unwrap_or_default())
        .collect()
}

/// What `skiff-xds check` runs, on the built mesh written out as YAML.
fn passes_check(mesh: &MeshFile) {
    let yaml = serde_saphyr::to_string(mesh).expect("serializable");
    let reloaded = skiff_api::load(&yaml).unwrap_or_else(|e| panic!("check refuses: {e}\n{yaml}"));
    assert_eq!(&reloaded, mesh, "the YAML round trip keeps the mesh");
}

fn http_port() -> Value {
    json!([ { "name": "http", "port": 9080, "targetPort": 9080, "protocol": "TCP", "appProtocol": "http" } ])
}

fn slice_port(name: &str, port: u16) -> Value {
    json!([ { "name": name, "port": port, "protocol": "TCP" } ])
}

/// reviews: one Service, one slice with a meshed pod, an unmeshed one, one not ready and one
/// terminating.
fn reviews() -> Vec<Object> {
    vec![
        service("default", "reviews", &["10.96.0.10"], http_port()),
        slice(
            "default",
            "reviews-abc12",
            "reviews",
            "IPv4",
            &[
                ready("10.1.0.1", "reviews-1"),
                ready("10.1.0.2", "legacy-1"),
                (
                    "10.1.0.3",
                    "reviews-3",
                    Some(false),
                    Some(false),
                    Some(false),
                ),
                ("10.1.0.4", "reviews-4", Some(false), Some(true), Some(true)),
            ],
            slice_port("http", 9080),
        ),
        pod("reviews-1", "10.1.0.1", "reviews", true, "reviews"),
        pod("legacy-1", "10.1.0.2", "legacy", false, "legacy"),
        pod("reviews-3", "10.1.0.3", "reviews", true, "reviews"),
        pod("reviews-4", "10.1.0.4", "reviews", true, "reviews"),
    ]
}

/// ratings: one slice with one ready endpoint, pod `ratings-1`.
fn ratings_slice() -> Object {
    slice(
        "default",
        "ratings-x1",
        "ratings",
        "IPv4",
        &[ready("10.1.0.9", "ratings-1")],
        slice_port("http", 9080),
    )
}
