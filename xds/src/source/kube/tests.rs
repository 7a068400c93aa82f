//! The Kubernetes source's core on JSON fixtures shaped as the API server sends them:
//! services, endpoints and identities built, readiness, naming, the ConfigMap merge and
//! refusals, deletions, and which services a change touches.

use serde_json::{Value, json};
use skiff_api::model::{Endpoint, MeshFile, Protocol};

use super::{ClusterSettings, ClusterState, Event, KubeError, Note, Object, ObjectKey, ObjectKind};

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

// === services, endpoints, identities ===

#[test]
fn a_service_its_ready_endpoints_and_their_identities() {
    let s = state(reviews());
    let mesh = built(&s);
    passes_check(&mesh);
    let r = svc(&mesh, "reviews");
    assert_eq!(r.namespace, "default");
    assert_eq!(
        r.hosts.as_deref(),
        Some(
            &[
                "reviews".to_owned(),
                "reviews.default".to_owned(),
                "reviews.default.svc".to_owned(),
                "reviews.default.svc.cluster.local".to_owned(),
            ][..]
        )
    );
    assert_eq!(r.addresses, ["10.96.0.10:9080".parse().unwrap()]);
    assert_eq!(r.protocol, Protocol::Http1);
    // Not ready and terminating endpoints are left out.
    assert_eq!(addrs(&r.endpoints), ["10.1.0.1:9080", "10.1.0.2:9080"]);
    let meshed = &r.endpoints[0];
    assert_eq!(meshed.workload.as_deref(), Some("reviews"));
    assert_eq!(meshed.namespace, None);
    assert_eq!(
        meshed.identity.as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/reviews")
    );
    // The unmeshed pod: a plain address, no identity (plaintext).
    let plain = &r.endpoints[1];
    assert_eq!(
        (plain.workload.as_ref(), plain.identity.as_ref()),
        (None, None)
    );

    // One workload for the meshed pods (not-ready ones included: their sidecars connect too).
    assert_eq!(mesh.workloads.len(), 1);
    let w = &mesh.workloads[0];
    assert_eq!(
        (w.name.as_str(), w.namespace.as_str()),
        ("reviews", "default")
    );
    assert_eq!(w.service_account, "reviews");
    assert_eq!(w.labels.get("app").map(String::as_str), Some("reviews"));
    assert!(!w.labels.contains_key("pod-template-hash"));
    assert_eq!(w.inbound, None);

    // Compiled, the Endpoints resource carries the pod's address, workload and identity.
    let resources = skiff_api::resource::compile(&mesh);
    let eps = &resources.endpoints["default/reviews"].message.endpoints;
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0].workload, "reviews");
    assert_eq!(eps[0].address, "10.1.0.1:9080");
    assert_eq!(
        eps[0].identity,
        "spiffe://cluster.local/ns/default/sa/reviews"
    );
    assert_eq!(
        (eps[1].workload.as_str(), eps[1].identity.as_str()),
        ("", "")
    );
    assert!(resources.workloads.contains_key("default/reviews"));
}

#[test]
fn readiness_follows_kubernetes() {
    let case = |r, s, t| {
        let st = state([
            service("default", "a", &["10.96.0.1"], http_port()),
            slice(
                "default",
                "a-1",
                "a",
                "IPv4",
                &[("10.1.0.1", "p", r, s, t)],
                slice_port("http", 80),
            ),
            pod("p", "10.1.0.1", "a", false, "a"),
        ]);
        !built(&st).services[0].endpoints.is_empty()
    };
    assert!(case(None, None, None), "unknown conditions read as ready");
    assert!(case(Some(true), None, None));
    assert!(
        !case(Some(false), Some(true), None),
        "serving but not ready"
    );
    assert!(!case(None, Some(false), None), "no ready: serving decides");
    assert!(case(None, Some(true), None));
    assert!(
        !case(None, Some(true), Some(true)),
        "terminating is never ready"
    );
    assert!(!case(Some(true), Some(true), Some(true)));
}

