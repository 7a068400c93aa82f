//! Discovery resources as the control plane sends them and the proxy receives them: a mesh
//! file survives compile → wire → decode → mesh file, versions move only with content, and
//! a malformed resource is refused naming its field.

use prost::Message;
use skiff_api::{
    ConfigError, load, model,
    model::MeshFile,
    pb,
    resource::{
        self, Decoded, Kind, MESH_SETTINGS_NAME, Received, ResourceError, Resources, compile,
        content_version, decode, normalize,
    },
    validate::validate,
};

const FULL: &str = include_str!("data/full-mesh.yaml");

/// What the full example leaves out: other namespaces and trust domains, IPv6, sub-millisecond
/// durations, unnamed routes, every retry condition, a gRPC fault abort with status 0 (OK, the
/// proto's zero value), empty tracing, TCP, deny policies.
const EDGES: &str = r#"
mesh:
  trustDomain: mesh.example
  tracing: {}
services:
  - name: api
    namespace: shop
    addresses: ["[fd00::12]:8080", "10.0.0.7:80"]
    protocol: grpc
    connectTimeout: 0.5ms
    endpoints:
      - workload: api-0
      - workload: cart-0
        namespace: cart
        labels: { zone: b }
      - address: "[::1]:9000"
    routes:
      - matches:
          - method: POST
            queryParams: [ { name: debug, type: RegularExpression, value: "on|1" } ]
          - headers: [ { name: x-a, value: b } ]
        backendRefs: [ { service: cart, namespace: cart, weight: 0 }, { service: api } ]
        timeouts: { backendRequest: 1.5s }
        retry:
          attempts: 1
          retryOn: [gateway-error, refused-stream, retriable-4xx, retriable-status-codes,
                    cancelled, deadline-exceeded, resource-exhausted, unavailable]
          retriableStatusCodes: [409, 429]
          nonIdempotent: true
        fault: { abort: { percent: 100, grpcStatus: 0 }, delay: { percent: 0, duration: 1h } }
      - name: exact
        matches: [ { path: { type: Exact, value: /health } } ]
        retry: {}
  - name: cart
    namespace: cart
    hosts: ["cart.internal:8080"]
    protocol: tcp
    loadBalancer: round-robin
    outlierDetection: {}
    circuitBreaker: { maxConnections: 1 }
    retryBudget: { ratio: 0 }
    endpoints: [ { workload: cart-0 } ]
  - name: empty
    namespace: shop
    protocol: http2
workloads:
  - name: api-0
    namespace: shop
    inbound: { listen: "[::1]:16001", app: "[::1]:8001", mtls: disabled }
    rateLimit: { requestsPerSecond: 5 }
  - name: cart-0
    namespace: cart
    serviceAccount: cart
    labels: { app.kubernetes.io/name: cart }
    inbound: { listen: 127.0.0.1:16002, app: 127.0.0.1:8002, mtls: strict }
  - name: batch
    namespace: jobs
authorization:
  - name: deny-all.batch
    namespace: cart
    target: cart
    action: deny
  - name: open
    namespace: shop
    target: api
    from: [ spiffe://mesh.example/ns/shop/sa/default ]
    to: [ { paths: ["*"] }, { methods: [PURGE] } ]
"#;

fn mesh(yaml: &str) -> MeshFile {
    load(yaml).unwrap_or_else(|e| panic!("test mesh refused: {e}"))
}

/// Every resource, each through prost's encoding and back, as the stream carries them.
fn over_the_wire(resources: &Resources) -> Vec<pb::Resource> {
    Kind::ALL
        .into_iter()
        .flat_map(|kind| resources.of_kind(kind))
        .map(|r| {
            let bytes = r.encode_to_vec();
            pb::Resource::decode(bytes.as_slice()).expect("a resource we encoded decodes")
        })
        .collect()
}

fn receive(resources: &[pb::Resource]) -> Received {
    let mut received = Received::default();
    for r in resources {
        let decoded = decode(r).unwrap_or_else(|e| panic!("compiled resource refused: {e}"));
        assert_eq!(
            decoded.kind().type_url(),
            r.resource.as_ref().map_or("", |a| a.type_url.as_str())
        );
        received.insert(decoded);
    }
    received
}

#[track_caller]
fn assert_round_trip(yaml: &str) -> MeshFile {
    let original = mesh(yaml);
    let compiled = compile(&original);
    let rebuilt = receive(&over_the_wire(&compiled)).to_mesh_file();
    assert_eq!(rebuilt, normalize(&original));
    // The rebuilt file is a valid mesh file again and compiles to the very same resources.
    validate(&rebuilt).unwrap_or_else(|e| panic!("rebuilt mesh refused: {e}"));
    assert_eq!(compile(&rebuilt), compiled);
    rebuilt
}

#[test]
fn full_example_round_trips() {
    let rebuilt = assert_round_trip(FULL);
    // What `normalize` changes: reviews-v2's default hosts are explicit, and services come in
    // resource-name order.
    let names: Vec<_> = rebuilt.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["productpage", "reviews", "reviews-v2"]);
    assert_eq!(
        rebuilt.services[2].hosts.as_deref(),
        Some(
            &[
                "reviews-v2".to_owned(),
                "reviews-v2.default".to_owned(),
                "reviews-v2.default.svc".to_owned(),
                "reviews-v2.default.svc.cluster.local".to_owned(),
            ][..]
        )
    );
}

