//! Real interception, installed by `skiff init` itself in network namespaces joined by a veth
//! pair (two pods on a node), with each sidecar running as the proxy uid: traffic provably goes
//! through both sidecars, the proxy's own connections are not looped, an app reaches itself
//! through its service, exclusions bypass, IPv6 works. The proxy side: the original
//! destination (SO_ORIGINAL_DST, both families) names the service before the authority, opaque
//! ports skip detection, xDS fetches by original destination, and a destination no service
//! takes passes through (opaque TCP and HTTP), counted. Each test needs root and iptables, and says so when skipped.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use http::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use crate::support::{
    client::{self, Metrics, RawConn},
    control_plane,
    netns::{CLIENT_V4, NetNs, PodPair, SERVER_V4, SERVER_V6, at, skipped},
    proxy::{Proxy, ProxyBuilder},
    upstream::{BannerServer, HttpUpstream},
    within,
};

/// Well under the 10 s detect timeout: a banner that waited for detection would miss it.
const BANNER_DEADLINE: Duration = Duration::from_secs(3);

/// The uid the sidecars run as, `skiff init`'s default `--proxy-uid`.
const PROXY_UID: u32 = 1337;

/// A pod's sidecar: inside `ns`, as the proxy uid, on the ports `skiff init` redirects to by
/// default, both families.
fn sidecar(mesh: &str, ns: &NetNs) -> ProxyBuilder {
    ProxyBuilder::new(mesh)
        .sidecar_in(ns, PROXY_UID)
        .listen("127.0.0.1:15001,[::1]:15001", "0.0.0.0:15006,[::]:15006")
}

/// An app that tells each client who it saw: reads a line, answers `PEER_IP\n`, closes.
/// Bound on `[::]`, so it takes both families; IPv4 peers are shown as IPv4.
struct Whoami {
    port: u16,
    task: JoinHandle<()>,
}

impl Whoami {
    fn start(listener: TcpListener) -> Whoami {
        let port = listener.local_addr().expect("bound").port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, peer)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut line = [0u8; 64];
                    let _ = s.read(&mut line).await;
                    let seen = peer.ip().to_canonical();
                    let _ = s.write_all(format!("{seen}\n").as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Whoami { port, task }
    }
}

