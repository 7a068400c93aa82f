//! Mesh-file validation as `skiff-xds check` and `skiff run --config` see it: a valid full
//! example passes, and each rule refuses its bad field by exact path.

use skiff_api::{FieldError, load, model::RetryOn, summary};

/// The example of DESIGN.md, completed so that everything it names exists.
const FULL: &str = include_str!("data/full-mesh.yaml");

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

#[test]
fn service_names_are_dns_labels() {
    only("services: [ { name: Reviews } ]", "services[0].name");
    only(
        "services: [ { name: reviews, namespace: my_ns } ]",
        "services[0].namespace",
    );
    only(
        &format!("services: [ {{ name: {} }} ]", "a".repeat(64)),
        "services[0].name",
    );
}

#[test]
fn services_are_unique_per_namespace() {
    let msg = only(
        "services: [ { name: a }, { name: b }, { name: a, namespace: default } ]",
        "services[2].name",
    );
    assert!(msg.contains("services[0]"), "{msg}");
    valid("services: [ { name: a }, { name: a, namespace: other } ]");
}

#[test]
fn hosts_when_given_are_not_empty() {
    only("services: [ { name: a, hosts: [] } ]", "services[0].hosts");
}

#[test]
fn hosts_are_star_or_hostnames_with_optional_port() {
    only(
        "services: [ { name: a, hosts: [a, 'A.example'] } ]",
        "services[0].hosts[1]",
    );
    only(
        "services: [ { name: a, hosts: ['a:0'] } ]",
        "services[0].hosts[0]",
    );
    only(
        "services: [ { name: a, hosts: ['*.example.com'] } ]",
        "services[0].hosts[0]",
    );
    valid("services: [ { name: a, hosts: ['*', 'a:9080', a.example.com] } ]");
}

#[test]
fn a_host_belongs_to_one_service() {
    only(
        "services: [ { name: a, hosts: [x] }, { name: b, hosts: [y, x] } ]",
        "services[1].hosts[1]",
    );
    only(
        "services: [ { name: a, hosts: ['*'] }, { name: b, hosts: ['*'] } ]",
        "services[1].hosts[0]",
    );
    only(
        "services: [ { name: a, hosts: [x, x] } ]",
        "services[0].hosts[1]",
    );
    // An explicit host may not take another service's default name.
    only(
        "services: [ { name: a, hosts: [b] }, { name: b } ]",
        "services[0].hosts[0]",
    );
    // A port makes a different host.
    valid("services: [ { name: a, hosts: [x] }, { name: b, hosts: ['x:8080'] } ]");
}

#[test]
fn addresses_belong_to_one_service() {
    only(
        r#"services: [ { name: a, addresses: ["10.0.0.1:80"] }, { name: b, addresses: ["10.0.0.2:80", "10.0.0.1:80"] } ]"#,
        "services[1].addresses[1]",
    );
    valid(
        r#"services: [ { name: a, addresses: ["10.0.0.1:80"] }, { name: b, addresses: ["10.0.0.1:81"] } ]"#,
    );
}

#[test]
fn connect_timeout_is_positive() {
    only(
        "services: [ { name: a, connectTimeout: 0ms } ]",
        "services[0].connectTimeout",
    );
}

// ---- endpoints ----

const WORKLOADS: &str = "
workloads:
  - { name: w, inbound: { listen: 127.0.0.1:16001, app: 127.0.0.1:9001 } }
  - { name: w, namespace: other, inbound: { listen: 127.0.0.1:16002, app: 127.0.0.1:9002 } }
  - { name: bare }
";

fn with_endpoints(endpoints: &str) -> String {
    format!("services: [ {{ name: a, endpoints: [ {endpoints} ] }} ]\n{WORKLOADS}")
}

#[test]
fn endpoints_are_a_workload_or_an_address() {
    only(
        &with_endpoints("{ address: '127.0.0.1:1' }, { labels: { a: b } }"),
        "services[0].endpoints[1]",
    );
    only(
        &with_endpoints("{ workload: w, address: '127.0.0.1:1' }"),
        "services[0].endpoints[0]",
    );
    valid(&with_endpoints(
        "{ workload: w }, { address: '127.0.0.1:1' }",
    ));
}

