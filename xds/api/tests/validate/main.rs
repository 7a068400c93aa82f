//! Mesh-file validation as `skiff-xds check` and `skiff run --config` see it: a valid full
//! example passes, and each rule refuses its bad field by exact path.

use skiff_api::{FieldError, load, model::RetryOn, summary};

/// The example of DESIGN.md, completed so that everything it names exists.
const FULL: &str = include_str!("../data/full-mesh.yaml");

/// Removes the indentation the test source gives its YAML.
fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn errors(yaml: &str) -> Vec<FieldError> {
    match load(&dedent(yaml)) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors,
    }
}

/// The paths of every error, in the order reported.
fn paths(yaml: &str) -> Vec<String> {
    errors(yaml).into_iter().map(|e| e.path).collect()
}

/// Exactly one error, at `path`; returns its message.
#[track_caller]
fn only(yaml: &str, path: &str) -> String {
    let errs = errors(yaml);
    assert_eq!(
        errs.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
        [path],
        "errors: {errs:#?}"
    );
    errs.into_iter()
        .next()
        .map(|e| e.message)
        .unwrap_or_default()
}

#[track_caller]
fn valid(yaml: &str) {
    assert_eq!(errors(yaml), [], "expected a valid mesh");
}

#[test]
fn full_example_is_valid() {
    let mesh = load(FULL).unwrap_or_else(|e| panic!("full example refused: {e}"));
    assert_eq!(
        summary(&mesh),
        "3 services, 2 routes, 4 endpoints, 3 workloads, 1 authorization policy"
    );
}

#[test]
fn design_example_as_printed_names_what_is_missing() {
    // DESIGN.md routes to reviews-v2 and its endpoint names reviews-v1; neither exists there.
    let printed = FULL
        .split("  - name: reviews-v2\n    endpoints")
        .next()
        .unwrap_or_default()
        .to_owned()
        + "workloads:\n  - name: reviews-v1\n    inbound: { listen: 127.0.0.1:16006, app: 127.0.0.1:9081 }\n";
    let errs = load(&printed).expect_err("reviews-v2 is missing");
    assert_eq!(errs.errors.len(), 1, "{errs}");
    assert_eq!(
        errs.errors[0].path,
        "services[0].routes[0].backendRefs[0].service"
    );
    assert_eq!(
        errs.errors[0].message,
        r#"no service "reviews-v2" in namespace "default""#
    );
}

#[test]
fn empty_file_is_an_empty_mesh() {
    let mesh = load("").expect("empty mesh");
    assert_eq!(
        summary(&mesh),
        "0 services, 0 routes, 0 endpoints, 0 workloads, 0 authorization policies"
    );
    assert!(load("---\n").is_ok());
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let errs = errors(
        r#"
        mesh: { trustDomain: "Cluster_Local" }
        services:
          - name: reviews
            connectTimeout: 0s
            routes:
              - backendRefs: [ { service: reviews }, { service: nowhere, weight: 2000000 } ]
          - name: reviews
        workloads:
          - name: w
            inbound: { listen: 127.0.0.1:1, app: 127.0.0.1:1 }
        authorization:
          - { name: p, target: ghost }
        "#,
    );
    let got: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        got,
        [
            "mesh.trustDomain",
            "services[0].connectTimeout",
            "services[0].routes[0].backendRefs[1].service",
            "services[0].routes[0].backendRefs[1].weight",
            "services[1].name",
            "workloads[0].inbound.app",
            "authorization[0].target",
        ]
    );
    assert_eq!(errs[3].message, "must be at most 1000000, got 2000000");
    assert_eq!(
        errs[2].message,
        r#"no service "nowhere" in namespace "default""#
    );
}

// ---- shape errors: serde names the path ----

#[test]
fn shape_errors_name_their_path() {
    let base =
        "services:\n  - name: a\n    routes:\n      - backendRefs:\n          - service: a\n";
    let cases = [
        (
            format!("{base}            weight: -1\n"),
            "services[0].routes[0].backendRefs[0].weight",
        ),
        (
            format!("{base}            weigth: 1\n"),
            "services[0].routes[0].backendRefs[0].weigth",
        ),
        (
            "services:\n  - name: a\n    connectTimeout: 5 seconds\n".to_owned(),
            "services[0].connectTimeout",
        ),
        (
            "services:\n  - name: a\n    protocol: udp\n".to_owned(),
            "services[0].protocol",
        ),
        (
            "services:\n  - name: a\n    name: b\n".to_owned(),
            "services[0].name",
        ),
        ("services:\n  - namespace: a\n".to_owned(), "services[0]"),
        (
            "workloads: [ { name: w, inbound: { listen: nope, app: 127.0.0.1:1 } } ]\n".to_owned(),
            "workloads[0].inbound.listen",
        ),
        ("servics: []\n".to_owned(), "servics"),
        ("services: []\n---\nservices: []\n".to_owned(), ""),
    ];
    for (yaml, path) in cases {
        let err = load(&yaml).expect_err(&yaml);
        assert_eq!(err.errors.len(), 1, "{yaml}: {err}");
        assert_eq!(err.errors[0].path, path, "{yaml}: {err}");
        assert!(
            !err.errors[0].message.contains('\n'),
            "one line: {:?}",
            err.errors[0].message
        );
        assert!(
            err.errors[0].message.contains("line "),
            "says where: {:?}",
            err.errors[0].message
        );
    }
}

// ---- mesh ----

#[test]
fn trust_domain_is_a_dns_name() {
    only("mesh: { trustDomain: cluster..local }", "mesh.trustDomain");
    valid("mesh: { trustDomain: example.org }");
}

#[test]
fn sampling_is_a_ratio() {
    only(
        "mesh: { tracing: { sampling: 1.5 } }",
        "mesh.tracing.sampling",
    );
    only(
        "mesh: { tracing: { sampling: .nan } }",
        "mesh.tracing.sampling",
    );
    valid("mesh: { tracing: { sampling: 0 } }");
}

// ---- services ----

mod authorization;
mod messages;
mod resilience;
mod routes;
mod services;
mod workloads;