#[test]
fn edge_cases_round_trip() {
    let rebuilt = assert_round_trip(EDGES);
    assert_eq!(
        rebuilt.mesh.tracing,
        Some(model::TracingSettings { sampling: None }),
        "an empty tracing block stays distinct from none"
    );
    let api = &rebuilt.services[1];
    assert_eq!(api.name, "api");
    assert_eq!(
        api.connect_timeout,
        "0.5ms".parse().expect("a duration"),
        "sub-millisecond durations are exact"
    );
}

#[test]
fn retriable_status_codes_and_abort_statuses_survive_the_wire() {
    let compiled = compile(&mesh(EDGES));
    let route = &compiled.services["shop/api"].message.routes[0];
    let retry = route.retry.as_ref().expect("a retry");
    assert!(
        retry
            .retry_on
            .contains(&i32::from(pb::RetryOn::RetriableStatusCodes))
    );
    assert_eq!(retry.retriable_status_codes, [409, 429]);
    let abort = route
        .fault
        .as_ref()
        .and_then(|f| f.abort.as_ref())
        .expect("an abort");
    assert_eq!((abort.status, abort.grpc_status), (None, Some(0)));

    let rebuilt = assert_round_trip(EDGES);
    let route = &rebuilt.services[1].routes[0];
    let retry = route.retry.as_ref().expect("a retry");
    assert!(
        retry
            .retry_on
            .contains(&model::RetryOn::RetriableStatusCodes)
    );
    assert_eq!(retry.retriable_status_codes, [409, 429]);
    assert_eq!(
        route.fault.as_ref().and_then(|f| f.abort.clone()),
        Some(model::FaultAbort {
            percent: 100.0,
            status: None,
            grpc_status: Some(0),
        }),
        "a grpcStatus of 0 stays set"
    );

    let rebuilt = assert_round_trip(FULL);
    let reviews = &rebuilt.services[1];
    let abort = reviews.routes[0]
        .fault
        .as_ref()
        .and_then(|f| f.abort.clone())
        .expect("an abort");
    assert_eq!((abort.status, abort.grpc_status), (Some(503), None));
}

#[test]
fn authorization_mode_ports_and_peer_patterns_survive_the_wire() {
    let yaml = "services: [ { name: s } ]\nauthorization:\n  - { name: watch, target: s, \
                mode: audit, action: deny, from: [ unauthenticated, 'spiffe://cluster.local/*', \
                'spiffe://cluster.local/ns/a/*' ], to: [ { ports: [8080, 65535] }, {} ] }\n";
    let rebuilt = assert_round_trip(yaml);
    let policy = &rebuilt.authorization[0];
    assert_eq!(policy.mode, model::AuthzMode::Audit);
    assert_eq!(policy.to[0].ports, [8080, 65535]);

    let mut policy = compile(&mesh(yaml)).authorizations["default/watch"]
        .message
        .clone();
    policy.to[0].ports[1] = 0;
    let e = refused(&envelope(Kind::Authorization, "default/watch", &policy));
    assert_eq!(
        fields(&e.error),
        [("to[0].ports[1]", "must be a port from 1 to 65535, got 0")]
    );
}

