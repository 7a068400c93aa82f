//! `skiff-xds demo`: flags, the runtime, the ready-to-paste instructions, and the wait for
//! Ctrl-C or SIGTERM. Starting and stopping the mesh is the library's (`demo::start`).

use std::{fmt::Write as _, path::PathBuf, process::ExitCode};

use tokio::signal::unix::{SignalKind, signal};

use super::{Demo, DemoOptions, find_skiff, start};

/// Options of `skiff-xds demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// The `skiff` binary. Default: `skiff` next to this executable, else on PATH.
    #[arg(long = "skiff", env = "SKIFF_BIN", value_name = "PATH")]
    pub skiff: Option<PathBuf>,
    /// Directory for the mesh file and the sidecar logs. Default: a fresh temporary directory (kept).
    #[arg(long, env = "SKIFF_DEMO_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Port of the client sidecar's outbound listener on 127.0.0.1 (0 = any free port).
    #[arg(long, env = "SKIFF_DEMO_OUTBOUND_PORT", default_value_t = 15001)]
    pub outbound_port: u16,
    /// Port of the client sidecar's admin listener on 127.0.0.1 (0 = any free port).
    #[arg(long, env = "SKIFF_DEMO_ADMIN_PORT", default_value_t = 15000)]
    pub admin_port: u16,
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
    let opts = DemoOptions {
        skiff_bin: find_skiff(args.skiff),
        dir: args.dir,
        outbound_port: args.outbound_port,
        admin_port: args.admin_port,
        ..DemoOptions::default()
    };
    // Listen before starting anything, so a signal during startup is not lost.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    eprintln!(
        "skiff-xds demo: starting apps and sidecars with {}",
        opts.skiff_bin.display()
    );
    let mut demo = tokio::select! {
        demo = start(opts) => demo?,
        _ = interrupt.recv() => return Ok(ExitCode::from(130)),
        _ = terminate.recv() => return Ok(ExitCode::from(143)),
    };
    print!("{}", instructions(&demo));

    let code = tokio::select! {
        _ = interrupt.recv() => ExitCode::SUCCESS,
        _ = terminate.recv() => ExitCode::SUCCESS,
        (workload, status) = demo.sidecar_exited() => {
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            let log = demo.sidecars().find(|s| s.workload == workload).map(|s| s.log.display().to_string());
            eprintln!("skiff-xds demo: the sidecar of {workload} exited ({status}); see {}", log.unwrap_or_default());
            ExitCode::FAILURE
        }
    };
    eprintln!("skiff-xds demo: stopping the sidecars");
    demo.shutdown().await;
    Ok(code)
}

/// What the user reads once the mesh is up: where things are and what to paste.
fn instructions(demo: &Demo) -> String {
    let out_addr = demo.outbound_addr();
    let admin = demo.admin_addr();
    let dir = demo.dir().display();
    let mut s = String::new();
    // Writing to a String cannot fail, so the results below are ignored.
    let _ = writeln!(
        s,
        "\nSkiff demo mesh is ready.\n\nMesh file: {}",
        demo.mesh_path().display()
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
        "  for i in $(seq 10); do curl -s -H 'Host: reviews' http://{out_addr}/; done   # 50/50 v1/v2"
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
    let _ = writeln!(s, "\nInspect the client sidecar:");
    let _ = writeln!(s, "  curl -s http://{admin}/config_dump");
    let _ = writeln!(s, "  curl -s http://{admin}/metrics");
    let pids: Vec<String> = demo.sidecars().map(|sc| sc.pid.to_string()).collect();
    let _ = writeln!(
        s,
        "\nReload after editing the mesh file:\n  kill -HUP {}",
        pids.join(" ")
    );
    let _ = writeln!(s, "\nCtrl-C stops the demo.");
    s
}
