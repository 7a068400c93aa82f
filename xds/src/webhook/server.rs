//! The webhook's HTTPS listener: TLS (rustls on ring, certificate from `cert`), HTTP/1.1 and
//! HTTP/2, one route `POST /inject` with a bounded body. Each connection runs in its own task,
//! owned by the accept loop, so stopping the loop ends them all.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_rustls::TlsAcceptor;

use super::{cert::ServingCert, error::WebhookError, review};
use crate::inject::Settings;

/// The only path served.
pub const PATH: &str = "/inject";

/// The largest request body read. An AdmissionReview of a pod is a few KiB; the API server
/// itself refuses objects over about 1.5 MiB, so this leaves room and bounds memory.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A client has this long to finish the TLS handshake, and to send a request head. The API
/// server's default webhook timeout is 10s; nothing useful waits longer.
const CLIENT_DEADLINE: Duration = Duration::from_secs(10);

/// After a failed accept (out of descriptors, say), the loop pauses before the next one
/// rather than spinning on the same error.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The rustls server configuration: ring only, TLS 1.2 and 1.3, no client certificate (the
/// API server authenticates us, not the reverse), `h2` and `http/1.1` offered.
pub fn tls_config(cert: Arc<ServingCert>) -> Result<rustls::ServerConfig, WebhookError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| WebhookError::Tls { source })?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts on `listener` until the task running this is aborted.
pub async fn serve(listener: TcpListener, tls: rustls::ServerConfig, settings: Arc<Settings>) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let settings = settings.clone();
                    connections.spawn(async move {
                        if let Err(reason) = connection(stream, acceptor, settings).await {
                            tracing::debug!(%peer, %reason, "webhook connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            },
            // Reaps finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    settings: Arc<Settings>,
) -> Result<(), String> {
    let tls = tokio::time::timeout(CLIENT_DEADLINE, acceptor.accept(stream))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let service = hyper::service::service_fn(move |req| {
        let settings = settings.clone();
        async move { Ok::<_, Infallible>(handle(req, &settings).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(CLIENT_DEADLINE);
    builder
        .serve_connection(TokioIo::new(tls), service)
        .await
        .map_err(|e| e.to_string())
}

async fn handle(req: Request<Incoming>, settings: &Settings) -> Response<Full<Bytes>> {
    if req.uri().path() != PATH {
        return text(
            StatusCode::NOT_FOUND,
            "not found; the webhook serves POST /inject",
        );
    }
    if req.method() != Method::POST {
        let mut rsp = text(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        rsp.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        return rsp;
    }
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is over the webhook's limit of 4 MiB",
            );
        }
        Err(e) => {
            tracing::debug!(error = %e, "reading a webhook request body");
            return text(StatusCode::BAD_REQUEST, "the body could not be read");
        }
    };
    match review::answer(&body, settings) {
        Ok(json) => {
            let mut rsp = Response::new(Full::new(Bytes::from(json)));
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            rsp
        }
        Err(e) => {
            tracing::debug!(error = %e, "not an AdmissionReview");
            text(StatusCode::BAD_REQUEST, &e.to_string())
        }
    }
}

fn text(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}
