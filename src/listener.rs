//! Listening sockets (socket2), accept loops, the original destination of redirected
//! connections (SO_ORIGINAL_DST), per-connection tasks and drain: stop accepting, tell open
//! connections to finish, and wait for them.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use socket2::{Domain, Protocol as SockProtocol, SockRef, Socket, Type};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
};
use tracing::{debug, warn};

use crate::{io::Counted, telemetry::TcpStats};

/// Binds a listening TCP socket with the options a proxy wants. An IPv6 socket takes IPv6
/// only, so `0.0.0.0:P` and `[::]:P` can both be bound, and each connection's original
/// destination is asked of the family it arrived in.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(SockProtocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Where the client meant to go: SO_ORIGINAL_DST when iptables redirected the connection,
/// else the listener's own address.
pub fn original_dst(stream: &TcpStream, local: SocketAddr) -> SocketAddr {
    let sock = SockRef::from(stream);
    let dst = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    };
    dst.ok().and_then(|a| a.as_socket()).unwrap_or(local)
}

/// The drain signal as a connection sees it.
#[derive(Clone)]
pub struct Drain {
    rx: watch::Receiver<bool>,
}

impl Drain {
    /// Resolves once drain has begun; never, if the process ends another way.
    pub async fn signaled(&mut self) {
        // Polled on every wake-up of a connection: only `changed()` is re-polled while
        // waiting, which is a version check and an already-registered notification.
        loop {
            if *self.rx.borrow_and_update() {
                return;
            }
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Starts drain and counts the connections still open.
pub struct DrainControl {
    tx: watch::Sender<bool>,
    open: Arc<Tracker>,
}

#[derive(Default)]
struct Tracker {
    count: AtomicUsize,
    zero: Notify,
}

/// Held by each connection task; the count drops when the task ends (or panics).
pub struct ConnGuard(Arc<Tracker>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

impl Default for DrainControl {
    fn default() -> Self {
        Self::new()
    }
}

impl DrainControl {
    pub fn new() -> Self {
        DrainControl {
            tx: watch::Sender::new(false),
            open: Arc::default(),
        }
    }

    pub fn watch(&self) -> Drain {
        Drain {
            rx: self.tx.subscribe(),
        }
    }

    fn track(&self) -> ConnGuard {
        self.open.count.fetch_add(1, Ordering::AcqRel);
        ConnGuard(self.open.clone())
    }

    pub fn start(&self) {
        self.tx.send_replace(true);
    }

    /// Resolves when no tracked connection is open.
    pub async fn idle(&self) {
        loop {
            let notified = self.open.zero.notified();
            if self.open.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Decrements the open-connections gauge when a connection task ends, panics included.
struct OpenGauge(prometheus_client::metrics::gauge::Gauge);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One accepted connection, as handed to a direction's handler.
pub struct Accepted {
    pub stream: Counted<TcpStream>,
    pub local: SocketAddr,
    pub dst: SocketAddr,
    pub drain: Drain,
}

/// Accepts until drain starts; each connection runs in its own task (a panic there ends that
/// connection only) and is counted in `stats` and in the drain tracker.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    stats: TcpStats,
    drain: Arc<DrainControl>,
    serve: F,
) where
    F: Fn(Accepted) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "listener has no local address");
            return;
        }
    };
    let mut stop = drain.watch();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.signaled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: pause briefly instead of spinning.
                warn!(%local, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let dst = original_dst(&stream, local);
        let guard = drain.track();
        stats.total.inc();
        stats.open.inc();
        let open = OpenGauge(stats.open.clone());
        debug!(%peer, %dst, "accepted");
        let stream = Counted::new(stream, stats.read.clone(), stats.write.clone());
        let task = serve(Accepted {
            stream,
            local,
            dst,
            drain: drain.watch(),
        });
        tokio::spawn(async move {
            let _guards = (guard, open);
            task.await;
        });
    }
    debug!(%local, "listener closed");
}
