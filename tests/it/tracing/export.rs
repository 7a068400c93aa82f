//! The exporter's cost and accounting: a dead collector (connection refused) or a stalled one
//! (accepts, never answers) neither fails nor slows requests compared with tracing off, and
//! its lost spans are counted; with a live collector every exported span is counted; the
//! traces-specific endpoint variable wins over the generic one.

use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use super::{SPANS, traced};
use crate::{
    resilience::load,
    support::{
        STEP,
        client::{self, Metrics},
        collector::{Collector, StalledCollector, dead_endpoint},
        eventually,
        proxy::{Proxy, ProxyBuilder},
        upstream::HttpUpstream,
    },
};

const REQUESTS: usize = 200;
const WORKERS: usize = 4;

fn web_mesh(app: &HttpUpstream) -> String {
    format!(
        "services:\n  - name: web\n    endpoints: [{{ address: \"{}\" }}]\n",
        app.addr()
    )
}

/// A proxy exporting to `endpoint` with a small queue, short batches and a short export
/// timeout, so a bad collector makes it drop spans within the test.
async fn lossy(app: &HttpUpstream, endpoint: &str) -> Proxy {
    traced(ProxyBuilder::new(&web_mesh(app)), endpoint)
        .env("OTEL_BSP_MAX_QUEUE_SIZE", "16")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "500")
        .start()
        .await
}

/// Sends [`REQUESTS`] requests (after a short warm-up) and returns how long they took; every
/// one must succeed.
async fn timed_run(proxy: &Proxy) -> Duration {
    let make = |i: usize| client::get("web", &format!("/{i}"));
    load(proxy.outbound, 10, WORKERS, make).await;
    let started = Instant::now();
    let replies = load(proxy.outbound, REQUESTS, WORKERS, make).await;
    let took = started.elapsed();
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.status, StatusCode::OK, "request {i}: {r:?}");
    }
    took
}

/// The exporter's own counters, for failure messages.
fn trace_metrics(m: &Metrics) -> Vec<String> {
    m.samples
        .iter()
        .filter(|s| s.name.starts_with("skiff_trace_"))
        .map(|s| format!("{}{:?} {}", s.name, s.labels, s.value))
        .collect()
}

/// Waits until the proxy has counted failed exports and the spans they lost (each export to
/// a bad collector fails, at the latest after the 500 ms OTLP timeout).
async fn assert_losses_counted(proxy: &Proxy) {
    let counted = |m: &Metrics| {
        m.sum("skiff_trace_export_errors_total", &[]) > 0.0
            && m.sum(
                "skiff_trace_spans_dropped_total",
                &[("reason", "export-failed")],
            ) > 0.0
    };
    let deadline = Instant::now() + STEP;
    loop {
        let m = proxy.metric_values().await;
        if counted(&m) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "failed exports and their spans are counted: {:#?}",
            trace_metrics(&m)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the same load through a proxy without tracing and through `traced`, and asserts the
/// traced run is within a generous bound of the other (never a tight time on a shared box).
async fn assert_costs_nothing(app: &HttpUpstream, traced: &Proxy, what: &str) {
    let plain = Proxy::start(&web_mesh(app)).await;
    let base = timed_run(&plain).await;
    let with = timed_run(traced).await;
    let bound = base * 3 + Duration::from_secs(2);
    // Shown with --nocapture (and on failure): how far from the bound a run was.
    eprintln!("{what}: {REQUESTS} requests in {with:?}, {base:?} without tracing");
    assert!(
        with < bound,
        "{what}: {REQUESTS} requests took {with:?} against {base:?} without tracing (bound {bound:?})"
    );
}

#[tokio::test]
async fn dead_collector_costs_requests_nothing_and_drops_are_counted() {
    let app = HttpUpstream::start("web").await;
    let proxy = lossy(&app, &dead_endpoint().await).await;

    assert_costs_nothing(&app, &proxy, "dead collector").await;
    assert_losses_counted(&proxy).await;
    let m = proxy.metric_values().await;
    assert_eq!(
        m.sum("skiff_trace_spans_exported_total", &[]),
        0.0,
        "nothing was exported to a dead collector: {:#?}",
        trace_metrics(&m)
    );
}

#[tokio::test]
async fn stalled_collector_costs_requests_nothing_and_drops_are_counted() {
    let app = HttpUpstream::start("web").await;
    let stalled = StalledCollector::start().await;
    let proxy = lossy(&app, &stalled.endpoint()).await;

    assert_costs_nothing(&app, &proxy, "stalled collector").await;
    assert!(
        stalled.connections() > 0,
        "the exporter did reach the stalled collector"
    );
    assert_losses_counted(&proxy).await;
    // A queue of 16 cannot hold 210 spans while each export waits its 500 ms out.
    let m = proxy.metric_values().await;
    assert!(
        m.sum(
            "skiff_trace_spans_dropped_total",
            &[("reason", "queue-full")]
        ) > 0.0,
        "a full queue drops: {:?}",
        m.matching("skiff_trace_spans_dropped_total", &[])
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn exported_spans_are_counted() {
    let collector = Collector::start().await;
    let app = HttpUpstream::start("web").await;
    let proxy = traced(ProxyBuilder::new(&web_mesh(&app)), &collector.endpoint())
        .start()
        .await;
    let m = proxy.metric_values().await;
    for family in [
        "skiff_trace_spans_exported_total",
        "skiff_trace_export_errors_total",
    ] {
        assert_eq!(
            m.matching(family, &[]).count(),
            1,
            "{family} is on /metrics from the start"
        );
    }

    const N: usize = 7;
    for i in 0..N {
        let r = client::send_h1(proxy.outbound, client::get("web", &format!("/{i}"))).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
    }
    let spans = collector.wait_for(SPANS, |all| all.len() >= N).await;
    assert_eq!(spans.len(), N, "a span per request: {spans:?}");
    eventually("the exported spans are counted", STEP, || async {
        proxy
            .metric_values()
            .await
            .sum("skiff_trace_spans_exported_total", &[])
            >= N as f64
    })
    .await;
    let m = proxy.metric_values().await;
    assert_eq!(
        m.sum("skiff_trace_spans_exported_total", &[]),
        N as f64,
        "exactly the spans the collector got"
    );
    assert_eq!(m.sum("skiff_trace_spans_dropped_total", &[]), 0.0);
    assert_eq!(m.sum("skiff_trace_export_errors_total", &[]), 0.0);
}

#[tokio::test]
async fn traces_endpoint_variable_wins_over_the_generic_one() {
    let collector = Collector::start().await;
    let app = HttpUpstream::start("web").await;
    let proxy = ProxyBuilder::new(&web_mesh(&app))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &dead_endpoint().await)
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &collector.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .start()
        .await;
    let r = client::send_h1(proxy.outbound, client::get("web", "/")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let spans = collector.wait_for(SPANS, |all| !all.is_empty()).await;
    assert_eq!(
        spans.len(),
        1,
        "the span went to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: {:#?}",
        trace_metrics(&proxy.metric_values().await)
    );
}
