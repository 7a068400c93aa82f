//! The one mapping from proxy errors to what a client sees: a status, an `x-skiff-reason`
//! token, `retry-after` on a rate limit and, for gRPC callers, the matching `grpc-status` in
//! trailers-only form.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header::HeaderName};

use super::{ProxyBody, RequestError};
use crate::{
    authz::AuthzError,
    balance::BalanceError,
    resilience::ResilienceError,
    route::RouteError,
    upstream::{ConnectError, UpstreamError},
};

pub const SKIFF_REASON: HeaderName = HeaderName::from_static("x-skiff-reason");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Every way the proxy can fail a request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Balance(#[from] BalanceError),
    #[error(transparent)]
    Resilience(#[from] ResilienceError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Authz(#[from] AuthzError),
}

impl ProxyError {
    /// The status and reason token; no wildcard arm, so a new variant must be given one here.
    pub fn status_and_reason(&self) -> (StatusCode, &'static str) {
        use {ProxyError as P, StatusCode as S};
        match self {
            P::Route(RouteError::UnknownService { .. }) => {
                (S::SERVICE_UNAVAILABLE, "unknown-service")
            }
            P::Route(RouteError::NoBackend { .. }) => (S::SERVICE_UNAVAILABLE, "no-backend"),
            P::Balance(BalanceError::NoHealthyEndpoints { .. }) => {
                (S::SERVICE_UNAVAILABLE, "no-healthy-endpoints")
            }
            P::Resilience(ResilienceError::Timeout { .. }) => (S::GATEWAY_TIMEOUT, "timeout"),
            P::Resilience(ResilienceError::Overflow(_))
            | P::Upstream(UpstreamError::Connect(ConnectError::Overflow(_))) => {
                (S::SERVICE_UNAVAILABLE, "overflow")
            }
            P::Resilience(ResilienceError::RateLimited { .. }) => {
                (S::TOO_MANY_REQUESTS, "rate-limited")
            }
            P::Resilience(ResilienceError::FaultAbort { abort }) => (
                S::from_u16(abort.status).unwrap_or(S::SERVICE_UNAVAILABLE),
                "fault-injected",
            ),
            P::Upstream(UpstreamError::Connect(
                ConnectError::Refused { .. }
                | ConnectError::Timeout { .. }
                | ConnectError::Handshake { .. },
            )) => (S::SERVICE_UNAVAILABLE, "connect-failed"),
            P::Upstream(UpstreamError::Connect(ConnectError::Tls { source, .. })) => {
                if source.is_identity_failure() {
                    (S::BAD_GATEWAY, "peer-identity-mismatch")
                } else {
                    (S::SERVICE_UNAVAILABLE, "connect-failed")
                }
            }
            P::Authz(_) => (S::FORBIDDEN, "unauthorized"),
            P::Upstream(UpstreamError::Http(_)) => (S::BAD_GATEWAY, "upstream-failed"),
            P::Request(RequestError::Malformed { .. }) => (S::BAD_REQUEST, "bad-request"),
            P::Request(RequestError::HeadersTooLarge { .. }) => {
                (S::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers-too-large")
            }
        }
    }
}

/// gRPC status code for an HTTP status the proxy produced (gRPC's HTTP-to-status mapping).
fn grpc_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 431 => "13",       // INTERNAL
        401 => "16",             // UNAUTHENTICATED
        403 => "7",              // PERMISSION_DENIED
        404 => "12",             // UNIMPLEMENTED
        429 | 502 | 503 => "14", // UNAVAILABLE
        504 => "4",              // DEADLINE_EXCEEDED
        _ => "2",                // UNKNOWN
    }
}

/// The response for a failed request.
pub fn synthesize(err: &ProxyError, grpc: bool) -> Response<ProxyBody> {
    let (status, reason) = err.status_and_reason();
    let grpc_override = match err {
        ProxyError::Resilience(ResilienceError::FaultAbort { abort }) => abort.grpc,
        _ => None,
    };
    let mut rsp = respond_with(status, reason, grpc.then_some(grpc_override));
    if let ProxyError::Resilience(ResilienceError::RateLimited { retry_after, .. }) = err {
        rsp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(*retry_after));
    }
    rsp
}

/// A response the proxy makes itself with a reason token. `grpc`: the caller speaks gRPC, and
/// the `grpc-status` to send when it is not the one the HTTP status maps to.
fn respond_with(
    status: StatusCode,
    reason: &'static str,
    grpc: Option<Option<u32>>,
) -> Response<ProxyBody> {
    let reason_value = HeaderValue::from_static(reason);
    if let Some(code) = grpc {
        let mut rsp = Response::new(ProxyBody::empty());
        let h = rsp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        let code = match code {
            Some(c) => HeaderValue::from(c),
            None => HeaderValue::from_static(grpc_code(status)),
        };
        h.insert(GRPC_STATUS, code);
        h.insert(GRPC_MESSAGE, reason_value.clone());
        h.insert(SKIFF_REASON, reason_value);
        return rsp;
    }
    let mut rsp = Response::new(ProxyBody::full(Bytes::from_static(reason.as_bytes())));
    *rsp.status_mut() = status;
    let h = rsp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    h.insert(SKIFF_REASON, reason_value);
    rsp
}

/// A complete HTTP/1.1 error response as bytes, for a connection hyper never saw (a first
/// request head refused during detection). The connection closes after it.
pub fn raw_response(err: &ProxyError) -> Vec<u8> {
    let (status, reason) = err.status_and_reason();
    let phrase = status.canonical_reason().unwrap_or("Error");
    format!(
        "HTTP/1.1 {} {phrase}\r\ncontent-type: text/plain\r\n{SKIFF_REASON}: {reason}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}",
        status.as_u16(),
        reason.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_callers_get_trailers_only() {
        let rsp = respond_with(StatusCode::SERVICE_UNAVAILABLE, "no-backend", Some(None));
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()["grpc-status"], "14");
        assert_eq!(rsp.headers()[SKIFF_REASON], "no-backend");
    }
}
