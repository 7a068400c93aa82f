//! Opaque TCP through a sidecar: one span per connection, a new trace each, with the bytes
//! that went each way (the server's banner one way, the client's payload the other), and one
//! access log line joined to it.

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use super::{SPANS, traced};
use crate::{
    support::{
        STEP,
        client::RawConn,
        collector::{Attr, Collector},
        eventually,
        proxy::ProxyBuilder,
        upstream::{BANNER, BannerServer},
    },
    tcp::opaque_payload,
};

#[tokio::test]
async fn tcp_connection_gives_one_span_with_bytes_each_way() {
    let collector = Collector::start().await;
    let smtp = BannerServer::start().await;
    let mesh = format!(
        "services:\n  - name: mail\n    hosts: [\"*\"]\n    protocol: tcp\n    \
         endpoints: [{{ address: \"{}\" }}]\n",
        smtp.addr()
    );
    let proxy = traced(ProxyBuilder::new(&mesh), &collector.endpoint())
        .flag("--access-log")
        .start()
        .await;

    let sizes = [100usize, 5000];
    for size in sizes {
        let mut raw = RawConn::connect(proxy.outbound).await;
        assert_eq!(raw.read_until(BANNER).await, BANNER);
        raw.write(&opaque_payload(size)).await;
        raw.shutdown_write().await;
        // The server reads to our FIN and hangs up; the proxy closes us after it.
        assert!(raw.read_to_end().await.is_empty());
    }

    let spans = collector
        .wait_for(SPANS, |all| all.len() >= sizes.len())
        .await;
    assert_eq!(
        spans.len(),
        sizes.len(),
        "one span per connection: {spans:?}"
    );
    let mut sent: Vec<i64> = Vec::new();
    for s in &spans {
        assert_eq!(s.kind, SpanKind::Client, "{s:?}");
        assert_eq!(s.name, "tcp mail", "{s:?}");
        assert_eq!(s.str("network.transport"), Some("tcp"), "{s:?}");
        assert_eq!(s.str("skiff.service"), Some("mail"), "{s:?}");
        assert_eq!(
            s.str("skiff.endpoint"),
            Some(smtp.addr().to_string().as_str()),
            "{s:?}"
        );
        assert_eq!(
            s.attr("skiff.bytes.received"),
            Some(&Attr::Int(BANNER.len() as i64)),
            "upstream -> client: the banner: {s:?}"
        );
        assert_eq!(s.parent_span_id, "", "a new trace per connection: {s:?}");
        sent.push(s.int("skiff.bytes.sent").unwrap_or(-1));
    }
    sent.sort_unstable();
    assert_eq!(
        sent,
        sizes.map(|n| n as i64),
        "client -> upstream: each payload: {spans:?}"
    );
    assert_ne!(spans[0].trace_id, spans[1].trace_id, "{spans:?}");

    // One access log line per connection, joined to its span.
    eventually("an access log line per connection", STEP, || async {
        super::access_log::entries(&proxy).len() >= sizes.len()
    })
    .await;
    let lines = super::access_log::entries(&proxy);
    assert_eq!(lines.len(), sizes.len(), "{lines:#?}");
    for e in &lines {
        let span = spans
            .iter()
            .find(|s| e["span_id"] == s.span_id.as_str())
            .unwrap_or_else(|| panic!("the line's span was exported: {e:#} {spans:?}"));
        assert_eq!(e["trace_id"], span.trace_id.as_str(), "{e:#}");
        assert_eq!(e["direction"], "outbound", "{e:#}");
        assert_eq!(e["service"], "mail", "{e:#}");
    }
}
