//! Request bodies and retries: a body under `maxBodyBytes` is replayed byte for byte, one over it
//! streams once and is never retried; a POST goes again after a refused HTTP/2 stream, but after
//! a 503 only with `nonIdempotent: true`.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;

use super::{attempts, noise};
use crate::support::{
    client::{self, H2Conn, Reply},
    faulty::{Failing, FlakyUpstream, KEY, RefusingH2Upstream},
    proxy::Proxy,
};

/// One service on a [`FlakyUpstream`] that fails every request's first try: `/capped` with a
/// 1 KiB body cap, `/any` retrying any method, everything else retrying idempotent methods.
fn mesh(upstream: SocketAddr) -> String {
    format!(
        r#"
services:
  - name: store
    endpoints: [{{ address: "{upstream}" }}]
    routes:
      - name: capped
        matches: [ {{ path: {{ type: PathPrefix, value: /capped }} }} ]
        retry: {{ attempts: 3, retryOn: [5xx], maxBodyBytes: 1024 }}
      - name: any-method
        matches: [ {{ path: {{ type: PathPrefix, value: /any }} }} ]
        retry: {{ attempts: 3, retryOn: [5xx], nonIdempotent: true }}
      - name: main
        retry: {{ attempts: 3, retryOn: [5xx] }}
"#
    )
}

async fn fails_each_first_try() -> FlakyUpstream {
    FlakyUpstream::builder("store")
        .failing(Failing::FirstTryOfEvery(1))
        .start()
        .await
}

fn with_body(method: Method, path: &str, key: u64, body: &Bytes) -> http::Request<Full<Bytes>> {
    client::request(method, "store", path)
        .header(KEY, key)
        .body(Full::new(body.clone()))
        .expect("valid request")
}

/// The upstream saw `key` `times` times, each time as `method` with exactly `body`.
fn assert_bodies(store: &FlakyUpstream, key: u64, times: usize, method: &Method, body: &Bytes) {
    let seen = store.arrivals_of(key);
    assert_eq!(seen.len(), times, "arrivals of request {key}");
    for (n, a) in seen.iter().enumerate() {
        assert_eq!(a.method, *method, "request {key}, attempt {}", n + 1);
        assert!(
            a.body == *body,
            "request {key}, attempt {}: {} bytes arrived, {} sent, or they differ",
            n + 1,
            a.body.len(),
            body.len()
        );
    }
}

fn assert_upstream_failure(r: &Reply) {
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    assert_eq!(
        r.served_by(),
        Some("store"),
        "the upstream's own 503: {r:?}"
    );
    assert_eq!(r.reason(), None, "{r:?}");
    assert_eq!(attempts(r), None, "not retried: {r:?}");
}

#[tokio::test]
async fn put_under_the_cap_is_retried_with_the_identical_body() {
    let store = fails_each_first_try().await;
    let proxy = Proxy::start(&mesh(store.addr())).await;
    let body = noise(10 * 1024, 1);

    let r = client::send_h1(proxy.outbound, with_body(Method::PUT, "/put", 1, &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(attempts(&r), Some(2), "{r:?}");
    assert!(r.body == body, "the 200 echoes the body");
    assert_bodies(&store, 1, 2, &Method::PUT, &body);

    // The same over h2c, where the body arrives as DATA frames.
    let h2 = H2Conn::connect(proxy.outbound).await;
    let r = h2.send(with_body(Method::PUT, "/put", 2, &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(attempts(&r), Some(2), "{r:?}");
    assert_bodies(&store, 2, 2, &Method::PUT, &body);
}

#[tokio::test]
async fn put_over_the_cap_reaches_the_upstream_once() {
    let store = fails_each_first_try().await;
    let proxy = Proxy::start(&mesh(store.addr())).await;
    let body = noise(8 * 1024, 2);

    let r = client::send_h1(
        proxy.outbound,
        with_body(Method::PUT, "/capped/put", 1, &body),
    )
    .await;
    assert_upstream_failure(&r);
    assert_bodies(&store, 1, 1, &Method::PUT, &body);

    // Under the cap on the same route it is retried: the cap, not the route, decided.
    let small = noise(512, 3);
    let r = client::send_h1(
        proxy.outbound,
        with_body(Method::PUT, "/capped/put", 2, &small),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(attempts(&r), Some(2), "{r:?}");
    assert_bodies(&store, 2, 2, &Method::PUT, &small);
}

#[tokio::test]
async fn post_is_not_retried_after_a_503_unless_non_idempotent_is_set() {
    let store = fails_each_first_try().await;
    let proxy = Proxy::start(&mesh(store.addr())).await;
    let body = noise(2 * 1024, 4);

    // The upstream answered: it may have acted on the POST, so it is not sent twice.
    let r = client::send_h1(proxy.outbound, with_body(Method::POST, "/post", 1, &body)).await;
    assert_upstream_failure(&r);
    assert_bodies(&store, 1, 1, &Method::POST, &body);

    // `nonIdempotent: true` makes the same POST retriable on 5xx.
    let r = client::send_h1(
        proxy.outbound,
        with_body(Method::POST, "/any/post", 2, &body),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(attempts(&r), Some(2), "{r:?}");
    assert!(r.body == body, "the 200 echoes the body");
    assert_bodies(&store, 2, 2, &Method::POST, &body);
}

#[tokio::test]
async fn post_is_retried_on_a_refused_stream_with_the_identical_body() {
    let upstream = RefusingH2Upstream::start("h2-store", 1).await;
    let mesh = format!(
        r#"
services:
  - name: store
    protocol: http2
    endpoints: [{{ address: "{}" }}]
    routes:
      - name: main
        retry: {{ attempts: 3, retryOn: [refused-stream] }}
"#,
        upstream.addr()
    );
    let proxy = Proxy::start(&mesh).await;
    let body = noise(10 * 1024, 5);

    // A POST is not idempotent, but a refused stream was provably not processed.
    let r = client::send_h1(proxy.outbound, client::post("store", "/post", body.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.served_by(), Some("h2-store"), "{r:?}");
    assert_eq!(attempts(&r), Some(2), "{r:?}");
    assert!(r.body == body, "the 200 echoes the body");
    assert_eq!(upstream.refused(), 1);
    assert_eq!(upstream.streams(), 2, "one refused stream, one served");
    let served = upstream.served();
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].0, Method::POST);
    assert!(
        served[0].1 == body,
        "the replayed body is the one sent: {} bytes arrived, {} sent",
        served[0].1.len(),
        body.len()
    );

    let m = proxy.metric_values().await;
    assert_eq!(
        m.sum(
            "skiff_retry_attempts_total",
            &[
                ("service", "store"),
                ("reason", "refused-stream"),
                ("outcome", "success")
            ]
        ),
        1.0
    );
}
