//! Fault injection on a route: aborts answered by the proxy itself (`fault-injected`) at the
//! configured share, never reaching the upstream; delays before forwarding; a gRPC abort by
//! `grpcStatus`.

use std::time::Duration;

use http::StatusCode;
use tonic::Code;

use super::load;
use crate::{
    errors::assert_made_by_proxy,
    grpc::{grpc_client, skiff_reason, unary_fails},
    support::{
        client,
        proxy::Proxy,
        upstream::{GrpcUpstream, HttpUpstream},
    },
};

async fn fault_sum(proxy: &Proxy, service: &str, fault: &str) -> f64 {
    proxy.metric_values().await.sum(
        "skiff_fault_injected_total",
        &[("service", service), ("fault", fault)],
    )
}

#[tokio::test]
async fn abort_30_percent_aborts_about_30_percent_before_the_upstream() {
    const TOTAL: usize = 1200;
    let web = HttpUpstream::start("web").await;
    let mesh = format!(
        r#"
services:
  - name: web
    endpoints: [{{ address: "{}" }}]
    routes:
      - name: chaos
        fault: {{ abort: {{ percent: 30, status: 503 }} }}
"#,
        web.addr()
    );
    let proxy = Proxy::start(&mesh).await;

    let replies = load(proxy.outbound, TOTAL, 8, |i| {
        client::get("web", &format!("/{i}"))
    })
    .await;
    let mut aborted = 0;
    for r in &replies {
        if r.status == StatusCode::OK {
            assert_eq!(r.served_by(), Some("web"), "{r:?}");
        } else {
            assert_made_by_proxy(r, StatusCode::SERVICE_UNAVAILABLE, "fault-injected");
            aborted += 1;
        }
    }
    // Binomial(1200, 0.3): sd 1.3 points, so +-5 points is beyond 3.5 sd.
    let share = aborted as f64 / TOTAL as f64;
    assert!(
        (0.25..=0.35).contains(&share),
        "{aborted} of {TOTAL} aborted ({share:.3})"
    );
    assert_eq!(
        web.requests().len(),
        TOTAL - aborted,
        "an aborted request never reaches the upstream"
    );
    assert_eq!(fault_sum(&proxy, "web", "abort").await, aborted as f64);
}

#[tokio::test]
async fn delay_100_percent_holds_each_request_for_the_duration() {
    const DELAY: Duration = Duration::from_millis(300);
    let web = HttpUpstream::start("web").await;
    let mesh = format!(
        r#"
services:
  - name: web
    endpoints: [{{ address: "{}" }}]
    routes:
      - name: slow
        fault: {{ delay: {{ percent: 100, duration: 300ms }} }}
"#,
        web.addr()
    );
    let proxy = Proxy::start(&mesh).await;

    for i in 0..3 {
        let started = tokio::time::Instant::now();
        let r = client::send_h1(proxy.outbound, client::get("web", &format!("/{i}"))).await;
        let took = started.elapsed();
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.served_by(), Some("web"), "a delay still forwards: {r:?}");
        assert!(took >= DELAY, "request {i} took {took:?}");
    }
    assert_eq!(web.requests().len(), 3);
    assert_eq!(fault_sum(&proxy, "web", "delay").await, 3.0);
    assert_eq!(fault_sum(&proxy, "web", "abort").await, 0.0);
}

#[tokio::test]
async fn grpc_abort_by_grpc_status_gives_the_caller_that_status() {
    let echo = GrpcUpstream::start("echo").await;
    let mesh = format!(
        r#"
services:
  - name: echo
    protocol: grpc
    endpoints: [{{ address: "{}" }}]
    routes:
      - name: down
        fault: {{ abort: {{ percent: 100, grpcStatus: 14 }} }}
"#,
        echo.addr()
    );
    let proxy = Proxy::start(&mesh).await;

    let mut client = grpc_client(proxy.outbound, "echo").await;
    for _ in 0..2 {
        let status = unary_fails(&mut client, "aborted by the fault").await;
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(skiff_reason(&status), Some("fault-injected"), "{status:?}");
    }
    assert_eq!(echo.calls(), 0, "no call reached the server");
    assert_eq!(fault_sum(&proxy, "echo", "abort").await, 2.0);
}
