//! Sending one request upstream: route → weighted backend → endpoint → pooled connection,
//! within the route's timeout; HTTP/1.1 upgrades (WebSocket) become a tunnel.

use std::sync::Arc;

use http::{Request, Response, StatusCode, request::Parts};
use http_body::Body;
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use skiff_api::model::Protocol;

use super::{
    ProxyBody, ProxyError, RequestError, UpstreamError, Version,
    headers::{self, prepare_request, prepare_response, request_head_size},
    pool::{Checkout, EndpointPool, H2Conn, UpstreamBody},
};
use crate::{balance::Pick, resilience, route::Route};

/// Sends a request along `route`: picks a backend and an endpoint, enforces the head-size
/// limit and the route timeout, and feeds the outcome to the endpoint's load estimate.
pub async fn forward(
    route: &Route,
    parts: Parts,
    body: Incoming,
    downstream: Version,
    max_head: usize,
) -> Result<Response<ProxyBody>, ProxyError> {
    let size = request_head_size(&parts);
    if size > max_head {
        return Err(RequestError::HeadersTooLarge {
            size,
            limit: max_head,
        }
        .into());
    }
    let cluster = route.pick_backend()?;
    let pick = cluster.endpoints.pick()?;
    let upstream = match cluster.protocol {
        Protocol::Http1 => Version::Http1,
        Protocol::Http2 | Protocol::Grpc => Version::Http2,
        Protocol::Auto | Protocol::Tcp => downstream,
    };
    // Without a timeout the upstream future is awaited where it is built: wrapping it
    // would move it (a few hundred bytes) once more per request.
    let sent = match route.timeout {
        None => Ok(send(parts, body, downstream, upstream, &pick).await),
        Some(limit) => {
            resilience::within(limit, send(parts, body, downstream, upstream, &pick)).await
        }
    };
    match sent {
        Ok(Ok(rsp)) => {
            pick.observe();
            Ok(rsp)
        }
        Ok(Err(e)) => {
            pick.observe_failure(pick.endpoint.pool.connect_timeout());
            Err(e)
        }
        Err(e) => {
            pick.observe();
            Err(e.into())
        }
    }
}

async fn send(
    mut parts: Parts,
    body: Incoming,
    downstream: Version,
    upstream: Version,
    pick: &Pick,
) -> Result<Response<ProxyBody>, ProxyError> {
    let upgrade =
        downstream == Version::Http1 && upstream == Version::Http1 && headers::is_upgrade(&parts);
    let client_upgrade = if upgrade {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };
    prepare_request(&mut parts, upstream, upgrade)?;
    let req = Request::from_parts(parts, UpstreamBody::Streaming(body));
    let pool = &pick.endpoint.pool;
    match upstream {
        // Rare paths are boxed: inline they would grow every request's future (and each
        // HTTP/2 stream task hyper spawns copies that future).
        Version::Http1 if upgrade => Box::pin(send_upgrade(req, pool, client_upgrade)).await,
        Version::Http1 => send_h1(req, pool).await,
        Version::Http2 => send_h2(req, pool).await,
    }
}

fn into_proxy(rsp: Response<Incoming>, checkout: Option<Checkout>) -> Response<ProxyBody> {
    let (mut parts, body) = rsp.into_parts();
    prepare_response(&mut parts.headers, false);
    Response::from_parts(parts, ProxyBody::upstream(body, checkout))
}

async fn send_h1(
    mut req: Request<UpstreamBody>,
    pool: &Arc<EndpointPool>,
) -> Result<Response<ProxyBody>, ProxyError> {
    loop {
        let (mut sender, reused) = match pool.take_h1() {
            Some(s) => (s, true),
            None => (Box::pin(pool.connect_h1(false)).await?, false),
        };
        match sender.try_send_request(req).await {
            Ok(rsp) => {
                return Ok(into_proxy(
                    rsp,
                    Some(Checkout {
                        sender,
                        pool: pool.clone(),
                    }),
                ));
            }
            Err(mut e) => match e.take_message() {
                // A pooled connection closed before the request was written: try another.
                Some(r) if reused => req = r,
                _ => return Err(UpstreamError::Http(e.into_error()).into()),
            },
        }
    }
}

/// Sends of one unprocessed request on new HTTP/2 connections. Concurrent requests racing a
/// server's GOAWAY may each be refused on a connection or two before one takes them.
const MAX_REPLAYS: u32 = 4;

async fn send_h2(
    mut req: Request<UpstreamBody>,
    pool: &Arc<EndpointPool>,
) -> Result<Response<ProxyBody>, ProxyError> {
    // A request without a body can go again as it is when the server provably did not
    // process it (a GOAWAY or REFUSED_STREAM race); one with a body streams once.
    let replay = req.body().is_end_stream().then(|| clone_head(&req));
    let mut replays = 0;
    loop {
        let H2Conn {
            generation,
            mut sender,
        } = pool.h2().await?;
        match sender.try_send_request(req).await {
            Ok(rsp) => return Ok(into_proxy(rsp, None)),
            Err(mut e) => {
                let again = match e.take_message() {
                    Some(r) => Some(r),
                    None if is_unprocessed(e.error()) => replay
                        .as_ref()
                        .map(|p| Request::from_parts(p.clone(), UpstreamBody::Empty)),
                    None => None,
                };
                match again {
                    // The connection went away before the request was processed: again, on a
                    // new connection (bounded: a server may refuse everything).
                    Some(r) if replays < MAX_REPLAYS => {
                        pool.discard_h2(generation);
                        replays += 1;
                        req = r;
                    }
                    _ => return Err(UpstreamError::Http(e.into_error()).into()),
                }
            }
        }
    }
}

/// The head of a request, to send it again without a body.
fn clone_head(req: &Request<UpstreamBody>) -> Parts {
    let mut head = Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    *head.headers_mut() = req.headers().clone();
    *head.extensions_mut() = req.extensions().clone();
    head.into_parts().0
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

/// An HTTP/1.1 protocol switch: the request goes on a connection of its own and, on
/// `101 Switching Protocols`, both sides are joined into a byte tunnel.
async fn send_upgrade(
    req: Request<UpstreamBody>,
    pool: &Arc<EndpointPool>,
    client: Option<OnUpgrade>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let mut sender = pool.connect_h1(true).await?;
    let mut rsp = sender
        .send_request(req)
        .await
        .map_err(UpstreamError::Http)?;
    if rsp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(into_proxy(rsp, None));
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
    Ok(Response::from_parts(parts, ProxyBody::upstream(body, None)))
}
