//! `/metrics`: OpenMetrics text that parses, request counters that rise by exactly what was
//! sent (per route label), and TCP and detection counters for opaque traffic.

use http::StatusCode;

use crate::{
    support::{
        STEP,
        client::{self, H1Conn, H2Conn, Metrics, RawConn},
        eventually,
        proxy::Proxy,
        upstream::{HttpUpstream, TcpEcho},
    },
    tcp::opaque_payload,
};

#[tokio::test]
async fn metrics_page_is_openmetrics_with_build_info() {
    let proxy = Proxy::start("services: []\n").await;
    let r = proxy.admin_get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/openmetrics-text"),
        "content-type {ct:?}"
    );
    let m =
        Metrics::parse(&r.text()).unwrap_or_else(|e| panic!("does not parse: {e}\n{}", r.text()));
    assert_eq!(
        m.sum(
            "skiff_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0,
        "skiff_build_info{{version}} is 1"
    );
}

#[tokio::test]
async fn request_counters_rise_by_exactly_the_requests_sent_per_route() {
    let web = HttpUpstream::start("web").await;
    let mesh = format!(
        r#"
services:
  - name: web
    endpoints: [{{ address: "{}" }}]
    routes:
      - name: named
        matches: [{{ path: {{ type: PathPrefix, value: /named }} }}]
      - matches: [{{ path: {{ type: PathPrefix, value: /unnamed }} }}]
"#,
        web.addr()
    );
    let proxy = Proxy::start(&mesh).await;
    let labels = |route: &'static str| {
        [
            ("direction", "outbound"),
            ("service", "web"),
            ("route", route),
        ]
    };
    let before = proxy.metric_values().await;

    let mut conn = H1Conn::connect(proxy.outbound).await;
    let sent = [("/named/x", 7usize), ("/unnamed", 3), ("/elsewhere", 2)];
    for (path, n) in sent {
        for _ in 0..n {
            assert_eq!(
                conn.send(client::get("web", path)).await.status,
                StatusCode::OK
            );
        }
    }
    let mut not_found = client::get("web", "/named/missing");
    not_found
        .headers_mut()
        .insert("x-status", client::value("404"));
    assert_eq!(conn.send(not_found).await.status, StatusCode::NOT_FOUND);

    // route label: the name, else `route-<index>`; unmatched: `default`.
    let expected = [("named", 8.0), ("route-1", 3.0), ("default", 2.0)];
    let delta = |m: &Metrics, name: &str, route: &'static str, extra: &[(&str, &str)]| {
        let mut l = labels(route).to_vec();
        l.extend_from_slice(extra);
        m.sum(name, &l) - before.sum(name, &l)
    };
    // Responses may be counted when their body ends, just after the client has it.
    eventually("response counters catch up", STEP, || async {
        let m = proxy.metric_values().await;
        expected
            .iter()
            .all(|(route, n)| delta(&m, "skiff_responses_total", route, &[]) >= *n)
    })
    .await;
    let m = proxy.metric_values().await;
    for (route, n) in expected {
        assert_eq!(
            delta(&m, "skiff_requests_total", route, &[]),
            n,
            "skiff_requests_total route={route}"
        );
        assert_eq!(
            delta(&m, "skiff_responses_total", route, &[]),
            n,
            "skiff_responses_total route={route}"
        );
        assert_eq!(
            delta(&m, "skiff_request_duration_seconds_count", route, &[]),
            n,
            "skiff_request_duration_seconds count route={route}"
        );
    }
    assert_eq!(
        delta(
            &m,
            "skiff_responses_total",
            "named",
            &[("status_class", "2xx")]
        ),
        7.0
    );
    assert_eq!(
        delta(
            &m,
            "skiff_responses_total",
            "named",
            &[("status_class", "4xx")]
        ),
        1.0
    );
}

