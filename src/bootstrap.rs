//! The proxy's own settings, from flags and their `SKIFF_*` environment twins: addresses,
//! config source, identity, drain and detection limits. The only module that reads the environment.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use skiff_api::Dur;

/// Ports where the client waits for the server to speak first (SMTP, MySQL, Postgres, Redis,
/// Elasticsearch transport, memcached, ...): protocol detection would only add a delay.
pub const DEFAULT_OPAQUE_PORTS: &str = "25,587,3306,4444,5432,6379,9300,11211";

/// `skiff run`: where the config comes from and how the proxy listens.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Static mode: the mesh file, reloaded on SIGHUP.
    #[arg(long, env = "SKIFF_CONFIG", conflicts_with = "xds")]
    pub config: Option<PathBuf>,
    /// xDS mode: the control plane's gRPC address, e.g. http://127.0.0.1:15010.
    #[arg(long, env = "SKIFF_XDS")]
    pub xds: Option<String>,
    /// This sidecar's workload; picks its inbound settings from the mesh.
    #[arg(long, env = "SKIFF_WORKLOAD")]
    pub workload: Option<String>,
    /// Namespace of `--workload`. Default: default.
    #[arg(long, env = "SKIFF_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// xDS mode: how long a request to a service the proxy does not hold yet waits for the
    /// control plane to send it (then 503 `unknown-service`). Default: 2s.
    #[arg(long, env = "SKIFF_XDS_FETCH_TIMEOUT", default_value = "2s")]
    pub xds_fetch_timeout: Dur,
    /// xDS mode: a service no request used for this long is unsubscribed and forgotten.
    /// Default: 5m.
    #[arg(long, env = "SKIFF_XDS_IDLE_TIMEOUT", default_value = "5m")]
    pub xds_idle_timeout: Dur,
    /// xDS mode: HTTP/2 PING interval on the discovery stream; a control plane that does not
    /// answer within as long again is treated as gone (a dead node sends no reset), and the
    /// proxy reconnects. Default: 10s.
    #[arg(long, env = "SKIFF_XDS_KEEPALIVE", default_value = "10s")]
    pub xds_keepalive: Dur,
    /// xDS mode: a file holding this workload's bootstrap token (surrounding whitespace
    /// trimmed; read again at every renewal). With it the proxy gets a SPIFFE certificate from
    /// the control plane's CA and speaks mutual TLS with meshed peers; without it, plaintext.
    #[arg(long, env = "SKIFF_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Admin listener: /ready, /live, /metrics, /config_dump, /logging. Default: 127.0.0.1:15000.
    #[arg(long, env = "SKIFF_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// Outbound listener (the app's redirected egress). Default: 127.0.0.1:15001.
    #[arg(long, env = "SKIFF_OUTBOUND_ADDR", default_value = "127.0.0.1:15001")]
    pub outbound_addr: SocketAddr,
    /// Inbound listener. Default: the workload's `inbound.listen`, else 0.0.0.0:15006.
    #[arg(long, env = "SKIFF_INBOUND_ADDR")]
    pub inbound_addr: Option<SocketAddr>,
    /// Longest wait for in-flight requests after SIGTERM. Default: 5s.
    #[arg(long, env = "SKIFF_DRAIN_TIMEOUT", default_value = "5s")]
    pub drain_timeout: Dur,
    /// Longest wait for a client's first bytes before a connection is treated as opaque TCP.
    /// Default: 10s.
    #[arg(long, env = "SKIFF_DETECT_TIMEOUT", default_value = "10s")]
    pub detect_timeout: Dur,
    /// Destination ports that skip protocol detection (server-speaks-first protocols).
    #[arg(long, env = "SKIFF_OPAQUE_PORTS", value_delimiter = ',', default_value = DEFAULT_OPAQUE_PORTS)]
    pub opaque_ports: Vec<u16>,
    /// Largest request head accepted, in bytes (431 beyond). Default: 65536.
    #[arg(long, env = "SKIFF_MAX_HEADER_BYTES", default_value_t = 65536)]
    pub max_header_bytes: usize,
    /// Log filter (tracing env-filter syntax), changeable at runtime on /logging. Default: info.
    #[arg(long, env = "SKIFF_LOG", default_value = "info")]
    pub log: String,
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
