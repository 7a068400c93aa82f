//! Route matching (path, method, headers, query parameters; first match wins) and weighted
//! backends.

use std::collections::HashMap;

use http::{Method, StatusCode};
use http_body_util::Full;

use crate::support::{
    client::{self, H1Conn},
    proxy::Proxy,
    upstream::HttpUpstream,
};

/// Sends `GET path` (with `headers`) for `Host: web` and returns who served it.
async fn served_by(
    conn: &mut H1Conn,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut req = client::request(method.clone(), "web", path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = conn
        .send(req.body(Full::default()).expect("valid request"))
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{method} {path} {headers:?}: {r:?}"
    );
    r.served_by()
        .unwrap_or_else(|| panic!("{method} {path}: no x-served-by"))
        .to_owned()
}

#[tokio::test]
async fn path_matches_exact_prefix_and_regex() {
    let default = HttpUpstream::start("default").await;
    let exact = HttpUpstream::start("exact").await;
    let prefix = HttpUpstream::start("prefix").await;
    let regex = HttpUpstream::start("regex").await;
    let mesh = format!(
        r#"
services:
  - name: web
    endpoints: [{{ address: "{default}" }}]
    routes:
      - name: exact
        matches: [{{ path: {{ type: Exact, value: /exact }} }}]
        backendRefs: [{{ service: exact-svc }}]
      - name: prefix
        matches: [{{ path: {{ type: PathPrefix, value: /api }} }}]
        backendRefs: [{{ service: prefix-svc }}]
      - name: regex
        matches: [{{ path: {{ type: RegularExpression, value: "/items/[0-9]+" }} }}]
        backendRefs: [{{ service: regex-svc }}]
  - name: exact-svc
    endpoints: [{{ address: "{exact}" }}]
  - name: prefix-svc
    endpoints: [{{ address: "{prefix}" }}]
  - name: regex-svc
    endpoints: [{{ address: "{regex}" }}]
"#,
        default = default.addr(),
        exact = exact.addr(),
        prefix = prefix.addr(),
        regex = regex.addr(),
    );
    let proxy = Proxy::start(&mesh).await;
    let mut conn = H1Conn::connect(proxy.outbound).await;

    let cases = [
        ("/exact", "exact"),
        ("/exact?q=1", "exact"),
        ("/exact/", "default"),
        ("/exact/more", "default"),
        ("/api", "prefix"),
        ("/api/", "prefix"),
        ("/api/v1/users", "prefix"),
        ("/api?x=1", "prefix"),
        ("/apix", "default"),
        ("/ap", "default"),
        ("/items/42", "regex"),
        ("/items/42?sort=asc", "regex"),
        ("/items/42/x", "default"),
        ("/items/abc", "default"),
        ("/v2/items/42", "default"),
        ("/", "default"),
    ];
    for (path, want) in cases {
        assert_eq!(
            served_by(&mut conn, Method::GET, path, &[]).await,
            want,
            "GET {path}"
        );
    }
}

