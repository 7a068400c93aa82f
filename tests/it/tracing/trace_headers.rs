//! Incoming trace headers the proxy must judge: invalid `traceparent` values start a new trace
//! (and never fail the request), B3 headers (single and multi) join their trace.

use http::StatusCode;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use super::{SPANS, get_in, one, seen, seen_traceparent, traced, with_header};
use crate::support::{
    client,
    collector::Collector,
    proxy::{Proxy, ProxyBuilder},
    upstream::HttpUpstream,
};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";

async fn web(collector: &Collector) -> (HttpUpstream, Proxy) {
    let app = HttpUpstream::start("web").await;
    let mesh = format!(
        "mesh: {{ tracing: {{ sampling: 1.0 }} }}\nservices:\n  - name: web\n    \
         endpoints: [{{ address: \"{}\" }}]\n",
        app.addr()
    );
    let proxy = traced(ProxyBuilder::new(&mesh), &collector.endpoint())
        .start()
        .await;
    (app, proxy)
}

#[tokio::test]
async fn invalid_traceparents_start_new_traces_and_never_fail() {
    let collector = Collector::start().await;
    let (app, proxy) = web(&collector).await;
    let cases = [
        (
            "trace-id-too-short",
            format!("00-{}-{SPAN}-01", &TRACE[1..]),
        ),
        ("trace-id-too-long", format!("00-{TRACE}0-{SPAN}-01")),
        ("span-id-too-short", format!("00-{TRACE}-{}-01", &SPAN[1..])),
        ("flags-too-long", format!("00-{TRACE}-{SPAN}-001")),
        ("no-flags", format!("00-{TRACE}-{SPAN}")),
        (
            "uppercase-hex",
            format!("00-{}-{}-01", TRACE.to_uppercase(), SPAN.to_uppercase()),
        ),
        ("zero-trace-id", format!("00-{}-{SPAN}-01", "0".repeat(32))),
        ("zero-span-id", format!("00-{TRACE}-{}-01", "0".repeat(16))),
        ("version-ff", format!("ff-{TRACE}-{SPAN}-01")),
        ("not-hex", format!("00-{}-{SPAN}-01", "g".repeat(32))),
    ];

    for (case, tp) in &cases {
        let path = format!("/{case}");
        let req = with_header(get_in("web", &path, tp), "tracestate", "vendor=value");
        let r = client::send_h1(proxy.outbound, req).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{case} ({tp}): never fails: {r:?}"
        );

        let app_tp = seen_traceparent(&app, &path);
        assert_ne!(
            app_tp.trace_id, TRACE,
            "{case} ({tp}): a new trace, not the invalid header's"
        );
        assert!(app_tp.sampled(), "{case}: sampling 1.0: {app_tp:?}");
        assert_eq!(
            seen(&app, &path).header("tracestate"),
            None,
            "{case}: the tracestate of a discarded context is dropped"
        );
        let spans = collector.wait_trace(&app_tp.trace_id, 1, SPANS).await;
        let span = one(&spans, SpanKind::Client);
        assert_eq!(
            span.parent_span_id, "",
            "{case}: the new trace's root is the proxy's span: {span:?}"
        );
        assert_eq!(app_tp.parent_id, span.span_id, "{case}: {span:?}");
    }
    assert!(
        collector.spans().iter().all(|s| s.trace_id != TRACE),
        "no span joined an invalid trace id: {:?}",
        collector.spans()
    );
}

/// One B3 request: its headers, the trace id it must join, the span id that must be the
/// proxy span's parent, and whether it is sampled.
struct B3Case {
    case: &'static str,
    headers: Vec<(&'static str, String)>,
    trace: String,
    parent: &'static str,
    sampled: bool,
}

#[tokio::test]
async fn b3_headers_join_their_trace() {
    let collector = Collector::start().await;
    let (app, proxy) = web(&collector).await;
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let b3_span = "e457b5a2e4d86bd1";
    let multi_trace = "463ac35c9f6413ad48485a3953bb6124";
    let multi_span = "0020000000000001";
    let short_trace = "a3ce929d0e0e4736";
    let short_span = "05e3ac9a4f6e3b90";
    let cases = [
        B3Case {
            case: "single",
            headers: vec![("b3", format!("{b3_trace}-{b3_span}-1"))],
            trace: b3_trace.to_owned(),
            parent: b3_span,
            sampled: true,
        },
        B3Case {
            case: "multi",
            headers: vec![
                ("x-b3-traceid", multi_trace.to_owned()),
                ("x-b3-spanid", multi_span.to_owned()),
                ("x-b3-sampled", "1".to_owned()),
            ],
            trace: multi_trace.to_owned(),
            parent: multi_span,
            sampled: true,
        },
        B3Case {
            case: "multi-64-bit",
            headers: vec![
                ("x-b3-traceid", short_trace.to_owned()),
                ("x-b3-spanid", short_span.to_owned()),
                ("x-b3-sampled", "1".to_owned()),
            ],
            trace: format!("{}{short_trace}", "0".repeat(16)),
            parent: short_span,
            sampled: true,
        },
        B3Case {
            case: "single-unsampled",
            headers: vec![("b3", format!("{short_trace}-{short_span}-0"))],
            trace: format!("{}{short_trace}", "0".repeat(16)),
            parent: short_span,
            sampled: false,
        },
    ];

    for B3Case {
        case,
        headers,
        trace,
        parent,
        sampled,
    } in &cases
    {
        let path = format!("/{case}");
        let mut req = client::get("web", &path);
        for (k, v) in headers {
            req = with_header(req, k, v);
        }
        let r = client::send_h1(proxy.outbound, req).await;
        assert_eq!(r.status, StatusCode::OK, "{case}: {r:?}");
        let app_tp = seen_traceparent(&app, &path);
        assert_eq!(&app_tp.trace_id, trace, "{case}: the B3 trace id is kept");
        assert_eq!(app_tp.sampled(), *sampled, "{case}: {app_tp:?}");
        if *sampled {
            let spans = collector.wait_trace(trace, 1, SPANS).await;
            let span = one(&spans, SpanKind::Client);
            assert_eq!(
                &span.parent_span_id, parent,
                "{case}: the B3 span is the parent: {span:?}"
            );
            assert_eq!(app_tp.parent_id, span.span_id, "{case}: {span:?}");
        }
    }
    // The unsampled B3 request shares its trace id with the sampled 64-bit one; it must have
    // added no span of its own (the marker flushes anything still queued).
    super::marker(&collector, proxy.outbound, "web", 1).await;
    let padded = format!("{}{short_trace}", "0".repeat(16));
    let spans = collector.trace(&padded);
    assert_eq!(
        spans.len(),
        1,
        "only the sampled 64-bit request has a span in {padded}: {spans:?}"
    );
}
