//! curl through the outbound listener, as a user would try it: HTTP/1.1 and h2c prior knowledge.

use crate::support::{client::curl, proxy::Proxy, upstream::HttpUpstream};

fn mesh(upstream: &HttpUpstream) -> String {
    format!(
        "services:\n  - name: reviews\n    endpoints: [{{ address: \"{}\" }}]\n",
        upstream.addr()
    )
}

#[tokio::test]
async fn curl_http1_gets_the_upstream_body() {
    let web = HttpUpstream::start("reviews-1").await;
    let proxy = Proxy::start(&mesh(&web)).await;
    let url = format!("http://{}/reviews/1", proxy.outbound);

    let out = curl(vec!["-H".into(), "Host: reviews".into(), url.clone()]).await;
    assert_eq!(String::from_utf8_lossy(&out), "reviews-1 GET /reviews/1");

    let out = curl(vec![
        "-H".into(),
        "Host: reviews".into(),
        "--data-binary".into(),
        "posted".into(),
        url,
    ])
    .await;
    assert_eq!(String::from_utf8_lossy(&out), "posted");
    assert!(
        web.requests()
            .iter()
            .all(|s| s.version == http::Version::HTTP_11)
    );
}

#[tokio::test]
async fn curl_http2_prior_knowledge_gets_the_upstream_body() {
    let web = HttpUpstream::start("reviews-1").await;
    let proxy = Proxy::start(&mesh(&web)).await;
    let url = format!("http://{}/reviews/2", proxy.outbound);

    let out = curl(vec![
        "--http2-prior-knowledge".into(),
        "-H".into(),
        "Host: reviews".into(),
        "-w".into(),
        "\n%{http_version}".into(),
        url,
    ])
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out),
        "reviews-1 GET /reviews/2\n2",
        "body, then the HTTP version curl used"
    );
    assert_eq!(
        web.requests()[0].version,
        http::Version::HTTP_2,
        "auto protocol: h2 upstream for an h2 client"
    );
}
