//! SIGTERM drain: in-flight requests finish, `/ready` turns 503, new connections are not
//! served, and the process exits 0.

use std::time::Duration;

use http::StatusCode;

use crate::support::{STEP, client, proxy::ProxyBuilder, upstream::HttpUpstream, within};

#[tokio::test]
async fn sigterm_lets_in_flight_request_finish_then_exits_zero() {
    let web = HttpUpstream::start("web").await;
    let mesh = format!(
        "services:\n  - name: web\n    endpoints: [{{ address: \"{}\" }}]\n",
        web.addr()
    );
    let mut proxy = ProxyBuilder::new(&mesh)
        .arg("--drain-timeout", "15s")
        .start()
        .await;

    let outbound = proxy.outbound;
    let in_flight = tokio::spawn(async move {
        let mut req = client::get("web", "/slow");
        req.headers_mut()
            .insert("x-delay-ms", client::value("1000"));
        client::try_send_h1(outbound, req).await
    });
    web.wait_requests(1).await;
    proxy.signal(libc::SIGTERM);

    within("/ready answers 503 while draining", STEP, async {
        loop {
            if proxy.ready_status().await == Some(StatusCode::SERVICE_UNAVAILABLE) {
                return;
            }
            if let Some(status) = proxy.exit_status() {
                panic!("skiff exited ({status}) with a request in flight instead of draining");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    let late = client::try_send_h1(outbound, client::get("web", "/late")).await;
    assert!(
        !matches!(&late, Ok(r) if r.status == StatusCode::OK),
        "a connection made after SIGTERM is not served: {late:?}"
    );

    let r = in_flight
        .await
        .expect("in-flight task")
        .unwrap_or_else(|e| panic!("the in-flight request fails: {e}"));
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the in-flight request completes: {r:?}"
    );
    assert_eq!(r.text(), "web GET /slow");
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "a response finished while draining tells the HTTP/1.1 client to close: {r:?}"
    );

    let status = proxy.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "a drained proxy exits 0, got {status:?}");
    assert_eq!(
        web.requests().len(),
        1,
        "the late request never reached the upstream"
    );
}
