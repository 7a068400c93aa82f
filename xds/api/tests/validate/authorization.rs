//! Rules for authorization policies: names, targets, peers, methods and paths.

use super::*;

fn with_policies(policies: &str) -> String {
    format!(
        "services: [ {{ name: s }}, {{ name: s, namespace: other }} ]\nauthorization: [ {policies} ]"
    )
}

#[test]
fn policy_names_are_unique_per_namespace() {
    only(
        &with_policies("{ name: p, target: s }, { name: p, target: s }"),
        "authorization[1].name",
    );
    valid(&with_policies(
        "{ name: p, target: s }, { name: p, namespace: other, target: s }",
    ));
}

#[test]
fn policy_targets_exist_in_the_policy_namespace() {
    let msg = only(
        &with_policies("{ name: p, namespace: third, target: s }"),
        "authorization[0].target",
    );
    assert_eq!(msg, r#"no service "s" in namespace "third""#);
}

#[test]
fn policy_peers_are_spiffe_ids() {
    only(
        &with_policies(
            "{ name: p, target: s, from: [ 'spiffe://cluster.local/ns/a/sa/b', 'ns/a/sa/b' ] }",
        ),
        "authorization[0].from[1]",
    );
}

#[test]
fn policy_rules_have_method_tokens_and_star_suffix_paths() {
    only(
        &with_policies("{ name: p, target: s, to: [ { methods: [GET, 'P OST'] } ] }"),
        "authorization[0].to[0].methods[1]",
    );
    only(
        &with_policies("{ name: p, target: s, to: [ {}, { paths: ['/a*/b'] } ] }"),
        "authorization[0].to[1].paths[0]",
    );
    only(
        &with_policies("{ name: p, target: s, to: [ { paths: [health] } ] }"),
        "authorization[0].to[0].paths[0]",
    );
    valid(&with_policies(
        "{ name: p, target: s, action: deny, to: [ { methods: [PURGE], paths: ['*', /x/*, /health] } ] }",
    ));
}