#[test]
fn endpoint_namespace_only_with_workload() {
    only(
        &with_endpoints("{ address: '127.0.0.1:1', namespace: default }"),
        "services[0].endpoints[0].namespace",
    );
    valid(&with_endpoints("{ workload: w, namespace: other }"));
}

#[test]
fn endpoint_identity_only_with_address_and_in_the_trust_domain() {
    only(
        &with_endpoints("{ workload: w, identity: 'spiffe://cluster.local/ns/default/sa/w' }"),
        "services[0].endpoints[0].identity",
    );
    only(
        &with_endpoints("{ address: '127.0.0.1:1', identity: reviews }"),
        "services[0].endpoints[0].identity",
    );
    only(
        &with_endpoints(
            "{ address: '127.0.0.1:1', identity: 'spiffe://other.org/ns/default/sa/w' }",
        ),
        "services[0].endpoints[0].identity",
    );
    valid(&with_endpoints(
        "{ address: '127.0.0.1:1', identity: 'spiffe://cluster.local/ns/default/sa/w' }",
    ));
}

#[test]
fn endpoint_workloads_exist_and_have_inbound() {
    let msg = only(
        &with_endpoints("{ workload: w }, { workload: ghost }"),
        "services[0].endpoints[1].workload",
    );
    assert_eq!(msg, r#"no workload "ghost" in namespace "default""#);
    only(
        &with_endpoints("{ workload: w, namespace: third }"),
        "services[0].endpoints[0].workload",
    );
    only(
        &with_endpoints("{ workload: bare }"),
        "services[0].endpoints[0].workload",
    );
}

#[test]
fn endpoints_are_listed_once() {
    only(
        &with_endpoints("{ workload: w }, { workload: w, namespace: default }"),
        "services[0].endpoints[1]",
    );
    only(
        &with_endpoints("{ address: '127.0.0.1:1' }, { address: '127.0.0.1:1' }"),
        "services[0].endpoints[1]",
    );
}

#[test]
fn endpoint_labels_follow_kubernetes() {
    only(
        &with_endpoints("{ address: '127.0.0.1:1', labels: { 'bad key': v } }"),
        "services[0].endpoints[0].labels.bad key",
    );
}

// ---- service policies ----

#[test]
fn tcp_services_have_no_routes() {
    only(
        "services: [ { name: a, protocol: tcp, routes: [ { name: r } ] } ]",
        "services[0].routes",
    );
    valid("services: [ { name: a, protocol: tcp } ]");
}

#[test]
fn circuit_breaker_values_are_at_least_one() {
    let errs =
        paths("services: [ { name: a, circuitBreaker: { maxConnections: 0, maxRetries: 0 } } ]");
    assert_eq!(
        errs,
        [
            "services[0].circuitBreaker.maxConnections",
            "services[0].circuitBreaker.maxRetries"
        ]
    );
    only(
        "services: [ { name: a, circuitBreaker: { maxPendingRequests: 0 } } ]",
        "services[0].circuitBreaker.maxPendingRequests",
    );
    only(
        "services: [ { name: a, circuitBreaker: { maxRequests: 0 } } ]",
        "services[0].circuitBreaker.maxRequests",
    );
}

#[test]
fn outlier_detection_ranges() {
    let errs = paths(
        "services: [ { name: a, outlierDetection: \
         { consecutiveErrors: 0, interval: 0s, baseEjectionTime: 0s, maxEjectionPercent: 101 } } ]",
    );
    let at = "services[0].outlierDetection";
    assert_eq!(
        errs,
        [
            format!("{at}.consecutiveErrors"),
            format!("{at}.interval"),
            format!("{at}.baseEjectionTime"),
            format!("{at}.maxEjectionPercent"),
        ]
    );
    valid("services: [ { name: a, outlierDetection: { maxEjectionPercent: 100 } } ]");
}

#[test]
fn retry_budget_ratio_is_a_ratio() {
    only(
        "services: [ { name: a, retryBudget: { ratio: 1.5 } } ]",
        "services[0].retryBudget.ratio",
    );
    only(
        "services: [ { name: a, retryBudget: { ratio: .inf } } ]",
        "services[0].retryBudget.ratio",
    );
    valid("services: [ { name: a, retryBudget: { ratio: 0 } } ]");
}

// ---- routes ----

fn with_route(route: &str) -> String {
    format!(
        "services: [ {{ name: a, routes: [ {{ name: r0 }}, {route} ] }}, {{ name: b }}, {{ name: c, namespace: other }} ]"
    )
}

const R: &str = "services[0].routes[1]";

#[test]
fn route_names_are_unique_within_a_service() {
    only(&with_route("{ name: r0 }"), &format!("{R}.name"));
    // The default name of routes[1] is route-1.
    only(
        "services: [ { name: a, routes: [ { name: route-1 }, { } ] } ]",
        R,
    );
    valid(
        "services: [ { name: a, routes: [ { name: r } ] }, { name: b, routes: [ { name: r } ] } ]",
    );
}

#[test]
fn exact_and_prefix_paths_start_with_a_slash() {
    only(
        &with_route("{ matches: [ { path: { value: api } } ] }"),
        &format!("{R}.matches[0].path.value"),
    );
    only(
        &with_route("{ matches: [ {}, { path: { type: Exact, value: 'x/' } } ] }"),
        &format!("{R}.matches[1].path.value"),
    );
    only(
        &with_route("{ matches: [ { path: { type: Exact, value: '/a?b=1' } } ] }"),
        &format!("{R}.matches[0].path.value"),
    );
}

#[test]
fn regular_expressions_compile_whole() {
    only(
        &with_route("{ matches: [ { path: { type: RegularExpression, value: '/a(' } } ] }"),
        &format!("{R}.matches[0].path.value"),
    );
    // Only compiles once wrapped in `^(?:...)$`, with another meaning: refused.
    only(
        &with_route("{ matches: [ { path: { type: RegularExpression, value: '/a)|(/b' } } ] }"),
        &format!("{R}.matches[0].path.value"),
    );
    only(
        &with_route(
            "{ matches: [ { headers: [ { name: x, type: RegularExpression, value: '[' } ] } ] }",
        ),
        &format!("{R}.matches[0].headers[0].value"),
    );
    only(
        &with_route(
            "{ matches: [ { queryParams: [ { name: q, value: ok }, { name: q, type: RegularExpression, value: '*' } ] } ] }",
        ),
        &format!("{R}.matches[0].queryParams[1].value"),
    );
    // Not a regex when the type is Exact.
    valid(&with_route(
        "{ matches: [ { headers: [ { name: x, value: '[' } ] } ] }",
    ));
}

#[test]
fn methods_and_header_names_are_tokens() {
    only(
        &with_route("{ matches: [ { method: 'GE T' } ] }"),
        &format!("{R}.matches[0].method"),
    );
    only(
        &with_route("{ matches: [ { headers: [ { name: 'x:y', value: v } ] } ] }"),
        &format!("{R}.matches[0].headers[0].name"),
    );
    valid(&with_route(
        "{ matches: [ { method: PURGE, headers: [ { name: x-canary, value: v } ] } ] }",
    ));
}

#[test]
fn query_param_names_are_not_empty() {
    only(
        &with_route("{ matches: [ { queryParams: [ { name: '', value: v } ] } ] }"),
        &format!("{R}.matches[0].queryParams[0].name"),
    );
}

#[test]
fn backend_refs_name_existing_services() {
    let msg = only(
        &with_route("{ backendRefs: [ { service: a }, { service: reviews-v3 } ] }"),
        &format!("{R}.backendRefs[1].service"),
    );
    assert_eq!(msg, r#"no service "reviews-v3" in namespace "default""#);
    // The namespace defaults to the route's service's, so `c` needs its own.
    only(
        &with_route("{ backendRefs: [ { service: c } ] }"),
        &format!("{R}.backendRefs[0].service"),
    );
    valid(&with_route(
        "{ backendRefs: [ { service: c, namespace: other }, { service: b } ] }",
    ));
}

#[test]
fn backend_weights_are_bounded_and_may_all_be_zero() {
    let msg = only(
        &with_route("{ backendRefs: [ { service: a }, { service: b, weight: 2000000 } ] }"),
        &format!("{R}.backendRefs[1].weight"),
    );
    assert_eq!(msg, "must be at most 1000000, got 2000000");
    valid(&with_route(
        "{ backendRefs: [ { service: a, weight: 0 }, { service: b, weight: 0 } ] }",
    ));
    valid(&with_route(
        "{ backendRefs: [ { service: a, weight: 1000000 } ] }",
    ));
}

#[test]
fn timeouts_are_positive() {
    only(
        &with_route("{ timeouts: { request: 0s } }"),
        &format!("{R}.timeouts.request"),
    );
    only(
        &with_route("{ timeouts: { backendRequest: 0s } }"),
        &format!("{R}.timeouts.backendRequest"),
    );
    // As in the Gateway API, a try cannot outlive its request.
    only(
        &with_route("{ timeouts: { request: 1s, backendRequest: 2s } }"),
        &format!("{R}.timeouts.backendRequest"),
    );
}

#[test]
fn retry_ranges() {
    only(
        &with_route("{ retry: { attempts: 0 } }"),
        &format!("{R}.retry.attempts"),
    );
    only(
        &with_route("{ retry: { attempts: 11 } }"),
        &format!("{R}.retry.attempts"),
    );
    only(
        &with_route("{ retry: { retryOn: [] } }"),
        &format!("{R}.retry.retryOn"),
    );
    only(
        &with_route("{ retry: { backoff: { base: 0s } } }"),
        &format!("{R}.retry.backoff.base"),
    );
    only(
        &with_route("{ retry: { backoff: { base: 1s, max: 100ms } } }"),
        &format!("{R}.retry.backoff.base"),
    );
    only(
        &with_route("{ retry: { maxBodyBytes: 16777217 } }"),
        &format!("{R}.retry.maxBodyBytes"),
    );
    valid(&with_route(
        "{ retry: { attempts: 10, maxBodyBytes: 16777216, backoff: { base: 1s, max: 1s } } }",
    ));
}

#[test]
fn fault_ranges() {
    only(
        &with_route("{ fault: { abort: { percent: 101, status: 503 } } }"),
        &format!("{R}.fault.abort.percent"),
    );
    only(
        &with_route("{ fault: { abort: { percent: .nan, status: 503 } } }"),
        &format!("{R}.fault.abort.percent"),
    );
    only(
        &with_route("{ fault: { abort: { percent: 5, status: 600 } } }"),
        &format!("{R}.fault.abort.status"),
    );
    only(
        &with_route("{ fault: { abort: { percent: 5, status: 199 } } }"),
        &format!("{R}.fault.abort.status"),
    );
    only(
        &with_route("{ fault: { delay: { percent: -1, duration: 1s } } }"),
        &format!("{R}.fault.delay.percent"),
    );
    only(
        &with_route("{ fault: { delay: { percent: 1, duration: 0s } } }"),
        &format!("{R}.fault.delay.duration"),
    );
    valid(&with_route(
        "{ fault: { abort: { percent: 100, status: 200 }, delay: { percent: 0, duration: 1ms } } }",
    ));
}

// ---- resilience fields: a bad value is refused naming its path ----

/// A mesh whose one service holds `fields` (YAML flow-mapping entries) and the route `route`.
fn resilient(fields: &str, route: &str) -> String {
    format!("services: [ {{ name: a, {fields} routes: [ {route} ] }} ]")
}

/// The route as `services[0].routes[0]`.
fn on_route(route: &str) -> String {
    resilient("", route)
}

const R0: &str = "services[0].routes[0]";

#[test]
fn resilience_shape_errors_name_their_path() {
    // (the route, where serde stopped, fragments of its message)
    let cases: [(&str, &str, &[&str]); 4] = [
        // A negative count is no u32: serde refuses it where it stands.
        (
            "retry: { attempts: -1 }",
            "retry.attempts",
            &["invalid u32", "line 4"],
        ),
        (
            "retry: { retryOn: [5xx, sometimes] }",
            "retry.retryOn[1]",
            &[
                "unknown variant `sometimes`",
                "retriable-status-codes",
                "line 4",
            ],
        ),
        (
            "retry: { retryOn: [retriable-status-codes], retriableStatusCodes: [70000] }",
            "retry.retriableStatusCodes[0]",
            &["invalid u16", "line 4"],
        ),
        (
            "fault: { abort: { percent: 1, grpcStatus: -1 } }",
            "fault.abort.grpcStatus",
            &["invalid u32", "line 4"],
        ),
    ];
    for (route, path, fragments) in cases {
        let yaml = format!("services:\n  - name: a\n    routes:\n      - {route}\n");
        let err = load(&yaml).expect_err(&yaml);
        assert_eq!(err.errors.len(), 1, "{yaml}: {err}");
        assert_eq!(err.errors[0].path, format!("{R0}.{path}"), "{yaml}");
        let message = &err.errors[0].message;
        for fragment in fragments {
            assert!(message.contains(fragment), "{yaml}: {message:?}");
        }
    }
}

#[test]
fn resilience_rules_name_their_path() {
    let cases = [
        (
            on_route("{ retry: { attempts: 0 } }"),
            format!("{R0}.retry.attempts"),
            "must be from 1 to 10, got 0",
        ),
        (
            on_route("{ retry: { attempts: 11 } }"),
            format!("{R0}.retry.attempts"),
            "must be from 1 to 10, got 11",
        ),
        (
            on_route("{ retry: { backoff: { base: 1s, max: 100ms } } }"),
            format!("{R0}.retry.backoff.base"),
            "must be at most backoff.max (100ms), got 1s",
        ),
        (
            on_route("{ fault: { abort: { percent: 101, status: 503 } } }"),
            format!("{R0}.fault.abort.percent"),
            "must be from 0 to 100, got 101",
        ),
        (
            on_route("{ fault: { delay: { percent: -1, duration: 1s } } }"),
            format!("{R0}.fault.delay.percent"),
            "must be from 0 to 100, got -1",
        ),
        (
            on_route("{ fault: { abort: { percent: 5, grpcStatus: 17 } } }"),
            format!("{R0}.fault.abort.grpcStatus"),
            "must be from 0 to 16, got 17",
        ),
        (
            on_route("{ fault: { abort: { percent: 5, status: 503, grpcStatus: 14 } } }"),
            format!("{R0}.fault.abort"),
            "must set only one of status or grpcStatus",
        ),
        (
            resilient("outlierDetection: { maxEjectionPercent: 101 },", ""),
            "services[0].outlierDetection.maxEjectionPercent".to_owned(),
            "must be at most 100, got 101",
        ),
        (
            resilient("retryBudget: { ratio: 1.5 },", ""),
            "services[0].retryBudget.ratio".to_owned(),
            "must be from 0 to 1, got 1.5",
        ),
        (
            resilient("circuitBreaker: { maxRequests: 0 },", ""),
            "services[0].circuitBreaker.maxRequests".to_owned(),
            "must be at least 1, got 0",
        ),
        (
            "workloads: [ { name: w, rateLimit: { requestsPerSecond: 0 } } ]".to_owned(),
            "workloads[0].rateLimit.requestsPerSecond".to_owned(),
            "must be at least 1, got 0",
        ),
        (
            "workloads: [ { name: w, rateLimit: { requestsPerSecond: 1, burst: 0 } } ]".to_owned(),
            "workloads[0].rateLimit.burst".to_owned(),
            "must be at least 1, got 0",
        ),
    ];
    for (yaml, path, message) in cases {
        let errs = errors(&yaml);
        let got: Vec<_> = errs
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(got, [(path.as_str(), message)], "{yaml}");
    }
}

#[test]
fn retriable_status_codes_come_with_their_token() {
    let at = format!("{R0}.retry.retriableStatusCodes");
    for route in [
        "{ retry: { retryOn: [retriable-status-codes] } }",
        "{ retry: { retryOn: [5xx, retriable-status-codes], retriableStatusCodes: [] } }",
    ] {
        assert_eq!(
            only(&on_route(route), &at),
            "must not be empty when retryOn has retriable-status-codes",
            "{route}"
        );
    }
    // The default retryOn does not have the token either.
    for route in [
        "{ retry: { retriableStatusCodes: [429] } }",
        "{ retry: { retryOn: [5xx], retriableStatusCodes: [409, 429] } }",
    ] {
        assert_eq!(
            only(&on_route(route), &at),
            "only used with retryOn retriable-status-codes",
            "{route}"
        );
    }
    let errs = errors(&on_route(
        "{ retry: { retryOn: [retriable-status-codes], retriableStatusCodes: [409, 99, 600] } }",
    ));
    let got: Vec<_> = errs
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                format!("{at}[1]").as_str(),
                "must be from 100 to 599, got 99"
            ),
            (
                format!("{at}[2]").as_str(),
                "must be from 100 to 599, got 600"
            ),
        ]
    );
    valid(&on_route(
        "{ retry: { retryOn: [5xx, retriable-status-codes], retriableStatusCodes: [100, 409, 429, 599] } }",
    ));
}

