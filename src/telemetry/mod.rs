//! What the proxy tells operators: Prometheus metrics (families registered once, handles
//! resolved when a snapshot is compiled), logs whose filter can change at runtime, the trace
//! context requests arrive with, spans exported over OTLP, and the access log.

pub mod access_log;
pub mod export;
mod logging;
mod metrics;
pub mod otlp;
pub mod spans;
pub mod trace_context;

pub use logging::{LogControl, init_logging};
pub use metrics::{
    DetectOutcome, DetectStats, Direction, Metrics, ReloadResult, RouteStats, TcpStats,
};

/// What requests leave behind for operators besides metrics: spans and access-log lines.
pub struct Recorder {
    pub tracer: spans::Tracer,
    pub access_log: access_log::AccessLog,
}
