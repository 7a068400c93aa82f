//! Rules for `workloads[i]`: names, labels, the inbound listener and the rate limit.
//! Listen addresses are claimed in file order, so a clash is reported on the later workload.

use std::{
    collections::{HashMap, hash_map::Entry},
    net::SocketAddr,
};

use super::{
    index::MeshIndex,
    report::{FieldPath, Report},
    service::check_labels,
    syntax,
};
use crate::model::{Inbound, RateLimit, Workload};

pub(super) fn check_all(workloads: &[Workload], index: &MeshIndex<'_>, report: &mut Report) {
    let mut listens: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, w) in workloads.iter().enumerate() {
        let at = FieldPath::root("workloads").index(i);
        let name = at.key("name");
        report.check(&name, syntax::dns_label(&w.name));
        if let Some((first, _)) = index
            .workload(&w.namespace, &w.name)
            .filter(|(first, _)| *first != i)
        {
            report.add(
                &name,
                format!(
                    "duplicate workload {:?} in namespace {:?} (first at workloads[{first}])",
                    w.name, w.namespace
                ),
            );
        }
        report.check(&at.key("namespace"), syntax::dns_label(&w.namespace));
        report.check(
            &at.key("serviceAccount"),
            syntax::dns_label(&w.service_account),
        );
        check_labels(w.labels.iter(), &at.key("labels"), report);
        if let Some(inbound) = &w.inbound {
            check_inbound(inbound, i, &at.key("inbound"), &mut listens, report);
        }
        if let Some(limit) = &w.rate_limit {
            check_rate_limit(limit, &at.key("rateLimit"), report);
        }
    }
}

fn check_inbound(
    inbound: &Inbound,
    i: usize,
    at: &FieldPath,
    listens: &mut HashMap<SocketAddr, usize>,
    report: &mut Report,
) {
    // Port 0 lets the OS pick at bind time, so two of them never clash.
    if inbound.listen.port() != 0 {
        match listens.entry(inbound.listen) {
            Entry::Occupied(e) => report.add(
                &at.key("listen"),
                format!(
                    "{} is already the inbound.listen of workloads[{}]",
                    inbound.listen,
                    e.get()
                ),
            ),
            Entry::Vacant(e) => {
                e.insert(i);
            }
        }
    }
    let app = at.key("app");
    if inbound.app == inbound.listen {
        report.add(
            &app,
            "must differ from inbound.listen (the sidecar would forward to itself)",
        );
    } else if inbound.app.port() == 0 {
        report.add(&app, "port must not be 0");
    }
}

fn check_rate_limit(limit: &RateLimit, at: &FieldPath, report: &mut Report) {
    report.at_least(&at.key("requestsPerSecond"), limit.requests_per_second, 1);
    if let Some(burst) = limit.burst {
        report.at_least(&at.key("burst"), burst, 1);
    }
}