#[tokio::test]
async fn opaque_exchange_counts_connections_bytes_and_detection() {
    let echo = TcpEcho::start().await;
    let mesh = format!(
        "services:\n  - name: anything\n    hosts: [\"*\"]\n    endpoints: [{{ address: \"{}\" }}]\n",
        echo.addr()
    );
    // protocol auto: detection runs, finds no HTTP, and the catch-all takes the bytes.
    let proxy = Proxy::start(&mesh).await;
    let out = [("direction", "outbound")];
    let before = proxy.metric_values().await;

    const LEN: usize = 100_000;
    let payload = opaque_payload(LEN);
    let mut raw = RawConn::connect(proxy.outbound).await;
    raw.write(&payload).await;
    raw.shutdown_write().await;
    assert_eq!(raw.read_to_end().await.len(), LEN);
    drop(raw);

    let delta = |m: &Metrics, name: &str, labels: &[(&str, &str)]| {
        m.sum(name, labels) - before.sum(name, labels)
    };
    eventually("the closed connection is no longer open", STEP, || async {
        let m = proxy.metric_values().await;
        delta(&m, "skiff_tcp_connections_total", &out) >= 1.0
            && m.sum("skiff_tcp_connections_open", &out)
                == before.sum("skiff_tcp_connections_open", &out)
    })
    .await;
    let m = proxy.metric_values().await;
    assert_eq!(
        delta(&m, "skiff_tcp_connections_total", &out),
        1.0,
        "one connection accepted"
    );
    let read = delta(
        &m,
        "skiff_tcp_bytes_total",
        &[("direction", "outbound"), ("io", "read")],
    );
    let write = delta(
        &m,
        "skiff_tcp_bytes_total",
        &[("direction", "outbound"), ("io", "write")],
    );
    assert!(read >= LEN as f64, "bytes read counted: {read}");
    assert!(write >= LEN as f64, "bytes written counted: {write}");
    let detect: Vec<_> = m.matching("skiff_detect_total", &[]).collect();
    assert_eq!(
        delta(&m, "skiff_detect_total", &[("outcome", "opaque")]),
        1.0,
        "skiff_detect_total{{outcome=opaque}} counts the opaque connection: {detect:?}"
    );
}

#[tokio::test]
async fn detection_outcomes_counted_per_protocol() {
    let web = HttpUpstream::start("web").await;
    let mesh = format!(
        "services:\n  - name: web\n    endpoints: [{{ address: \"{}\" }}]\n",
        web.addr()
    );
    let proxy = Proxy::start(&mesh).await;
    let before = proxy.metric_values().await;

    assert_eq!(
        client::send_h1(proxy.outbound, client::get("web", "/"))
            .await
            .status,
        StatusCode::OK
    );
    let h2 = H2Conn::connect(proxy.outbound).await;
    assert_eq!(
        h2.send(client::get("web", "/")).await.status,
        StatusCode::OK
    );

    let m = proxy.metric_values().await;
    for outcome in ["http1", "http2"] {
        let d = m.sum("skiff_detect_total", &[("outcome", outcome)])
            - before.sum("skiff_detect_total", &[("outcome", outcome)]);
        assert_eq!(d, 1.0, "skiff_detect_total{{outcome={outcome}}}");
    }
    let inbound = m.sum("skiff_requests_total", &[("direction", "inbound")]);
    assert_eq!(inbound, 0.0, "outbound traffic is not counted as inbound");
}

#[tokio::test]
async fn http_bytes_and_unrouted_opaque_connections_are_counted() {
    let web = HttpUpstream::start("web").await;
    // No catch-all: opaque bytes have nowhere to go.
    let mesh = format!(
        "services:\n  - name: web\n    endpoints: [{{ address: \"{}\" }}]\n",
        web.addr()
    );
    let proxy = Proxy::start(&mesh).await;
    let out = [("direction", "outbound")];
    let read_labels = [("direction", "outbound"), ("io", "read")];
    let write_labels = [("direction", "outbound"), ("io", "write")];
    let before = proxy.metric_values().await;

    let reply = client::send_h1(proxy.outbound, client::get("web", "/counted")).await;
    assert_eq!(reply.status, http::StatusCode::OK);
    // The proxy counts a write after its syscall returns, so the client can
    // hold the response a moment before the counter moves: wait for it.
    let body_len = reply.body.len() as f64;
    eventually(
        "the HTTP request and response bytes are counted",
        STEP,
        || async {
            let m = proxy.metric_values().await;
            let read = m.sum("skiff_tcp_bytes_total", &read_labels)
                - before.sum("skiff_tcp_bytes_total", &read_labels);
            let written = m.sum("skiff_tcp_bytes_total", &write_labels)
                - before.sum("skiff_tcp_bytes_total", &write_labels);
            read >= 30.0 && written >= body_len
        },
    )
    .await;

    let mut raw = RawConn::connect(proxy.outbound).await;
    raw.write(b"\x00\x01 not http, and no service takes it")
        .await;
    raw.shutdown_write().await;
    assert!(
        raw.read_to_end().await.is_empty(),
        "the proxy closes the connection without a byte"
    );
    eventually("the unrouted connection is counted", STEP, || async {
        let m = proxy.metric_values().await;
        m.sum("skiff_tcp_unrouted_connections_total", &out)
            - before.sum("skiff_tcp_unrouted_connections_total", &out)
            == 1.0
    })
    .await;
}
