//! The proxy's own settings, from flags and their `SKIFF_*` environment twins (addresses,
//! config source, identity, drain and detection limits) and the `OTEL_*` variables for tracing.
//! The only module that reads the environment.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use skiff_api::Dur;

use crate::telemetry::export::ExportSettings;

/// Ports where the client waits for the server to speak first (SMTP, MySQL, Postgres, Redis,
/// Elasticsearch transport, memcached, ...): protocol detection would only add a delay.
pub const DEFAULT_OPAQUE_PORTS: &str = "25,587,3306,4444,5432,6379,9300,11211";

/// `skiff run`: where the config comes from and how the proxy listens.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Static mode: the mesh file, the proxy's whole config; reloaded on SIGHUP (a file that
    /// fails validation is refused and the running config stays).
    #[arg(
        long,
        env = "SKIFF_CONFIG",
        conflicts_with = "xds",
        help_heading = "Static mode"
    )]
    pub config: Option<PathBuf>,
    /// xDS mode: the control plane's gRPC address, e.g. http://127.0.0.1:15010. Needs
    /// `--workload`.
    #[arg(long, env = "SKIFF_XDS", help_heading = "xDS mode")]
    pub xds: Option<String>,
    /// This sidecar's workload: picks its inbound listener and policies from the mesh.
    /// Required in xDS mode; optional in static mode.
    #[arg(long, env = "SKIFF_WORKLOAD")]
    pub workload: Option<String>,
    /// Namespace of `--workload`.
    #[arg(long, env = "SKIFF_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// xDS mode: how long a request to a service the proxy does not hold yet waits for the
    /// control plane to send it (then 503 `unknown-service`).
    #[arg(
        long,
        env = "SKIFF_XDS_FETCH_TIMEOUT",
        default_value = "2s",
        help_heading = "xDS mode"
    )]
    pub xds_fetch_timeout: Dur,
    /// xDS mode: a service no request used for this long is unsubscribed and forgotten.
    #[arg(
        long,
        env = "SKIFF_XDS_IDLE_TIMEOUT",
        default_value = "5m",
        help_heading = "xDS mode"
    )]
    pub xds_idle_timeout: Dur,
    /// xDS mode: HTTP/2 PING interval on the discovery stream; a control plane that does not
    /// answer within as long again is treated as gone (a dead node sends no reset), and the
    /// proxy reconnects. At least 100ms.
    #[arg(
        long,
        env = "SKIFF_XDS_KEEPALIVE",
        default_value = "10s",
        help_heading = "xDS mode"
    )]
    pub xds_keepalive: Dur,
    /// xDS mode: a file holding the token that proves this workload to the control plane's CA.
    /// It is sent with every certificate request (Certify), read afresh each time with
    /// surrounding whitespace trimmed, so a rotated token is picked up. In Kubernetes the
    /// injected sidecar points it at the pod's projected service-account token (audience
    /// `skiff`), which the CA checks by TokenReview; outside Kubernetes it holds the workload's
    /// bootstrap token from the control plane's `--bootstrap-tokens`. With a token the proxy
    /// gets a SPIFFE certificate and speaks mutual TLS with meshed peers; without one it has no
    /// identity: plaintext, unauthenticated. Ignored (with a warning) in static mode.
    #[arg(long, env = "SKIFF_TOKEN_FILE", help_heading = "xDS mode")]
    pub token_file: Option<PathBuf>,
    /// Admin listener: /ready, /live, /metrics, /config_dump, /describe, /logging, and /certs
    /// once the proxy has an identity.
    #[arg(long, env = "SKIFF_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// Outbound listener (the app's redirected egress): one or more addresses, comma-separated
    /// (a dual-stack pod: `127.0.0.1:15001,[::1]:15001`). IPv6 sockets are IPv6-only.
    #[arg(
        long,
        env = "SKIFF_OUTBOUND_ADDR",
        value_delimiter = ',',
        default_value = "127.0.0.1:15001"
    )]
    pub outbound_addr: Vec<SocketAddr>,
    /// Inbound listener: one or more addresses, comma-separated (a dual-stack pod:
    /// `0.0.0.0:15006,[::]:15006`). Default: the workload's `inbound.listen`, else 0.0.0.0:15006.
    #[arg(long, env = "SKIFF_INBOUND_ADDR", value_delimiter = ',')]
    pub inbound_addr: Vec<SocketAddr>,
    /// Longest wait for in-flight requests after SIGTERM or Ctrl-C.
    #[arg(long, env = "SKIFF_DRAIN_TIMEOUT", default_value = "5s")]
    pub drain_timeout: Dur,
    /// Longest wait for a client's first bytes before a connection is treated as opaque TCP.
    #[arg(long, env = "SKIFF_DETECT_TIMEOUT", default_value = "10s")]
    pub detect_timeout: Dur,
    /// Destination ports that skip protocol detection (server-speaks-first protocols).
    #[arg(long, env = "SKIFF_OPAQUE_PORTS", value_delimiter = ',', default_value = DEFAULT_OPAQUE_PORTS)]
    pub opaque_ports: Vec<u16>,
    /// Largest request head accepted, in bytes (431 beyond); values under 1024 count as 1024.
    #[arg(long, env = "SKIFF_MAX_HEADER_BYTES", default_value_t = 65536)]
    pub max_header_bytes: usize,
    /// Log filter (tracing env-filter syntax), changeable at runtime on /logging.
    #[arg(long, env = "SKIFF_LOG", default_value = "info")]
    pub log: String,
    /// Print one JSON line per request and per TCP connection on stdout, with the trace and
    /// span ids that join it to its trace.
    #[arg(long, env = "SKIFF_ACCESS_LOG")]
    pub access_log: bool,
}

