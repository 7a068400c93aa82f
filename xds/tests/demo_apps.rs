//! The demo apps on their own, without any proxy: the HTTP app over HTTP/1.1 and h2c, and the
//! gRPC echo app (unary and bidi, including `fail_with`). The mesh through real sidecars is
//! tested in the root crate (`tests/it/demo.rs`), which has the `skiff` binary.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use skiff_xds::{
    demo::{SERVED_BY, spawn_grpc_echo, spawn_http_app},
    pb::{EchoRequest, echo_client::EchoClient},
};
use tokio::net::TcpStream;

/// One request on a fresh HTTP/1.1 connection; the body read whole.
async fn h1(addr: SocketAddr, req: Request<Full<Bytes>>) -> Response<Bytes> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let rsp = send.send_request(req).await.expect("h1 response");
    let (parts, body) = rsp.into_parts();
    Response::from_parts(parts, body.collect().await.expect("h1 body").to_bytes())
}

/// One request on a fresh HTTP/2 prior-knowledge (h2c) connection.
async fn h2(addr: SocketAddr, req: Request<Full<Bytes>>) -> Response<Bytes> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let rsp = send.send_request(req).await.expect("h2 response");
    let (parts, body) = rsp.into_parts();
    Response::from_parts(parts, body.collect().await.expect("h2 body").to_bytes())
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .header("host", "reviews")
        .body(Full::default())
        .expect("static request")
}

fn text(rsp: &Response<Bytes>) -> &str {
    std::str::from_utf8(rsp.body()).expect("utf-8 body")
}

#[tokio::test]
async fn http_app_answers_http1() {
    let (addr, _app) = spawn_http_app("reviews", "v2").await.expect("start app");

    let root = h1(addr, get("/")).await;
    assert_eq!(root.status(), StatusCode::OK);
    assert_eq!(text(&root), "reviews v2\n");
    assert_eq!(root.headers()[SERVED_BY], "reviews-v2");

    let headers = h1(
        addr,
        Request::get("/headers")
            .header("x-test", "yes")
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(headers.status(), StatusCode::OK);
    assert!(
        text(&headers).starts_with("GET /headers HTTP/1.1\n"),
        "{}",
        text(&headers)
    );
    assert!(
        text(&headers).contains("x-test: yes\n"),
        "{}",
        text(&headers)
    );

    let status = h1(addr, get("/status/503")).await;
    assert_eq!(status.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status.headers()[SERVED_BY], "reviews-v2");
    assert_eq!(
        h1(addr, get("/status/99")).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        h1(addr, get("/status/x")).await.status(),
        StatusCode::BAD_REQUEST
    );

    let delay = h1(addr, get("/delay?ms=20")).await;
    assert_eq!(delay.status(), StatusCode::OK);
    assert_eq!(text(&delay), "reviews v2 after 20 ms\n");
    assert_eq!(
        h1(addr, get("/delay?ms=999999")).await.status(),
        StatusCode::BAD_REQUEST
    );

    let echo = h1(
        addr,
        Request::post("/echo")
            .body(Full::new(Bytes::from_static(b"ping")))
            .expect("request"),
    )
    .await;
    assert_eq!(echo.status(), StatusCode::OK);
    assert_eq!(echo.body().as_ref(), b"ping");

    assert_eq!(
        h1(addr, get("/nowhere")).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn http_app_answers_h2c() {
    let (addr, _app) = spawn_http_app("web", "v1").await.expect("start app");

    let root = h2(
        addr,
        Request::get(format!("http://{addr}/"))
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(root.status(), StatusCode::OK);
    assert_eq!(root.version(), http::Version::HTTP_2);
    assert_eq!(text(&root), "web v1\n");
    assert_eq!(root.headers()[SERVED_BY], "web-v1");

    let headers = h2(
        addr,
        Request::get(format!("http://{addr}/headers"))
            .header("x-test", "h2")
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert!(text(&headers).contains("HTTP/2.0\n"), "{}", text(&headers));
    assert!(
        text(&headers).contains("x-test: h2\n"),
        "{}",
        text(&headers)
    );

    let status = h2(
        addr,
        Request::get(format!("http://{addr}/status/418"))
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(status.status(), StatusCode::IM_A_TEAPOT);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_app() {
    let (addr, app) = spawn_http_app("web", "v1").await.expect("start app");
    assert_eq!(h1(addr, get("/")).await.status(), StatusCode::OK);
    drop(app);
    // The abort lands on the app's task at its next poll; the port then refuses connections.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the app still accepts after its handle was dropped"
        );
        tokio::task::yield_now().await;
    }
}

async fn echo_client(addr: SocketAddr) -> EchoClient<tonic::transport::Channel> {
    EchoClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to echo")
}

#[tokio::test]
async fn grpc_echo_unary() {
    let (addr, _app) = spawn_grpc_echo("echo-v1").await.expect("start echo");
    let mut client = echo_client(addr).await;

    let rsp = client
        .unary(EchoRequest {
            message: "hello".into(),
            fail_with: 0,
        })
        .await
        .expect("unary ok");
    assert_eq!(
        rsp.metadata()
            .get("x-served-by")
            .map(|v| v.to_str().expect("ascii")),
        Some("echo-v1")
    );
    let reply = rsp.into_inner();
    assert_eq!(reply.message, "hello");
    assert_eq!(reply.served_by, "echo-v1");

    let err = client
        .unary(EchoRequest {
            message: "boom".into(),
            fail_with: tonic::Code::Unavailable as i32,
        })
        .await
        .expect_err("fail_with answers an error");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(
        err.metadata()
            .get("x-served-by")
            .map(|v| v.to_str().expect("ascii")),
        Some("echo-v1")
    );

    // A code tonic does not know is still an error, reported as Unknown.
    let err = client
        .unary(EchoRequest {
            message: "?".into(),
            fail_with: 99,
        })
        .await
        .expect_err("error");
    assert_eq!(err.code(), tonic::Code::Unknown);
}

#[tokio::test]
async fn grpc_echo_bidi() {
    let (addr, _app) = spawn_grpc_echo("echo-v2").await.expect("start echo");
    let mut client = echo_client(addr).await;

    let requests = ["one", "two", "three"].map(|m| EchoRequest {
        message: m.into(),
        fail_with: 0,
    });
    let mut replies = client
        .bidi(futures_util::stream::iter(requests))
        .await
        .expect("bidi")
        .into_inner();
    let mut got = Vec::new();
    while let Some(reply) = replies.next().await {
        let reply = reply.expect("reply");
        assert_eq!(reply.served_by, "echo-v2");
        got.push(reply.message);
    }
    assert_eq!(got, ["one", "two", "three"]);

    // Interleaved: each reply arrives before the next request is sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut replies = client.bidi(outbound).await.expect("bidi").into_inner();
    for msg in ["ping", "pong"] {
        tx.send(EchoRequest {
            message: msg.into(),
            fail_with: 0,
        })
        .await
        .expect("send");
        let reply = replies.next().await.expect("a reply").expect("ok reply");
        assert_eq!(reply.message, msg);
    }
    tx.send(EchoRequest {
        message: "fail".into(),
        fail_with: tonic::Code::PermissionDenied as i32,
    })
    .await
    .expect("send");
    let status = replies
        .next()
        .await
        .expect("an item")
        .expect_err("fail_with ends the stream");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        replies.next().await.is_none(),
        "the stream ends after the error"
    );
}
