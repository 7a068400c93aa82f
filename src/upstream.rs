//! Connections to one endpoint: TCP connects within the connect timeout, a stack of idle
//! HTTP/1.1 connections (closed after an idle timeout) and one multiplexed HTTP/2 connection,
//! opened single-flight and replaced when it closes or goes away. Every connection is counted
//! against its service's breaker for as long as it is open. [`EndpointPool::connect`] is the
//! one connect point: mesh mTLS to an endpoint with an identity, plaintext otherwise.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::{
    body::Incoming,
    client::conn::{TrySendError, http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{net::TcpStream, sync::watch};
use tokio_rustls::client::TlsStream;

use crate::{
    io::Either,
    resilience::{Breaker, ConnGuard, Overflow, ReplayBody},
    tls::{Inner, MeshTls, Side, TlsError},
};

/// A connection to an endpoint: plaintext, or mesh TLS to its identity.
pub type UpstreamIo = Either<TcpStream, TlsStream<TcpStream>>;

/// How to reach a meshed endpoint: this proxy's mesh TLS and the identity to expect.
#[derive(Clone, Debug)]
pub struct MeshPeer {
    pub tls: Arc<MeshTls>,
    pub identity: Arc<str>,
}

/// Why no connection to an endpoint could be had. Cloneable: one HTTP/2 connect is shared by
/// every request waiting on it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr}: {source}")]
    Refused {
        addr: SocketAddr,
        source: Arc<std::io::Error>,
    },
    #[error("connect to {addr}: no answer within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        source: Arc<hyper::Error>,
    },
    #[error("mesh tls to {addr}: {source}")]
    Tls { addr: SocketAddr, source: TlsError },
    #[error(transparent)]
    Overflow(#[from] Overflow),
}

impl ConnectError {
    fn handshake(addr: SocketAddr, e: hyper::Error) -> Self {
        ConnectError::Handshake {
            addr,
            source: Arc::new(e),
        }
    }
}

/// Why a request could not reach an upstream or came back broken.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("upstream: {0}")]
    Http(#[source] hyper::Error),
}

