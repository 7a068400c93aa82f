//! On-demand scoping in xDS mode: a proxy holds only the services its app talks to, fetched
//! on the first request, dropped when idle; a resource the proxy cannot use is NACKed alone
//! and the rest of its response applies; memory does not grow with the size of the mesh.

use std::{collections::BTreeSet, fmt::Write as _, net::SocketAddr, path::Path};

use http::StatusCode;
use serde_json::Value;
use skiff_xds::serve::Running;

use crate::support::{
    STEP, client,
    control_plane::{self, replace_file},
    eventually,
    proxy::{Proxy, ProxyBuilder},
    relay::Relay,
    upstream::HttpUpstream,
};

async fn control_plane(path: &Path) -> Running {
    control_plane::in_process(path).await
}

const CLIENT: &str = "workloads:\n  - name: client\n    inbound: { listen: \"127.0.0.1:1\", app: \"127.0.0.1:2\" }\n";

async fn proxy(cp: &Running, extra: &[(&str, &str)]) -> Proxy {
    let mut b =
        ProxyBuilder::xds(&format!("http://{}", cp.grpc_addr)).workload("client", "default");
    for (flag, value) in extra {
        b = b.arg(flag, value);
    }
    b.start().await
}

async fn get(p: &Proxy, host: &str) -> client::Reply {
    client::send_h1(p.outbound, client::get(host, "/")).await
}

fn service_names(dump: &Value) -> BTreeSet<String> {
    dump["services"]
        .as_array()
        .expect("services is a list")
        .iter()
        .map(|s| s["name"].as_str().expect("a name").to_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn small_mesh(app: SocketAddr, back: SocketAddr, extra: &str) -> String {
    let mut mesh = String::from(
        "authorization:\n  - { name: mine, target: own }\n  - { name: theirs, target: svc-0 }\n",
    );
    mesh.push_str("services:\n  - name: own\n    endpoints: [ { workload: client } ]\n");
    for i in 0..10 {
        let _ = writeln!(
            mesh,
            "  - name: svc-{i}\n    endpoints: [ {{ address: \"{app}\" }} ]"
        );
    }
    let _ = write!(
        mesh,
        "  - name: front\n    endpoints: [ {{ address: \"{app}\" }} ]\n    routes:\n      - backendRefs: [ {{ service: back }} ]\n  - name: back\n    endpoints: [ {{ address: \"{back}\" }} ]\n{extra}{CLIENT}"
    );
    mesh
}

#[tokio::test]
async fn services_come_on_demand_and_go_when_idle() {
    let (app, back) = (
        HttpUpstream::start("app").await,
        HttpUpstream::start("back").await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mesh.yaml");
    replace_file(&path, &small_mesh(app.addr(), back.addr(), ""));
    let cp = control_plane(&path).await;
    let p = proxy(&cp, &[("--xds-idle-timeout", "1s")]).await;

    let dump = p.config_dump().await;
    assert!(
        service_names(&dump).is_empty(),
        "nothing before the app asks: {dump}"
    );
    assert_eq!(
        dump["xds"]["subscribed"]["Service"],
        serde_json::json!(["host:*"])
    );
    // Its inbound side holds its own workload and the policies that apply to it, no more.
    assert_eq!(
        dump["xds"]["subscribed"]["Authorization"],
        serde_json::json!(["workload:default/client"])
    );
    assert_eq!(
        dump["xds"]["held"]["Authorization"],
        serde_json::json!(["default/mine"])
    );
    assert_eq!(
        dump["xds"]["held"]["Workload"],
        serde_json::json!(["default/client"])
    );

    // The first request waits for its service, and what that service routes to.
    let r = get(&p, "front").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.served_by(), Some("back"));
    let r = get(&p, "svc-3.default.svc.cluster.local:8080").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let dump = p.config_dump().await;
    assert_eq!(service_names(&dump), set(&["back", "front", "svc-3"]));
    assert_eq!(dump["onDemand"]["host:front"], "found", "{dump}");

    // A host no service claims fails fast with the reason, and stays subscribed: when the
    // mesh gains it, it is pushed without another miss.
    let r = get(&p, "nobody").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.reason(), Some("unknown-service"));
    assert_eq!(p.config_dump().await["onDemand"]["host:nobody"], "missing");
    // Junk in Host is not worth a subscription: no lookup, and the stream stays healthy.
    let r = get(&p, &"a".repeat(1000)).await;
    assert_eq!(r.reason(), Some("unknown-service"));
    let dump = p.config_dump().await;
    assert_eq!(
        dump["onDemand"].as_object().map(|o| o.len()),
        Some(3),
        "{dump}"
    );
    assert_eq!(dump["xds"]["connected"], true);
    let m = p.metric_values().await;
    assert_eq!(
        m.sum("skiff_xds_lookups_total", &[("result", "found")]),
        2.0
    );
    assert_eq!(
        m.sum("skiff_xds_lookups_total", &[("result", "missing")]),
        1.0
    );
    assert_eq!(m.sum("skiff_xds_connected", &[]), 1.0);
    assert_eq!(m.sum("skiff_xds_services", &[]), 3.0);
    let extra = format!(
        "  - name: nobody\n    endpoints: [ {{ address: \"{}\" }} ]\n",
        app.addr()
    );
    replace_file(&path, &small_mesh(app.addr(), back.addr(), &extra));
    eventually("the new service is pushed to the proxy", STEP, || async {
        service_names(&p.config_dump().await).contains("nobody")
    })
    .await;
    assert_eq!(get(&p, "nobody").await.status, StatusCode::OK);

    // Unused for the idle timeout: unsubscribed and forgotten.
    eventually("idle services are dropped", STEP, || async {
        let dump = p.config_dump().await;
        service_names(&dump).is_empty()
            && dump["xds"]["subscribed"]["Service"] == serde_json::json!(["host:*"])
            && dump["xds"]["subscribed"]["Endpoints"] == serde_json::json!([])
    })
    .await;
    // And fetched again on the next request.
    let r = get(&p, "front").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.served_by(), Some("back"));
}