#[test]
fn resources_have_names_type_urls_and_hex_versions() {
    let resources = compile(&mesh(FULL));
    let names: Vec<_> = resources.services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "default/productpage",
            "default/reviews",
            "default/reviews-v2"
        ]
    );
    assert_eq!(
        resources.endpoints.keys().collect::<Vec<_>>(),
        resources.services.keys().collect::<Vec<_>>()
    );
    assert_eq!(resources.workloads.len(), 3);
    assert!(
        resources
            .authorizations
            .contains_key("default/reviews-readers")
    );
    assert_eq!(resources.mesh.name(), MESH_SETTINGS_NAME);

    for kind in Kind::ALL {
        assert_eq!(Kind::from_type_url(kind.type_url()), Some(kind));
        for r in resources.of_kind(kind) {
            let any = r.resource.as_ref().expect("a payload");
            assert_eq!(any.type_url, kind.type_url());
            assert_eq!(r.version, content_version(&any.value));
            assert_eq!(r.version.len(), 16);
            assert!(r.version.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(resources.get(kind, &r.name), Some(r));
        }
    }
    assert_eq!(
        Kind::from_type_url("type.googleapis.com/skiff.xds.v1.Route"),
        None
    );
    assert_eq!(
        resource::SERVICE_TYPE_URL,
        "type.googleapis.com/skiff.xds.v1.Service"
    );
}

#[test]
fn workload_endpoints_are_resolved_in_the_resource() {
    let resources = compile(&mesh(FULL));
    let eps = &resources.endpoints["default/reviews"].message;
    assert_eq!(eps.service, "reviews");
    assert_eq!(eps.endpoints.len(), 2);
    let meshed = &eps.endpoints[0];
    assert_eq!(meshed.workload, "reviews-v1");
    assert_eq!(meshed.address, "127.0.0.1:16006");
    assert_eq!(
        meshed.identity,
        "spiffe://cluster.local/ns/default/sa/reviews"
    );
    let plain = &eps.endpoints[1];
    assert_eq!(plain.workload, "");
    assert_eq!(plain.address, "127.0.0.1:9082");
    assert_eq!(
        resources.workloads["default/productpage"].message.spiffe_id,
        "spiffe://cluster.local/ns/default/sa/productpage"
    );
}

// ---- versions ----

/// The resources whose versions differ between two compilations, as `Kind name`.
fn changed(a: &Resources, b: &Resources) -> Vec<String> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let before: Vec<_> = a.of_kind(kind).collect();
        let after: Vec<_> = b.of_kind(kind).collect();
        for r in &after {
            if before
                .iter()
                .find(|p| p.name == r.name)
                .is_none_or(|p| p.version != r.version)
            {
                out.push(format!("{kind} {}", r.name));
            }
        }
        for p in &before {
            if !after.iter().any(|r| r.name == p.name) {
                out.push(format!("{kind} {} (removed)", p.name));
            }
        }
    }
    out
}

#[test]
fn versions_are_stable_across_compilations() {
    let a = compile(&mesh(FULL));
    let b = compile(&mesh(FULL));
    assert_eq!(a, b);
    assert_eq!(changed(&a, &b), Vec::<String>::new());
    for kind in Kind::ALL {
        assert_eq!(a.kind_version(kind), b.kind_version(kind));
    }
}

#[test]
fn a_route_change_changes_only_its_service() {
    let base = mesh(FULL);
    let mut edited = base.clone();
    edited.services[0].routes[0].backend_refs[0].weight = 0;
    edited.services[0].routes[0].backend_refs[1].weight = 100;
    let (a, b) = (compile(&base), compile(&edited));
    assert_eq!(changed(&a, &b), ["Service default/reviews"]);
    assert_ne!(a.kind_version(Kind::Service), b.kind_version(Kind::Service));
    assert_eq!(
        a.kind_version(Kind::Endpoints),
        b.kind_version(Kind::Endpoints)
    );
}

#[test]
fn endpoint_churn_leaves_the_service_alone() {
    let base = mesh(FULL);
    let mut edited = base.clone();
    edited.services[0].endpoints.push(model::Endpoint {
        address: Some("127.0.0.1:9090".parse().expect("an address")),
        ..model::Endpoint::default()
    });
    assert_eq!(
        changed(&compile(&base), &compile(&edited)),
        ["Endpoints default/reviews"]
    );

    // A workload moving its listener changes the workload and every Endpoints naming it.
    let mut moved = base.clone();
    if let Some(inbound) = &mut moved.workloads[0].inbound {
        inbound.listen = "127.0.0.1:17006".parse().expect("an address");
    }
    assert_eq!(
        changed(&compile(&base), &compile(&moved)),
        ["Endpoints default/reviews", "Workload default/reviews-v1"]
    );
}

