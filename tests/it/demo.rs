//! `skiff-xds demo` end to end: the demo mesh (apps, mesh file, one real `skiff` sidecar per
//! workload) started through the library entry point on ephemeral ports, then driven with
//! plain HTTP/1.1 requests through the client sidecar's outbound listener.

use std::collections::BTreeMap;

use http::StatusCode;
use skiff_xds::demo::{self, DemoOptions};

use crate::support::{STEP, client, within};

/// Requests sent to the 50/50 `reviews` split; all of them landing on one side by chance
/// has probability 2^-49.
const SPLIT_REQUESTS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mesh_serves_web_and_splits_reviews() {
    let dir = tempfile::Builder::new()
        .prefix("skiff-it-demo-")
        .tempdir()
        .expect("tempdir");
    let opts = DemoOptions {
        skiff_bin: env!("CARGO_BIN_EXE_skiff").into(),
        dir: Some(dir.path().to_owned()),
        outbound_port: 0,
        admin_port: 0,
        ..DemoOptions::default()
    };
    // On failure the error names the sidecar and quotes the end of its log.
    let demo = demo::start(opts)
        .await
        .unwrap_or_else(|e| panic!("the demo mesh did not start: {e:#}"));
    assert!(
        demo.mesh_path().starts_with(dir.path()),
        "mesh file at {}",
        demo.mesh_path().display()
    );
    assert_eq!(demo.sidecars().count(), demo::WORKLOADS.len());
    let outbound = demo.outbound_addr();

    let ready = client::send_h1(demo.admin_addr(), client::get("localhost", "/ready")).await;
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "the client sidecar's admin port: {ready:?}"
    );

    let web = client::send_h1(outbound, client::get("web", "/")).await;
    assert_eq!(web.status, StatusCode::OK, "{web:?}");
    assert_eq!(web.served_by(), Some("web-v1"), "{web:?}");
    assert_eq!(web.text(), "web v1\n");

    let mut served_by: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..SPLIT_REQUESTS {
        let reviews = client::send_h1(outbound, client::get("reviews", "/")).await;
        assert_eq!(reviews.status, StatusCode::OK, "request {i}: {reviews:?}");
        let by = reviews
            .served_by()
            .unwrap_or_else(|| panic!("request {i} has no x-served-by: {reviews:?}"));
        *served_by.entry(by.to_owned()).or_default() += 1;
    }
    let backends: Vec<&str> = served_by.keys().map(String::as_str).collect();
    assert_eq!(
        backends,
        ["reviews-v1", "reviews-v2"],
        "the split over {SPLIT_REQUESTS} requests: {served_by:?}"
    );

    within("demo shutdown", STEP, demo.shutdown()).await;
}
