//! `skiff-xds serve`: loads the mesh (the file, or with `--kubernetes` the cluster's first
//! lists) and the CA, binds the gRPC and admin ports (and the admission webhook's, when asked),
//! prints the `skiff-xds listening grpc=ADDR admin=ADDR` line, then serves until Ctrl-C or
//! SIGTERM.
//! Only wiring: the parts live in `source`, `server`, `ca`, `admin` and `webhook`.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::{
    admin::{self, AdminState},
    ca::{Ca, CaOptions, IdentityService, fingerprints, token_review::TokenReviewer},
    inject::InjectSettingsArgs,
    metrics::{CaMetrics, Metrics},
    server::{DiscoveryService, Registry},
    source::{ConfigStore, file},
    webhook::{self, WebhookOptions},
};

/// Every flag of `skiff-xds serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeCommand {
    #[command(flatten)]
    pub args: ServeArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub webhook: WebhookArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// The mesh file, watched for changes (its directory is, so ConfigMap swaps are seen).
    /// Required unless `--kubernetes`.
    #[arg(
        long,
        env = "SKIFF_XDS_CONFIG",
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes"
    )]
    pub config: Option<PathBuf>,
    /// The discovery gRPC listener (and the CA's Certify); port 0 picks one.
    #[arg(long, env = "SKIFF_XDS_GRPC_ADDR", default_value = "0.0.0.0:15010")]
    pub grpc_addr: SocketAddr,
    /// The admin listener: /ready, /metrics, /proxies.
    #[arg(long, env = "SKIFF_XDS_ADMIN_ADDR", default_value = "127.0.0.1:15014")]
    pub admin_addr: SocketAddr,
}

/// The mesh CA's flags. `Default` is identity off (what [`start`] uses).
#[derive(clap::Args, Debug, Clone)]
pub struct IdentityArgs {
    /// The mesh CA's directory: `ca.crt` + `ca.key` sign; `root.crt`, if present, is the
    /// anchor above an intermediate `ca.crt`; `trust-anchors.crt` adds anchors (rotation).
    /// Created (0700, with a self-signed anchor, key 0600) when absent; re-read when its
    /// files change. Default: none, identity off (Certify answers FAILED_PRECONDITION).
    #[arg(long, env = "SKIFF_XDS_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    /// YAML map `<namespace>/<workload>: <token>`: the tokens that prove each workload to
    /// the CA. Secrets, kept apart from the mesh file; re-read when it changes. Default:
    /// none: only service-account tokens (with `--kubernetes`) are accepted, else every
    /// Certify is refused.
    #[arg(long, env = "SKIFF_XDS_BOOTSTRAP_TOKENS")]
    pub bootstrap_tokens: Option<PathBuf>,
    /// Lifetime of issued certificates (`30s`, `24h`; at most a week). Proxies renew at 70 %;
    /// values of seconds or minutes are for tests and rotation drills.
    #[arg(long, env = "SKIFF_XDS_CERT_LIFETIME", default_value = "24h", value_parser = parse_lifetime)]
    pub cert_lifetime: Duration,
}

/// What `--cert-lifetime` defaults to.
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

impl Default for IdentityArgs {
    fn default() -> Self {
        IdentityArgs {
            ca_dir: None,
            bootstrap_tokens: None,
            cert_lifetime: DEFAULT_CERT_LIFETIME,
        }
    }
}

/// The admission webhook's flags. `Default` is webhook off.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WebhookArgs {
    /// The admission webhook's HTTPS listener (`POST /inject`); port 0 picks one. Needs
    /// `--ca-dir`: its certificate comes from the mesh CA. Default: off, or 0.0.0.0:15017 with
    /// `--kubernetes`.
    #[arg(long, env = "SKIFF_XDS_WEBHOOK_ADDR", value_name = "ADDR")]
    pub webhook_addr: Option<SocketAddr>,
    /// DNS names of the webhook's certificate, comma-separated: the names the API server
    /// calls it by (`<service>.<namespace>.svc`).
    #[arg(
        long,
        env = "SKIFF_XDS_WEBHOOK_DNS",
        value_name = "NAME[,NAME..]",
        value_delimiter = ',',
        default_value = webhook::DEFAULT_DNS_NAME,
        value_parser = parse_dns_name
    )]
    pub webhook_dns: Vec<String>,
    /// What the webhook injects into pods.
    #[command(flatten)]
    pub inject: InjectSettingsArgs,
}

