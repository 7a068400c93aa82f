//! Real iptables redirection in a network namespace: the outbound listener reads the original
//! destination (SO_ORIGINAL_DST) and resolves the service by it before the authority, and
//! destinations on opaque ports skip detection. In xDS mode the original destination is what
//! the proxy fetches first, before detection.

use std::time::Duration;

use http::StatusCode;

use crate::support::{
    client::{self, RawConn},
    control_plane,
    netns::{NetNs, redirect_here},
    proxy::ProxyBuilder,
    upstream::{BannerServer, HttpUpstream},
    within,
};

/// Well under the 10 s detect timeout: a banner that waited for detection would miss it.
const BANNER_DEADLINE: Duration = Duration::from_secs(3);

#[test]
fn original_destination_wins_over_the_authority() {
    let ns = NetNs::new();
    ns.add_address("10.96.0.1/24");
    ns.run(move || async move {
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
        let proxy = ProxyBuilder::new(&mesh).start().await;
        redirect_here("10.96.0.0/24", proxy.outbound.port());

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
    let ns = NetNs::new();
    ns.add_address("10.96.0.1/24");
    ns.run(move || async move {
        let mysql = BannerServer::start().await;
        let mesh = format!(
            "services:\n  - name: db\n    addresses: [\"10.96.0.13:3306\"]\n    endpoints: [ {{ address: \"{}\" }} ]\n",
            mysql.addr()
        );
        // 3306 is in the default opaque list; a 10 s detect timeout would hold the banner.
        let proxy = ProxyBuilder::new(&mesh).arg("--detect-timeout", "10s").start().await;
        redirect_here("10.96.0.0/24", proxy.outbound.port());

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
    let ns = NetNs::new();
    ns.add_address("10.96.1.1/24");
    ns.run(move || async move {
        let app = HttpUpstream::start("app").await;
        // No workload: nothing names the app but the original destination's port.
        let proxy = ProxyBuilder::new("services: []\n").start().await;
        redirect_here("10.96.1.20/32", proxy.inbound.port());

        // A peer dials this pod's IP and the app's port; iptables hands it to the inbound side.
        let dst =
            std::net::SocketAddr::new("10.96.1.20".parse().expect("literal"), app.addr().port());
        let r = client::send_h1(dst, client::get("app.default", "/in")).await;
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
    let ns = NetNs::new();
    ns.add_address("10.96.2.1/24");
    ns.run(move || async move {
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
            .workload("client", "default")
            .arg("--detect-timeout", "10s")
            .start()
            .await;
        redirect_here("10.96.2.0/24", proxy.outbound.port());

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

        let dump = proxy.config_dump().await;
        let lookups = &dump["onDemand"];
        assert_eq!(lookups["addr:10.96.2.12:9080"], "found", "{dump}");
        assert_eq!(lookups["addr:10.96.2.25:2525"], "found", "{dump}");
        assert_eq!(lookups["addr:10.96.2.99:80"], "missing", "{dump}");
        assert_eq!(lookups["host:other"], "found", "{dump}");
    });
}
