//! Per-try timeouts (`timeouts.backendRequest`) against an upstream that never answers: each try
//! is cut and retried, and the client gets 504 `timeout` once the tries or the request timeout
//! run out.

use std::time::Duration;

use http::StatusCode;

use super::attempts;
use crate::{
    errors::assert_made_by_proxy,
    support::{STEP, client, eventually, faulty::StallServer, proxy::Proxy},
};

fn mesh(stall: &StallServer, route: &str) -> String {
    format!(
        r#"
services:
  - name: stuck
    endpoints: [{{ address: "{}" }}]
    routes:
      - name: main
{route}
"#,
        stall.addr()
    )
}

#[tokio::test]
async fn per_try_timeouts_retry_until_the_request_times_out() {
    let stall = StallServer::start().await;
    let proxy = Proxy::start(&mesh(
        &stall,
        "        timeouts: { request: 1500ms, backendRequest: 200ms }\n        \
         retry: { attempts: 5, retryOn: [5xx], backoff: { base: 10ms, max: 20ms } }",
    ))
    .await;

    let started = tokio::time::Instant::now();
    let r = client::send_h1(proxy.outbound, client::get("stuck", "/")).await;
    let elapsed = started.elapsed();

    assert_made_by_proxy(&r, StatusCode::GATEWAY_TIMEOUT, "timeout");
    let made = attempts(&r).unwrap_or(1);
    assert!(
        (3..=5).contains(&made),
        "several tries, at most `attempts`: {made}"
    );
    // Each try reaches the upstream before its 200 ms run out; wait for the last one's count.
    eventually("the upstream saw every try", STEP, || async {
        stall.arrived() == made as usize
    })
    .await;
    // Five tries of 200 ms (plus up to 20 ms of backoff between them) end at ~1.0-1.1 s, before
    // the 1.5 s request timeout; allow 10% under for timer slack and a lot over for a loaded box.
    assert!(
        elapsed >= Duration::from_millis(900),
        "the tries were each given their 200 ms: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "bounded by the 1.5 s request timeout: {elapsed:?}"
    );
}

#[tokio::test]
async fn both_tries_timing_out_is_504_with_two_attempts() {
    let stall = StallServer::start().await;
    let proxy = Proxy::start(&mesh(
        &stall,
        "        timeouts: { backendRequest: 200ms }\n        \
         retry: { attempts: 2, retryOn: [5xx] }",
    ))
    .await;

    let r = client::send_h1(proxy.outbound, client::get("stuck", "/")).await;
    assert_made_by_proxy(&r, StatusCode::GATEWAY_TIMEOUT, "timeout");
    assert_eq!(attempts(&r), Some(2), "{r:?}");
    eventually("the upstream saw both tries", STEP, || async {
        stall.arrived() == 2
    })
    .await;
}
