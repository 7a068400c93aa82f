//! What a change touches: the services' endpoints and the workloads each kind of event can
//! alter, taken from indexes even among a thousand services.

use serde_json::json;

use super::{
    built, config_map, http_port, object, pod, pod_json, ready, reviews, service, slice,
    slice_port, state, svc,
};
use crate::source::kube::{ClusterSettings, ClusterState, Event, ObjectKey, ObjectKind};

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
