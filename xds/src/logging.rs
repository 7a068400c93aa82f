//! How `skiff-xds` commands install their log subscriber: the `RUST_LOG` filter (default
//! `info`), and ANSI colour only when the logs go to a terminal and `NO_COLOR` is not set,
//! so log files and pipes get plain text.

use std::{ffi::OsStr, io::IsTerminal};

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

/// Whether to colour logs: never when `NO_COLOR` is set to a non-empty value, never when the
/// output is not a terminal.
pub fn colour(no_color: Option<&OsStr>, terminal: bool) -> bool {
    let opted_out = no_color.is_some_and(|v| !v.is_empty());
    terminal && !opted_out
}

/// [`colour`] for logs written to this process's stderr.
pub fn stderr_colour() -> bool {
    colour(
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::stderr().is_terminal(),
    )
}

/// Installs the global subscriber writing to `writer`, coloured when `ansi`. A subscriber
/// already installed (tests in one process) keeps the logs.
pub fn init<W>(writer: W, ansi: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer)
        .try_init();
}

/// Logs to stderr, coloured only on a terminal without `NO_COLOR`.
pub fn init_stderr() {
    init(std::io::stderr, stderr_colour());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(None, true));
        assert!(!colour(None, false), "a file or a pipe gets plain text");
        assert!(!colour(Some(OsStr::new("1")), true), "NO_COLOR=1 wins");
        assert!(
            colour(Some(OsStr::new("")), true),
            "an empty NO_COLOR is not set"
        );
    }
}