/// Whether `NO_COLOR` asks for logs without ANSI colour: set to a non-empty value.
pub fn no_color_from_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Tracing as the OpenTelemetry variables set it, read once at start.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// `None`: no collector, tracing off.
    pub export: Option<ExportSettings>,
    /// The ratio of new traces sampled when the mesh file sets none.
    pub ratio: f64,
    /// Values that were not understood, and what was used instead.
    pub warnings: Vec<String>,
}

impl TraceSettings {
    pub fn from_env(workload: Option<&str>, namespace: &str) -> Self {
        TraceSettings::from_vars(|k| std::env::var(k).ok(), workload, namespace)
    }

    /// From variables looked up by `get` (the environment, or a table in tests).
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
        workload: Option<&str>,
        namespace: &str,
    ) -> Self {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut warnings = Vec::new();
        let ratio = sampler_ratio(
            get("OTEL_TRACES_SAMPLER").as_deref(),
            get("OTEL_TRACES_SAMPLER_ARG").as_deref(),
            &mut warnings,
        );
        let endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let export = endpoint.map(|endpoint| {
            let mut e = ExportSettings::new(endpoint);
            let mut millis = |name: &str, slot: &mut Duration| {
                if let Some(v) = get(name) {
                    match v.parse::<u64>() {
                        Ok(ms) => *slot = Duration::from_millis(ms),
                        Err(_) => warnings.push(format!(
                            "{name}={v}: not a number of milliseconds; using {}",
                            slot.as_millis()
                        )),
                    }
                }
            };
            millis("OTEL_BSP_SCHEDULE_DELAY", &mut e.schedule_delay);
            millis("OTEL_BSP_EXPORT_TIMEOUT", &mut e.export_timeout);
            millis("OTEL_EXPORTER_OTLP_TIMEOUT", &mut e.otlp_timeout);
            let mut count = |name: &str, slot: &mut usize| {
                if let Some(v) = get(name) {
                    match v.parse::<usize>() {
                        Ok(n) if n > 0 => *slot = n,
                        _ => warnings
                            .push(format!("{name}={v}: not a positive number; using {slot}")),
                    }
                }
            };
            count("OTEL_BSP_MAX_QUEUE_SIZE", &mut e.max_queue);
            count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", &mut e.max_batch);
            let mut resource = vec![
                (
                    "service.name".to_owned(),
                    workload.unwrap_or("skiff").to_owned(),
                ),
                ("service.namespace".to_owned(), namespace.to_owned()),
            ];
            if let Some(pod) = get("SKIFF_POD_NAME") {
                resource.push(("k8s.pod.name".to_owned(), pod));
                resource.push(("k8s.namespace.name".to_owned(), namespace.to_owned()));
            }
            if let Some(attrs) = get("OTEL_RESOURCE_ATTRIBUTES") {
                resource.extend(resource_attributes(&attrs));
            }
            if let Some(name) = get("OTEL_SERVICE_NAME") {
                resource.push(("service.name".to_owned(), name));
            }
            e.resource = resource;
            e
        });
        TraceSettings {
            export,
            ratio,
            warnings,
        }
    }
}

