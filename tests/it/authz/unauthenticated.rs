//! A peer without a mesh certificate (plaintext, accepted under permissive mTLS) is
//! `unauthenticated`: refused under an allow-only policy that does not name it, admitted once
//! a policy does, the change applied live.

use crate::authz::{NO_POLICY, READERS, Reviews, assert_unauthorized, get, grew};
use crate::support::client;
use http::StatusCode;

const ANONYMOUS: &str = r#"  - name: anonymous-readers
    target: reviews
    from: [ unauthenticated ]
    to: [ { methods: [GET], paths: ["/reviews/*"] } ]
"#;

#[tokio::test]
async fn unauthenticated_is_denied_under_an_allow_only_policy_until_allowed() {
    let m = Reviews::start(READERS).await;
    // Plaintext straight to the server sidecar's inbound listener: no certificate.
    let plain = || client::send_h1(m.server.inbound, client::get("reviews", "/reviews/1"));
    let before = m.server.metric_values().await;
    assert_unauthorized(&plain().await, "plaintext GET /reviews/1");
    let after = m.server.metric_values().await;
    assert_eq!(grew(&before, &after, NO_POLICY, "deny"), 1.0);
    let peer = |m: &client::Metrics| {
        m.sum(
            "skiff_inbound_peer_requests_total",
            &[("peer_identity", "unauthenticated")],
        )
    };
    assert_eq!(
        peer(&after) - peer(&before),
        1.0,
        "counted as unauthenticated"
    );

    m.set_policies(
        &format!("{READERS}{ANONYMOUS}"),
        &["default/reviews-readers", "default/anonymous-readers"],
    )
    .await;
    let before = m.server.metric_values().await;
    let r = plain().await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "plaintext GET once allowed: {r:?}"
    );
    assert_eq!(r.served_by(), Some("reviews-app"));
    assert_unauthorized(
        &client::send_h1(m.server.inbound, client::get("reviews", "/other")).await,
        "plaintext GET /other (outside the new policy)",
    );
    // `unauthenticated` names no certificate holder: writer stays refused.
    assert_unauthorized(&get(&m.writer, "/reviews/1").await, "writer GET /reviews/1");
    assert_eq!(get(&m.reader, "/reviews/1").await.status, StatusCode::OK);

    let after = m.server.metric_values().await;
    assert_eq!(
        grew(&before, &after, "default/anonymous-readers", "allow"),
        1.0
    );
    assert_eq!(
        grew(&before, &after, "default/reviews-readers", "allow"),
        1.0
    );
    assert_eq!(grew(&before, &after, NO_POLICY, "deny"), 2.0);
}
