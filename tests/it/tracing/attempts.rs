//! Retry attempts as spans: a request that took three attempts has three `attempt <n>` child
//! spans under its client span, each with its outcome; a request tried once has none.

use http::StatusCode;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use super::{SPANS, get_in, one, sampled_parent, traced, wait_kind};
use crate::{
    resilience::attempts,
    support::{
        client,
        collector::{Attr, CollectedSpan, Collector},
        faulty::{Failing, FlakyUpstream},
        proxy::ProxyBuilder,
    },
};

#[tokio::test]
async fn retries_get_one_attempt_span_each_and_single_tries_none() {
    let collector = Collector::start().await;
    let flaky = FlakyUpstream::builder("flaky")
        .failing(Failing::FirstN(2))
        .start()
        .await;
    let mesh = format!(
        r#"
services:
  - name: flaky
    endpoints: [{{ address: "{}" }}]
    routes:
      - name: main
        retry: {{ attempts: 3, retryOn: [5xx], backoff: {{ base: 1ms, max: 5ms }} }}
"#,
        flaky.addr()
    );
    let proxy = traced(ProxyBuilder::new(&mesh), &collector.endpoint())
        .start()
        .await;
    let endpoint = flaky.addr().to_string();

    // Fails twice (503), passes on the third attempt.
    let (trace, _, tp) = sampled_parent();
    let r = client::send_h1(proxy.outbound, get_in("flaky", "/retried", &tp)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(attempts(&r), Some(3), "{r:?}");

    let spans = collector.wait_trace(&trace, 4, SPANS).await;
    assert_eq!(spans.len(), 4, "the hop span and three attempts: {spans:?}");
    let hop = one(&spans, SpanKind::Client);
    assert_eq!(hop.int("skiff.attempt"), Some(3), "attempts made: {hop:?}");
    assert_eq!(hop.str("skiff.route"), Some("main"), "{hop:?}");
    assert_eq!(hop.str("skiff.service"), Some("flaky"), "{hop:?}");
    assert_eq!(
        hop.str("skiff.endpoint"),
        Some(endpoint.as_str()),
        "{hop:?}"
    );
    assert_eq!(
        hop.attr("http.response.status_code"),
        Some(&Attr::Int(200)),
        "{hop:?}"
    );
    assert_eq!(hop.attr("error.type"), None, "it succeeded: {hop:?}");

    let mut tries: Vec<CollectedSpan> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Internal)
        .cloned()
        .collect();
    tries.sort_by_key(|s| s.int("skiff.attempt"));
    assert_eq!(tries.len(), 3, "{spans:?}");
    let expect = [(1, 503, true), (2, 503, true), (3, 200, false)];
    for (s, (n, status, retried)) in tries.iter().zip(expect) {
        assert_eq!(s.name, format!("attempt {n}"), "{s:?}");
        assert_eq!(s.int("skiff.attempt"), Some(n), "{s:?}");
        assert_eq!(
            s.parent_span_id, hop.span_id,
            "attempt {n} is a child of the hop span: {s:?}"
        );
        assert_eq!(
            s.attr("http.response.status_code"),
            Some(&Attr::Int(status)),
            "attempt {n}'s outcome: {s:?}"
        );
        assert_eq!(
            s.bool("skiff.retried"),
            Some(retried),
            "attempt {n}: did the loop go again: {s:?}"
        );
        assert_eq!(s.str("skiff.endpoint"), Some(endpoint.as_str()), "{s:?}");
    }

    // The upstream passes from now on: one attempt, no attempt span. An attempt span ends
    // before its hop span, so once the hop span is here any attempt span would be too.
    let (single, _, tp) = sampled_parent();
    let r = client::send_h1(proxy.outbound, get_in("flaky", "/single", &tp)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(attempts(&r), None, "{r:?}");
    let spans = wait_kind(&collector, &single, SpanKind::Client).await;
    let hop = one(&spans, SpanKind::Client);
    assert_eq!(hop.int("skiff.attempt"), Some(1), "{hop:?}");
    assert_eq!(
        spans.len(),
        1,
        "a request tried once has no attempt span: {spans:?}"
    );
}
