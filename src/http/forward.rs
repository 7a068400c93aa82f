//! Sending one request upstream. The plan: head checks, fault injection, route → weighted
//! backend → cluster, upstream protocol, breaker admission. Then `resilience::run` drives the
//! attempts; each [`HttpAttempt`] picks an endpoint, sends on its pooled connection and
//! classifies what came back. HTTP/1.1 upgrades (WebSocket) are one attempt and a tunnel.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::{
    HeaderMap, HeaderValue, Request, Response, StatusCode, header::HeaderName, request::Parts,
};
use http_body::Body;
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use skiff_api::model::Protocol;

use super::{
    ProxyBody, ProxyError, RequestError, Version,
    headers::{self, X_REQUEST_ID, prepare_request, prepare_response, request_head_size},
    observe::{AttemptRecord, Hop},
    synthesize,
};
use crate::{
    balance::Pick,
    cluster::{Cluster, Members, Observed},
    resilience::{
        self, Attempt, AttemptCx, Failure, Finished, Outcome, Plan, ReplayBody, Reply,
        ResilienceError, RetryPolicy, Tried,
    },
    route::Route,
    upstream::{self, Checkout, ConnectError, EndpointPool, H2Conn, UpstreamBody, UpstreamError},
};

/// On a response that took more than one attempt: how many.
pub const X_SKIFF_ATTEMPTS: HeaderName = HeaderName::from_static("x-skiff-attempts");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// Forwards a request along `route` and returns what the client gets: the upstream's response
/// or the proxy's own, with `x-skiff-attempts` when it was retried. The upstream request
/// carries `hop.trace`; what happened on the way is written back into `hop`.
pub async fn forward(
    route: &Route,
    mut parts: Parts,
    body: Incoming,
    downstream: Version,
    max_head: usize,
    grpc: bool,
    hop: &mut Hop,
) -> Response<ProxyBody> {
    let size = request_head_size(&parts);
    if size > max_head {
        let e = RequestError::HeadersTooLarge {
            size,
            limit: max_head,
        };
        return failed(&e.into(), grpc);
    }
    if let Some(fault) = &route.fault {
        if let Some(wait) = fault.delay() {
            tokio::time::sleep(wait).await;
        }
        if let Some(abort) = fault.abort() {
            return failed(&ResilienceError::FaultAbort { abort }.into(), grpc);
        }
    }
    let cluster = match route.pick_backend() {
        Ok(c) => c,
        Err(e) => return failed(&e.into(), grpc),
    };
    if hop.observed {
        hop.service = Some(cluster.name.clone());
    }
    let upstream = match cluster.protocol {
        Protocol::Http1 => Version::Http1,
        Protocol::Http2 | Protocol::Grpc => Version::Http2,
        Protocol::Auto | Protocol::Tcp => downstream,
    };
    if downstream == Version::Http1 && upstream == Version::Http1 && headers::is_upgrade(&parts) {
        // Rare: boxed so it does not grow every request's future.
        return Box::pin(upgrade(cluster, parts, body, hop)).await;
    }
    let _admitted = match cluster.breaker.request() {
        Ok(g) => g,
        Err(e) => return failed(&ResilienceError::from(e).into(), grpc),
    };
    if let Some(b) = &cluster.budget {
        b.deposit();
    }
    if let Err(e) = prepare_request(&mut parts, upstream, false, hop.trace.as_ref()) {
        return failed(&e.into(), grpc);
    }
    if hop.observed {
        hop.request_id = parts.headers.get(X_REQUEST_ID).cloned();
    }
    let plan = Plan {
        retry: route.retry.as_ref(),
        per_try: route.per_try_timeout,
        request_timeout: route.timeout,
        idempotent: resilience::is_idempotent(&parts.method),
        grpc,
        breaker: &cluster.breaker,
        budget: cluster.budget.as_ref(),
        metrics: &cluster.metrics,
    };
    let mut attempt = HttpAttempt {
        cluster,
        members: cluster.members(),
        upstream,
        per_try: route.per_try_timeout,
        grpc,
        source: RequestSource::new(parts, body, route.retry.as_ref(), upstream),
        untrusted: Tried::default(),
        untrusted_error: None,
        hop,
    };
    let Finished { result, attempts } = resilience::run(&plan, &mut attempt).await;
    let mut rsp = result.unwrap_or_else(|e| failed(&e, grpc));
    if attempts > 1 {
        rsp.headers_mut()
            .insert(X_SKIFF_ATTEMPTS, HeaderValue::from(attempts));
    }
    rsp
}