/// The Kubernetes source's flags. `Default` is the file source.
#[derive(clap::Args, Debug, Clone)]
pub struct KubeArgs {
    /// Build the mesh from the cluster (Services, EndpointSlices, Pods and the mesh
    /// ConfigMap) instead of a file; authenticate Certify callers by TokenReview; serve the
    /// webhook on 0.0.0.0:15017 unless `--webhook-addr` says otherwise (with `--ca-dir`) and
    /// keep its configuration's `caBundle` set. The API server is found as kubectl finds it:
    /// `KUBECONFIG`, `~/.kube/config`, or the pod's service account.
    #[cfg_attr(
        not(feature = "kubernetes"),
        doc = "Not in this build: it needs `cargo build -p skiff-xds --features kubernetes`."
    )]
    #[arg(long, env = "SKIFF_XDS_KUBERNETES")]
    pub kubernetes: bool,
    /// The control plane's namespace, where the mesh ConfigMap is read.
    #[arg(
        long,
        env = "SKIFF_XDS_NAMESPACE",
        default_value = "skiff-system",
        requires = "kubernetes"
    )]
    pub namespace: String,
    /// The mesh ConfigMap's name (its key `mesh.yaml`: routes, policies, mesh settings).
    #[arg(
        long,
        env = "SKIFF_XDS_MESH_CONFIGMAP",
        default_value = "skiff-mesh",
        requires = "kubernetes"
    )]
    pub mesh_configmap: String,
    /// The cluster's DNS domain: services get the host `name.ns.svc.<domain>`.
    #[arg(
        long,
        env = "SKIFF_XDS_CLUSTER_DOMAIN",
        default_value = "cluster.local",
        requires = "kubernetes"
    )]
    pub cluster_domain: String,
    /// The MutatingWebhookConfiguration whose `caBundle` is kept equal to the mesh CA's
    /// anchors while the webhook runs.
    #[arg(
        long,
        env = "SKIFF_XDS_WEBHOOK_CONFIGURATION",
        default_value = "skiff-injector",
        requires = "kubernetes"
    )]
    pub webhook_configuration: String,
}

impl Default for KubeArgs {
    fn default() -> Self {
        KubeArgs {
            kubernetes: false,
            namespace: "skiff-system".to_owned(),
            mesh_configmap: "skiff-mesh".to_owned(),
            cluster_domain: "cluster.local".to_owned(),
            webhook_configuration: "skiff-injector".to_owned(),
        }
    }
}

/// The webhook's address under `--kubernetes` when `--webhook-addr` is not given.
pub const KUBERNETES_WEBHOOK_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 15017);

fn parse_dns_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    webhook::dns_name(name).map_err(|reason| format!("{text:?}: {reason}"))?;
    Ok(name.to_owned())
}

fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let d = text
        .parse::<skiff_api::Dur>()
        .map_err(|e| e.to_string())?
        .get();
    if d < Duration::from_secs(1) {
        return Err(format!("{text:?}: a certificate must live at least 1s"));
    }
    Ok(d)
}