/// A request body sent upstream: the client's, streamed once or replayable, or none.
pub enum UpstreamBody {
    Streaming(Incoming),
    Replay(ReplayBody<Incoming>),
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
            UpstreamBody::Replay(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Streaming(b) => b.is_end_stream(),
            UpstreamBody::Replay(b) => b.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Streaming(b) => b.size_hint(),
            UpstreamBody::Replay(b) => b.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// One HTTP/2 connection, numbered so that a request failing on an old connection does not
/// discard a newer one.
#[derive(Clone)]
pub struct H2Conn {
    pub generation: u64,
    pub sender: http2::SendRequest<UpstreamBody>,
}

struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

/// The result of an HTTP/2 connect, as every waiter sees it.
type H2Result = Option<Result<H2Conn, ConnectError>>;

#[derive(Default)]
struct H2Slot {
    conn: Option<H2Conn>,
    /// A connect in progress; waiters subscribe instead of connecting again.
    connecting: Option<watch::Receiver<H2Result>>,
}

/// Connections to one endpoint; shared by every request a snapshot sends there and carried
/// over to the next snapshot while the endpoint stays.
pub struct EndpointPool {
    addr: SocketAddr,
    /// Where else the endpoint may answer; see [`EndpointPool::with_alternate`].
    alternate: Option<Alternate>,
    mesh: Option<MeshPeer>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<H2Slot>,
    h2_generation: AtomicU64,
}

/// A second address of an endpoint, dialled from a source address of its own when the first
/// refuses, and preferred while it is the one that answers.
struct Alternate {
    addr: SocketAddr,
    source: SocketAddr,
    preferred: AtomicBool,
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
        mesh: Option<MeshPeer>,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        EndpointPool {
            addr,
            alternate: None,
            mesh,
            connect_timeout,
            idle_timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(H2Slot::default()),
            h2_generation: AtomicU64::new(0),
        }
    }

    /// Also dials `addr`, from `source`, when the endpoint's own address refuses (and first,
    /// while that is the one that answers). The redirected inbound side uses it for an app
    /// that listens on the pod's address only, not on loopback.
    pub fn with_alternate(mut self, addr: SocketAddr, source: SocketAddr) -> Self {
        self.alternate = Some(Alternate {
            addr,
            source,
            preferred: AtomicBool::new(false),
        });
        self
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The identity a new connection proves now: `None` while connections go in plaintext
    /// (no identity on either side, or a mesh without a CA). What spans and logs name.
    pub fn verified_identity(&self) -> Option<&Arc<str>> {
        self.mesh
            .as_ref()
            .filter(|m| m.tls.is_ready())
            .map(|m| &m.identity)
    }

    /// Opens a connection carrying `inner`, counted by `breaker` while the returned guard
    /// lives: TCP within the connect timeout, then mesh TLS when the endpoint has an
    /// identity and this proxy holds a certificate (the handshake within the same timeout).
    pub async fn connect(
        &self,
        breaker: &Breaker,
        inner: Inner,
    ) -> Result<(UpstreamIo, ConnGuard), ConnectError> {
        let addr = self.addr;
        let mesh = match &self.mesh {
            Some(m) if m.tls.is_ready() => m,
            // Identity on and the mesh has a CA, but no certificate yet: never plaintext to a
            // meshed peer (a strict one would refuse it, a permissive one would not know us).
            Some(m) if !m.tls.anchors().der.is_empty() => {
                let source = TlsError::NoCertificate;
                m.tls
                    .metrics
                    .handshake(Side::Outbound, Some(source.reason()));
                return Err(ConnectError::Tls { addr, source });
            }
            // No identity here, or a mesh without a CA: plaintext.
            _ => {
                return self
                    .connect_tcp(breaker)
                    .await
                    .map(|(t, g)| (Either::Left(t), g));
            }
        };
        let (tcp, guard) = self.connect_tcp(breaker).await?;
        match tokio::time::timeout(
            self.connect_timeout,
            mesh.tls.connect(tcp, inner, &mesh.identity),
        )
        .await
        {
            Ok(Ok(tls)) => Ok((Either::Right(tls), guard)),
            Ok(Err(source)) => Err(ConnectError::Tls { addr, source }),
            Err(_) => Err(ConnectError::Timeout {
                addr,
                after: self.connect_timeout,
            }),
        }
    }

    async fn connect_tcp(&self, breaker: &Breaker) -> Result<(TcpStream, ConnGuard), ConnectError> {
        let guard = breaker.connection()?;
        let Some(alt) = &self.alternate else {
            return Ok((self.dial(self.addr, None).await?, guard));
        };
        let alt_first = alt.preferred.load(Ordering::Relaxed);
        let first = if alt_first {
            self.dial(alt.addr, Some(alt.source)).await
        } else {
            self.dial(self.addr, None).await
        };
        match first {
            Ok(s) => Ok((s, guard)),
            Err(ConnectError::Refused { source, .. })
                if source.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                let second = if alt_first {
                    self.dial(self.addr, None).await?
                } else {
                    self.dial(alt.addr, Some(alt.source)).await?
                };
                alt.preferred.store(!alt_first, Ordering::Relaxed);
                Ok((second, guard))
            }
            Err(e) => Err(e),
        }
    }

    /// One TCP connect within the connect timeout, from `source` when given.
    async fn dial(
        &self,
        addr: SocketAddr,
        source: Option<SocketAddr>,
    ) -> Result<TcpStream, ConnectError> {
        let refused = |source: std::io::Error| ConnectError::Refused {
            addr,
            source: Arc::new(source),
        };
        let connect = async {
            match source {
                None => TcpStream::connect(addr).await,
                Some(from) => {
                    let socket = match from {
                        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                    };
                    socket.bind(from)?;
                    socket.connect(addr).await
                }
            }
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(source)) => Err(refused(source)),
            Err(_) => Err(ConnectError::Timeout {
                addr,
                after: self.connect_timeout,
            }),
        }
    }

