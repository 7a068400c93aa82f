//! The demo mesh: demo HTTP and gRPC apps, and the sidecars started in front of them.

use std::process::ExitCode;

/// Options of `skiff-xds demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {}

/// Runs the demo until Ctrl-C.
pub fn main(_args: DemoArgs) -> ExitCode {
    eprintln!("demo: not implemented yet");
    ExitCode::FAILURE
}
