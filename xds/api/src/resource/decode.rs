//! Discovery messages → model: the shape of a received resource (required fields, enum
//! values, durations, addresses), the network counterpart of parsing YAML. The first bad
//! field is named by its path in the resource, spelled as in the mesh file; the rules beyond
//! shapes are `validate`'s, run by the caller on the result.

use std::{net::SocketAddr, time::Duration};

use prost_types::Duration as PbDuration;

use super::ResolvedEndpoint;
use crate::{
    Dur, FieldError, model, pb,
    validate::{FieldPath, spiffe_id},
};

type Shape<T> = Result<T, FieldError>;

/// The mesh file's limit on durations (`Dur` parses at most a week).
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

pub(super) fn service(m: pb::Service) -> Shape<model::Service> {
    let at = FieldPath::default();
    let addresses = m
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| socket_addr(a, &at.key("addresses").index(i)))
        .collect::<Shape<_>>()?;
    let outlier_detection = match m.outlier_detection {
        None => None,
        Some(od) => {
            let at = at.key("outlierDetection");
            Some(model::OutlierDetection {
                consecutive_errors: od.consecutive_errors,
                interval: required_duration(od.interval, &at.key("interval"))?,
                base_ejection_time: required_duration(
                    od.base_ejection_time,
                    &at.key("baseEjectionTime"),
                )?,
                max_ejection_percent: od.max_ejection_percent,
            })
        }
    };
    let routes = m
        .routes
        .into_iter()
        .enumerate()
        .map(|(k, r)| route(r, &at.key("routes").index(k)))
        .collect::<Shape<_>>()?;
    Ok(model::Service {
        name: m.name,
        namespace: m.namespace,
        hosts: Some(m.hosts),
        addresses,
        protocol: protocol(m.protocol, &at.key("protocol"))?,
        load_balancer: load_balancer(m.load_balancer, &at.key("loadBalancer"))?,
        connect_timeout: required_duration(m.connect_timeout, &at.key("connectTimeout"))?,
        // A Service resource never carries endpoints: they are the Endpoints resource's.
        endpoints: Vec::new(),
        circuit_breaker: m.circuit_breaker.map(|cb| model::CircuitBreaker {
            max_connections: cb.max_connections,
            max_pending_requests: cb.max_pending_requests,
            max_requests: cb.max_requests,
            max_retries: cb.max_retries,
        }),
        outlier_detection,
        retry_budget: m.retry_budget.map(|b| model::RetryBudget {
            ratio: b.ratio,
            min_retries_per_second: b.min_retries_per_second,
        }),
        routes,
    })
}

fn route(r: pb::Route, at: &FieldPath) -> Shape<model::Route> {
    let matches = r
        .matches
        .into_iter()
        .enumerate()
        .map(|(m, rule)| route_match(rule, &at.key("matches").index(m)))
        .collect::<Shape<_>>()?;
    let backend_refs = r
        .backend_refs
        .into_iter()
        .map(|b| model::BackendRef {
            service: b.service,
            namespace: b.namespace,
            weight: b.weight,
        })
        .collect();
    let timeouts = match r.timeouts {
        None => None,
        Some(t) => {
            let at = at.key("timeouts");
            Some(model::Timeouts {
                request: optional_duration(t.request, &at.key("request"))?,
                backend_request: optional_duration(t.backend_request, &at.key("backendRequest"))?,
            })
        }
    };
    let retry = match r.retry {
        None => None,
        Some(rt) => Some(retry(rt, &at.key("retry"))?),
    };
    let fault = match r.fault {
        None => None,
        Some(f) => Some(fault(f, &at.key("fault"))?),
    };
    Ok(model::Route {
        name: r.name,
        matches,
        backend_refs,
        timeouts,
        retry,
        fault,
    })
}

