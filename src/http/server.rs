//! Serving one accepted HTTP connection with hyper (HTTP/1.1 with upgrades, or h2c): each
//! request gets its trace context, is resolved to a route, forwarded, counted and, when
//! sampled or logged, observed. Drain turns into hyper's graceful shutdown: GOAWAY on HTTP/2,
//! `Connection: close` on HTTP/1.1.

use std::{convert::Infallible, sync::Arc, time::Instant};

use http::{Request, Response, request::Parts};
use hyper::{body::Incoming, server::conn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::{
    ProxyBody, ProxyError, Version, forward,
    headers::is_grpc,
    observe::{self, Exchange, Hop},
    synthesize,
};
use crate::{
    listener::Drain,
    resilience::RateLimiter,
    route::{Route, RouteError},
    snapshot::Snapshot,
    state::State,
    telemetry::{Direction, RouteStats},
};

/// How a listener finds the route for a request (outbound: by destination and authority;
/// inbound: this workload's app).
pub trait Handler: Send + Sync + 'static {
    /// Which side of the proxy this is: outbound requests get client spans, inbound server.
    fn direction(&self) -> Direction;
    /// Inbound: the identity the caller proved on this connection.
    fn peer_identity(&self) -> Option<&Arc<str>> {
        None
    }
    fn resolve<'a>(&'a self, snap: &'a Snapshot, parts: &Parts) -> Result<&'a Route, RouteError>;
    /// Counters for requests that found no route.
    fn unrouted<'s>(&self, state: &'s State) -> &'s RouteStats;
    /// On-demand discovery: the aliases to subscribe to when `resolve` found no service.
    fn on_demand_aliases(&self, _parts: &Parts) -> Vec<String> {
        Vec::new()
    }
    /// The rate limit every request of this side passes first (inbound: the workload's).
    fn rate_limit<'a>(&self, _snap: &'a Snapshot) -> Option<&'a RateLimiter> {
        None
    }
    /// The per-request decision after routing (inbound: authorization of the peer).
    fn authorize(&self, _snap: &Snapshot, _parts: &Parts) -> Result<(), ProxyError> {
        Ok(())
    }
}

async fn handle<H: Handler>(
    state: &State,
    handler: &H,
    version: Version,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let grpc = is_grpc(req.headers());
    let snap = state.snapshot();
    let (parts, body) = req.into_parts();
    let recorder = &state.recorder;
    let trace = recorder.tracer.begin(&parts.headers, snap.sampling);
    let mut ex = Exchange::begin(
        recorder,
        trace.or_else(|| {
            // Tracing off: the log shows the context passed on unchanged, if any.
            recorder
                .access_log
                .is_on()
                .then(|| observe::incoming_context(&parts.headers))
                .flatten()
        }),
        handler.direction(),
        &parts,
        version,
        grpc,
        start,
    );
    if let Some(ex) = ex.as_mut()
        && handler.direction() == Direction::Inbound
    {
        let workload = snap.inbound.as_ref().map(|ib| &ib.workload);
        ex.set_inbound(handler.peer_identity(), workload);
    }
    let hop = Hop::new(trace, ex.is_some());
    let miss = match handler.resolve(&snap, &parts) {
        Ok(route) => {
            let admitted = handler.authorize(&snap, &parts).and_then(|()| {
                match handler.rate_limit(&snap).map(RateLimiter::acquire) {
                    Some(Err(e)) => Err(e.into()),
                    _ => Ok(()),
                }
            });
            if let Err(e) = admitted {
                route.stats.requests.inc();
                let rsp = failed(&e, grpc);
                route.stats.record(rsp.status().as_u16(), start.elapsed());
                if let Some(ex) = ex.as_mut() {
                    ex.set_route(&route.name);
                }
                return observed(rsp, ex, hop);
            }
            return routed(state, route, parts, body, version, grpc, start, ex, hop).await;
        }
        Err(e) => e,
    };
    // xDS: the service may exist and not be held yet; ask for it and look again.
    let miss = match state.on_demand() {
        Some(od) if matches!(miss, RouteError::UnknownService { .. }) => {
            let aliases = handler.on_demand_aliases(&parts);
            if aliases.is_empty() {
                miss
            } else {
                od.fetch(&aliases).await;
                let snap = state.snapshot();
                match handler.resolve(&snap, &parts) {
                    Ok(route) => {
                        return routed(state, route, parts, body, version, grpc, start, ex, hop)
                            .await;
                    }
                    Err(e) => e,
                }
            }
        }
        _ => miss,
    };
    let stats = handler.unrouted(state);
    stats.requests.inc();
    let rsp = failed(&miss.into(), grpc);
    stats.record(rsp.status().as_u16(), start.elapsed());
    observed(rsp, ex, hop)
}

#[allow(clippy::too_many_arguments)]
async fn routed(
    state: &State,
    route: &Route,
    parts: Parts,
    body: Incoming,
    version: Version,
    grpc: bool,
    start: Instant,
    mut ex: Option<Box<Exchange>>,
    mut hop: Hop,
) -> Response<ProxyBody> {
    route.stats.requests.inc();
    if let Some(ex) = ex.as_mut() {
        ex.set_route(&route.name);
    }
    let rsp = forward(
        route,
        parts,
        body,
        version,
        state.settings.max_header_bytes,
        grpc,
        &mut hop,
    )
    .await;
    route.stats.record(rsp.status().as_u16(), start.elapsed());
    observed(rsp, ex, hop)
}

/// Hands the observed request its response; it finishes when the body ends.
fn observed(
    mut rsp: Response<ProxyBody>,
    ex: Option<Box<Exchange>>,
    hop: Hop,
) -> Response<ProxyBody> {
    if let Some(mut ex) = ex {
        ex.set_hop(hop);
        ex.respond(&rsp);
        rsp.body_mut().observe(ex);
    }
    rsp
}

fn failed(e: &ProxyError, grpc: bool) -> Response<ProxyBody> {
    debug!(error = %e, "request failed");
    synthesize(e, grpc)
}

/// Serves HTTP on `io` until the client closes, or until drain completes in-flight requests.
pub async fn serve<I, H>(
    io: I,
    version: Version,
    state: Arc<State>,
    handler: Arc<H>,
    mut drain: Drain,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let max_head = state.settings.max_header_bytes;
    let svc = hyper::service::service_fn(move |req| {
        let (state, handler) = (state.clone(), handler.clone());
        // Boxed once here: the request future is several KiB, and hyper would otherwise
        // copy it into every HTTP/2 stream task it spawns.
        Box::pin(async move { Ok::<_, Infallible>(handle(&state, &*handler, version, req).await) })
    });
    let io = TokioIo::new(io);
    let result = match version {
        Version::Http1 => {
            let conn = conn::http1::Builder::new()
                .preserve_header_case(true)
                .timer(TokioTimer::new())
                .serve_connection(io, svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => res,
                _ = drain.signaled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
        Version::Http2 => {
            // Twice the limit, so heads between the two reach `forward` and get a 431 with
            // its reason instead of a bare stream reset from h2.
            let header_list = u32::try_from(max_head.saturating_mul(2)).unwrap_or(u32::MAX);
            let conn = conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(header_list)
                .initial_stream_window_size(1 << 20)
                .initial_connection_window_size(4 << 20)
                .adaptive_window(true)
                .serve_connection(io, svc);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => res,
                _ = drain.signaled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "http connection ended with an error");
    }
}
