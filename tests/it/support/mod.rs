//! Everything the tests spawn or drive: the `skiff` process (`proxy`), the `skiff-xds` process
//! (`control_plane`), the servers behind the proxy (`upstream`, and `faulty` for ones that
//! misbehave on purpose), the clients in front of it (`client`), a TCP relay that can go silent
//! (`relay`), the OTLP trace collectors the proxy exports to (`collector`), plus deadline helpers.

pub mod client;
pub mod collector;
pub mod control_plane;
pub mod faulty;
pub mod mesh;
pub mod netns;
pub mod proxy;
pub mod relay;
pub mod upstream;

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// Bound on one network step (a request, a read). Generous because the suite runs on a loaded
/// 2-core box in debug; it only turns a hang into a failure and never paces a test.
pub const STEP: Duration = Duration::from_secs(20);

/// Runs `fut`, panicking with `what` if it has not finished within `limit`.
pub async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no outcome within {limit:?}"),
    }
}

/// Polls `check` until it holds, panicking with `what` at the deadline. For observable state that
/// changes asynchronously (readiness, a counter after a connection closes), like ztunnel's `ready()`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("{what}: still not true after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
