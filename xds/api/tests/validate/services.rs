//! Rules for services: names, hosts, addresses, endpoints and the service-level resilience
//! blocks (circuitBreaker, outlierDetection, retryBudget).

use super::*;

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
    valid(&with_endpoints(
        "{ workload: w }, { address: '127.0.0.1:1' }",
    ));
}

#[test]
fn a_workload_replica_has_its_own_address_and_needs_no_inbound() {
    // Two replicas of one workload (pods), one with a stated identity.
    valid(&with_endpoints(
        "{ workload: bare, address: '10.0.0.1:80' }, \
         { workload: bare, address: '10.0.0.2:80', identity: 'spiffe://cluster.local/ns/default/sa/x' }",
    ));
    only(
        &with_endpoints(
            "{ workload: bare, address: '10.0.0.1:80' }, { workload: bare, address: '10.0.0.1:80' }",
        ),
        "services[0].endpoints[1]",
    );
    only(
        &with_endpoints("{ workload: ghost, address: '10.0.0.1:80' }"),
        "services[0].endpoints[0].workload",
    );
    only(
        &with_endpoints(
            "{ workload: bare, address: '10.0.0.1:80', identity: 'spiffe://other.org/ns/default/sa/x' }",
        ),
        "services[0].endpoints[0].identity",
    );
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
