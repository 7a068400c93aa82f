//! Services, endpoints and identities as built from the cluster: readiness, pods seen late,
//! `appProtocol`, several ports and both IP families, skipped Services, workload names and
//! service accounts, and how leniently objects decode.

use serde_json::json;
use skiff_api::model::Protocol;

use super::{
    addrs, built, http_port, names, object, passes_check, pod, pod_json, ratings_slice, ready,
    reviews, service, slice, slice_port, state, svc,
};
use crate::source::kube::{Event, KubeError, Note, Object, ObjectKey, ObjectKind};

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
    s.apply(ratings_slice()).unwrap_or_else(|e| panic!("{e}"));
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
    use crate::source::kube::cluster::protocol_of;
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
