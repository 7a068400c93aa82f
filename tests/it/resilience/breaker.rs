//! Circuit breakers: a full `maxRequests` fails the next request at once with 503 `overflow`;
//! `maxConnections` also bounds opaque TCP, where the connection over it is closed at once.

use std::time::Duration;

use http::StatusCode;
use tokio::task::JoinSet;

use crate::{
    errors::assert_made_by_proxy,
    support::{
        STEP,
        client::{self, RawConn},
        eventually,
        faulty::StallServer,
        proxy::Proxy,
        upstream::TcpEcho,
        within,
    },
};

/// How long a request refused by a full breaker may take. The stalled requests never end, so
/// this only has to be "not waiting for them"; generous for a loaded 2-core box.
const AT_ONCE: Duration = Duration::from_secs(2);

#[tokio::test]
async fn max_requests_full_fails_the_next_request_at_once() {
    let stall = StallServer::start().await;
    let mesh = format!(
        r#"
services:
  - name: stuck
    endpoints: [{{ address: "{}" }}]
    circuitBreaker: {{ maxRequests: 4 }}
"#,
        stall.addr()
    );
    let proxy = Proxy::start(&mesh).await;

    // Four requests the upstream holds; the JoinSet aborts them when the test ends.
    let mut held = JoinSet::new();
    for i in 0..4 {
        let outbound = proxy.outbound;
        held.spawn(async move {
            client::try_send_h1(outbound, client::get("stuck", &format!("/held/{i}"))).await
        });
    }
    stall.wait_arrived(4).await;
    assert_eq!(stall.in_flight(), 4);
    assert_eq!(
        stall.connections(),
        4,
        "HTTP/1.1: one upstream connection per held request"
    );

    let r = within(
        "the request over maxRequests",
        AT_ONCE,
        client::send_h1(proxy.outbound, client::get("stuck", "/fifth")),
    )
    .await;
    assert_made_by_proxy(&r, StatusCode::SERVICE_UNAVAILABLE, "overflow");
    assert_eq!(stall.arrived(), 4, "the fifth never reached the upstream");
    assert!(
        held.try_join_next().is_none(),
        "the held requests are still waiting"
    );

    let m = proxy.metric_values().await;
    assert!(
        m.sum(
            "skiff_breaker_overflow_total",
            &[("service", "stuck"), ("threshold", "maxRequests")]
        ) >= 1.0,
        "the overflow is counted"
    );
}

#[tokio::test]
async fn max_connections_holds_for_opaque_tcp() {
    let echo = TcpEcho::start().await;
    let mesh = format!(
        r#"
services:
  - name: anything
    hosts: ["*"]
    protocol: tcp
    endpoints: [{{ address: "{}" }}]
    circuitBreaker: {{ maxConnections: 2 }}
"#,
        echo.addr()
    );
    let proxy = Proxy::start(&mesh).await;

    // Two connections held open: the echo answers only after the client's FIN.
    let mut first = RawConn::connect(proxy.outbound).await;
    first.write(b"one").await;
    let mut second = RawConn::connect(proxy.outbound).await;
    second.write(b"two").await;
    eventually("both connections reached the echo", STEP, || async {
        echo.connections() == 2
    })
    .await;

    let mut third = RawConn::connect(proxy.outbound).await;
    third.write_lenient(b"three").await;
    third.shutdown_write_lenient().await;
    let back = within(
        "the third connection closed at once",
        AT_ONCE,
        third.read_to_end(),
    )
    .await;
    assert!(
        back.is_empty(),
        "nothing echoed over maxConnections: {back:?}"
    );
    assert_eq!(echo.connections(), 2, "the third never reached the echo");

    // The two held ones still work end to end.
    for (conn, sent) in [(&mut first, &b"one"[..]), (&mut second, &b"two"[..])] {
        conn.shutdown_write().await;
        assert_eq!(conn.read_to_end().await, sent);
    }
    let m = proxy.metric_values().await;
    assert!(
        m.sum(
            "skiff_breaker_overflow_total",
            &[("service", "anything"), ("threshold", "maxConnections")]
        ) >= 1.0,
        "the refused connection is counted"
    );
}
