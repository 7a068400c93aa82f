//! A TCP relay that can go silent: connections it carries stop moving bytes but stay open,
//! as when the far end's node dies without a reset. New connections relay normally.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

pub struct Relay {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    accepted: AtomicUsize,
    /// Connections numbered below this are silent.
    silent_below: AtomicUsize,
}

impl Relay {
    pub async fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let id = shared.accepted.fetch_add(1, Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect(to).await else {
                        continue;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, id, shared.clone()));
                    tokio::spawn(pump(sr, cw, id, shared.clone()));
                }
            }
        });
        Relay { addr, shared, task }
    }

    /// Every connection open now stops moving bytes, for good, without closing.
    pub fn silence_open_connections(&self) {
        let n = self.shared.accepted.load(Ordering::SeqCst);
        self.shared.silent_below.store(n, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump<R, W>(mut from: R, mut to: W, id: usize, shared: Arc<Shared>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if id < shared.silent_below.load(Ordering::SeqCst) {
            // Hold both sockets open and never move another byte.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
