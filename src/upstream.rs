//! Upstream connections to one endpoint: a stack of idle HTTP/1.1 connections (closed after
//! an idle timeout) and one multiplexed HTTP/2 connection, replaced when it closes or goes away.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::UpstreamError;

/// A request body sent upstream: the client's, streamed, or none (a request replayed on a
/// new connection because the server provably did not process it).
pub enum UpstreamBody {
    Streaming(Incoming),
    Empty,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Streaming(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Streaming(b) => b.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Streaming(b) => b.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// One HTTP/2 connection, numbered so that a request failing on an old connection does not
/// discard a newer one.
pub struct H2Conn {
    pub generation: u64,
    pub sender: http2::SendRequest<UpstreamBody>,
}

struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

/// Connections to one endpoint; shared by every request a snapshot sends there and carried
/// over to the next snapshot while the endpoint stays.
pub struct EndpointPool {
    addr: SocketAddr,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Option<(u64, http2::SendRequest<UpstreamBody>)>>,
    h2_generation: std::sync::atomic::AtomicU64,
    /// Serialises h2 connects so a burst of requests opens one connection, not many.
    h2_connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for EndpointPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointPool")
            .field("addr", &self.addr)
            .finish()
    }
}

impl EndpointPool {
    pub fn new(
        addr: SocketAddr,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        EndpointPool {
            addr,
            connect_timeout,
            idle_timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_generation: std::sync::atomic::AtomicU64::new(0),
            h2_connecting: tokio::sync::Mutex::new(()),
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Opens a TCP connection within the connect timeout.
    pub async fn connect_tcp(&self) -> Result<TcpStream, UpstreamError> {
        let addr = self.addr;
        match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(source)) => Err(UpstreamError::Connect { addr, source }),
            Err(_) => Err(UpstreamError::ConnectTimeout {
                addr,
                after: self.connect_timeout,
            }),
        }
    }

    /// An idle HTTP/1.1 connection ready for a request, if one is pooled. The stack is in
    /// return order, so once the newest entry has expired every older one has too.
    pub fn take_h1(&self) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() >= self.idle_timeout {
                idle.clear();
                return None;
            }
            if entry.sender.is_ready() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Returns a connection whose last response has been read in full. Past `max_idle` the
    /// connection is closed instead.
    pub fn put_h1(&self, sender: http1::SendRequest<UpstreamBody>) {
        if !sender.is_ready() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// A new HTTP/1.1 connection; `upgrades` keeps it usable for a protocol switch.
    pub async fn connect_h1(
        &self,
        upgrades: bool,
    ) -> Result<http1::SendRequest<UpstreamBody>, UpstreamError> {
        let tcp = self.connect_tcp().await?;
        let (sender, conn) = http1::Builder::new()
            .preserve_header_case(true)
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(UpstreamError::Http)?;
        let addr = self.addr;
        tokio::spawn(async move {
            let res = if upgrades {
                conn.with_upgrades().await
            } else {
                conn.await
            };
            if let Err(e) = res {
                tracing::debug!(%addr, error = %e, "upstream http/1 connection ended");
            }
        });
        Ok(sender)
    }

    /// The endpoint's HTTP/2 connection, opened if there is none or the last one closed.
    pub async fn h2(&self) -> Result<H2Conn, UpstreamError> {
        if let Some(c) = self.live_h2() {
            return Ok(c);
        }
        Box::pin(self.connect_h2()).await
    }

    /// Opens the HTTP/2 connection; one caller at a time, the others then share it.
    async fn connect_h2(&self) -> Result<H2Conn, UpstreamError> {
        let _connecting = self.h2_connecting.lock().await;
        if let Some(c) = self.live_h2() {
            return Ok(c);
        }
        let tcp = self.connect_tcp().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .adaptive_window(true)
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(UpstreamError::Http)?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream http/2 connection ended");
            }
        });
        let generation = self
            .h2_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if let Ok(mut slot) = self.h2.lock() {
            *slot = Some((generation, sender.clone()));
        }
        Ok(H2Conn { generation, sender })
    }

    fn live_h2(&self) -> Option<H2Conn> {
        let mut slot = self.h2.lock().ok()?;
        match slot.as_ref() {
            Some((generation, s)) if !s.is_closed() => Some(H2Conn {
                generation: *generation,
                sender: s.clone(),
            }),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    /// Forgets HTTP/2 connection `generation` (it refused a request, e.g. after GOAWAY) so the
    /// next request reconnects; a newer connection already in its place stays.
    pub fn discard_h2(&self, generation: u64) {
        if let Ok(mut slot) = self.h2.lock()
            && slot.as_ref().is_some_and(|(g, _)| *g == generation)
        {
            *slot = None;
        }
    }
}

/// Keeps a pooled sender until the response body ends, then returns it to its pool.
pub struct Checkout {
    pub sender: http1::SendRequest<UpstreamBody>,
    pub pool: Arc<EndpointPool>,
}