#[tokio::test]
async fn a_catch_all_does_not_shadow_services_not_held_yet() {
    let (any, reviews) = (
        HttpUpstream::start("any").await,
        HttpUpstream::start("reviews").await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mesh.yaml");
    let mesh = format!(
        "services:\n  - name: egress\n    hosts: [\"*\"]\n    endpoints: [ {{ address: \"{}\" }} ]\n  - name: reviews\n    endpoints: [ {{ address: \"{}\" }} ]\n{CLIENT}",
        any.addr(),
        reviews.addr()
    );
    replace_file(&path, &mesh);
    let cp = control_plane(&path).await;
    let p = proxy(&cp, &[]).await;
    // The proxy may turn ready on a first snapshot taken before the catch-all's endpoints
    // arrived; what matters is that the catch-all, and nothing else, is held before any request.
    eventually("only the catch-all is held", STEP, || async {
        service_names(&p.config_dump().await) == set(&["egress"])
    })
    .await;
    assert_eq!(get(&p, "reviews").await.served_by(), Some("reviews"));
    assert_eq!(get(&p, "example.com").await.served_by(), Some("any"));
    assert_eq!(get(&p, "example.com").await.served_by(), Some("any"));
    assert_eq!(get(&p, "reviews:9080").await.served_by(), Some("reviews"));
    // A host no service could claim is not asked about: the catch-all takes it at once.
    let long = "x".repeat(300);
    assert_eq!(get(&p, &long).await.served_by(), Some("any"));
    assert!(
        p.config_dump().await["onDemand"]
            .get(format!("host:{long}"))
            .is_none()
    );
}

#[tokio::test]
async fn a_resource_the_proxy_cannot_use_is_nacked_alone() {
    let (app, back, v2) = (
        HttpUpstream::start("app").await,
        HttpUpstream::start("back").await,
        HttpUpstream::start("v2").await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mesh.yaml");
    let looped = |addr: SocketAddr, back: SocketAddr| {
        let extra = format!("  - name: loop\n    endpoints: [ {{ address: \"{addr}\" }} ]\n");
        small_mesh(app.addr(), back, &extra)
    };
    replace_file(&path, &looped(app.addr(), back.addr()));
    let cp = control_plane(&path).await;
    let p = proxy(&cp, &[]).await;
    assert_eq!(get(&p, "front").await.served_by(), Some("back"));
    assert_eq!(get(&p, "loop").await.served_by(), Some("app"));

    // One push changes two Endpoints: `back` to a new upstream (fine) and `loop` to this
    // proxy's own outbound listener (requests would loop: refused by this proxy only).
    replace_file(&path, &looped(p.outbound, v2.addr()));
    eventually("the good half of the response applies", STEP, || async {
        get(&p, "front").await.served_by() == Some("v2")
    })
    .await;
    let r = get(&p, "loop").await;
    assert_eq!(
        r.served_by(),
        Some("app"),
        "the refused resource keeps its last good version"
    );

    let dump = p.config_dump().await;
    let nack = dump["xds"]["lastNack"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        nack.contains("Endpoints default/loop") && nack.contains("own outbound listener"),
        "{dump}"
    );
    assert_eq!(dump["xds"]["lastNack"]["type"], "Endpoints");
    eventually("the control plane shows the NACK", STEP, || async {
        let r = client::send_h1(cp.admin_addr, client::get("admin", "/proxies")).await;
        r.text().contains("own outbound listener")
    })
    .await;

    // A service refused from its first version has nothing to fall back on: its host fails
    // with `unknown-service`, and `onDemand` says it was refused, and why.
    let extra = format!(
        "  - name: loop\n    endpoints: [ {{ address: \"{}\" }} ]\n  - name: selfish\n    endpoints: [ {{ address: \"{}\" }} ]\n",
        p.outbound, p.outbound
    );
    replace_file(&path, &small_mesh(app.addr(), v2.addr(), &extra));
    // Fetched when a request asks for it; until the control plane has read the edit, the
    // host is `missing`, and once the service comes (and is refused) the answer follows.
    eventually("the lookup says refused, and why", STEP, || async {
        let r = get(&p, "selfish").await;
        let dump = p.config_dump().await;
        let answer = dump["onDemand"]["host:selfish"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        r.status == StatusCode::SERVICE_UNAVAILABLE
            && r.reason() == Some("unknown-service")
            && answer.starts_with("refused: ")
            && answer.contains("own outbound listener")
    })
    .await;
    let dump = p.config_dump().await;
    assert_eq!(dump["onDemand"]["host:front"], "found", "{dump}");
}

/// A mesh of `n` services named `svc-<i>`, all served by `app`.
fn mesh_of(n: usize, app: SocketAddr) -> String {
    let mut mesh = String::with_capacity(n * 80);
    mesh.push_str("services:\n");
    for i in 0..n {
        let _ = writeln!(
            mesh,
            "  - name: svc-{i}\n    endpoints: [ {{ address: \"{app}\" }} ]"
        );
    }
    mesh.push_str(CLIENT);
    mesh
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[tokio::test]
async fn memory_follows_what_the_app_talks_to_not_the_mesh() {
    let app = HttpUpstream::start("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (big_path, small_path) = (dir.path().join("big.yaml"), dir.path().join("small.yaml"));
    replace_file(&big_path, &mesh_of(10_000, app.addr()));
    replace_file(&small_path, &mesh_of(10, app.addr()));
    let (big_cp, small_cp) = (
        control_plane(&big_path).await,
        control_plane(&small_path).await,
    );
    let (big, small) = (proxy(&big_cp, &[]).await, proxy(&small_cp, &[]).await);

    for p in [&big, &small] {
        for round in 0..20 {
            for host in ["svc-1", "svc-5", "svc-7"] {
                let r = get(p, host).await;
                assert_eq!(r.status, StatusCode::OK, "{host} round {round}: {r:?}");
            }
        }
        let dump = p.config_dump().await;
        assert_eq!(service_names(&dump), set(&["svc-1", "svc-5", "svc-7"]));
    }
    let (big_rss, small_rss) = (rss_kib(big.pid()), rss_kib(small.pid()));
    eprintln!("proxy RSS: 10,000-service mesh {big_rss} KiB, 10-service mesh {small_rss} KiB");
    assert!(
        big_rss * 10 <= small_rss * 11,
        "RSS {big_rss} KiB in a mesh of 10,000 services vs {small_rss} KiB in a mesh of 10"
    );
}

#[tokio::test]
async fn a_lookup_waits_out_a_control_plane_restart() {
    let app = HttpUpstream::start("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mesh.yaml");
    replace_file(&path, &mesh_of(10, app.addr()));
    let cp = control_plane(&path).await;
    let grpc = cp.grpc_addr;
    let p = proxy(&cp, &[("--xds-fetch-timeout", "30s")]).await;
    assert_eq!(get(&p, "svc-1").await.status, StatusCode::OK);

    cp.stop().await.expect("control plane stops");
    eventually("the proxy sees the stream end", STEP, || async {
        p.config_dump().await["xds"]["connected"] == false
    })
    .await;
    // Asked while disconnected: the request waits for the reconnect and its answer.
    let pending = {
        let outbound = p.outbound;
        tokio::spawn(async move { client::send_h1(outbound, client::get("svc-2", "/")).await })
    };
    eventually("the lookup is pending", STEP, || async {
        p.config_dump().await["onDemand"]["host:svc-2"] == "pending"
    })
    .await;
    // On the same port: the proxy's configured address.
    let again = control_plane::in_process_on(&path, grpc).await;
    let r = pending.await.expect("request task");
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let dump = p.config_dump().await;
    assert_eq!(dump["xds"]["connected"], true);
    assert_eq!(service_names(&dump), set(&["svc-1", "svc-2"]));
    assert_eq!(get(&p, "svc-1").await.status, StatusCode::OK);
    drop(again);
}

#[tokio::test]
async fn a_control_plane_gone_silent_is_detected_by_keepalive() {
    let (app, app2) = (
        HttpUpstream::start("app").await,
        HttpUpstream::start("app2").await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mesh.yaml");
    replace_file(&path, &mesh_of(3, app.addr()));
    let cp = control_plane(&path).await;
    let relay = Relay::start(cp.grpc_addr).await;
    let p = ProxyBuilder::xds(&format!("http://{}", relay.addr))
        .workload("client", "default")
        .arg("--xds-keepalive", "500ms")
        .start()
        .await;
    assert_eq!(get(&p, "svc-1").await.served_by(), Some("app"));

    // The path to the control plane goes silent without a reset (a dead node): only PINGs
    // going unanswered can tell. An edit must still reach the proxy, over a new stream.
    relay.silence_open_connections();
    replace_file(&path, &mesh_of(3, app2.addr()));
    eventually("the proxy reconnects and gets the edit", STEP, || async {
        get(&p, "svc-1").await.served_by() == Some("app2")
    })
    .await;
    assert!(relay.accepted() >= 2, "a new connection carried the edit");
}

#[tokio::test]
async fn a_host_that_moves_to_another_service_is_followed_at_once() {
    let (old, new) = (
        HttpUpstream::start("old").await,
        HttpUpstream::start("new").await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mesh.yaml");
    let mesh = |old_hosts: &str, new_hosts: &str| {
        format!(
            "services:\n  - name: shop-old\n    hosts: [{old_hosts}]\n    endpoints: [ {{ address: \"{}\" }} ]\n  - name: shop-new\n    hosts: [{new_hosts}]\n    endpoints: [ {{ address: \"{}\" }} ]\n{CLIENT}",
            old.addr(),
            new.addr()
        )
    };
    replace_file(&path, &mesh("shop", "shop-new"));
    let cp = control_plane(&path).await;
    let p = proxy(&cp, &[]).await;
    assert_eq!(get(&p, "shop").await.served_by(), Some("old"));
    assert_eq!(service_names(&p.config_dump().await), set(&["shop-old"]));

    replace_file(&path, &mesh("shop-old", "shop, shop-new"));
    eventually("the host follows its new service", STEP, || async {
        get(&p, "shop").await.served_by() == Some("new")
    })
    .await;
    // The old service is no longer needed: dropped now, not after the idle timeout (5m).
    eventually("the old service is dropped", STEP, || async {
        service_names(&p.config_dump().await) == set(&["shop-new"])
    })
    .await;
}
