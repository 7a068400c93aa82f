//! `skiff-xds demo`: flags, the runtime, the control plane's log file, the ready-to-paste
//! instructions, and the wait for Ctrl-C or SIGTERM. Starting and stopping the mesh is the
//! library's (`demo::start`).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Mutex,
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use super::{
    CLIENT, Demo, DemoOptions, LOG_DIR, SPLIT_PATH, SPLIT_SERVICE, find_skiff, otlp, prepare_dir,
    split_edit, start,
};

/// The control plane's log, in the demo directory's `logs/`.
const CONTROL_PLANE_LOG: &str = "control-plane.log";

/// Options of `skiff-xds demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// The `skiff` binary. Default: `skiff` next to this executable, else on PATH.
    #[arg(long = "skiff", env = "SKIFF_BIN", value_name = "PATH")]
    pub skiff: Option<PathBuf>,
    /// Directory for the mesh file and the logs. Default: a fresh temporary directory (kept).
    #[arg(long, env = "SKIFF_DEMO_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Port of the client sidecar's outbound listener on 127.0.0.1 (0 = any free port).
    #[arg(long, env = "SKIFF_DEMO_OUTBOUND_PORT", default_value_t = 15001)]
    pub outbound_port: u16,
    /// Port of the client sidecar's admin listener on 127.0.0.1 (0 = any free port).
    #[arg(long, env = "SKIFF_DEMO_ADMIN_PORT", default_value_t = 15000)]
    pub admin_port: u16,
    /// Port of the control plane's discovery (gRPC) listener on 127.0.0.1 (0 = any free port).
    #[arg(long, env = "SKIFF_DEMO_XDS_PORT", default_value_t = 15010)]
    pub xds_port: u16,
    /// Port of the control plane's admin listener on 127.0.0.1 (0 = any free port).
    #[arg(long, env = "SKIFF_DEMO_XDS_ADMIN_PORT", default_value_t = 15014)]
    pub xds_admin_port: u16,
    /// OTLP/gRPC collector for every sidecar's spans, e.g. Jaeger at http://127.0.0.1:4317.
    /// Default: tracing off.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL", value_parser = otlp::parse_endpoint)]
    pub otlp: Option<String>,
    /// How long the sidecars may take to become ready (`20s`; more on a busy machine).
    #[arg(long, env = "SKIFF_DEMO_READY_TIMEOUT", default_value = "20s", value_parser = parse_timeout)]
    pub ready_timeout: std::time::Duration,
}

fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<skiff_api::Dur>()
        .map(|d| d.get())
        .map_err(|e| e.to_string())
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub fn main(args: DemoArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff-xds demo: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("skiff-xds demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    // The directory is made here, not in `start`, so the control plane logs into it.
    let dir = prepare_dir(args.dir.as_deref())?;
    init_logging(&dir.join(LOG_DIR).join(CONTROL_PLANE_LOG))?;
    let opts = DemoOptions {
        skiff_bin: find_skiff(args.skiff),
        dir: Some(dir),
        outbound_port: args.outbound_port,
        admin_port: args.admin_port,
        xds_port: args.xds_port,
        xds_admin_port: args.xds_admin_port,
        otlp: args.otlp,
        ready_timeout: args.ready_timeout,
        ..DemoOptions::default()
    };
    // Listen before starting anything, so a signal during startup is not lost.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    // The terminal closed: stop as on Ctrl-C, so no sidecar outlives the demo.
    let mut hangup = signal(SignalKind::hangup())?;
    eprintln!(
        "skiff-xds demo: starting apps, the control plane and sidecars with {}",
        opts.skiff_bin.display()
    );
    let mut demo = tokio::select! {
        demo = start(opts) => demo?,
        _ = interrupt.recv() => return Ok(ExitCode::from(130)),
        _ = terminate.recv() => return Ok(ExitCode::from(143)),
        _ = hangup.recv() => return Ok(ExitCode::from(129)),
    };
    print!("{}", instructions(&demo));

    let code = tokio::select! {
        _ = interrupt.recv() => ExitCode::SUCCESS,
        _ = terminate.recv() => ExitCode::SUCCESS,
        _ = hangup.recv() => ExitCode::SUCCESS,
        (workload, status) = demo.sidecar_exited() => {
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            let log = demo.sidecars().find(|s| s.workload == workload).map(|s| s.log.display().to_string());
            eprintln!("skiff-xds demo: the sidecar of {workload} exited ({status}); see {}", log.unwrap_or_default());
            ExitCode::FAILURE
        }
    };
    eprintln!("skiff-xds demo: stopping the sidecars and the control plane");
    demo.shutdown().await;
    Ok(code)
}

/// Sends the in-process control plane's logs (reloads, refused edits, proxies connecting) to
/// `path`, so they do not interleave with the instructions on the terminal. `RUST_LOG`
/// overrides the level (default: info).
fn init_logging(path: &Path) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // A file is never a terminal: plain text.
    crate::logging::init(Mutex::new(file), false);
    Ok(())
}

