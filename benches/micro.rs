//! Criterion micro-benchmarks of the per-request pieces: route selection, protocol detection,
//! header hygiene, authorization decisions, tracing (unsampled and sampled) and the resilience
//! layer's cost when a policy is present but not triggered; and the per-connection cost of a mesh mTLS handshake.
//! Compare runs with `--save-baseline` / `--baseline`, never absolute times.

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use skiff::{
    authz::{self, AuthzMetrics, Peer, Policies},
    bootstrap::Settings,
    cluster::Observed,
    detect,
    http::{Version, headers},
    resilience::{
        self, Attempt, AttemptCx, Outcome, Plan, Reply, ResilienceError, ResilienceMetrics,
    },
    snapshot::{CompileContext, Snapshot},
    telemetry::{
        Metrics,
        export::{SpanQueue, TraceMetrics},
        spans::Tracer,
    },
    tls::{Inner, MeshTls, TlsMetrics},
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

fn settings() -> Settings {
    Settings {
        drain_timeout: std::time::Duration::from_secs(5),
        detect_timeout: std::time::Duration::from_secs(10),
        opaque_ports: vec![],
        max_header_bytes: 65536,
        h1_idle_timeout: std::time::Duration::from_secs(3),
        h1_max_idle: 64,
    }
}

/// A mesh with one service holding `n` routes; only the last one matches `/api/items`.
fn mesh_with_routes(n: usize) -> String {
    let mut y = String::from(
        "services:\n  - name: reviews\n    endpoints: [ { address: 127.0.0.1:9 } ]\n    routes:\n",
    );
    for i in 0..n - 1 {
        y.push_str(&format!(
            "      - name: r{i}\n        matches: [ {{ path: {{ type: PathPrefix, value: /p{i} }}, method: GET, headers: [ {{ name: x-r, value: \"{i}\" }} ] }} ]\n"
        ));
    }
    y.push_str("      - name: last\n        matches: [ { path: { type: RegularExpression, value: \"/api/[a-z]+\" } } ]\n");
    y
}

fn route_select(c: &mut Criterion) {
    let mesh = skiff_api::load(&mesh_with_routes(50)).expect("valid bench mesh");
    let metrics = Metrics::new();
    let settings = settings();
    let resilience = ResilienceMetrics::default();
    let cx = CompileContext {
        settings: &settings,
        metrics: &metrics,
        resilience: &resilience,
        tls: None,
        authz: &AuthzMetrics::default(),
        policies_selected: false,
        workload: None,
        version: "bench".into(),
    };
    let snap = Snapshot::compile(&mesh, &cx, None).expect("bench mesh compiles");
    let (parts, ()) = http::Request::get("/api/items")
        .header("host", "reviews")
        .body(())
        .expect("static request")
        .into_parts();
    c.bench_function("route/select-50-last-matches", |b| {
        b.iter(|| {
            let svc = snap.service_by_authority(Some("reviews")).expect("service");
            black_box(svc.route(black_box(&parts)).name.len())
        })
    });
    let (first, ()) = http::Request::get("/p0/x")
        .header("x-r", "0")
        .body(())
        .expect("static request")
        .into_parts();
    c.bench_function("route/select-50-first-matches", |b| {
        b.iter(|| black_box(snap.services[0].route(black_box(&first)).name.len()))
    });
}

fn detection(c: &mut Criterion) {
    let h1 = b"GET /api/items?x=1 HTTP/1.1\r\nHost: reviews:9080\r\nUser-Agent: bench\r\nAccept: */*\r\nX-Request-Id: 0123456789\r\n\r\n";
    let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00";
    c.bench_function("detect/http1-head", |b| {
        b.iter(|| detect::classify_buf(black_box(h1), 65536))
    });
    c.bench_function("detect/http2-preface", |b| {
        b.iter(|| detect::classify_buf(black_box(h2), 65536))
    });
    c.bench_function("detect/opaque", |b| {
        b.iter(|| detect::classify_buf(black_box(b"\x00\x01\x02binary"), 65536))
    });
}

fn header_hygiene(c: &mut Criterion) {
    let req = http::Request::get("/api/items")
        .header("host", "reviews:9080")
        .header("user-agent", "bench")
        .header("accept", "*/*")
        .header("connection", "keep-alive")
        .header("x-request-id", "0123456789")
        .body(())
        .expect("static request");
    let (parts, ()) = req.into_parts();
    c.bench_function("headers/prepare-h1", |b| {
        b.iter_batched(
            || parts.clone(),
            |mut p| headers::prepare_request(&mut p, Version::Http1, false, None).map(|()| p),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("headers/prepare-h1-to-h2-new-request-id", |b| {
        b.iter_batched(
            || {
                let mut p = parts.clone();
                p.headers.remove("x-request-id");
                p
            },
            |mut p| headers::prepare_request(&mut p, Version::Http2, false, None).map(|()| p),
            criterion::BatchSize::SmallInput,
        )
    });
}

/// An attempt that picks an endpoint, reports a 200 and returns: the loop's own cost.
struct Answer200<'a>(&'a skiff::cluster::Cluster);

impl Attempt for Answer200<'_> {
    type Response = ();
    type Error = ResilienceError;

    async fn attempt(&mut self, cx: AttemptCx) -> Outcome<(), ResilienceError> {
        let members = self.0.members();
        let pick = members.endpoints.pick(cx.tried).expect("an endpoint");
        // As the HTTP attempt does: the send runs under the per-try deadline's timer.
        let send = async { 200 };
        let status = match cx.deadline {
            Some(d) => tokio::time::timeout_at(d, send).await.unwrap_or(504),
            None => send.await,
        };
        self.0.observe(&members, &pick, Observed::Status(status));
        Outcome::Response(Reply {
            rsp: (),
            status,
            grpc: None,
            endpoint: pick.index,
        })
    }

    fn can_replay(&self) -> bool {
        true
    }

    fn pushback(_: &()) -> Option<std::time::Duration> {
        None
    }
}

/// One request through breaker admission, budget deposit, the attempt loop and the outcome
/// report, with no policy and with every policy present (none triggered).
fn resilience_overhead(c: &mut Criterion) {
    let plain = "services:\n  - name: svc\n    endpoints: [ { address: 127.0.0.1:9 }, { address: 127.0.0.2:9 } ]\n";
    let guarded = "services:\n  - name: svc\n    endpoints: [ { address: 127.0.0.1:9 }, { address: 127.0.0.2:9 } ]\n    circuitBreaker: {}\n    outlierDetection: {}\n    retryBudget: {}\n    routes:\n      - name: r\n        timeouts: { request: 5s, backendRequest: 1s }\n        retry: { attempts: 3, retryOn: [5xx, reset, connect-failure] }\n";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    for (name, yaml) in [
        ("resilience/no-policy", plain),
        ("resilience/all-policies", guarded),
    ] {
        let mesh = skiff_api::load(yaml).expect("valid bench mesh");
        let (metrics, settings, resilience) =
            (Metrics::new(), settings(), ResilienceMetrics::default());
        let cx = CompileContext {
            settings: &settings,
            metrics: &metrics,
            resilience: &resilience,
            tls: None,
            authz: &AuthzMetrics::default(),
            policies_selected: false,
            workload: None,
            version: "bench".into(),
        };
        let snap = Snapshot::compile(&mesh, &cx, None).expect("bench mesh compiles");
        let (parts, ()) = http::Request::get("/")
            .body(())
            .expect("static")
            .into_parts();
        let route = snap.services[0].route(&parts);
        let cluster = route.pick_backend().expect("a backend");
        c.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let _admitted = cluster.breaker.request().expect("under the limit");
                    if let Some(budget) = &cluster.budget {
                        budget.deposit();
                    }
                    let plan = Plan {
                        retry: route.retry.as_ref(),
                        per_try: route.per_try_timeout,
                        request_timeout: route.timeout,
                        idempotent: true,
                        grpc: false,
                        breaker: &cluster.breaker,
                        budget: cluster.budget.as_ref(),
                        metrics: &cluster.metrics,
                    };
                    let done = resilience::run(&plan, &mut Answer200(cluster)).await;
                    black_box(done.attempts)
                })
            })
        });
    }
}

