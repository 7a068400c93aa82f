//! gRPC through the outbound listener with a tonic client: unary calls, status codes and
//! bidirectional streaming.

use std::net::SocketAddr;

use skiff_xds::pb::{EchoRequest, echo_client::EchoClient};
use tonic::{Code, transport::Channel};

use crate::support::{STEP, proxy::Proxy, upstream::GrpcUpstream, within};

fn mesh(upstream: &GrpcUpstream) -> String {
    format!(
        r#"
services:
  - name: echo
    protocol: grpc
    endpoints:
      - address: "{}"
"#,
        upstream.addr()
    )
}

/// A tonic client that connects to `proxy_addr` and names `authority` in `:authority`.
pub async fn grpc_client(proxy_addr: SocketAddr, authority: &str) -> EchoClient<Channel> {
    let channel = within(
        "grpc connect",
        STEP,
        tonic::transport::Endpoint::from_shared(format!("http://{proxy_addr}"))
            .expect("valid endpoint")
            .origin(format!("http://{authority}").parse().expect("valid origin"))
            .connect(),
    )
    .await
    .expect("connect to the outbound listener");
    EchoClient::new(channel)
}

/// One unary call that must fail (`why` says why it should); the status it failed with.
pub async fn unary_fails(client: &mut EchoClient<Channel>, why: &str) -> tonic::Status {
    within(
        "unary",
        STEP,
        client.unary(EchoRequest {
            message: "x".into(),
            fail_with: 0,
        }),
    )
    .await
    .expect_err(why)
}

/// The `x-skiff-reason` token a status carries in its metadata.
pub fn skiff_reason(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get("x-skiff-reason")
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn unary_echo_and_status_codes_arrive_intact() {
    let echo = GrpcUpstream::start("echo-1").await;
    let proxy = Proxy::start(&mesh(&echo)).await;
    let mut client = grpc_client(proxy.outbound, "echo").await;

    let reply = within(
        "unary",
        STEP,
        client.unary(EchoRequest {
            message: "hi".into(),
            fail_with: 0,
        }),
    )
    .await
    .expect("unary call succeeds")
    .into_inner();
    assert_eq!(reply.message, "hi");
    assert_eq!(reply.served_by, "echo-1");

    for code in [Code::NotFound, Code::PermissionDenied, Code::Internal] {
        let status = within(
            "unary",
            STEP,
            client.unary(EchoRequest {
                message: "no".into(),
                fail_with: code as i32,
            }),
        )
        .await
        .expect_err("the upstream fails as asked");
        assert_eq!(status.code(), code, "{status:?}");
        assert_eq!(
            status.message(),
            "failing as asked: no",
            "grpc-message passes through"
        );
        assert!(
            status.metadata().get("x-skiff-reason").is_none(),
            "an upstream status is not the proxy's own"
        );
    }
    assert_eq!(echo.calls(), 4);
}

#[tokio::test]
async fn bidi_streaming_echoes_every_message_as_it_goes() {
    const N: usize = 25;
    let echo = GrpcUpstream::start("echo-1").await;
    let proxy = Proxy::start(&mesh(&echo)).await;
    let mut client = grpc_client(proxy.outbound, "echo").await;

    let (tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(4);
    let requests =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    // The first message goes before the call, so a proxy that waits for request data before it
    // forwards headers still makes progress.
    tx.send(EchoRequest {
        message: "m0".into(),
        fail_with: 0,
    })
    .await
    .expect("queue m0");
    let mut replies = within("bidi call", STEP, client.bidi(requests))
        .await
        .expect("bidi call starts")
        .into_inner();

    for i in 0..N {
        if i > 0 {
            tx.send(EchoRequest {
                message: format!("m{i}"),
                fail_with: 0,
            })
            .await
            .expect("queue message");
        }
        // Ping-pong: the reply to message i must arrive before message i+1 is sent.
        let reply = within("bidi reply", STEP, replies.message())
            .await
            .expect("stream healthy")
            .unwrap_or_else(|| panic!("stream ended before reply {i}"));
        assert_eq!(reply.message, format!("m{i}"));
        assert_eq!(reply.served_by, "echo-1");
    }
    drop(tx);
    let end = within("bidi end", STEP, replies.message())
        .await
        .expect("clean end with grpc-status 0");
    assert!(end.is_none(), "no extra replies");
    assert_eq!(echo.calls(), 1);
}
