//! Model → discovery messages, one function per resource kind. The model is taken as valid;
//! what the file leaves to context is resolved here: default hosts, and each workload
//! endpoint's address and identity (so a proxy needs no other workload to reach it).

use std::collections::HashMap;

use prost_types::Duration as PbDuration;

use crate::{Dur, model, pb};

/// Workloads by (namespace, name), for resolving endpoints.
pub(super) type WorkloadIndex<'a> = HashMap<(&'a str, &'a str), &'a model::Workload>;

pub(super) fn workload_index(workloads: &[model::Workload]) -> WorkloadIndex<'_> {
    let mut index = WorkloadIndex::new();
    for w in workloads {
        // The first declaration wins, as in validation.
        index
            .entry((w.namespace.as_str(), w.name.as_str()))
            .or_insert(w);
    }
    index
}

pub(super) fn service(svc: &model::Service, trust_domain: &str) -> pb::Service {
    pb::Service {
        name: svc.name.clone(),
        namespace: svc.namespace.clone(),
        hosts: svc.effective_hosts(trust_domain),
        addresses: svc.addresses.iter().map(ToString::to_string).collect(),
        protocol: protocol(svc.protocol).into(),
        load_balancer: load_balancer(svc.load_balancer).into(),
        connect_timeout: Some(duration(svc.connect_timeout)),
        circuit_breaker: svc.circuit_breaker.as_ref().map(|cb| pb::CircuitBreaker {
            max_connections: cb.max_connections,
            max_pending_requests: cb.max_pending_requests,
            max_requests: cb.max_requests,
            max_retries: cb.max_retries,
        }),
        outlier_detection: svc
            .outlier_detection
            .as_ref()
            .map(|od| pb::OutlierDetection {
                consecutive_errors: od.consecutive_errors,
                interval: Some(duration(od.interval)),
                base_ejection_time: Some(duration(od.base_ejection_time)),
                max_ejection_percent: od.max_ejection_percent,
            }),
        retry_budget: svc.retry_budget.as_ref().map(|b| pb::RetryBudget {
            ratio: b.ratio,
            min_retries_per_second: b.min_retries_per_second,
        }),
        routes: svc.routes.iter().map(route).collect(),
    }
}

fn route(r: &model::Route) -> pb::Route {
    pb::Route {
        name: r.name.clone(),
        matches: r.matches.iter().map(route_match).collect(),
        backend_refs: r
            .backend_refs
            .iter()
            .map(|b| pb::BackendRef {
                service: b.service.clone(),
                namespace: b.namespace.clone(),
                weight: b.weight,
            })
            .collect(),
        timeouts: r.timeouts.as_ref().map(|t| pb::Timeouts {
            request: t.request.map(duration),
            backend_request: t.backend_request.map(duration),
        }),
        retry: r.retry.as_ref().map(|rt| pb::Retry {
            attempts: rt.attempts,
            retry_on: rt.retry_on.iter().map(|&on| retry_on(on).into()).collect(),
            retriable_status_codes: rt
                .retriable_status_codes
                .iter()
                .copied()
                .map(u32::from)
                .collect(),
            backoff: rt.backoff.as_ref().map(|b| pb::Backoff {
                base: Some(duration(b.base)),
                max: Some(duration(b.max)),
            }),
            max_body_bytes: rt.max_body_bytes,
            non_idempotent: rt.non_idempotent,
        }),
        fault: r.fault.as_ref().map(|f| pb::Fault {
            abort: f.abort.as_ref().map(|a| pb::FaultAbort {
                percent: a.percent,
                status: a.status.map(u32::from),
                grpc_status: a.grpc_status,
            }),
            delay: f.delay.as_ref().map(|d| pb::FaultDelay {
                percent: d.percent,
                duration: Some(duration(d.duration)),
            }),
        }),
    }
}

fn route_match(m: &model::RouteMatch) -> pb::RouteMatch {
    pb::RouteMatch {
        path: m.path.as_ref().map(|p| pb::PathMatch {
            r#type: path_match_type(p.kind).into(),
            value: p.value.clone(),
        }),
        method: m.method.clone(),
        headers: m.headers.iter().map(value_match).collect(),
        query_params: m.query_params.iter().map(value_match).collect(),
    }
}

fn value_match(v: &model::ValueMatch) -> pb::ValueMatch {
    pb::ValueMatch {
        name: v.name.clone(),
        r#type: value_match_type(v.kind).into(),
        value: v.value.clone(),
    }
}

/// The service's endpoints with every workload resolved to its address (the endpoint's own,
/// else the workload's inbound listener) and identity (the endpoint's, else the workload's
/// SPIFFE ID). An endpoint that does not resolve (a workload that is missing or has no inbound, or
/// neither workload nor address) only exists in a mesh `validate` refuses; it is left out.
pub(super) fn endpoints(
    svc: &model::Service,
    workloads: &WorkloadIndex<'_>,
    trust_domain: &str,
) -> pb::Endpoints {
    let endpoints = svc
        .endpoints
        .iter()
        .filter_map(|ep| {
            let (address, identity) = match (&ep.workload, ep.address) {
                (Some(name), address) => {
                    let ns = ep.namespace.as_deref().unwrap_or(&svc.namespace);
                    let w = workloads.get(&(ns, name.as_str()))?;
                    let address = match address {
                        Some(a) => a,
                        None => w.inbound.as_ref()?.listen,
                    };
                    let identity = match &ep.identity {
                        Some(id) => id.clone(),
                        None => w.spiffe_id(trust_domain),
                    };
                    (address, identity)
                }
                (None, Some(address)) => (address, ep.identity.clone().unwrap_or_default()),
                (None, None) => return None,
            };
            Some(pb::Endpoint {
                workload: ep.workload.clone().unwrap_or_default(),
                namespace: ep.namespace.clone(),
                address: address.to_string(),
                identity,
                labels: ep.labels.clone(),
            })
        })
        .collect();
    pb::Endpoints {
        service: svc.name.clone(),
        namespace: svc.namespace.clone(),
        endpoints,
    }
}

