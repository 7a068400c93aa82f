//! Rules for `services[i].routes[k]`: names, matches, backend references and the per-route
//! timeouts, retry and fault policies. Knows nothing of the service's own fields.

use std::collections::{HashMap, hash_map::Entry};

use super::{
    index::MeshIndex,
    report::{FieldPath, Report},
    syntax,
};
use crate::model::{
    BackendRef, Fault, FaultAbort, PathMatchType, Retry, RetryOn, Route, RouteMatch, Service,
    Timeouts, ValueMatch, ValueMatchType,
};

/// Weights are relative; the bound keeps their sum far from `u32` overflow, as the
/// Gateway API does.
pub(super) const MAX_WEIGHT: u32 = 1_000_000;
/// Bodies buffered for a retry stay in memory, so one route cannot ask for more than this.
pub(super) const MAX_RETRY_BODY: u64 = 16 * 1024 * 1024;
pub(super) const MAX_ATTEMPTS: u32 = 10;
/// gRPC status codes: 0 (OK) to 16 (UNAUTHENTICATED).
pub(super) const MAX_GRPC_STATUS: u32 = 16;

/// `at` is the service's path.
pub(super) fn check_all(svc: &Service, at: &FieldPath, index: &MeshIndex<'_>, report: &mut Report) {
    let mut names: HashMap<String, usize> = HashMap::new();
    for (k, route) in svc.routes.iter().enumerate() {
        let here = at.key("routes").index(k);
        check_name(route, k, &here, at, &mut names, report);
        for (m, rule) in route.matches.iter().enumerate() {
            check_match(rule, &here.key("matches").index(m), report);
        }
        for (n, backend) in route.backend_refs.iter().enumerate() {
            check_backend(
                backend,
                svc,
                &here.key("backendRefs").index(n),
                index,
                report,
            );
        }
        if let Some(timeouts) = &route.timeouts {
            check_timeouts(timeouts, &here.key("timeouts"), report);
        }
        if let Some(retry) = &route.retry {
            check_retry(retry, &here.key("retry"), report);
        }
        if let Some(fault) = &route.fault {
            check_fault(fault, &here.key("fault"), report);
        }
    }
}

/// Names are metric labels, so they must be unique, defaults (`route-<k>`) included.
fn check_name(
    route: &Route,
    k: usize,
    here: &FieldPath,
    service: &FieldPath,
    names: &mut HashMap<String, usize>,
    report: &mut Report,
) {
    if let Some(name) = &route.name {
        report.check(&here.key("name"), syntax::dns_name(name));
    }
    let name = route.name.clone().unwrap_or_else(|| format!("route-{k}"));
    match names.entry(name) {
        Entry::Occupied(e) => {
            let first = service.key("routes").index(*e.get());
            match &route.name {
                Some(name) => report.add(
                    &here.key("name"),
                    format!("duplicate route name {name:?} (first at {first})"),
                ),
                None => report.add(
                    here,
                    format!(
                        "default name {:?} is already taken by {first}; name this route",
                        e.key()
                    ),
                ),
            }
        }
        Entry::Vacant(e) => {
            e.insert(k);
        }
    }
}

fn check_match(rule: &RouteMatch, at: &FieldPath, report: &mut Report) {
    if let Some(path) = &rule.path {
        let here = at.key("path").key("value");
        match path.kind {
            PathMatchType::Exact | PathMatchType::PathPrefix => {
                report.check(&here, syntax::route_path(&path.value))
            }
            PathMatchType::RegularExpression => {
                report.check(&here, syntax::whole_value_regex(&path.value))
            }
        }
    }
    if let Some(method) = &rule.method {
        report.check(&at.key("method"), syntax::method(method));
    }
    for (h, header) in rule.headers.iter().enumerate() {
        let here = at.key("headers").index(h);
        report.check(&here.key("name"), syntax::header_name(&header.name));
        check_value(header, &here, report);
    }
    for (q, param) in rule.query_params.iter().enumerate() {
        let here = at.key("queryParams").index(q);
        if param.name.is_empty() {
            report.add(&here.key("name"), "must not be empty");
        }
        check_value(param, &here, report);
    }
}

fn check_value(cond: &ValueMatch, at: &FieldPath, report: &mut Report) {
    if cond.kind == ValueMatchType::RegularExpression {
        report.check(&at.key("value"), syntax::whole_value_regex(&cond.value));
    }
}