fn route_match(m: pb::RouteMatch, at: &FieldPath) -> Shape<model::RouteMatch> {
    let path = match m.path {
        None => None,
        Some(p) => Some(model::PathMatch {
            kind: path_match_type(p.r#type, &at.key("path").key("type"))?,
            value: p.value,
        }),
    };
    Ok(model::RouteMatch {
        path,
        method: m.method,
        headers: value_matches(m.headers, &at.key("headers"))?,
        query_params: value_matches(m.query_params, &at.key("queryParams"))?,
    })
}

fn value_matches(list: Vec<pb::ValueMatch>, at: &FieldPath) -> Shape<Vec<model::ValueMatch>> {
    list.into_iter()
        .enumerate()
        .map(|(i, v)| {
            Ok(model::ValueMatch {
                kind: value_match_type(v.r#type, &at.index(i).key("type"))?,
                name: v.name,
                value: v.value,
            })
        })
        .collect()
}

fn retry(rt: pb::Retry, at: &FieldPath) -> Shape<model::Retry> {
    let retry_on = rt
        .retry_on
        .iter()
        .enumerate()
        .map(|(i, &on)| retry_on(on, &at.key("retryOn").index(i)))
        .collect::<Shape<_>>()?;
    let retriable_status_codes = rt
        .retriable_status_codes
        .iter()
        .enumerate()
        .map(|(i, &code)| status_code(code, 100, 599, &at.key("retriableStatusCodes").index(i)))
        .collect::<Shape<_>>()?;
    let backoff = match rt.backoff {
        None => None,
        Some(b) => {
            let at = at.key("backoff");
            Some(model::Backoff {
                base: required_duration(b.base, &at.key("base"))?,
                max: required_duration(b.max, &at.key("max"))?,
            })
        }
    };
    Ok(model::Retry {
        attempts: rt.attempts,
        retry_on,
        retriable_status_codes,
        backoff,
        max_body_bytes: rt.max_body_bytes,
        non_idempotent: rt.non_idempotent,
    })
}

fn fault(f: pb::Fault, at: &FieldPath) -> Shape<model::Fault> {
    let abort = match f.abort {
        None => None,
        Some(a) => {
            let status = a
                .status
                .map(|s| status_code(s, 200, 599, &at.key("abort").key("status")))
                .transpose()?;
            Some(model::FaultAbort {
                percent: a.percent,
                status,
                // Any u32 fits the model; its range is `validate`'s rule, as for the file.
                grpc_status: a.grpc_status,
            })
        }
    };
    let delay = match f.delay {
        None => None,
        Some(d) => Some(model::FaultDelay {
            percent: d.percent,
            duration: required_duration(d.duration, &at.key("delay").key("duration"))?,
        }),
    };
    Ok(model::Fault { abort, delay })
}

pub(super) fn endpoints(m: pb::Endpoints) -> Shape<(String, String, Vec<ResolvedEndpoint>)> {
    let endpoints = m
        .endpoints
        .into_iter()
        .enumerate()
        .map(|(j, ep)| endpoint(ep, &FieldPath::root("endpoints").index(j)))
        .collect::<Shape<_>>()?;
    Ok((m.service, m.namespace, endpoints))
}

fn endpoint(ep: pb::Endpoint, at: &FieldPath) -> Shape<ResolvedEndpoint> {
    let address = socket_addr(&ep.address, &at.key("address"))?;
    let (endpoint, identity) = if ep.workload.is_empty() {
        let identity = (!ep.identity.is_empty()).then_some(ep.identity);
        let endpoint = model::Endpoint {
            workload: None,
            namespace: ep.namespace,
            address: Some(address),
            identity: identity.clone(),
            labels: ep.labels,
        };
        (endpoint, identity)
    } else {
        let here = at.key("identity");
        if ep.identity.is_empty() {
            return Err(here.error("must be set for a workload endpoint (its SPIFFE ID)"));
        }
        spiffe_id(&ep.identity).map_err(|message| here.error(message))?;
        let endpoint = model::Endpoint {
            workload: Some(ep.workload),
            namespace: ep.namespace,
            address: None,
            identity: None,
            labels: ep.labels,
        };
        (endpoint, Some(ep.identity))
    };
    Ok(ResolvedEndpoint {
        endpoint,
        address,
        identity,
    })
}

pub(super) fn workload(m: pb::Workload) -> Shape<model::Workload> {
    let at = FieldPath::default();
    let inbound = match m.inbound {
        None => None,
        Some(ib) => {
            let at = at.key("inbound");
            Some(model::Inbound {
                listen: socket_addr(&ib.listen, &at.key("listen"))?,
                app: socket_addr(&ib.app, &at.key("app"))?,
                mtls: mtls_mode(ib.mtls, &at.key("mtls"))?,
            })
        }
    };
    Ok(model::Workload {
        name: m.name,
        namespace: m.namespace,
        service_account: m.service_account,
        labels: m.labels,
        inbound,
        rate_limit: m.rate_limit.map(|rl| model::RateLimit {
            requests_per_second: rl.requests_per_second,
            burst: rl.burst,
        }),
    })
}

/// A Workload's `spiffeId` is derived from its namespace and service account; one that is
/// not was not made by a Skiff control plane. Checked after the names themselves.
pub(super) fn check_spiffe_id(w: &model::Workload, spiffe: &str) -> Result<(), FieldError> {
    let suffix = format!("/ns/{}/sa/{}", w.namespace, w.service_account);
    if spiffe_id(spiffe).is_ok_and(|_| spiffe.ends_with(&suffix)) {
        Ok(())
    } else {
        Err(FieldPath::root("spiffeId").error(format!(
            "must be spiffe://<trustDomain>{suffix}, got {spiffe:?}"
        )))
    }
}

pub(super) fn authorization(m: pb::Authorization) -> Shape<model::AuthorizationPolicy> {
    let to_at = FieldPath::root("to");
    let to =
        m.to.into_iter()
            .enumerate()
            .map(|(r, rule)| {
                let ports_at = to_at.index(r).key("ports");
                let ports = rule
                    .ports
                    .iter()
                    .enumerate()
                    .map(|(p, &port)| {
                        u16::try_from(port).map_err(|_| {
                            ports_at
                                .index(p)
                                .error(format!("must be a port from 1 to 65535, got {port}"))
                        })
                    })
                    .collect::<Shape<Vec<u16>>>()?;
                Ok(model::AuthzRule {
                    methods: rule.methods,
                    paths: rule.paths,
                    ports,
                })
            })
            .collect::<Shape<Vec<_>>>()?;
    Ok(model::AuthorizationPolicy {
        action: authz_action(m.action, &FieldPath::root("action"))?,
        mode: match known(m.mode, &FieldPath::root("mode"), "enforce or audit")? {
            pb::AuthzMode::Enforce => model::AuthzMode::Enforce,
            pb::AuthzMode::Audit => model::AuthzMode::Audit,
        },
        name: m.name,
        namespace: m.namespace,
        target: m.target,
        from: m.from,
        to,
    })
}

pub(super) fn mesh_settings(m: pb::MeshSettings) -> Shape<model::MeshSettings> {
    Ok(model::MeshSettings {
        trust_domain: m.trust_domain,
        tracing: m.tracing.map(|t| model::TracingSettings {
            sampling: t.sampling,
        }),
        trust_anchors: m.trust_anchors,
    })
}

// ---- scalars ----

/// An HTTP status as the model holds it (`u16`). A value that does not fit is refused here
/// with the range of the field (`min` to `max`); one that fits is checked by `validate`.
fn status_code(value: u32, min: u16, max: u16, at: &FieldPath) -> Shape<u16> {
    u16::try_from(value).map_err(|_| at.error(format!("must be from {min} to {max}, got {value}")))
}

fn socket_addr(s: &str, at: &FieldPath) -> Shape<SocketAddr> {
    s.parse()
        .map_err(|_| at.error(format!("must be an ip:port address, got {s:?}")))
}

fn required_duration(d: Option<PbDuration>, at: &FieldPath) -> Shape<Dur> {
    match d {
        Some(d) => duration(d, at),
        None => Err(at.error("is required")),
    }
}

fn optional_duration(d: Option<PbDuration>, at: &FieldPath) -> Shape<Option<Dur>> {
    d.map(|d| duration(d, at)).transpose()
}

/// A `google.protobuf.Duration` the mesh file could have written: not negative, normalized
/// (nanos below one second), at most a week.
fn duration(d: PbDuration, at: &FieldPath) -> Shape<Dur> {
    let shown = || format!("{}s {}ns", d.seconds, d.nanos);
    let (Ok(secs), Ok(nanos)) = (u64::try_from(d.seconds), u32::try_from(d.nanos)) else {
        return Err(at.error(format!("must not be negative, got {}", shown())));
    };
    if nanos >= 1_000_000_000 {
        return Err(at.error(format!("nanos must be below 1000000000, got {}", shown())));
    }
    let value = Duration::new(secs, nanos);
    if value > MAX_DURATION {
        return Err(at.error(format!("must be at most 1 week, got {}", shown())));
    }
    Ok(Dur(value))
}

// ---- enums ----

/// An enum field's value as a known variant; `expected` lists the mesh-file spellings.
fn known<E: TryFrom<i32>>(value: i32, at: &FieldPath, expected: &str) -> Shape<E> {
    E::try_from(value).map_err(|_| at.error(format!("unknown value {value} (expected {expected})")))
}

fn protocol(v: i32, at: &FieldPath) -> Shape<model::Protocol> {
    use model::Protocol as M;
    Ok(match known(v, at, "auto, http1, http2, grpc or tcp")? {
        pb::Protocol::Auto => M::Auto,
        pb::Protocol::Http1 => M::Http1,
        pb::Protocol::Http2 => M::Http2,
        pb::Protocol::Grpc => M::Grpc,
        pb::Protocol::Tcp => M::Tcp,
    })
}

fn load_balancer(v: i32, at: &FieldPath) -> Shape<model::LoadBalancer> {
    Ok(match known(v, at, "p2c-ewma or round-robin")? {
        pb::LoadBalancer::P2cEwma => model::LoadBalancer::P2cEwma,
        pb::LoadBalancer::RoundRobin => model::LoadBalancer::RoundRobin,
    })
}

fn path_match_type(v: i32, at: &FieldPath) -> Shape<model::PathMatchType> {
    use model::PathMatchType as M;
    Ok(
        match known(v, at, "PathPrefix, Exact or RegularExpression")? {
            pb::PathMatchType::PathPrefix => M::PathPrefix,
            pb::PathMatchType::Exact => M::Exact,
            pb::PathMatchType::RegularExpression => M::RegularExpression,
        },
    )
}

fn value_match_type(v: i32, at: &FieldPath) -> Shape<model::ValueMatchType> {
    use model::ValueMatchType as M;
    Ok(match known(v, at, "Exact or RegularExpression")? {
        pb::ValueMatchType::Exact => M::Exact,
        pb::ValueMatchType::RegularExpression => M::RegularExpression,
    })
}

fn retry_on(v: i32, at: &FieldPath) -> Shape<model::RetryOn> {
    use model::RetryOn as M;
    const EXPECTED: &str = "5xx, gateway-error, reset, connect-failure, refused-stream, \
         retriable-4xx, retriable-status-codes, cancelled, deadline-exceeded, resource-exhausted \
         or unavailable";
    Ok(match known(v, at, EXPECTED)? {
        pb::RetryOn::Unspecified => {
            return Err(at.error(format!(
                "must be set (0 is RETRY_ON_UNSPECIFIED; expected {EXPECTED})"
            )));
        }
        pb::RetryOn::Status5xx => M::Status5xx,
        pb::RetryOn::GatewayError => M::GatewayError,
        pb::RetryOn::Reset => M::Reset,
        pb::RetryOn::ConnectFailure => M::ConnectFailure,
        pb::RetryOn::RefusedStream => M::RefusedStream,
        pb::RetryOn::Retriable4xx => M::Retriable4xx,
        pb::RetryOn::RetriableStatusCodes => M::RetriableStatusCodes,
        pb::RetryOn::Cancelled => M::Cancelled,
        pb::RetryOn::DeadlineExceeded => M::DeadlineExceeded,
        pb::RetryOn::ResourceExhausted => M::ResourceExhausted,
        pb::RetryOn::Unavailable => M::Unavailable,
    })
}

fn mtls_mode(v: i32, at: &FieldPath) -> Shape<model::MtlsMode> {
    use model::MtlsMode as M;
    Ok(match known(v, at, "strict, permissive or disabled")? {
        pb::MtlsMode::Permissive => M::Permissive,
        pb::MtlsMode::Strict => M::Strict,
        pb::MtlsMode::Disabled => M::Disabled,
    })
}

fn authz_action(v: i32, at: &FieldPath) -> Shape<model::AuthzAction> {
    Ok(match known(v, at, "allow or deny")? {
        pb::AuthzAction::Allow => model::AuthzAction::Allow,
        pb::AuthzAction::Deny => model::AuthzAction::Deny,
    })
}
