//! Opaque L4 forwarding: pick an endpoint of the service's cluster, connect (counted by its
//! breaker's `maxConnections`, connect failures fed to outlier detection), then copy bytes
//! both ways, passing a half-close through. Bytes are counted on the accepted side.

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::{
    cluster::{Cluster, Observed},
    resilience::{Failure, Tried},
    tls::Inner,
    upstream::ConnectError,
};

/// Forwards `client` to an endpoint of `cluster` until both directions are closed. No
/// retries: bytes may already have gone to the first endpoint.
pub async fn forward<I>(mut client: I, cluster: &Cluster)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let pick = match cluster.endpoints.pick(Tried::default()) {
        Ok(p) => p,
        Err(e) => {
            debug!(error = %e, "opaque connection closed");
            return;
        }
    };
    let (mut upstream, _counted) = match cluster
        .pool(&pick)
        .connect(&cluster.breaker, Inner::Opaque)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            if !matches!(e, ConnectError::Overflow(_)) {
                cluster.observe(&pick, Observed::Failed(Failure::ConnectFailure));
            }
            debug!(error = %e, "opaque connection closed");
            return;
        }
    };
    cluster.observe(&pick, Observed::Connected);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((from_client, from_upstream)) => {
            debug!(from_client, from_upstream, "opaque connection closed");
        }
        Err(e) => debug!(error = %e, "opaque connection ended with an error"),
    }
}
