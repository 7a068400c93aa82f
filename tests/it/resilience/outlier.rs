//! Outlier detection: an endpoint failing in a row is ejected as soon as the count is reached,
//! is re-admitted once its ejection time passed and it answers again, and stays out across an
//! unrelated config push; `maxEjectionPercent` caps ejections; with nothing left to try the
//! proxy fails fast with 503 `no-healthy-endpoints`.

use std::{net::SocketAddr, time::Duration};

use http::StatusCode;
use serde_json::Value;

use super::load;
use crate::{
    errors::assert_made_by_proxy,
    support::{
        STEP,
        client::{self, H1Conn},
        eventually,
        faulty::{Arrival, FlakyUpstream},
        proxy::Proxy,
        within,
    },
};

/// `/config_dump`'s entry for the endpoint at `addr` of service `service`.
fn endpoint(dump: &Value, service: &str, addr: SocketAddr) -> Value {
    let svc = dump["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == service))
        .unwrap_or_else(|| panic!("service {service} in /config_dump: {dump}"));
    svc["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["address"] == addr.to_string()))
        .unwrap_or_else(|| panic!("endpoint {addr} of {service} in /config_dump: {svc}"))
        .clone()
}

fn is_ejected(ep: &Value) -> bool {
    match ep["ejected"].as_bool() {
        Some(b) => b,
        None => panic!("endpoint without a boolean `ejected`: {ep}"),
    }
}

/// RFC 3339 in UTC, as `/config_dump` renders `ejectedUntil`: `2025-01-02T03:04:05.678Z`.
fn assert_rfc3339_utc(s: &str) {
    let b = s.as_bytes();
    let ok = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && (s.ends_with('Z') || s.ends_with("+00:00"))
        && [0..4, 5..7, 8..10, 11..13, 14..16, 17..19]
            .iter()
            .all(|r| b[r.clone()].iter().all(u8::is_ascii_digit));
    assert!(ok, "ejectedUntil is RFC 3339 UTC: {s:?}");
}

async fn ejected_gauge(proxy: &Proxy, service: &str) -> f64 {
    proxy
        .metric_values()
        .await
        .sum("skiff_outlier_ejected_endpoints", &[("service", service)])
}

/// Round robin: P2C steers away from an endpoint that failed (a failure counts as a slow
/// sample), so how soon a failing endpoint collects its errors in a row would depend on the
/// latencies of a loaded machine; ejection itself does not depend on the balancer.
fn mesh(endpoints: &[SocketAddr], outlier: &str, extra_services: &str) -> String {
    let eps: String = endpoints
        .iter()
        .map(|a| format!("      - address: \"{a}\"\n"))
        .collect();
    format!(
        "services:\n  - name: web\n    loadBalancer: round-robin\n    endpoints:\n{eps}    outlierDetection: {outlier}\n{extra_services}"
    )
}

const OUTLIER: &str =
    "{ consecutiveErrors: 3, baseEjectionTime: 2s, interval: 1s, maxEjectionPercent: 50 }";

/// Sends one request at a time until `bad` has failed 3 in a row (no retry: each failure is its
/// own), then waits for `/config_dump` to show it ejected: as soon as the count is reached, so
/// well within any ejection time.
async fn fail_until_ejected(proxy: &Proxy, bad: &FlakyUpstream) {
    let mut conn = H1Conn::connect(proxy.outbound).await;
    let mut sent = 0;
    while bad.count() < 3 {
        assert!(sent < 300, "the bad endpoint got 3 of {sent} requests");
        let r = conn
            .send(client::get("web", &format!("/warm/{sent}")))
            .await;
        assert!(r.served_by().is_some(), "{r:?}");
        sent += 1;
    }
    eventually(
        "the bad endpoint is ejected",
        Duration::from_secs(1),
        || async { is_ejected(&endpoint(&proxy.config_dump().await, "web", bad.addr())) },
    )
    .await;
}

/// Two healthy upstreams and one answering 500 to everything (until switched).
async fn two_good_one_failing() -> (FlakyUpstream, FlakyUpstream, FlakyUpstream) {
    let good1 = FlakyUpstream::builder("good-1").start().await;
    let good2 = FlakyUpstream::builder("good-2").start().await;
    let bad = FlakyUpstream::builder("bad")
        .fail_status(StatusCode::INTERNAL_SERVER_ERROR)
        .always_fail()
        .start()
        .await;
    (good1, good2, bad)
}

#[tokio::test]
async fn failing_endpoint_is_ejected_then_readmitted_once_it_recovers() {
    let (good1, good2, bad) = two_good_one_failing().await;
    let addrs = [good1.addr(), good2.addr(), bad.addr()];
    let proxy = Proxy::start(&mesh(&addrs, OUTLIER, "")).await;

    fail_until_ejected(&proxy, &bad).await;
    let before = endpoint(&proxy.config_dump().await, "web", bad.addr());
    let until = before["ejectedUntil"]
        .as_str()
        .unwrap_or_else(|| panic!("ejectedUntil set while ejected: {before}"))
        .to_owned();
    assert_rfc3339_utc(&until);
    assert!(before["ejections"].as_u64() >= Some(1), "{before}");
    for good in [good1.addr(), good2.addr()] {
        let ep = endpoint(&proxy.config_dump().await, "web", good);
        assert!(!is_ejected(&ep), "{ep}");
        assert!(ep["ejectedUntil"].is_null(), "{ep}");
    }
    assert_eq!(ejected_gauge(&proxy, "web").await, 1.0);
    assert!(
        proxy
            .metric_values()
            .await
            .sum("skiff_outlier_ejections_total", &[("service", "web")])
            >= 1.0
    );

    // The next 300 go to the healthy two. A probe may reach the bad one if the ejection expires
    // meanwhile (it fails, and the endpoint is out again for longer): 1% slack covers that.
    const NEXT: usize = 300;
    let counts_before = [good1.count(), good2.count(), bad.count()];
    let replies = load(proxy.outbound, NEXT, 4, |i| {
        client::get("web", &format!("/next/{i}"))
    })
    .await;
    let healthy = replies
        .iter()
        .filter(|r| {
            r.status == StatusCode::OK && matches!(r.served_by(), Some("good-1" | "good-2"))
        })
        .count();
    // The same seen from the upstreams: what each received during those 300.
    let during: Vec<Arrival> = [&good1, &good2, &bad]
        .into_iter()
        .zip(counts_before)
        .flat_map(|(u, before)| u.arrivals().split_off(before))
        .collect();
    assert_eq!(during.len(), NEXT, "each request arrived once (no retry)");
    let at_bad = during.iter().filter(|a| &*a.served_by == "bad").count();
    assert!(
        healthy * 100 >= NEXT * 99 && at_bad * 100 <= NEXT,
        "{healthy} of {NEXT} served by the healthy endpoints, {at_bad} reached the bad one"
    );

    // It recovers. Once the ejection time has passed a request probes it, and it is back.
    bad.set_failing(false);
    eventually(
        "the recovered endpoint serves again and is no longer ejected",
        STEP,
        || async {
            let r = client::send_h1(proxy.outbound, client::get("web", "/probe")).await;
            assert!(r.served_by().is_some(), "{r:?}");
            let served = bad.arrivals().iter().any(|a| a.status == StatusCode::OK);
            served && !is_ejected(&endpoint(&proxy.config_dump().await, "web", bad.addr()))
        },
    )
    .await;
    let back = endpoint(&proxy.config_dump().await, "web", bad.addr());
    assert!(back["ejectedUntil"].is_null(), "{back}");
    assert_eq!(ejected_gauge(&proxy, "web").await, 0.0);
}

#[tokio::test]
async fn ejection_survives_an_unrelated_config_push() {
    let (good1, good2, bad) = two_good_one_failing().await;
    let addrs = [good1.addr(), good2.addr(), bad.addr()];
    // A 30 s ejection: nothing here may depend on how fast this box reloads.
    let outlier =
        "{ consecutiveErrors: 3, baseEjectionTime: 30s, interval: 1s, maxEjectionPercent: 50 }";
    let proxy = Proxy::start(&mesh(&addrs, outlier, "")).await;
    fail_until_ejected(&proxy, &bad).await;
    let before = endpoint(&proxy.config_dump().await, "web", bad.addr());

    let other = FlakyUpstream::builder("other").start().await;
    let unrelated = format!(
        "  - name: unrelated\n    endpoints: [{{ address: \"{}\" }}]\n",
        other.addr()
    );
    proxy.reload(&mesh(&addrs, outlier, &unrelated)).await;

    let after = endpoint(&proxy.config_dump().await, "web", bad.addr());
    assert!(is_ejected(&after), "still ejected after the push: {after}");
    assert_eq!(
        after["ejectedUntil"], before["ejectedUntil"],
        "the same ejection: {after}"
    );
    assert_eq!(after["ejections"], before["ejections"], "{after}");
    assert_eq!(ejected_gauge(&proxy, "web").await, 1.0);
    let bad_before = bad.count();
    let replies = load(proxy.outbound, 100, 4, |i| {
        client::get("web", &format!("/after-push/{i}"))
    })
    .await;
    for r in &replies {
        assert_eq!(
            r.status,
            StatusCode::OK,
            "only the healthy two answer: {r:?}"
        );
    }
    assert_eq!(
        bad.count(),
        bad_before,
        "nothing reached the ejected endpoint"
    );
    // The pushed service works: the push did apply.
    let r = client::send_h1(proxy.outbound, client::get("unrelated", "/")).await;
    assert_eq!(r.served_by(), Some("other"), "{r:?}");
}

#[tokio::test]
async fn max_ejection_percent_caps_ejections_when_all_fail() {
    let mut sick = Vec::new();
    for name in ["sick-1", "sick-2", "sick-3"] {
        sick.push(
            FlakyUpstream::builder(name)
                .fail_status(StatusCode::INTERNAL_SERVER_ERROR)
                .always_fail()
                .start()
                .await,
        );
    }
    let addrs: Vec<SocketAddr> = sick.iter().map(FlakyUpstream::addr).collect();
    // A long ejection, so nothing is re-admitted while the test looks.
    let proxy = Proxy::start(&mesh(
        &addrs,
        "{ consecutiveErrors: 3, baseEjectionTime: 30s, interval: 1s, maxEjectionPercent: 50 }",
        "",
    ))
    .await;

    // 60 requests give every endpoint far more than 3 errors in a row.
    let mut conn = H1Conn::connect(proxy.outbound).await;
    for i in 0..60 {
        let r = conn.send(client::get("web", &format!("/{i}"))).await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{r:?}");
        assert!(
            r.served_by().is_some(),
            "an endpoint is always left to answer: {r:?}"
        );
    }
    assert!(
        sick.iter().all(|s| s.count() >= 3),
        "every endpoint failed at least 3 times"
    );
    let dump = proxy.config_dump().await;
    let ejected = addrs
        .iter()
        .filter(|a| is_ejected(&endpoint(&dump, "web", **a)))
        .count();
    assert_eq!(
        ejected, 1,
        "floor(3 x 50 / 100) = 1 may be ejected at once, and one is: {dump}"
    );
    assert_eq!(ejected_gauge(&proxy, "web").await, 1.0);
}

/// "At once" for a request that has nothing to wait for; generous for a loaded 2-core box, and
/// under the 1 s backoff a retry of it would add.
const FAST: Duration = Duration::from_secs(1);

#[tokio::test]
async fn no_endpoint_left_fails_fast_with_no_healthy_endpoints() {
    let only = FlakyUpstream::builder("only")
        .fail_status(StatusCode::INTERNAL_SERVER_ERROR)
        .always_fail()
        .start()
        .await;
    // 100%: a single endpoint may be ejected. The route's retry (never for a 500 here) would
    // show as a 1 s wait if "no endpoint" were treated as retriable.
    let route = "    routes:\n      - name: main\n        retry: { attempts: 3, retryOn: [connect-failure], backoff: { base: 1s, max: 1s } }\n";
    let mesh = format!(
        r#"
services:
  - name: lonely
    endpoints: [{{ address: "{}" }}]
    outlierDetection: {{ consecutiveErrors: 2, baseEjectionTime: 30s, maxEjectionPercent: 100 }}
{route}  - name: empty
{route}"#,
        only.addr()
    );
    let proxy = Proxy::start(&mesh).await;

    for _ in 0..2 {
        let r = client::send_h1(proxy.outbound, client::get("lonely", "/")).await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{r:?}");
        assert_eq!(r.served_by(), Some("only"), "{r:?}");
    }
    eventually("the only endpoint is ejected", STEP, || async {
        is_ejected(&endpoint(&proxy.config_dump().await, "lonely", only.addr()))
    })
    .await;

    for host in ["lonely", "empty"] {
        let started = tokio::time::Instant::now();
        let r = within(
            "a request with no endpoint to try",
            STEP,
            client::send_h1(proxy.outbound, client::get(host, "/")),
        )
        .await;
        let took = started.elapsed();
        assert_made_by_proxy(&r, StatusCode::SERVICE_UNAVAILABLE, "no-healthy-endpoints");
        assert!(took < FAST, "{host}: answered in {took:?}");
        assert_eq!(
            super::attempts(&r),
            None,
            "{host}: nothing was tried: {r:?}"
        );
    }
    assert_eq!(only.count(), 2, "the ejected endpoint got nothing more");
}
