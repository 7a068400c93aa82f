//! Each rule of the authorization semantics, on policies written as a mesh file would.

use prometheus_client::encoding::text::encode;

use super::*;

const ME: &str = "spiffe://cluster.local/ns/default/sa/me";

/// Validated policies: `services: [s]` plus the given `authorization` entries.
fn mesh(policies: &str) -> MeshFile {
    skiff_api::load(&format!(
        "services: [ {{ name: s }} ]\nauthorization: [ {policies} ]"
    ))
    .unwrap_or_else(|e| panic!("test policies refused: {e}"))
}

fn compile(policies: &str) -> (Policies, AuthzMetrics) {
    let metrics = AuthzMetrics::default();
    (
        Policies::compile(&mesh(policies).authorization, &metrics),
        metrics,
    )
}

/// Whether a single policy (given as its fields after `name` and `target`) matches.
fn matches(fields: &str, peer: Peer<'_>, req: Request<'_>) -> bool {
    let (p, _) = compile(&format!("{{ name: p, target: s, action: deny, {fields} }}"));
    !p.evaluate(peer, &req).is_allowed()
}

fn get(path: &str) -> Request<'_> {
    Request::http("GET", path, 8080)
}

fn count(m: &AuthzMetrics, policy: &str, result: &'static str) -> u64 {
    m.decisions
        .get(&DecisionLabels {
            policy: policy.to_owned(),
            result,
        })
        .map_or(0, |c| c.get())
}

#[test]
fn exact_ids_match_only_themselves() {
    let from = format!("from: [ '{ME}' ]");
    assert!(matches(&from, Peer::Authenticated(ME), get("/")));
    for other in [
        "spiffe://cluster.local/ns/default/sa/me2",
        "spiffe://cluster.local/ns/default/sa/m",
        "spiffe://cluster.local/ns/other/sa/me",
    ] {
        assert!(
            !matches(&from, Peer::Authenticated(other), get("/")),
            "{other}"
        );
    }
    assert!(!matches(&from, Peer::Unauthenticated, get("/")));
}

#[test]
fn namespace_patterns_match_any_identity_of_that_namespace() {
    let from = "from: [ 'spiffe://cluster.local/ns/shop/*' ]";
    for id in [
        "spiffe://cluster.local/ns/shop/sa/cart",
        "spiffe://cluster.local/ns/shop/sa/default",
    ] {
        assert!(matches(from, Peer::Authenticated(id), get("/")), "{id}");
    }
    for id in [
        "spiffe://cluster.local/ns/shopping/sa/cart",
        "spiffe://cluster.local/ns/shop/",
        "spiffe://cluster.local/ns/shop",
        "spiffe://cluster.local/ns/other/sa/cart",
    ] {
        assert!(!matches(from, Peer::Authenticated(id), get("/")), "{id}");
    }
    assert!(!matches(from, Peer::Unauthenticated, get("/")));
}

#[test]
fn trust_domain_patterns_match_any_identity_of_the_domain() {
    let from = "from: [ 'spiffe://cluster.local/*' ]";
    assert!(matches(from, Peer::Authenticated(ME), get("/")));
    assert!(matches(
        from,
        Peer::Authenticated("spiffe://cluster.local/ns/x/sa/y"),
        get("/")
    ));
    for id in [
        "spiffe://cluster.local.evil/ns/x/sa/y",
        "spiffe://other/ns/x/sa/y",
        "spiffe://cluster.local/",
    ] {
        assert!(!matches(from, Peer::Authenticated(id), get("/")), "{id}");
    }
    assert!(!matches(from, Peer::Unauthenticated, get("/")));
}

#[test]
fn unauthenticated_matches_only_peers_without_a_certificate() {
    let from = "from: [ unauthenticated ]";
    assert!(matches(from, Peer::Unauthenticated, get("/")));
    assert!(!matches(from, Peer::Authenticated(ME), get("/")));
    assert_eq!(Peer::from(None), Peer::Unauthenticated);
    assert_eq!(Peer::from(Some(ME)), Peer::Authenticated(ME));
}

