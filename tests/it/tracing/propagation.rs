//! Trace context across two sidecars: an incoming sampled context is continued hop by hop
//! (client span, then server span, then the app's parent), a request without one starts a
//! trace that both hops share, and with tracing off the headers pass through untouched.

use http::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode as SpanStatus};

use super::{
    CLIENT_SERVICE, Chain, SERVER_WORKLOAD, SPANS, TraceParent, get_in, one, sampled_parent, seen,
    seen_traceparent,
};
use crate::support::{
    client,
    collector::{Attr, Collector},
    proxy::Proxy,
    upstream::HttpUpstream,
};

#[tokio::test]
async fn two_sidecars_continue_an_incoming_sampled_trace() {
    let collector = Collector::start().await;
    let chain = Chain::start(&collector.endpoint(), "").await;
    let (trace, incoming_span, traceparent) = sampled_parent();
    let tracestate = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

    let r = chain
        .get(
            "/reviews/1",
            &[("traceparent", &traceparent), ("tracestate", tracestate)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");

    let spans = collector.wait_trace(&trace, 2, SPANS).await;
    assert_eq!(
        spans.len(),
        2,
        "one span per hop in the incoming trace: {spans:?}"
    );
    let a = one(&spans, SpanKind::Client);
    let b = one(&spans, SpanKind::Server);

    assert_eq!(a.service_name(), Some(CLIENT_SERVICE), "{a:?}");
    assert_eq!(
        a.resource_str("deployment.environment"),
        Some("it"),
        "OTEL_RESOURCE_ATTRIBUTES merged: {:?}",
        a.resource
    );
    assert_eq!(a.resource_str("team"), Some("mesh"), "{:?}", a.resource);
    assert_eq!(
        b.service_name(),
        Some(SERVER_WORKLOAD),
        "default service.name is the workload: {:?}",
        b.resource
    );
    assert_eq!(
        b.resource_str("service.namespace"),
        Some("default"),
        "{:?}",
        b.resource
    );

    assert_eq!(
        a.parent_span_id, incoming_span,
        "the client span is a child of the incoming span: {a:?}"
    );
    assert_eq!(
        b.parent_span_id, a.span_id,
        "the server span is a child of the client span: {spans:?}"
    );
    assert_ne!(a.span_id, b.span_id);
    assert_ne!(a.span_id, incoming_span);

    let app_tp = seen_traceparent(&chain.app, "/reviews/1");
    assert_eq!(
        app_tp,
        TraceParent {
            trace_id: trace.clone(),
            parent_id: b.span_id.clone(),
            flags: "01".into()
        },
        "the app's parent is the server sidecar's span"
    );
    assert_eq!(
        seen(&chain.app, "/reviews/1").header("tracestate"),
        Some(tracestate),
        "tracestate arrives unchanged"
    );

    for s in [&a, &b] {
        assert_eq!(s.scope, "skiff", "{s:?}");
        assert_eq!(s.str("http.request.method"), Some("GET"), "{s:?}");
        assert_eq!(s.str("url.path"), Some("/reviews/1"), "{s:?}");
        assert_eq!(
            s.attr("http.response.status_code"),
            Some(&Attr::Int(200)),
            "{s:?}"
        );
        assert_eq!(s.attr("error.type"), None, "{s:?}");
        assert_ne!(s.status, SpanStatus::Error, "{s:?}");
        assert!(
            s.end_unix_nano >= s.start_unix_nano && s.start_unix_nano > 0,
            "{s:?}"
        );
    }
    assert_eq!(a.name, "GET reviews", "{a:?}");
    assert!(b.name.starts_with("GET "), "{b:?}");
    assert_eq!(a.str("server.address"), Some("reviews"), "{a:?}");
    assert_eq!(a.str("network.protocol.version"), Some("1.1"), "{a:?}");
    assert_eq!(a.str("skiff.service"), Some("reviews"), "{a:?}");
    assert_eq!(
        a.str("skiff.endpoint"),
        Some(chain.server_side.inbound.to_string().as_str()),
        "the client span names the endpoint it sent to: {a:?}"
    );
    assert_eq!(a.int("skiff.attempt"), Some(1), "{a:?}");
    assert_eq!(
        b.str("skiff.endpoint"),
        Some(chain.app.addr().to_string().as_str()),
        "the server span names the local app: {b:?}"
    );
    assert_eq!(
        b.resource_str("k8s.pod.name"),
        Some(super::SERVER_POD),
        "from SKIFF_POD_NAME: {:?}",
        b.resource
    );
}

#[tokio::test]
async fn without_incoming_context_a_new_trace_spans_both_hops() {
    let collector = Collector::start().await;
    let chain = Chain::start(
        &collector.endpoint(),
        "mesh: { tracing: { sampling: 1.0 } }",
    )
    .await;

    let r = client::send_h2(chain.client_side.outbound, client::get("reviews", "/fresh")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");

    let app_tp = seen_traceparent(&chain.app, "/fresh");
    assert!(
        app_tp.sampled(),
        "sampling 1.0 samples the new trace: {app_tp:?}"
    );
    let spans = collector.wait_trace(&app_tp.trace_id, 2, SPANS).await;
    assert_eq!(
        spans.len(),
        2,
        "both hops in the trace the app sees: {:?}",
        collector.spans()
    );
    let a = one(&spans, SpanKind::Client);
    let b = one(&spans, SpanKind::Server);
    assert_eq!(
        a.parent_span_id, "",
        "the client side started the trace: {a:?}"
    );
    assert_eq!(b.parent_span_id, a.span_id, "{spans:?}");
    assert_eq!(app_tp.parent_id, b.span_id, "{spans:?}");
    assert_eq!(
        a.str("network.protocol.version"),
        Some("2"),
        "the client spoke h2c: {a:?}"
    );
    assert_eq!(
        collector.spans().len(),
        2,
        "nothing else was exported: {:?}",
        collector.spans()
    );
}

#[tokio::test]
async fn tracing_off_passes_trace_headers_through_untouched() {
    let app = HttpUpstream::start("web").await;
    let mesh = format!(
        "services:\n  - name: web\n    endpoints: [{{ address: \"{}\" }}]\n",
        app.addr()
    );
    // No OTEL_EXPORTER_OTLP_ENDPOINT: tracing is off.
    let proxy = Proxy::start(&mesh).await;

    // Not even a valid header: an untouched pass-through keeps it as it is.
    let garbage = "00-NOT-A-VALID-TRACEPARENT";
    let (_, _, valid) = sampled_parent();
    for (path, tp) in [("/garbage", garbage), ("/valid", valid.as_str())] {
        let req = super::with_header(get_in("web", path, tp), "tracestate", "k=v");
        let r = client::send_h1(proxy.outbound, req).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let s = seen(&app, path);
        assert_eq!(s.header("traceparent"), Some(tp), "{path}: {s:?}");
        assert_eq!(s.header("tracestate"), Some("k=v"), "{path}: {s:?}");
    }
    let r = client::send_h1(proxy.outbound, client::get("web", "/none")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let s = seen(&app, "/none");
    assert_eq!(
        s.header("traceparent"),
        None,
        "tracing off adds no traceparent: {s:?}"
    );
}
