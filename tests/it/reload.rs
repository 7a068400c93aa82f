//! SIGHUP reloads of the mesh file: a good file is applied, a bad one is refused with the field
//! path in `lastError` and the old config kept, and traffic never fails meanwhile.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use http::StatusCode;

use crate::support::{
    STEP,
    client::{self, H1Conn},
    eventually,
    proxy::Proxy,
    upstream::HttpUpstream,
};

fn mesh(v1: SocketAddr, v2: SocketAddr, target: &str, weight: &str) -> String {
    format!(
        r#"
services:
  - name: web
    routes:
      - name: main
        backendRefs:
          - service: {target}
            weight: {weight}
  - name: web-v1
    endpoints: [{{ address: "{v1}" }}]
  - name: web-v2
    endpoints: [{{ address: "{v2}" }}]
"#
    )
}

async fn served_by(outbound: SocketAddr) -> String {
    let r = client::send_h1(outbound, client::get("web", "/")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.served_by().unwrap_or("?").to_owned()
}

#[tokio::test]
async fn sighup_applies_good_file_and_refuses_bad_one_while_traffic_flows() {
    let v1 = HttpUpstream::start("v1").await;
    let v2 = HttpUpstream::start("v2").await;
    let proxy = Proxy::start(&mesh(v1.addr(), v2.addr(), "web-v1", "1")).await;

    let first = proxy.metric_values().await;
    assert_eq!(
        first.sum("skiff_config_reloads_total", &[("result", "ok")]),
        1.0,
        "the first load counts"
    );
    assert_eq!(
        first.sum("skiff_config_reloads_total", &[("result", "failed")]),
        0.0
    );
    assert_eq!(served_by(proxy.outbound).await, "v1");

    // A client keeps sending on one kept-alive connection and on fresh ones, through both reloads.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let outbound = proxy.outbound;
        tokio::spawn(async move {
            let mut conn = H1Conn::connect(outbound).await;
            let mut sent = 0usize;
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let kept = conn.try_send(client::get("web", "/kept")).await;
                let fresh = client::try_send_h1(outbound, client::get("web", "/fresh")).await;
                for r in [kept, fresh] {
                    sent += 1;
                    match r {
                        Ok(r) if r.status == StatusCode::OK => {}
                        Ok(r) => {
                            failures.push(format!("status {} reason {:?}", r.status, r.reason()))
                        }
                        Err(e) => failures.push(e),
                    }
                }
            }
            (sent, failures)
        })
    };

    let version_1 = proxy.config_dump().await["version"].clone();
    proxy
        .reload(&mesh(v1.addr(), v2.addr(), "web-v2", "1"))
        .await;
    let dump = proxy.config_dump().await;
    assert_ne!(dump["version"], version_1);
    assert!(
        dump["lastError"].is_null(),
        "a good reload leaves no error: {}",
        dump["lastError"]
    );
    assert_eq!(
        served_by(proxy.outbound).await,
        "v2",
        "traffic goes to the new backend once the version changed"
    );

    let version_2 = dump["version"].clone();
    proxy.rewrite_mesh(&mesh(v1.addr(), v2.addr(), "web-v1", "-1"));
    proxy.signal(libc::SIGHUP);
    eventually("failed reload counted", STEP, || async {
        proxy
            .metric_values()
            .await
            .sum("skiff_config_reloads_total", &[("result", "failed")])
            == 1.0
    })
    .await;
    let dump = proxy.config_dump().await;
    assert_eq!(dump["version"], version_2, "a refused file changes nothing");
    let last_error = dump["lastError"]
        .as_str()
        .unwrap_or_else(|| panic!("lastError set: {dump}"));
    assert!(
        last_error.contains("services[0].routes[0].backendRefs[0].weight"),
        "lastError names the field path: {last_error:?}"
    );
    assert_eq!(
        served_by(proxy.outbound).await,
        "v2",
        "the old config keeps serving"
    );
    let after = proxy.metric_values().await;
    assert_eq!(
        after.sum("skiff_config_reloads_total", &[("result", "ok")]),
        2.0,
        "first load + good reload"
    );

    stop.store(true, Ordering::SeqCst);
    let (sent, failures) = traffic.await.expect("traffic task");
    assert!(sent > 0, "the client sent during the reloads");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during reloads: {failures:?}",
        failures.len()
    );
    assert!(!v2.requests().is_empty());
}
