//! One accepted connection, from protocol detection to its handler: HTTP/1 and HTTP/2 go to
//! `http::serve`, a bad first request head gets its error response here, everything else is
//! opaque TCP. Shared by the inbound and outbound sides, which differ only in their targets.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info};

use skiff_api::model::MtlsMode;

use crate::{
    cluster::Cluster,
    detect::{self, Detected, HeadCheck},
    http::{self, Handler, ProxyError, RequestError, Version},
    io::Prefixed,
    listener::{Accepted, Drain},
    snapshot::Snapshot,
    state::State,
    telemetry::{DetectOutcome, TcpStats},
    tls::{
        MESH_ALPN,
        hello::{self, Hello},
    },
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
    /// Inbound: the mTLS mode clients must follow; `None` (outbound): TLS is never
    /// terminated here.
    fn mtls(&self, _snap: &Snapshot) -> Option<MtlsMode> {
        None
    }
    /// Inbound: the identity the client proved (`None`: unauthenticated), set once before
    /// the connection is served.
    fn set_peer(&self, _peer: Option<Arc<str>>) {}
    /// Whether an opaque TCP connection may go on (inbound: authorization).
    fn admit_tcp(&self, _state: &State, _dst: SocketAddr) -> bool {
        true
    }
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
    let snap = state.snapshot();
    // Identity on and a mode that terminates mesh TLS: the inbound side under permissive
    // or strict.
    let mode = side.mtls(&snap);
    let mesh = match (mode, state.tls()) {
        (Some(mode), Some(tls)) if mode != MtlsMode::Disabled => Some((mode, tls.clone())),
        _ => None,
    };
    if mode == Some(MtlsMode::Strict) && mesh.is_none() {
        // Strict with no identity to terminate mTLS with: nothing can qualify. Fail closed.
        state.tls_metrics.refused("no-identity");
        debug!(%dst, "strict mTLS but this proxy has no identity: connection refused");
        return;
    }
    let settings = &state.settings;
    let skip = side.is_opaque(&state, &snap, dst);
    drop(snap);
    let (found, prefix) = if skip && mesh.is_none() {
        (None, Bytes::new())
    } else {
        // An opaque port still takes mesh TLS, whose client speaks first at once; a plain
        // server-speaks-first client waits only this short while.
        let timeout = if skip {
            settings.detect_timeout.min(OPAQUE_TLS_WAIT)
        } else {
            settings.detect_timeout
        };
        match detect::detect(&mut stream, timeout, settings.max_header_bytes).await {
            Ok((d, p)) => (Some(d), p),
            Err(e) => {
                debug!(error = %e, "connection failed during detection");
                return;
            }
        }
    };
    let outcome = count_detection(&state, found, skip, dst);
    let Some((mode, tls)) = mesh else {
        side.set_peer(None);
        return dispatch(stream, found, prefix, &state, side, drain, dst).await;
    };
    if found == Some(Detected::Tls) {
        let read = hello::read_hello(&mut stream, prefix, settings.detect_timeout).await;
        let (verdict, prefix) = match read {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "connection failed while reading the TLS ClientHello");
                return;
            }
        };
        match verdict {
            Hello::Mesh => {
                let (tls_stream, peer) = match tls.accept(Prefixed::new(prefix, stream)).await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        debug!(error = %e, "mesh TLS handshake refused");
                        return;
                    }
                };
                side.set_peer(Some(peer));
                let opaque = tls_stream.get_ref().1.alpn_protocol() == Some(MESH_ALPN);
                let mut tls_stream = tls_stream;
                let (found, prefix) = if opaque {
                    (Some(Detected::Opaque), Bytes::new())
                } else {
                    match detect::detect(
                        &mut tls_stream,
                        settings.detect_timeout,
                        settings.max_header_bytes,
                    )
                    .await
                    {
                        Ok((d, p)) => (Some(d), p),
                        Err(e) => {
                            debug!(error = %e, "mesh connection failed during detection");
                            return;
                        }
                    }
                };
                return dispatch(tls_stream, found, prefix, &state, side, drain, dst).await;
            }
            Hello::Other | Hello::NeedMore if mode == MtlsMode::Strict => {
                state.tls_metrics.refused("non-mesh-tls");
                debug!(%dst, "strict mTLS: TLS that is not mesh TLS refused");
                return;
            }
            Hello::Other | Hello::NeedMore => {
                // Permissive: an app's own TLS passes through untouched.
                side.set_peer(None);
                return dispatch(
                    stream,
                    Some(Detected::Tls),
                    prefix,
                    &state,
                    side,
                    drain,
                    dst,
                )
                .await;
            }
        }
    }
    if mode == MtlsMode::Strict {
        state.tls_metrics.refused("plaintext");
        debug!(%dst, ?outcome, "strict mTLS: plaintext connection refused");
        return;
    }
    side.set_peer(None);
    dispatch(stream, found, prefix, &state, side, drain, dst).await
}

/// How long an opaque inbound port waits for a mesh TLS ClientHello when identity is on.
const OPAQUE_TLS_WAIT: Duration = Duration::from_millis(250);

fn count_detection(
    state: &State,
    found: Option<Detected>,
    skipped: bool,
    dst: SocketAddr,
) -> DetectOutcome {
    let outcome = match found {
        None => DetectOutcome::Skipped,
        Some(Detected::Http1 { .. }) => DetectOutcome::Http1,
        Some(Detected::Http2) => DetectOutcome::Http2,
        Some(Detected::Tls) => DetectOutcome::Tls,
        Some(Detected::Opaque) => DetectOutcome::Opaque,
        Some(Detected::Timeout) if skipped => DetectOutcome::Skipped,
        Some(Detected::Timeout) => DetectOutcome::Timeout,
    };
    state.detect.count(outcome);
    if outcome == DetectOutcome::Timeout && state.first_detect_timeout(dst.port()) {
        info!(port = dst.port(), timeout = ?state.settings.detect_timeout, "no protocol detected in time; treating the port as opaque TCP (further timeouts on it are only counted)");
    }
    outcome
}

/// Hands a detected connection (plaintext, or the inside of mesh TLS) to its handler.
async fn dispatch<I, S>(
    stream: I,
    found: Option<Detected>,
    prefix: Bytes,
    state: &Arc<State>,
    side: Arc<S>,
    drain: Drain,
    dst: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Side,
{
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
                state.clone(),
                side,
                drain,
            )
            .await;
        }
        Some(Detected::Http2) => {
            http::serve(
                Prefixed::new(prefix, stream),
                Version::Http2,
                state.clone(),
                side,
                drain,
            )
            .await;
        }
        None | Some(Detected::Tls | Detected::Opaque | Detected::Timeout) => {
            let snap = state.snapshot();
            let target = side.opaque_target(&snap, dst);
            let sampling = snap.sampling;
            drop(snap);
            match target {
                Some(cluster) => {
                    if side.admit_tcp(state, dst) {
                        let observed = crate::tcp::Observed::begin(
                            &state.recorder,
                            side.direction(),
                            sampling,
                            side.peer_identity(),
                        );
                        let done =
                            crate::tcp::forward(Prefixed::new(prefix, stream), &cluster).await;
                        if let Some(o) = observed {
                            o.finish(&cluster, &done);
                        }
                    }
                }
                None => {
                    side.tcp_stats(state).unrouted.inc();
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
