//! Load balancing across a service's endpoints: P2C over peak-EWMA latency, and round robin.

use std::{collections::HashMap, time::Duration};

use http::StatusCode;

use crate::support::{
    client::{self, H1Conn},
    proxy::Proxy,
    upstream::HttpUpstream,
};

#[tokio::test]
async fn p2c_ewma_prefers_the_fast_endpoint() {
    const CONCURRENCY: usize = 8;
    const PER_WORKER: usize = 38;
    let fast = HttpUpstream::start("fast").await;
    let slow = HttpUpstream::builder("slow")
        .delay(Duration::from_millis(100))
        .start()
        .await;
    let mesh = format!(
        r#"
services:
  - name: web
    loadBalancer: p2c-ewma
    endpoints:
      - address: "{}"
      - address: "{}"
"#,
        fast.addr(),
        slow.addr()
    );
    let proxy = Proxy::start(&mesh).await;

    let workers = (0..CONCURRENCY).map(|w| {
        let outbound = proxy.outbound;
        async move {
            let mut conn = H1Conn::connect(outbound).await;
            let mut counts: HashMap<String, usize> = HashMap::new();
            for i in 0..PER_WORKER {
                let r = conn.send(client::get("web", &format!("/w{w}/{i}"))).await;
                assert_eq!(r.status, StatusCode::OK, "{r:?}");
                *counts
                    .entry(r.served_by().unwrap_or("?").to_owned())
                    .or_default() += 1;
            }
            counts
        }
    });
    let mut counts: HashMap<String, usize> = HashMap::new();
    for part in futures_util::future::join_all(workers).await {
        for (k, v) in part {
            *counts.entry(k).or_default() += v;
        }
    }
    let total = CONCURRENCY * PER_WORKER;
    let to_fast = counts.get("fast").copied().unwrap_or(0);
    assert_eq!(
        to_fast + counts.get("slow").copied().unwrap_or(0),
        total,
        "{counts:?}"
    );
    let share = to_fast as f64 / total as f64;
    assert!(
        share >= 0.75,
        "the endpoint 100 ms faster serves >= 75%, got {share:.3} ({counts:?})"
    );
}

#[tokio::test]
async fn round_robin_alternates() {
    let a = HttpUpstream::start("a").await;
    let b = HttpUpstream::start("b").await;
    let mesh = format!(
        r#"
services:
  - name: web
    loadBalancer: round-robin
    endpoints:
      - address: "{}"
      - address: "{}"
"#,
        a.addr(),
        b.addr()
    );
    let proxy = Proxy::start(&mesh).await;

    let mut conn = H1Conn::connect(proxy.outbound).await;
    let mut order = Vec::new();
    for i in 0..12 {
        let r = conn.send(client::get("web", &format!("/{i}"))).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        order.push(r.served_by().unwrap_or("?").to_owned());
    }
    assert!(
        order.windows(2).all(|w| w[0] != w[1]),
        "round robin alternates: {order:?}"
    );
    assert_eq!(order.iter().filter(|s| *s == "a").count(), 6, "{order:?}");
    assert_eq!(order.iter().filter(|s| *s == "b").count(), 6, "{order:?}");
}