#[test]
fn an_endpoint_waits_for_its_pod_and_the_pod_brings_it_with_its_identity() {
    let mut s = state([service("default", "ratings", &["10.96.0.11"], http_port())]);
    s.apply(slice(
        "default",
        "ratings-x1",
        "ratings",
        "IPv4",
        &[ready("10.1.0.9", "ratings-1")],
        slice_port("http", 9080),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        svc(&built(&s), "ratings").endpoints.is_empty(),
        "the slice came before its pod: nothing announced yet"
    );
    let pod = pod("ratings-1", "10.1.0.9", "ratings", true, "ratings");
    let impact = s.impact(&Event::Applied(pod.clone()));
    assert!(
        impact
            .endpoints
            .contains(&ObjectKey::new("default", "ratings")),
        "{impact:?}"
    );
    s.apply(pod).unwrap_or_else(|e| panic!("{e}"));
    let mesh = built(&s);
    let r = svc(&mesh, "ratings");
    assert_eq!(addrs(&r.endpoints), ["10.1.0.9:9080"]);
    assert!(
        r.endpoints[0]
            .identity
            .as_deref()
            .is_some_and(|id| id.ends_with("/ns/default/sa/ratings")),
        "{:?}",
        r.endpoints[0]
    );
}

#[test]
fn app_protocol_picks_the_mesh_protocol() {
    use super::cluster::protocol_of;
    for (app, want) in [
        (Some("http"), Protocol::Http1),
        (Some("kubernetes.io/h2c"), Protocol::Http2),
        (Some("h2c"), Protocol::Http2),
        (Some("grpc"), Protocol::Grpc),
        (Some("tcp"), Protocol::Tcp),
        (Some("kubernetes.io/ws"), Protocol::Auto),
        (Some("https"), Protocol::Auto),
        (None, Protocol::Auto),
    ] {
        assert_eq!(protocol_of(app), want, "{app:?}");
    }
    let s = state([service(
        "default",
        "g",
        &["10.96.0.2"],
        json!([ { "name": "grpc", "port": 9000, "appProtocol": "grpc" } ]),
    )]);
    assert_eq!(built(&s).services[0].protocol, Protocol::Grpc);
}

#[test]
fn multi_port_and_dual_stack_services() {
    let ports = json!([
        { "name": "http", "port": 80, "targetPort": "web", "appProtocol": "http" },
        { "name": "metrics", "port": 9090, "targetPort": 9091 },
        { "name": "dns", "port": 53, "protocol": "UDP" },
        { "name": "admin", "port": 8081, "targetPort": 8081 }
    ]);
    let slice_ports = json!([
        { "name": "http", "port": 8080, "protocol": "TCP" },
        { "name": "metrics", "port": 9091, "protocol": "TCP" },
        { "name": "admin", "port": 8081, "protocol": "TCP" }
    ]);
    let s = state([
        service("default", "web", &["10.96.0.20", "fd00::20"], ports),
        // A Service already named as web's admin port would be: that port becomes web-8081.
        service("default", "web-admin", &["10.96.0.21"], http_port()),
        slice(
            "default",
            "web-v4",
            "web",
            "IPv4",
            &[ready("10.1.0.5", "web-1")],
            slice_ports.clone(),
        ),
        slice(
            "default",
            "web-v6",
            "web",
            "IPv6",
            &[ready("fd00:1::5", "web-1")],
            slice_ports,
        ),
        pod("web-1", "10.1.0.5", "web", true, "web"),
    ]);
    let b = s.build().unwrap_or_else(|e| panic!("{e}"));
    let mesh = &b.mesh;
    passes_check(mesh);
    assert_eq!(
        names(mesh),
        ["web", "web-8081", "web-admin", "web-metrics"],
        "sorted by name"
    );

    let web = svc(mesh, "web");
    assert_eq!(web.hosts.as_ref().map(|h| h[0].as_str()), Some("web"));
    assert_eq!(
        web.addresses,
        [
            "10.96.0.20:80".parse().unwrap(),
            "[fd00::20]:80".parse().unwrap()
        ]
    );
    assert_eq!(web.protocol, Protocol::Http1);
    assert_eq!(addrs(&web.endpoints), ["10.1.0.5:8080", "[fd00:1::5]:8080"]);

    let metrics = svc(mesh, "web-metrics");
    assert_eq!(
        metrics.hosts.as_deref(),
        Some(
            &[
                "web:9090".to_owned(),
                "web.default:9090".to_owned(),
                "web.default.svc:9090".to_owned(),
                "web.default.svc.cluster.local:9090".to_owned(),
            ][..]
        )
    );
    assert_eq!(metrics.protocol, Protocol::Auto);
    assert_eq!(
        addrs(&metrics.endpoints),
        ["10.1.0.5:9091", "[fd00:1::5]:9091"]
    );
    assert_eq!(
        addrs(&svc(mesh, "web-8081").endpoints),
        ["10.1.0.5:8081", "[fd00:1::5]:8081"]
    );
    assert!(b.notes.contains(&Note::Port {
        service: ObjectKey::new("default", "web"),
        port: 53,
        reason: "not TCP",
    }));
}

#[test]
fn headless_and_external_name_services_are_skipped() {
    let headless = object(
        ObjectKind::Service,
        json!({ "metadata": { "name": "db", "namespace": "default" },
                "spec": { "clusterIP": "None", "clusterIPs": ["None"], "ports": [ { "port": 5432 } ] } }),
    );
    let external = object(
        ObjectKind::Service,
        json!({ "metadata": { "name": "ext", "namespace": "default" },
                "spec": { "type": "ExternalName", "externalName": "example.com" } }),
    );
    let s = state([
        headless,
        external,
        slice(
            "default",
            "db-1",
            "db",
            "IPv4",
            &[ready("10.1.0.9", "db-0")],
            slice_port("", 5432),
        ),
    ]);
    let b = s.build().unwrap_or_else(|e| panic!("{e}"));
    assert!(b.mesh.services.is_empty(), "{:?}", names(&b.mesh));
    assert_eq!(
        b.notes,
        [
            Note::Headless {
                service: ObjectKey::new("default", "db")
            },
            Note::ExternalName {
                service: ObjectKey::new("default", "ext")
            },
        ]
    );
}

#[test]
fn workload_names_follow_the_injector() {
    // The name the injector wrote into the sidecar wins.
    let mut announced = pod_json(
        "default",
        "p1",
        "10.1.0.1",
        "sa",
        true,
        json!({ "app": "x" }),
    );
    announced["spec"]["initContainers"][1]["env"] =
        json!([ { "name": "SKIFF_WORKLOAD", "value": "announced" } ]);
    // Else: a Deployment's ReplicaSet names the Deployment.
    let mut owned = pod_json(
        "default",
        "api-5d9c8b7f4-xyz",
        "10.1.0.2",
        "sa",
        true,
        json!({ "pod-template-hash": "5d9c8b7f4" }),
    );
    owned["metadata"]["ownerReferences"] = json!([ { "kind": "ReplicaSet", "name": "api-5d9c8b7f4", "controller": true, "uid": "u" } ]);
    // A name the mesh cannot hold: the pod is noted, its endpoint plain.
    let bad = pod_json(
        "default",
        "p3",
        "10.1.0.3",
        "sa",
        true,
        json!({ "app": "My_App" }),
    );
    let s = state([
        object(ObjectKind::Pod, announced),
        object(ObjectKind::Pod, owned),
        object(ObjectKind::Pod, bad),
        service("default", "s", &["10.96.0.3"], http_port()),
        slice(
            "default",
            "s-1",
            "s",
            "IPv4",
            &[ready("10.1.0.1", "p1"), ready("10.1.0.3", "p3")],
            slice_port("http", 80),
        ),
    ]);
    let b = s.build().unwrap_or_else(|e| panic!("{e}"));
    passes_check(&b.mesh);
    let workloads: Vec<&str> = b.mesh.workloads.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(workloads, ["announced", "api"]);
    assert_eq!(
        b.notes,
        [Note::Pod {
            pod: ObjectKey::new("default", "p3"),
            reason: "its workload name is not a DNS label",
        }]
    );
    let eps = &b.mesh.services[0].endpoints;
    assert_eq!(eps[0].workload.as_deref(), Some("announced"));
    assert_eq!(
        (eps[1].workload.as_ref(), eps[1].identity.as_ref()),
        (None, None)
    );
}

#[test]
fn a_workload_takes_the_service_account_most_pods_use() {
    let s = state([
        pod("a", "10.1.0.1", "two", true, "w"),
        pod("b", "10.1.0.2", "one", true, "w"),
        pod("c", "10.1.0.3", "two", true, "w"),
        pod("d", "10.1.0.4", "x", true, "v"),
        pod("e", "10.1.0.5", "y", true, "v"),
    ]);
    let mesh = built(&s);
    let sa = |name: &str| {
        mesh.workloads
            .iter()
            .find(|w| w.name == name)
            .map(|w| w.service_account.clone())
    };
    assert_eq!(sa("w").as_deref(), Some("two"));
    assert_eq!(
        sa("v").as_deref(),
        Some("x"),
        "a tie goes to the first name"
    );
}

#[test]
fn objects_decode_leniently_and_refuse_garbage() {
    let pod = Object::from_json(
        ObjectKind::Pod,
        br#"{"metadata":{"name":"p","namespace":"n","labels":null,"annotations":null,"extra":1},
             "spec":{"containers":null,"hostNetwork":null,"initContainers":[{"name":"skiff-proxy"}]},
             "status":null}"#,
    );
    let Ok(Object::Pod(pod)) = pod else {
        panic!("a pod with nulls decodes: {pod:?}")
    };
    assert!(pod.is_meshed());
    assert_eq!(pod.service_account(), "default");

    let host = Object::from_json(
        ObjectKind::Pod,
        br#"{"metadata":{"name":"h","namespace":"n"},"spec":{"hostNetwork":true,"containers":[{"name":"skiff-proxy"}]}}"#,
    );
    let Ok(Object::Pod(host)) = host else {
        panic!("decodes")
    };
    assert!(!host.is_meshed(), "a hostNetwork pod is never meshed");

    let err = Object::from_json(ObjectKind::Service, br#"{"spec":{"ports":[{"port":"x"}]}}"#)
        .expect_err("a port must be a number");
    assert!(
        matches!(
            err,
            KubeError::Decode {
                kind: ObjectKind::Service,
                ..
            }
        ),
        "{err}"
    );
}

// === the ConfigMap ===

const ROUTES: &str = "\
mesh:
  trustDomain: example.org
services:
  - name: reviews
    routes:
      - name: canary
        matches: [ { headers: [ { name: x-canary, value: 'true' } ] } ]
        backendRefs: [ { service: ratings } ]
        retry: { attempts: 3 }
  - name: outside
    hosts: [outside.example.com]
    endpoints: [ { address: '192.0.2.1:443' } ]
workloads:
  - name: reviews
    rateLimit: { requestsPerSecond: 100 }
authorization:
  - { name: readers, target: reviews, from: [ 'spiffe://example.org/ns/default/*' ] }
";

#[test]
fn config_map_routes_and_policies_merge_onto_cluster_services() {
    let mut objects = reviews();
    objects.push(service("default", "ratings", &["10.96.0.11"], http_port()));
    objects.push(config_map(ROUTES));
    let s = state(objects);
    let mesh = built(&s);
    passes_check(&mesh);
    assert_eq!(
        names(&mesh),
        ["reviews", "outside", "ratings"],
        "ConfigMap services first"
    );

    let r = svc(&mesh, "reviews");
    assert_eq!(r.routes.len(), 1, "routes from the ConfigMap");
    assert_eq!(
        r.addresses,
        ["10.96.0.10:9080".parse().unwrap()],
        "addresses from the cluster"
    );
    assert_eq!(
        r.hosts.as_ref().map(Vec::len),
        Some(4),
        "hosts from the cluster"
    );
    assert_eq!(r.protocol, Protocol::Http1, "auto takes appProtocol");
    assert_eq!(
        r.endpoints[0].identity.as_deref(),
        Some("spiffe://example.org/ns/default/sa/reviews"),
        "the ConfigMap's trust domain"
    );
    // A ConfigMap-only service stays as written.
    let o = svc(&mesh, "outside");
    assert_eq!(addrs(&o.endpoints), ["192.0.2.1:443"]);

    let w = &mesh.workloads[0];
    assert_eq!(w.name, "reviews");
    assert_eq!(w.service_account, "reviews", "from the pods");
    assert_eq!(
        w.rate_limit.as_ref().map(|r| r.requests_per_second),
        Some(100)
    );
    assert_eq!(w.labels.get("app").map(String::as_str), Some("reviews"));

    // The policy applies to the pods' workload.
    let resources = skiff_api::resource::compile(&mesh);
    assert_eq!(
        resources.policies_by_workload.get("default/reviews"),
        Some(&vec!["default/readers".to_owned()])
    );
}

#[test]
fn a_bad_config_map_is_refused_naming_the_field_and_the_previous_one_kept() {
    let mut s = state(reviews());
    s.apply(config_map(
        ROUTES.replace("attempts: 3", "attempts: 0").as_str(),
    ))
    .map(|()| panic!("attempts 0 accepted"))
    .unwrap_or_else(|e| {
        let errors = e.config_error().expect("a validation error");
        assert_eq!(
            errors.errors[0].path, "services[0].routes[0].retry.attempts",
            "{e}"
        );
        assert!(matches!(e, KubeError::ConfigMap { .. }));
    });

    s.apply(config_map(ROUTES))
        .unwrap_or_else(|e| panic!("{e}"));
    let err = s
        .apply(config_map("services: [ { name: a, connectTimeout: 0ms } ]"))
        .expect_err("refused");
    assert!(
        err.to_string().contains("services[0].connectTimeout"),
        "{err}"
    );
    assert_eq!(
        s.config().mesh.trust_domain,
        "example.org",
        "the previous one is kept"
    );

    let missing = object(
        ObjectKind::ConfigMap,
        json!({ "metadata": { "name": "skiff-mesh", "namespace": "skiff-system" }, "data": {} }),
    );
    assert!(matches!(
        s.apply(missing),
        Err(KubeError::MissingMeshKey {
            key: "mesh.yaml",
            ..
        })
    ));
    assert_eq!(s.config().mesh.trust_domain, "example.org");

    // Someone else's ConfigMap is not ours.
    let other = object(
        ObjectKind::ConfigMap,
        json!({ "metadata": { "name": "skiff-mesh", "namespace": "default" },
                "data": { "mesh.yaml": "not: [valid" } }),
    );
    assert!(s.apply(other).is_ok());
    assert_eq!(s.config().mesh.trust_domain, "example.org");
}

#[test]
fn a_service_the_config_map_names_and_the_cluster_lacks_stands_in_without_endpoints() {
    // `ratings` (a backend) and `audit` (a policy target) are not in the cluster.
    let mut objects = reviews();
    objects.push(config_map(&format!(
        "{ROUTES}  - {{ name: audit-all, target: audit, namespace: ops, mode: audit }}\n"
    )));
    let mut s = state(objects);
    let b = s
        .build()
        .unwrap_or_else(|e| panic!("a missing Service refuses nothing: {e}"));
    passes_check(&b.mesh);
    let ratings = svc(&b.mesh, "ratings");
    assert!(ratings.endpoints.is_empty() && ratings.addresses.is_empty());
    assert_eq!(
        ratings.hosts.as_deref(),
        Some(
            &[
                "ratings",
                "ratings.default",
                "ratings.default.svc",
                "ratings.default.svc.cluster.local"
            ]
            .map(String::from)[..]
        )
    );
    let audit = b
        .mesh
        .services
        .iter()
        .find(|x| x.name == "audit")
        .unwrap_or_else(|| panic!("no stand-in for the policy target"));
    assert_eq!(audit.namespace, "ops");
    let missing: Vec<String> = b
        .notes
        .iter()
        .filter(|n| matches!(n, Note::Missing { .. }))
        .map(Note::to_string)
        .collect();
    assert_eq!(missing.len(), 2, "{missing:?}");
    assert!(
        missing[0].contains("default/ratings") && missing[0].contains("503 no-healthy-endpoints"),
        "{missing:?}"
    );

    // The Service appears: it takes the stand-in's place, endpoints and all.
    s.apply(service("default", "ratings", &["10.96.0.11"], http_port()))
        .unwrap_or_else(|e| panic!("{e}"));
    s.apply(pod("ratings-1", "10.1.0.9", "ratings", true, "ratings"))
        .unwrap_or_else(|e| panic!("{e}"));
    s.apply(slice(
        "default",
        "ratings-x1",
        "ratings",
        "IPv4",
        &[ready("10.1.0.9", "ratings-1")],
        slice_port("http", 9080),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let b = s.build().unwrap_or_else(|e| panic!("{e}"));
    let ratings = svc(&b.mesh, "ratings");
    assert_eq!(addrs(&ratings.endpoints), ["10.1.0.9:9080"]);
    assert_eq!(ratings.addresses, ["10.96.0.11:9080".parse().unwrap()]);
    assert_eq!(
        b.notes
            .iter()
            .filter(|n| matches!(n, Note::Missing { .. }))
            .count(),
        1,
        "only `audit` still stands in"
    );
}

#[test]
fn a_stand_in_leaves_claimed_hosts_alone_and_a_bad_name_is_still_refused() {
    // `front` claims the short names of `ratings`: the stand-in keeps the others.
    let s = state([config_map(
        "services:\n  - { name: front, hosts: [ratings, ratings.default], endpoints: [ { address: '10.0.0.1:80' } ],\n      routes: [ { name: r, backendRefs: [ { service: ratings } ] } ] }\n",
    )]);
    let mesh = built(&s);
    assert_eq!(
        svc(&mesh, "ratings").hosts.as_deref(),
        Some(&["ratings.default.svc", "ratings.default.svc.cluster.local"].map(String::from)[..])
    );
    // A name no Service could have is not stood in for: validation names the field.
    let s = state([config_map(
        "services:\n  - { name: front, endpoints: [ { address: '10.0.0.1:80' } ],\n      routes: [ { name: r, backendRefs: [ { service: Ratings_V2 } ] } ] }\n",
    )]);
    let err = s.mesh().expect_err("no Service is called Ratings_V2");
    let KubeError::Merged(errors) = &err else {
        panic!("{err}")
    };
    assert_eq!(
        errors.errors[0].path, "services[0].routes[0].backendRefs[0].service",
        "{err}"
    );
}

#[test]
fn config_map_claims_win_over_cluster_hosts() {
    let s = state([
        service("default", "reviews", &["10.96.0.10"], http_port()),
        config_map(
            "services:\n  - { name: front, hosts: [reviews], addresses: ['10.96.0.10:9080'] }\n",
        ),
    ]);
    let mesh = built(&s);
    passes_check(&mesh);
    let r = svc(&mesh, "reviews");
    assert_eq!(
        r.hosts.as_ref().map(|h| h.contains(&"reviews".to_owned())),
        Some(false)
    );
    assert!(r.addresses.is_empty());
}

// === deletions ===

#[test]
fn deleting_objects_updates_the_mesh() {
    let mut s = state(reviews());
    s.apply(config_map("mesh: { trustDomain: example.org }\n"))
        .unwrap_or_else(|e| panic!("{e}"));

    s.delete(ObjectKind::Pod, &ObjectKey::new("default", "reviews-1"));
    let mesh = built(&s);
    let r = svc(&mesh, "reviews");
    assert_eq!(
        addrs(&r.endpoints),
        ["10.1.0.2:9080"],
        "an endpoint whose pod is unknown is held back, never sent as a plain address"
    );
    // reviews-3 and reviews-4 (not ready) still have sidecars, so the workload stays.
    assert_eq!(mesh.workloads.len(), 1);

    s.delete(
        ObjectKind::EndpointSlice,
        &ObjectKey::new("default", "reviews-abc12"),
    );
    assert!(svc(&built(&s), "reviews").endpoints.is_empty());

    s.delete(
        ObjectKind::ConfigMap,
        &ObjectKey::new("skiff-system", "skiff-mesh"),
    );
    assert_eq!(
        built(&s).mesh.trust_domain,
        "cluster.local",
        "back to defaults"
    );

    s.delete(ObjectKind::Service, &ObjectKey::new("default", "reviews"));
    assert!(built(&s).services.is_empty());

    for p in ["reviews-3", "reviews-4"] {
        s.delete(ObjectKind::Pod, &ObjectKey::new("default", p));
    }
    assert!(built(&s).workloads.is_empty());
}

// === what a change touches ===

#[test]
fn each_change_reports_what_it_touches() {
    let mut objects = reviews();
    objects.push(service("default", "ratings", &["10.96.0.11"], http_port()));
    objects.push(slice(
        "default",
        "ratings-1",
        "ratings",
        "IPv4",
        &[ready("10.1.0.7", "reviews-1")],
        slice_port("http", 9080),
    ));
    let s = state(objects);
    let key = |n: &str| ObjectKey::new("default", n);

    // A slice: only its service's endpoints.
    let changed = slice(
        "default",
        "reviews-abc12",
        "reviews",
        "IPv4",
        &[ready("10.1.0.1", "reviews-1")],
        slice_port("http", 9080),
    );
    let impact = s.impact(&Event::Applied(changed));
    assert!(!impact.everything);
    assert_eq!(
        impact.endpoints.into_iter().collect::<Vec<_>>(),
        [key("reviews")]
    );
    assert!(impact.workloads.is_empty());

    // The same slice again: nothing.
    let same = reviews().into_iter().nth(1).expect("the slice");
    assert!(s.impact(&Event::Applied(same)).is_empty());
    let gone = s.impact(&Event::Deleted(ObjectKind::EndpointSlice, key("ratings-1")));
    assert_eq!(
        gone.endpoints.into_iter().collect::<Vec<_>>(),
        [key("ratings")]
    );

    // A pod whose status changed: nothing (readiness arrives through slices).
    let mut moved = pod_json(
        "default",
        "reviews-1",
        "10.9.9.9",
        "reviews",
        true,
        json!({ "app": "reviews", "pod-template-hash": "abc" }),
    );
    moved["status"]["phase"] = json!("Pending");
    assert!(
        s.impact(&Event::Applied(object(ObjectKind::Pod, moved)))
            .is_empty()
    );

    // A pod that loses its sidecar: the services whose slices point at it, and its workload.
    let impact = s.impact(&Event::Applied(pod(
        "reviews-1",
        "10.1.0.1",
        "reviews",
        false,
        "reviews",
    )));
    assert_eq!(
        impact.endpoints.into_iter().collect::<Vec<_>>(),
        [key("ratings"), key("reviews")]
    );
    assert_eq!(
        impact.workloads.into_iter().collect::<Vec<_>>(),
        [key("reviews")]
    );

    // Services and the mesh ConfigMap: everything; another ConfigMap: nothing.
    assert!(
        s.impact(&Event::Deleted(ObjectKind::Service, key("ratings")))
            .everything
    );
    assert!(s.impact(&Event::Applied(config_map("{}"))).everything);
    assert!(
        s.impact(&Event::Deleted(ObjectKind::ConfigMap, key("skiff-mesh")))
            .is_empty()
    );
}

/// Not timed: at 1,000 services and 10,000 pods one EndpointSlice change reports one service,
/// and the impact is taken from indexes, not by walking the cluster.
#[test]
fn one_slice_change_among_a_thousand_services_touches_one() {
    let mut s = ClusterState::new(ClusterSettings::default());
    let ip = |i: usize| format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256);
    for svc_i in 0..1_000 {
        let name = format!("svc-{svc_i}");
        let cluster_ip = format!("10.96.{}.{}", svc_i / 256, svc_i % 256);
        s.apply(service("default", &name, &[&cluster_ip], http_port()))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut eps = Vec::new();
        for p in 0..10 {
            let i = svc_i * 10 + p;
            let pod_name = format!("{name}-{p}");
            s.apply(pod(&pod_name, &ip(i), &name, i % 2 == 0, &name))
                .unwrap_or_else(|e| panic!("{e}"));
            eps.push(ready(&ip(i), &pod_name));
        }
        s.apply(slice(
            "default",
            &format!("{name}-x"),
            &name,
            "IPv4",
            &eps,
            slice_port("http", 8080),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let b = s.build().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.mesh.services.len(), 1_000);
    assert_eq!(
        b.mesh
            .services
            .iter()
            .map(|s| s.endpoints.len())
            .sum::<usize>(),
        10_000
    );
    assert_eq!(b.mesh.workloads.len(), 1_000);

    // svc-500 loses one endpoint.
    let eps: Vec<_> = (0..9)
        .map(|p| ready(&ip(5_000 + p), &format!("svc-500-{p}")))
        .collect();
    let event = Event::Applied(slice(
        "default",
        "svc-500-x",
        "svc-500",
        "IPv4",
        &eps,
        slice_port("http", 8080),
    ));
    let impact = s.impact(&event);
    assert!(!impact.everything);
    assert_eq!(
        impact.endpoints.iter().collect::<Vec<_>>(),
        [&ObjectKey::new("default", "svc-500")]
    );
    assert!(impact.workloads.is_empty());
    s.handle(event).unwrap_or_else(|e| panic!("{e}"));
    let mesh = built(&s);
    assert_eq!(svc(&mesh, "svc-500").endpoints.len(), 9);
    assert_eq!(svc(&mesh, "svc-501").endpoints.len(), 10);
}

// === the feed: lists, relists, readiness, refusals ===

mod feed {
    use super::*;
    use crate::source::kube::feed::{Change, Feed, KINDS};

    fn list(feed: &mut Feed, kind: ObjectKind, objects: Vec<Object>) -> Result<(), KubeError> {
        feed.handle(Change::List(kind))?;
        for o in objects {
            feed.handle(Change::Listed(o))?;
        }
        feed.handle(Change::ListDone(kind))
    }

    fn of_kind(objects: &[Object], kind: ObjectKind) -> Vec<Object> {
        objects
            .iter()
            .filter(|o| o.kind() == kind)
            .cloned()
            .collect()
    }

    fn synced_feed() -> Feed {
        let mut feed = Feed::new(ClusterSettings::default());
        let all = reviews();
        for kind in KINDS {
            assert!(!feed.synced(), "not synced before {kind} is listed");
            list(&mut feed, kind, of_kind(&all, kind)).expect("lists");
        }
        assert!(feed.synced());
        feed
    }

    #[test]
    fn synced_once_every_kind_is_listed_and_impact_is_taken_once() {
        let mut feed = synced_feed();
        let impact = feed.take_impact();
        assert!(impact.everything, "the first lists touch everything");
        assert!(feed.take_impact().is_empty(), "taken");
        let mesh = feed.state().mesh().expect("builds");
        assert_eq!(
            addrs(&svc(&mesh, "reviews").endpoints),
            ["10.1.0.1:9080", "10.1.0.2:9080"]
        );
    }

    #[test]
    fn a_relist_deletes_what_it_does_not_name_and_touches_only_those_endpoints() {
        let mut feed = synced_feed();
        feed.take_impact();
        // The EndpointSlice watcher restarts; the slice now lists only the legacy pod.
        let slice = slice(
            "default",
            "reviews-abc12",
            "reviews",
            "IPv4",
            &[ready("10.1.0.2", "legacy-1")],
            slice_port("http", 9080),
        );
        list(&mut feed, ObjectKind::EndpointSlice, vec![slice]).expect("relist");
        let impact = feed.take_impact();
        assert!(!impact.everything);
        assert_eq!(
            impact.endpoints.into_iter().collect::<Vec<_>>(),
            [ObjectKey::new("default", "reviews")]
        );
        let mesh = feed.state().mesh().expect("builds");
        assert_eq!(addrs(&svc(&mesh, "reviews").endpoints), ["10.1.0.2:9080"]);

        // A relist with nothing: the slice is gone.
        list(&mut feed, ObjectKind::EndpointSlice, Vec::new()).expect("relist");
        assert!(
            svc(&feed.state().mesh().expect("builds"), "reviews")
                .endpoints
                .is_empty()
        );
        // A pod relist without the meshed pod drops its workload.
        list(&mut feed, ObjectKind::Pod, Vec::new()).expect("relist");
        assert!(
            feed.take_impact()
                .workloads
                .contains(&ObjectKey::new("default", "reviews"))
        );
    }

    #[test]
    fn live_events_between_lists() {
        let mut feed = synced_feed();
        feed.take_impact();
        feed.handle(Change::Watched(Event::Deleted(
            ObjectKind::Service,
            ObjectKey::new("default", "reviews"),
        )))
        .expect("delete");
        assert!(feed.take_impact().everything);
        assert!(feed.state().mesh().expect("builds").services.is_empty());
    }

    #[test]
    fn a_refused_config_map_is_remembered_until_a_good_one_or_its_deletion() {
        let mut feed = synced_feed();
        let bad = config_map("services: fifty\n");
        assert!(feed.handle(Change::Watched(Event::Applied(bad))).is_err());
        let why = feed.refusal().expect("refused").to_owned();
        assert!(why.contains("skiff-system/skiff-mesh"), "{why}");
        // Other changes keep the refusal.
        feed.handle(Change::Watched(Event::Deleted(
            ObjectKind::Pod,
            ObjectKey::new("default", "legacy-1"),
        )))
        .expect("pod");
        assert!(feed.refusal().is_some());
        let good = config_map("mesh: { trustDomain: example.org }\n");
        feed.handle(Change::Watched(Event::Applied(good)))
            .expect("good");
        assert_eq!(feed.refusal(), None);
        assert_eq!(feed.state().config().mesh.trust_domain, "example.org");

        let bad = config_map("services: fifty\n");
        assert!(feed.handle(Change::Watched(Event::Applied(bad))).is_err());
        feed.handle(Change::Watched(Event::Deleted(
            ObjectKind::ConfigMap,
            ObjectKey::new("skiff-system", "skiff-mesh"),
        )))
        .expect("delete");
        assert_eq!(feed.refusal(), None, "no ConfigMap, nothing refused");
        // A relist that still has the config map keeps it.
        let good = config_map("mesh: { trustDomain: example.org }\n");
        list(&mut feed, ObjectKind::ConfigMap, vec![good]).expect("list");
        assert_eq!(feed.state().keys(ObjectKind::ConfigMap).len(), 1);
        list(&mut feed, ObjectKind::ConfigMap, Vec::new()).expect("list");
        assert!(feed.state().keys(ObjectKind::ConfigMap).is_empty());
        assert_eq!(
            feed.state().config().mesh.trust_domain,
            MeshFile::default().mesh.trust_domain
        );
    }
}
