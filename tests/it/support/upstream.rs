//! Servers behind the proxy. Each binds `127.0.0.1:0` before its address is handed out (so no
//! test races a listener) and stops when dropped.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{SinkExt, Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{
    body::Frame,
    server::conn::{http1, http2},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use skiff_xds::pb::{
    EchoReply, EchoRequest,
    echo_server::{Echo, EchoServer},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::{JoinHandle, JoinSet},
};

use super::{STEP, within};

/// Aborts the server's accept loop, and with it its connections, when dropped.
pub(super) struct Task(pub(super) JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// Accepts connections until dropped, running `serve` for each on a task owned by the loop.
pub(super) fn accept_loop<F, Fut>(listener: TcpListener, serve: F) -> Task
where
    F: Fn(TcpStream, usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    Task(tokio::spawn(async move {
        let mut conns = JoinSet::new();
        let mut next_id = 0;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    conns.spawn(serve(stream, next_id));
                    next_id += 1;
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    }))
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub target: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Which accepted connection carried it (0, 1, ...).
    pub conn: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Log {
    requests: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
    /// Connections open now.
    open: AtomicUsize,
    changed: Notify,
}

impl Log {
    fn record(&self, seen: Seen) {
        self.requests.lock().expect("upstream log lock").push(seen);
        self.changed.notify_waiters();
    }

    fn requests(&self) -> Vec<Seen> {
        self.requests.lock().expect("upstream log lock").clone()
    }

    async fn wait_requests(&self, n: usize) {
        within(&format!("upstream waiting for {n} requests"), STEP, async {
            loop {
                let changed = self.changed.notified();
                if self.requests.lock().expect("upstream log lock").len() >= n {
                    return;
                }
                changed.await;
            }
        })
        .await;
    }
}

/// An HTTP server speaking HTTP/1.1 and h2c (prior knowledge) on one port.
///
/// Every response carries `x-served-by: NAME`, `x-echo-version` and `x-echo-method`. The body
/// echoes the request body, or is `NAME METHOD TARGET` when the request had none. Request
/// headers steer it: `x-delay-ms` (wait before answering), `x-status` (answer with it),
/// `x-chunked-response: N` (body in N frames, no length: chunked on HTTP/1.1),
/// `x-want-trailers` (HTTP/2: trailers `x-trailer: done` and `x-echo-len`).
pub struct HttpUpstream {
    addr: SocketAddr,
    log: Arc<Log>,
    _task: Task,
}

/// Options of an [`HttpUpstream`].
pub struct HttpUpstreamBuilder {
    name: String,
    delay: Duration,
    status: StatusCode,
}

impl HttpUpstreamBuilder {
    /// Adds `delay` before every response. Default: none.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Answers every request with `status` (unless `x-status` says otherwise). Default: 200.
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub async fn start(self) -> HttpUpstream {
        let listener = bind().await;
        let addr = listener.local_addr().expect("bound address");
        let log = Arc::new(Log::default());
        let cfg = Arc::new(self);
        let task = accept_loop(listener, {
            let log = log.clone();
            move |stream, conn| {
                let (cfg, log) = (cfg.clone(), log.clone());
                async move {
                    log.open.fetch_add(1, Ordering::SeqCst);
                    serve_http(stream, conn, cfg, log.clone()).await;
                    log.open.fetch_sub(1, Ordering::SeqCst);
                }
            }
        });
        HttpUpstream {
            addr,
            log,
            _task: task,
        }
    }
}

impl HttpUpstream {
    pub fn builder(name: &str) -> HttpUpstreamBuilder {
        HttpUpstreamBuilder {
            name: name.to_owned(),
            delay: Duration::ZERO,
            status: StatusCode::OK,
        }
    }

    pub async fn start(name: &str) -> HttpUpstream {
        HttpUpstream::builder(name).start().await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.log.requests()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.log.connections.load(Ordering::SeqCst)
    }

    /// Connections open now (accepted and not yet closed).
    pub fn open_connections(&self) -> usize {
        self.log.open.load(Ordering::SeqCst)
    }

    /// Returns once `n` requests have arrived (their bodies read, before any delay).
    pub async fn wait_requests(&self, n: usize) {
        self.log.wait_requests(n).await;
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

async fn serve_http(stream: TcpStream, conn: usize, cfg: Arc<HttpUpstreamBuilder>, log: Arc<Log>) {
    log.connections.fetch_add(1, Ordering::SeqCst);
    serve_h1_or_h2c(stream, move |req| {
        handle_http(req, conn, cfg.clone(), log.clone())
    })
    .await;
}

/// Serves one connection with `handle`: as h2c when it opens with the HTTP/2 preface (prior
/// knowledge), else as HTTP/1.1. Returns when the connection ends.
pub(super) async fn serve_h1_or_h2c<F, Fut>(mut stream: TcpStream, handle: F)
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<UpstreamBody>, Infallible>> + Send + 'static,
{
    // Read just enough to tell the h2 preface from an HTTP/1 request line.
    let mut head = vec![0u8; H2_PREFACE.len()];
    let mut n = 0;
    while n < head.len() {
        match stream.read(&mut head[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(r) => n += r,
        }
        if head[..n] != H2_PREFACE[..n] {
            break;
        }
    }
    head.truncate(n);
    let is_h2 = head == H2_PREFACE;
    let io = TokioIo::new(Prefixed {
        prefix: Bytes::from(head),
        inner: stream,
    });
    let svc = service_fn(handle);
    if is_h2 {
        let _ = http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc)
            .await;
    } else {
        let _ = http1::Builder::new().serve_connection(io, svc).await;
    }
}

pub(super) type UpstreamBody = BoxBody<Bytes, Infallible>;

async fn handle_http(
    req: Request<hyper::body::Incoming>,
    conn: usize,
    cfg: Arc<HttpUpstreamBuilder>,
    log: Arc<Log>,
) -> Result<Response<UpstreamBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let delay_ms: u64 = header("x-delay-ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let status = header("x-status")
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok());
    let chunks: usize = header("x-chunked-response")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let want_trailers = header("x-want-trailers").is_some();
    log.record(Seen {
        method: parts.method.clone(),
        target: target.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        body: body.clone(),
        conn,
    });

    let delay = cfg.delay + Duration::from_millis(delay_ms);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let reply = if body.is_empty() {
        Bytes::from(format!("{} {} {}", cfg.name, parts.method, target))
    } else {
        body
    };
    let reply_len = reply.len();
    let out: UpstreamBody = if chunks > 0 || (want_trailers && parts.version == Version::HTTP_2) {
        let step = reply_len.div_ceil(chunks.max(1)).max(1);
        let mut frames: Vec<Frame<Bytes>> = reply
            .chunks(step)
            .map(|c| Frame::data(Bytes::copy_from_slice(c)))
            .collect();
        if want_trailers && parts.version == Version::HTTP_2 {
            let mut t = HeaderMap::new();
            t.insert("x-trailer", HeaderValue::from_static("done"));
            t.insert("x-echo-len", HeaderValue::from(reply_len));
            frames.push(Frame::trailers(t));
        }
        let frames = futures_util::stream::iter(frames.into_iter().map(Ok::<_, Infallible>));
        BodyExt::boxed(StreamBody::new(frames))
    } else {
        Full::new(reply).boxed()
    };
    let mut rsp = Response::new(out);
    *rsp.status_mut() = status.unwrap_or(cfg.status);
    let h = rsp.headers_mut();
    h.insert(
        "x-served-by",
        HeaderValue::from_str(&cfg.name).expect("upstream names are header-safe"),
    );
    h.insert(
        "x-echo-method",
        HeaderValue::from_str(parts.method.as_str()).expect("methods are header-safe"),
    );
    h.insert(
        "x-echo-version",
        HeaderValue::from_static(version_name(parts.version)),
    );
    Ok(rsp)
}

pub fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    }
}

/// A stream whose first bytes were already read (to detect the protocol) and are replayed.
struct Prefixed {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A WebSocket server echoing every text and binary message.
pub struct WsUpstream {
    addr: SocketAddr,
    log: Arc<Log>,
    _task: Task,
}

impl WsUpstream {
    pub async fn start() -> WsUpstream {
        let listener = bind().await;
        let addr = listener.local_addr().expect("bound address");
        let log = Arc::new(Log::default());
        let task = accept_loop(listener, {
            let log = log.clone();
            move |stream, _| {
                let log = log.clone();
                async move {
                    log.connections.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() || msg.is_binary() {
                            if ws.send(msg).await.is_err() {
                                return;
                            }
                        } else if msg.is_close() {
                            return;
                        }
                    }
                }
            }
        });
        WsUpstream {
            addr,
            log,
            _task: task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// WebSocket connections accepted so far.
    pub fn connections(&self) -> usize {
        self.log.connections.load(Ordering::SeqCst)
    }
}

/// A tonic gRPC server implementing the demo `Echo` service: `unary` echoes (or fails with
/// `fail_with`, or, when built with [`GrpcUpstreamBuilder::fail_first`], fails its first calls),
/// `bidi` answers every message as it arrives.
pub struct GrpcUpstream {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    _task: Task,
}

#[derive(Clone)]
struct EchoService {
    name: Arc<str>,
    calls: Arc<AtomicUsize>,
    /// The first this-many calls fail with this code, whatever they ask for.
    fail_first: Option<(usize, tonic::Code)>,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, tonic::Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(
        &self,
        req: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoReply>, tonic::Status> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let req = req.into_inner();
        if let Some((k, code)) = self.fail_first
            && call < k
        {
            // Before any message: tonic sends this as a trailers-only response.
            return Err(tonic::Status::new(
                code,
                format!("failing call {} of the first {k}", call + 1),
            ));
        }
        if req.fail_with != 0 {
            return Err(tonic::Status::new(
                tonic::Code::from(req.fail_with),
                format!("failing as asked: {}", req.message),
            ));
        }
        Ok(tonic::Response::new(EchoReply {
            message: req.message,
            served_by: self.name.to_string(),
        }))
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        req: tonic::Request<tonic::Streaming<EchoRequest>>,
    ) -> Result<tonic::Response<Self::BidiStream>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let name = self.name.clone();
        let replies = req.into_inner().map(move |m| {
            m.map(|m| EchoReply {
                message: m.message,
                served_by: name.to_string(),
            })
        });
        Ok(tonic::Response::new(Box::pin(replies)))
    }
}

/// Options of a [`GrpcUpstream`].
pub struct GrpcUpstreamBuilder {
    name: String,
    fail_first: Option<(usize, tonic::Code)>,
}

impl GrpcUpstreamBuilder {
    /// Fails unary calls with `code` (trailers-only) while fewer than `k` calls (unary or bidi)
    /// have arrived, then serves normally. Default: never.
    pub fn fail_first(mut self, k: usize, code: tonic::Code) -> Self {
        self.fail_first = Some((k, code));
        self
    }

    pub async fn start(self) -> GrpcUpstream {
        let listener = bind().await;
        let addr = listener.local_addr().expect("bound address");
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = EchoService {
            name: Arc::from(self.name.as_str()),
            calls: calls.clone(),
            fail_first: self.fail_first,
        };
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = Task(tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(EchoServer::new(svc))
                .serve_with_incoming(incoming)
                .await;
        }));
        GrpcUpstream {
            addr,
            calls,
            _task: task,
        }
    }
}

