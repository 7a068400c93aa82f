//! Upstream connections to one endpoint: a stack of idle HTTP/1.1 connections (closed after
//! an idle timeout) and one multiplexed HTTP/2 connection, replaced when it closes or goes away.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::UpstreamError;

/// Request bodies sent upstream.
pub type UpstreamBody = Incoming;

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
    h2: Mutex<Option<http2::SendRequest<UpstreamBody>>>,
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
    pub async fn h2(&self) -> Result<http2::SendRequest<UpstreamBody>, UpstreamError> {
        if let Some(s) = self.live_h2() {
            return Ok(s);
        }
        Box::pin(self.connect_h2()).await
    }

    /// Opens the HTTP/2 connection; one caller at a time, the others then share it.
    async fn connect_h2(&self) -> Result<http2::SendRequest<UpstreamBody>, UpstreamError> {
        let _connecting = self.h2_connecting.lock().await;
        if let Some(s) = self.live_h2() {
            return Ok(s);
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
        if let Ok(mut slot) = self.h2.lock() {
            *slot = Some(sender.clone());
        }
        Ok(sender)
    }

    fn live_h2(&self) -> Option<http2::SendRequest<UpstreamBody>> {
        let mut slot = self.h2.lock().ok()?;
        match slot.as_ref() {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    /// Forgets the h2 connection (after it refused a request), so the next request reconnects.
    pub fn discard_h2(&self) {
        if let Ok(mut slot) = self.h2.lock() {
            *slot = None;
        }
    }
}

/// Keeps a pooled sender until the response body ends, then returns it to its pool.
pub struct Checkout {
    pub sender: http1::SendRequest<UpstreamBody>,
    pub pool: Arc<EndpointPool>,
}