impl Drop for Whoami {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Asks the [`Whoami`] at the other end of `stream` who it saw.
async fn who(mut stream: TcpStream) -> IpAddr {
    within("whoami answer", crate::support::STEP, async {
        stream.write_all(b"who\n").await.expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not an address: {answer:?}"))
    })
    .await
}

fn tcp(m: &Metrics, name: &str, direction: &str) -> f64 {
    m.sum(name, &[("direction", direction)])
}

/// Accepted connections per direction, and outbound passthroughs, of one sidecar.
async fn counts(p: &Proxy) -> [f64; 3] {
    let m = p.metric_values().await;
    [
        tcp(&m, "skiff_tcp_connections_total", "outbound"),
        tcp(&m, "skiff_tcp_connections_total", "inbound"),
        tcp(&m, "skiff_tcp_passthrough_connections_total", "outbound"),
    ]
}

#[tokio::test]
async fn two_pods_talk_through_both_sidecars_over_ipv4_and_ipv6() {
    if skipped("two_pods_talk_through_both_sidecars_over_ipv4_and_ipv6") {
        return;
    }
    let pair = PodPair::new();
    // --ipv6 auto: each pod has a global IPv6 address, so ip6tables rules go in too.
    pair.client.init_ok(&[]);
    pair.server.init_ok(&[]);
    let app = Whoami::start(pair.server.bind("[::]:0".parse().expect("literal")));
    let server = sidecar("services: []\n", &pair.server).start().await;
    let client = sidecar("services: []\n", &pair.client).start().await;

    // The client app dials the server pod; neither side knows the other from config.
    let seen = who(pair.client.connect(at(SERVER_V4, app.port))).await;
    assert_eq!(
        seen,
        Ipv4Addr::LOCALHOST,
        "the server app sees its own sidecar as the peer"
    );
    assert_eq!(
        counts(&client).await,
        [1.0, 0.0, 1.0],
        "the client sidecar took the connection once (its own onward connection was not looped back) and passed it through"
    );
    assert_eq!(
        counts(&server).await,
        [0.0, 1.0, 0.0],
        "the server sidecar took it inbound"
    );

    let seen = who(pair.client.connect(at(SERVER_V6, app.port))).await;
    assert_eq!(
        seen,
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        "IPv6 too"
    );
    assert_eq!(counts(&client).await, [2.0, 0.0, 2.0]);
    assert_eq!(counts(&server).await, [0.0, 2.0, 0.0]);
}

#[tokio::test]
async fn an_app_listening_on_the_pod_address_only_is_reached_at_that_address() {
    if skipped("an_app_listening_on_the_pod_address_only_is_reached_at_that_address") {
        return;
    }
    reached_at_the_pod_address(
        &["--ipv6", "off"],
        SERVER_V4.into(),
        skiff::inbound::POD_SOURCE.ip(),
    )
    .await;
}

#[tokio::test]
async fn an_app_listening_on_the_pod_ipv6_address_only_is_reached_at_that_address() {
    if skipped("an_app_listening_on_the_pod_ipv6_address_only_is_reached_at_that_address") {
        return;
    }
    reached_at_the_pod_address(
        &["--ipv6", "on"],
        SERVER_V6.into(),
        skiff::inbound::POD_SOURCE_V6.ip(),
    )
    .await;
}

/// An app bound to the server pod's address `pod` alone (so the sidecar's first try, on
/// loopback, is refused) is reached at that address, from `source`: the address `skiff init`
/// lets through `lo` (127.0.0.6, or the `::6` it puts on `lo`).
async fn reached_at_the_pod_address(init: &[&str], pod: IpAddr, source: IpAddr) {
    let pair = PodPair::new();
    pair.server.init_ok(init);
    let app = Whoami::start(pair.server.bind(SocketAddr::new(pod, 0)));
    let server = sidecar("services: []\n", &pair.server).start().await;
    for n in 1..=2 {
        let seen = who(pair.client.connect(SocketAddr::new(pod, app.port))).await;
        assert_eq!(
            seen, source,
            "connection {n}: the sidecar reached the app at the pod address {pod}, from the source `skiff init` lets through"
        );
        assert_eq!(
            counts(&server).await,
            [0.0, f64::from(n), 0.0],
            "connection {n}: taken inbound once (the sidecar's own connection was not looped back)"
        );
    }
}

/// A pod's sidecar has a workload but no `inbound` listener settings: its authorization
/// policies still hold for the connections redirected to it.
#[tokio::test]
async fn a_pod_workload_without_inbound_settings_enforces_its_policies() {
    if skipped("a_pod_workload_without_inbound_settings_enforces_its_policies") {
        return;
    }
    let pair = PodPair::new();
    pair.server.init_ok(&["--ipv6", "off"]);
    let closed = Whoami::start(pair.server.bind("[::]:0".parse().expect("literal")));
    let open = Whoami::start(pair.server.bind("[::]:0".parse().expect("literal")));
    let mesh = format!(
        "services:\n  - name: web\n    endpoints:\n      - {{ workload: server, address: \"{closed_addr}\" }}\n      - {{ workload: server, address: \"{open_addr}\" }}\nworkloads:\n  - name: server\nauthorization:\n  - name: closed-port\n    target: web\n    action: deny\n    to: [ {{ ports: [{port}] }} ]\n",
        closed_addr = at(SERVER_V4, closed.port),
        open_addr = at(SERVER_V4, open.port),
        port = closed.port,
    );
    let server = sidecar(&mesh, &pair.server)
        .workload("server", "default")
        .start()
        .await;

    let seen = who(pair.client.connect(at(SERVER_V4, open.port))).await;
    assert_eq!(seen, Ipv4Addr::LOCALHOST, "the open port is reached");

    let mut denied = pair.client.connect(at(SERVER_V4, closed.port));
    let answer = within("the denied connection ends", crate::support::STEP, async {
        let _ = denied.write_all(b"who\n").await;
        let mut answer = String::new();
        let _ = denied.read_to_string(&mut answer).await;
        answer
    })
    .await;
    assert_eq!(answer, "", "the denied port's app answered");
    let m = server.metric_values().await;
    assert_eq!(
        m.sum(
            "skiff_authz_decisions_total",
            &[("policy", "default/closed-port"), ("result", "deny")]
        ),
        1.0,
        "the deny policy decided it"
    );
}

#[tokio::test]
async fn an_app_calling_itself_through_its_service_goes_through_the_inbound_side() {
    if skipped("an_app_calling_itself_through_its_service_goes_through_the_inbound_side") {
        return;
    }
    let pair = PodPair::new();
    pair.client.init_ok(&["--ipv6", "off"]);
    let app = Whoami::start(pair.client.bind("[::]:0".parse().expect("literal")));
    // The service's one endpoint is this very pod.
    let mesh = format!(
        "services:\n  - name: me\n    protocol: tcp\n    addresses: [\"10.96.0.50:80\"]\n    endpoints: [ {{ address: \"{}\" }} ]\n",
        at(CLIENT_V4, app.port)
    );
    let proxy = sidecar(&mesh, &pair.client).start().await;

    let seen = who(pair
        .client
        .connect("10.96.0.50:80".parse().expect("literal")))
    .await;
    assert_eq!(
        seen,
        Ipv4Addr::LOCALHOST,
        "the sidecar's connection to its own pod went in through the inbound side"
    );
    assert_eq!(counts(&proxy).await, [1.0, 1.0, 0.0]);

    // The app dialling its own address directly stays on loopback, untouched.
    let seen = who(pair.client.connect(at(CLIENT_V4, app.port))).await;
    assert_eq!(seen, CLIENT_V4);
    assert_eq!(counts(&proxy).await, [1.0, 1.0, 0.0]);
}

#[tokio::test]
async fn excluded_ports_and_cidrs_bypass_the_sidecars() {
    if skipped("excluded_ports_and_cidrs_bypass_the_sidecars") {
        return;
    }
    let pair = PodPair::new();
    let excluded_v4 = Ipv4Addr::new(10, 77, 0, 3);
    let not_included = Ipv4Addr::new(10, 78, 0, 2);
    pair.add_server_address(excluded_v4);
    pair.add_server_address(not_included);
    let meshed = Whoami::start(pair.server.bind("[::]:0".parse().expect("literal")));
    let skip_in = Whoami::start(pair.server.bind("[::]:0".parse().expect("literal")));
    let skip_out = Whoami::start(pair.server.bind("[::]:0".parse().expect("literal")));
    pair.client.init_ok(&[
        "--ipv6",
        "off",
        "--exclude-outbound-ports",
        &skip_out.port.to_string(),
        "--include-outbound-cidrs",
        "10.77.0.0/24, 10.96.0.0/16",
        "--exclude-outbound-cidrs",
        "10.77.0.3",
    ]);
    pair.server.init_ok(&[
        "--ipv6",
        "off",
        "--exclude-inbound-ports",
        &format!("{},22", skip_in.port),
    ]);
    let server = sidecar("services: []\n", &pair.server).start().await;
    let client = sidecar("services: []\n", &pair.client).start().await;

    // Through both sidecars.
    assert_eq!(
        who(pair.client.connect(at(SERVER_V4, meshed.port))).await,
        Ipv4Addr::LOCALHOST
    );
    assert_eq!(counts(&client).await[0], 1.0);
    assert_eq!(counts(&server).await[1], 1.0);

    // An excluded outbound port skips the client's sidecar only.
    assert_eq!(
        who(pair.client.connect(at(SERVER_V4, skip_out.port))).await,
        Ipv4Addr::LOCALHOST
    );
    assert_eq!(
        counts(&client).await[0],
        1.0,
        "not through the client sidecar"
    );
    assert_eq!(counts(&server).await[1], 2.0);

    // An excluded inbound port skips the server's sidecar: the app sees the client pod.
    assert_eq!(
        who(pair.client.connect(at(SERVER_V4, skip_in.port))).await,
        CLIENT_V4
    );
    assert_eq!(counts(&client).await[0], 2.0);
    assert_eq!(
        counts(&server).await[1],
        2.0,
        "not through the server sidecar"
    );

    // An excluded CIDR inside an included one: exclusion wins.
    assert_eq!(
        who(pair.client.connect(at(excluded_v4, meshed.port))).await,
        Ipv4Addr::LOCALHOST
    );
    assert_eq!(counts(&client).await[0], 2.0, "excluded CIDR");
    assert_eq!(counts(&server).await[1], 3.0);

    // A destination outside the included CIDRs.
    assert_eq!(
        who(pair.client.connect(at(not_included, meshed.port))).await,
        Ipv4Addr::LOCALHOST
    );
    assert_eq!(counts(&client).await[0], 2.0, "not an included CIDR");
    assert_eq!(counts(&server).await[1], 4.0);
}

#[test]
fn original_destination_wins_over_the_authority() {
    if skipped("original_destination_wins_over_the_authority") {
        return;
    }
    let pair = Arc::new(PodPair::new());
    pair.client.init_ok(&[]);
    let p = pair.clone();
    pair.client.run(move || async move {
        let by_address = HttpUpstream::start("by-address").await;
        let by_host = HttpUpstream::start("by-host").await;
        let mesh = format!(
            r#"
services:
  - name: reviews
    addresses: ["10.96.0.12:9080"]
    endpoints: [ {{ address: "{}" }} ]
  - name: other
    hosts: [other]
    endpoints: [ {{ address: "{}" }} ]
"#,
            by_address.addr(),
            by_host.addr()
        );
        let _proxy = sidecar(&mesh, &p.client).start().await;

        // The app dials the ClusterIP; iptables hands the connection to the proxy.
        let r = client::send_h1(
            "10.96.0.12:9080".parse().expect("literal"),
            client::get("other", "/"),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(
            r.served_by(),
            Some("by-address"),
            "the original destination names the service, whatever the Host says"
        );
        assert_eq!(by_host.requests().len(), 0);

        // A destination no service claims falls back to the authority.
        let r = client::send_h1(
            "10.96.0.99:80".parse().expect("literal"),
            client::get("other", "/"),
        )
        .await;
        assert_eq!(r.served_by(), Some("by-host"), "{r:?}");
    });
}

#[test]
fn opaque_port_destination_skips_detection() {
    if skipped("opaque_port_destination_skips_detection") {
        return;
    }
    let pair = Arc::new(PodPair::new());
    pair.client.init_ok(&[]);
    let p = pair.clone();
    pair.client.run(move || async move {
        let mysql = BannerServer::start().await;
        let mesh = format!(
            "services:\n  - name: db\n    addresses: [\"10.96.0.13:3306\"]\n    endpoints: [ {{ address: \"{}\" }} ]\n",
            mysql.addr()
        );
        // 3306 is in the default opaque list; a 10 s detect timeout would hold the banner.
        let _proxy = sidecar(&mesh, &p.client)
            .arg("--detect-timeout", "10s")
            .start()
            .await;

        let mut raw = RawConn::connect("10.96.0.13:3306".parse().expect("literal")).await;
        let banner = within(
            "banner through a redirected opaque port",
            BANNER_DEADLINE,
            raw.read_until(b"\r\n"),
        )
        .await;
        assert!(banner.starts_with(b"220"), "the server's banner arrives first: {banner:?}");
    });
}

#[test]
fn redirected_inbound_goes_to_the_original_port_on_loopback() {
    if skipped("redirected_inbound_goes_to_the_original_port_on_loopback") {
        return;
    }
    let pair = Arc::new(PodPair::new());
    pair.server.init_ok(&[]);
    let p = pair.clone();
    pair.server.run(move || async move {
        // Bound on 127.0.0.1 only: nothing but the sidecar can reach it.
        let app = HttpUpstream::start("app").await;
        // No workload: nothing names the app but the original destination's port.
        let proxy = sidecar("services: []\n", &p.server).start().await;

        // A peer pod dials this pod's IP and the app's port; iptables hands it to the
        // inbound side.
        let stream = p.client.connect(at(SERVER_V4, app.addr().port()));
        let r = client::try_send_h1_over(stream, client::get("app.default", "/in"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.served_by(), Some("app"), "{r:?}");
        let m = proxy.metric_values().await;
        assert_eq!(
            m.sum(
                "skiff_requests_total",
                &[("direction", "inbound"), ("service", "passthrough")]
            ),
            1.0,
            "the request went through the inbound side"
        );
    });
}

#[test]
fn xds_fetches_services_by_original_destination() {
    if skipped("xds_fetches_services_by_original_destination") {
        return;
    }
    let pair = Arc::new(PodPair::new());
    pair.client.init_ok(&[]);
    let p = pair.clone();
    pair.client.run(move || async move {
        let by_address = HttpUpstream::start("by-address").await;
        let by_host = HttpUpstream::start("by-host").await;
        let smtp = BannerServer::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mesh.yaml");
        let mesh = format!(
            r#"
services:
  - name: reviews
    addresses: ["10.96.2.12:9080"]
    endpoints: [ {{ address: "{}" }} ]
  - name: other
    hosts: [other]
    endpoints: [ {{ address: "{}" }} ]
  - name: mail
    protocol: tcp
    addresses: ["10.96.2.25:2525"]
    endpoints: [ {{ address: "{}" }} ]
workloads:
  - name: client
    inbound: {{ listen: "127.0.0.1:1", app: "127.0.0.1:2" }}
"#,
            by_address.addr(),
            by_host.addr(),
            smtp.addr()
        );
        std::fs::write(&path, mesh).expect("write the mesh file");
        let cp = control_plane::in_process(&path).await;
        // A long detect timeout: a `protocol: tcp` service learnt too late would hold the
        // banner until it expires.
        let proxy = ProxyBuilder::xds(&format!("http://{}", cp.grpc_addr))
            .sidecar_in(&p.client, PROXY_UID)
            .listen("127.0.0.1:15001", "0.0.0.0:15006")
            .workload("client", "default")
            .arg("--detect-timeout", "10s")
            .start()
            .await;

        // Nothing is held: the original destination is looked up before anything else, and
        // wins over the Host.
        let r = client::send_h1(
            "10.96.2.12:9080".parse().expect("literal"),
            client::get("other", "/"),
        )
        .await;
        assert_eq!(r.served_by(), Some("by-address"), "{r:?}");

        // A server-speaks-first TCP service on a port detection would wait on: fetched by
        // its address before detection, so the banner comes straight through.
        let mut raw = RawConn::connect("10.96.2.25:2525".parse().expect("literal")).await;
        let banner = within(
            "banner through a redirected TCP service fetched on demand",
            BANNER_DEADLINE,
            raw.read_until(b"\r\n"),
        )
        .await;
        assert!(banner.starts_with(b"220"), "{banner:?}");

        // An address no service claims: the Host decides, fetched too.
        let r = client::send_h1(
            "10.96.2.99:80".parse().expect("literal"),
            client::get("other", "/"),
        )
        .await;
        assert_eq!(r.served_by(), Some("by-host"), "{r:?}");

        // Neither the address nor the Host names a service: once the control plane said so,
        // the request goes on to where the app sent it.
        let outside = p.server.bind("0.0.0.0:0".parse().expect("literal"));
        let outside_port = outside.local_addr().expect("bound").port();
        let _outside = tokio::spawn(plain_http(outside, "outside"));
        let r = client::send_h1(
            at(SERVER_V4, outside_port),
            client::get("api.example.com", "/"),
        )
        .await;
        assert_eq!(r.served_by(), Some("outside"), "{r:?}");

        let dump = proxy.config_dump().await;
        let lookups = &dump["onDemand"];
        assert_eq!(lookups["addr:10.96.2.12:9080"], "found", "{dump}");
        assert_eq!(lookups["addr:10.96.2.25:2525"], "found", "{dump}");
        assert_eq!(lookups["addr:10.96.2.99:80"], "missing", "{dump}");
        assert_eq!(lookups["host:other"], "found", "{dump}");
    });
}

/// Answers every HTTP/1.1 request on `listener` with `200`, `x-served-by: NAME`, body `NAME`.
async fn plain_http(listener: TcpListener, name: &'static str) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let rsp = format!(
                "HTTP/1.1 200 OK\r\nx-served-by: {name}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
                name.len()
            );
            let _ = s.write_all(rsp.as_bytes()).await;
        });
    }
}

