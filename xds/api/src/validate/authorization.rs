//! Rules for `authorization[i]`: unique names per namespace, an existing target service,
//! peers (SPIFFE IDs and patterns of the mesh's trust domain, or `unauthenticated`), method
//! tokens, path patterns and ports. `mode` and `action` are whole by their shape.

use std::collections::{HashMap, hash_map::Entry};

use super::{
    index::MeshIndex,
    report::{FieldPath, Report},
    syntax,
};
use crate::model::{AuthorizationPolicy, AuthzRule};

pub(super) fn check_all(
    policies: &[AuthorizationPolicy],
    index: &MeshIndex<'_>,
    report: &mut Report,
) {
    let mut names: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, policy) in policies.iter().enumerate() {
        let at = FieldPath::root("authorization").index(i);
        let name = at.key("name");
        report.check(&name, syntax::dns_name(&policy.name));
        match names.entry((policy.namespace.as_str(), policy.name.as_str())) {
            Entry::Occupied(e) => report.add(
                &name,
                format!(
                    "duplicate policy {:?} in namespace {:?} (first at authorization[{}])",
                    policy.name,
                    policy.namespace,
                    e.get()
                ),
            ),
            Entry::Vacant(e) => {
                e.insert(i);
            }
        }
        report.check(&at.key("namespace"), syntax::dns_label(&policy.namespace));
        if !index.has_service(&policy.namespace, &policy.target) {
            report.add(
                &at.key("target"),
                format!(
                    "no service {:?} in namespace {:?}",
                    policy.target, policy.namespace
                ),
            );
        }
        for (f, peer) in policy.from.iter().enumerate() {
            check_peer(peer, &at.key("from").index(f), index, report);
        }
        for (r, rule) in policy.to.iter().enumerate() {
            check_rule(rule, &at.key("to").index(r), report);
        }
    }
}

/// A peer of another trust domain could never present a mesh certificate, so naming one is
/// a mistake (an allow that never allows, a deny that never denies).
fn check_peer(peer: &str, at: &FieldPath, index: &MeshIndex<'_>, report: &mut Report) {
    match syntax::authz_peer(peer) {
        Err(message) => report.add(at, message),
        Ok(Some(domain)) => {
            if let Some(trust_domain) = index.trust_domain.filter(|td| *td != domain) {
                report.add(
                    at,
                    format!("must be in trust domain {trust_domain:?}, got {peer:?}"),
                );
            }
        }
        Ok(None) => {}
    }
}

fn check_rule(rule: &AuthzRule, at: &FieldPath, report: &mut Report) {
    for (m, method) in rule.methods.iter().enumerate() {
        report.check(&at.key("methods").index(m), syntax::method(method));
    }
    for (p, path) in rule.paths.iter().enumerate() {
        report.check(&at.key("paths").index(p), syntax::authz_path(path));
    }
    for (p, &port) in rule.ports.iter().enumerate() {
        if port == 0 {
            report.add(
                &at.key("ports").index(p),
                "must be a port from 1 to 65535, got 0",
            );
        }
    }
}
