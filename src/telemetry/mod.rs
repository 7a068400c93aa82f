//! What the proxy tells operators: Prometheus metrics (families registered once, handles
//! resolved when a snapshot is compiled), logs whose filter can change at runtime, and the
//! trace context requests arrive with.

mod logging;
mod metrics;
pub mod trace_context;

pub use logging::{LogControl, init_logging};
pub use metrics::{
    DetectOutcome, DetectStats, Direction, LookupResult, Metrics, ReloadResult, RouteStats,
    TcpStats,
};
