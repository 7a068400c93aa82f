//! Spans of failed requests say why: an authorization denial on the inbound side and a timeout
//! on the outbound side carry `error.type` and `skiff.reason` (the proxy's reason token) with
//! an ERROR status (the denial's access log line too); an upstream's own 5xx carries its status
//! code as `error.type`, no reason.

use http::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode as SpanStatus};

use super::{get_in, sampled_parent, traced, wait_kind, with_header};
use crate::{
    errors::assert_made_by_proxy,
    support::{
        client,
        collector::{Attr, CollectedSpan, Collector},
        faulty::StallServer,
        proxy::ProxyBuilder,
        upstream::HttpUpstream,
    },
};

/// Asserts `span` is a failure the proxy answered itself with `status` and `reason`.
#[track_caller]
fn assert_proxy_failure(span: &CollectedSpan, status: i64, reason: &str) {
    assert_eq!(
        span.attr("http.response.status_code"),
        Some(&Attr::Int(status)),
        "{span:?}"
    );
    assert_eq!(span.str("error.type"), Some(reason), "{span:?}");
    assert_eq!(span.str("skiff.reason"), Some(reason), "{span:?}");
    assert_eq!(span.status, SpanStatus::Error, "{span:?}");
}

#[tokio::test]
async fn authorization_denial_span_says_unauthorized() {
    let collector = Collector::start().await;
    let app = HttpUpstream::start("web-app").await;
    // Static mode: every peer is unauthenticated; only /public/* is allowed.
    let mesh = format!(
        r#"services:
  - name: web
    endpoints: [ {{ workload: web }} ]
workloads:
  - name: web
    inbound: {{ listen: "127.0.0.1:1", app: "{}" }}
authorization:
  - name: public-only
    target: web
    from: [ unauthenticated ]
    to: [ {{ paths: ["/public/*"] }} ]
"#,
        app.addr()
    );
    let proxy = traced(ProxyBuilder::new(&mesh), &collector.endpoint())
        .workload("web", "default")
        .flag("--access-log")
        .start()
        .await;

    let (denied, _, tp) = sampled_parent();
    let r = client::send_h1(proxy.inbound, get_in("web", "/private", &tp)).await;
    assert_made_by_proxy(&r, StatusCode::FORBIDDEN, "unauthorized");
    let spans = wait_kind(&collector, &denied, SpanKind::Server).await;
    let span = super::one(&spans, SpanKind::Server);
    assert_proxy_failure(&span, 403, "unauthorized");
    assert_eq!(span.str("url.path"), Some("/private"), "{span:?}");
    let e = super::access_log::entry(&proxy, "/private").await;
    assert_eq!(e["direction"], "inbound", "{e:#}");
    assert_eq!(e["status"], 403, "{e:#}");
    assert_eq!(e["reason"], "unauthorized", "{e:#}");
    assert_eq!(e["span_id"], span.span_id.as_str(), "{e:#}");

    let (allowed, _, tp) = sampled_parent();
    let r = client::send_h1(proxy.inbound, get_in("web", "/public/x", &tp)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let spans = wait_kind(&collector, &allowed, SpanKind::Server).await;
    let span = super::one(&spans, SpanKind::Server);
    assert_eq!(
        span.attr("error.type"),
        None,
        "an allowed request: {span:?}"
    );
    assert_eq!(span.attr("skiff.reason"), None, "{span:?}");
    assert_ne!(span.status, SpanStatus::Error, "{span:?}");
}

#[tokio::test]
async fn timeout_and_upstream_5xx_spans_say_why() {
    let collector = Collector::start().await;
    let stall = StallServer::start().await;
    let web = HttpUpstream::start("web").await;
    let mesh = format!(
        r#"
services:
  - name: stuck
    endpoints: [{{ address: "{}" }}]
    routes:
      - name: main
        timeouts: {{ request: 300ms }}
  - name: web
    endpoints: [{{ address: "{}" }}]
"#,
        stall.addr(),
        web.addr()
    );
    let proxy = traced(ProxyBuilder::new(&mesh), &collector.endpoint())
        .start()
        .await;

    let (timed_out, _, tp) = sampled_parent();
    let r = client::send_h1(proxy.outbound, get_in("stuck", "/slow", &tp)).await;
    assert_made_by_proxy(&r, StatusCode::GATEWAY_TIMEOUT, "timeout");
    let spans = wait_kind(&collector, &timed_out, SpanKind::Client).await;
    let span = super::one(&spans, SpanKind::Client);
    assert_proxy_failure(&span, 504, "timeout");
    assert_eq!(span.str("skiff.service"), Some("stuck"), "{span:?}");
    assert_eq!(span.str("skiff.route"), Some("main"), "{span:?}");

    // The upstream's own 503: an error by its status, but not one the proxy made.
    let (failed, _, tp) = sampled_parent();
    let req = with_header(get_in("web", "/fail", &tp), "x-status", "503");
    let r = client::send_h1(proxy.outbound, req).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    assert_eq!(r.served_by(), Some("web"), "{r:?}");
    let spans = wait_kind(&collector, &failed, SpanKind::Client).await;
    let span = super::one(&spans, SpanKind::Client);
    assert_eq!(
        span.attr("http.response.status_code"),
        Some(&Attr::Int(503)),
        "{span:?}"
    );
    assert_eq!(span.str("error.type"), Some("503"), "{span:?}");
    assert_eq!(span.attr("skiff.reason"), None, "{span:?}");
    assert_eq!(span.status, SpanStatus::Error, "{span:?}");

    // A 4xx from the upstream is not a server error.
    let (not_found, _, tp) = sampled_parent();
    let req = with_header(get_in("web", "/missing", &tp), "x-status", "404");
    let r = client::send_h1(proxy.outbound, req).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    let spans = wait_kind(&collector, &not_found, SpanKind::Client).await;
    let span = super::one(&spans, SpanKind::Client);
    assert_eq!(span.attr("error.type"), None, "{span:?}");
    assert_ne!(span.status, SpanStatus::Error, "{span:?}");
}
