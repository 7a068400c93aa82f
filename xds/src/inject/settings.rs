//! The injector's own settings (image, control plane, defaults a pod's annotations may
//! override) and the fixed names of what injection adds: containers, volume, mount path,
//! ports and the proxy's uid. The contract tests and the README rely on these names.

use super::syntax::{Quantity, Resource};

/// The init container that installs the traffic redirect (`skiff init`).
pub const INIT_CONTAINER: &str = "skiff-init";
/// The native sidecar (`skiff run`): an init container with `restartPolicy: Always`.
pub const PROXY_CONTAINER: &str = "skiff-proxy";
/// The projected service-account token volume.
pub const TOKEN_VOLUME: &str = "skiff-token";
/// Where the token volume is mounted in the sidecar.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/skiff/tokens";
/// The token's file name inside the mount.
pub const TOKEN_FILE: &str = "skiff-token";
/// The audience the token is issued for; the control plane's CA checks it.
pub const TOKEN_AUDIENCE: &str = "skiff";
/// How long a token lives; the kubelet refreshes it at 80 %.
pub const TOKEN_EXPIRATION_SECONDS: u64 = 3600;
/// The uid the sidecar runs as; `skiff init` exempts its connections from the redirect.
pub const PROXY_UID: u64 = 1337;
/// The sidecar's admin port: `/ready` (startup and readiness probes), `/live` (liveness).
pub const ADMIN_PORT: u64 = 15000;
/// Where `skiff init` redirects outbound and inbound TCP (its defaults), and so where the
/// sidecar listens.
pub const OUTBOUND_PORT: u16 = 15001;
pub const INBOUND_PORT: u16 = 15006;
/// The control plane's discovery address inside a cluster installed from `k8s/`.
pub const DEFAULT_CONTROL_PLANE: &str = "http://skiff-xds.skiff-system.svc:15010";
/// CPU and memory the sidecar requests unless told otherwise.
pub const DEFAULT_CPU_REQUEST: &str = "10m";
pub const DEFAULT_MEMORY_REQUEST: &str = "32Mi";
/// The sidecar's log filter unless told otherwise.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// The image both injected containers run unless told otherwise: `skiff:<this version>`,
/// which holds the `skiff` binary on `PATH`.
pub fn default_image() -> String {
    format!("skiff:{}", env!("CARGO_PKG_VERSION"))
}

/// What the injector puts into every pod; a pod's `skiff.dev/*` annotations override the
/// image, the log level and the resources.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The image of `skiff-init` and `skiff-proxy`. Default: [`default_image`].
    pub image: String,
    /// The control plane's discovery URL (`SKIFF_XDS`). Default: [`DEFAULT_CONTROL_PLANE`].
    pub control_plane: String,
    /// The sidecar's log filter (`SKIFF_LOG`). Default: `info`.
    pub log_level: String,
    /// The sidecar's (and the init container's) resources.
    pub resources: Resources,
    /// Where sidecars export spans (`OTEL_EXPORTER_OTLP_ENDPOINT`). Default: none, tracing
    /// off.
    pub otlp_endpoint: Option<String>,
}

/// Requests and limits of the injected containers.
#[derive(Clone, Debug, PartialEq)]
pub struct Resources {
    /// Default: 10m.
    pub cpu_request: Quantity,
    /// Default: 32Mi.
    pub memory_request: Quantity,
    /// Default: none.
    pub cpu_limit: Option<Quantity>,
    /// Default: none.
    pub memory_limit: Option<Quantity>,
}

impl Default for Resources {
    fn default() -> Self {
        let parse = |text, resource| match Quantity::parse(text, resource) {
            Ok(q) => q,
            Err(e) => unreachable!("the default {text} is a quantity: {e}"),
        };
        Resources {
            cpu_request: parse(DEFAULT_CPU_REQUEST, Resource::Cpu),
            memory_request: parse(DEFAULT_MEMORY_REQUEST, Resource::Memory),
            cpu_limit: None,
            memory_limit: None,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            image: default_image(),
            control_plane: DEFAULT_CONTROL_PLANE.to_owned(),
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
            resources: Resources::default(),
            otlp_endpoint: None,
        }
    }
}
