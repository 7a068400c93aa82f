//! `skiff-xds check`: validates a mesh file with the very code the proxy runs.

use std::{path::Path, process::ExitCode};

/// Prints a one-line summary and exits 0, or names every bad field and exits 1.
pub fn run(path: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    match skiff_api::load(&text) {
        Ok(mesh) => {
            println!("{}: ok, {} services", path.display(), mesh.services.len());
            ExitCode::SUCCESS
        }
        Err(err) => {
            for e in &err.errors {
                eprintln!("{}: {e}", path.display());
            }
            ExitCode::FAILURE
        }
    }
}