#[test]
fn trust_domain_changes_reach_identities_and_default_hosts() {
    let base = mesh(FULL);
    let mut edited = base.clone();
    edited.mesh.trust_domain = "mesh.example".to_owned();
    // Only reviews-v2 uses default hosts; every endpoint set names a workload identity.
    assert_eq!(
        changed(&compile(&base), &compile(&edited)),
        [
            "Service default/reviews-v2",
            "Endpoints default/productpage",
            "Endpoints default/reviews",
            "Endpoints default/reviews-v2",
            "Workload default/productpage",
            "Workload default/reviews-v1",
            "Workload default/reviews-v2",
            "MeshSettings mesh",
        ]
    );
}

// ---- receiving part of the mesh ----

#[test]
fn a_proxy_holding_only_services_gets_resolved_endpoints() {
    let resources = compile(&mesh(FULL));
    let mut received = Received::default();
    for r in [
        resources.get(Kind::Service, "default/reviews"),
        resources.get(Kind::Endpoints, "default/reviews"),
        resources.get(Kind::Workload, "default/productpage"),
    ]
    .into_iter()
    .flatten()
    {
        received.insert(decode(r).expect("a compiled resource decodes"));
    }
    let rebuilt = received.to_mesh_file();
    assert_eq!(rebuilt.mesh, model::MeshSettings::default());
    assert_eq!(rebuilt.services.len(), 1);
    let eps = &rebuilt.services[0].endpoints;
    // reviews-v1 is not held: its endpoint is the address and identity it resolved to,
    // still named by its workload (for `/config_dump` and the identity's owner).
    assert_eq!(
        eps[0],
        model::Endpoint {
            workload: Some("reviews-v1".to_owned()),
            address: Some("127.0.0.1:16006".parse().expect("an address")),
            identity: Some("spiffe://cluster.local/ns/default/sa/reviews".to_owned()),
            ..model::Endpoint::default()
        }
    );
    assert_eq!(eps[1].address, Some("127.0.0.1:9082".parse().expect("ok")));
    assert_eq!(rebuilt.workloads.len(), 1);

    assert!(received.remove(Kind::Endpoints, "default/reviews"));
    assert!(!received.remove(Kind::Endpoints, "default/reviews"));
    assert_eq!(received.to_mesh_file().services[0].endpoints, []);
}

// ---- malformed resources ----

fn envelope<T: Message>(kind: Kind, name: &str, message: &T) -> pb::Resource {
    let value = message.encode_to_vec();
    pb::Resource {
        name: name.to_owned(),
        version: content_version(&value),
        resource: Some(prost_types::Any {
            type_url: kind.type_url().to_owned(),
            value,
        }),
        aliases: Vec::new(),
    }
}

fn refused(r: &pb::Resource) -> ResourceError {
    match decode(r) {
        Ok(d) => panic!("accepted a malformed resource: {d:?}"),
        Err(e) => e,
    }
}

/// The (path, message) of each error.
fn fields(e: &ConfigError) -> Vec<(&str, &str)> {
    e.errors
        .iter()
        .map(|f| (f.path.as_str(), f.message.as_str()))
        .collect()
}

/// The full example's `reviews` service message, to break.
fn reviews() -> pb::Service {
    compile(&mesh(FULL)).services["default/reviews"]
        .message
        .clone()
}

/// Refused as a Service named `default/reviews`, with one error at `path`; its message.
#[track_caller]
fn service_error(svc: &pb::Service, path: &str) -> String {
    let e = refused(&envelope(Kind::Service, "default/reviews", svc));
    assert_eq!(e.name, "default/reviews");
    assert_eq!(e.type_url, resource::SERVICE_TYPE_URL);
    let found = fields(&e.error);
    assert_eq!(
        found.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        [path],
        "{e}"
    );
    found[0].1.to_owned()
}

