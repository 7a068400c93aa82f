//! The demo mesh: demo HTTP and gRPC apps on loopback, the mesh file naming their real
//! ports, and one `skiff` sidecar per workload, started, awaited and stopped together.
//! `start` is the library entry point (tests use it); `main` is `skiff-xds demo`.

mod cli;
mod echo_app;
mod http_app;
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

pub use self::{
    cli::{DemoArgs, main},
    echo_app::spawn_grpc_echo,
    http_app::{SERVED_BY, spawn_http_app},
    serve::AppHandle,
    sidecar::{ListeningLine, SidecarError, SidecarInfo, find_skiff, parse_listening_line},
    topology::{AppKind, CLIENT, WORKLOADS, WorkloadSpec},
};
use self::{
    sidecar::{Launch, Sidecar},
    topology::Placement,
};

/// The proto of the demo gRPC service, written next to the mesh file for `grpcurl -proto`.
const DEMO_PROTO: &str = include_str!("../../proto/demo.proto");

/// How to run the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The `skiff` binary. Default: `skiff` (looked up on `PATH`); see [`find_skiff`].
    pub skiff_bin: PathBuf,
    /// Where the mesh file, `demo.proto` and the sidecar logs go; created if missing.
    /// Default: a fresh temporary directory, kept after the demo ends.
    pub dir: Option<PathBuf>,
    /// Port of the client sidecar's outbound listener on 127.0.0.1; 0 = any. Default: 15001.
    pub outbound_port: u16,
    /// Port of the client sidecar's admin listener on 127.0.0.1; 0 = any. Default: 15000.
    pub admin_port: u16,
    /// How long all sidecars together may take to be ready. Default: 20 s.
    pub ready_timeout: Duration,
    /// How long sidecars may drain after SIGTERM before they are killed. Default: 8 s.
    pub stop_timeout: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            skiff_bin: PathBuf::from("skiff"),
            dir: None,
            outbound_port: 15001,
            admin_port: 15000,
            ready_timeout: Duration::from_secs(20),
            stop_timeout: Duration::from_secs(8),
        }
    }
}

/// A running demo mesh. Dropping it kills the sidecars and stops the apps; `shutdown`
/// lets the sidecars drain first.
pub struct Demo {
    dir: PathBuf,
    mesh_path: PathBuf,
    client_outbound: SocketAddr,
    client_admin: SocketAddr,
    stop_timeout: Duration,
    // Sidecars before apps: fields drop in order, so the proxies go before their upstreams.
    sidecars: Vec<Sidecar>,
    apps: Vec<AppHandle>,
}

/// Starts the demo apps, writes and validates the mesh file, starts one sidecar per
/// workload and returns once every sidecar's `/ready` answers 200.
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

    let deadline = Instant::now() + opts.ready_timeout;
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
            mesh: &mesh_path,
            placement: *p,
            admin_addr,
            outbound_addr,
            log: dir.join(format!("{}.log", p.spec.name)),
        };
        sidecar::start(launch, deadline)
    });
    // The first failure drops the other launches, and with them (kill_on_drop) their processes.
    let sidecars = try_join_all(launches).await.map_err(|e| {
        let fixed_ports = opts.outbound_port != 0 || opts.admin_port != 0;
        match &e {
            SidecarError::Exited { workload, .. } if workload == CLIENT && fixed_ports => {
                let hint = format!(
                    "is 127.0.0.1:{} or 127.0.0.1:{} taken? `--outbound-port 0 --admin-port 0` \
                     picks free ports",
                    opts.outbound_port, opts.admin_port
                );
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
        dir,
        mesh_path,
        stop_timeout: opts.stop_timeout,
        sidecars,
        apps,
    })
}

/// Creates `dir`, or a fresh temporary directory that outlives the demo so its files can
/// still be read afterwards.
fn prepare_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            Ok(dir.to_owned())
        }
        None => Ok(tempfile::Builder::new()
            .prefix("skiff-demo-")
            .tempdir()
            .context("creating a temporary directory for the demo")?
            .keep()),
    }
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

    /// The mesh file every sidecar runs.
    pub fn mesh_path(&self) -> &Path {
        &self.mesh_path
    }

    /// The directory with the mesh file, `demo.proto` and one log per sidecar.
    pub fn dir(&self) -> &Path {
        &self.dir
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
    /// stop timeout), then the apps.
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
        self.apps.clear();
    }
}

#[cfg(test)]
mod tests;