fn failed(e: &ProxyError, grpc: bool) -> Response<ProxyBody> {
    tracing::debug!(error = %e, "request failed");
    synthesize(e, grpc)
}

/// Where each attempt's request comes from. Lives once per request inside its (already boxed)
/// future; boxing the larger variant would cost an allocation per request instead.
#[allow(clippy::large_enum_variant)]
enum RequestSource {
    /// The request streams once. A request the connection handed back unsent may go again,
    /// and so may a bodyless one, as a copy of its head.
    Once {
        req: Option<Request<UpstreamBody>>,
        head: Option<Parts>,
    },
    /// The route retries and the body fits its cap: every attempt replays it. The first
    /// takes the original head, later ones a copy.
    Replay {
        first: Option<Parts>,
        copy: Parts,
        body: ReplayBody<Incoming>,
    },
}

impl RequestSource {
    fn new(parts: Parts, body: Incoming, retry: Option<&RetryPolicy>, upstream: Version) -> Self {
        if body.is_end_stream() {
            // A copy of the head is all a bodyless request needs to go again; only a retry
            // policy or HTTP/2 (refused streams) can use it.
            let head = (retry.is_some() || upstream == Version::Http2).then(|| clone_head(&parts));
            return RequestSource::Once {
                req: Some(Request::from_parts(parts, UpstreamBody::Empty)),
                head,
            };
        }
        match retry {
            // A declared length over the cap streams once from the start.
            Some(p)
                if body
                    .size_hint()
                    .upper()
                    .is_none_or(|n| n <= p.max_body_bytes) =>
            {
                let hint = body.size_hint();
                let cap = usize::try_from(p.max_body_bytes).unwrap_or(usize::MAX);
                RequestSource::Replay {
                    copy: clone_head(&parts),
                    first: Some(parts),
                    body: ReplayBody::new(body, hint, cap),
                }
            }
            _ => RequestSource::Once {
                req: Some(Request::from_parts(parts, UpstreamBody::Streaming(body))),
                head: None,
            },
        }
    }

    fn take(&mut self) -> Option<Request<UpstreamBody>> {
        match self {
            RequestSource::Once { req, head } => req.take().or_else(|| {
                head.as_ref()
                    .map(|h| Request::from_parts(clone_head(h), UpstreamBody::Empty))
            }),
            RequestSource::Replay { first, copy, body } => {
                let b = body.replay()?;
                let head = first.take().unwrap_or_else(|| clone_head(copy));
                Some(Request::from_parts(head, UpstreamBody::Replay(b)))
            }
        }
    }

    /// A request the connection gave back untouched.
    fn put_back(&mut self, r: Request<UpstreamBody>) {
        if let RequestSource::Once { req, .. } = self {
            *req = Some(r);
        }
    }

    fn can_replay(&self) -> bool {
        match self {
            RequestSource::Once { req, head } => req.is_some() || head.is_some(),
            RequestSource::Replay { body, .. } => body.is_replayable(),
        }
    }
}

