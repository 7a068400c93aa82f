//! Rules for authorization policies: names, targets, peers, methods, paths, ports and mode.

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
fn policy_peers_may_be_namespace_or_trust_domain_patterns_or_unauthenticated() {
    valid(&with_policies(
        "{ name: p, target: s, from: [ 'spiffe://cluster.local/ns/a/sa/b', \
         'spiffe://cluster.local/ns/a/*', 'spiffe://cluster.local/*', unauthenticated ] }",
    ));
    for bad in [
        "'spiffe://cluster.local/ns/*'",
        "'spiffe://cluster.local/ns/a/sa/*'",
        "'spiffe://cluster.local/ns/a*'",
        "'spiffe://cluster.local/ns/a/*/sa/b'",
        "'spiffe://cluster.local/sa/*'",
        "'spiffe://*/ns/a/*'",
        "'*'",
    ] {
        let msg = only(
            &with_policies(&format!(
                "{{ name: p, target: s, from: [ unauthenticated, {bad} ] }}"
            )),
            "authorization[0].from[1]",
        );
        assert!(
            msg.starts_with("'*' is allowed only as the whole last segment"),
            "{bad}: {msg}"
        );
    }
    for bad in ["Unauthenticated", "anonymous", "spiffe://cluster.local"] {
        let msg = only(
            &with_policies(&format!("{{ name: p, target: s, from: [ {bad} ] }}")),
            "authorization[0].from[0]",
        );
        assert!(msg.contains("\"unauthenticated\""), "{bad}: {msg}");
    }
}

#[test]
fn policy_peers_are_in_the_mesh_trust_domain() {
    for peer in [
        "spiffe://other.domain/ns/a/sa/b",
        "spiffe://other.domain/ns/a/*",
        "spiffe://other.domain/*",
    ] {
        let msg = only(
            &with_policies(&format!("{{ name: p, target: s, from: [ '{peer}' ] }}")),
            "authorization[0].from[0]",
        );
        assert_eq!(
            msg,
            format!("must be in trust domain \"cluster.local\", got {peer:?}")
        );
    }
    valid(&format!(
        "mesh: {{ trustDomain: other.domain }}\n{}",
        with_policies("{ name: p, target: s, from: [ 'spiffe://other.domain/*' ] }")
    ));
}

#[test]
fn policy_rule_ports_are_from_1_to_65535() {
    valid(&with_policies(
        "{ name: p, target: s, to: [ { ports: [1, 8080, 65535] } ] }",
    ));
    let msg = only(
        &with_policies("{ name: p, target: s, to: [ { ports: [80] }, { ports: [0] } ] }"),
        "authorization[0].to[1].ports[0]",
    );
    assert_eq!(msg, "must be a port from 1 to 65535, got 0");
    only(
        &with_policies("{ name: p, target: s, to: [ { ports: [80, 65536] } ] }"),
        "authorization[0].to[0].ports[1]",
    );
    only(
        &with_policies("{ name: p, target: s, to: [ { ports: [http] } ] }"),
        "authorization[0].to[0].ports[0]",
    );
}

#[test]
fn policy_mode_is_enforce_or_audit() {
    valid(&with_policies(
        "{ name: p, target: s, mode: audit }, { name: q, target: s, mode: enforce, action: deny }",
    ));
    only(
        &with_policies("{ name: p, target: s, mode: dry-run }"),
        "authorization[0].mode",
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
