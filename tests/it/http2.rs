//! HTTP/2 (h2c, prior knowledge) through the outbound listener: multiplexing, trailers, and
//! `protocol: auto` speaking upstream what the client spoke.

use std::collections::HashSet;

use http::{StatusCode, Version};

use crate::support::{
    client::{self, H2Conn},
    proxy::Proxy,
    upstream::HttpUpstream,
};

fn mesh(upstream: &HttpUpstream) -> String {
    format!(
        r#"
services:
  - name: web
    protocol: auto
    endpoints:
      - address: "{}"
"#,
        upstream.addr()
    )
}

#[tokio::test]
async fn h2c_multiplexed_streams_with_trailers() {
    const STREAMS: usize = 64;
    let web = HttpUpstream::start("web-1").await;
    let proxy = Proxy::start(&mesh(&web)).await;

    let conn = H2Conn::connect(proxy.outbound).await;
    let calls = (0..STREAMS).map(|i| {
        let conn = conn.clone();
        async move {
            let mut req = client::post(
                "web",
                &format!("/stream/{i}"),
                format!("body of stream {i}"),
            );
            req.headers_mut()
                .insert("x-want-trailers", client::value("1"));
            (i, conn.send(req).await)
        }
    });
    let replies = futures_util::future::join_all(calls).await;

    for (i, r) in &replies {
        assert_eq!(r.status, StatusCode::OK, "stream {i}: {r:?}");
        assert_eq!(r.version, Version::HTTP_2);
        assert_eq!(
            r.text(),
            format!("body of stream {i}"),
            "stream {i} gets its own body back"
        );
        let trailers = r
            .trailers
            .as_ref()
            .unwrap_or_else(|| panic!("stream {i}: no trailers"));
        assert_eq!(
            trailers.get("x-trailer").map(|v| v.as_bytes()),
            Some(&b"done"[..]),
            "stream {i}"
        );
        let len = format!("body of stream {i}").len().to_string();
        assert_eq!(
            trailers.get("x-echo-len").map(|v| v.as_bytes()),
            Some(len.as_bytes()),
            "stream {i}"
        );
    }
    let seen = web.requests();
    assert_eq!(seen.len(), STREAMS);
    assert!(
        seen.iter().all(|s| s.version == Version::HTTP_2),
        "h2 client, auto protocol: upstream speaks h2"
    );
    let targets: HashSet<_> = seen.iter().map(|s| s.target.clone()).collect();
    assert_eq!(
        targets.len(),
        STREAMS,
        "every stream reached the upstream once"
    );
}

#[tokio::test]
async fn auto_protocol_speaks_upstream_what_the_client_spoke() {
    let web = HttpUpstream::start("web-1").await;
    let proxy = Proxy::start(&mesh(&web)).await;

    let h1 = client::send_h1(proxy.outbound, client::get("web", "/h1")).await;
    assert_eq!(h1.status, StatusCode::OK, "{h1:?}");
    assert_eq!(
        h1.header("x-echo-version"),
        Some("HTTP/1.1"),
        "h1 client: upstream sees HTTP/1.1"
    );

    let h2 = client::send_h2(proxy.outbound, client::get("web", "/h2")).await;
    assert_eq!(h2.status, StatusCode::OK, "{h2:?}");
    assert_eq!(h2.version, Version::HTTP_2);
    assert_eq!(
        h2.header("x-echo-version"),
        Some("HTTP/2.0"),
        "h2 client: upstream sees HTTP/2"
    );
    assert_eq!(h2.text(), "web-1 GET /h2");
}

#[tokio::test]
async fn upstream_goaway_opens_a_new_connection_without_failing_requests() {
    let up = crate::support::upstream::GoAwayUpstream::start().await;
    let proxy = Proxy::start(&format!(
        "services:\n  - name: web\n    protocol: http2\n    endpoints: [ {{ address: \"{}\" }} ]\n",
        up.addr()
    ))
    .await;
    const REQUESTS: usize = 20;
    // Rounds of concurrent requests: some are in flight on a connection when its GOAWAY
    // arrives, so both "reconnect before sending" and "not yet sent" paths are exercised.
    for round in 0..REQUESTS / 4 {
        let calls = (0..4)
            .map(|i| client::send_h1(proxy.outbound, client::get("web", &format!("/{round}/{i}"))));
        for (i, r) in futures_util::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(
                r.status,
                StatusCode::OK,
                "round {round} request {i} around a GOAWAY: {r:?}"
            );
            assert_eq!(r.text(), "ok");
        }
    }
    assert!(
        up.connections() >= REQUESTS / 4,
        "GOAWAY after every request must make the proxy reconnect: {} connections for {REQUESTS} requests",
        up.connections()
    );
}
