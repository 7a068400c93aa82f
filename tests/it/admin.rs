//! The admin listener and the CLI's `version`: `/live`, `/ready`, `/config_dump`, `/logging`.

use http::{Method, StatusCode};
use http_body_util::Full;

use crate::support::{
    client,
    proxy::{self, Proxy},
    upstream::HttpUpstream,
};

#[tokio::test]
async fn version_subcommand_prints_name_and_version() {
    let out = proxy::run_version().await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("skiff {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn live_and_ready() {
    let proxy = Proxy::start("services: []\n").await;
    assert_eq!(proxy.admin_get("/live").await.status, StatusCode::OK);
    assert_eq!(proxy.admin_get("/ready").await.status, StatusCode::OK);
}

#[tokio::test]
async fn config_dump_shows_listeners_services_and_endpoints() {
    let web = HttpUpstream::start("web").await;
    let mesh = format!(
        r#"
services:
  - name: web
    namespace: shop
    endpoints:
      - address: "{}"
    routes:
      - name: main
        backendRefs: [{{ service: web, weight: 5 }}]
"#,
        web.addr()
    );
    let proxy = Proxy::start(&mesh).await;
    let dump = proxy.config_dump().await;

    assert!(dump["version"].is_string(), "{dump}");
    assert!(dump["lastError"].is_null(), "{dump}");
    assert_eq!(dump["listeners"]["admin"], proxy.admin.to_string());
    assert_eq!(dump["listeners"]["outbound"], proxy.outbound.to_string());
    assert_eq!(dump["listeners"]["inbound"], proxy.inbound.to_string());

    let services = dump["services"]
        .as_array()
        .unwrap_or_else(|| panic!("services array: {dump}"));
    assert_eq!(services.len(), 1, "{dump}");
    let web_svc = &services[0];
    assert_eq!(web_svc["name"], "web");
    assert_eq!(web_svc["namespace"], "shop");
    let hosts: Vec<&str> = web_svc["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    assert_eq!(
        hosts,
        [
            "web",
            "web.shop",
            "web.shop.svc",
            "web.shop.svc.cluster.local"
        ],
        "implicit hosts"
    );
    assert!(
        web_svc["addresses"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{web_svc}"
    );
    assert_eq!(web_svc["protocol"], "auto");
    assert_eq!(web_svc["loadBalancer"], "p2c-ewma");
    let route = &web_svc["routes"][0];
    assert_eq!(route["name"], "main");
    assert_eq!(route["backends"][0]["service"], "web");
    assert_eq!(route["backends"][0]["namespace"], "shop");
    assert_eq!(route["backends"][0]["weight"], 5);
    let ep = &web_svc["endpoints"][0];
    assert_eq!(ep["address"], web.addr().to_string());
    assert_eq!(ep["inFlight"], 0);
    assert!(ep["ewmaMs"].is_number(), "{ep}");

    // The same host through the outbound listener proves the dump is what runs.
    let r = client::send_h1(proxy.outbound, client::get("web.shop", "/")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
}

#[tokio::test]
async fn logging_filter_can_be_read_and_changed() {
    let proxy = Proxy::start("services: []\n").await;
    let r = proxy.admin_get("/logging").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        !r.text().trim().is_empty(),
        "GET /logging returns the current filter"
    );

    let put = |body: &'static str| {
        client::request(Method::PUT, "admin", "/logging")
            .body(Full::from(body))
            .expect("valid request")
    };
    let r = client::send_h1(proxy.admin, put("level=debug")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let now = proxy.admin_get("/logging").await.text();
    assert!(now.contains("debug"), "filter after level=debug: {now:?}");

    let r = client::send_h1(proxy.admin, put("skiff=trace,hyper=warn")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let now = proxy.admin_get("/logging").await.text();
    assert!(
        now.contains("skiff=trace") && now.contains("hyper=warn"),
        "filter after a directive: {now:?}"
    );
}
