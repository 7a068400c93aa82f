//! Responses the proxy makes itself: each status with its `x-skiff-reason` token, and the gRPC
//! trailers-only form of the same.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Method, StatusCode};
use http_body_util::Full;
use prost::Message;
use skiff_xds::pb::EchoRequest;
use tonic::Code;

use crate::{
    grpc::{grpc_client, skiff_reason, unary_fails},
    support::{
        client::{self, H1Conn, H2Conn, Reply},
        proxy::Proxy,
        upstream::{BlackHole, DropMode, DropServer, HangUpAfterAnswer, HttpUpstream, closed_port},
        within,
    },
};

pub fn assert_made_by_proxy(r: &Reply, status: StatusCode, reason: &str) {
    assert_eq!(r.status, status, "status for {reason}: {r:?}");
    assert_eq!(r.reason(), Some(reason), "x-skiff-reason: {r:?}");
    assert!(r.served_by().is_none(), "no upstream answered: {r:?}");
}

#[tokio::test]
async fn unknown_service_is_503() {
    let web = HttpUpstream::start("web").await;
    let mesh = format!(
        "services:\n  - name: web\n    endpoints: [{{ address: \"{}\" }}]\n",
        web.addr()
    );
    let proxy = Proxy::start(&mesh).await;

    let r = client::send_h1(proxy.outbound, client::get("nowhere", "/")).await;
    assert_made_by_proxy(&r, StatusCode::SERVICE_UNAVAILABLE, "unknown-service");
    let r = client::send_h1(
        proxy.outbound,
        client::get("nowhere.default.svc.cluster.local", "/"),
    )
    .await;
    assert_made_by_proxy(&r, StatusCode::SERVICE_UNAVAILABLE, "unknown-service");
    // The same service by its implicit names, with and without a port, still works.
    for host in [
        "web",
        "web:8080",
        "web.default",
        "web.default.svc",
        "web.default.svc.cluster.local",
    ] {
        let (status, headers, _) = client::send(proxy.outbound, client::get(host, "/")).await;
        assert_eq!(status, StatusCode::OK, "Host: {host}");
        assert_eq!(
            headers.get("x-served-by").map(|v| v.as_bytes()),
            Some(&b"web"[..]),
            "Host: {host}"
        );
    }
}

