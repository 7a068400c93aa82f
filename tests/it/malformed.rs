//! Requests that break HTTP/1.1, sent as raw bytes: the proxy answers 400 or 431 itself and
//! nothing reaches the upstream.

use crate::support::{
    client::{RawConn, RawResponse},
    proxy::{Proxy, ProxyBuilder},
    upstream::HttpUpstream,
};

fn mesh(upstream: &HttpUpstream) -> String {
    format!(
        "services:\n  - name: web\n    endpoints: [{{ address: \"{}\" }}]\n",
        upstream.addr()
    )
}

async fn exchange(proxy: &Proxy, bytes: &[u8]) -> RawResponse {
    let mut raw = RawConn::connect(proxy.outbound).await;
    raw.write_lenient(bytes).await;
    raw.read_response().await
}

#[tokio::test]
async fn bad_header_line_is_400_bad_request() {
    let web = HttpUpstream::start("web").await;
    let proxy = Proxy::start(&mesh(&web)).await;
    let rsp = exchange(
        &proxy,
        b"GET / HTTP/1.1\r\nHost: web\r\nthis is not a header\r\n\r\n",
    )
    .await;
    assert_eq!(rsp.status, 400, "{rsp:?}");
    assert_eq!(rsp.reason(), Some("bad-request"), "{}", rsp.head);
    assert!(web.requests().is_empty(), "nothing reaches the upstream");
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_bad_request() {
    let web = HttpUpstream::start("web").await;
    let proxy = Proxy::start(&mesh(&web)).await;
    let rsp = exchange(
        &proxy,
        b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(rsp.status, 400, "{rsp:?}");
    assert_eq!(rsp.reason(), Some("bad-request"), "{}", rsp.head);
    assert!(
        web.requests().is_empty(),
        "an ambiguous body length never reaches the upstream"
    );
}

#[tokio::test]
async fn invalid_content_length_is_400_bad_request() {
    let web = HttpUpstream::start("web").await;
    let proxy = Proxy::start(&mesh(&web)).await;
    for cl in ["abc", "5, 6", "-1"] {
        let req = format!("POST / HTTP/1.1\r\nHost: web\r\nContent-Length: {cl}\r\n\r\nhello");
        let rsp = exchange(&proxy, req.as_bytes()).await;
        assert_eq!(rsp.status, 400, "Content-Length: {cl}: {rsp:?}");
        assert_eq!(
            rsp.reason(),
            Some("bad-request"),
            "Content-Length: {cl}: {}",
            rsp.head
        );
    }
    assert!(web.requests().is_empty());
}

#[tokio::test]
async fn head_over_default_limit_is_431() {
    let web = HttpUpstream::start("web").await;
    let proxy = Proxy::start(&mesh(&web)).await;
    let big = "a".repeat(70 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: web\r\nX-Big: {big}\r\n\r\n");
    let rsp = exchange(&proxy, req.as_bytes()).await;
    assert_eq!(
        rsp.status, 431,
        "70 KiB of headers is over the 64 KiB default: {}",
        rsp.head
    );
    assert_eq!(rsp.reason(), Some("headers-too-large"), "{}", rsp.head);
    assert!(web.requests().is_empty());
}

#[tokio::test]
async fn max_header_bytes_flag_sets_the_limit() {
    let web = HttpUpstream::start("web").await;
    let proxy = ProxyBuilder::new(&mesh(&web))
        .arg("--max-header-bytes", "4096")
        .start()
        .await;

    let small = format!(
        "GET / HTTP/1.1\r\nHost: web\r\nX-Small: {}\r\n\r\n",
        "a".repeat(1024)
    );
    let rsp = exchange(&proxy, small.as_bytes()).await;
    assert_eq!(
        rsp.status, 200,
        "1 KiB is under a 4 KiB limit: {}",
        rsp.head
    );

    let big = format!(
        "GET / HTTP/1.1\r\nHost: web\r\nX-Big: {}\r\n\r\n",
        "a".repeat(8 * 1024)
    );
    let rsp = exchange(&proxy, big.as_bytes()).await;
    assert_eq!(rsp.status, 431, "8 KiB is over a 4 KiB limit: {}", rsp.head);
    assert_eq!(rsp.reason(), Some("headers-too-large"), "{}", rsp.head);
    assert_eq!(
        web.requests().len(),
        1,
        "only the small request reached the upstream"
    );
}