#[test]
fn bad_enum_values_are_named() {
    let mut svc = reviews();
    svc.protocol = 42;
    let message = service_error(&svc, "protocol");
    assert_eq!(
        message,
        "unknown value 42 (expected auto, http1, http2, grpc or tcp)"
    );
    let e = refused(&envelope(Kind::Service, "default/reviews", &svc));
    assert_eq!(
        e.to_string(),
        "Service default/reviews: protocol: unknown value 42 (expected auto, http1, http2, grpc or tcp)"
    );

    let mut svc = reviews();
    svc.routes[1].matches[0].headers[0].r#type = 7;
    service_error(&svc, "routes[1].matches[0].headers[0].type");

    let mut svc = reviews();
    if let Some(retry) = &mut svc.routes[0].retry {
        retry.retry_on[2] = 0;
    }
    let message = service_error(&svc, "routes[0].retry.retryOn[2]");
    assert!(message.starts_with("must be set"), "{message}");

    let mut w = compile(&mesh(FULL)).workloads["default/reviews-v1"]
        .message
        .clone();
    if let Some(inbound) = &mut w.inbound {
        inbound.mtls = -1;
    }
    let e = refused(&envelope(Kind::Workload, "default/reviews-v1", &w));
    assert_eq!(fields(&e.error)[0].0, "inbound.mtls");
}

fn retry_of(svc: &mut pb::Service) -> &mut pb::Retry {
    svc.routes[0]
        .retry
        .as_mut()
        .expect("the canary route retries")
}

fn abort_of(svc: &mut pb::Service) -> &mut pb::FaultAbort {
    svc.routes[0]
        .fault
        .as_mut()
        .and_then(|f| f.abort.as_mut())
        .expect("the canary route aborts")
}

#[test]
fn bad_resilience_fields_are_named_on_receipt() {
    type Edit = fn(&mut pb::Service);
    let cases: [(Edit, &str, &str); 20] = [
        (
            |s| retry_of(s).retry_on[0] = 0,
            "routes[0].retry.retryOn[0]",
            "must be set (0 is RETRY_ON_UNSPECIFIED; expected 5xx, gateway-error, reset, \
             connect-failure, refused-stream, retriable-4xx, retriable-status-codes, cancelled, \
             deadline-exceeded, resource-exhausted or unavailable)",
        ),
        (
            |s| retry_of(s).retry_on.push(12),
            "routes[0].retry.retryOn[3]",
            "unknown value 12 (expected 5xx, gateway-error, reset, connect-failure, \
             refused-stream, retriable-4xx, retriable-status-codes, cancelled, deadline-exceeded, \
             resource-exhausted or unavailable)",
        ),
        (
            |s| retry_of(s).retry_on.push(pb::RetryOn::Reset.into()),
            "routes[0].retry.retryOn[3]",
            "reset is listed twice (first at retryOn[1])",
        ),
        (
            |s| retry_of(s).attempts = 0,
            "routes[0].retry.attempts",
            "must be from 1 to 10, got 0",
        ),
        (
            |s| retry_of(s).attempts = 11,
            "routes[0].retry.attempts",
            "must be from 1 to 10, got 11",
        ),
        (
            |s| {
                if let Some(b) = &mut retry_of(s).backoff {
                    b.base = Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 0,
                    });
                }
            },
            "routes[0].retry.backoff.base",
            "must be at most backoff.max (250ms), got 1s",
        ),
        (
            |s| {
                let retry = retry_of(s);
                retry
                    .retry_on
                    .push(pb::RetryOn::RetriableStatusCodes.into());
                retry.retriable_status_codes = vec![409, 70_000];
            },
            "routes[0].retry.retriableStatusCodes[1]",
            "must be from 100 to 599, got 70000",
        ),
        (
            |s| {
                let retry = retry_of(s);
                retry
                    .retry_on
                    .push(pb::RetryOn::RetriableStatusCodes.into());
                retry.retriable_status_codes = vec![99];
            },
            "routes[0].retry.retriableStatusCodes[0]",
            "must be from 100 to 599, got 99",
        ),
        (
            |s| {
                retry_of(s)
                    .retry_on
                    .push(pb::RetryOn::RetriableStatusCodes.into())
            },
            "routes[0].retry.retriableStatusCodes",
            "must not be empty when retryOn has retriable-status-codes",
        ),
        (
            |s| retry_of(s).retriable_status_codes = vec![429],
            "routes[0].retry.retriableStatusCodes",
            "only used with retryOn retriable-status-codes",
        ),
        (
            |s| abort_of(s).grpc_status = Some(14),
            "routes[0].fault.abort",
            "must set only one of status or grpcStatus",
        ),
        (
            |s| {
                let abort = abort_of(s);
                abort.status = None;
                abort.grpc_status = Some(17);
            },
            "routes[0].fault.abort.grpcStatus",
            "must be from 0 to 16, got 17",
        ),
        (
            |s| abort_of(s).status = None,
            "routes[0].fault.abort",
            "must set one of status or grpcStatus",
        ),
        (
            |s| abort_of(s).status = Some(70_000),
            "routes[0].fault.abort.status",
            "must be from 200 to 599, got 70000",
        ),
        (
            |s| abort_of(s).status = Some(600),
            "routes[0].fault.abort.status",
            "must be from 200 to 599, got 600",
        ),
        (
            |s| abort_of(s).percent = 101.0,
            "routes[0].fault.abort.percent",
            "must be from 0 to 100, got 101",
        ),
        (
            |s| {
                if let Some(d) = s.routes[0].fault.as_mut().and_then(|f| f.delay.as_mut()) {
                    d.percent = -1.0;
                }
            },
            "routes[0].fault.delay.percent",
            "must be from 0 to 100, got -1",
        ),
        (
            |s| {
                if let Some(od) = &mut s.outlier_detection {
                    od.max_ejection_percent = 101;
                }
            },
            "outlierDetection.maxEjectionPercent",
            "must be at most 100, got 101",
        ),
        (
            |s| {
                if let Some(b) = &mut s.retry_budget {
                    b.ratio = 1.5;
                }
            },
            "retryBudget.ratio",
            "must be from 0 to 1, got 1.5",
        ),
        (
            |s| {
                if let Some(cb) = &mut s.circuit_breaker {
                    cb.max_requests = 0;
                }
            },
            "circuitBreaker.maxRequests",
            "must be at least 1, got 0",
        ),
    ];
    for (edit, path, message) in cases {
        let mut svc = reviews();
        edit(&mut svc);
        assert_eq!(service_error(&svc, path), message, "at {path}");
    }

    let mut w = compile(&mesh(FULL)).workloads["default/reviews-v1"]
        .message
        .clone();
    if let Some(limit) = &mut w.rate_limit {
        limit.requests_per_second = 0;
    }
    let e = refused(&envelope(Kind::Workload, "default/reviews-v1", &w));
    assert_eq!(
        fields(&e.error),
        [("rateLimit.requestsPerSecond", "must be at least 1, got 0")]
    );
}

