//! What the proxy tells operators: Prometheus metrics (families registered once, handles
//! resolved when a snapshot is compiled) and logs whose filter can change at runtime.

mod logging;
mod metrics;

pub use logging::{LogControl, init_logging};
pub use metrics::{
    DetectOutcome, DetectStats, Direction, LookupResult, Metrics, ReloadResult, RouteStats,
    TcpStats,
};
