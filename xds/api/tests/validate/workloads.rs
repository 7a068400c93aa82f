//! Rules for workloads: names, inbound listeners, rate limits, labels.

use super::*;

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