#[test]
fn no_from_means_any_peer() {
    assert!(matches("to: []", Peer::Unauthenticated, get("/")));
    assert!(matches("to: []", Peer::Authenticated(ME), get("/")));
}

#[test]
fn methods_are_exact_and_case_sensitive() {
    let to = "to: [ { methods: [GET, PURGE] } ]";
    assert!(matches(to, Peer::Unauthenticated, get("/")));
    assert!(matches(
        to,
        Peer::Unauthenticated,
        Request::http("PURGE", "/", 1)
    ));
    for m in ["get", "POST", "GETX", ""] {
        assert!(
            !matches(to, Peer::Unauthenticated, Request::http(m, "/", 1)),
            "{m:?}"
        );
    }
}

#[test]
fn exact_paths_match_exactly_without_the_query() {
    let to = "to: [ { paths: [/health] } ]";
    assert!(matches(to, Peer::Unauthenticated, get("/health")));
    assert!(matches(to, Peer::Unauthenticated, get("/health?full=1")));
    for p in ["/health/", "/healthz", "/", "/health/x", "/Health"] {
        assert!(!matches(to, Peer::Unauthenticated, get(p)), "{p}");
    }
}

#[test]
fn subtree_paths_match_below_the_slash_but_not_the_bare_segment() {
    let to = "to: [ { paths: [/x/*] } ]";
    for p in ["/x/", "/x/a", "/x/a/b", "/x/?q=1"] {
        assert!(matches(to, Peer::Unauthenticated, get(p)), "{p}");
    }
    for p in ["/x", "/xy", "/xy/a", "/", "/a/x/", "/x?y=/x/"] {
        assert!(!matches(to, Peer::Unauthenticated, get(p)), "{p}");
    }
    let root = "to: [ { paths: [/*] } ]";
    assert!(matches(root, Peer::Unauthenticated, get("/")));
    assert!(matches(root, Peer::Unauthenticated, get("/a/b")));
}

#[test]
fn a_star_path_matches_any_path() {
    let to = "to: [ { paths: ['*'] } ]";
    for p in ["/", "/x", "/x/y?z", "*"] {
        assert!(matches(to, Peer::Unauthenticated, get(p)), "{p}");
    }
}

#[test]
fn ports_are_the_app_port_asked_for() {
    let to = "to: [ { ports: [8080, 9090] } ]";
    assert!(matches(to, Peer::Unauthenticated, get("/")));
    assert!(matches(to, Peer::Unauthenticated, Request::tcp(9090)));
    assert!(!matches(to, Peer::Unauthenticated, Request::tcp(80)));
    assert!(!matches(
        to,
        Peer::Unauthenticated,
        Request::http("GET", "/", 8081)
    ));
}

#[test]
fn a_rule_needs_every_list_and_any_rule_will_do() {
    let to = "to: [ { methods: [POST], paths: [/orders/*], ports: [8080] }, { paths: [/health] } ]";
    let post = |path, port| Request::http("POST", path, port);
    assert!(matches(to, Peer::Unauthenticated, post("/orders/1", 8080)));
    assert!(!matches(to, Peer::Unauthenticated, get("/orders/1")));
    assert!(!matches(to, Peer::Unauthenticated, post("/carts/1", 8080)));
    assert!(!matches(to, Peer::Unauthenticated, post("/orders/1", 8081)));
    assert!(
        matches(to, Peer::Unauthenticated, post("/health", 1)),
        "the second rule"
    );
    let both = format!("from: [ '{ME}' ], to: [ {{ paths: [/a] }} ]");
    assert!(matches(&both, Peer::Authenticated(ME), get("/a")));
    assert!(!matches(&both, Peer::Unauthenticated, get("/a")));
    assert!(!matches(&both, Peer::Authenticated(ME), get("/b")));
}

