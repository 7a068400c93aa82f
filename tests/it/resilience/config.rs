//! Bad resilience config is refused naming the field path: at start (`skiff run --config` exits
//! non-zero) and on a SIGHUP reload (the old config keeps serving, `lastError` names the path).

use std::net::SocketAddr;

use http::StatusCode;

use crate::support::{
    STEP, client, eventually,
    proxy::{self, Proxy},
    upstream::HttpUpstream,
};

/// A service with one route whose resilience settings are `route` (YAML lines at route level).
fn mesh(upstream: SocketAddr, route: &str) -> String {
    format!(
        r#"
services:
  - name: web
    endpoints: [{{ address: "{upstream}" }}]
    routes:
      - name: main
{route}
"#
    )
}

/// Each bad setting, with the path the refusal must name.
const BAD: [(&str, &str); 4] = [
    (
        "        retry: { attempts: -1 }",
        "services[0].routes[0].retry.attempts",
    ),
    (
        "        retry: { attempts: 2, backoff: { base: 300ms, max: 100ms } }",
        "services[0].routes[0].retry.backoff.base",
    ),
    (
        "        fault: { abort: { percent: 101, status: 503 } }",
        "services[0].routes[0].fault.abort.percent",
    ),
    (
        "        retry: { attempts: 2, retryOn: [sometimes] }",
        "services[0].routes[0].retry.retryOn[0]",
    ),
];

const GOOD: &str = "        retry: { attempts: 2, retryOn: [5xx] }";

#[tokio::test]
async fn bad_resilience_settings_refuse_to_start_naming_the_field() {
    let web = HttpUpstream::start("web").await;
    for (route, path) in BAD {
        let out = proxy::run_refused(&mesh(web.addr(), route)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{route:?} exits non-zero: {:?}\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains(path),
            "{route:?}: stderr names {path}:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn bad_resilience_settings_on_reload_keep_the_old_config() {
    let web = HttpUpstream::start("web").await;
    let proxy = Proxy::start(&mesh(web.addr(), GOOD)).await;
    let version = proxy.config_dump().await["version"].clone();

    for (n, (route, path)) in BAD.into_iter().enumerate() {
        proxy.rewrite_mesh(&mesh(web.addr(), route));
        proxy.signal(libc::SIGHUP);
        let failed = (n + 1) as f64;
        eventually("the failed reload is counted", STEP, || async {
            proxy
                .metric_values()
                .await
                .sum("skiff_config_reloads_total", &[("result", "failed")])
                == failed
        })
        .await;
        let dump = proxy.config_dump().await;
        assert_eq!(dump["version"], version, "{route:?} changes nothing");
        let last_error = dump["lastError"]
            .as_str()
            .unwrap_or_else(|| panic!("lastError set after {route:?}: {dump}"));
        assert!(
            last_error.contains(path),
            "{route:?}: lastError names {path}: {last_error:?}"
        );
        let r = client::send_h1(proxy.outbound, client::get("web", "/")).await;
        assert_eq!(r.status, StatusCode::OK, "the old config serves: {r:?}");
        assert_eq!(r.served_by(), Some("web"));
    }
}
