//! An allow policy admits exactly the identity, methods and paths it names; every other
//! request to its target is refused once any allow policy exists.

use crate::authz::{NO_POLICY, READERS, Reviews, assert_unauthorized, get, grew};
use crate::support::client;
use http::StatusCode;

#[tokio::test]
async fn allow_by_identity_method_and_path_prefix() {
    let m = Reviews::start(READERS).await;
    let seen = m.app.requests().len();
    let before = m.server.metric_values().await;

    let r = get(&m.reader, "/reviews/1").await;
    assert_eq!(r.status, StatusCode::OK, "reader GET /reviews/1: {r:?}");
    assert_eq!(r.served_by(), Some("reviews-app"));

    let r = client::send_h1(
        m.reader.outbound,
        client::post("reviews", "/reviews/1", "5"),
    )
    .await;
    assert_unauthorized(&r, "reader POST /reviews/1 (method not allowed)");
    assert_unauthorized(
        &get(&m.reader, "/other").await,
        "reader GET /other (path not allowed)",
    );
    assert_unauthorized(
        &get(&m.reader, "/reviews").await,
        "reader GET /reviews (`/reviews/*` is below /reviews/ only)",
    );
    assert_unauthorized(
        &get(&m.writer, "/reviews/1").await,
        "writer GET /reviews/1 (identity not allowed)",
    );

    let after = m.server.metric_values().await;
    assert_eq!(
        grew(&before, &after, "default/reviews-readers", "allow"),
        1.0,
        "the allowed request is counted under its policy"
    );
    assert_eq!(
        grew(&before, &after, NO_POLICY, "deny"),
        4.0,
        "a request no allow policy matched is denied by no policy"
    );
    assert_eq!(
        grew(&before, &after, "default/reviews-readers", "deny"),
        0.0,
        "an allow policy never denies by name"
    );
    assert_eq!(
        m.app.requests().len() - seen,
        1,
        "only the allowed request reached the app"
    );
}