#[test]
fn deny_overrides_allow() {
    let (p, _) = compile(&format!(
        "{{ name: everyone, target: s }}, \
         {{ name: no-admin, target: s, action: deny, to: [ {{ paths: [/admin/*] }} ] }}, \
         {{ name: me, target: s, from: [ '{ME}' ] }}"
    ));
    let d = p.evaluate(Peer::Authenticated(ME), &get("/admin/users"));
    assert!(!d.is_allowed());
    assert_eq!(d.policy(), Some("default/no-admin"));
    assert_eq!(
        d.check(),
        Err(AuthzError::DeniedByPolicy {
            policy: "default/no-admin".into()
        })
    );
    let d = p.evaluate(Peer::Authenticated(ME), &get("/reviews"));
    assert!(d.is_allowed());
    assert_eq!(d.check(), Ok(()));
    assert_eq!(
        d.policy(),
        Some("default/everyone"),
        "the first allow by name"
    );
}

#[test]
fn allow_policies_deny_what_none_allows() {
    let (p, _) = compile(&format!(
        "{{ name: me, target: s, from: [ '{ME}' ], to: [ {{ methods: [GET] }} ] }}"
    ));
    let d = p.evaluate(Peer::Authenticated(ME), &get("/"));
    assert!(d.is_allowed());
    assert_eq!(d.policy(), Some("default/me"));
    for (peer, req) in [
        (Peer::Unauthenticated, get("/")),
        (Peer::Authenticated(ME), Request::http("POST", "/", 8080)),
    ] {
        let d = p.evaluate(peer, &req);
        assert!(!d.is_allowed(), "{peer:?} {req:?}");
        assert_eq!(d.policy(), None);
        assert_eq!(d.check(), Err(AuthzError::NotAllowed));
    }
}

#[test]
fn deny_policies_alone_allow_the_rest() {
    let (p, _) =
        compile("{ name: no-plaintext, target: s, action: deny, from: [ unauthenticated ] }");
    assert!(!p.evaluate(Peer::Unauthenticated, &get("/")).is_allowed());
    let d = p.evaluate(Peer::Authenticated(ME), &get("/"));
    assert!(d.is_allowed());
    assert_eq!(d.policy(), None);
}

#[test]
fn no_policies_allow_everything_and_count_nothing() {
    let metrics = AuthzMetrics::default();
    let p = Policies::compile([], &metrics);
    assert!(p.is_empty());
    for req in [get("/"), Request::tcp(1)] {
        let d = p.decide(Peer::Unauthenticated, &req);
        assert!(d.is_allowed());
        assert_eq!(d.policy(), None);
        assert!(d.audit().is_none());
    }
    let mut reg = Registry::default();
    let metrics = AuthzMetrics::register(&mut reg);
    let _ = Policies::compile([], &metrics).decide(Peer::Unauthenticated, &get("/"));
    let mut text = String::new();
    encode(&mut text, &reg).expect("encodes");
    assert!(!text.contains("skiff_authz_decisions_total{"), "{text}");
}

#[test]
fn audit_policies_never_enforce_but_report() {
    let (p, _) = compile(&format!(
        "{{ name: would-deny, target: s, action: deny, mode: audit, to: [ {{ paths: [/admin/*] }} ] }}, \
         {{ name: would-allow-me, target: s, mode: audit, from: [ '{ME}' ] }}"
    ));
    assert!(!p.is_empty());
    let d = p.evaluate(Peer::Unauthenticated, &get("/admin/x"));
    assert!(d.is_allowed(), "audit never refuses");
    assert_eq!(d.policy(), None);
    let audit = d.audit().expect("an audit verdict");
    assert!(!audit.is_allowed());
    assert_eq!(audit.policy(), Some("default/would-deny"));
    assert_eq!(audit.as_str(), "deny");

    let audit = p
        .evaluate(Peer::Unauthenticated, &get("/"))
        .audit()
        .expect("an audit verdict");
    assert!(!audit.is_allowed(), "audit allow-only denies the rest");
    assert_eq!(audit.policy(), None);

    let audit = p
        .evaluate(Peer::Authenticated(ME), &get("/"))
        .audit()
        .expect("an audit verdict");
    assert!(audit.is_allowed());
    assert_eq!(audit.policy(), Some("default/would-allow-me"));
}