impl GrpcUpstream {
    pub fn builder(name: &str) -> GrpcUpstreamBuilder {
        GrpcUpstreamBuilder {
            name: name.to_owned(),
            fail_first: None,
        }
    }

    pub async fn start(name: &str) -> GrpcUpstream {
        GrpcUpstream::builder(name).start().await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls (unary or bidi) that reached the service.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A TCP echo that honours half-close: it reads until the client's FIN, writes back all it
/// read, then shuts down its write side.
pub struct TcpEcho {
    addr: SocketAddr,
    log: Arc<Log>,
    _task: Task,
}

impl TcpEcho {
    pub async fn start() -> TcpEcho {
        let listener = bind().await;
        let addr = listener.local_addr().expect("bound address");
        let log = Arc::new(Log::default());
        let task = accept_loop(listener, {
            let log = log.clone();
            move |mut stream, _| {
                let log = log.clone();
                async move {
                    log.connections.fetch_add(1, Ordering::SeqCst);
                    let mut all = Vec::new();
                    if stream.read_to_end(&mut all).await.is_err() {
                        return;
                    }
                    let _ = stream.write_all(&all).await;
                    let _ = stream.shutdown().await;
                }
            }
        });
        TcpEcho {
            addr,
            log,
            _task: task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn connections(&self) -> usize {
        self.log.connections.load(Ordering::SeqCst)
    }
}

/// A server-speaks-first server (SMTP-like): writes `220 banner\r\n` on accept, then holds the
/// connection until the client closes it.
pub struct BannerServer {
    addr: SocketAddr,
    _task: Task,
}

pub const BANNER: &[u8] = b"220 banner\r\n";

impl BannerServer {
    pub async fn start() -> BannerServer {
        let listener = bind().await;
        let addr = listener.local_addr().expect("bound address");
        let task = accept_loop(listener, |mut stream, _| async move {
            if stream.write_all(BANNER).await.is_err() {
                return;
            }
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        BannerServer { addr, _task: task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// How a [`DropServer`] ends a connection after the first bytes of a request arrive.
#[derive(Clone, Copy, Debug)]
pub enum DropMode {
    /// Orderly close (FIN) without answering.
    Close,
    /// Abortive close (RST, `SO_LINGER` 0).
    Reset,
}

/// Accepts, waits for the first request bytes, and hangs up without answering.
pub struct DropServer {
    addr: SocketAddr,
    log: Arc<Log>,
    _task: Task,
}

impl DropServer {
    pub async fn start(mode: DropMode) -> DropServer {
        let listener = bind().await;
        let addr = listener.local_addr().expect("bound address");
        let log = Arc::new(Log::default());
        let task = accept_loop(listener, {
            let log = log.clone();
            move |mut stream, _| {
                let log = log.clone();
                async move {
                    log.connections.fetch_add(1, Ordering::SeqCst);
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    if let DropMode::Reset = mode {
                        let _ = stream.set_zero_linger();
                    }
                    drop(stream);
                }
            }
        });
        DropServer {
            addr,
            log,
            _task: task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn connections(&self) -> usize {
        self.log.connections.load(Ordering::SeqCst)
    }
}

/// Answers the first request of each connection with `200 ok`, keep-alive implied (no
/// `Connection: close`), then hangs up: a client that pools the connection races the close.
pub struct HangUpAfterAnswer {
    addr: SocketAddr,
    log: Arc<Log>,
    _task: Task,
}

impl HangUpAfterAnswer {
    pub async fn start() -> HangUpAfterAnswer {
        let listener = bind().await;
        let addr = listener.local_addr().expect("bound address");
        let log = Arc::new(Log::default());
        let task = accept_loop(listener, {
            let log = log.clone();
            move |mut stream, _| {
                let log = log.clone();
                async move {
                    log.connections.fetch_add(1, Ordering::SeqCst);
                    if read_head(&mut stream).await.is_none() {
                        return;
                    }
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                }
            }
        });
        HangUpAfterAnswer {
            addr,
            log,
            _task: task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn connections(&self) -> usize {
        self.log.connections.load(Ordering::SeqCst)
    }
}

/// Reads up to the end of a request head (and whatever came with it); `None` when the
/// connection ends or fails first.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while super::client::find(&head, b"\r\n\r\n").is_none() {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// An address with nothing listening: bound to learn a free port, then released.
pub async fn closed_port() -> SocketAddr {
    let listener = bind().await;
    listener.local_addr().expect("bound address")
}

/// A raw HTTP/1.1 server that records the exact bytes of each request head and answers with a
/// fixed response whose header names have mixed case (`X-Upstream-MiXeD: yes`).
pub struct RawHttpUpstream {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<Vec<u8>>>>,
    _task: Task,
}

pub const RAW_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Upstream-MiXeD: yes\r\nConnection: close\r\n\r\nok";

impl RawHttpUpstream {
    pub async fn start() -> RawHttpUpstream {
        let listener = bind().await;
        let addr = listener.local_addr().expect("bound address");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let task = accept_loop(listener, {
            let heads = heads.clone();
            move |mut stream, _| {
                let heads = heads.clone();
                async move {
                    let Some(head) = read_head(&mut stream).await else {
                        return;
                    };
                    heads.lock().expect("raw upstream lock").push(head);
                    let _ = stream.write_all(RAW_RESPONSE).await;
                    let _ = stream.shutdown().await;
                }
            }
        });
        RawHttpUpstream {
            addr,
            heads,
            _task: task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Request heads received so far, as raw text.
    pub fn heads(&self) -> Vec<String> {
        self.heads
            .lock()
            .expect("raw upstream lock")
            .iter()
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .collect()
    }
}

/// An HTTP/2 server that answers one request per connection and then sends GOAWAY, so every
/// further request must come on a new connection.
pub struct GoAwayUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    _task: Task,
}

impl GoAwayUpstream {
    pub async fn start() -> GoAwayUpstream {
        let listener = bind().await;
        let addr = listener.local_addr().expect("bound address");
        let connections = Arc::new(AtomicUsize::new(0));
        let task = accept_loop(listener, {
            let connections = connections.clone();
            move |stream, _| {
                connections.fetch_add(1, Ordering::SeqCst);
                async move {
                    let (first, served) = tokio::sync::oneshot::channel::<()>();
                    let first = Mutex::new(Some(first));
                    let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        if let Some(tx) = first.lock().expect("not poisoned").take() {
                            let _ = tx.send(());
                        }
                        async {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let conn = http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = served => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                }
            }
        });
        GoAwayUpstream {
            addr,
            connections,
            _task: task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A listener that never accepts and whose accept queue is full: the kernel drops further
/// SYNs, so a connect to it hangs until the connecting side gives up.
pub struct BlackHole {
    addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<Task>,
}

impl BlackHole {
    pub async fn start() -> BlackHole {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
        socket.bind(&any.into()).expect("bind 127.0.0.1:0");
        socket.listen(0).expect("listen");
        let addr = socket
            .local_addr()
            .expect("bound address")
            .as_socket()
            .expect("an inet address");
        // Backlog 0 still queues one connection: fill the queue, then one more whose SYN is
        // dropped (it stays pending), so any further connect is dropped too.
        let first = TcpStream::connect(addr)
            .await
            .expect("first connect fills the queue");
        let fillers = vec![
            Task(tokio::spawn(async move {
                let _keep = first;
                std::future::pending::<()>().await;
            })),
            Task(tokio::spawn(async move {
                let _pending = TcpStream::connect(addr).await;
                std::future::pending::<()>().await;
            })),
        ];
        BlackHole {
            addr,
            _listener: socket,
            _fillers: fillers,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