#[test]
fn retry_on_tokens_are_listed_once() {
    let errs = errors(&on_route(
        "{ retry: { retryOn: [5xx, reset, unavailable, 5xx, reset] } }",
    ));
    let got: Vec<_> = errs
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "services[0].routes[0].retry.retryOn[3]",
                "5xx is listed twice (first at retryOn[0])"
            ),
            (
                "services[0].routes[0].retry.retryOn[4]",
                "reset is listed twice (first at retryOn[1])"
            ),
        ]
    );
}

#[test]
fn every_retry_on_token_is_spelled_as_documented() {
    let tokens: Vec<_> = RetryOn::ALL.iter().map(|on| on.as_str()).collect();
    let mesh = load(&dedent(&on_route(&format!(
        "{{ retry: {{ retryOn: [{}], retriableStatusCodes: [409] }} }}",
        tokens.join(", ")
    ))))
    .unwrap_or_else(|e| panic!("every token refused: {e}"));
    let retry = mesh.services[0].routes[0].retry.as_ref().expect("a retry");
    assert_eq!(retry.retry_on, RetryOn::ALL);
    assert_eq!(retry.retriable_status_codes, [409]);
}

#[test]
fn fault_abort_sets_status_or_grpc_status() {
    let at = format!("{R0}.fault.abort");
    assert_eq!(
        only(&on_route("{ fault: { abort: { percent: 5 } } }"), &at),
        "must set one of status or grpcStatus"
    );
    // Both set and out of range: each problem at its own path.
    assert_eq!(
        paths(&on_route(
            "{ fault: { abort: { percent: 5, status: 700, grpcStatus: 17 } } }"
        )),
        [
            at.clone(),
            format!("{at}.status"),
            format!("{at}.grpcStatus")
        ]
    );
    let mesh = load(&dedent(&on_route(
        "{ fault: { abort: { percent: 5, grpcStatus: 0 } } }",
    )))
    .unwrap_or_else(|e| panic!("grpcStatus 0 (OK) refused: {e}"));
    let abort = mesh.services[0].routes[0]
        .fault
        .as_ref()
        .and_then(|f| f.abort.clone())
        .expect("an abort");
    assert_eq!((abort.status, abort.grpc_status), (None, Some(0)));
    valid(&on_route(
        "{ fault: { abort: { percent: 5, grpcStatus: 16 } } }",
    ));
    valid(&on_route(
        "{ fault: { abort: { percent: 5, status: 599 } } }",
    ));
}