pub fn main(command: ServeCommand) -> ExitCode {
    crate::logging::init_stderr();
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
    match runtime.block_on(run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff-xds: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// HTTP/2 PING interval on discovery connections, and how long a PING may go unanswered.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(30);

/// How long `stop` waits for open streams before dropping them.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A control plane serving in this process, stopped by `stop` or on drop.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The admission webhook's address, when it runs.
    pub webhook_addr: Option<SocketAddr>,
    ca: Option<Arc<Ca>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// The trust anchors (DER) served now; empty without a CA.
    pub fn trust_anchors(&self) -> Vec<Vec<u8>> {
        self.ca
            .as_ref()
            .map(|ca| ca.trust_anchors())
            .unwrap_or_default()
    }

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
/// background, without a CA. Tests use this directly; `serve` adds the startup line and
/// signals.
pub async fn start(args: ServeArgs) -> anyhow::Result<Running> {
    start_with(args, IdentityArgs::default()).await
}

/// [`start`] with the mesh CA configured by `identity` (the demo and identity tests).
pub async fn start_with(args: ServeArgs, identity: IdentityArgs) -> anyhow::Result<Running> {
    start_with_webhook(args, identity, WebhookArgs::default()).await
}

/// Where the mesh comes from.
pub enum Source {
    /// A mesh file, watched.
    File(PathBuf),
    /// The cluster behind `client`, watched (`serve --kubernetes`).
    #[cfg(feature = "kubernetes")]
    Kubernetes {
        client: kube::Client,
        args: KubeArgs,
    },
}

/// [`start_with`] plus the admission webhook when `webhook.webhook_addr` is set (`serve`).
pub async fn start_with_webhook(
    args: ServeArgs,
    identity: IdentityArgs,
    webhook: WebhookArgs,
) -> anyhow::Result<Running> {
    let Some(config) = args.config.clone() else {
        anyhow::bail!("--config is required without --kubernetes");
    };
    start_source(Source::File(config), args, identity, webhook).await
}

/// Starts the control plane on the mesh from `source`; the listeners are bound only once
/// the first mesh is in (the file read, or the cluster listed).
pub async fn start_source(
    source: Source,
    args: ServeArgs,
    identity: IdentityArgs,
    webhook: WebhookArgs,
) -> anyhow::Result<Running> {
    #[cfg(feature = "kubernetes")]
    let mut webhook = webhook;
    #[cfg(feature = "kubernetes")]
    if matches!(source, Source::Kubernetes { .. })
        && webhook.webhook_addr.is_none()
        && identity.ca_dir.is_some()
    {
        webhook.webhook_addr = Some(KUBERNETES_WEBHOOK_ADDR);
    }
    // Flag mistakes first, before anything is read or bound.
    let webhook_options = match webhook.webhook_addr {
        Some(addr) => Some(WebhookOptions {
            addr,
            dns_names: webhook.webhook_dns.clone(),
            cert_lifetime: identity.cert_lifetime,
            settings: webhook
                .inject
                .settings()
                .map_err(|e| anyhow::anyhow!("the webhook's injection settings: {e}"))?,
        }),
        None => None,
    };
    let mut metrics_registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut metrics_registry);

    // A control plane that starts on a refused file would have nothing to serve: exit,
    // naming the field, as `check` does.
    let initial = match &source {
        Source::File(path) => match file::load(path) {
            Ok(r) => {
                metrics.reload(true).inc();
                r
            }
            Err(e) => {
                metrics.reload(false).inc();
                return Err(e.into());
            }
        },
        // Filled in by the source once the cluster is listed.
        #[cfg(feature = "kubernetes")]
        Source::Kubernetes { .. } => skiff_api::model::MeshFile::default(),
    };
    let token_review = !matches!(source, Source::File(_));
    let ca = open_ca(&identity, token_review, &mut metrics_registry)?;
    if webhook_options.is_some() && ca.is_none() {
        return Err(webhook::WebhookError::NoCa.into());
    }
    let store = ConfigStore::new(initial);
    let ca_watch = ca.as_ref().map(|ca| {
        // Before the first stream can open: every proxy's first MeshSettings has the anchors.
        store.set_trust_anchors(ca.trust_anchors());
        ca.watch(store.clone())
    });
    // Whatever keeps the source running; dropped with the server.
    let mut keep: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let (description, reviewer): (String, Option<Arc<dyn TokenReviewer>>) = match source {
        Source::File(path) => {
            keep.push(Box::new(file::watch(
                path.clone(),
                store.clone(),
                metrics.clone(),
            )?));
            (path.display().to_string(), None)
        }
        #[cfg(feature = "kubernetes")]
        Source::Kubernetes { client, args } => {
            let settings = crate::source::kube::ClusterSettings {
                cluster_domain: args.cluster_domain.clone(),
                config_map: crate::source::kube::ObjectKey::new(
                    &args.namespace,
                    &args.mesh_configmap,
                ),
            };
            let mut source = crate::source::kube::KubeSource::start(
                client.clone(),
                settings,
                store.clone(),
                metrics.clone(),
            );
            let reviewer = crate::ca::token_review::ApiReviewer::new(client.clone());
            tracing::info!("listing the cluster");
            source.synced().await;
            keep.push(Box::new(source));
            if webhook_options.is_some()
                && let Some(ca) = &ca
            {
                keep.push(Box::new(crate::source::kube::CaBundlePatcher::start(
                    client,
                    args.webhook_configuration.clone(),
                    ca.clone(),
                    store.clone(),
                )));
            }
            ("kubernetes".to_owned(), Some(Arc::new(reviewer)))
        }
    };
    let registry = Arc::new(Registry::default());

    let grpc = TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding the gRPC address {}", args.grpc_addr))?;
    let admin = TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding the admin address {}", args.admin_addr))?;
    let grpc_addr = grpc.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let webhook = match webhook_options {
        Some(options) => Some(webhook::start(options, ca.clone()).await?),
        None => None,
    };
    let webhook_addr = webhook.as_ref().map(|w| w.addr);

    let admin_state = Arc::new(AdminState {
        store: store.clone(),
        registry: registry.clone(),
        metrics: metrics_registry,
    });
    let admin_task = tokio::spawn(admin::serve(admin, admin_state));
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut identity = IdentityService::new(ca.clone(), store.clone());
    if let Some(reviewer) = reviewer {
        identity = identity.with_token_review(reviewer);
    }
    let identity = identity.into_server();
    let discovery = DiscoveryService::new(store, registry, metrics, shutdown_rx).into_server();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let grpc_server = tonic::transport::Server::builder()
        // A proxy whose node died sends no reset: PINGs find it, and its stream ends.
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE))
        .add_service(discovery)
        .add_service(identity)
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
        // The source, the CA watcher and the webhook live as long as the server.
        let _keep = keep;
        let _ca_watch = ca_watch;
        let _webhook = webhook;
        let result = grpc_server.await;
        admin_task.abort();
        result.context("gRPC server failed")
    });
    tracing::info!(%grpc_addr, %admin_addr, config = %description, "serving");
    Ok(Running {
        grpc_addr,
        admin_addr,
        webhook_addr,
        ca,
        stop: Some(stop_tx),
        server,
    })
}

