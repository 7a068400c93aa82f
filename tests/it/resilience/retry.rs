//! Retries on 5xx: a flaky upstream behind `retry` gives every client a success, each retried
//! response says so in `x-skiff-attempts`; without `retry` its failures show; a retry budget
//! caps the extra load on an upstream that fails everything.

use std::{collections::HashMap, net::SocketAddr};

use http::StatusCode;

use super::{attempts, load};
use crate::support::{
    client::{self, Reply},
    faulty::{Arrival, Failing, FlakyUpstream, KEY},
    proxy::Proxy,
};

/// Requests in the high-volume tests: a multiple of 3, so "1 in 3" is exact.
const N: usize = 1200;
/// Concurrent clients (half HTTP/1.1, half h2c).
const WORKERS: usize = 12;

/// Service `flaky` on `upstream`; with `retry`, one route (matching everything) carrying it.
fn mesh(upstream: SocketAddr, retry: Option<&str>) -> String {
    let mut mesh =
        format!("services:\n  - name: flaky\n    endpoints: [{{ address: \"{upstream}\" }}]\n");
    if let Some(retry) = retry {
        mesh.push_str(&format!(
            "    routes:\n      - name: main\n        retry: {retry}\n"
        ));
    }
    mesh
}

fn keyed(i: usize) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = client::get("flaky", &format!("/{i}"));
    req.headers_mut().insert(KEY, client::value(&i.to_string()));
    req
}

#[tokio::test]
async fn flaky_upstream_behind_retry_succeeds_every_time_and_marks_the_retried() {
    // Which requests fail is keyed on the request, not on the upstream's arrival counter: with
    // 12 clients interleaving, a retry lands on any arrival number, so "every 3rd arrival fails"
    // would sometimes fail a retry too (even three times in a row, and then the client sees a
    // 503). Keyed, request i fails exactly once iff i % 3 == 0, so every count below is exact.
    let flaky = FlakyUpstream::builder("flaky")
        .failing(Failing::FirstTryOfEvery(3))
        .start()
        .await;
    let proxy = Proxy::start(&mesh(flaky.addr(), Some("{ attempts: 3, retryOn: [5xx] }"))).await;

    let replies = load(proxy.outbound, N, WORKERS, keyed).await;

    let mut retried = 0;
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.status, StatusCode::OK, "request {i}: {r:?}");
        assert_eq!(r.served_by(), Some("flaky"), "request {i}: {r:?}");
        assert_eq!(r.reason(), None, "request {i}: {r:?}");
        let expected = i.is_multiple_of(3).then_some(2);
        assert_eq!(
            attempts(r),
            expected,
            "request {i}: x-skiff-attempts on exactly the retried ones: {r:?}"
        );
        retried += usize::from(expected.is_some());
    }
    assert_eq!(retried, N / 3);
    assert_eq!(
        flaky.failures(),
        N / 3,
        "the upstream failed 1 request in 3"
    );
    assert_eq!(
        flaky.count(),
        N + N / 3,
        "one extra arrival per failure, none more"
    );
    // Each failing request, seen from the upstream: a 503, then its retry answered 200, both
    // in the client's protocol (`protocol: auto`: h2c clients' requests go upstream as h2).
    let mut by_key: HashMap<u64, Vec<Arrival>> = HashMap::new();
    for a in flaky.arrivals() {
        let key = a
            .key
            .unwrap_or_else(|| panic!("every request has a key: {a:?}"));
        by_key.entry(key).or_default().push(a);
    }
    let mut over_h2 = 0;
    for k in (0..N as u64).step_by(3) {
        let seen = &by_key[&k];
        let statuses: Vec<StatusCode> = seen.iter().map(|a| a.status).collect();
        assert_eq!(
            statuses,
            [StatusCode::SERVICE_UNAVAILABLE, StatusCode::OK],
            "request {k}: failed once, then its retry passed"
        );
        assert_eq!(seen[0].version, seen[1].version, "request {k}");
        over_h2 += usize::from(seen[0].version == http::Version::HTTP_2);
    }
    assert!(
        over_h2 > 0 && over_h2 < N / 3,
        "both protocols had retries: {over_h2} of {} over h2",
        N / 3
    );

    let m = proxy.metric_values().await;
    let labels = [("service", "flaky"), ("reason", "5xx")];
    assert_eq!(
        m.sum("skiff_retry_attempts_total", &labels),
        (N / 3) as f64,
        "one retry attempt counted per retried response"
    );
    assert_eq!(
        m.sum(
            "skiff_retry_attempts_total",
            &[("service", "flaky"), ("outcome", "success")]
        ),
        (N / 3) as f64,
        "every retry succeeded"
    );
}