/// Method, path and query, headers, expected upstream.
type Case = (
    Method,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[tokio::test]
async fn method_header_and_query_matches_first_match_wins() {
    let default = HttpUpstream::start("default").await;
    let posts = HttpUpstream::start("posts").await;
    let canary = HttpUpstream::start("canary").await;
    let users = HttpUpstream::start("users").await;
    let v2 = HttpUpstream::start("v2").await;
    let mesh = format!(
        r#"
services:
  - name: web
    endpoints: [{{ address: "{default}" }}]
    routes:
      - name: posts
        matches: [{{ method: POST, path: {{ type: PathPrefix, value: /things }} }}]
        backendRefs: [{{ service: posts }}]
      - name: canary
        matches:
          - headers: [{{ name: x-canary, value: "true" }}]
        backendRefs: [{{ service: canary }}]
      - name: users
        matches:
          - headers: [{{ name: x-user, type: RegularExpression, value: "alice|bob" }}]
        backendRefs: [{{ service: users }}]
      - name: v2
        matches:
          - queryParams: [{{ name: version, value: "2" }}]
          - headers: [{{ name: x-version, value: "2" }}]
        backendRefs: [{{ service: v2 }}]
  - name: posts
    endpoints: [{{ address: "{posts}" }}]
  - name: canary
    endpoints: [{{ address: "{canary}" }}]
  - name: users
    endpoints: [{{ address: "{users}" }}]
  - name: v2
    endpoints: [{{ address: "{v2}" }}]
"#,
        default = default.addr(),
        posts = posts.addr(),
        canary = canary.addr(),
        users = users.addr(),
        v2 = v2.addr(),
    );
    let proxy = Proxy::start(&mesh).await;
    let mut conn = H1Conn::connect(proxy.outbound).await;

    let cases: &[Case] = &[
        (Method::POST, "/things", &[], "posts"),
        (Method::GET, "/things", &[], "default"),
        (Method::POST, "/other", &[], "default"),
        // Both the method route and the header route match: the first one wins.
        (Method::POST, "/things/1", &[("x-canary", "true")], "posts"),
        (Method::GET, "/", &[("x-canary", "true")], "canary"),
        (Method::GET, "/", &[("x-canary", "false")], "default"),
        (Method::GET, "/", &[("x-user", "alice")], "users"),
        (Method::GET, "/", &[("x-user", "bob")], "users"),
        (Method::GET, "/", &[("x-user", "alicex")], "default"),
        (Method::GET, "/", &[("x-user", "malice")], "default"),
        (Method::GET, "/?version=2", &[], "v2"),
        (Method::GET, "/?a=b&version=2", &[], "v2"),
        (Method::GET, "/?version=20", &[], "default"),
        (Method::GET, "/?version=1", &[], "default"),
        (Method::GET, "/", &[("x-version", "2")], "v2"),
    ];
    for (method, path, headers, want) in cases {
        assert_eq!(
            served_by(&mut conn, method.clone(), path, headers).await,
            *want,
            "{method} {path} {headers:?}"
        );
    }
    assert!(posts.requests().iter().all(|s| s.method == Method::POST));
    assert!(
        canary
            .requests()
            .iter()
            .all(|s| s.header("x-canary") == Some("true"))
    );
}

#[tokio::test]
async fn weighted_split_three_to_one() {
    const REQUESTS: usize = 1200;
    const CONNS: usize = 6;
    let a = HttpUpstream::start("a").await;
    let b = HttpUpstream::start("b").await;
    let mesh = format!(
        r#"
services:
  - name: web
    routes:
      - name: split
        backendRefs: [{{ service: svc-a, weight: 3 }}, {{ service: svc-b, weight: 1 }}]
  - name: svc-a
    endpoints: [{{ address: "{}" }}]
  - name: svc-b
    endpoints: [{{ address: "{}" }}]
"#,
        a.addr(),
        b.addr()
    );
    let proxy = Proxy::start(&mesh).await;

    let workers = (0..CONNS).map(|_| async {
        let mut conn = H1Conn::connect(proxy.outbound).await;
        let mut counts: HashMap<String, usize> = HashMap::new();
        for _ in 0..REQUESTS / CONNS {
            *counts
                .entry(served_by(&mut conn, Method::GET, "/", &[]).await)
                .or_default() += 1;
        }
        counts
    });
    let mut counts: HashMap<String, usize> = HashMap::new();
    for part in futures_util::future::join_all(workers).await {
        for (k, v) in part {
            *counts.entry(k).or_default() += v;
        }
    }
    let to_a = counts.get("a").copied().unwrap_or(0);
    let to_b = counts.get("b").copied().unwrap_or(0);
    assert_eq!(
        to_a + to_b,
        REQUESTS,
        "only the two backends serve: {counts:?}"
    );
    let ratio = to_a as f64 / REQUESTS as f64;
    assert!(
        (ratio - 0.75).abs() <= 0.05,
        "weight 3:1 gives a share of 0.75 ± 0.05 to a, got {ratio:.3} ({counts:?})"
    );
}

#[tokio::test]
async fn zero_weight_backend_gets_nothing() {
    let a = HttpUpstream::start("a").await;
    let b = HttpUpstream::start("b").await;
    let mesh = format!(
        r#"
services:
  - name: web
    routes:
      - backendRefs: [{{ service: svc-a, weight: 1 }}, {{ service: svc-b, weight: 0 }}]
  - name: svc-a
    endpoints: [{{ address: "{}" }}]
  - name: svc-b
    endpoints: [{{ address: "{}" }}]
"#,
        a.addr(),
        b.addr()
    );
    let proxy = Proxy::start(&mesh).await;
    let mut conn = H1Conn::connect(proxy.outbound).await;
    for _ in 0..60 {
        assert_eq!(served_by(&mut conn, Method::GET, "/", &[]).await, "a");
    }
    assert!(b.requests().is_empty(), "weight 0 sends nothing");
}
