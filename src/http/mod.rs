//! HTTP on both sides of the proxy: hyper servers for accepted connections, pooled hyper
//! clients to endpoints, header hygiene, protocol upgrades, and the single place
//! (`respond`) that turns a proxy error into a status and an `x-skiff-reason`.

mod body;
pub mod forward;
pub mod headers;
pub mod pool;
mod respond;
mod server;

use std::{net::SocketAddr, time::Duration};

pub use body::ProxyBody;
pub use forward::forward;
pub use respond::{ProxyError, raw_response, synthesize};
pub use server::{Handler, serve};

/// The HTTP version spoken on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http1,
    Http2,
}

/// Why a request could not reach an upstream or came back broken.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {addr}: no answer within {after:?}")]
    ConnectTimeout { addr: SocketAddr, after: Duration },
    #[error("upstream: {0}")]
    Http(#[source] hyper::Error),
}

/// A request the proxy refuses on its own.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("malformed request: {reason}")]
    Malformed { reason: &'static str },
    #[error("request head of {size} bytes is over the {limit}-byte limit")]
    HeadersTooLarge { size: usize, limit: usize },
}