/// A copy of a request head for a later attempt. Extensions stay with the original (the first
/// attempt): hyper keeps the client's header case there, and copying that map on every
/// request a policy might retry cost more than the rest of the policy together. A retried
/// HTTP/1.1 attempt therefore sends header names in lowercase.
fn clone_head(parts: &Parts) -> Parts {
    let mut head = Request::new(());
    *head.method_mut() = parts.method.clone();
    *head.uri_mut() = parts.uri.clone();
    *head.version_mut() = parts.version;
    *head.headers_mut() = parts.headers.clone();
    head.into_parts().0
}

/// One request's attempts over one cluster.
struct HttpAttempt<'a> {
    cluster: &'a Cluster,
    /// The cluster's endpoints as this request found them, for all its attempts.
    members: Arc<Members>,
    upstream: Version,
    per_try: Option<Duration>,
    grpc: bool,
    source: RequestSource,
    /// Endpoints that could not prove their identity to this request: never picked again by
    /// it (a retry that lands on one fails at once with the same error).
    untrusted: Tried,
    untrusted_error: Option<ConnectError>,
    /// Where the request's span and log learn its endpoint and attempts.
    hop: &'a mut Hop,
}

/// A send that got no response.
struct SendError {
    error: ProxyError,
    failure: Failure,
    /// The request, when the connection handed it back without writing it.
    unsent: Option<Request<UpstreamBody>>,
}

impl Attempt for HttpAttempt<'_> {
    type Response = Response<ProxyBody>;
    type Error = ProxyError;

    async fn attempt(&mut self, cx: AttemptCx) -> Outcome<Response<ProxyBody>, ProxyError> {
        self.hop.attempts = cx.n;
        let start = self.hop.attempt_log.is_some().then(SystemTime::now);
        let outcome = self.attempt_once(cx).await;
        if let (Some(start), Some(log)) = (start, self.hop.attempt_log.as_mut()) {
            let (status, error) = match &outcome {
                Outcome::Response(r) => (Some(r.status), None),
                Outcome::Failed { err, .. } => (None, Some(err.status_and_reason().1)),
            };
            log.push(AttemptRecord {
                n: cx.n,
                start,
                end: SystemTime::now(),
                endpoint: self.hop.endpoint,
                status,
                error,
            });
        }
        outcome
    }

    fn can_replay(&self) -> bool {
        self.source.can_replay()
    }

    fn pushback(rsp: &Response<ProxyBody>) -> Option<Duration> {
        let h = rsp.headers();
        let number = |name| h.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
        number(GRPC_PUSHBACK)
            .map(Duration::from_millis)
            .or_else(|| number(http::header::RETRY_AFTER).map(Duration::from_secs))
    }
}

impl HttpAttempt<'_> {
    async fn attempt_once(&mut self, cx: AttemptCx) -> Outcome<Response<ProxyBody>, ProxyError> {
        let pick = match self.members.endpoints.pick(cx.tried) {
            Ok(p) => p,
            Err(e) => return local(e.into()),
        };
        if self.hop.observed {
            self.hop.endpoint = Some(pick.endpoint.addr);
            self.hop.identity = self.members.pool(&pick).verified_identity().cloned();
        }
        if self.untrusted.contains(pick.index)
            && let Some(e) = &self.untrusted_error
        {
            return local(UpstreamError::Connect(e.clone()).into());
        }
        let Some(req) = self.source.take() else {
            // The loop asks `can_replay` before every retry; a first attempt always has one.
            return local(
                RequestError::Malformed {
                    reason: "request body cannot be sent again",
                }
                .into(),
            );
        };
        let pool = self.members.pool(&pick);
        let sent = match cx.deadline {
            None => send(req, pool, self.upstream, self.cluster).await,
            Some(d) => {
                match tokio::time::timeout_at(d, send(req, pool, self.upstream, self.cluster)).await
                {
                    Ok(sent) => sent,
                    Err(_) => {
                        return self.failed(
                            &pick,
                            SendError {
                                error: ResilienceError::Timeout {
                                    after: self.per_try.unwrap_or_default(),
                                }
                                .into(),
                                failure: Failure::Timeout,
                                unsent: None,
                            },
                        );
                    }
                }
            }
        };
        match sent {
            Ok(rsp) => {
                let status = rsp.status().as_u16();
                self.cluster
                    .observe(&self.members, &pick, Observed::Status(status));
                let grpc = if self.grpc {
                    grpc_status(rsp.headers())
                } else {
                    None
                };
                Outcome::Response(Reply {
                    rsp,
                    status,
                    grpc,
                    endpoint: pick.index,
                })
            }
            Err(e) => self.failed(&pick, e),
        }
    }

    fn failed(&mut self, pick: &Pick, e: SendError) -> Outcome<Response<ProxyBody>, ProxyError> {
        if let Some(r) = e.unsent {
            self.source.put_back(r);
        }
        if let ProxyError::Upstream(UpstreamError::Connect(c @ ConnectError::Tls { source, .. })) =
            &e.error
            && source.is_identity_failure()
        {
            self.untrusted.add(pick.index);
            self.untrusted_error = Some(c.clone());
        }
        self.cluster
            .observe(&self.members, pick, Observed::Failed(e.failure));
        Outcome::Failed {
            err: e.error,
            failure: e.failure,
            endpoint: Some(pick.index),
        }
    }
}

