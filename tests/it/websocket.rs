//! WebSocket upgrades tunnelled through the outbound listener.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::support::{STEP, proxy::Proxy, upstream::WsUpstream, within};

#[tokio::test]
async fn websocket_echo_through_outbound() {
    let ws_up = WsUpstream::start().await;
    let mesh = format!(
        r#"
services:
  - name: chat
    endpoints:
      - address: "{}"
"#,
        ws_up.addr()
    );
    let proxy = Proxy::start(&mesh).await;

    let tcp = TcpStream::connect(proxy.outbound)
        .await
        .expect("connect outbound");
    let req = "ws://chat/socket"
        .into_client_request()
        .expect("static ws request");
    let (mut ws, rsp) = within(
        "websocket handshake",
        STEP,
        tokio_tungstenite::client_async(req, tcp),
    )
    .await
    .expect("websocket handshake through the proxy");
    assert_eq!(rsp.status(), 101);

    for i in 0..5 {
        let text = format!("message {i}");
        within("ws send", STEP, ws.send(Message::text(text.clone())))
            .await
            .expect("send text");
        let back = within("ws echo", STEP, ws.next())
            .await
            .expect("stream open")
            .expect("echo frame");
        assert_eq!(back.into_text().expect("text frame").as_str(), text);
    }
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    within("ws send", STEP, ws.send(Message::binary(blob.clone())))
        .await
        .expect("send binary");
    let back = within("ws echo", STEP, ws.next())
        .await
        .expect("stream open")
        .expect("echo frame");
    assert!(back.is_binary());
    assert_eq!(back.into_data().as_ref(), &blob[..]);

    within("ws close", STEP, ws.close(None))
        .await
        .expect("close");
    assert_eq!(ws_up.connections(), 1);
}
