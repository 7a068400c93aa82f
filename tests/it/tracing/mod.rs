//! Distributed tracing end to end: real `skiff` processes export spans over OTLP/gRPC to a
//! collector in the test (`support::collector`). The tests check the spans, the `traceparent`
//! apps receive, sampling, the access log, the exporter's metrics, and that a dead or stalled
//! collector costs requests nothing. Shared here: trace header helpers and a two-sidecar chain.

mod access_log;
mod attempts;
mod errors;
mod export;
mod grpc;
mod identity;
mod propagation;
mod sampling;
mod tcp;
mod trace_headers;

use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher,
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use crate::support::{
    client::{self, Reply},
    collector::{CollectedSpan, Collector},
    proxy::{Proxy, ProxyBuilder},
    upstream::{HttpUpstream, Seen},
};

/// How long a test waits for spans to reach the collector. The proxies batch every 50 ms, so
/// this only turns a missing span into a failure on a loaded box.
pub const SPANS: Duration = Duration::from_secs(10);

/// `builder` exporting to `endpoint`, in batches every 50 ms.
pub fn traced(builder: ProxyBuilder, endpoint: &str) -> ProxyBuilder {
    builder
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
}

/// A W3C `traceparent` as an app received it.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceParent {
    pub trace_id: String,
    pub parent_id: String,
    pub flags: String,
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl TraceParent {
    /// Parses `raw`, asserting it is a valid version-00 header: lowercase hex, ids not zero.
    #[track_caller]
    pub fn parse(raw: &str) -> TraceParent {
        let parts: Vec<&str> = raw.split('-').collect();
        assert_eq!(parts.len(), 4, "traceparent has four fields: {raw:?}");
        assert_eq!(parts[0], "00", "traceparent version: {raw:?}");
        assert!(is_lower_hex(parts[1], 32), "trace id: {raw:?}");
        assert!(is_lower_hex(parts[2], 16), "parent id: {raw:?}");
        assert!(is_lower_hex(parts[3], 2), "flags: {raw:?}");
        assert_ne!(parts[1], "0".repeat(32), "all-zero trace id: {raw:?}");
        assert_ne!(parts[2], "0".repeat(16), "all-zero parent id: {raw:?}");
        TraceParent {
            trace_id: parts[1].to_owned(),
            parent_id: parts[2].to_owned(),
            flags: parts[3].to_owned(),
        }
    }

    pub fn sampled(&self) -> bool {
        u8::from_str_radix(&self.flags, 16).expect("checked hex") & 1 == 1
    }
}

/// 64 random bits (a fresh hasher seed each call, mixed with a counter).
fn random_u64() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(N.fetch_add(1, Ordering::Relaxed))
}

/// A fresh random trace id (32 hex digits).
pub fn new_trace_id() -> String {
    format!("{:016x}{:016x}", random_u64() | 1, random_u64())
}

/// A fresh random span id (16 hex digits).
pub fn new_span_id() -> String {
    format!("{:016x}", random_u64() | 1)
}

/// A fresh incoming context: `(trace id, span id, traceparent)` with flags `01`.
pub fn sampled_parent() -> (String, String, String) {
    let (trace, span) = (new_trace_id(), new_span_id());
    let header = format!("00-{trace}-{span}-01");
    (trace, span, header)
}

/// `req` with `name: value` added.
pub fn with_header(mut req: Request<Full<Bytes>>, name: &str, value: &str) -> Request<Full<Bytes>> {
    req.headers_mut().append(
        http::HeaderName::from_bytes(name.as_bytes()).expect("test header names are valid"),
        client::value(value),
    );
    req
}

/// `GET host path` carrying `traceparent`.
pub fn get_in(host: &str, path: &str, traceparent: &str) -> Request<Full<Bytes>> {
    with_header(client::get(host, path), "traceparent", traceparent)
}

/// The request `app` received for `path`; panics when there is none or more than one.
#[track_caller]
pub fn seen(app: &HttpUpstream, path: &str) -> Seen {
    let all = app.requests();
    let hits: Vec<&Seen> = all.iter().filter(|s| s.target == path).collect();
    assert_eq!(
        hits.len(),
        1,
        "one request for {path} reached the app: {all:?}"
    );
    hits[0].clone()
}

/// The `traceparent` the app received for `path`, parsed (and checked valid).
#[track_caller]
pub fn seen_traceparent(app: &HttpUpstream, path: &str) -> TraceParent {
    let s = seen(app, path);
    let raw = s
        .header("traceparent")
        .unwrap_or_else(|| panic!("the app got a traceparent for {path}: {s:?}"));
    TraceParent::parse(raw)
}

