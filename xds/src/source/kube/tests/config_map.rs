//! The mesh ConfigMap: its routes, workloads and policies merged onto the cluster's
//! services, refusals that keep the previous one, stand-ins for the services it names and
//! the cluster lacks, and the hosts it claims.

use serde_json::json;
use skiff_api::model::Protocol;

use super::{
    addrs, built, config_map, http_port, names, object, passes_check, pod, ratings_slice, reviews,
    service, state, svc,
};
use crate::source::kube::{KubeError, Note, ObjectKind};

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
    s.apply(ratings_slice()).unwrap_or_else(|e| panic!("{e}"));
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