// ---- workloads ----

#[test]
fn workload_names_are_dns_labels() {
    only("workloads: [ { name: W } ]", "workloads[0].name");
    only(
        "workloads: [ { name: w, namespace: '' } ]",
        "workloads[0].namespace",
    );
    only(
        "workloads: [ { name: w, serviceAccount: sa.x } ]",
        "workloads[0].serviceAccount",
    );
}

#[test]
fn workloads_are_unique_per_namespace() {
    only(
        "workloads: [ { name: w }, { name: w, namespace: default } ]",
        "workloads[1].name",
    );
    valid("workloads: [ { name: w }, { name: w, namespace: other } ]");
}

#[test]
fn inbound_listen_is_unique_and_not_the_app() {
    only(
        "workloads: [ { name: a, inbound: { listen: '127.0.0.1:1', app: '127.0.0.1:2' } }, \
                      { name: b, inbound: { listen: '127.0.0.1:1', app: '127.0.0.1:3' } } ]",
        "workloads[1].inbound.listen",
    );
    only(
        "workloads: [ { name: a, inbound: { listen: '127.0.0.1:1', app: '127.0.0.1:1' } } ]",
        "workloads[0].inbound.app",
    );
    // Port 0 is chosen at bind time, so two of them never clash.
    valid(
        "workloads: [ { name: a, inbound: { listen: '127.0.0.1:0', app: '127.0.0.1:2' } }, \
                      { name: b, inbound: { listen: '127.0.0.1:0', app: '127.0.0.1:3' } } ]",
    );
}

