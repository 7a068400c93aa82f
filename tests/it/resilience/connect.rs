//! Connects that hang: 20 concurrent requests to a black-holed endpoint each fail with 503
//! `connect-failed` after about one `connectTimeout`, not one after another (a pool that
//! serialises connects would make the k-th wait k timeouts).

use std::time::Duration;

use http::StatusCode;

use crate::{
    errors::assert_made_by_proxy,
    support::{
        client::{self, H1Conn, H2Conn, Reply},
        proxy::Proxy,
        upstream::BlackHole,
    },
};

const CONCURRENT: usize = 20;
/// One 500 ms connect timeout plus slack for a loaded 2-core box; 20 serialised timeouts would
/// take 10 s, and even 5 in a row would pass this.
const EACH_WITHIN: Duration = Duration::from_millis(2500);

async fn proxy_for(hole: &BlackHole) -> Proxy {
    let mesh = format!(
        "services:\n  - name: hole\n    connectTimeout: 500ms\n    endpoints: [{{ address: \"{}\" }}]\n",
        hole.addr()
    );
    Proxy::start(&mesh).await
}

fn assert_each_failed_fast(replies: Vec<(Reply, Duration)>) {
    assert_eq!(replies.len(), CONCURRENT);
    for (i, (r, took)) in replies.iter().enumerate() {
        assert_made_by_proxy(r, StatusCode::SERVICE_UNAVAILABLE, "connect-failed");
        assert!(
            *took < EACH_WITHIN,
            "request {i} took {took:?}: {:?}",
            replies.iter().map(|(_, t)| *t).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn black_hole_fails_each_concurrent_http1_request_within_one_connect_timeout() {
    let hole = BlackHole::start().await;
    let proxy = proxy_for(&hole).await;
    // Connected first, so the clock runs only for the request.
    let mut conns = Vec::new();
    for _ in 0..CONCURRENT {
        conns.push(H1Conn::connect(proxy.outbound).await);
    }
    let replies =
        futures_util::future::join_all(conns.iter_mut().enumerate().map(|(i, c)| async move {
            let started = tokio::time::Instant::now();
            let r = c.send(client::get("hole", &format!("/{i}"))).await;
            (r, started.elapsed())
        }))
        .await;
    assert_each_failed_fast(replies);
}

#[tokio::test]
async fn black_hole_fails_each_concurrent_h2_stream_within_one_connect_timeout() {
    let hole = BlackHole::start().await;
    let proxy = proxy_for(&hole).await;
    // One client connection, 20 concurrent streams, all to the same hanging endpoint.
    let conn = H2Conn::connect(proxy.outbound).await;
    let replies = futures_util::future::join_all((0..CONCURRENT).map(|i| {
        let conn = conn.clone();
        async move {
            let started = tokio::time::Instant::now();
            let r = conn.send(client::get("hole", &format!("/{i}"))).await;
            (r, started.elapsed())
        }
    }))
    .await;
    assert_each_failed_fast(replies);
}
