//! Opaque TCP by original destination without redirection: a connection made straight to the
//! outbound listener has the listener's own address as its destination, so a `protocol: tcp`
//! service listing that address in `addresses` takes it, with no protocol detection first.

use std::time::Duration;

use crate::{
    resilience::noise,
    support::{
        client::RawConn,
        proxy::{Proxy, ProxyBuilder},
        upstream::{BANNER, BannerServer, TcpEcho},
        within,
    },
};

/// Detection would wait this long for client bytes; a banner must come long before.
const DETECT_TIMEOUT: &str = "5s";
const BANNER_DEADLINE: Duration = Duration::from_secs(1);

/// A proxy that knows only an unrelated service, then (reloaded) a `protocol: tcp` service
/// whose address is the proxy's own outbound listener, in front of `endpoint`. The address can
/// only be written into the mesh once the proxy has bound it.
async fn proxy_claiming_its_own_listener(name: &str, endpoint: std::net::SocketAddr) -> Proxy {
    let proxy = ProxyBuilder::new("services:\n  - name: unrelated\n")
        .arg("--detect-timeout", DETECT_TIMEOUT)
        .start()
        .await;
    let mesh = format!(
        r#"
services:
  - name: unrelated
  - name: {name}
    protocol: tcp
    addresses: ["{}"]
    endpoints: [{{ address: "{endpoint}" }}]
"#,
        proxy.outbound
    );
    proxy.reload(&mesh).await;
    proxy
}

#[tokio::test]
async fn tcp_service_on_the_listeners_own_address_echoes_with_half_close() {
    let echo = TcpEcho::start().await;
    let proxy = proxy_claiming_its_own_listener("echo", echo.addr()).await;

    let payload = noise(64 * 1024, 7);
    let mut raw = RawConn::connect(proxy.outbound).await;
    raw.write(&payload).await;
    raw.shutdown_write().await;
    let back = raw.read_to_end().await;
    assert_eq!(back.len(), payload.len(), "every byte back after the FIN");
    assert!(back == payload, "the echoed bytes are the bytes sent");
    assert_eq!(echo.connections(), 1);
}

#[tokio::test]
async fn tcp_service_on_the_listeners_own_address_passes_a_banner_at_once() {
    let smtp = BannerServer::start().await;
    let proxy = proxy_claiming_its_own_listener("mail", smtp.addr()).await;

    let mut raw = RawConn::connect(proxy.outbound).await;
    let banner = within(
        "banner well before the 5 s detection timeout",
        BANNER_DEADLINE,
        raw.read_until(BANNER),
    )
    .await;
    assert_eq!(banner, BANNER);
}