#[test]
fn missing_names_are_named() {
    let mut svc = reviews();
    svc.name.clear();
    let e = refused(&envelope(Kind::Service, "default/", &svc));
    assert_eq!(fields(&e.error), [("name", "must not be empty")]);

    let mut policy = compile(&mesh(FULL)).authorizations["default/reviews-readers"]
        .message
        .clone();
    policy.namespace.clear();
    let e = refused(&envelope(Kind::Authorization, "/reviews-readers", &policy));
    assert_eq!(fields(&e.error), [("namespace", "must not be empty")]);

    let mut eps = compile(&mesh(FULL)).endpoints["default/reviews"]
        .message
        .clone();
    eps.service = "Reviews".to_owned();
    let e = refused(&envelope(Kind::Endpoints, "default/Reviews", &eps));
    assert_eq!(fields(&e.error)[0].0, "service");
}

#[test]
fn invalid_durations_are_named() {
    let mut svc = reviews();
    svc.connect_timeout = Some(prost_types::Duration {
        seconds: -1,
        nanos: 0,
    });
    assert_eq!(
        service_error(&svc, "connectTimeout"),
        "must not be negative, got -1s 0ns"
    );

    svc.connect_timeout = Some(prost_types::Duration {
        seconds: 1,
        nanos: 1_000_000_000,
    });
    service_error(&svc, "connectTimeout");

    svc.connect_timeout = Some(prost_types::Duration {
        seconds: 8 * 24 * 3600,
        nanos: 0,
    });
    service_error(&svc, "connectTimeout");

    svc.connect_timeout = None;
    assert_eq!(service_error(&svc, "connectTimeout"), "is required");

    let mut svc = reviews();
    if let Some(backoff) = svc.routes[0]
        .retry
        .as_mut()
        .and_then(|r| r.backoff.as_mut())
    {
        backoff.base = None;
    }
    service_error(&svc, "routes[0].retry.backoff.base");

    // Well formed but against the rules: a per-try timeout of zero.
    let mut svc = reviews();
    if let Some(t) = &mut svc.routes[0].timeouts {
        t.backend_request = Some(prost_types::Duration::default());
    }
    assert_eq!(
        service_error(&svc, "routes[0].timeouts.backendRequest"),
        "must be greater than 0"
    );
}

