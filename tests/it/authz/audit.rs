//! An audit policy decides, logs and counts what it would do, and never enforces: a request
//! it would deny goes through, and one it would not is counted as an audit allow.

use crate::authz::{NO_POLICY, READERS, Reviews, assert_unauthorized, get, grew, secret};
use crate::support::{STEP, eventually};
use http::StatusCode;

#[tokio::test]
async fn audit_mode_counts_and_logs_but_never_enforces() {
    let m = Reviews::start(&format!("{READERS}{}", secret("audit"))).await;
    let before = m.server.metric_values().await;

    let r = get(&m.reader, "/reviews/secret").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the audit deny is not enforced: {r:?}"
    );
    assert_eq!(r.served_by(), Some("reviews-app"));
    let r = get(&m.reader, "/reviews/1").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    // Nor does an audit policy relax the enforced ones.
    assert_unauthorized(&get(&m.writer, "/reviews/1").await, "writer GET /reviews/1");

    let after = m.server.metric_values().await;
    assert_eq!(
        grew(&before, &after, "default/reviews-secret", "audit-deny"),
        1.0,
        "what the audit policy would have denied"
    );
    assert_eq!(
        grew(&before, &after, NO_POLICY, "audit-allow"),
        2.0,
        "what no audit policy would have denied (reader's /reviews/1, writer's /reviews/1)"
    );
    assert_eq!(
        grew(&before, &after, "default/reviews-secret", "deny"),
        0.0,
        "the audit policy never counts as enforced"
    );
    assert_eq!(
        grew(&before, &after, "default/reviews-readers", "allow"),
        2.0,
        "the enforced allow decided both of reader's requests"
    );
    assert_eq!(
        grew(&before, &after, NO_POLICY, "deny"),
        1.0,
        "writer's denial"
    );

    eventually("the server logs the audit denial", STEP, || async {
        m.server.stderr().lines().any(|l| {
            l.contains("authorization audit: would deny")
                && l.contains("default/reviews-secret")
                && l.contains("/reviews/secret")
        })
    })
    .await;
}
