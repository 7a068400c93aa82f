//! The demo mesh: demo HTTP and gRPC apps on loopback, the mesh file naming their real
//! ports, a control plane serving that file (`serve::start`, in this process) and one
//! `skiff --xds` sidecar per workload, started, awaited and stopped together.
//! `start` is the library entry point (tests use it); `main` is `skiff-xds demo`.

mod cli;
mod echo_app;
mod holder;
mod http_app;
mod identity;
mod otlp;
mod serve;
mod sidecar;
mod topology;

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use futures_util::future::{select_all, try_join_all};
use tokio::time::Instant;

use crate::serve::{self as control_plane, IdentityArgs, ServeArgs};

pub use self::{
    cli::{DemoArgs, main},
    echo_app::spawn_grpc_echo,
    http_app::{SERVED_BY, spawn_http_app},
    serve::AppHandle,
    sidecar::{ListeningLine, SidecarError, SidecarInfo, find_skiff, parse_listening_line},
    topology::{AppKind, CLIENT, SPLIT_PATH, SPLIT_SERVICE, WORKLOADS, WorkloadSpec, split_edit},
};
use self::{
    sidecar::{Launch, Sidecar},
    topology::Placement,
};

/// The proto of the demo gRPC service, written next to the mesh file for `grpcurl -proto`.
const DEMO_PROTO: &str = include_str!("../../proto/demo.proto");

/// The subdirectory of the demo directory that holds every log. The control plane watches
/// the mesh file's directory (not recursively): log writes next to the mesh file would wake
/// it on every line.
pub(crate) const LOG_DIR: &str = "logs";

/// How to run the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The `skiff` binary. Default: `skiff` (looked up on `PATH`); see [`find_skiff`].
    pub skiff_bin: PathBuf,
    /// Where the mesh file and `demo.proto` go, and the logs (under `logs/`); created if
    /// missing.
    /// Default: a fresh temporary directory, kept after the demo ends.
    pub dir: Option<PathBuf>,
    /// Port of the client sidecar's outbound listener on 127.0.0.1; 0 = any. Default: 15001.
    pub outbound_port: u16,
    /// Port of the client sidecar's admin listener on 127.0.0.1; 0 = any. Default: 15000.
    pub admin_port: u16,
    /// Port of the control plane's discovery (gRPC) listener on 127.0.0.1; 0 = any.
    /// Default: 15010.
    pub xds_port: u16,
    /// Port of the control plane's admin listener (`/proxies`, `skiff-xds status`) on
    /// 127.0.0.1; 0 = any. Default: 15014.
    pub xds_admin_port: u16,
    /// How long all sidecars together may take to be ready. Default: 20 s.
    pub ready_timeout: Duration,
    /// How long sidecars may drain after SIGTERM before they are killed. Default: 8 s.
    pub stop_timeout: Duration,
    /// OTLP/gRPC collector every sidecar exports its spans to (`http://127.0.0.1:4317`), with
    /// a 1 s batch delay; see `otlp::sidecar_env`. Default: none, tracing off.
    pub otlp: Option<String>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            skiff_bin: PathBuf::from("skiff"),
            dir: None,
            outbound_port: 15001,
            admin_port: 15000,
            xds_port: 15010,
            xds_admin_port: 15014,
            ready_timeout: Duration::from_secs(20),
            stop_timeout: Duration::from_secs(8),
            otlp: None,
        }
    }
}

/// A running demo mesh. Dropping it kills the sidecars and stops the control plane and the
/// apps; `shutdown` lets the sidecars drain first.
pub struct Demo {
    dir: PathBuf,
    mesh_path: PathBuf,
    client_outbound: SocketAddr,
    client_admin: SocketAddr,
    xds_addr: SocketAddr,
    xds_admin_addr: SocketAddr,
    stop_timeout: Duration,
    otlp: Option<String>,
    // Sidecars, then the control plane, then apps: fields drop in order, so the proxies go
    // before what they talk to.
    sidecars: Vec<Sidecar>,
    control_plane: Option<control_plane::Running>,
    apps: Vec<AppHandle>,
}