#[test]
fn invalid_socket_addresses_are_named() {
    let mut svc = reviews();
    svc.addresses[0] = "10.96.0.12".to_owned();
    assert_eq!(
        service_error(&svc, "addresses[0]"),
        r#"must be an ip:port address, got "10.96.0.12""#
    );

    let mut eps = compile(&mesh(FULL)).endpoints["default/reviews"]
        .message
        .clone();
    eps.endpoints[1].address = "reviews:9082".to_owned();
    let e = refused(&envelope(Kind::Endpoints, "default/reviews", &eps));
    assert_eq!(fields(&e.error)[0].0, "endpoints[1].address");

    let mut w = compile(&mesh(FULL)).workloads["default/reviews-v1"]
        .message
        .clone();
    if let Some(inbound) = &mut w.inbound {
        inbound.app = "127.0.0.1:99999".to_owned();
    }
    let e = refused(&envelope(Kind::Workload, "default/reviews-v1", &w));
    assert_eq!(fields(&e.error)[0].0, "inbound.app");
}

#[test]
fn rule_violations_are_named_within_the_resource() {
    let mut svc = reviews();
    let rule = pb::RouteMatch {
        path: Some(pb::PathMatch {
            r#type: pb::PathMatchType::RegularExpression.into(),
            value: "/v[0-9".to_owned(),
        }),
        ..pb::RouteMatch::default()
    };
    svc.routes[0].matches.push(rule);
    let message = service_error(&svc, "routes[0].matches[1].path.value");
    assert!(
        message.starts_with("invalid regular expression"),
        "{message}"
    );

    let mut svc = reviews();
    svc.routes[0].backend_refs[0].weight = 2_000_000;
    service_error(&svc, "routes[0].backendRefs[0].weight");

    // Backends and targets are other resources: not held is not an error.
    let mut svc = reviews();
    svc.routes[0].backend_refs[0].service = "elsewhere".to_owned();
    assert!(decode(&envelope(Kind::Service, "default/reviews", &svc)).is_ok());

    let mut svc = reviews();
    svc.hosts.clear();
    service_error(&svc, "hosts");

    let mut eps = compile(&mesh(FULL)).endpoints["default/reviews"]
        .message
        .clone();
    eps.endpoints[0].identity.clear();
    let e = refused(&envelope(Kind::Endpoints, "default/reviews", &eps));
    assert_eq!(
        fields(&e.error),
        [(
            "endpoints[0].identity",
            "must be set for a workload endpoint (its SPIFFE ID)"
        )]
    );

    let mut w = compile(&mesh(FULL)).workloads["default/reviews-v1"]
        .message
        .clone();
    w.spiffe_id = "spiffe://cluster.local/ns/default/sa/root".to_owned();
    let e = refused(&envelope(Kind::Workload, "default/reviews-v1", &w));
    assert_eq!(fields(&e.error)[0].0, "spiffeId");

    let settings = pb::MeshSettings {
        trust_domain: "cluster.local".to_owned(),
        tracing: Some(pb::TracingSettings {
            sampling: Some(f64::NAN),
        }),
        trust_anchors: Vec::new(),
    };
    let e = refused(&envelope(Kind::MeshSettings, MESH_SETTINGS_NAME, &settings));
    assert_eq!(fields(&e.error)[0].0, "tracing.sampling");
}

#[test]
fn envelopes_that_do_not_hold_together_are_refused() {
    let svc = reviews();

    let wrong_name = envelope(Kind::Service, "default/ratings", &svc);
    assert!(refused(&wrong_name).to_string().contains("does not match"));

    let mut unknown = envelope(Kind::Service, "default/reviews", &svc);
    if let Some(any) = &mut unknown.resource {
        any.type_url = "type.googleapis.com/skiff.xds.v1.Route".to_owned();
    }
    let e = refused(&unknown);
    assert_eq!(
        e.to_string(),
        r#"Route default/reviews: unknown type URL "type.googleapis.com/skiff.xds.v1.Route""#
    );

    let mut garbage = envelope(Kind::Service, "default/reviews", &svc);
    if let Some(any) = &mut garbage.resource {
        any.value = vec![0xff, 0xff, 0xff];
    }
    assert!(
        refused(&garbage)
            .to_string()
            .contains("not a valid skiff.xds.v1.Service message")
    );

    let empty = pb::Resource {
        name: "default/reviews".to_owned(),
        ..pb::Resource::default()
    };
    assert!(refused(&empty).to_string().contains("carries no payload"));
}

