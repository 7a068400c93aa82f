//! Sampling: at 0.0 nothing is exported but apps still get an unsampled `traceparent` (and an
//! incoming sampled flag still wins); the mesh file's ratio wins over `OTEL_TRACES_SAMPLER_ARG`;
//! a reloaded mesh file changes the ratio of a running proxy.

use http::StatusCode;

use super::{Chain, SPANS, TraceParent, marker, seen_traceparent, traced};
use crate::support::{
    client,
    collector::Collector,
    proxy::{Proxy, ProxyBuilder},
    upstream::HttpUpstream,
};

#[tokio::test]
async fn sampling_zero_exports_nothing_yet_apps_get_unsampled_traceparents() {
    let collector = Collector::start().await;
    let chain = Chain::start(
        &collector.endpoint(),
        "mesh: { tracing: { sampling: 0.0 } }",
    )
    .await;

    let mut traces = Vec::new();
    for i in 0..5 {
        let path = format!("/unsampled/{i}");
        let r = chain.get(&path, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let tp = seen_traceparent(&chain.app, &path);
        assert_eq!(tp.flags, "00", "unsampled, yet a valid traceparent: {tp:?}");
        traces.push(tp.trace_id);
    }
    let mut distinct = traces.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        traces.len(),
        "a new trace per request: {traces:?}"
    );

    // Parent-based: a sampled incoming context is exported even at 0.0, by both hops.
    let marked = marker(&collector, chain.client_side.outbound, "reviews", 2).await;
    let spans = collector.spans();
    assert!(
        spans.iter().all(|s| s.trace_id == marked),
        "only the sampled request's spans were exported: {spans:?}"
    );
}

/// A single sidecar for service `web` in front of `app`, `settings` as its `mesh:` block.
fn web_mesh(app: &HttpUpstream, settings: &str) -> String {
    format!(
        "{settings}\nservices:\n  - name: web\n    endpoints: [{{ address: \"{}\" }}]\n",
        app.addr()
    )
}

/// Sends `GET web path` without trace context and returns the `traceparent` the app got.
async fn fresh(proxy: &Proxy, app: &HttpUpstream, path: &str) -> TraceParent {
    let r = client::send_h1(proxy.outbound, client::get("web", path)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    seen_traceparent(app, path)
}

#[tokio::test]
async fn mesh_sampling_wins_over_the_env_ratio() {
    let collector = Collector::start().await;
    let app = HttpUpstream::start("web").await;
    let proxy = traced(
        ProxyBuilder::new(&web_mesh(&app, "mesh: { tracing: { sampling: 0.0 } }")),
        &collector.endpoint(),
    )
    .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    .env("OTEL_TRACES_SAMPLER_ARG", "1.0")
    .start()
    .await;

    for i in 0..5 {
        let tp = fresh(&proxy, &app, &format!("/{i}")).await;
        assert_eq!(tp.flags, "00", "the mesh's 0.0 decides: {tp:?}");
    }
    let marked = marker(&collector, proxy.outbound, "web", 1).await;
    let spans = collector.spans();
    assert!(
        spans.iter().all(|s| s.trace_id == marked),
        "no span from the unsampled requests: {spans:?}"
    );
}

#[tokio::test]
async fn reloaded_mesh_sampling_applies_live() {
    let collector = Collector::start().await;
    let app = HttpUpstream::start("web").await;
    // The environment says never; the mesh file says nothing at first.
    let proxy = traced(
        ProxyBuilder::new(&web_mesh(&app, "")),
        &collector.endpoint(),
    )
    .env("OTEL_TRACES_SAMPLER", "traceidratio")
    .env("OTEL_TRACES_SAMPLER_ARG", "0.0")
    .start()
    .await;

    let before = fresh(&proxy, &app, "/before").await;
    assert_eq!(
        before.flags, "00",
        "OTEL_TRACES_SAMPLER_ARG=0.0 holds: {before:?}"
    );

    proxy
        .reload(&web_mesh(&app, "mesh: { tracing: { sampling: 1.0 } }"))
        .await;
    let mut sampled = Vec::new();
    for i in 0..3 {
        let tp = fresh(&proxy, &app, &format!("/on/{i}")).await;
        assert_eq!(tp.flags, "01", "after the reload to 1.0: {tp:?}");
        sampled.push(tp.trace_id);
    }
    for t in &sampled {
        let spans = collector.wait_trace(t, 1, SPANS).await;
        assert_eq!(
            spans.len(),
            1,
            "a span per request after the reload, trace {t}: {:?}",
            collector.spans()
        );
    }

    proxy
        .reload(&web_mesh(&app, "mesh: { tracing: { sampling: 0.0 } }"))
        .await;
    let after = fresh(&proxy, &app, "/after").await;
    assert_eq!(after.flags, "00", "after the reload back to 0.0: {after:?}");
    let marked = marker(&collector, proxy.outbound, "web", 1).await;
    let spans = collector.spans();
    for t in [&before.trace_id, &after.trace_id] {
        assert!(
            spans.iter().all(|s| &s.trace_id != t),
            "no span for unsampled trace {t}: {spans:?}"
        );
    }
    assert_eq!(
        spans.len(),
        sampled.len() + 1,
        "the sampled requests and the marker, nothing else (marker {marked}): {spans:?}"
    );
}
