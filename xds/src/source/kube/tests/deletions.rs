//! Deletions: each object forgotten takes out of the mesh what it brought (a deleted pod holds
//! its endpoints back), and the ConfigMap's deletion returns to default settings.

use super::{addrs, built, config_map, reviews, state, svc};
use crate::source::kube::{ObjectKey, ObjectKind};

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