/// The one span of `kind` in `spans`; panics (listing them) when there is not exactly one.
#[track_caller]
pub fn one(spans: &[CollectedSpan], kind: SpanKind) -> CollectedSpan {
    let of_kind: Vec<&CollectedSpan> = spans.iter().filter(|s| s.kind == kind).collect();
    assert_eq!(of_kind.len(), 1, "exactly one {kind:?} span in {spans:?}");
    of_kind[0].clone()
}

/// Waits until trace `trace` has a span of `kind` (or [`SPANS`] passes); returns the trace's
/// spans.
pub async fn wait_kind(collector: &Collector, trace: &str, kind: SpanKind) -> Vec<CollectedSpan> {
    let all = collector
        .wait_for(SPANS, |all| {
            all.iter().any(|s| s.trace_id == trace && s.kind == kind)
        })
        .await;
    all.into_iter().filter(|s| s.trace_id == trace).collect()
}

/// Sends `GET host /marker-N` through `addr` with a fresh sampled context and waits until `n`
/// spans of its trace arrived; returns its trace id. A proxy exports its spans in the order
/// they end, so once these arrived every span of an earlier request that was going to come
/// has come: the marker turns "no span" into something a test can wait for.
pub async fn marker(collector: &Collector, addr: SocketAddr, host: &str, n: usize) -> String {
    let (trace, _, header) = sampled_parent();
    let r = client::send_h1(addr, get_in(host, &format!("/marker-{trace}"), &header)).await;
    assert!(r.status.is_success(), "marker request: {r:?}");
    let spans = collector.wait_trace(&trace, n, SPANS).await;
    assert_eq!(
        spans.len(),
        n,
        "the sampled marker request's spans arrived: {:?}",
        collector.spans()
    );
    trace
}

/// The client side's `OTEL_SERVICE_NAME` in a [`Chain`].
pub const CLIENT_SERVICE: &str = "productpage";
/// The server side's workload in a [`Chain`]: its default `service.name`.
pub const SERVER_WORKLOAD: &str = "reviews-v1";
/// The server side's `SKIFF_POD_NAME` in a [`Chain`].
pub const SERVER_POD: &str = "reviews-v1-7d9f8c-x2x4q";

/// Two sidecars on loopback in static mode: client -> `client_side` outbound (service
/// `reviews`) -> `server_side` inbound (workload `reviews-v1`, namespace `default`) -> `app`.
/// Both export to the same collector; the client side names itself with `OTEL_SERVICE_NAME`
/// (plus `OTEL_RESOURCE_ATTRIBUTES`), the server side takes its workload's name (and has a
/// `SKIFF_POD_NAME`).
pub struct Chain {
    pub app: HttpUpstream,
    pub server_side: Proxy,
    pub client_side: Proxy,
}

impl Chain {
    /// `settings` is the mesh file's `mesh:` block (e.g. `mesh: { tracing: { sampling: 0.0 } }`)
    /// or empty; both sidecars get it.
    pub async fn start(endpoint: &str, settings: &str) -> Chain {
        let app = HttpUpstream::start("reviews-app").await;
        let server_mesh = format!(
            "{settings}\nworkloads:\n  - name: {SERVER_WORKLOAD}\n    namespace: default\n    \
             inbound: {{ listen: \"127.0.0.1:1\", app: \"{}\" }}\n",
            app.addr()
        );
        let server_side = traced(ProxyBuilder::new(&server_mesh), endpoint)
            .workload(SERVER_WORKLOAD, "default")
            .env("SKIFF_POD_NAME", SERVER_POD)
            .start()
            .await;
        let client_mesh = format!(
            "{settings}\nservices:\n  - name: reviews\n    endpoints: [ {{ workload: {SERVER_WORKLOAD} }} ]\n\
             workloads:\n  - name: {SERVER_WORKLOAD}\n    namespace: default\n    \
             inbound: {{ listen: \"{}\", app: \"{}\" }}\n",
            server_side.inbound,
            app.addr()
        );
        let client_side = traced(ProxyBuilder::new(&client_mesh), endpoint)
            .env("OTEL_SERVICE_NAME", CLIENT_SERVICE)
            .env(
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=it,team=mesh",
            )
            .start()
            .await;
        Chain {
            app,
            server_side,
            client_side,
        }
    }

    /// One HTTP/1.1 request `GET reviews path` through the client side.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = client::get("reviews", path);
        for (k, v) in headers {
            req = with_header(req, k, v);
        }
        client::send_h1(self.client_side.outbound, req).await
    }
}