fn local(err: ProxyError) -> Outcome<Response<ProxyBody>, ProxyError> {
    Outcome::Failed {
        err,
        failure: Failure::Local,
        endpoint: None,
    }
}

/// `grpc-status` in response headers: a trailers-only gRPC answer.
fn grpc_status(h: &HeaderMap) -> Option<u32> {
    h.get(GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

fn connect_failed(e: ConnectError) -> SendError {
    let failure = match e {
        ConnectError::Overflow(_) => Failure::Local,
        // A peer that cannot prove its identity is a connect failure: counted against the
        // endpoint, and a retry goes elsewhere.
        ConnectError::Refused { .. }
        | ConnectError::Timeout { .. }
        | ConnectError::Handshake { .. }
        | ConnectError::Tls { .. } => Failure::ConnectFailure,
    };
    SendError {
        error: UpstreamError::Connect(e).into(),
        failure,
        unsent: None,
    }
}

async fn send(
    req: Request<UpstreamBody>,
    pool: &Arc<EndpointPool>,
    upstream: Version,
    cluster: &Cluster,
) -> Result<Response<ProxyBody>, SendError> {
    match upstream {
        Version::Http1 => send_h1(req, pool, cluster).await,
        Version::Http2 => send_h2(req, pool, cluster).await,
    }
}

fn into_proxy(rsp: Response<Incoming>, checkout: Option<Checkout>) -> Response<ProxyBody> {
    let (mut parts, body) = rsp.into_parts();
    prepare_response(&mut parts.headers, false);
    Response::from_parts(parts, ProxyBody::upstream(body, checkout))
}

async fn send_h1(
    req: Request<UpstreamBody>,
    pool: &Arc<EndpointPool>,
    cluster: &Cluster,
) -> Result<Response<ProxyBody>, SendError> {
    let (sender, reused) = match pool.take_h1() {
        Some(s) => (s, true),
        None => match Box::pin(pool.connect_h1(false, &cluster.breaker)).await {
            Ok(s) => (s, false),
            Err(e) => return Err(connect_failed(e)),
        },
    };
    let (sender, sent) = upstream::send_h1(sender, req).await;
    match sent {
        Ok(rsp) => Ok(into_proxy(
            rsp,
            sender.map(|sender| Checkout {
                sender,
                pool: pool.clone(),
            }),
        )),
        Err(mut e) => {
            let unsent = e.take_message();
            // A pooled connection that closed before the request was written processed
            // nothing; a new one failing before the write is just a broken upstream.
            let failure = if reused && unsent.is_some() {
                Failure::Refused
            } else {
                Failure::Reset
            };
            Err(SendError {
                error: UpstreamError::Http(e.into_error()).into(),
                failure,
                unsent,
            })
        }
    }
}

async fn send_h2(
    req: Request<UpstreamBody>,
    pool: &Arc<EndpointPool>,
    cluster: &Cluster,
) -> Result<Response<ProxyBody>, SendError> {
    let H2Conn {
        generation,
        mut sender,
    } = match pool.live_h2() {
        Some(c) => c,
        None => match Box::pin(pool.h2(&cluster.breaker)).await {
            Ok(c) => c,
            Err(e) => return Err(connect_failed(e)),
        },
    };
    let sending = sender.try_send_request(req);
    // Not held while the response is awaited: see `EndpointPool::discard_h2`.
    drop(sender);
    match sending.await {
        Ok(rsp) => Ok(into_proxy(rsp, None)),
        Err(mut e) => {
            let unsent = e.take_message();
            let refused = unsent.is_some() || is_unprocessed(e.error());
            if refused {
                // Gone away or refusing: the next request opens a new connection.
                pool.discard_h2(generation);
            }
            Err(SendError {
                error: UpstreamError::Http(e.into_error()).into(),
                failure: if refused {
                    Failure::Refused
                } else {
                    Failure::Reset
                },
                unsent,
            })
        }
    }
}

/// True when the server provably did not process the request (RFC 9113 §8.7): its stream was
/// refused, or lay above the last stream id of the server's GOAWAY.
fn is_unprocessed(err: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote());
        }
        source = e.source();
    }
    false
}

