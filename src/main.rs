//! `skiff`: the Skiff sidecar proxy's command line (`run`, `init`, `version`); nothing else.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skiff::{app, bootstrap, init};

#[derive(Parser, Debug)]
#[command(
    name = "skiff",
    version,
    about = "Skiff service-mesh sidecar proxy",
    after_help = "\
`skiff run` takes its config from one of two sources:
  static mode  skiff run --config mesh.yaml [--workload NAME --namespace NS]
               the mesh file alone, reloaded on SIGHUP; no CA, so no mTLS
  xDS mode     skiff run --xds http://127.0.0.1:15010 --workload NAME --namespace NS [--token-file PATH]
               the control plane streams the workload's config; with a token the proxy gets
               a certificate from the control plane's CA and speaks mTLS, without one plaintext
`skiff run --help` lists every flag."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy: static mode (--config) or xDS mode (--xds).
    ///
    /// Static mode: `skiff run --config mesh.yaml [--workload NAME --namespace NS]`. The mesh
    /// file is the whole config, validated as `skiff-xds check` validates it. SIGHUP reloads it;
    /// a file that fails validation is refused and the running config stays. `--workload` picks
    /// this sidecar's inbound listener and policies from the file. There is no CA, so no
    /// identity and no mTLS.
    ///
    /// xDS mode: `skiff run --xds http://127.0.0.1:15010 --workload NAME --namespace NS
    /// [--token-file PATH]`. The control plane streams the workload's config; a service the app
    /// calls is fetched the first time it is addressed. With a token (`--token-file`) the proxy
    /// gets a SPIFFE certificate from the control plane's CA and speaks mutual TLS with meshed
    /// peers; without one it has no identity and speaks plaintext.
    ///
    /// Once its listeners are bound, the proxy prints `skiff listening admin=ADDR
    /// outbound=ADDR inbound=ADDR` on stdout. SIGTERM or Ctrl-C drains in-flight requests (at
    /// most `--drain-timeout`) and exits 0.
    Run(Box<bootstrap::RunArgs>),
    /// Install the iptables rules that send the pod's TCP through the proxy (run once, as
    /// the pod's init container, with NET_ADMIN); --cleanup removes them, --dry-run prints them.
    Init(Box<init::InitArgs>),
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => app::run(*args),
        Command::Init(args) => init::run(*args),
        Command::Version => {
            println!("skiff {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
