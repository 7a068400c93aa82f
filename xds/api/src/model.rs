//! The mesh file as users write it: serde types with their defaults, one per YAML object.
//! Shapes only; `validate` checks what serde cannot (references, regexes, ranges).

use std::{collections::BTreeMap, net::SocketAddr};

use serde::{Deserialize, Serialize};

use crate::duration::Dur;

/// The whole mesh file: settings, services, workloads and authorization policies.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshFile {
    #[serde(default)]
    pub mesh: MeshSettings,
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub workloads: Vec<Workload>,
    #[serde(default)]
    pub authorization: Vec<AuthorizationPolicy>,
}

/// Mesh-wide settings.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshSettings {
    /// SPIFFE trust domain of every identity in the mesh. Default: `cluster.local`.
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Trace sampling. Default: unset (the `OTEL_TRACES_SAMPLER_ARG` variable, else 1.0).
    #[serde(default)]
    pub tracing: Option<TracingSettings>,
    /// The mesh CA's trust anchors (DER), filled in by a control plane with a CA; never
    /// written in a mesh file.
    #[serde(skip)]
    pub trust_anchors: Vec<Vec<u8>>,
}

impl Default for MeshSettings {
    fn default() -> Self {
        MeshSettings {
            trust_domain: default_trust_domain(),
            tracing: None,
            trust_anchors: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TracingSettings {
    /// Ratio of new traces sampled, 0.0 to 1.0 (parent-based: an incoming decision wins).
    #[serde(default)]
    pub sampling: Option<f64>,
}

/// A service: the names and addresses that mean it, its endpoints and its routes.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Service {
    /// DNS-label name, unique within its namespace.
    pub name: String,
    /// Default: `default`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Authorities that mean this service. A host without a port matches any port.
    /// `"*"` catches every authority no other service claims.
    /// Default: `[name, name.namespace, name.namespace.svc, name.namespace.svc.<trustDomain>]`.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Original destinations (ClusterIP:port) that mean this service. Default: none.
    #[serde(default)]
    pub addresses: Vec<SocketAddr>,
    /// Default: `auto` (speak upstream what the client spoke).
    #[serde(default)]
    pub protocol: Protocol,
    /// Default: `p2c-ewma`.
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    /// Time allowed to connect to one endpoint. Default: `1s`.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub retry_budget: Option<RetryBudget>,
    /// First match wins; a request no route matches goes to this service's endpoints.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// How the proxy speaks to a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Detect what the client speaks and speak the same upstream.
    #[default]
    Auto,
    Http1,
    Http2,
    Grpc,
    /// Opaque TCP: no detection, no HTTP features.
    Tcp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancer {
    /// Power of two choices over peak-EWMA latency weighted by requests in flight.
    #[default]
    P2cEwma,
    RoundRobin,
}

/// One endpoint: a meshed workload (its inbound listener), a plain address, or both: one
/// replica of a workload at its own address (a Kubernetes pod).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Endpoint {
    /// A workload of this mesh file (same namespace as the service unless `namespace` is set).
    /// Alone it means the workload's `inbound.listen`; with `address`, a replica of it there
    /// (authorization on the workload then applies to it; it needs no `inbound`).
    #[serde(default)]
    pub workload: Option<String>,
    /// Namespace of `workload`. Default: the service's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// An `ip:port`.
    #[serde(default)]
    pub address: Option<SocketAddr>,
    /// Expected SPIFFE identity at `address` (present: mesh mTLS to it). Default: none for a
    /// plain address (plaintext), the workload's SPIFFE ID for a workload's replica.
    #[serde(default)]
    pub identity: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Default: 1024.
    #[serde(default = "default_1024")]
    pub max_connections: u32,
    /// Default: 1024.
    #[serde(default = "default_1024")]
    pub max_pending_requests: u32,
    /// Default: 1024.
    #[serde(default = "default_1024")]
    pub max_requests: u32,
    /// Default: 3.
    #[serde(default = "default_3")]
    pub max_retries: u32,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetection {
    /// 5xx, resets and connect failures in a row that eject an endpoint. Default: 5.
    #[serde(default = "default_5")]
    pub consecutive_errors: u32,
    /// How often ejections are re-examined. Default: `10s`.
    #[serde(default = "default_10s")]
    pub interval: Dur,
    /// First ejection time; multiplied by the number of ejections. Default: `30s`.
    #[serde(default = "default_30s")]
    pub base_ejection_time: Dur,
    /// Most endpoints ejected at once, in percent. Default: 50.
    #[serde(default = "default_50")]
    pub max_ejection_percent: u32,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryBudget {
    /// Retries allowed as a share of requests. Default: 0.2.
    #[serde(default = "default_ratio")]
    pub ratio: f64,
    /// Retries always allowed per second. Default: 10.
    #[serde(default = "default_10")]
    pub min_retries_per_second: u32,
}

/// A route: matches, weighted backends and per-route policy.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Route {
    /// Shown in metrics and `/config_dump`. Default: `route-<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Any match selects the route; omitted = match everything.
    #[serde(default)]
    pub matches: Vec<RouteMatch>,
    /// Omitted = this service, weight 1.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
    #[serde(default)]
    pub retry: Option<Retry>,
    #[serde(default)]
    pub fault: Option<Fault>,
}

/// Within one match every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteMatch {
    #[serde(default)]
    pub path: Option<PathMatch>,
    /// An HTTP method, e.g. `GET`.
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: Vec<ValueMatch>,
    #[serde(default)]
    pub query_params: Vec<ValueMatch>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PathMatch {
    /// Default: `PathPrefix` (as in the Gateway API).
    #[serde(rename = "type", default)]
    pub kind: PathMatchType,
    pub value: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum PathMatchType {
    Exact,
    /// Whole path segments: `/api` matches `/api` and `/api/x`, not `/apix`.
    #[default]
    PathPrefix,
    /// Must match the whole path.
    RegularExpression,
}

/// A header or query parameter condition.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ValueMatch {
    pub name: String,
    /// Default: `Exact`.
    #[serde(rename = "type", default)]
    pub kind: ValueMatchType,
    pub value: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum ValueMatchType {
    #[default]
    Exact,
    /// Must match the whole value.
    RegularExpression,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendRef {
    /// A service name of this mesh file.
    pub service: String,
    /// Default: the namespace of the service that holds the route.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Relative weight; 0 sends nothing. Default: 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timeouts {
    /// Whole request, until the response headers arrive (504 `timeout`). Default: none.
    #[serde(default)]
    pub request: Option<Dur>,
    /// Per attempt. Default: none.
    #[serde(default)]
    pub backend_request: Option<Dur>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retry {
    /// Every attempt, the first included (3 = up to 2 retries). Default: 2.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Default: `[5xx, reset, connect-failure]`.
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<RetryOn>,
    /// The response statuses retried under `retriable-status-codes` (e.g. `[409, 429]`),
    /// 100 to 599; set exactly when `retryOn` has that token. Default: none.
    #[serde(default)]
    pub retriable_status_codes: Vec<u16>,
    #[serde(default)]
    pub backoff: Option<Backoff>,
    /// Bodies larger than this stream through unretried. Default: 65536.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Retry non-idempotent requests on every listed condition. Default: false.
    #[serde(default)]
    pub non_idempotent: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum RetryOn {
    #[serde(rename = "5xx")]
    Status5xx,
    #[serde(rename = "gateway-error")]
    GatewayError,
    #[serde(rename = "reset")]
    Reset,
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    #[serde(rename = "refused-stream")]
    RefusedStream,
    #[serde(rename = "retriable-4xx")]
    Retriable4xx,
    /// The statuses listed in `retriableStatusCodes`.
    #[serde(rename = "retriable-status-codes")]
    RetriableStatusCodes,
    #[serde(rename = "cancelled")]
    Cancelled,
    #[serde(rename = "deadline-exceeded")]
    DeadlineExceeded,
    #[serde(rename = "resource-exhausted")]
    ResourceExhausted,
    #[serde(rename = "unavailable")]
    Unavailable,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Backoff {
    /// Default: `25ms`.
    #[serde(default = "default_backoff_base")]
    pub base: Dur,
    /// Default: `250ms`.
    #[serde(default = "default_backoff_max")]
    pub max: Dur,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fault {
    #[serde(default)]
    pub abort: Option<FaultAbort>,
    #[serde(default)]
    pub delay: Option<FaultDelay>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultAbort {
    /// 0 to 100.
    pub percent: f64,
    /// The HTTP status answered, 200 to 599 (gRPC callers get the grpc-status it maps to).
    /// Exactly one of `status` and `grpcStatus` is set.
    #[serde(default)]
    pub status: Option<u16>,
    /// The gRPC status answered, 0 to 16 (other callers get the HTTP status it maps to).
    /// Exactly one of `status` and `grpcStatus` is set.
    #[serde(default)]
    pub grpc_status: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultDelay {
    /// 0 to 100.
    pub percent: f64,
    pub duration: Dur,
}

/// A workload (a pod, locally: a process with its sidecar).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workload {
    pub name: String,
    /// Default: `default`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Default: `default`.
    #[serde(default = "default_service_account")]
    pub service_account: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub inbound: Option<Inbound>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// Where a workload's sidecar listens and where its app is (local mode, no redirection).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inbound {
    pub listen: SocketAddr,
    pub app: SocketAddr,
    /// Default: `permissive`.
    #[serde(default)]
    pub mtls: MtlsMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    Strict,
    #[default]
    Permissive,
    Disabled,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimit {
    pub requests_per_second: u32,
    /// Default: `requestsPerSecond`.
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicy {
    pub name: String,
    /// Default: `default`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// A service name; the policy applies on the inbound side of its endpoint workloads.
    pub target: String,
    /// Default: `allow`.
    #[serde(default)]
    pub action: AuthzAction,
    /// Peers: SPIFFE IDs, `spiffe://<td>/ns/<ns>/*` (any identity of a namespace),
    /// `spiffe://<td>/*` (any of the trust domain) or `unauthenticated`; omitted = any peer.
    #[serde(default)]
    pub from: Vec<String>,
    /// Omitted = any request.
    #[serde(default)]
    pub to: Vec<AuthzRule>,
    /// Default: `enforce`. `audit`: decided, logged and counted, never enforced.
    #[serde(default)]
    pub mode: AuthzMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthzMode {
    #[default]
    Enforce,
    Audit,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthzAction {
    #[default]
    Allow,
    Deny,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzRule {
    #[serde(default)]
    pub methods: Vec<String>,
    /// `/x/*` matches `/x/` and below; without `*` a path matches exactly.
    #[serde(default)]
    pub paths: Vec<String>,
    /// The app ports the connection was for; omitted = any.
    #[serde(default)]
    pub ports: Vec<u16>,
}

fn default_trust_domain() -> String {
    "cluster.local".to_owned()
}
fn default_namespace() -> String {
    "default".to_owned()
}
fn default_service_account() -> String {
    "default".to_owned()
}
fn default_connect_timeout() -> Dur {
    Dur::from_secs(1)
}
fn default_1024() -> u32 {
    1024
}
fn default_3() -> u32 {
    3
}
fn default_5() -> u32 {
    5
}
fn default_10() -> u32 {
    10
}
fn default_50() -> u32 {
    50
}
fn default_10s() -> Dur {
    Dur::from_secs(10)
}
fn default_30s() -> Dur {
    Dur::from_secs(30)
}
fn default_ratio() -> f64 {
    0.2
}
fn default_weight() -> u32 {
    1
}
fn default_attempts() -> u32 {
    2
}
fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::Status5xx, RetryOn::Reset, RetryOn::ConnectFailure]
}
fn default_max_body() -> u64 {
    65536
}
fn default_backoff_base() -> Dur {
    Dur::from_millis(25)
}
fn default_backoff_max() -> Dur {
    Dur::from_millis(250)
}

impl Service {
    /// The hosts this service answers to, with the implicit Kubernetes-style names when
    /// `hosts` is omitted.
    pub fn effective_hosts(&self, trust_domain: &str) -> Vec<String> {
        match &self.hosts {
            Some(h) => h.clone(),
            None => {
                let (n, ns) = (&self.name, &self.namespace);
                vec![
                    n.clone(),
                    format!("{n}.{ns}"),
                    format!("{n}.{ns}.svc"),
                    format!("{n}.{ns}.svc.{trust_domain}"),
                ]
            }
        }
    }
}

impl RetryOn {
    /// Every condition, in the order of the mesh-file documentation.
    pub const ALL: [RetryOn; 11] = [
        RetryOn::Status5xx,
        RetryOn::GatewayError,
        RetryOn::Reset,
        RetryOn::ConnectFailure,
        RetryOn::RefusedStream,
        RetryOn::Retriable4xx,
        RetryOn::RetriableStatusCodes,
        RetryOn::Cancelled,
        RetryOn::DeadlineExceeded,
        RetryOn::ResourceExhausted,
        RetryOn::Unavailable,
    ];

    /// The token as the mesh file spells it: `5xx`, `retriable-status-codes`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            RetryOn::Status5xx => "5xx",
            RetryOn::GatewayError => "gateway-error",
            RetryOn::Reset => "reset",
            RetryOn::ConnectFailure => "connect-failure",
            RetryOn::RefusedStream => "refused-stream",
            RetryOn::Retriable4xx => "retriable-4xx",
            RetryOn::RetriableStatusCodes => "retriable-status-codes",
            RetryOn::Cancelled => "cancelled",
            RetryOn::DeadlineExceeded => "deadline-exceeded",
            RetryOn::ResourceExhausted => "resource-exhausted",
            RetryOn::Unavailable => "unavailable",
        }
    }
}

impl Workload {
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccount>`.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}
