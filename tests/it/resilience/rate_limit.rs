//! The inbound rate limit of a workload (`workloads[].rateLimit`): a token bucket for the whole
//! workload; what it refuses gets 429 `rate-limited` with `retry-after` in whole seconds.

use std::time::Duration;

use http::StatusCode;

use crate::{
    errors::assert_made_by_proxy,
    support::{
        client::{self, H1Conn, Reply},
        proxy::{Proxy, ProxyBuilder},
        upstream::HttpUpstream,
    },
};

const RATE: f64 = 50.0;
const BURST: usize = 10;

async fn sidecar(app: &HttpUpstream) -> Proxy {
    // `inbound.listen` is unused: `--inbound-addr` (127.0.0.1:0) wins over it.
    let mesh = format!(
        r#"
workloads:
  - name: api
    namespace: default
    inbound: {{ listen: "127.0.0.1:1", app: "{}" }}
    rateLimit: {{ requestsPerSecond: 50, burst: 10 }}
"#,
        app.addr()
    );
    ProxyBuilder::new(&mesh)
        .workload("api", "default")
        .start()
        .await
}

fn assert_rate_limited(r: &Reply) {
    assert_made_by_proxy(r, StatusCode::TOO_MANY_REQUESTS, "rate-limited");
    let after = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without retry-after: {r:?}"));
    let secs: u64 = after
        .parse()
        .unwrap_or_else(|_| panic!("retry-after is whole seconds: {after:?}"));
    assert!(secs >= 1, "retry-after >= 1: {r:?}");
}

/// The rejections counted, whatever the workload label's exact value; checks the label is there.
async fn rejected_metric(proxy: &Proxy) -> f64 {
    let m = proxy.metric_values().await;
    let samples: Vec<_> = m.matching("skiff_rate_limit_rejected_total", &[]).collect();
    assert!(
        samples.iter().all(|s| s.labels.contains_key("workload")),
        "{samples:?}"
    );
    samples.iter().map(|s| s.value).sum()
}

#[tokio::test]
async fn a_burst_of_40_admits_about_the_bucket_and_429s_the_rest() {
    const SENT: usize = 40;
    let app = HttpUpstream::start("api-app").await;
    let proxy = sidecar(&app).await;
    // Connections first: only the requests should race the bucket.
    let mut conns = Vec::new();
    for _ in 0..SENT {
        conns.push(H1Conn::connect(proxy.inbound).await);
    }

    let started = tokio::time::Instant::now();
    let replies: Vec<Reply> = futures_util::future::join_all(
        conns
            .iter_mut()
            .enumerate()
            .map(|(i, c)| async move { c.send(client::get("api", &format!("/{i}"))).await }),
    )
    .await;
    let took = started.elapsed().as_secs_f64();

    let admitted = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    for r in replies.iter().filter(|r| r.status != StatusCode::OK) {
        assert_rate_limited(r);
    }
    // The bucket starts full (10); while the burst is in flight it refills at 50/s, plus one
    // token of rounding.
    let most = BURST + (RATE * took).ceil() as usize + 1;
    assert!(
        (BURST..=most).contains(&admitted),
        "{admitted} of {SENT} admitted in {took:.3} s; expected {BURST}..={most}"
    );
    assert_eq!(
        app.requests().len(),
        admitted,
        "refused ones never reach the app"
    );
    assert_eq!(rejected_metric(&proxy).await, (SENT - admitted) as f64);
}

#[tokio::test]
async fn steady_load_is_admitted_at_about_the_configured_rate() {
    const WORKERS: usize = 8;
    /// Each worker sends every 50 ms: 160/s offered, about three times the limit.
    const EVERY: Duration = Duration::from_millis(50);
    const FOR: Duration = Duration::from_secs(2);
    let app = HttpUpstream::start("api-app").await;
    let proxy = sidecar(&app).await;

    let started = tokio::time::Instant::now();
    let deadline = started + FOR;
    let counts = futures_util::future::join_all((0..WORKERS).map(|w| {
        let inbound = proxy.inbound;
        async move {
            let mut conn = H1Conn::connect(inbound).await;
            let mut tick = tokio::time::interval(EVERY);
            let (mut ok, mut limited) = (0usize, 0usize);
            while tokio::time::Instant::now() < deadline {
                tick.tick().await;
                let r = conn.send(client::get("api", &format!("/w{w}"))).await;
                if r.status == StatusCode::OK {
                    ok += 1;
                } else {
                    assert_rate_limited(&r);
                    limited += 1;
                }
            }
            (ok, limited)
        }
    }))
    .await;
    let took = started.elapsed().as_secs_f64();
    let admitted: usize = counts.iter().map(|c| c.0).sum();
    let offered = admitted + counts.iter().map(|c| c.1).sum::<usize>();

    assert!(
        offered as f64 >= 1.5 * RATE * took,
        "precondition: offered {offered} in {took:.2} s is not well over the limit"
    );
    // Admitted = 50/s x the time, plus the full bucket at the start; +-30%.
    let expected = RATE * took;
    let (low, high) = (0.7 * expected, 1.3 * expected + BURST as f64);
    assert!(
        (low..=high).contains(&(admitted as f64)),
        "{admitted} admitted of {offered} in {took:.2} s ({:.1}/s); expected {low:.0}..={high:.0}",
        admitted as f64 / took
    );
    assert_eq!(rejected_metric(&proxy).await, (offered - admitted) as f64);
}
