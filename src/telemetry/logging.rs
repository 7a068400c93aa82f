//! Logging to stderr through `tracing`, with a filter that `/logging` can read and replace.
//! ANSI colour only when stderr is a terminal and `NO_COLOR` is not set, so files are plain.

use std::{io::IsTerminal, sync::Mutex};

use tracing_subscriber::{
    EnvFilter, Registry, fmt, layer::SubscriberExt, reload, util::SubscriberInitExt,
};

/// Reads and replaces the live log filter.
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

/// Whether to colour logs: only on a terminal, and never when `NO_COLOR` asks not to.
pub fn colour(no_color: bool, terminal: bool) -> bool {
    terminal && !no_color
}

/// Installs the global subscriber. An invalid initial filter falls back to `info`.
/// `no_color` (from `NO_COLOR`) turns colour off even on a terminal.
pub fn init_logging(filter: &str, no_color: bool) -> LogControl {
    let (directive, env_filter) = match EnvFilter::try_new(filter) {
        Ok(f) => (filter.to_owned(), f),
        Err(_) => ("info".to_owned(), EnvFilter::new("info")),
    };
    let (layer, handle) = reload::Layer::new(env_filter);
    let fmt = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour(no_color, std::io::stderr().is_terminal()))
        .with_target(true);
    // A second init (tests in one process) keeps the first subscriber; that is fine.
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(fmt)
        .try_init();
    LogControl {
        handle,
        current: Mutex::new(directive),
    }
}

impl LogControl {
    pub fn current(&self) -> String {
        self.current.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Replaces the filter; `level=debug` and plain env-filter directives are both accepted.
    pub fn set(&self, input: &str) -> Result<String, String> {
        let input = input.trim();
        let directive = input.strip_prefix("level=").unwrap_or(input).trim();
        if directive.is_empty() {
            return Err("empty filter".to_owned());
        }
        let filter = EnvFilter::try_new(directive).map_err(|e| e.to_string())?;
        self.handle.reload(filter).map_err(|e| e.to_string())?;
        if let Ok(mut g) = self.current.lock() {
            *g = directive.to_owned();
        }
        Ok(directive.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(false, true));
        assert!(!colour(false, false), "a file or a pipe gets plain text");
        assert!(!colour(true, true), "NO_COLOR wins on a terminal");
    }
}