/// Opens the CA when `--ca-dir` is given, registering its metrics, and says at startup
/// whether identity is on and which anchors proxies will trust.
fn open_ca(
    identity: &IdentityArgs,
    token_review: bool,
    metrics_registry: &mut prometheus_client::registry::Registry,
) -> anyhow::Result<Option<Arc<Ca>>> {
    let Some(dir) = &identity.ca_dir else {
        if identity.bootstrap_tokens.is_some() {
            tracing::warn!("--bootstrap-tokens without --ca-dir: ignored");
        }
        tracing::info!("identity off (no --ca-dir): Certify answers FAILED_PRECONDITION");
        return Ok(None);
    };
    let options = CaOptions {
        dir: dir.clone(),
        bootstrap_tokens: identity.bootstrap_tokens.clone(),
        cert_lifetime: identity.cert_lifetime,
    };
    let (ca, generated) = Ca::open(options, CaMetrics::register(metrics_registry))
        .context("the mesh CA (--ca-dir, --bootstrap-tokens)")?;
    tracing::info!(
        ca_dir = %dir.display(),
        generated,
        anchors = %fingerprints(&ca.trust_anchors()),
        cert_lifetime = ?identity.cert_lifetime,
        token_workloads = ca.tokens().len(),
        token_review,
        "identity on"
    );
    if identity.bootstrap_tokens.is_none() && !token_review {
        tracing::warn!(
            "no --bootstrap-tokens: no workload can prove itself; every Certify is refused"
        );
    }
    Ok(Some(ca))
}

async fn run(command: ServeCommand) -> anyhow::Result<()> {
    let running = if command.kube.kubernetes {
        start_kubernetes(command).await?
    } else {
        start_with_webhook(command.args, command.identity, command.webhook).await?
    };
    println!(
        "skiff-xds listening grpc={} admin={}",
        running.grpc_addr, running.admin_addr
    );
    if let Some(addr) = running.webhook_addr {
        println!("skiff-xds webhook listening {addr}");
    }
    shutdown_signal().await;
    running.stop().await
}

#[cfg(feature = "kubernetes")]
async fn start_kubernetes(command: ServeCommand) -> anyhow::Result<Running> {
    let client = kube::Client::try_default()
        .await
        .context("finding the Kubernetes API server (KUBECONFIG, ~/.kube/config, or in-cluster)")?;
    let source = Source::Kubernetes {
        client,
        args: command.kube,
    };
    start_source(source, command.args, command.identity, command.webhook).await
}

#[cfg(not(feature = "kubernetes"))]
async fn start_kubernetes(_: ServeCommand) -> anyhow::Result<Running> {
    anyhow::bail!(
        "--kubernetes: this skiff-xds was built without Kubernetes support \
         (build it with `cargo build --release -p skiff-xds --features kubernetes`)"
    )
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
