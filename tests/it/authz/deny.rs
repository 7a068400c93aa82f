//! A deny policy overrides an allow policy that also matches, on the normalized path, so
//! dot segments, doubled slashes and escaped letters do not get past it.

use crate::authz::{READERS, Reviews, assert_unauthorized, get, grew, secret};
use crate::support::client::RawConn;
use http::StatusCode;

#[tokio::test]
async fn deny_overrides_allow_and_path_tricks_do_not_pass() {
    let m = Reviews::start(&format!("{READERS}{}", secret("enforce"))).await;
    let before = m.server.metric_values().await;

    // `reader` may GET anything below /reviews/ by the allow policy, but not this.
    assert_unauthorized(
        &get(&m.reader, "/reviews/secret").await,
        "reader GET /reviews/secret",
    );
    let tricks = [
        "/reviews/x/../secret",
        "//reviews/secret",
        "/reviews/%73ecret",
    ];
    for path in tricks {
        // Raw bytes: the path crosses the client proxy exactly as written.
        let mut raw = RawConn::connect(m.reader.outbound).await;
        raw.write(
            format!("GET {path} HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        let r = raw.read_response().await;
        assert_eq!(r.status, 403, "reader GET {path}: {}", r.head);
        assert_eq!(
            r.reason(),
            Some("unauthorized"),
            "reader GET {path}: {}",
            r.head
        );
    }
    let r = get(&m.reader, "/reviews/1").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the allow still holds elsewhere: {r:?}"
    );

    let after = m.server.metric_values().await;
    assert_eq!(
        grew(&before, &after, "default/reviews-secret", "deny"),
        1.0 + tricks.len() as f64,
        "every denial is counted under the deny policy"
    );
    assert_eq!(
        grew(&before, &after, "default/reviews-readers", "allow"),
        1.0,
        "only /reviews/1 was allowed"
    );
    assert!(
        m.app
            .requests()
            .iter()
            .all(|s| !s.target.contains("secret") && !s.target.contains("%73")),
        "no secret request reached the app"
    );
}
