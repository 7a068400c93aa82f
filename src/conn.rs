//! One accepted connection, from protocol detection to its handler: HTTP/1 and HTTP/2 go to
//! `http::serve`, a bad first request head gets its error response here, everything else is
//! opaque TCP. Shared by the inbound and outbound sides, which differ only in their targets.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info};

use crate::{
    cluster::Cluster,
    detect::{self, Detected, HeadCheck, Prefixed},
    http::{self, Handler, ProxyError, RequestError, Version},
    listener::Accepted,
    snapshot::Snapshot,
    state::State,
    telemetry::{DetectOutcome, TcpStats},
};

/// What one side needs from a connection besides HTTP routing.
pub trait Side: Handler {
    /// Before anything else: fetch what the connection's destination needs (on demand).
    fn prefetch(&self, _state: &State) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// Skip detection: the destination is a server-speaks-first port or a TCP service.
    fn is_opaque(&self, state: &State, snap: &Snapshot, dst: SocketAddr) -> bool;
    /// Where opaque bytes go, if anywhere.
    fn opaque_target(&self, snap: &Snapshot, dst: SocketAddr) -> Option<Arc<Cluster>>;
    fn tcp_stats<'s>(&self, state: &'s State) -> &'s TcpStats;
}

/// Serves one accepted connection to completion.
pub async fn serve<S: Side>(acc: Accepted, state: Arc<State>, side: Arc<S>) {
    let Accepted {
        mut stream,
        dst,
        drain,
        ..
    } = acc;
    side.prefetch(&state).await;
    let opaque = side.is_opaque(&state, &state.snapshot(), dst);
    let (found, prefix) = if opaque {
        (None, Bytes::new())
    } else {
        let settings = &state.settings;
        match detect::detect(
            &mut stream,
            settings.detect_timeout,
            settings.max_header_bytes,
        )
        .await
        {
            Ok((d, p)) => (Some(d), p),
            Err(e) => {
                debug!(error = %e, "connection failed during detection");
                return;
            }
        }
    };
    let outcome = match found {
        None => DetectOutcome::Skipped,
        Some(Detected::Http1 { .. }) => DetectOutcome::Http1,
        Some(Detected::Http2) => DetectOutcome::Http2,
        Some(Detected::Tls) => DetectOutcome::Tls,
        Some(Detected::Opaque) => DetectOutcome::Opaque,
        Some(Detected::Timeout) => DetectOutcome::Timeout,
    };
    state.detect.count(outcome);
    if outcome == DetectOutcome::Timeout && state.first_detect_timeout(dst.port()) {
        info!(port = dst.port(), timeout = ?state.settings.detect_timeout, "no protocol detected in time; treating the port as opaque TCP (further timeouts on it are only counted)");
    }
    match found {
        Some(Detected::Http1 {
            head: HeadCheck::Malformed,
        }) => {
            refuse(
                stream,
                RequestError::Malformed {
                    reason: "unparseable request head",
                }
                .into(),
            )
            .await;
        }
        Some(Detected::Http1 {
            head: HeadCheck::TooLarge,
        }) => {
            let limit = state.settings.max_header_bytes;
            refuse(
                stream,
                RequestError::HeadersTooLarge {
                    size: prefix.len(),
                    limit,
                }
                .into(),
            )
            .await;
        }
        Some(Detected::Http1 { .. }) => {
            http::serve(
                Prefixed::new(prefix, stream),
                Version::Http1,
                state,
                side,
                drain,
            )
            .await;
        }
        Some(Detected::Http2) => {
            http::serve(
                Prefixed::new(prefix, stream),
                Version::Http2,
                state,
                side,
                drain,
            )
            .await;
        }
        None | Some(Detected::Tls | Detected::Opaque | Detected::Timeout) => {
            let target = side.opaque_target(&state.snapshot(), dst);
            match target {
                Some(cluster) => {
                    crate::tcp::forward(Prefixed::new(prefix, stream), &cluster).await;
                }
                None => {
                    side.tcp_stats(&state).unrouted.inc();
                    debug!(%dst, "no service takes this opaque connection; closed");
                }
            }
        }
    }
}

/// Answers a request the proxy will not parse further, then closes the connection gently:
/// the rest of what the client sent is read (bounded) so the close does not turn into a
/// reset that could destroy the response in flight.
async fn refuse<I: AsyncRead + AsyncWrite + Unpin>(mut stream: I, err: ProxyError) {
    debug!(error = %err, "request refused before parsing");
    let head = http::raw_response(&err);
    if stream.write_all(&head).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 8192];
    let mut left: usize = 1 << 20;
    let drain = async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}