#[tokio::test]
async fn flaky_upstream_without_retry_shows_its_failures() {
    // No `retry`: each request arrives once, so however the 12 clients interleave, exactly the
    // upstream's 3rd, 6th, ... arrivals fail: TOTAL / 3 of the replies are its 503.
    const TOTAL: usize = 999;
    let flaky = FlakyUpstream::builder("flaky")
        .failing(Failing::EveryNth(3))
        .start()
        .await;
    let proxy = Proxy::start(&mesh(flaky.addr(), None)).await;

    let replies = load(proxy.outbound, TOTAL, WORKERS, |i| {
        client::get("flaky", &format!("/{i}"))
    })
    .await;

    let failed: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status != StatusCode::OK)
        .collect();
    assert_eq!(failed.len(), TOTAL / 3, "1 in 3 failed");
    for r in &replies {
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::SERVICE_UNAVAILABLE,
            "{r:?}"
        );
        assert_eq!(
            r.served_by(),
            Some("flaky"),
            "the upstream's own answer: {r:?}"
        );
        assert_eq!(r.reason(), None, "not made by the proxy: {r:?}");
        assert_eq!(attempts(r), None, "nothing retried: {r:?}");
    }
    assert_eq!(flaky.count(), TOTAL, "each request arrived once");
    assert_eq!(
        proxy
            .metric_values()
            .await
            .sum("skiff_retry_attempts_total", &[("service", "flaky")]),
        0.0
    );
}

#[tokio::test]
async fn retry_budget_caps_retries_against_an_upstream_failing_everything() {
    const TOTAL: usize = 500;
    const WORKERS: usize = 8;
    const RATIO: f64 = 0.2;
    const MIN_PER_SECOND: u32 = 1;
    // Budget checks race concurrent requests (each may see the budget before another's retry
    // is counted): allow one extra retry per client, twice.
    const TOLERANCE: f64 = 2.0 * WORKERS as f64;
    let down = FlakyUpstream::builder("down").always_fail().start().await;
    let mesh = format!(
        r#"
services:
  - name: down
    endpoints: [{{ address: "{}" }}]
    retryBudget: {{ ratio: {RATIO}, minRetriesPerSecond: {MIN_PER_SECOND} }}
    routes:
      - name: main
        retry: {{ attempts: 3, retryOn: [5xx], backoff: {{ base: 1ms, max: 5ms }} }}
"#,
        down.addr()
    );
    let proxy = Proxy::start(&mesh).await;

    let started = tokio::time::Instant::now();
    let replies = load(proxy.outbound, TOTAL, WORKERS, |i| {
        client::get("down", &format!("/{i}"))
    })
    .await;
    let elapsed = started.elapsed();

    for r in &replies {
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
        assert_eq!(
            r.served_by(),
            Some("down"),
            "the upstream's own 503 comes back: {r:?}"
        );
        assert_eq!(r.reason(), None, "{r:?}");
    }
    let seen = down.count();
    let retries = seen - TOTAL;
    // The budget is retries <= ratio x requests + 10 s x minRetriesPerSecond per sliding 10 s
    // window; a run longer than one window may spend the fixed part once per window begun.
    let windows = (elapsed.as_secs_f64() / 10.0).ceil().max(1.0);
    let bound = TOTAL as f64 * RATIO + 10.0 * f64::from(MIN_PER_SECOND) * windows + TOLERANCE;
    assert!(
        retries > 0,
        "the budget allows some retries: upstream saw {seen} for {TOTAL} requests"
    );
    assert!(
        retries as f64 <= bound,
        "{retries} retries for {TOTAL} requests in {elapsed:?}, budget bound {bound}"
    );
    let made: u32 = replies.iter().map(|r| attempts(r).unwrap_or(1)).sum();
    assert_eq!(
        made as usize, seen,
        "x-skiff-attempts accounts for every attempt the upstream saw"
    );

    let m = proxy.metric_values().await;
    assert!(
        m.sum("skiff_retry_budget_exhausted_total", &[("service", "down")]) > 0.0,
        "budget exhaustion is counted"
    );
    assert_eq!(
        m.sum(
            "skiff_retry_attempts_total",
            &[("service", "down"), ("reason", "5xx")]
        ),
        retries as f64,
        "every retry the upstream saw is counted"
    );
}
