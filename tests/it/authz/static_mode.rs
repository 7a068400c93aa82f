//! Static mode (`--config`, no CA, so no mTLS): every peer is unauthenticated, and a sidecar
//! applies the policies whose target service lists its workload as an endpoint, no others.

use http::StatusCode;

use crate::authz::{NO_POLICY, assert_unauthorized, decided, grew};
use crate::support::{client, proxy::ProxyBuilder, upstream::HttpUpstream};

#[tokio::test]
async fn static_mode_applies_the_policies_targeting_the_workload() {
    let app = HttpUpstream::start("web-app").await;
    // `lockdown` would refuse everything, but `other` is not served by `web`.
    let mesh = format!(
        r#"services:
  - name: web
    endpoints: [ {{ workload: web }} ]
  - name: other
    endpoints: [ {{ workload: other }} ]
workloads:
  - name: web
    inbound: {{ listen: "127.0.0.1:1", app: "{app}" }}
  - name: other
    inbound: {{ listen: "127.0.0.1:2", app: "{app}" }}
authorization:
  - name: public-only
    target: web
    from: [ unauthenticated ]
    to: [ {{ paths: ["/public/*"] }} ]
  - name: lockdown
    target: other
    action: deny
"#,
        app = app.addr()
    );
    let web = ProxyBuilder::new(&mesh)
        .workload("web", "default")
        .start()
        .await;
    let dump = web.config_dump().await;
    assert_eq!(
        dump["inbound"]["authorization"],
        serde_json::json!(["default/public-only"]),
        "only the policy whose target has `web` as an endpoint applies"
    );

    let before = web.metric_values().await;
    let r = client::send_h1(web.inbound, client::get("web", "/public/x")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.served_by(), Some("web-app"));
    assert_unauthorized(
        &client::send_h1(web.inbound, client::get("web", "/private")).await,
        "GET /private",
    );

    let after = web.metric_values().await;
    assert_eq!(grew(&before, &after, "default/public-only", "allow"), 1.0);
    assert_eq!(grew(&before, &after, NO_POLICY, "deny"), 1.0);
    for result in ["allow", "deny"] {
        assert_eq!(
            decided(&after, "default/lockdown", result),
            0.0,
            "a policy for another workload decides nothing here"
        );
    }
    assert_eq!(app.requests().len(), 1, "only /public/x reached the app");
}
