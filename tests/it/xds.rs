//! xDS mode end to end: a real control plane (`skiff_xds::serve`, in process, watching a real
//! file) and real `skiff --xds` sidecars. Edits reach the proxies and change their traffic;
//! a bad edit changes nothing; proxies keep serving while the control plane is gone.

use std::net::SocketAddr;

use crate::support::{
    STEP, client,
    control_plane::{self, replace_file},
    eventually,
    proxy::{Proxy, ProxyBuilder},
    upstream::HttpUpstream,
};
use http::StatusCode;

fn mesh(v1: &HttpUpstream, v2: &HttpUpstream, w1: u32, w2: u32) -> String {
    format!(
        r#"
services:
  - name: web
    endpoints: [ {{ address: "{}" }} ]
    routes:
      - name: split
        backendRefs: [ {{ service: web-v1, weight: {w1} }}, {{ service: web-v2, weight: {w2} }} ]
  - name: web-v1
    endpoints: [ {{ address: "{}" }} ]
  - name: web-v2
    endpoints: [ {{ address: "{}" }} ]
workloads:
  - name: client
    inbound: {{ listen: "127.0.0.1:1", app: "127.0.0.1:2" }}
"#,
        v1.addr(),
        v1.addr(),
        v2.addr()
    )
}

async fn served_by(proxy: &Proxy) -> Option<String> {
    let r = client::send_h1(proxy.outbound, client::get("web", "/")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.served_by().map(str::to_owned)
}

async fn xds_proxy(grpc: SocketAddr) -> Proxy {
    ProxyBuilder::xds(&format!("http://{grpc}"))
        .workload("client", "default")
        .start()
        .await
}

#[tokio::test]
async fn file_edits_reach_proxies_and_bad_edits_do_not() {
    let (v1, v2) = (
        HttpUpstream::start("v1").await,
        HttpUpstream::start("v2").await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mesh.yaml");
    replace_file(&path, &mesh(&v1, &v2, 100, 0));
    let cp = control_plane::in_process(&path).await;
    let (a, b) = (xds_proxy(cp.grpc_addr).await, xds_proxy(cp.grpc_addr).await);
    for p in [&a, &b] {
        for _ in 0..10 {
            assert_eq!(served_by(p).await.as_deref(), Some("v1"), "100/0 split");
        }
    }

    // 100/0 → 0/100: every proxy applies it, seen through traffic.
    replace_file(&path, &mesh(&v1, &v2, 0, 100));
    for p in [&a, &b] {
        eventually("the new split reaches the proxy", STEP, || async {
            served_by(p).await.as_deref() == Some("v2")
        })
        .await;
        for _ in 0..10 {
            assert_eq!(served_by(p).await.as_deref(), Some("v2"), "0/100 split");
        }
    }

    // An invalid edit is refused at the control plane: nothing changes at the proxies.
    let before = a.config_dump().await["version"].clone();
    replace_file(
        &path,
        &mesh(&v1, &v2, 0, 100).replace("weight: 100", "weight: -5"),
    );
    eventually("the control plane reports the bad edit", STEP, || async {
        let body = admin_text(cp.admin_addr, "/proxies").await;
        body.contains("backendRefs[1].weight")
    })
    .await;
    assert_eq!(
        a.config_dump().await["version"],
        before,
        "no push reached the proxy"
    );
    assert_eq!(served_by(&a).await.as_deref(), Some("v2"));

    // The control plane goes away: the proxies keep serving what they have.
    cp.stop().await.expect("control plane stops");
    for p in [&a, &b] {
        for _ in 0..10 {
            assert_eq!(
                served_by(p).await.as_deref(),
                Some("v2"),
                "serving without a control plane"
            );
        }
        assert_eq!(
            p.ready_status().await,
            Some(StatusCode::OK),
            "still ready while disconnected"
        );
    }
}

#[tokio::test]
async fn removed_endpoint_finishes_in_flight_requests_then_its_connections_close() {
    let (a, b) = (
        HttpUpstream::start("a").await,
        HttpUpstream::start("b").await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mesh.yaml");
    let web = |eps: &[SocketAddr]| {
        let eps: Vec<String> = eps
            .iter()
            .map(|e| format!("{{ address: \"{e}\" }}"))
            .collect();
        format!(
            "services:\n  - name: web\n    loadBalancer: round-robin\n    endpoints: [ {} ]\nworkloads:\n  - name: client\n    inbound: {{ listen: \"127.0.0.1:1\", app: \"127.0.0.1:2\" }}\n",
            eps.join(", ")
        )
    };
    replace_file(&path, &web(&[a.addr(), b.addr()]));
    let cp = control_plane::in_process(&path).await;
    let p = xds_proxy(cp.grpc_addr).await;

    // Slow requests in flight on both endpoints (round robin alternates).
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let outbound = p.outbound;
            tokio::spawn(async move {
                let req = client::request(http::Method::GET, "web", "/slow")
                    .header("x-delay-ms", "1500")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .expect("request");
                client::try_send_h1(outbound, req).await
            })
        })
        .collect();
    a.wait_requests(1).await;
    b.wait_requests(1).await;

    // `a` leaves the mesh while its requests are in flight.
    replace_file(&path, &web(&[b.addr()]));
    eventually("the removal reaches the proxy", STEP, || async {
        let eps = &p.config_dump().await["services"][0]["endpoints"];
        eps.as_array().is_some_and(|e| e.len() == 1)
    })
    .await;
    for _ in 0..6 {
        assert_eq!(
            served_by(&p).await.as_deref(),
            Some("b"),
            "new requests avoid `a`"
        );
    }
    let mut by = Vec::new();
    for t in slow {
        let r = t
            .await
            .expect("task")
            .expect("the in-flight request completes");
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        by.push(r.served_by().unwrap_or_default().to_owned());
    }
    assert!(
        by.iter().any(|s| s == "a"),
        "some finished on the removed endpoint: {by:?}"
    );
    // Nothing holds `a` any more: its pooled connections close.
    eventually(
        "connections to the removed endpoint close",
        STEP,
        || async { a.open_connections() == 0 },
    )
    .await;
    assert!(
        b.open_connections() > 0,
        "the remaining endpoint keeps its pool"
    );
}

#[tokio::test]
async fn unknown_workload_keeps_the_proxy_waiting() {
    let v1 = HttpUpstream::start("v1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mesh.yaml");
    replace_file(&path, &mesh(&v1, &v1, 1, 1));
    let cp = control_plane::in_process(&path).await;
    // A proxy for a workload the control plane does not know never gets a config, so it
    // never prints its startup line; it logs the refusal and retries.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff"));
    cmd.args([
        "run",
        "--xds",
        &format!("http://{}", cp.grpc_addr),
        "--workload",
        "nobody",
    ])
    .args([
        "--admin-addr",
        "127.0.0.1:0",
        "--outbound-addr",
        "127.0.0.1:0",
        "--inbound-addr",
        "127.0.0.1:0",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn skiff");
    let stderr = child.stderr.take().expect("piped");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let refused = crate::support::within("the refusal in the log", STEP, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("nobody") && line.contains("not") {
                return line;
            }
        }
        panic!("skiff ended without logging the refusal")
    })
    .await;
    assert!(refused.contains("default/nobody"), "{refused}");
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the proxy keeps retrying instead of exiting"
    );
}

/// GET on the control plane's admin port, as text.
async fn admin_text(addr: SocketAddr, path: &str) -> String {
    let r = client::send_h1(addr, client::get("admin", path)).await;
    r.text()
}
