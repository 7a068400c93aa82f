//! `skiff-xds` command line: `serve` runs the control plane, `status` shows connected proxies,
//! `check` validates a mesh file, `inject` adds the sidecar to Kubernetes manifests, `demo`
//! runs a mesh on loopback.
//! Each subcommand lives in its own module; this file only parses arguments and dispatches.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "skiff-xds", version, about = "Skiff control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the mesh (a file, or with --kubernetes the cluster) to proxies over gRPC,
    /// following its changes.
    Serve(Box<skiff_xds::serve::ServeCommand>),
    /// Show every proxy connected to a running control plane and whether it is in sync.
    Status(skiff_xds::status::StatusArgs),
    /// Validate a mesh file: exit 0 with a summary, or exit 1 naming every bad field.
    Check {
        /// The mesh file.
        path: PathBuf,
    },
    /// Add the Skiff sidecar to the pods of Kubernetes manifests and print them.
    ///
    /// `skiff-xds inject -f deploy.yaml | kubectl apply -f -`. Skipped pods and warnings go to
    /// stderr; a refused object exits 1 and prints nothing to stdout.
    Inject(skiff_xds::inject::InjectArgs),
    /// Run a whole demo mesh (apps and their sidecars) on loopback until Ctrl-C, SIGTERM or
    /// the terminal closing; the sidecars and apps stop with it.
    Demo(skiff_xds::demo::DemoArgs),
    /// Ask a proxy what it would do with a request for HOST: the service, route, backends and
    /// endpoints it would use, or the 503 it would answer and why (exit 1).
    Describe(skiff_xds::describe::DescribeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => skiff_xds::serve::main(*args),
        Command::Status(args) => skiff_xds::status::main(args),
        Command::Check { path } => skiff_xds::check::run(&path),
        Command::Inject(args) => skiff_xds::inject::main(args),
        Command::Demo(args) => skiff_xds::demo::main(args),
        Command::Describe(args) => skiff_xds::describe::main(args),
    }
}