#[test]
fn audit_policies_do_not_count_as_allow_policies_for_enforcement() {
    let (p, _) = compile(&format!(
        "{{ name: audit-allow, target: s, mode: audit, from: [ '{ME}' ] }}, \
         {{ name: deny-admin, target: s, action: deny, to: [ {{ paths: [/admin] }} ] }}"
    ));
    let d = p.evaluate(Peer::Unauthenticated, &get("/"));
    assert!(
        d.is_allowed(),
        "no enforced allow policy: the rest is allowed"
    );
    assert!(d.audit().is_some_and(|a| !a.is_allowed()));
    let d = p.evaluate(Peer::Authenticated(ME), &get("/admin"));
    assert!(
        !d.is_allowed(),
        "an audit allow does not lift an enforced deny"
    );
    assert!(d.audit().is_some_and(|a| a.is_allowed()));
}

#[test]
fn tcp_fails_closed_for_deny_policies_with_http_conditions() {
    let deny = |fields: &str| format!("{{ name: d, target: s, action: deny, {fields} }}");
    let (p, _) = compile(&deny("to: [ { methods: [POST], paths: [/admin/*] } ]"));
    assert!(
        !p.evaluate(Peer::Authenticated(ME), &Request::tcp(5432))
            .is_allowed()
    );
    assert!(p.evaluate(Peer::Authenticated(ME), &get("/")).is_allowed());

    // Ports and peers still apply to the connection.
    let (p, _) = compile(&deny("to: [ { paths: [/admin/*], ports: [8080] } ]"));
    assert!(
        !p.evaluate(Peer::Authenticated(ME), &Request::tcp(8080))
            .is_allowed()
    );
    assert!(
        p.evaluate(Peer::Authenticated(ME), &Request::tcp(5432))
            .is_allowed()
    );
    let (p, _) = compile(&deny(
        "from: [ unauthenticated ], to: [ { methods: [GET] } ]",
    ));
    assert!(
        !p.evaluate(Peer::Unauthenticated, &Request::tcp(1))
            .is_allowed()
    );
    assert!(
        p.evaluate(Peer::Authenticated(ME), &Request::tcp(1))
            .is_allowed()
    );
}

#[test]
fn tcp_is_not_allowed_by_allow_policies_with_http_conditions() {
    let (p, _) = compile(&format!(
        "{{ name: reads, target: s, from: [ '{ME}' ], to: [ {{ methods: [GET] }}, {{ paths: ['*'] }} ] }}"
    ));
    let d = p.evaluate(Peer::Authenticated(ME), &Request::tcp(8080));
    assert!(!d.is_allowed());
    assert_eq!(d.check(), Err(AuthzError::NotAllowed));

    let (p, _) = compile(&format!(
        "{{ name: db, target: s, from: [ '{ME}' ], to: [ {{ ports: [5432] }} ] }}"
    ));
    assert!(
        p.evaluate(Peer::Authenticated(ME), &Request::tcp(5432))
            .is_allowed()
    );
    assert!(
        !p.evaluate(Peer::Authenticated(ME), &Request::tcp(5433))
            .is_allowed()
    );
    assert!(
        !p.evaluate(Peer::Unauthenticated, &Request::tcp(5432))
            .is_allowed()
    );
}