pub(super) fn workload(w: &model::Workload, trust_domain: &str) -> pb::Workload {
    pb::Workload {
        name: w.name.clone(),
        namespace: w.namespace.clone(),
        service_account: w.service_account.clone(),
        labels: w.labels.clone(),
        inbound: w.inbound.as_ref().map(|ib| pb::Inbound {
            listen: ib.listen.to_string(),
            app: ib.app.to_string(),
            mtls: mtls_mode(ib.mtls).into(),
        }),
        rate_limit: w.rate_limit.as_ref().map(|rl| pb::RateLimit {
            requests_per_second: rl.requests_per_second,
            burst: rl.burst,
        }),
        spiffe_id: w.spiffe_id(trust_domain),
    }
}

pub(super) fn authorization(p: &model::AuthorizationPolicy) -> pb::Authorization {
    pb::Authorization {
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        target: p.target.clone(),
        action: authz_action(p.action).into(),
        from: p.from.clone(),
        to: p
            .to
            .iter()
            .map(|rule| pb::AuthzRule {
                methods: rule.methods.clone(),
                paths: rule.paths.clone(),
                ports: rule.ports.iter().map(|&p| u32::from(p)).collect(),
            })
            .collect(),
        mode: match p.mode {
            model::AuthzMode::Enforce => pb::AuthzMode::Enforce,
            model::AuthzMode::Audit => pb::AuthzMode::Audit,
        }
        .into(),
    }
}

pub(super) fn mesh_settings(settings: &model::MeshSettings) -> pb::MeshSettings {
    pb::MeshSettings {
        trust_domain: settings.trust_domain.clone(),
        tracing: settings.tracing.as_ref().map(|t| pb::TracingSettings {
            sampling: t.sampling,
        }),
        trust_anchors: settings.trust_anchors.clone(),
    }
}

/// Exact: seconds and nanoseconds. A duration beyond `i64::MAX` seconds (no mesh file can
/// write one) saturates.
fn duration(d: Dur) -> PbDuration {
    let d = d.get();
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Below 10^9 by construction, so it always fits.
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn protocol(p: model::Protocol) -> pb::Protocol {
    use model::Protocol as M;
    match p {
        M::Auto => pb::Protocol::Auto,
        M::Http1 => pb::Protocol::Http1,
        M::Http2 => pb::Protocol::Http2,
        M::Grpc => pb::Protocol::Grpc,
        M::Tcp => pb::Protocol::Tcp,
    }
}

fn load_balancer(lb: model::LoadBalancer) -> pb::LoadBalancer {
    match lb {
        model::LoadBalancer::P2cEwma => pb::LoadBalancer::P2cEwma,
        model::LoadBalancer::RoundRobin => pb::LoadBalancer::RoundRobin,
    }
}

fn path_match_type(t: model::PathMatchType) -> pb::PathMatchType {
    match t {
        model::PathMatchType::Exact => pb::PathMatchType::Exact,
        model::PathMatchType::PathPrefix => pb::PathMatchType::PathPrefix,
        model::PathMatchType::RegularExpression => pb::PathMatchType::RegularExpression,
    }
}

fn value_match_type(t: model::ValueMatchType) -> pb::ValueMatchType {
    match t {
        model::ValueMatchType::Exact => pb::ValueMatchType::Exact,
        model::ValueMatchType::RegularExpression => pb::ValueMatchType::RegularExpression,
    }
}

fn retry_on(on: model::RetryOn) -> pb::RetryOn {
    use model::RetryOn as M;
    match on {
        M::Status5xx => pb::RetryOn::Status5xx,
        M::GatewayError => pb::RetryOn::GatewayError,
        M::Reset => pb::RetryOn::Reset,
        M::ConnectFailure => pb::RetryOn::ConnectFailure,
        M::RefusedStream => pb::RetryOn::RefusedStream,
        M::Retriable4xx => pb::RetryOn::Retriable4xx,
        M::RetriableStatusCodes => pb::RetryOn::RetriableStatusCodes,
        M::Cancelled => pb::RetryOn::Cancelled,
        M::DeadlineExceeded => pb::RetryOn::DeadlineExceeded,
        M::ResourceExhausted => pb::RetryOn::ResourceExhausted,
        M::Unavailable => pb::RetryOn::Unavailable,
    }
}

fn mtls_mode(m: model::MtlsMode) -> pb::MtlsMode {
    match m {
        model::MtlsMode::Strict => pb::MtlsMode::Strict,
        model::MtlsMode::Permissive => pb::MtlsMode::Permissive,
        model::MtlsMode::Disabled => pb::MtlsMode::Disabled,
    }
}

fn authz_action(a: model::AuthzAction) -> pb::AuthzAction {
    match a {
        model::AuthzAction::Allow => pb::AuthzAction::Allow,
        model::AuthzAction::Deny => pb::AuthzAction::Deny,
    }
}
