//! Opaque L4 forwarding: connect to an endpoint and copy bytes both ways, passing a
//! half-close through (one side's FIN becomes a shutdown of the other's write side).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::{balance::EndpointSet, telemetry::TcpStats};

/// Forwards `client` to an endpoint of `endpoints` until both directions are closed.
pub async fn forward<I>(mut client: I, endpoints: &EndpointSet, stats: &TcpStats)
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
            stats.read.inc_by(from_client);
            stats.write.inc_by(from_upstream);
        }
        Err(e) => debug!(error = %e, "opaque connection ended with an error"),
    }
}
