//! Shape errors in the file's words: one broken mesh file per row, and the exact line
//! `skiff-xds check` prints for it (path, what is wrong, what was found, where).

use super::*;

/// A route `services[0].routes[0]` whose one backend ref holds `field`.
fn backend(field: &str) -> String {
    format!(
        "services:\n  - name: a\n    routes:\n      - backendRefs:\n          - service: a\n            {field}\n"
    )
}

#[test]
fn every_shape_error_says_what_is_wrong_in_the_files_words() {
    let rows: Vec<(String, &str)> = vec![
        // Integers: the field's own bound, whatever was written.
        (
            backend("weight: fifty"),
            r#"services[0].routes[0].backendRefs[0].weight: must be an integer from 0 to 1000000, got "fifty" at line 6, column 21"#,
        ),
        (
            backend("weight: -5"),
            "services[0].routes[0].backendRefs[0].weight: must be an integer from 0 to 1000000, got -5 at line 6, column 21",
        ),
        (
            backend("weight: 5000000000"),
            "services[0].routes[0].backendRefs[0].weight: must be an integer from 0 to 1000000, got 5000000000 at line 6, column 21",
        ),
        (
            backend("weight: [1, 2]"),
            "services[0].routes[0].backendRefs[0].weight: must be an integer from 0 to 1000000, got a list at line 6, column 21",
        ),
        (
            "services: [ { name: a, circuitBreaker: { maxConnections: 1.5 } } ]".to_owned(),
            "services[0].circuitBreaker.maxConnections: must be an integer from 1 to 4294967295, got 1.5 at line 1, column 58",
        ),
        (
            "services: [ { name: a, routes: [ { retry: { maxBodyBytes: lots } } ] } ]".to_owned(),
            r#"services[0].routes[0].retry.maxBodyBytes: must be an integer from 0 to 16777216, got "lots" at line 1, column 59"#,
        ),
        (
            "authorization: [ { name: p, target: a, to: [ { ports: [ 80, 70000 ] } ] } ]"
                .to_owned(),
            "authorization[0].to[0].ports[1]: must be a port from 1 to 65535, got 70000 at line 1, column 61",
        ),
        // Lists and mappings.
        (
            "services:\n  - name: a\n    endpoints: 10.0.0.1:8080\n".to_owned(),
            r#"services[0].endpoints: must be a list, got "10.0.0.1:8080" at line 3, column 16"#,
        ),
        (
            "services:\n  - name: a\n    endpoints:\n      address: 10.0.0.1:8080\n".to_owned(),
            "services[0].endpoints: must be a list, got a mapping at line 4, column 7",
        ),
        (
            "services: [ { name: a, endpoints: [ 10.0.0.1:8080 ] } ]".to_owned(),
            r#"services[0].endpoints[0]: must be a mapping, got "10.0.0.1:8080" at line 1, column 37"#,
        ),
        (
            "services: [ { name: a, routes: [ { matches: { path: { value: / } } } ] } ]".to_owned(),
            "services[0].routes[0].matches: must be a list, got a mapping at line 1, column 45",
        ),
        (
            "mesh:\n  - trustDomain: example.org\n".to_owned(),
            "mesh: must be a mapping, got a list at line 2, column 3",
        ),
        (
            "workloads: [ { name: w, labels: [ app ] } ]".to_owned(),
            "workloads[0].labels: must be a mapping, got a list at line 1, column 33",
        ),
        // Strings and booleans.
        (
            "services: [ { name: [a, b] } ]".to_owned(),
            "services[0].name: must be a string, got a list at line 1, column 21",
        ),
        (
            "services:\n  - name:\n".to_owned(),
            "services[0].name: must be a string, got nothing at line 2, column 9",
        ),
        (
            "workloads: [ { name: w, labels: { app: { x: y } } } ]".to_owned(),
            "workloads[0].labels.app: must be a string, got a mapping at line 1, column 40",
        ),
        (
            "services: [ { name: a, routes: [ { retry: { nonIdempotent: maybe } } ] } ]"
                .to_owned(),
            r#"services[0].routes[0].retry.nonIdempotent: must be true or false, got "maybe" at line 1, column 60"#,
        ),
        (
            "services: [ { name: a, routes: [ { fault: { delay: { percent: half, duration: 1s } } } ] } ]"
                .to_owned(),
            r#"services[0].routes[0].fault.delay.percent: must be a number from 0 to 100, got "half" at line 1, column 63"#,
        ),
        // Durations.
        (
            "services: [ { name: a, connectTimeout: 200h } ]".to_owned(),
            "services[0].connectTimeout: must be at most 1 week (168h), got 200h at line 1, column 40",
        ),
        (
            "services: [ { name: a, connectTimeout: 5 seconds } ]".to_owned(),
            r#"services[0].connectTimeout: must be a duration, a number and a unit (ms, s, m, h) such as 250ms or 2s, got "5 seconds" at line 1, column 40"#,
        ),
        (
            "services: [ { name: a, routes: [ { timeouts: { request: [1s] } } ] } ]".to_owned(),
            "services[0].routes[0].timeouts.request: must be a duration such as 250ms or 2s, got a list at line 1, column 57",
        ),
        // Addresses.
        (
            "services: [ { name: a, addresses: [ 10.96.0.12 ] } ]".to_owned(),
            r#"services[0].addresses[0]: must be an ip:port address, got "10.96.0.12" at line 1, column 37"#,
        ),
        (
            "workloads: [ { name: w, inbound: { listen: nope, app: 127.0.0.1:9080 } } ]"
                .to_owned(),
            r#"workloads[0].inbound.listen: must be an ip:port address, got "nope" at line 1, column 44"#,
        ),
        // Enumerations list what they allow.
        (
            "services: [ { name: a, protocol: udp } ]".to_owned(),
            r#"services[0].protocol: must be one of auto, http1, http2, grpc, tcp, got udp at line 1, column 34"#,
        ),
        (
            "services: [ { name: a, protocol: [http1] } ]".to_owned(),
            "services[0].protocol: must be one of auto, http1, http2, grpc, tcp, got a list at line 1, column 34",
        ),
        (
            "services: [ { name: a, routes: [ { matches: [ { headers: [ { name: x, type: Prefix, value: y } ] } ] } ] } ]"
                .to_owned(),
            "services[0].routes[0].matches[0].headers[0].type: must be one of Exact, RegularExpression, got Prefix at line 1, column 77",
        ),
        // Unknown and missing fields, duplicates, the file as a whole.
        (
            backend("weigth: 1"),
            "services[0].routes[0].backendRefs[0].weigth: unknown field, expected one of service, namespace, weight at line 6, column 13",
        ),
        (
            "servics: []\n".to_owned(),
            "servics: unknown field, expected one of mesh, services, workloads, authorization at line 1, column 1",
        ),
        (
            "services: [ { namespace: a } ]".to_owned(),
            "services[0]: missing required field `name` at line 1, column 15",
        ),
        (
            "services: [ { name: a, name: b } ]".to_owned(),
            "services[0].name: duplicate key at line 1, column 24",
        ),
        (
            "- services\n".to_owned(),
            "must be a mapping, got a list at line 1, column 1",
        ),
        (
            "services: []\n---\nservices: []\n".to_owned(),
            "a mesh file is a single YAML document at line 3, column 1",
        ),
    ];
    assert!(rows.len() >= 20);
    let mut wrong = Vec::new();
    for (yaml, want) in &rows {
        let got = match load(yaml) {
            Ok(_) => "accepted".to_owned(),
            Err(e) => e.to_string(),
        };
        if got != *want {
            wrong.push(format!("{yaml}\n  want: {want}\n  got:  {got}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
