//! `skiff`: the Skiff sidecar proxy's command line (`run`, `init`, `version`); nothing else.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skiff::{app, bootstrap, init};

#[derive(Parser, Debug)]
#[command(name = "skiff", version, about = "Skiff service-mesh sidecar proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy (static mode: --config mesh.yaml).
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
