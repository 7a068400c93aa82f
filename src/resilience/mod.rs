//! Timeouts around one upstream call, and the jittered exponential backoff shared by every
//! retry loop (the xDS client now; request retries later). Circuit breakers and outlier
//! detection join here later. The only module that decides how long to wait or retry.

mod backoff;

use std::{future::Future, time::Duration};

pub use backoff::Backoff;

#[derive(Debug, thiserror::Error)]
pub enum ResilienceError {
    #[error("no response within {after:?}")]
    Timeout { after: Duration },
}

/// Runs `fut` within `after`.
pub async fn within<F: Future>(after: Duration, fut: F) -> Result<F::Output, ResilienceError> {
    tokio::time::timeout(after, fut)
        .await
        .map_err(|_| ResilienceError::Timeout { after })
}
