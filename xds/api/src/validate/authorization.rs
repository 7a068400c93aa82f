//! Rules for `authorization[i]`: unique names per namespace, an existing target service,
//! SPIFFE peers, method tokens and path patterns.

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
            report.check(
                &at.key("from").index(f),
                syntax::spiffe_id(peer).map(|_| ()),
            );
        }
        for (r, rule) in policy.to.iter().enumerate() {
            check_rule(rule, &at.key("to").index(r), report);
        }
    }
}

fn check_rule(rule: &AuthzRule, at: &FieldPath, report: &mut Report) {
    for (m, method) in rule.methods.iter().enumerate() {
        report.check(&at.key("methods").index(m), syntax::method(method));
    }
    for (p, path) in rule.paths.iter().enumerate() {
        report.check(&at.key("paths").index(p), syntax::authz_path(path));
    }
}