/// One decision with no policy, and with nine policies that do not match (deny by peer,
/// allow by path) before the tenth, an allow by namespace pattern, method and path subtree.
fn authz_decide(c: &mut Criterion) {
    let mut yaml = String::from("services: [ { name: s } ]\nauthorization:\n");
    for i in 0..9 {
        let action = if i % 2 == 0 { "deny" } else { "allow" };
        yaml.push_str(&format!(
            "  - {{ name: p{i}, target: s, action: {action}, from: [ 'spiffe://cluster.local/ns/n{i}/sa/x' ], to: [ {{ paths: [/p{i}/*] }} ] }}\n"
        ));
    }
    yaml.push_str("  - { name: z, target: s, from: [ 'spiffe://cluster.local/ns/default/*' ], to: [ { methods: [GET], paths: [/health, /api/*] } ] }\n");
    let mesh = skiff_api::load(&yaml).expect("valid bench mesh");
    let metrics = AuthzMetrics::default();
    let req = authz::Request::http("GET", "/api/items", 8080);
    let peer = Peer::Authenticated("spiffe://cluster.local/ns/default/sa/productpage");
    for (name, policies) in [
        ("authz/none", Policies::compile([], &metrics)),
        (
            "authz/ten-policies",
            Policies::compile(&mesh.authorization, &metrics),
        ),
    ] {
        assert!(policies.decide(peer, &req).is_allowed());
        c.bench_function(name, |b| {
            b.iter(|| {
                black_box(
                    policies
                        .decide(black_box(peer), black_box(&req))
                        .is_allowed(),
                )
            })
        });
    }
}

