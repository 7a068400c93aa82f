//! The access log (`--access-log` / `SKIFF_ACCESS_LOG=true`): one JSON object per request on
//! stdout, whose `trace_id`/`span_id` are those of the exported span, so logs and traces join;
//! without tracing and without incoming context both are null.

use http::StatusCode;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::Value;

use super::{get_in, one, sampled_parent, traced, wait_kind};
use crate::support::{
    STEP, client,
    collector::Collector,
    eventually,
    proxy::{Proxy, ProxyBuilder},
    upstream::{HttpUpstream, closed_port},
};

/// Every stdout line after the startup line, parsed; panics on one that is not a JSON object.
pub(super) fn entries(proxy: &Proxy) -> Vec<Value> {
    proxy
        .stdout_lines()
        .iter()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {line:?}"));
            assert!(v.is_object(), "access log line is not an object: {line:?}");
            v
        })
        .collect()
}

/// Waits for the access log entry of the request for `path` and returns it; panics unless
/// there is exactly one.
pub(super) async fn entry(proxy: &Proxy, path: &str) -> Value {
    eventually(&format!("an access log line for {path}"), STEP, || async {
        entries(proxy).iter().any(|e| e["path"] == path)
    })
    .await;
    let all = entries(proxy);
    let hits: Vec<&Value> = all.iter().filter(|e| e["path"] == path).collect();
    assert_eq!(hits.len(), 1, "one line per request for {path}: {all:#?}");
    hits[0].clone()
}

fn services(app: &HttpUpstream, down: std::net::SocketAddr) -> String {
    format!(
        "services:\n  - name: web\n    endpoints: [{{ address: \"{}\" }}]\n  \
         - name: down\n    endpoints: [{{ address: \"{down}\" }}]\n",
        app.addr()
    )
}

#[tokio::test]
async fn access_log_lines_carry_the_exported_span_ids() {
    let collector = Collector::start().await;
    let app = HttpUpstream::start("web").await;
    let proxy = traced(
        ProxyBuilder::new(&services(&app, closed_port().await)),
        &collector.endpoint(),
    )
    .flag("--access-log")
    .start()
    .await;

    let (trace, _, tp) = sampled_parent();
    let r = client::send_h1(proxy.outbound, get_in("web", "/logged", &tp)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let spans = wait_kind(&collector, &trace, SpanKind::Client).await;
    let span = one(&spans, SpanKind::Client);

    let e = entry(&proxy, "/logged").await;
    assert_eq!(e["trace_id"], trace.as_str(), "{e:#}");
    assert_eq!(
        e["span_id"],
        span.span_id.as_str(),
        "the proxy's span: {e:#}"
    );
    assert_eq!(e["direction"], "outbound", "{e:#}");
    assert_eq!(e["method"], "GET", "{e:#}");
    assert_eq!(e["authority"], "web", "{e:#}");
    assert_eq!(e["protocol"], "HTTP/1.1", "{e:#}");
    assert_eq!(e["status"], 200, "{e:#}");
    assert_eq!(e["reason"], Value::Null, "{e:#}");
    assert_eq!(e["service"], "web", "{e:#}");
    assert_eq!(e["endpoint"], app.addr().to_string().as_str(), "{e:#}");
    assert_eq!(e["attempts"], 1, "{e:#}");
    assert_eq!(e["peer_identity"], Value::Null, "no mTLS: {e:#}");
    assert!(e["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{e:#}");
    let time = e["time"].as_str().unwrap_or_else(|| panic!("time: {e:#}"));
    assert!(
        time.len() >= 20 && time.as_bytes()[4] == b'-' && time.as_bytes()[10] == b'T',
        "RFC 3339 time: {e:#}"
    );
    for key in ["route", "request_id"] {
        assert!(e.get(key).is_some(), "key {key} present: {e:#}");
    }
}

#[tokio::test]
async fn access_log_without_tracing_has_null_ids_and_the_reason() {
    let app = HttpUpstream::start("web").await;
    // Tracing off (no endpoint); the access log turned on by environment.
    let proxy = ProxyBuilder::new(&services(&app, closed_port().await))
        .env("SKIFF_ACCESS_LOG", "true")
        .start()
        .await;

    let r = client::send_h1(proxy.outbound, client::get("web", "/plain")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let e = entry(&proxy, "/plain").await;
    assert_eq!(e["trace_id"], Value::Null, "{e:#}");
    assert_eq!(e["span_id"], Value::Null, "{e:#}");
    assert_eq!(e["status"], 200, "{e:#}");

    // Refused by the endpoint: the proxy answers itself, with a reason.
    let r = client::send_h1(proxy.outbound, client::get("down", "/refused")).await;
    let reason = r
        .reason()
        .unwrap_or_else(|| panic!("the proxy answered itself: {r:?}"));
    let e = entry(&proxy, "/refused").await;
    assert_eq!(e["status"], r.status.as_u16(), "{e:#}");
    assert_eq!(e["reason"], reason, "{e:#}");
    assert_eq!(e["service"], "down", "{e:#}");

    // An incoming context is still visible in the log with tracing off.
    let (trace, _, tp) = sampled_parent();
    let r = client::send_h1(proxy.outbound, get_in("web", "/joined", &tp)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let e = entry(&proxy, "/joined").await;
    assert_eq!(e["trace_id"], trace.as_str(), "{e:#}");
}