#[test]
fn decisions_are_counted_by_policy_and_result() {
    let (p, m) = compile(&format!(
        "{{ name: me, target: s, from: [ '{ME}' ] }}, \
         {{ name: no-plain, target: s, action: deny, from: [ unauthenticated ], to: [ {{ paths: [/admin] }} ] }}, \
         {{ name: watch, target: s, action: deny, mode: audit, to: [ {{ methods: [DELETE] }} ] }}"
    ));
    let other = Peer::Authenticated("spiffe://cluster.local/ns/x/sa/y");
    p.decide(Peer::Authenticated(ME), &get("/"));
    p.decide(Peer::Authenticated(ME), &get("/"));
    p.decide(Peer::Unauthenticated, &get("/admin"));
    p.decide(other, &get("/"));
    p.decide(Peer::Authenticated(ME), &Request::http("DELETE", "/", 1));
    p.evaluate(other, &get("/"));

    assert_eq!(count(&m, "default/me", "allow"), 3);
    assert_eq!(count(&m, "default/no-plain", "deny"), 1);
    assert_eq!(count(&m, NO_POLICY, "deny"), 1, "no allow policy matched");
    assert_eq!(count(&m, NO_POLICY, "allow"), 0);
    assert_eq!(count(&m, "default/watch", "audit-deny"), 1);
    assert_eq!(count(&m, NO_POLICY, "audit-allow"), 4);
    assert_eq!(count(&m, NO_POLICY, "audit-deny"), 0);
}

#[test]
fn the_family_is_registered_under_its_name_and_survives_recompiles() {
    let mut reg = Registry::default();
    let m = AuthzMetrics::register(&mut reg);
    let policies = mesh("{ name: p, target: s, action: deny }");
    Policies::compile(&policies.authorization, &m).decide(Peer::Unauthenticated, &get("/"));
    Policies::compile(&policies.authorization, &m.clone())
        .decide(Peer::Unauthenticated, &Request::tcp(1));
    let mut text = String::new();
    encode(&mut text, &reg).expect("encodes");
    assert!(
        text.contains(r#"skiff_authz_decisions_total{policy="default/p",result="deny"} 2"#),
        "{text}"
    );
}

#[test]
fn policies_are_tried_in_name_order() {
    let yaml = "{ name: b, target: s, action: deny }, { name: a, target: s, action: deny }";
    let (p, _) = compile(yaml);
    assert_eq!(
        p.evaluate(Peer::Unauthenticated, &get("/")).policy(),
        Some("default/a")
    );
    assert_eq!(p.names().collect::<Vec<_>>(), ["default/a", "default/b"]);
}

#[test]
fn policies_apply_to_the_endpoint_workloads_of_their_target() {
    let mesh = skiff_api::load(
        "services:\n\
         \x20 - { name: s, endpoints: [ { workload: w }, { workload: v, namespace: other } ] }\n\
         \x20 - { name: s, namespace: other, endpoints: [ { workload: w } ] }\n\
         \x20 - { name: t, endpoints: [ { address: 127.0.0.1:9 } ] }\n\
         workloads:\n\
         \x20 - { name: w, inbound: { listen: 127.0.0.1:1, app: 127.0.0.1:2 } }\n\
         \x20 - { name: v, namespace: other, inbound: { listen: 127.0.0.1:3, app: 127.0.0.1:4 } }\n\
         \x20 - { name: w, namespace: other, inbound: { listen: 127.0.0.1:5, app: 127.0.0.1:6 } }\n\
         authorization:\n\
         \x20 - { name: on-s, target: s }\n\
         \x20 - { name: on-other-s, namespace: other, target: s }\n\
         \x20 - { name: on-t, target: t }\n",
    )
    .unwrap_or_else(|e| panic!("test mesh refused: {e}"));
    let names = |ns, w| {
        applying_to(&mesh, ns, w)
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect::<Vec<_>>()
    };
    assert_eq!(names("default", "w"), ["default/on-s"]);
    assert_eq!(names("other", "v"), ["default/on-s"]);
    assert_eq!(names("other", "w"), ["other/on-other-s"]);
    assert!(names("default", "v").is_empty());
    assert!(names("default", "nobody").is_empty());
}