/// A mesh as the CA makes it: an ECDSA P-256 anchor, and a proxy holding a P-256 leaf for
/// `spiffe://cluster.local/ns/default/sa/<sa>` signed by it.
struct BenchCa {
    issuer: Issuer<'static, KeyPair>,
    der: Vec<u8>,
}

impl BenchCa {
    fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let der = params.self_signed(&key).expect("CA cert").der().to_vec();
        BenchCa {
            issuer: Issuer::new(params, key),
            der,
        }
    }

    fn proxy(&self, sa: &str) -> Arc<MeshTls> {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        let id = format!("spiffe://cluster.local/ns/default/sa/{sa}");
        params.subject_alt_names = vec![SanType::URI(id.as_str().try_into().expect("URI"))];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        let tls = MeshTls::new(TlsMetrics::default()).expect("mesh tls");
        tls.set_anchors(std::slice::from_ref(&self.der));
        tls.install(vec![cert.der().to_vec()], key.serialize_der())
            .expect("leaf installs");
        Arc::new(tls)
    }
}

/// The first request's bytes on a new connection: four bytes out, echoed back.
async fn ping<C, S>(mut client: C, mut server: S)
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let echo = async {
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.expect("server reads");
        server.write_all(&buf).await.expect("server writes");
        server.flush().await.expect("server flushes");
    };
    let ask = async {
        let mut back = [0u8; 4];
        client.write_all(b"ping").await.expect("client writes");
        client.flush().await.expect("client flushes");
        client.read_exact(&mut back).await.expect("client reads");
        back
    };
    let ((), back) = tokio::join!(echo, ask);
    assert_eq!(&back, b"ping");
}

/// What a new meshed connection costs: a full mTLS 1.3 handshake between two proxies (both
/// sign, both verify the peer's chain and SPIFFE ID; no resumption, as Skiff never resumes)
/// and one small exchange, over an in-memory pipe on a current-thread runtime. The baseline
/// makes the same pipe and exchange in plaintext; the difference is the TLS cost.
/// Tracing's per-request cost: the decision and `traceparent` for an unsampled request, and a
/// sampled request's span with its attributes, finished into the export queue.
fn tracing_cost(c: &mut Criterion) {
    let (queue, drain) = SpanQueue::bounded(1 << 16, 512, TraceMetrics::default());
    let tracer = Tracer::new(queue, 0.0, "http://127.0.0.1:4317");
    let mut incoming = http::HeaderMap::new();
    incoming.insert(
        "traceparent",
        http::HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
    );
    let mut g = c.benchmark_group("trace");
    g.bench_function("unsampled_begin_inject", |b| {
        b.iter(|| {
            let mut h = incoming.clone();
            if let Some(cx) = tracer.begin(&h, None) {
                cx.inject(&mut h);
            }
            black_box(h)
        });
    });
    let mut sampled = incoming.clone();
    sampled.insert(
        "traceparent",
        http::HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    );
    let route: Arc<str> = Arc::from("reviews-default");
    g.bench_function("sampled_span", |b| {
        b.iter(|| {
            let mut h = sampled.clone();
            if let Some(cx) = tracer.begin(&h, None) {
                cx.inject(&mut h);
                if let Some(mut span) = tracer.span(
                    &cx,
                    skiff::telemetry::spans::SpanKind::Client,
                    std::time::SystemTime::now(),
                ) {
                    span.set_name("GET reviews");
                    span.set("http.request.method", "GET");
                    span.set("url.path", "/reviews/1");
                    span.set("server.address", "reviews");
                    span.set("network.protocol.version", "1.1");
                    span.set("http.response.status_code", 200_i64);
                    span.set("skiff.route", &route);
                    span.set("skiff.endpoint", "127.0.0.1:9080");
                    span.set("skiff.attempt", 1_i64);
                    tracer.finish(span);
                }
            }
            while drain.take(true).is_some() {}
            black_box(h)
        });
    });
    g.finish();
}

