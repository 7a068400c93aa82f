//! The accept loop shared by the demo apps: HTTP/1.1 and h2c on one loopback port through
//! hyper-util's auto builder, one task per connection. Owns the app's lifetime (`AppHandle`);
//! what each app answers lives in `http_app` and `echo_app`.

use std::{error::Error as StdError, io, net::SocketAddr, time::Duration};

use http::{Request, Response};
use hyper::{body::Incoming, service::Service};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{net::TcpListener, task::JoinHandle, task::JoinSet};

/// A demo app serving on its own task. Dropping the handle stops accepting and closes every
/// open connection of the app (they run in a `JoinSet` owned by the accept task).
#[derive(Debug)]
pub struct AppHandle {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl AppHandle {
    /// The address the app is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AppHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `127.0.0.1:0`, so the address is known (and taken) before anyone is told about it.
pub(crate) async fn bind_loopback() -> io::Result<TcpListener> {
    TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await
}

/// Serves `service` on every connection `listener` accepts, speaking whatever the client
/// speaks (HTTP/1.1, or HTTP/2 with prior knowledge).
pub(crate) fn serve<S, B>(listener: TcpListener, service: S) -> io::Result<AppHandle>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        // Latency matters more than throughput for the small demo responses.
                        let _ = stream.set_nodelay(true);
                        let service = service.clone();
                        conns.spawn(async move {
                            let builder = auto::Builder::new(TokioExecutor::new());
                            // A client that resets or speaks garbage only ends its own connection.
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        });
                    }
                    // Out of file descriptors and the like: back off instead of spinning on accept.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Ok(AppHandle { addr, task })
}
