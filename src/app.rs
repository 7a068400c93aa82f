//! Starting and stopping one proxy: loads the static mesh file, binds the listeners, prints
//! the startup line, runs admin and the accept loops, reloads on SIGHUP and drains on
//! SIGTERM/SIGINT. The wiring only; each concern lives in its own module.

use std::{io::Write, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use skiff_api::resource::content_version;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};
use tracing::{error, info, warn};

use crate::{
    admin,
    authz::AuthzMetrics,
    bootstrap::{self, RunArgs, Settings, TraceSettings},
    conn, inbound,
    listener::{self, DrainControl},
    outbound,
    resilience::ResilienceMetrics,
    snapshot::{CompileContext, Snapshot},
    state::{BoundAddrs, Parts, State},
    telemetry::{
        self, Metrics, Recorder, ReloadResult,
        access_log::AccessLog,
        export::{self, TraceMetrics},
        spans::Tracer,
    },
    tls::{self, MeshTls, TlsMetrics, certify::CertifyConfig},
    xds_client::{self, XdsConfig, XdsMetrics},
};

const DEFAULT_INBOUND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 15006);

/// `skiff run`.
pub fn run(args: RunArgs) -> ExitCode {
    let logs = telemetry::init_logging(&args.log, bootstrap::no_color_from_env());
    let source = match (&args.config, &args.xds, &args.workload) {
        (Some(path), _, _) => Source::Static(StaticSource {
            path: path.clone(),
            workload: args.workload.clone(),
            namespace: args.namespace.clone(),
            generation: 0,
        }),
        (None, Some(url), Some(workload)) => Source::Xds(XdsConfig {
            url: url.clone(),
            workload: workload.clone(),
            namespace: args.namespace.clone(),
            fetch_timeout: args.xds_fetch_timeout.get(),
            idle_timeout: args.xds_idle_timeout.get(),
            keepalive: args
                .xds_keepalive
                .get()
                .max(std::time::Duration::from_millis(100)),
        }),
        (None, Some(_), None) => {
            error!(
                "xDS mode needs --workload (and --namespace): the control plane serves a workload"
            );
            return ExitCode::from(2);
        }
        (None, None, _) => {
            error!("no config source: pass --config mesh.yaml or --xds URL --workload NAME");
            return ExitCode::from(2);
        }
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
    runtime.block_on(serve(args, source, logs))
}

/// Where the proxy's config comes from.
enum Source {
    /// A mesh file, reloaded on SIGHUP.
    Static(StaticSource),
    /// The control plane's discovery stream.
    Xds(XdsConfig),
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
        resilience: &ResilienceMetrics,
        authz: &AuthzMetrics,
        prev: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mesh = skiff_api::load(&text).map_err(|e| e.to_string())?;
        self.generation += 1;
        let cx = CompileContext {
            settings,
            metrics,
            resilience,
            tls: None,
            authz,
            policies_selected: false,
            workload: self
                .workload
                .as_deref()
                .map(|w| (w, self.namespace.as_str())),
            version: format!("{}-{}", self.generation, content_version(text.as_bytes())),
        };
        Snapshot::compile(&mesh, &cx, prev).map_err(|e| e.to_string())
    }

    fn reload(&mut self, state: &State) {
        let prev = state.snapshot();
        match self.load(
            &state.settings,
            &state.metrics,
            &state.resilience,
            &state.authz,
            Some(&prev),
        ) {
            Ok(next) => {
                info!(version = %next.version(), "config reloaded");
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

/// Binds every address of one direction, each with the address it actually got. An IPv6
/// address after the first is skipped, with a warning, on a host without IPv6: an injected
/// sidecar is given both families and keeps the one its pod has.
fn bind_all(
    name: &str,
    addrs: &[SocketAddr],
) -> Result<Vec<(tokio::net::TcpListener, SocketAddr)>, ExitCode> {
    let mut bound = Vec::with_capacity(addrs.len());
    for (i, &addr) in addrs.iter().enumerate() {
        match listener::bind(addr) {
            Ok(l) => {
                let got = l.local_addr().unwrap_or(addr);
                bound.push((l, got));
            }
            Err(e) if i > 0 && addr.is_ipv6() && no_ipv6(&e) => {
                warn!(%addr, error = %e, "no IPv6 here: the {name} listener skips this address");
            }
            Err(e) => {
                error!(%addr, error = %e, "cannot bind the {name} listener");
                return Err(ExitCode::FAILURE);
            }
        }
    }
    Ok(bound)
}

/// The errors of binding an IPv6 address where the host (or the pod) has no IPv6.
fn no_ipv6(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
    )
}

async fn serve(args: RunArgs, source: Source, logs: telemetry::LogControl) -> ExitCode {
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
    let mut metrics = Metrics::new();
    let resilience = ResilienceMetrics::register(metrics.registry_mut());
    let authz = AuthzMetrics::register(metrics.registry_mut());
    let tls_metrics = TlsMetrics::register(metrics.registry_mut());
    let trace = TraceSettings::from_env(args.workload.as_deref(), &args.namespace);
    for w in &trace.warnings {
        warn!("{w}");
    }
    let trace_metrics = TraceMetrics::register(metrics.registry_mut());
    let xds_metrics = XdsMetrics::register(metrics.registry_mut());
    let (tracer, exporting) = match &trace.export {
        Some(e) => match export::start(e, trace_metrics) {
            Ok((queue, handle)) => {
                info!(endpoint = %e.endpoint, sampling = trace.ratio, "exporting spans over OTLP");
                (Tracer::new(queue, trace.ratio, &e.endpoint), Some(handle))
            }
            Err(e) => {
                error!(error = %e, "cannot set up span export");
                return ExitCode::FAILURE;
            }
        },
        None => (Tracer::off(), None),
    };
    let access_log = match AccessLog::register(metrics.registry_mut(), args.access_log) {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "cannot start the access log");
            return ExitCode::FAILURE;
        }
    };
    let recorder = Arc::new(Recorder { tracer, access_log });
    // Identity: xDS mode with a token to prove who this proxy is.
    let certify = match (&source, &args.token_file) {
        (Source::Xds(cfg), Some(token_file)) => match MeshTls::new(tls_metrics.clone()) {
            Ok(tls) => Some((
                Arc::new(tls),
                CertifyConfig {
                    url: cfg.url.clone(),
                    workload: cfg.workload.clone(),
                    namespace: cfg.namespace.clone(),
                    token_file: token_file.clone(),
                },
            )),
            Err(e) => {
                error!(error = %e, "cannot set up mesh TLS");
                return ExitCode::FAILURE;
            }
        },
        (Source::Static(_), Some(_)) => {
            warn!("--token-file is ignored in static mode: there is no mesh CA, so no mTLS");
            None
        }
        _ => None,
    };
    let metrics = Arc::new(metrics);
    let (first, mut static_source, xds) = match source {
        Source::Static(mut source) => {
            match source.load(&settings, &metrics, &resilience, &authz, None) {
                Ok(snap) => {
                    metrics.reload(ReloadResult::Ok);
                    (snap, Some(source), None)
                }
                Err(e) => {
                    metrics.reload(ReloadResult::Failed);
                    error!(error = %e, "invalid config");
                    return ExitCode::FAILURE;
                }
            }
        }
        Source::Xds(cfg) => (Snapshot::empty(), None, Some(cfg)),
    };
    let state = Arc::new(State::new(
        first,
        Parts {
            settings,
            metrics,
            resilience,
            authz,
            tls_metrics,
            recorder,
            logs,
        },
    ));
    if let Some((tls, cfg)) = certify {
        state.set_tls(tls.clone());
        tokio::spawn(tls::certify::run(cfg, tls));
    }

    // Admin first: while the first config is awaited, /ready already answers (503).
    let admin_l = match bind("admin", args.admin_addr) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let local = |l: &tokio::net::TcpListener, fallback| l.local_addr().unwrap_or(fallback);
    let admin_addr = local(&admin_l, args.admin_addr);
    tokio::spawn(admin::serve(admin_l, state.clone()));

    if let Some(cfg) = xds {
        state.await_first_config();
        info!(url = %cfg.url, workload = %cfg.workload, namespace = %cfg.namespace, "waiting for the first config from the control plane");
        let (applied_tx, mut applied_rx) = watch::channel(false);
        tokio::spawn(xds_client::run(cfg, state.clone(), xds_metrics, applied_tx));
        // The inbound listener's address may come with the workload, so listeners wait.
        loop {
            tokio::select! {
                first = applied_rx.wait_for(|a| *a) => match first {
                    Ok(_) => break,
                    Err(_) => return ExitCode::FAILURE,
                },
                _ = term.recv() => return ExitCode::SUCCESS,
                _ = int.recv() => return ExitCode::SUCCESS,
                _ = hup.recv() => {}
            }
        }
    }

    let inbound_addrs = if args.inbound_addr.is_empty() {
        vec![
            state
                .snapshot()
                .inbound
                .as_ref()
                .and_then(|ib| ib.listener.as_ref())
                .map_or(DEFAULT_INBOUND, |l| l.listen),
        ]
    } else {
        args.inbound_addr.clone()
    };
    let (outbound_ls, inbound_ls) = match (
        bind_all("outbound", &args.outbound_addr),
        bind_all("inbound", &inbound_addrs),
    ) {
        (Ok(o), Ok(i)) => (o, i),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let (Some(outbound), Some(inbound)) = (outbound_ls.first(), inbound_ls.first()) else {
        error!("no listener address given");
        return ExitCode::from(2);
    };
    let bound = BoundAddrs {
        admin: admin_addr,
        outbound: outbound.1,
        inbound: inbound.1,
        more_outbound: outbound_ls.iter().skip(1).map(|l| l.1).collect(),
        more_inbound: inbound_ls.iter().skip(1).map(|l| l.1).collect(),
    };
    state.set_listening(bound.clone());
    info!(
        version = %state.snapshot().version(),
        admin = %bound.admin,
        outbound = %bound.outbound_list(),
        inbound = %bound.inbound_list(),
        "config applied; listening"
    );
    {
        // Tests and scripts read this line to learn ports chosen with :0.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "skiff listening admin={} outbound={} inbound={}",
            bound.admin,
            bound.outbound_list(),
            bound.inbound_list()
        );
        let _ = out.flush();
    }

    let drain = Arc::new(DrainControl::new());
    let mut tasks = Vec::new();
    for (l, _) in outbound_ls {
        let out_state = state.clone();
        tasks.push(tokio::spawn(listener::accept_loop(
            l,
            state.tcp_outbound.clone(),
            drain.clone(),
            move |acc| {
                let side = Arc::new(outbound::Outbound::new(&out_state, acc.dst, acc.local));
                conn::serve(acc, out_state.clone(), side)
            },
        )));
    }
    for (l, _) in inbound_ls {
        let in_state = state.clone();
        tasks.push(tokio::spawn(listener::accept_loop(
            l,
            state.tcp_inbound.clone(),
            drain.clone(),
            move |acc| {
                let side = Arc::new(inbound::Inbound::new(&in_state, acc.dst, acc.local));
                conn::serve(acc, in_state.clone(), side)
            },
        )));
    }

    loop {
        tokio::select! {
            _ = hup.recv() => match static_source.as_mut() {
                Some(source) => source.reload(&state),
                None => info!("SIGHUP ignored: the config comes from the control plane"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

    let timeout = state.settings.drain_timeout;
    info!(?timeout, "draining");
    state.start_draining();
    drain.start();
    for task in tasks {
        let _ = task.await;
    }
    if tokio::time::timeout(timeout, drain.idle()).await.is_err() {
        warn!("drain timeout passed with connections still open; exiting");
    } else {
        info!("drained");
    }
    if let Some(export) = exporting {
        export.shutdown(std::time::Duration::from_secs(2)).await;
    }
    ExitCode::SUCCESS
}
