//! Opaque L4 forwarding: connect to an endpoint and copy bytes both ways, passing a
//! half-close through (one side's FIN becomes a shutdown of the other's write side).
//! Bytes are counted on the accepted side, by `listener`.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::balance::EndpointSet;

/// Forwards `client` to an endpoint of `endpoints` until both directions are closed.
pub async fn forward<I>(mut client: I, endpoints: &EndpointSet)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let pick = match endpoints.pick() {
        Ok(p) => p,
        Err(e) => {
            debug!(error = %e, "opaque connection closed");
            return;
        }
    };
    let pool = Arc::clone(&pick.endpoint.pool);
    let mut upstream = match pool.connect_tcp().await {
        Ok(s) => s,
        Err(e) => {
            pick.observe_failure(pool.connect_timeout());
            debug!(error = %e, "opaque connection closed");
            return;
        }
    };
    pick.observe();
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((from_client, from_upstream)) => {
            debug!(from_client, from_upstream, "opaque connection closed");
        }
        Err(e) => debug!(error = %e, "opaque connection ended with an error"),
    }
}