/// Starts the demo apps, writes and validates the mesh file, serves it from a control
/// plane in this process, starts one xDS-mode sidecar per workload and returns once every
/// sidecar's `/ready` answers 200 (each has its first config from the control plane).
pub async fn start(opts: DemoOptions) -> anyhow::Result<Demo> {
    let dir = prepare_dir(opts.dir.as_deref())?;

    let mut apps = Vec::with_capacity(WORKLOADS.len());
    for spec in WORKLOADS {
        let app = match spec.kind {
            AppKind::Http => spawn_http_app(spec.app, spec.version).await,
            AppKind::GrpcEcho => spawn_grpc_echo(spec.name).await,
        };
        let (_, handle) = app.with_context(|| format!("starting the {} app", spec.name))?;
        apps.push(handle);
    }
    // Apps hold their ports already, so the reserved ones cannot collide with them.
    let ports =
        topology::reserve_ports(WORKLOADS.len()).context("picking sidecar inbound ports")?;
    let placements: Vec<Placement> = WORKLOADS
        .iter()
        .zip(&apps)
        .zip(ports)
        .map(|((spec, app), port)| Placement {
            spec: *spec,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            app: app.addr(),
        })
        .collect();

    let yaml = topology::render(&placements);
    skiff_api::load(&yaml)
        .map_err(|e| anyhow!("the generated demo mesh does not validate: {e}"))?;
    let mesh_path = dir.join("mesh.yaml");
    tokio::fs::write(&mesh_path, &yaml)
        .await
        .with_context(|| format!("writing {}", mesh_path.display()))?;
    let proto_path = dir.join("demo.proto");
    tokio::fs::write(&proto_path, DEMO_PROTO)
        .await
        .with_context(|| format!("writing {}", proto_path.display()))?;

    let serve_args = ServeArgs {
        config: Some(mesh_path.clone()),
        grpc_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, opts.xds_port)),
        admin_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, opts.xds_admin_port)),
    };
    let tokens = identity::write_tokens(&dir, WORKLOADS.iter().map(|w| w.name))
        .context("writing the demo's bootstrap tokens")?;
    let identity = IdentityArgs {
        ca_dir: Some(dir.join(identity::CA_DIR)),
        bootstrap_tokens: Some(tokens),
        ..IdentityArgs::default()
    };
    let cp = control_plane::start_with(serve_args, identity)
        .await
        .map_err(|e| {
            let in_use = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
            });
            if in_use {
                let who = holder::explain(&[opts.xds_port, opts.xds_admin_port]);
                let who = if who.is_empty() {
                    String::new()
                } else {
                    format!(" ({who})")
                };
                e.context(format!(
                    "starting the control plane: 127.0.0.1:{} or 127.0.0.1:{} is taken{who}; \
                 `--xds-port 0 --xds-admin-port 0` picks free ports",
                    opts.xds_port, opts.xds_admin_port
                ))
            } else {
                e.context("starting the control plane")
            }
        })?;
    let xds_url = format!("http://{}", cp.grpc_addr);

    let deadline = Instant::now() + opts.ready_timeout;
    // Read once: a batch delay the user exported reaches the sidecars unchanged.
    let user_delay = std::env::var_os(otlp::SCHEDULE_DELAY_VAR).is_some();
    let ephemeral = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let launches = placements.iter().map(|p| {
        let (admin_addr, outbound_addr) = if p.spec.name == CLIENT {
            (
                SocketAddr::from((Ipv4Addr::LOCALHOST, opts.admin_port)),
                SocketAddr::from((Ipv4Addr::LOCALHOST, opts.outbound_port)),
            )
        } else {
            (ephemeral, ephemeral)
        };
        let launch = Launch {
            bin: &opts.skiff_bin,
            xds: &xds_url,
            placement: *p,
            admin_addr,
            outbound_addr,
            log: dir.join(LOG_DIR).join(format!("{}.log", p.spec.name)),
            token_file: Some(identity::token_path(&dir, p.spec.name)),
            env: otlp::sidecar_env(opts.otlp.as_deref(), p.spec.name, user_delay),
        };
        sidecar::start(launch, deadline)
    });
    // The first failure drops the other launches, and with them (kill_on_drop) their processes.
    let sidecars = try_join_all(launches).await.map_err(|e| {
        let fixed_ports = opts.outbound_port != 0 || opts.admin_port != 0;
        match &e {
            SidecarError::Exited { workload, .. } if workload == CLIENT && fixed_ports => {
                let who = holder::explain(&[opts.outbound_port, opts.admin_port]);
                let hint = if who.is_empty() {
                    format!(
                        "is 127.0.0.1:{} or 127.0.0.1:{} taken? `--outbound-port 0 --admin-port 0` \
                         picks free ports",
                        opts.outbound_port, opts.admin_port
                    )
                } else {
                    format!(
                        "{who}, probably an earlier demo or sidecar; or `--outbound-port 0 \
                         --admin-port 0` picks free ports"
                    )
                };
                anyhow!(e).context(hint)
            }
            _ => anyhow!(e),
        }
    })?;

    let client = sidecars
        .iter()
        .find(|s| s.info.workload == CLIENT)
        .ok_or_else(|| anyhow!("the demo mesh has no `{CLIENT}` workload"))?;
    Ok(Demo {
        client_outbound: client.info.outbound,
        client_admin: client.info.admin,
        xds_addr: cp.grpc_addr,
        xds_admin_addr: cp.admin_addr,
        dir,
        mesh_path,
        stop_timeout: opts.stop_timeout,
        otlp: opts.otlp,
        sidecars,
        control_plane: Some(cp),
        apps,
    })
}

