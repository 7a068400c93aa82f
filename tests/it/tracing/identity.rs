//! Peer identities in spans: in a mesh with identities (xDS mode, mTLS) each side's span names
//! the other side's SPIFFE ID, and a sampling change pushed by the control plane applies
//! without a restart; without mTLS (static mode, plaintext) no identity is claimed.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use super::{SPANS, TraceParent, marker, one, sampled_parent, seen_traceparent, traced};
use crate::{
    mtls::{CLIENT, CLIENT_SA, Pair, SERVER, SERVER_SA, SERVICE, pair_mesh},
    support::{
        STEP, client, collector::Collector, eventually, mesh::spiffe, proxy::ProxyBuilder,
        upstream::HttpUpstream,
    },
};

/// `GET reviews path` without trace context through the client side; the app's traceparent.
async fn fresh(pair: &Pair, app: &HttpUpstream, path: &str) -> TraceParent {
    let r = client::send_h1(pair.client.outbound, client::get(SERVICE, path)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    seen_traceparent(app, path)
}

#[tokio::test]
async fn spans_carry_peer_identities_and_pushed_sampling_applies_live() {
    let collector = Collector::start().await;
    let app = HttpUpstream::start("reviews-app").await;
    let endpoint = collector.endpoint();
    let pair = Pair::start_with("auto", app.addr(), "strict", |_, b| {
        traced(b, &endpoint).flag("--access-log")
    })
    .await;

    let (trace, _, tp) = sampled_parent();
    let r = client::send_h1(pair.client.outbound, super::get_in(SERVICE, "/mtls", &tp)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let spans = collector.wait_trace(&trace, 2, SPANS).await;
    let a = one(&spans, SpanKind::Client);
    let b = one(&spans, SpanKind::Server);
    assert_eq!(
        a.str("skiff.peer.identity"),
        Some(spiffe(SERVER_SA).as_str()),
        "outbound: the endpoint's identity: {a:?}"
    );
    assert_eq!(
        b.str("skiff.peer.identity"),
        Some(spiffe(CLIENT_SA).as_str()),
        "inbound: the caller's identity: {b:?}"
    );
    assert_eq!(a.service_name(), Some(CLIENT), "{a:?}");
    assert_eq!(b.service_name(), Some(SERVER), "{b:?}");
    assert_eq!(b.parent_span_id, a.span_id, "{spans:?}");
    // The access log lines of both sides join their spans and name the same peers.
    for (proxy, span, direction, peer) in [
        (&pair.client, &a, "outbound", spiffe(SERVER_SA)),
        (&pair.server, &b, "inbound", spiffe(CLIENT_SA)),
    ] {
        let e = super::access_log::entry(proxy, "/mtls").await;
        assert_eq!(e["direction"], direction, "{e:#}");
        assert_eq!(e["peer_identity"], peer.as_str(), "{e:#}");
        assert_eq!(e["trace_id"], trace.as_str(), "{e:#}");
        assert_eq!(e["span_id"], span.span_id.as_str(), "{e:#}");
    }

    // The control plane pushes sampling 0.0; the client side starts the traces, so once it
    // has the push the app sees unsampled ones.
    let zero = format!(
        "mesh: {{ tracing: {{ sampling: 0.0 }} }}\n{}",
        pair_mesh(
            "auto",
            &pair.server.inbound.to_string(),
            app.addr(),
            "strict"
        )
    );
    pair.mesh.set_mesh_and_wait(&zero).await;
    let n = AtomicUsize::new(0);
    eventually("the pushed sampling reaches the sidecar", STEP, || async {
        let i = n.fetch_add(1, Ordering::SeqCst);
        !fresh(&pair, &app, &format!("/wait/{i}")).await.sampled()
    })
    .await;
    let mut unsampled = Vec::new();
    for i in 0..3 {
        let tp = fresh(&pair, &app, &format!("/zero/{i}")).await;
        assert_eq!(tp.flags, "00", "{tp:?}");
        unsampled.push(tp.trace_id);
    }
    marker(&collector, pair.client.outbound, SERVICE, 2).await;
    let all = collector.spans();
    for t in &unsampled {
        assert!(
            all.iter().all(|s| &s.trace_id != t),
            "no span for the unsampled trace {t}: {all:?}"
        );
    }
}

#[tokio::test]
async fn plaintext_spans_and_log_lines_claim_no_peer_identity() {
    let collector = Collector::start().await;
    let app = HttpUpstream::start("reviews-app").await;
    // Static mode, no CA: the workload endpoint is dialled in plaintext, so nothing is proved.
    let mesh = format!(
        "services:\n  - name: reviews\n    endpoints: [ {{ workload: reviews-v1 }} ]\n\
         workloads:\n  - name: reviews-v1\n    inbound: {{ listen: \"{}\", app: \"127.0.0.1:9\" }}\n",
        app.addr()
    );
    let proxy = traced(ProxyBuilder::new(&mesh), &collector.endpoint())
        .flag("--access-log")
        .start()
        .await;

    let (trace, _, tp) = sampled_parent();
    let r = client::send_h1(proxy.outbound, super::get_in(SERVICE, "/plain", &tp)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.served_by(), Some("reviews-app"), "{r:?}");
    let spans = super::wait_kind(&collector, &trace, SpanKind::Client).await;
    let a = one(&spans, SpanKind::Client);
    let e = super::access_log::entry(&proxy, "/plain").await;
    assert_eq!(
        (a.attr("skiff.peer.identity"), &e["peer_identity"]),
        (None, &serde_json::Value::Null),
        "no identity without mTLS, in the span or the log line: {a:?} {e:#}"
    );
}