/// An HTTP/1.1 protocol switch: one attempt on a connection of its own and, on
/// `101 Switching Protocols`, both sides joined into a byte tunnel.
async fn upgrade(
    cluster: &Cluster,
    mut parts: Parts,
    body: Incoming,
    hop: &mut Hop,
) -> Response<ProxyBody> {
    let _admitted = match cluster.breaker.request() {
        Ok(g) => g,
        Err(e) => return failed(&ResilienceError::from(e).into(), false),
    };
    let client = parts.extensions.remove::<OnUpgrade>();
    if let Err(e) = prepare_request(&mut parts, Version::Http1, true, hop.trace.as_ref()) {
        return failed(&e.into(), false);
    }
    let members = cluster.members();
    let pick = match members.endpoints.pick(Tried::default()) {
        Ok(p) => p,
        Err(e) => return failed(&e.into(), false),
    };
    hop.attempts = 1;
    if hop.observed {
        hop.endpoint = Some(pick.endpoint.addr);
        hop.identity = members.pool(&pick).verified_identity().cloned();
    }
    let pool = members.pool(&pick);
    let sender = match pool.connect_h1(true, &cluster.breaker).await {
        Ok(s) => s,
        Err(e) => {
            let e = connect_failed(e);
            cluster.observe(&members, &pick, Observed::Failed(e.failure));
            return failed(&e.error, false);
        }
    };
    let req = Request::from_parts(parts, UpstreamBody::Streaming(body));
    let mut rsp = match upstream::send_h1(sender, req).await.1 {
        Ok(r) => r,
        Err(e) => {
            cluster.observe(&members, &pick, Observed::Failed(Failure::Reset));
            return failed(&UpstreamError::Http(e.into_error()).into(), false);
        }
    };
    cluster.observe(&members, &pick, Observed::Status(rsp.status().as_u16()));
    if rsp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return into_proxy(rsp, None);
    }
    let server = hyper::upgrade::on(&mut rsp);
    if let Some(client) = client {
        tokio::spawn(async move {
            match tokio::try_join!(client, server) {
                Ok((c, s)) => {
                    let (mut c, mut s) = (TokioIo::new(c), TokioIo::new(s));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut s).await {
                        tracing::debug!(error = %e, "upgraded tunnel ended");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
    }
    let (mut parts, body) = rsp.into_parts();
    prepare_response(&mut parts.headers, true);
    Response::from_parts(parts, ProxyBody::upstream(body, None))
}