/// Creates `dir`, or a fresh temporary directory that outlives the demo so its files can
/// still be read afterwards, and its `logs/` subdirectory.
pub(crate) fn prepare_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(dir) => dir.to_owned(),
        None => tempfile::Builder::new()
            .prefix("skiff-demo-")
            .tempdir()
            .context("creating a temporary directory for the demo")?
            .keep(),
    };
    let logs = dir.join(LOG_DIR);
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    Ok(dir)
}

impl Demo {
    /// The client sidecar's outbound listener: send requests here with `Host: <service>`.
    pub fn outbound_addr(&self) -> SocketAddr {
        self.client_outbound
    }

    /// The client sidecar's admin listener (`/ready`, `/metrics`, `/config_dump`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.client_admin
    }

    /// The mesh file the control plane serves (and watches: edits reach every sidecar).
    pub fn mesh_path(&self) -> &Path {
        &self.mesh_path
    }

    /// The control plane's discovery (gRPC) listener; every sidecar runs `--xds http://<this>`.
    pub fn xds_addr(&self) -> SocketAddr {
        self.xds_addr
    }

    /// The control plane's admin listener: `/proxies` (what `skiff-xds status` shows).
    pub fn xds_admin_addr(&self) -> SocketAddr {
        self.xds_admin_addr
    }

    /// The directory with the mesh file, `demo.proto` and `logs/` (one log per sidecar).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The OTLP collector the sidecars export spans to, when tracing is on.
    pub fn otlp_endpoint(&self) -> Option<&str> {
        self.otlp.as_deref()
    }

    /// Every sidecar, the client first.
    pub fn sidecars(&self) -> impl Iterator<Item = &SidecarInfo> {
        self.sidecars.iter().map(|s| &s.info)
    }

    /// Resolves when any sidecar exits on its own, with its workload name and exit status.
    /// Never resolves for a demo without sidecars.
    pub async fn sidecar_exited(&mut self) -> (String, std::io::Result<std::process::ExitStatus>) {
        if self.sidecars.is_empty() {
            return std::future::pending().await;
        }
        let waits = self.sidecars.iter_mut().map(|s| {
            Box::pin(async move {
                let status = s.exited().await;
                (s.info.workload.clone(), status)
            })
        });
        select_all(waits).await.0
    }

    /// Stops the sidecars (SIGTERM to all, then SIGKILL to those still running after the
    /// stop timeout), then the control plane, then the apps.
    pub async fn shutdown(mut self) {
        for sidecar in &mut self.sidecars {
            sidecar.terminate();
        }
        let deadline = Instant::now() + self.stop_timeout;
        for sidecar in &mut self.sidecars {
            // An error here means the child could not be waited on or killed; nothing is left
            // to do about it, and kill_on_drop still applies.
            let _ = sidecar.wait_or_kill(deadline).await;
        }
        self.sidecars.clear();
        if let Some(cp) = self.control_plane.take()
            && let Err(e) = cp.stop().await
        {
            tracing::warn!(error = %e, "the demo's control plane did not stop cleanly");
        }
        self.apps.clear();
    }
}

#[cfg(test)]
mod tests;
