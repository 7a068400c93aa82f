//! HTTP on both sides of the proxy: hyper servers for accepted connections, the attempt that
//! sends a request on an endpoint's pooled connection (`upstream` owns the connections),
//! header hygiene, protocol upgrades, and the single place (`respond`) that turns a proxy
//! error into a status and an `x-skiff-reason`.

mod body;
pub mod forward;
pub mod headers;
pub mod observe;
mod respond;
mod server;

pub use body::ProxyBody;
pub use forward::{X_SKIFF_ATTEMPTS, forward};
pub use respond::{ProxyError, raw_response, synthesize};
pub use server::{Handler, serve};

/// The HTTP version spoken on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http1,
    Http2,
}

/// A request the proxy refuses on its own.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("malformed request: {reason}")]
    Malformed { reason: &'static str },
    #[error("request head of {size} bytes is over the {limit}-byte limit")]
    HeadersTooLarge { size: usize, limit: usize },
}
