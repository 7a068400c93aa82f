//! Prometheus metric families of the proxy, registered once at start. Per-route and
//! per-direction handles are resolved when a snapshot is compiled or a listener starts,
//! so the request path only touches atomics.

use std::time::Duration;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::Registry,
};

/// Label values spelled as the metric contract says (the derive would use the Rust names).
macro_rules! label_values {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
        }
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                use std::fmt::Write;
                encoder.write_str(self.as_str())
            }
        }
    };
}

label_values!(Direction { Inbound => "inbound", Outbound => "outbound" });
label_values!(DetectOutcome {
    Http1 => "http1", Http2 => "http2", Tls => "tls", Opaque => "opaque", Timeout => "timeout", Skipped => "skipped",
});
label_values!(ReloadResult { Ok => "ok", Failed => "failed" });
label_values!(Io { Read => "read", Write => "write" });

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DetectOutcome {
    Http1,
    Http2,
    Tls,
    Opaque,
    /// Nothing decisive arrived before the detection timeout.
    Timeout,
    /// Skipped: an opaque port or a `protocol: tcp` service.
    Skipped,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReloadResult {
    Ok,
    Failed,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Io {
    Read,
    Write,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    direction: Direction,
    service: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    direction: Direction,
    service: String,
    route: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IoLabels {
    direction: Direction,
    io: Io,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: DetectOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: ReloadResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn duration_histogram() -> Histogram {
    // 1 ms to ~33 s in doublings: covers loopback hops and slow upstreams alike.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric family of the proxy, and the registry `/metrics` encodes.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    tcp_open: Family<DirectionLabels, Gauge>,
    tcp_total: Family<DirectionLabels, Counter>,
    tcp_bytes: Family<IoLabels, Counter>,
    tcp_unrouted: Family<DirectionLabels, Counter>,
    tcp_passthrough: Family<DirectionLabels, Counter>,
    detect: Family<OutcomeLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RouteLabels, Counter>::default();
        let responses = Family::<ResponseLabels, Counter>::default();
        let duration = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let tcp_open = Family::<DirectionLabels, Gauge>::default();
        let tcp_total = Family::<DirectionLabels, Counter>::default();
        let tcp_bytes = Family::<IoLabels, Counter>::default();
        let tcp_unrouted = Family::<DirectionLabels, Counter>::default();
        let tcp_passthrough = Family::<DirectionLabels, Counter>::default();
        let detect = Family::<OutcomeLabels, Counter>::default();
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "skiff_build",
            "Skiff build information",
            Info::new(VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        registry.register("skiff_requests", "HTTP requests by route", requests.clone());
        registry.register(
            "skiff_responses",
            "HTTP responses by route and status class",
            responses.clone(),
        );
        registry.register(
            "skiff_request_duration_seconds",
            "Time from request to response headers",
            duration.clone(),
        );
        registry.register(
            "skiff_tcp_connections_open",
            "Open TCP connections",
            tcp_open.clone(),
        );
        registry.register(
            "skiff_tcp_connections",
            "Accepted TCP connections",
            tcp_total.clone(),
        );
        registry.register(
            "skiff_tcp_bytes",
            "Bytes read from and written to accepted connections",
            tcp_bytes.clone(),
        );
        registry.register(
            "skiff_tcp_unrouted_connections",
            "Opaque connections closed because no service takes their destination",
            tcp_unrouted.clone(),
        );
        registry.register(
            "skiff_tcp_passthrough_connections",
            "Redirected opaque connections no service takes, forwarded to their original destination",
            tcp_passthrough.clone(),
        );
        registry.register(
            "skiff_detect",
            "Protocol detection outcomes",
            detect.clone(),
        );
        registry.register(
            "skiff_config_reloads",
            "Config loads and reloads",
            reloads.clone(),
        );
        Metrics {
            registry,
            requests,
            responses,
            duration,
            tcp_open,
            tcp_total,
            tcp_bytes,
            tcp_unrouted,
            tcp_passthrough,
            detect,
            reloads,
        }
    }

    /// Where another concern registers its own families, at start (before sharing).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Handles for one route; called when a snapshot is compiled, never per request.
    pub fn route(&self, direction: Direction, service: &str, route: &str) -> RouteStats {
        let labels = RouteLabels {
            direction,
            service: service.to_owned(),
            route: route.to_owned(),
        };
        let responses = STATUS_CLASSES.map(|status_class| {
            self.responses.get_or_create_owned(&ResponseLabels {
                direction,
                service: labels.service.clone(),
                route: labels.route.clone(),
                status_class,
            })
        });
        RouteStats {
            requests: self.requests.get_or_create_owned(&labels),
            duration: self.duration.get_or_create_owned(&labels),
            responses,
        }
    }

    /// Handles for one listener direction; called when a listener starts.
    pub fn tcp(&self, direction: Direction) -> TcpStats {
        let d = DirectionLabels { direction };
        TcpStats {
            open: self.tcp_open.get_or_create_owned(&d),
            total: self.tcp_total.get_or_create_owned(&d),
            read: self.tcp_bytes.get_or_create_owned(&IoLabels {
                direction,
                io: Io::Read,
            }),
            write: self.tcp_bytes.get_or_create_owned(&IoLabels {
                direction,
                io: Io::Write,
            }),
            unrouted: self.tcp_unrouted.get_or_create_owned(&d),
            passthrough: self.tcp_passthrough.get_or_create_owned(&d),
        }
    }

    pub fn detect(&self, outcome: DetectOutcome) -> Counter {
        self.detect.get_or_create_owned(&OutcomeLabels { outcome })
    }

    pub fn reload(&self, result: ReloadResult) {
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-route counters and histogram.
#[derive(Clone, Debug)]
pub struct RouteStats {
    pub requests: Counter,
    responses: [Counter; 5],
    duration: Histogram,
}

/// Index into the 1xx..5xx classes; anything outside 100..=599 counts as 5xx.
pub fn status_class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 4,
    }
}

impl RouteStats {
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.responses[status_class_index(status)].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

/// Detection outcome counters, resolved once.
#[derive(Clone, Debug)]
pub struct DetectStats([Counter; 6]);

impl DetectStats {
    pub fn new(m: &Metrics) -> Self {
        use DetectOutcome as D;
        DetectStats(
            [
                D::Http1,
                D::Http2,
                D::Tls,
                D::Opaque,
                D::Timeout,
                D::Skipped,
            ]
            .map(|o| m.detect(o)),
        )
    }

    pub fn count(&self, outcome: DetectOutcome) {
        self.0[outcome as usize].inc();
    }
}

/// Per-direction connection and byte counters.
#[derive(Clone, Debug)]
pub struct TcpStats {
    pub open: Gauge,
    pub total: Counter,
    pub read: Counter,
    pub write: Counter,
    pub unrouted: Counter,
    /// Redirected connections sent on to their original destination, no service taking it.
    pub passthrough: Counter,
}