fn tls_handshake(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let ca = BenchCa::new();
    let (client, server) = (ca.proxy("client"), ca.proxy("server"));
    let expected: Arc<str> = "spiffe://cluster.local/ns/default/sa/server".into();
    c.bench_function("tls/handshake", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (c, s) = tokio::io::duplex(1 << 16);
                let (connected, accepted) =
                    tokio::join!(client.connect(c, Inner::Http1, &expected), server.accept(s));
                let (s, peer) = accepted.expect("server side handshake");
                ping(connected.expect("client side handshake"), s).await;
                black_box(peer.len())
            })
        })
    });
    c.bench_function("tls/plaintext-baseline", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (c, s) = tokio::io::duplex(1 << 16);
                ping(c, s).await;
            })
        })
    });
}

/// A mesh of `services` services with `routes` routes each (the last one regex-matched).
fn mesh_of(services: usize, routes: usize) -> String {
    let mut y = String::from("services:\n");
    for i in 0..services {
        y.push_str(&format!(
            "  - name: svc-{i}\n    endpoints: [ {{ address: 127.0.0.1:{} }} ]\n    routes:\n",
            10_000 + i
        ));
        for r in 0..routes {
            y.push_str(&format!(
                "      - name: r{r}\n        matches: [ {{ path: {{ type: RegularExpression, value: \"/p{r}/[a-z]+\" }} }} ]\n"
            ));
        }
    }
    y
}

/// What applying one `Endpoints` update costs the proxy (issue 17): that service's endpoint
/// set replaced in place, with 10 and with 1,000 services of 10 routes held. Nothing else is
/// compiled, so it must not grow with the services and routes held; the `_full_compile` rows
/// are the whole compile the same change cost before.
fn endpoints_update(c: &mut Criterion) {
    let (metrics, settings, resilience) =
        (Metrics::new(), settings(), ResilienceMetrics::default());
    let authz = AuthzMetrics::default();
    let cx = CompileContext {
        settings: &settings,
        metrics: &metrics,
        resilience: &resilience,
        tls: None,
        authz: &authz,
        policies_selected: false,
        workload: None,
        version: "bench".into(),
    };
    // The changed service alone, as the xDS client hands it over, in two versions.
    let update = |first: u16| {
        skiff_api::load(&format!(
            "services:\n  - name: svc-0\n    endpoints: [ {{ address: 127.0.0.1:{first} }}, {{ address: 127.0.0.1:{} }} ]\n",
            first + 1
        ))
        .expect("valid update")
    };
    let (a, b) = (update(20_000), update(20_001));
    let changed = ["default/svc-0".to_owned()];
    let mut g = c.benchmark_group("endpoints_update");
    for services in [10, 1000] {
        let mesh = skiff_api::load(&mesh_of(services, 10)).expect("valid bench mesh");
        let snap = Snapshot::compile(&mesh, &cx, None).expect("bench mesh compiles");
        g.bench_function(format!("{services}_services"), |bch| {
            let mut flip = false;
            bch.iter(|| {
                flip = !flip;
                let next = if flip { &a } else { &b };
                black_box(snap.update_endpoints(next, &changed, &cx).expect("applies"))
            });
        });
        // For scale: what the same change cost before, a whole compile of the held mesh.
        g.bench_function(format!("{services}_services_full_compile"), |bch| {
            bch.iter(|| black_box(Snapshot::compile(&mesh, &cx, Some(&snap)).expect("compiles")));
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    endpoints_update,
    route_select,
    detection,
    header_hygiene,
    authz_decide,
    resilience_overhead,
    tracing_cost,
    tls_handshake
);
criterion_main!(benches);
