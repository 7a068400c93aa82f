//! `skiff-xds serve`: loads the mesh file, binds the gRPC and admin ports, prints the
//! `skiff-xds listening grpc=ADDR admin=ADDR` line, then serves until Ctrl-C or SIGTERM.
//! Only wiring: the parts live in `source`, `server` and `admin`.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::{
    admin::{self, AdminState},
    metrics::Metrics,
    server::{DiscoveryService, Registry},
    source::{ConfigStore, file},
};

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// The mesh file, watched for changes (its directory is, so ConfigMap swaps are seen).
    #[arg(long, env = "SKIFF_XDS_CONFIG")]
    pub config: PathBuf,
    /// The discovery gRPC listener; port 0 picks one. Default: 0.0.0.0:15010.
    #[arg(long, env = "SKIFF_XDS_GRPC_ADDR", default_value = "0.0.0.0:15010")]
    pub grpc_addr: SocketAddr,
    /// The admin listener: /ready, /metrics, /proxies. Default: 127.0.0.1:15014.
    #[arg(long, env = "SKIFF_XDS_ADMIN_ADDR", default_value = "127.0.0.1:15014")]
    pub admin_addr: SocketAddr,
}

pub fn main(args: ServeArgs) -> ExitCode {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff-xds: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff-xds: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// HTTP/2 PING interval on discovery connections, and how long a PING may go unanswered.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(30);

/// How long `stop` waits for open streams before dropping them.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A control plane serving in this process, stopped by `stop` or on drop.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting, ends every open stream with `UNAVAILABLE` (proxies reconnect with
    /// backoff) and waits up to `STOP_GRACE` for the connections to close.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(STOP_GRACE, &mut self.server).await {
            Ok(joined) => joined.context("gRPC server task")?,
            Err(_) => {
                self.server.abort();
                Ok(())
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Loads the mesh file, starts watching it, binds both listeners and serves in the
/// background. Tests use this directly; `serve` adds the startup line and signals.
pub async fn start(args: ServeArgs) -> anyhow::Result<Running> {
    let mut metrics_registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut metrics_registry);

    // A control plane that starts on a refused file would have nothing to serve: exit,
    // naming the field, as `check` does.
    let initial = match file::load(&args.config) {
        Ok(r) => r,
        Err(e) => {
            metrics.reload(false).inc();
            return Err(e.into());
        }
    };
    metrics.reload(true).inc();
    let store = ConfigStore::new(initial);
    let watch = file::watch(args.config.clone(), store.clone(), metrics.clone())?;
    let registry = Arc::new(Registry::default());

    let grpc = TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding the gRPC address {}", args.grpc_addr))?;
    let admin = TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding the admin address {}", args.admin_addr))?;
    let grpc_addr = grpc.local_addr()?;
    let admin_addr = admin.local_addr()?;

    let admin_state = Arc::new(AdminState {
        store: store.clone(),
        registry: registry.clone(),
        metrics: metrics_registry,
    });
    let admin_task = tokio::spawn(admin::serve(admin, admin_state));
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let discovery = DiscoveryService::new(store, registry, metrics, shutdown_rx).into_server();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let grpc_server = tonic::transport::Server::builder()
        // A proxy whose node died sends no reset: PINGs find it, and its stream ends.
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE))
        .add_service(discovery)
        .serve_with_incoming_shutdown(
            // Responses are small and latency matters: no Nagle delay.
            tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
            async move {
                let _ = stop_rx.await;
                // Open streams end with UNAVAILABLE, then the connections close.
                let _ = shutdown_tx.send(true);
            },
        );
    let server = tokio::spawn(async move {
        // The watcher lives as long as the server.
        let _watch = watch;
        let result = grpc_server.await;
        admin_task.abort();
        result.context("gRPC server failed")
    });
    tracing::info!(%grpc_addr, %admin_addr, config = %args.config.display(), "serving");
    Ok(Running {
        grpc_addr,
        admin_addr,
        stop: Some(stop_tx),
        server,
    })
}

async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let running = start(args).await?;
    println!(
        "skiff-xds listening grpc={} admin={}",
        running.grpc_addr, running.admin_addr
    );
    shutdown_signal().await;
    running.stop().await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}
