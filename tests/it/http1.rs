//! HTTP/1.1 through the outbound listener: keep-alive, chunked bodies, `Expect: 100-continue`.

use http::StatusCode;

use crate::support::{
    client::{self, H1Conn, RawConn},
    proxy::Proxy,
    upstream::HttpUpstream,
};

fn mesh(upstream: &HttpUpstream) -> String {
    format!(
        r#"
services:
  - name: web
    endpoints:
      - address: "{}"
"#,
        upstream.addr()
    )
}

#[tokio::test]
async fn keep_alive_two_requests_one_client_and_one_upstream_connection() {
    let web = HttpUpstream::start("web-1").await;
    let proxy = Proxy::start(&mesh(&web)).await;

    let mut conn = H1Conn::connect(proxy.outbound).await;
    let first = conn.send(client::get("web", "/one")).await;
    let second = conn.send(client::get("web", "/two")).await;

    assert_eq!(first.status, StatusCode::OK, "first: {first:?}");
    assert_eq!(second.status, StatusCode::OK, "second: {second:?}");
    assert_eq!(first.text(), "web-1 GET /one");
    assert_eq!(second.text(), "web-1 GET /two");
    let seen = web.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        web.connections(),
        1,
        "the proxy reuses its upstream connection for sequential requests"
    );
    assert_eq!(seen[0].conn, seen[1].conn);
}

#[tokio::test]
async fn chunked_request_and_response_bodies() {
    let web = HttpUpstream::start("web-1").await;
    let proxy = Proxy::start(&mesh(&web)).await;

    let mut raw = RawConn::connect(proxy.outbound).await;
    raw.write(
        b"POST /upload HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\nX-Chunked-Response: 3\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n7\r\n, again\r\n0\r\n\r\n",
    )
    .await;
    let rsp = raw.read_response().await;

    assert_eq!(rsp.status, 200, "{rsp:?}");
    assert_eq!(
        rsp.body, b"hello world, again",
        "client gets the de-chunked echo"
    );
    assert!(
        rsp.header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked")),
        "a streamed upstream body of unknown length reaches the client chunked: {}",
        rsp.head
    );
    let seen = web.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        &seen[0].body[..],
        b"hello world, again",
        "upstream gets the whole chunked body"
    );
}

#[tokio::test]
async fn expect_100_continue() {
    let web = HttpUpstream::start("web-1").await;
    let proxy = Proxy::start(&mesh(&web)).await;

    let mut raw = RawConn::connect(proxy.outbound).await;
    raw.write(
        b"POST /form HTTP/1.1\r\nHost: web\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    let interim = raw.read_response().await;
    assert_eq!(
        interim.status, 100,
        "the client is told to continue before it sends the body: {interim:?}"
    );

    raw.write(b"hello world").await;
    let rsp = raw.read_response().await;
    assert_eq!(rsp.status, 200, "{rsp:?}");
    assert_eq!(rsp.body, b"hello world");
    assert_eq!(&web.requests()[0].body[..], b"hello world");
}
