//! `skiff-xds check`: validates a mesh file with the very code the proxy runs, and says so
//! in one line, or names every bad field, one per line. Owns only the output format.

use std::{path::Path, process::ExitCode};

use skiff_api::ConfigError;

/// Prints `<path>: ok (<summary>)` on stdout and exits 0, or prints
/// `<path>: <field.path>: <message>` per bad field and `<path>: N errors` on stderr and
/// exits 1. An unreadable file exits 1 with the I/O error.
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
            println!("{}: ok ({})", path.display(), skiff_api::summary(&mesh));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprint!("{}", refusal(path, &err));
            ExitCode::FAILURE
        }
    }
}

/// The stderr text of a refused file: one line per error, then the count.
fn refusal(path: &Path, err: &ConfigError) -> String {
    let file = path.display();
    let mut out = String::new();
    for e in &err.errors {
        // A message must not break the one-line-per-error format, whatever its source.
        let message = e.message.replace(['\r', '\n'], " ");
        out.push_str(&match e.path.as_str() {
            "" => format!("{file}: {message}\n"),
            field => format!("{file}: {field}: {message}\n"),
        });
    }
    let n = err.errors.len();
    out.push_str(&format!(
        "{file}: {n} {}\n",
        if n == 1 { "error" } else { "errors" }
    ));
    out
}