#[test]
fn rate_limits_are_at_least_one() {
    only(
        "workloads: [ { name: w, rateLimit: { requestsPerSecond: 0 } } ]",
        "workloads[0].rateLimit.requestsPerSecond",
    );
    only(
        "workloads: [ { name: w, rateLimit: { requestsPerSecond: 1, burst: 0 } } ]",
        "workloads[0].rateLimit.burst",
    );
}

#[test]
fn workload_labels_follow_kubernetes() {
    only(
        "workloads: [ { name: w, labels: { app: '-x' } } ]",
        "workloads[0].labels.app",
    );
    valid("workloads: [ { name: w, labels: { app.kubernetes.io/name: x, empty: '' } } ]");
}

// ---- authorization ----

fn with_policies(policies: &str) -> String {
    format!(
        "services: [ {{ name: s }}, {{ name: s, namespace: other }} ]\nauthorization: [ {policies} ]"
    )
}

#[test]
fn policy_names_are_unique_per_namespace() {
    only(
        &with_policies("{ name: p, target: s }, { name: p, target: s }"),
        "authorization[1].name",
    );
    valid(&with_policies(
        "{ name: p, target: s }, { name: p, namespace: other, target: s }",
    ));
}

#[test]
fn policy_targets_exist_in_the_policy_namespace() {
    let msg = only(
        &with_policies("{ name: p, namespace: third, target: s }"),
        "authorization[0].target",
    );
    assert_eq!(msg, r#"no service "s" in namespace "third""#);
}

#[test]
fn policy_peers_are_spiffe_ids() {
    only(
        &with_policies(
            "{ name: p, target: s, from: [ 'spiffe://cluster.local/ns/a/sa/b', 'ns/a/sa/b' ] }",
        ),
        "authorization[0].from[1]",
    );
}

#[test]
fn policy_rules_have_method_tokens_and_star_suffix_paths() {
    only(
        &with_policies("{ name: p, target: s, to: [ { methods: [GET, 'P OST'] } ] }"),
        "authorization[0].to[0].methods[1]",
    );
    only(
        &with_policies("{ name: p, target: s, to: [ {}, { paths: ['/a*/b'] } ] }"),
        "authorization[0].to[1].paths[0]",
    );
    only(
        &with_policies("{ name: p, target: s, to: [ { paths: [health] } ] }"),
        "authorization[0].to[0].paths[0]",
    );
    valid(&with_policies(
        "{ name: p, target: s, action: deny, to: [ { methods: [PURGE], paths: ['*', /x/*, /health] } ] }",
    ));
}