/// `s` as one shell word: unchanged when it is plain, else single-quoted.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:=@%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The tracing part of the instructions, when the sidecars export spans.
fn tracing_instructions(s: &mut String, demo: &Demo, endpoint: &str) {
    let out_addr = demo.outbound_addr();
    let jaeger = otlp::JAEGER_UI;
    let services = demo
        .sidecars()
        .map(|sc| sc.workload.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    // A fixed, valid trace id, so the user can open that one trace by its id.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let _ = writeln!(
        s,
        "\nTracing: every sidecar sends its spans to {endpoint} (OTLP/gRPC, in batches every \
         second),\nas the service named after its workload ({services}).\n\
         In Jaeger ({jaeger}) pick service `{CLIENT}` and Find Traces: each request is one \
         trace,\nthe {CLIENT} sidecar's CLIENT span (`GET web`) above the SERVER span of the \
         sidecar that answered (web-v1):"
    );
    let _ = writeln!(
        s,
        "  curl -s -H 'Host: web' -H 'traceparent: 00-{trace_id}-00f067aa0ba902b7-01' \
         http://{out_addr}/\n      # joins that trace: {jaeger}/trace/{trace_id}"
    );
    let _ = writeln!(
        s,
        "  curl -si -H 'Host: web' 'http://{out_addr}/delay?ms=2000'        # {CLIENT}'s span: \
         error.type=timeout"
    );
    let _ = writeln!(
        s,
        "  curl -si -X POST -H 'Host: {SPLIT_SERVICE}' http://{out_addr}/echo -d hi   # the \
         {SPLIT_SERVICE} sidecar's span: error.type=unauthorized"
    );
    let _ = writeln!(
        s,
        "  curl -s http://{}/metrics | grep skiff_trace_           # spans exported, dropped",
        demo.admin_addr()
    );
}