    /// An idle HTTP/1.1 connection ready for a request, if one is pooled. The stack is in
    /// return order, so once the newest entry has expired every older one has too.
    pub fn take_h1(&self) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
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
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// A new HTTP/1.1 connection; `upgrades` keeps it usable for a protocol switch. The
    /// request waits as a pending request of `breaker` meanwhile.
    pub async fn connect_h1(
        &self,
        upgrades: bool,
        breaker: &Breaker,
    ) -> Result<http1::SendRequest<UpstreamBody>, ConnectError> {
        let _pending = breaker.pending()?;
        let (io, guard) = self.connect(breaker, Inner::Http1).await?;
        let addr = self.addr;
        let (sender, conn) = http1::Builder::new()
            .preserve_header_case(true)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| ConnectError::handshake(addr, e))?;
        tokio::spawn(async move {
            let _counted = guard;
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

    /// The endpoint's HTTP/2 connection if one is open: the fast path, no await.
    pub fn live_h2(&self) -> Option<H2Conn> {
        let slot = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        slot.conn
            .as_ref()
            .filter(|c| !c.sender.is_closed())
            .cloned()
    }

    /// The endpoint's HTTP/2 connection, opened if there is none or the last one closed.
    /// Requests arriving while it opens wait for that one connect (single-flight), so each
    /// waits at most one connect timeout.
    pub async fn h2(self: &Arc<Self>, breaker: &Breaker) -> Result<H2Conn, ConnectError> {
        let mut rx = {
            let mut slot = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
            match &slot.conn {
                Some(c) if !c.sender.is_closed() => return Ok(c.clone()),
                Some(_) => slot.conn = None,
                None => {}
            }
            match &slot.connecting {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    slot.connecting = Some(rx.clone());
                    let pool = self.clone();
                    let breaker = breaker.clone();
                    tokio::spawn(async move {
                        let result = pool.open_h2(&breaker).await;
                        let mut slot = pool.h2.lock().unwrap_or_else(PoisonError::into_inner);
                        slot.connecting = None;
                        if let Ok(c) = &result {
                            slot.conn = Some(c.clone());
                        }
                        let _ = tx.send(Some(result));
                    });
                    rx
                }
            }
        };
        let _pending = breaker.pending()?;
        let settled = rx.wait_for(Option::is_some).await;
        match settled.as_deref() {
            Ok(Some(result)) => result.clone(),
            // The connect task ended without a word: it panicked or the runtime is stopping.
            Ok(None) | Err(_) => Err(ConnectError::Timeout {
                addr: self.addr,
                after: self.connect_timeout,
            }),
        }
    }

    async fn open_h2(self: &Arc<Self>, breaker: &Breaker) -> Result<H2Conn, ConnectError> {
        let (io, guard) = self.connect(breaker, Inner::Http2).await?;
        let addr = self.addr;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .adaptive_window(true)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| ConnectError::handshake(addr, e))?;
        let generation = self.h2_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            let _counted = guard;
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream http/2 connection ended");
            }
            // See `discard_h2`: a request that raced this end comes back unsent.
            if let Some(pool) = pool.upgrade() {
                pool.discard_h2(generation);
            }
        });
        Ok(H2Conn { generation, sender })
    }

    /// Forgets HTTP/2 connection `generation` (it refused a request, e.g. after GOAWAY, or
    /// its task ended) so the next request reconnects; a newer connection already in its
    /// place stays.
    ///
    /// Why a closed connection must not linger here, nor in a request awaiting its response:
    /// a request queued at the very moment the connection's task ends can land in the request
    /// channel after the task stopped reading it. It is handed back, unsent, only when the
    /// channel's last sender drops; a sender kept here or by that request itself would leave
    /// it waiting forever.
    pub fn discard_h2(&self, generation: u64) {
        let mut slot = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        if slot
            .conn
            .as_ref()
            .is_some_and(|c| c.generation == generation)
        {
            slot.conn = None;
        }
    }
}

/// What an HTTP/1.1 send gives back: the sender, unless its connection ended while the
/// request waited, and the response head or why there is none.
pub type H1Sent = (
    Option<http1::SendRequest<UpstreamBody>>,
    Result<http::Response<Incoming>, TrySendError<http::Request<UpstreamBody>>>,
);

/// Sends `req` on an HTTP/1.1 connection and waits for the response head.
///
/// A request queued just as the connection's task ends is handed back only when the
/// connection's last sender drops (see [`EndpointPool::discard_h2`]), and an HTTP/1.1 sender
/// is the only one. So the sender is watched while the request waits: once its connection is
/// closed it is dropped, which hands such a request back (unsent, so it can go again) instead
/// of leaving it waiting forever.
pub async fn send_h1(
    mut sender: http1::SendRequest<UpstreamBody>,
    req: http::Request<UpstreamBody>,
) -> H1Sent {
    let mut sending = std::pin::pin!(sender.try_send_request(req));
    let first = std::future::poll_fn(|cx| match sending.as_mut().poll(cx) {
        Poll::Ready(r) => Poll::Ready(Some(r)),
        // While its request is out a connection wants no other, so `poll_ready` only wakes
        // this task when the connection closes.
        Poll::Pending => match sender.poll_ready(cx) {
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Ready(Ok(())) | Poll::Pending => Poll::Pending,
        },
    })
    .await;
    match first {
        Some(r) => (Some(sender), r),
        None => {
            drop(sender);
            (None, sending.await)
        }
    }
}

/// Keeps a pooled sender until the response body ends, then returns it to its pool.
pub struct Checkout {
    pub sender: http1::SendRequest<UpstreamBody>,
    pub pool: Arc<EndpointPool>,
}

#[cfg(test)]
mod tests {
    use tokio::{io::AsyncReadExt, net::TcpListener};

    use super::*;
    use crate::resilience::ResilienceMetrics;

    fn breaker() -> Breaker {
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = ResilienceMetrics::register(&mut reg).cluster("svc");
        Breaker::new("svc".into(), None, Arc::default(), metrics)
    }

    /// An endpoint that reads what comes and hangs up, as an HTTP/1-only server answers the
    /// HTTP/2 preface.
    async fn hang_up_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound address");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn an_h2_connection_that_ends_leaves_the_slot() {
        let addr = hang_up_server().await;
        let pool = Arc::new(EndpointPool::new(
            addr,
            None,
            Duration::from_secs(5),
            Duration::from_secs(60),
            4,
        ));
        let H2Conn { generation, sender } = pool
            .h2(&breaker())
            .await
            .expect("the handshake only writes the preface");
        drop(sender);
        // No request follows: the connection's own task must take it out of the slot, or its
        // sender keeps the request channel (and anything stranded in it) alive.
        let left = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let pooled = pool
                    .h2
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .conn
                    .is_some();
                if !pooled {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            left.is_ok(),
            "connection {generation} is still pooled after its server hung up"
        );
        assert!(pool.live_h2().is_none());
    }
}