#[tokio::test]
async fn upstream_error_status_passes_through_without_a_reason() {
    let sick = HttpUpstream::builder("sick")
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .start()
        .await;
    let mesh = format!(
        "services:\n  - name: sick\n    endpoints: [{{ address: \"{}\" }}]\n",
        sick.addr()
    );
    let proxy = Proxy::start(&mesh).await;
    let r = client::send_h1(proxy.outbound, client::get("sick", "/")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    assert_eq!(
        r.served_by(),
        Some("sick"),
        "the upstream's own answer: {r:?}"
    );
    assert_eq!(
        r.reason(),
        None,
        "only responses the proxy makes carry a reason"
    );
}

#[tokio::test]
async fn all_zero_weights_is_503_no_backend() {
    let a = HttpUpstream::start("a").await;
    let mesh = format!(
        r#"
services:
  - name: web
    endpoints: [{{ address: "{a}" }}]
    routes:
      - name: off
        backendRefs: [{{ service: web, weight: 0 }}, {{ service: other, weight: 0 }}]
  - name: other
    endpoints: [{{ address: "{a}" }}]
"#,
        a = a.addr()
    );
    let proxy = Proxy::start(&mesh).await;
    let r = client::send_h1(proxy.outbound, client::get("web", "/")).await;
    assert_made_by_proxy(&r, StatusCode::SERVICE_UNAVAILABLE, "no-backend");
    assert!(a.requests().is_empty());
}

#[tokio::test]
async fn service_without_endpoints_is_503_no_healthy_endpoints() {
    let proxy = Proxy::start("services:\n  - name: empty\n").await;
    let r = client::send_h1(proxy.outbound, client::get("empty", "/")).await;
    assert_made_by_proxy(&r, StatusCode::SERVICE_UNAVAILABLE, "no-healthy-endpoints");
}

#[tokio::test]
async fn refused_connection_is_503_connect_failed() {
    let closed = closed_port().await;
    let mesh = format!("services:\n  - name: gone\n    endpoints: [{{ address: \"{closed}\" }}]\n");
    let proxy = Proxy::start(&mesh).await;
    let r = client::send_h1(proxy.outbound, client::get("gone", "/")).await;
    assert_made_by_proxy(&r, StatusCode::SERVICE_UNAVAILABLE, "connect-failed");
    let r = client::send_h2(proxy.outbound, client::get("gone", "/")).await;
    assert_made_by_proxy(&r, StatusCode::SERVICE_UNAVAILABLE, "connect-failed");
}

#[tokio::test]
async fn connect_timeout_is_503_connect_failed() {
    let hole = BlackHole::start().await;
    let mesh = format!(
        "services:\n  - name: slowconnect\n    connectTimeout: 300ms\n    endpoints: [{{ address: \"{}\" }}]\n",
        hole.addr()
    );
    let proxy = Proxy::start(&mesh).await;
    let r = client::send_h1(proxy.outbound, client::get("slowconnect", "/")).await;
    assert_made_by_proxy(&r, StatusCode::SERVICE_UNAVAILABLE, "connect-failed");
}

#[tokio::test]
async fn upstream_closing_or_resetting_is_502_upstream_failed() {
    let closer = DropServer::start(DropMode::Close).await;
    let resetter = DropServer::start(DropMode::Reset).await;
    let mesh = format!(
        r#"
services:
  - name: closer
    endpoints: [{{ address: "{}" }}]
  - name: resetter
    endpoints: [{{ address: "{}" }}]
"#,
        closer.addr(),
        resetter.addr()
    );
    let proxy = Proxy::start(&mesh).await;
    for host in ["closer", "resetter"] {
        let r = client::send_h1(proxy.outbound, client::get(host, "/")).await;
        assert_made_by_proxy(&r, StatusCode::BAD_GATEWAY, "upstream-failed");
        let r = client::send_h2(proxy.outbound, client::get(host, "/")).await;
        assert_made_by_proxy(&r, StatusCode::BAD_GATEWAY, "upstream-failed");
    }
    assert!(
        closer.connections() >= 1 && resetter.connections() >= 1,
        "both upstreams were reached"
    );
}

/// HTTP/2 streams onto an endpoint that hangs up on HTTP/2, as an HTTP/1-only server does when
/// a `protocol: auto` service carries an h2c client: every upstream connection dies while
/// streams race onto it, and every stream still gets its 502 (none is left waiting).
#[tokio::test]
async fn h2_streams_racing_dying_upstream_connections_each_get_502() {
    let closer = DropServer::start(DropMode::Close).await;
    let mesh = format!(
        "services:\n  - name: closer\n    endpoints: [{{ address: \"{}\" }}]\n",
        closer.addr()
    );
    let proxy = Proxy::start(&mesh).await;
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let conn = H2Conn::connect(proxy.outbound).await;
        for _ in 0..16 {
            let conn = conn.clone();
            streams.spawn(async move {
                for _ in 0..20 {
                    let r = conn.send(client::get("closer", "/")).await;
                    assert_made_by_proxy(&r, StatusCode::BAD_GATEWAY, "upstream-failed");
                }
            });
        }
    }
    within(
        "1,280 requests over 64 streams",
        Duration::from_secs(60),
        async {
            while let Some(done) = streams.join_next().await {
                if let Err(e) = done {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        },
    )
    .await;
    assert!(
        closer.connections() > 1,
        "upstream connections were replaced"
    );
}

/// HTTP/1.1 requests onto pooled connections that the upstream hangs up right after each
/// answer: a request can be queued just as its connection ends, and each one must still get
/// an answer, the upstream's 200 or the proxy's 502 (none is left waiting).
#[tokio::test]
async fn http1_requests_racing_pooled_connection_closes_each_get_an_answer() {
    let upstream = HangUpAfterAnswer::start().await;
    let mesh = format!(
        "services:\n  - name: brief\n    protocol: http1\n    endpoints: [{{ address: \"{}\" }}]\n",
        upstream.addr()
    );
    let proxy = Proxy::start(&mesh).await;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut conn = H1Conn::connect(proxy.outbound).await;
        clients.spawn(async move {
            let mut ok = 0;
            for _ in 0..150 {
                let r = conn.send(client::get("brief", "/")).await;
                match r.status {
                    StatusCode::OK => ok += 1,
                    StatusCode::BAD_GATEWAY => assert_eq!(r.reason(), Some("upstream-failed")),
                    other => panic!("{other}: {r:?}"),
                }
            }
            ok
        });
    }
    let ok: usize = within(
        "1,200 requests over 8 connections",
        Duration::from_secs(60),
        async {
            let mut ok = 0;
            while let Some(done) = clients.join_next().await {
                match done {
                    Ok(n) => ok += n,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                }
            }
            ok
        },
    )
    .await;
    assert!(ok > 0, "some requests reached the upstream");
    assert!(
        upstream.connections() > 8,
        "pooled connections were replaced"
    );
}

#[tokio::test]
async fn route_request_timeout_is_504() {
    let slow = HttpUpstream::start("slow").await;
    let mesh = format!(
        r#"
services:
  - name: web
    endpoints: [{{ address: "{}" }}]
    routes:
      - name: quick
        timeouts: {{ request: 300ms }}
"#,
        slow.addr()
    );
    let proxy = Proxy::start(&mesh).await;
    let mut req = client::get("web", "/slow");
    req.headers_mut()
        .insert("x-delay-ms", client::value("5000"));
    let r = client::send_h1(proxy.outbound, req).await;
    assert_made_by_proxy(&r, StatusCode::GATEWAY_TIMEOUT, "timeout");
    // A quick answer on the same route is not affected.
    let r = client::send_h1(proxy.outbound, client::get("web", "/fast")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
}

/// A gRPC frame: compression flag, big-endian length, message.
fn grpc_frame(msg: &EchoRequest) -> Bytes {
    let body = msg.encode_to_vec();
    let mut buf = BytesMut::with_capacity(5 + body.len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(body.len()).expect("small message"));
    buf.put_slice(&body);
    buf.freeze()
}

#[tokio::test]
async fn grpc_errors_are_trailers_only_with_grpc_status() {
    let closed = closed_port().await;
    let mesh = format!(
        "services:\n  - name: echo\n    protocol: grpc\n    endpoints: [{{ address: \"{closed}\" }}]\n"
    );
    let proxy = Proxy::start(&mesh).await;

    // On the wire: HTTP 200, grpc-status in the one header block, same reason token.
    let req = client::request(Method::POST, "echo", "/skiff.demo.v1.Echo/Unary")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(grpc_frame(&EchoRequest {
            message: "x".into(),
            fail_with: 0,
        })))
        .expect("valid request");
    let r = H2Conn::connect(proxy.outbound).await.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "gRPC errors are HTTP 200: {r:?}");
    assert_eq!(
        r.header("grpc-status"),
        Some("14"),
        "UNAVAILABLE for a 503: {r:?}"
    );
    assert_eq!(r.reason(), Some("connect-failed"), "{r:?}");
    assert!(r.body.is_empty(), "trailers-only: no messages");

    // Through tonic: the status code and the token in its metadata.
    let mut client = grpc_client(proxy.outbound, "echo").await;
    let status = unary_fails(&mut client, "nothing to connect to").await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(skiff_reason(&status), Some("connect-failed"), "{status:?}");
}

#[tokio::test]
async fn grpc_timeout_is_deadline_exceeded_trailers_only() {
    let slow = HttpUpstream::start("slow").await;
    let mesh = format!(
        r#"
services:
  - name: echo
    protocol: grpc
    endpoints: [{{ address: "{}" }}]
    routes:
      - name: quick
        timeouts: {{ request: 300ms }}
"#,
        slow.addr()
    );
    let proxy = Proxy::start(&mesh).await;
    let req = client::request(Method::POST, "echo", "/skiff.demo.v1.Echo/Unary")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-delay-ms", "5000")
        .body(Full::new(grpc_frame(&EchoRequest {
            message: "x".into(),
            fail_with: 0,
        })))
        .expect("valid request");
    let r = H2Conn::connect(proxy.outbound).await.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "gRPC errors are HTTP 200: {r:?}");
    assert_eq!(
        r.header("grpc-status"),
        Some("4"),
        "DEADLINE_EXCEEDED for a 504: {r:?}"
    );
    assert_eq!(r.reason(), Some("timeout"), "{r:?}");
    assert!(r.body.is_empty(), "trailers-only: no messages");
}
