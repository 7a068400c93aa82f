//! Rules for `services[i]` up to its routes: names, hosts, addresses, endpoints and the
//! resilience policies. Hosts and addresses are claimed in file order, so a clash is
//! reported on the later service. Routes are `route`'s.

use std::{
    collections::{HashMap, hash_map::Entry},
    net::SocketAddr,
};

use super::{
    index::MeshIndex,
    report::{FieldPath, Report},
    route, syntax,
};
use crate::model::{CircuitBreaker, Endpoint, OutlierDetection, Protocol, Service};

/// What earlier services already hold.
#[derive(Default)]
struct Claims<'a> {
    hosts: HashMap<&'a str, usize>,
    addresses: HashMap<SocketAddr, usize>,
}

pub(super) fn check_all(services: &[Service], index: &MeshIndex<'_>, report: &mut Report) {
    let mut claims = Claims::default();
    for (i, svc) in services.iter().enumerate() {
        check(svc, i, index, &mut claims, report);
    }
}

fn check<'a>(
    svc: &'a Service,
    i: usize,
    index: &MeshIndex<'_>,
    claims: &mut Claims<'a>,
    report: &mut Report,
) {
    let at = FieldPath::root("services").index(i);

    let name = at.key("name");
    report.check(&name, syntax::dns_label(&svc.name));
    if let Some(first) = index
        .service(&svc.namespace, &svc.name)
        .filter(|&first| first != i)
    {
        report.add(
            &name,
            format!(
                "duplicate service {:?} in namespace {:?} (first at services[{first}])",
                svc.name, svc.namespace
            ),
        );
    }
    report.check(&at.key("namespace"), syntax::dns_label(&svc.namespace));

    if let Some(hosts) = &svc.hosts {
        check_hosts(hosts, i, &at.key("hosts"), index, claims, report);
    }
    for (a, addr) in svc.addresses.iter().enumerate() {
        let here = at.key("addresses").index(a);
        if addr.port() == 0 {
            report.add(&here, "port must not be 0");
        }
        match claims.addresses.entry(*addr) {
            Entry::Occupied(e) if *e.get() == i => {
                report.add(&here, format!("{addr} is listed twice"))
            }
            Entry::Occupied(e) => report.add(
                &here,
                format!("{addr} is already an address of services[{}]", e.get()),
            ),
            Entry::Vacant(e) => {
                e.insert(i);
            }
        }
    }
    report.positive(&at.key("connectTimeout"), svc.connect_timeout);

    let mut seen = HashMap::new();
    for (j, ep) in svc.endpoints.iter().enumerate() {
        let here = at.key("endpoints").index(j);
        check_endpoint(ep, svc, &here, index, report);
        let key = match (&ep.workload, ep.address) {
            (Some(w), address) => (
                Some(w.as_str()),
                ep.namespace.as_deref().unwrap_or(&svc.namespace),
                address,
            ),
            (None, Some(addr)) => (None, "", Some(addr)),
            (None, None) => continue,
        };
        match seen.entry(key) {
            Entry::Occupied(first) => report.add(
                &here,
                format!(
                    "same endpoint as {}",
                    at.key("endpoints").index(*first.get())
                ),
            ),
            Entry::Vacant(e) => {
                e.insert(j);
            }
        }
    }

    if let Some(cb) = &svc.circuit_breaker {
        check_circuit_breaker(cb, &at.key("circuitBreaker"), report);
    }
    if let Some(od) = &svc.outlier_detection {
        check_outlier_detection(od, &at.key("outlierDetection"), report);
    }
    if let Some(budget) = &svc.retry_budget {
        report.between(&at.key("retryBudget").key("ratio"), budget.ratio, 0.0, 1.0);
    }

    if svc.protocol == Protocol::Tcp && !svc.routes.is_empty() {
        report.add(
            &at.key("routes"),
            "must be empty for protocol tcp (routes are HTTP only)",
        );
    }
    route::check_all(svc, &at, index, report);
}

