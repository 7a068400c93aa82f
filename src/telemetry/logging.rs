//! Logging to stderr through `tracing`, with a filter that `/logging` can read and replace.

use std::sync::Mutex;

use tracing_subscriber::{
    EnvFilter, Registry, fmt, layer::SubscriberExt, reload, util::SubscriberInitExt,
};

/// Reads and replaces the live log filter.
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

/// Installs the global subscriber. An invalid initial filter falls back to `info`.
pub fn init_logging(filter: &str) -> LogControl {
    let (directive, env_filter) = match EnvFilter::try_new(filter) {
        Ok(f) => (filter.to_owned(), f),
        Err(_) => ("info".to_owned(), EnvFilter::new("info")),
    };
    let (layer, handle) = reload::Layer::new(env_filter);
    let fmt = fmt::layer().with_writer(std::io::stderr).with_target(true);
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