/// The ratio for new traces from `OTEL_TRACES_SAMPLER` and its argument. Decisions are always
/// parent-based (an incoming sampled flag wins), so the plain and `parentbased_` names agree.
fn sampler_ratio(sampler: Option<&str>, arg: Option<&str>, warnings: &mut Vec<String>) -> f64 {
    let ratio = |warnings: &mut Vec<String>| match arg.map(str::parse::<f64>) {
        None => 1.0,
        Some(Ok(r)) if (0.0..=1.0).contains(&r) => r,
        Some(_) => {
            warnings.push(format!(
                "OTEL_TRACES_SAMPLER_ARG={}: not a ratio from 0 to 1; using 1.0",
                arg.unwrap_or_default()
            ));
            1.0
        }
    };
    match sampler {
        None | Some("traceidratio" | "parentbased_traceidratio") => ratio(warnings),
        Some("always_on" | "parentbased_always_on") => 1.0,
        Some("always_off" | "parentbased_always_off") => 0.0,
        Some(other) => {
            warnings.push(format!(
                "OTEL_TRACES_SAMPLER={other}: not a sampler this proxy has; using parentbased_traceidratio"
            ));
            ratio(warnings)
        }
    }
}

/// `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs separated by commas, values percent-encoded.
/// A pair without `=` or with an empty key is skipped.
fn resource_attributes(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_owned(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            #[allow(clippy::cast_possible_truncation)]
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The settings the data plane reads, resolved once at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub drain_timeout: Duration,
    pub detect_timeout: Duration,
    pub opaque_ports: Vec<u16>,
    pub max_header_bytes: usize,
    /// Idle upstream HTTP/1 connections are closed after this. 3 s stays below the
    /// keep-alive of common servers (Node.js and Apache 5 s), so the proxy closes first.
    pub h1_idle_timeout: Duration,
    /// Idle upstream HTTP/1 connections kept per endpoint.
    pub h1_max_idle: usize,
}

impl Settings {
    pub fn from_args(args: &RunArgs) -> Self {
        let mut opaque_ports = args.opaque_ports.clone();
        opaque_ports.sort_unstable();
        opaque_ports.dedup();
        Settings {
            drain_timeout: args.drain_timeout.get(),
            detect_timeout: args.detect_timeout.get(),
            opaque_ports,
            max_header_bytes: args.max_header_bytes.max(1024),
            h1_idle_timeout: Duration::from_secs(3),
            h1_max_idle: 1024,
        }
    }

    pub fn is_opaque_port(&self, port: u16) -> bool {
        self.opaque_ports.binary_search(&port).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> TraceSettings {
        TraceSettings::from_vars(
            |k| {
                vars.iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| (*v).to_owned())
            },
            Some("reviews-v1"),
            "shop",
        )
    }

    #[test]
    fn no_endpoint_means_no_export() {
        let s = settings(&[("OTEL_TRACES_SAMPLER_ARG", "0.5")]);
        assert_eq!(s.export, None);
        assert_eq!(s.ratio, 0.5);
    }

    #[test]
    fn samplers_and_their_argument() {
        let ratio = |vars: &[(&str, &str)]| settings(vars).ratio;
        assert_eq!(ratio(&[]), 1.0);
        assert_eq!(ratio(&[("OTEL_TRACES_SAMPLER", "always_off")]), 0.0);
        assert_eq!(
            ratio(&[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.01")
            ]),
            0.01
        );
        assert_eq!(
            ratio(&[
                ("OTEL_TRACES_SAMPLER", "always_on"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.01")
            ]),
            1.0
        );
        let bad = settings(&[("OTEL_TRACES_SAMPLER_ARG", "2")]);
        assert_eq!(bad.ratio, 1.0);
        assert_eq!(bad.warnings.len(), 1);
    }

    #[test]
    fn endpoint_batching_and_resource() {
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4317"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "16"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "x"),
            ("SKIFF_POD_NAME", "reviews-v1-abc"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,team=a%20b,broken",
            ),
            ("OTEL_SERVICE_NAME", "reviews"),
        ]);
        let e = s.export.unwrap();
        assert_eq!(e.endpoint, "http://b:4317");
        assert_eq!(e.schedule_delay, Duration::from_millis(50));
        assert_eq!(e.max_queue, 16);
        assert_eq!(e.max_batch, 512);
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        let last = |key: &str| {
            e.resource
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(last("service.name"), Some("reviews"));
        assert_eq!(last("service.namespace"), Some("shop"));
        assert_eq!(last("k8s.pod.name"), Some("reviews-v1-abc"));
        assert_eq!(last("team"), Some("a b"));
        assert_eq!(last("deployment.environment"), Some("prod"));
    }
}