#[test]
fn decoded_resources_know_their_kind_and_name() {
    let resources = compile(&mesh(EDGES));
    for kind in Kind::ALL {
        for r in resources.of_kind(kind) {
            let d: Decoded = decode(r).expect("a compiled resource decodes");
            assert_eq!((d.kind(), d.name()), (kind, r.name.clone()));
        }
    }
}

#[test]
fn aliases_resolve_like_the_proxy() {
    let mesh = skiff_api::load(
        "services:\n  - name: reviews\n    addresses: [\"10.96.0.7:80\"]\n  - name: ports\n    hosts: [\"ports:8080\"]\n  - name: any\n    hosts: [\"*\"]\n",
    )
    .expect("valid mesh");
    let res = skiff_api::resource::compile(&mesh);
    let resolve = |name: &str| {
        let found = res.resolve(Kind::Service, name);
        assert!(found.len() <= 1, "a service alias means one service");
        found.first().map(|s| (*s).to_owned())
    };
    assert_eq!(resolve("host:reviews").as_deref(), Some("default/reviews"));
    assert_eq!(
        resolve("host:reviews.default.svc.cluster.local:9080").as_deref(),
        Some("default/reviews"),
        "the port is dropped when the exact authority is not claimed"
    );
    assert_eq!(resolve("host:ports:8080").as_deref(), Some("default/ports"));
    assert_eq!(
        resolve("host:ports:9090"),
        None,
        "only that port was claimed"
    );
    assert_eq!(
        resolve("addr:10.96.0.7:80").as_deref(),
        Some("default/reviews")
    );
    assert_eq!(resolve("addr:10.96.0.7:81"), None);
    assert_eq!(resolve("addr:garbage"), None);
    assert_eq!(resolve("host:*").as_deref(), Some("default/any"));
    assert_eq!(resolve("host:nowhere"), None);
    assert_eq!(
        resolve("default/reviews").as_deref(),
        Some("default/reviews")
    );
    assert!(
        res.resolve(Kind::Endpoints, "host:reviews").is_empty(),
        "only Services take host aliases"
    );
    assert_eq!(
        skiff_api::resource::host_alias("Reviews:9080"),
        "host:reviews:9080"
    );
}

#[test]
fn a_workload_alias_stands_for_the_policies_applying_to_it() {
    let mesh = skiff_api::load(
        r#"
services:
  - name: reviews
    endpoints: [ { workload: reviews-v1 }, { workload: reviews-v2 } ]
  - name: ratings
    endpoints: [ { workload: ratings-v1 } ]
workloads:
  - { name: reviews-v1, inbound: { listen: "127.0.0.1:16001", app: "127.0.0.1:9001" } }
  - { name: reviews-v2, inbound: { listen: "127.0.0.1:16002", app: "127.0.0.1:9002" } }
  - { name: ratings-v1, inbound: { listen: "127.0.0.1:16003", app: "127.0.0.1:9003" } }
authorization:
  - { name: readers, target: reviews, from: [ spiffe://cluster.local/ns/default/sa/productpage ] }
  - { name: no-delete, target: reviews, action: deny }
  - { name: raters, target: ratings }
"#,
    )
    .expect("valid mesh");
    let res = skiff_api::resource::compile(&mesh);
    let alias = skiff_api::resource::workload_alias("default", "reviews-v2");
    assert_eq!(
        res.resolve(Kind::Authorization, &alias),
        ["default/readers", "default/no-delete"],
        "in file order"
    );
    let alias = skiff_api::resource::workload_alias("default", "ratings-v1");
    assert_eq!(res.resolve(Kind::Authorization, &alias), ["default/raters"]);
    let alias = skiff_api::resource::workload_alias("default", "nobody");
    assert!(res.resolve(Kind::Authorization, &alias).is_empty());
}