fn check_backend(
    backend: &BackendRef,
    svc: &Service,
    at: &FieldPath,
    index: &MeshIndex<'_>,
    report: &mut Report,
) {
    let namespace = backend.namespace.as_deref().unwrap_or(&svc.namespace);
    let namespace_ok = syntax::dns_label(namespace);
    // A malformed namespace is reported once, on itself, not again as a missing service.
    if namespace_ok.is_ok() && !index.has_service(namespace, &backend.service) {
        report.add(
            &at.key("service"),
            format!(
                "no service {:?} in namespace {namespace:?}",
                backend.service
            ),
        );
    }
    if backend.namespace.is_some() {
        report.check(&at.key("namespace"), namespace_ok);
    }
    report.at_most(&at.key("weight"), backend.weight, MAX_WEIGHT);
}

fn check_timeouts(timeouts: &Timeouts, at: &FieldPath, report: &mut Report) {
    if let Some(request) = timeouts.request {
        report.positive(&at.key("request"), request);
    }
    if let Some(per_try) = timeouts.backend_request {
        let here = at.key("backendRequest");
        report.positive(&here, per_try);
        // As in the Gateway API: a try cannot outlive the request it belongs to.
        if let Some(request) = timeouts.request.filter(|r| !r.get().is_zero())
            && per_try > request
        {
            report.add(
                &here,
                format!("must be at most timeouts.request ({request}), got {per_try}"),
            );
        }
    }
}

fn check_retry(retry: &Retry, at: &FieldPath, report: &mut Report) {
    report.between(&at.key("attempts"), retry.attempts, 1, MAX_ATTEMPTS);
    let retry_on = at.key("retryOn");
    if retry.retry_on.is_empty() {
        report.add(&retry_on, "must not be empty");
    }
    for (i, on) in retry.retry_on.iter().enumerate() {
        // The earlier one is named within the list, so the message reads the same in a
        // received resource (whose paths have no `services[i]`).
        if let Some(first) = retry.retry_on[..i].iter().position(|o| o == on) {
            report.add(
                &retry_on.index(i),
                format!(
                    "{} is listed twice (first at retryOn[{first}])",
                    on.as_str()
                ),
            );
        }
    }
    check_retriable_status_codes(retry, &at.key("retriableStatusCodes"), report);
    if let Some(backoff) = &retry.backoff {
        let base = at.key("backoff").key("base");
        report.positive(&base, backoff.base);
        if backoff.base > backoff.max {
            report.add(
                &base,
                format!(
                    "must be at most backoff.max ({}), got {}",
                    backoff.max, backoff.base
                ),
            );
        }
    }
    report.at_most(
        &at.key("maxBodyBytes"),
        retry.max_body_bytes,
        MAX_RETRY_BODY,
    );
}

/// The list and the `retriable-status-codes` token come together: one without the other is
/// a policy that does not do what it says.
fn check_retriable_status_codes(retry: &Retry, at: &FieldPath, report: &mut Report) {
    let token = RetryOn::RetriableStatusCodes;
    let listed = retry.retry_on.contains(&token);
    if listed && retry.retriable_status_codes.is_empty() {
        report.add(
            at,
            format!("must not be empty when retryOn has {}", token.as_str()),
        );
    } else if !listed && !retry.retriable_status_codes.is_empty() {
        report.add(at, format!("only used with retryOn {}", token.as_str()));
    }
    for (i, &code) in retry.retriable_status_codes.iter().enumerate() {
        report.between(&at.index(i), code, 100, 599);
    }
}

fn check_fault(fault: &Fault, at: &FieldPath, report: &mut Report) {
    if let Some(abort) = &fault.abort {
        check_abort(abort, &at.key("abort"), report);
    }
    if let Some(delay) = &fault.delay {
        let here = at.key("delay");
        report.between(&here.key("percent"), delay.percent, 0.0, 100.0);
        report.positive(&here.key("duration"), delay.duration);
    }
}

fn check_abort(abort: &FaultAbort, at: &FieldPath, report: &mut Report) {
    match (abort.status, abort.grpc_status) {
        (None, None) => report.add(at, "must set one of status or grpcStatus"),
        (Some(_), Some(_)) => report.add(at, "must set only one of status or grpcStatus"),
        _ => {}
    }
    report.between(&at.key("percent"), abort.percent, 0.0, 100.0);
    if let Some(status) = abort.status {
        report.between(&at.key("status"), status, 200, 599);
    }
    if let Some(grpc_status) = abort.grpc_status {
        report.between(&at.key("grpcStatus"), grpc_status, 0, MAX_GRPC_STATUS);
    }
}