/// What the user reads once the mesh is up: where things are and what to paste.
fn instructions(demo: &Demo) -> String {
    let out_addr = demo.outbound_addr();
    let admin = demo.admin_addr();
    let dir = demo.dir().display();
    let mesh = shell_word(&demo.mesh_path().to_string_lossy());
    let xds_admin = format!("http://{}", demo.xds_admin_addr());
    // The running binary, so the status command works without it on PATH.
    let xds_bin = std::env::current_exe().ok().map_or_else(
        || "skiff-xds".to_owned(),
        |p| shell_word(&p.to_string_lossy()),
    );
    let mut s = String::new();
    // Writing to a String cannot fail, so the results below are ignored.
    let _ = writeln!(
        s,
        "\nSkiff demo mesh is ready.\n\nMesh file: {}",
        demo.mesh_path().display()
    );
    let _ = writeln!(
        s,
        "\nControl plane (in this process, serving the mesh file):\n  \
         grpc  http://{}   (every sidecar runs `skiff run --xds http://{} ...`)\n  \
         admin {xds_admin}\n  log   {}",
        demo.xds_addr(),
        demo.xds_addr(),
        demo.dir().join(LOG_DIR).join(CONTROL_PLANE_LOG).display()
    );
    let _ = writeln!(s, "\nSidecars:");
    let _ = writeln!(
        s,
        "  {:<12} {:>7}  {:<24} {:<34} log",
        "workload", "pid", "admin", "inbound -> app"
    );
    for sc in demo.sidecars() {
        let admin_url = format!("http://{}", sc.admin);
        let path = format!("{} -> {}", sc.inbound, sc.app);
        let log = sc.log.display();
        let _ = writeln!(
            s,
            "  {:<12} {:>7}  {admin_url:<24} {path:<34} {log}",
            sc.workload, sc.pid
        );
    }
    let _ = writeln!(s, "\nTry, through the client sidecar's outbound listener:");
    let _ = writeln!(s, "  curl -si -H 'Host: web' http://{out_addr}/");
    let _ = writeln!(s, "  curl -s -H 'Host: web' http://{out_addr}/headers");
    let _ = writeln!(
        s,
        "  for i in $(seq 10); do curl -s -H 'Host: {SPLIT_SERVICE}' http://{out_addr}/; done   # 50/50 v1/v2"
    );
    let _ = writeln!(
        s,
        "  curl -si -H 'Host: web' http://{out_addr}/status/503          # the app's 503, passed through"
    );
    let _ = writeln!(
        s,
        "  curl -si -H 'Host: web' 'http://{out_addr}/delay?ms=2000'     # over the 1s timeout: 504"
    );
    let _ = writeln!(
        s,
        "  curl -si -H 'Host: nowhere' http://{out_addr}/               # 503 unknown-service"
    );
    let _ = writeln!(
        s,
        "  grpcurl -plaintext -authority echo -import-path {dir} -proto demo.proto \\\n    \
         -d '{{\"message\":\"hi\"}}' {out_addr} skiff.demo.v1.Echo/Unary"
    );
    if let (Some(web), Some(reviews)) = (
        demo.sidecars().find(|sc| sc.workload == "web-v1"),
        demo.sidecars().find(|sc| sc.workload == "reviews-v1"),
    ) {
        let _ = writeln!(
            s,
            "\nIdentity and mTLS (each sidecar holds a SPIFFE certificate from the control plane's CA;\n\
             sidecar-to-sidecar traffic is mutual TLS):"
        );
        let _ = writeln!(
            s,
            "  curl -s http://{}/certs                    # web-v1's certificate, renewal time, trust anchors",
            web.admin
        );
        let _ = writeln!(
            s,
            "  curl -s http://{}/metrics | grep -E 'skiff_tls_handshakes|skiff_inbound_peer_requests|skiff_authz'",
            reviews.admin
        );
        let _ = writeln!(
            s,
            "  curl -si -X POST -H 'Host: {SPLIT_SERVICE}' http://{out_addr}/echo -d hi   # 403 unauthorized: reviews is read-only"
        );
        let _ = writeln!(
            s,
            "  curl -si http://{}/            # plaintext straight to web-v1: permissive takes it (unauthenticated)",
            web.inbound
        );
        let _ = writeln!(
            s,
            "  sed -i '/- name: web-v1$/,/inbound:/ s/mtls: permissive/mtls: strict/' {mesh}   # now the same curl is refused"
        );
    }
    if let Some(endpoint) = demo.otlp_endpoint() {
        tracing_instructions(&mut s, demo, endpoint);
    }
    let _ = writeln!(s, "\nInspect:");
    let _ = writeln!(
        s,
        "  {xds_bin} status --admin {xds_admin}   # every sidecar, in sync or not"
    );
    let _ = writeln!(s, "  curl -s http://{admin}/config_dump");
    let _ = writeln!(s, "  curl -s http://{admin}/metrics");
    let _ = writeln!(
        s,
        "\nChange the mesh live: the control plane watches the mesh file and pushes every valid \
         edit\nto the sidecars (an invalid one is refused; `status` names the bad field). For \
         example,\nsend all of {SPLIT_SERVICE} to v2 by setting the weights under {SPLIT_PATH} \
         to 0 and 100\n(edit the file, or paste):"
    );
    let _ = writeln!(s, "  sed -i '{}' {mesh}", split_edit([50, 50], [0, 100]));
    let _ = writeln!(
        s,
        "  for i in $(seq 20); do curl -s -H 'Host: {SPLIT_SERVICE}' http://{out_addr}/; done | sort | uniq -c"
    );
    let _ = writeln!(s, "and back to 50/50:");
    let _ = writeln!(s, "  sed -i '{}' {mesh}", split_edit([0, 100], [50, 50]));
    let _ = writeln!(s, "\nCtrl-C stops the demo.");
    s
}
