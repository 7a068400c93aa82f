//! Starting and stopping one proxy: loads the static mesh file, binds the listeners, prints
//! the startup line, runs admin and the accept loops, reloads on SIGHUP and drains on
//! SIGTERM/SIGINT. The wiring only; each concern lives in its own module.

use std::{io::Write, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use std::hash::Hasher;

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    admin,
    bootstrap::{RunArgs, Settings},
    conn, inbound,
    listener::{self, DrainControl},
    outbound,
    snapshot::{CompileContext, Fnv1a, Snapshot},
    state::{BoundAddrs, State},
    telemetry::{self, Metrics, ReloadResult},
};

const DEFAULT_INBOUND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 15006);

/// `skiff run`.
pub fn run(args: RunArgs) -> ExitCode {
    let logs = telemetry::init_logging(&args.log);
    if args.xds.is_some() {
        error!("xDS mode (--xds) is not available in this build yet; run with --config mesh.yaml");
        return ExitCode::from(2);
    }
    let Some(path) = args.config.clone() else {
        error!("no config source: pass --config mesh.yaml (or SKIFF_CONFIG)");
        return ExitCode::from(2);
    };
    // One CPU (a pinned or 1-core sidecar, the common case) runs best on a single thread:
    // no cross-thread wakeups or work stealing. More CPUs get one worker each.
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let source = StaticSource {
        path,
        workload: args.workload.clone(),
        namespace: args.namespace.clone(),
        generation: 0,
    };
    runtime.block_on(serve(args, source, logs))
}

/// The mesh file in static mode: read, validated by `skiff-api`, compiled into a snapshot.
struct StaticSource {
    path: PathBuf,
    workload: Option<String>,
    namespace: String,
    generation: u64,
}

impl StaticSource {
    fn load(
        &mut self,
        settings: &Settings,
        metrics: &Metrics,
        prev: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mesh = skiff_api::load(&text).map_err(|e| e.to_string())?;
        self.generation += 1;
        let cx = CompileContext {
            settings,
            metrics,
            workload: self
                .workload
                .as_deref()
                .map(|w| (w, self.namespace.as_str())),
            version: format!("{}-{:016x}", self.generation, {
                let mut h = Fnv1a::default();
                h.write(text.as_bytes());
                h.finish()
            }),
        };
        Snapshot::compile(&mesh, &cx, prev).map_err(|e| e.to_string())
    }

    fn reload(&mut self, state: &State) {
        let prev = state.snapshot();
        match self.load(&state.settings, &state.metrics, Some(&prev)) {
            Ok(next) => {
                info!(version = %next.version, "config reloaded");
                state.install(next);
                state.metrics.reload(ReloadResult::Ok);
            }
            Err(e) => {
                warn!(error = %e, "config rejected; keeping the running one");
                state.reject(e);
                state.metrics.reload(ReloadResult::Failed);
            }
        }
    }
}

fn bind(name: &str, addr: SocketAddr) -> Result<tokio::net::TcpListener, ExitCode> {
    listener::bind(addr).map_err(|e| {
        error!(%addr, error = %e, "cannot bind the {name} listener");
        ExitCode::FAILURE
    })
}

async fn serve(args: RunArgs, mut source: StaticSource, logs: telemetry::LogControl) -> ExitCode {
    // Handlers go in before anything can report ready: until then SIGTERM and SIGHUP would
    // still kill the process outright.
    let signals = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    let (mut hup, mut term, mut int) = match signals {
        (Ok(h), Ok(t), Ok(i)) => (h, t, i),
        _ => {
            error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let settings = Settings::from_args(&args);
    let metrics = Arc::new(Metrics::new());
    let first = match source.load(&settings, &metrics, None) {
        Ok(s) => s,
        Err(e) => {
            metrics.reload(ReloadResult::Failed);
            error!(error = %e, "invalid config");
            return ExitCode::FAILURE;
        }
    };
    metrics.reload(ReloadResult::Ok);
    let inbound_addr = args
        .inbound_addr
        .or(first.inbound.as_ref().map(|ib| ib.listen))
        .unwrap_or(DEFAULT_INBOUND);
    let state = Arc::new(State::new(first, settings, metrics, logs));

    let (admin_l, outbound_l, inbound_l) = match (
        bind("admin", args.admin_addr),
        bind("outbound", args.outbound_addr),
        bind("inbound", inbound_addr),
    ) {
        (Ok(a), Ok(o), Ok(i)) => (a, o, i),
        (Err(code), _, _) | (_, Err(code), _) | (_, _, Err(code)) => return code,
    };
    let local = |l: &tokio::net::TcpListener, fallback| l.local_addr().unwrap_or(fallback);
    let bound = BoundAddrs {
        admin: local(&admin_l, args.admin_addr),
        outbound: local(&outbound_l, args.outbound_addr),
        inbound: local(&inbound_l, inbound_addr),
    };
    state.set_listening(bound);
    info!(
        version = %state.snapshot().version,
        admin = %bound.admin,
        outbound = %bound.outbound,
        inbound = %bound.inbound,
        "config applied; listening"
    );
    {
        // Tests and scripts read this line to learn ports chosen with :0.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "skiff listening admin={} outbound={} inbound={}",
            bound.admin, bound.outbound, bound.inbound
        );
        let _ = out.flush();
    }

    let drain = Arc::new(DrainControl::new());
    tokio::spawn(admin::serve(admin_l, state.clone()));
    let out_state = state.clone();
    let outbound_task = tokio::spawn(listener::accept_loop(
        outbound_l,
        state.tcp_outbound.clone(),
        drain.clone(),
        move |acc| {
            let side = Arc::new(outbound::Outbound::new(acc.dst, acc.local));
            conn::serve(acc, out_state.clone(), side)
        },
    ));
    let in_state = state.clone();
    let inbound_task = tokio::spawn(listener::accept_loop(
        inbound_l,
        state.tcp_inbound.clone(),
        drain.clone(),
        move |acc| {
            let side = Arc::new(inbound::Inbound::new(&in_state, acc.dst, acc.local));
            conn::serve(acc, in_state.clone(), side)
        },
    ));

    loop {
        tokio::select! {
            _ = hup.recv() => source.reload(&state),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

    let timeout = state.settings.drain_timeout;
    info!(?timeout, "draining");
    state.start_draining();
    drain.start();
    let _ = tokio::join!(outbound_task, inbound_task);
    if tokio::time::timeout(timeout, drain.idle()).await.is_err() {
        warn!("drain timeout passed with connections still open; exiting");
    } else {
        info!("drained");
    }
    ExitCode::SUCCESS
}