fn check_hosts<'a>(
    hosts: &'a [String],
    i: usize,
    at: &FieldPath,
    index: &MeshIndex<'_>,
    claims: &mut Claims<'a>,
    report: &mut Report,
) {
    if hosts.is_empty() {
        report.add(at, "must not be empty (omit hosts for the default names)");
    }
    for (h, host) in hosts.iter().enumerate() {
        let here = at.index(h);
        if let Err(message) = syntax::host(host) {
            report.add(&here, message);
            continue;
        }
        match claims.hosts.entry(host.as_str()) {
            Entry::Occupied(e) if *e.get() == i => {
                report.add(&here, format!("{host:?} is listed twice"))
            }
            Entry::Occupied(e) => report.add(
                &here,
                format!("{host:?} is already a host of services[{}]", e.get()),
            ),
            Entry::Vacant(e) => {
                e.insert(i);
                if let Some(owner) = index.default_host_owner(host) {
                    report.add(
                        &here,
                        format!(
                            "{host:?} is already a default host of services[{owner}] \
                             (give that service explicit hosts)"
                        ),
                    );
                }
            }
        }
    }
}

fn check_endpoint(
    ep: &Endpoint,
    svc: &Service,
    at: &FieldPath,
    index: &MeshIndex<'_>,
    report: &mut Report,
) {
    if ep.workload.is_none() && ep.address.is_none() {
        report.add(at, "must set workload, address or both");
    }

    let namespace = match (&ep.namespace, &ep.workload) {
        (Some(_), None) => {
            report.add(&at.key("namespace"), "only allowed with workload");
            None
        }
        (Some(ns), Some(_)) => match syntax::dns_label(ns) {
            Ok(()) => Some(ns.as_str()),
            Err(message) => {
                report.add(&at.key("namespace"), message);
                None
            }
        },
        (None, _) => Some(svc.namespace.as_str()),
    };
    if let Some(workload) = &ep.workload {
        let here = at.key("workload");
        match (syntax::dns_label(workload), namespace) {
            (Err(message), _) => report.add(&here, message),
            (Ok(()), None) => {}
            (Ok(()), Some(ns)) => match index.workload(ns, workload) {
                None if index.is_partial() => {}
                None => report.add(
                    &here,
                    format!("no workload {workload:?} in namespace {ns:?}"),
                ),
                Some((w, declared)) if declared.inbound.is_none() && ep.address.is_none() => report
                    .add(
                        &here,
                        format!(
                            "workload {workload:?} (workloads[{w}]) has no inbound; \
                             without an address the endpoint means its sidecar's inbound.listen"
                        ),
                    ),
                Some(_) => {}
            },
        }
    }

    if ep.address.is_some_and(|a| a.port() == 0) {
        report.add(&at.key("address"), "port must not be 0");
    }
    if let Some(identity) = &ep.identity {
        let here = at.key("identity");
        if ep.address.is_none() {
            report.add(
                &here,
                "only allowed with address (a workload's identity is its service account's)",
            );
        } else {
            match syntax::spiffe_id(identity) {
                Err(message) => report.add(&here, message),
                Ok(domain) => {
                    if let Some(trust_domain) = index.trust_domain.filter(|td| *td != domain) {
                        report.add(
                            &here,
                            format!("must be in trust domain {trust_domain:?}, got {identity:?}"),
                        );
                    }
                }
            }
        }
    }
    check_labels(ep.labels.iter(), &at.key("labels"), report);
}

/// Kubernetes label rules, shared with workloads.
pub(super) fn check_labels<'a>(
    labels: impl Iterator<Item = (&'a String, &'a String)>,
    at: &FieldPath,
    report: &mut Report,
) {
    for (key, value) in labels {
        let here = at.key(key);
        report.check(&here, syntax::label_key(key));
        report.check(&here, syntax::label_value(value));
    }
}

fn check_circuit_breaker(cb: &CircuitBreaker, at: &FieldPath, report: &mut Report) {
    report.at_least(&at.key("maxConnections"), cb.max_connections, 1);
    report.at_least(&at.key("maxPendingRequests"), cb.max_pending_requests, 1);
    report.at_least(&at.key("maxRequests"), cb.max_requests, 1);
    report.at_least(&at.key("maxRetries"), cb.max_retries, 1);
}

fn check_outlier_detection(od: &OutlierDetection, at: &FieldPath, report: &mut Report) {
    report.at_least(&at.key("consecutiveErrors"), od.consecutive_errors, 1);
    report.positive(&at.key("interval"), od.interval);
    report.positive(&at.key("baseEjectionTime"), od.base_ejection_time);
    report.at_most(&at.key("maxEjectionPercent"), od.max_ejection_percent, 100);
}