#[test]
fn http_no_service_takes_passes_through_to_its_destination() {
    if skipped("http_no_service_takes_passes_through_to_its_destination") {
        return;
    }
    let pair = Arc::new(PodPair::new());
    pair.client.init_ok(&["--ipv6", "off"]);
    let p = pair.clone();
    pair.client.run(move || async move {
        // An unmeshed server outside the mesh: no sidecar, no service names it.
        let outside = p.server.bind("0.0.0.0:0".parse().expect("literal"));
        let port = outside.local_addr().expect("bound").port();
        let _server = tokio::spawn(plain_http(outside, "outside"));
        let proxy = sidecar("services: []\n", &p.client).start().await;

        let r = client::send_h1(at(SERVER_V4, port), client::get("api.example.com", "/v1")).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.served_by(), Some("outside"), "{r:?}");
        let m = proxy.metric_values().await;
        assert_eq!(
            m.sum(
                "skiff_requests_total",
                &[("direction", "outbound"), ("service", "passthrough")]
            ),
            1.0,
            "through the client sidecar, to the original destination"
        );
        assert_eq!(
            m.sum(
                "skiff_tcp_passthrough_connections_total",
                &[("direction", "outbound")]
            ),
            0.0,
            "HTTP, not an opaque connection"
        );
    });
}

#[tokio::test]
async fn a_pod_without_ipv6_keeps_its_ipv4_listeners() {
    if skipped("a_pod_without_ipv6_keeps_its_ipv4_listeners") {
        return;
    }
    // Injected sidecars are given both families; on a pod without IPv6 the proxy starts on
    // what it can bind.
    let ns = NetNs::new();
    // /proc/sys inside the namespace (no sysctl binary needed).
    ns.exec(&[
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; \
         echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6",
    ]);
    let proxy = sidecar("services: []\n", &ns).start().await;
    assert!(
        proxy.stderr().contains("no IPv6 here"),
        "{}",
        proxy.stderr()
    );
    let dump = proxy.config_dump().await;
    assert_eq!(dump["listeners"]["outbound"], "127.0.0.1:15001", "{dump}");
}
