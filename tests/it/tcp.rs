//! Opaque TCP: bytes that are not HTTP, half-close, and server-speaks-first protocols that must
//! not wait for protocol detection.

use std::time::Duration;

use crate::support::{
    client::RawConn,
    proxy::{Proxy, ProxyBuilder},
    upstream::{BANNER, BannerServer, TcpEcho},
    within,
};

/// Bytes no detector could take for HTTP or TLS.
pub fn opaque_payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn opaque_echo_with_half_close() {
    let echo = TcpEcho::start().await;
    let mesh = format!(
        r#"
services:
  - name: anything
    hosts: ["*"]
    protocol: tcp
    endpoints:
      - address: "{}"
"#,
        echo.addr()
    );
    let proxy = Proxy::start(&mesh).await;

    let payload = opaque_payload(256 * 1024);
    let mut raw = RawConn::connect(proxy.outbound).await;
    raw.write(&payload).await;
    raw.shutdown_write().await;
    let back = raw.read_to_end().await;

    assert_eq!(
        back.len(),
        payload.len(),
        "every byte comes back after the client's FIN"
    );
    assert!(back == payload, "the echoed bytes are the bytes sent");
    assert_eq!(echo.connections(), 1);
}

/// Detection would wait this long for client bytes that never come; the banner must not.
const DETECT_TIMEOUT: &str = "10s";
const BANNER_DEADLINE: Duration = Duration::from_secs(3);

#[tokio::test]
async fn server_speaks_first_through_inbound_with_opaque_ports() {
    let smtp = BannerServer::start().await;
    // `inbound.listen` is unused here: `--inbound-addr` (127.0.0.1:0) wins over it.
    let mesh = format!(
        r#"
workloads:
  - name: mail
    namespace: default
    inbound:
      listen: "127.0.0.1:1"
      app: "{}"
"#,
        smtp.addr()
    );
    let proxy = ProxyBuilder::new(&mesh)
        .workload("mail", "default")
        .arg("--opaque-ports", &format!("25,3306,{}", smtp.addr().port()))
        .arg("--detect-timeout", DETECT_TIMEOUT)
        .start()
        .await;

    let mut raw = RawConn::connect(proxy.inbound).await;
    let banner = within(
        "banner through inbound",
        BANNER_DEADLINE,
        raw.read_until(BANNER),
    )
    .await;
    assert_eq!(
        banner, BANNER,
        "the banner arrives without any client bytes"
    );
}

#[tokio::test]
async fn server_speaks_first_through_a_tcp_service_on_outbound() {
    let smtp = BannerServer::start().await;
    // Without redirection nothing names the destination, so the catch-all `protocol: tcp`
    // service takes the connection, and a tcp service gets no detection to wait for.
    let mesh = format!(
        r#"
services:
  - name: mail
    hosts: ["*"]
    protocol: tcp
    endpoints:
      - address: "{}"
"#,
        smtp.addr()
    );
    let proxy = ProxyBuilder::new(&mesh)
        .arg("--detect-timeout", DETECT_TIMEOUT)
        .start()
        .await;

    let mut raw = RawConn::connect(proxy.outbound).await;
    let banner = within(
        "banner through outbound",
        BANNER_DEADLINE,
        raw.read_until(BANNER),
    )
    .await;
    assert_eq!(
        banner, BANNER,
        "a tcp service skips detection, so the banner arrives at once"
    );
}
