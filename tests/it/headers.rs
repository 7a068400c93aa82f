//! Header hygiene: `x-request-id`, hop-by-hop removal, `x-forwarded-for` left alone, and
//! HTTP/1 header-name case preserved from h1 to h1.

use http::{Method, StatusCode};
use http_body_util::Full;

use crate::support::{
    client::{self, H1Conn, RawConn},
    proxy::Proxy,
    upstream::{HttpUpstream, RawHttpUpstream},
};

fn mesh(name: &str, addr: std::net::SocketAddr) -> String {
    format!("services:\n  - name: {name}\n    endpoints: [{{ address: \"{addr}\" }}]\n")
}

#[tokio::test]
async fn x_request_id_added_when_absent_and_kept_when_present() {
    let web = HttpUpstream::start("web").await;
    let proxy = Proxy::start(&mesh("web", web.addr())).await;
    let mut conn = H1Conn::connect(proxy.outbound).await;

    for _ in 0..2 {
        let r = conn.send(client::get("web", "/")).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let mut req = client::get("web", "/");
    req.headers_mut()
        .insert("x-request-id", client::value("caller-chose-this"));
    let r = conn.send(req).await;
    assert_eq!(r.status, StatusCode::OK);

    let seen = web.requests();
    let ids: Vec<&str> = seen
        .iter()
        .map(|s| s.header("x-request-id").unwrap_or(""))
        .collect();
    assert!(
        !ids[0].is_empty() && !ids[1].is_empty(),
        "added when absent: {ids:?}"
    );
    assert_ne!(ids[0], ids[1], "each request gets its own id");
    assert_eq!(ids[2], "caller-chose-this", "kept when present");
    assert!(
        seen.iter()
            .all(|s| s.headers.get_all("x-request-id").iter().count() == 1),
        "exactly one id each"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_removed_and_forwarded_for_untouched() {
    let web = HttpUpstream::start("web").await;
    let proxy = Proxy::start(&mesh("web", web.addr())).await;

    let req = client::request(Method::GET, "web", "/")
        .header("connection", "x-foo")
        .header("x-foo", "hop")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("x-end-to-end", "kept")
        .header("x-forwarded-for", "203.0.113.7")
        .body(Full::default())
        .expect("valid request");
    let r = client::send_h1(proxy.outbound, req).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");

    let seen = &web.requests()[0];
    for hop in ["x-foo", "keep-alive", "proxy-connection"] {
        assert!(
            seen.header(hop).is_none(),
            "{hop} is hop-by-hop and must not reach the upstream: {:?}",
            seen.headers
        );
    }
    assert!(
        !seen
            .headers
            .get_all("connection")
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("x-foo"))),
        "the client's Connection header is not forwarded: {:?}",
        seen.headers
    );
    assert_eq!(seen.header("x-end-to-end"), Some("kept"));
    let xff: Vec<_> = seen.headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(
        xff,
        ["203.0.113.7"],
        "x-forwarded-for passes through unchanged, not appended"
    );
}

fn raw_mesh(raw: &RawHttpUpstream) -> String {
    format!(
        "services:\n  - name: raw\n    protocol: http1\n    endpoints: [{{ address: \"{}\" }}]\n",
        raw.addr()
    )
}

#[tokio::test]
async fn h1_header_case_preserved_client_to_upstream() {
    let raw_up = RawHttpUpstream::start().await;
    let proxy = Proxy::start(&raw_mesh(&raw_up)).await;

    let mut raw = RawConn::connect(proxy.outbound).await;
    raw.write(b"GET /case HTTP/1.1\r\nHost: raw\r\nX-MiXeD-Case: 1\r\nx-lower: 2\r\n\r\n")
        .await;
    let rsp = raw.read_response().await;
    assert_eq!(rsp.status, 200, "{rsp:?}");

    let heads = raw_up.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].contains("\r\nX-MiXeD-Case: 1\r\n"),
        "name case kept on the way up:\n{}",
        heads[0]
    );
    assert!(
        heads[0].contains("\r\nx-lower: 2\r\n"),
        "lower case stays lower:\n{}",
        heads[0]
    );
}

#[tokio::test]
async fn h1_header_case_preserved_upstream_to_client() {
    let raw_up = RawHttpUpstream::start().await;
    let proxy = Proxy::start(&raw_mesh(&raw_up)).await;

    let mut raw = RawConn::connect(proxy.outbound).await;
    raw.write(b"GET /case HTTP/1.1\r\nHost: raw\r\n\r\n").await;
    let rsp = raw.read_response().await;
    assert_eq!(rsp.status, 200, "{rsp:?}");
    assert_eq!(rsp.body, b"ok");
    assert!(
        rsp.head.contains("\r\nX-Upstream-MiXeD: yes\r\n"),
        "name case kept on the way down:\n{}",
        rsp.head
    );
}
