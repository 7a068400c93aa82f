//! The discovery state machine, driven by hand-made responses and a port that records what
//! it was asked: no control plane, no socket.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use skiff_api::{
    model::MeshFile,
    pb,
    resource::{self, CATCH_ALL_ALIAS, Kind, Resources},
    validate,
};

use super::*;

/// Records installs and answers; compiles nothing (`refuse` makes a service fail).
#[derive(Default)]
struct FakePort {
    installs: Vec<(Vec<String>, String)>,
    refused: Vec<String>,
    answers: Vec<(String, Answer)>,
    pending: Vec<String>,
    forgotten: Vec<String>,
    usage: Vec<(String, bool)>,
    own: Option<SocketAddr>,
    /// Services whose compile fails (not for want of a backend).
    refuse: Vec<String>,
    /// Endpoint sets replaced in place.
    updates: Vec<(Vec<String>, String)>,
}

impl Port for FakePort {
    fn install(
        &mut self,
        mesh: &MeshFile,
        version: String,
    ) -> Result<Vec<(String, SnapshotError)>, SnapshotError> {
        let names: Vec<String> = mesh
            .services
            .iter()
            .map(|s| resource::resource_name(&s.namespace, &s.name))
            .collect();
        let skipped = names
            .iter()
            .filter(|n| self.refuse.contains(n))
            .map(|n| {
                (
                    n.clone(),
                    SnapshotError::EmptyEndpoint {
                        path: format!("{n}.endpoints[0]"),
                    },
                )
            })
            .collect();
        self.installs.push((names, version));
        Ok(skipped)
    }

    fn update_endpoints(
        &mut self,
        _mesh: &MeshFile,
        changed: &[String],
        version: String,
    ) -> Result<bool, SnapshotError> {
        let installed = self.installs.last().map(|(names, _)| names.clone());
        if !installed.is_some_and(|names| changed.iter().all(|c| names.contains(c))) {
            return Ok(false);
        }
        self.updates.push((changed.to_vec(), version));
        Ok(true)
    }

    fn own_listener(&self, addr: SocketAddr) -> Option<&'static str> {
        (Some(addr) == self.own).then_some("outbound")
    }

    fn refused(&mut self, message: &str) {
        self.refused.push(message.to_owned());
    }

    fn take_usage(&mut self) -> Vec<(String, bool)> {
        self.usage.clone()
    }

    fn pending_lookups(&self) -> Vec<String> {
        self.pending.clone()
    }

    fn answer(&mut self, alias: &str, answer: Answer) {
        self.answers.push((alias.to_owned(), answer));
    }

    fn forget(&mut self, aliases: &[String]) {
        self.forgotten.extend(aliases.iter().cloned());
    }

    fn sweep_missing(&mut self) -> Vec<String> {
        Vec::new()
    }

    fn lookups_settled(&mut self) {}
}

const MESH: &str = r#"
services:
  - name: web
    hosts: ["*"]
    endpoints: [ { address: 127.0.0.1:9001 } ]
  - name: reviews
    endpoints: [ { address: 127.0.0.1:9002 } ]
    routes:
      - name: split
        backendRefs: [ { service: ratings } ]
  - name: ratings
    endpoints: [ { address: 127.0.0.1:9003 } ]
workloads:
  - name: client
    inbound: { listen: 127.0.0.1:7000, app: 127.0.0.1:7001 }
"#;

fn resources() -> Resources {
    resource::compile(&validate::load(MESH).expect("the test mesh is valid"))
}

fn machine() -> Machine {
    Machine::new("client", "default", Duration::from_secs(60))
}

/// A response of `kind` carrying `names` (with the aliases the control plane resolved).
fn response(
    res: &Resources,
    kind: Kind,
    names: &[(&str, &[&str])],
    nonce: &str,
) -> pb::DiscoveryResponse {
    pb::DiscoveryResponse {
        type_url: kind.type_url().to_owned(),
        system_version_info: format!("v-{nonce}"),
        nonce: nonce.to_owned(),
        resources: names
            .iter()
            .map(|(name, aliases)| {
                let mut r = res.get(kind, name).expect("in the test mesh").clone();
                r.aliases = aliases.iter().map(|a| (*a).to_owned()).collect();
                r
            })
            .collect(),
        ..Default::default()
    }
}

/// Every type answered once: the workload, settings, no policies, and the catch-all `web`.
fn first_answers(m: &mut Machine, port: &mut FakePort, res: &Resources) {
    m.open();
    let none: &[&str] = &[];
    m.on_response(
        response(res, Kind::Workload, &[("default/client", none)], "w1"),
        port,
    );
    m.on_response(
        response(
            res,
            Kind::MeshSettings,
            &[(resource::MESH_SETTINGS_NAME, none)],
            "m1",
        ),
        port,
    );
    m.on_response(response(res, Kind::Authorization, &[], "a1"), port);
    m.on_response(
        response(
            res,
            Kind::Service,
            &[("default/web", &[CATCH_ALL_ALIAS])],
            "s1",
        ),
        port,
    );
    m.on_response(
        response(res, Kind::Endpoints, &[("default/web", none)], "e1"),
        port,
    );
}

/// A machine that has had every type's first answer, its port, and the resources used.
fn synced() -> (Resources, Machine, FakePort) {
    let res = resources();
    let mut m = machine();
    let mut port = FakePort::default();
    first_answers(&mut m, &mut port, &res);
    (res, m, port)
}

fn acks(out: &[pb::DiscoveryRequest]) -> Vec<(&str, bool)> {
    out.iter()
        .filter(|r| !r.response_nonce.is_empty())
        .map(|r| (r.response_nonce.as_str(), r.error_detail.is_some()))
        .collect()
}

fn subscribes(out: &[pb::DiscoveryRequest], kind: Kind) -> Vec<String> {
    out.iter()
        .filter(|r| r.type_url == kind.type_url())
        .flat_map(|r| r.resource_names_subscribe.clone())
        .collect()
}

#[test]
fn a_stream_opens_with_every_type_and_the_node_once() {
    let mut m = machine();
    let reqs = m.open();
    assert_eq!(reqs.len(), Kind::ALL.len());
    assert_eq!(reqs.iter().filter(|r| r.node.is_some()).count(), 1);
    assert_eq!(reqs[0].node.as_ref().unwrap().workload, "client");
    assert_eq!(subscribes(&reqs, Kind::Service), vec![CATCH_ALL_ALIAS]);
    assert_eq!(subscribes(&reqs, Kind::Workload), vec!["default/client"]);
    assert!(subscribes(&reqs, Kind::Endpoints).is_empty());
}

#[test]
fn nothing_is_installed_until_every_type_answered_then_it_is_whole() {
    let res = resources();
    let mut m = machine();
    let mut port = FakePort::default();
    m.open();
    let none: &[&str] = &[];
    let out = m.on_response(
        response(
            &res,
            Kind::Service,
            &[("default/web", &[CATCH_ALL_ALIAS])],
            "s1",
        ),
        &mut port,
    );
    assert_eq!(acks(&out), vec![("s1", false)]);
    assert_eq!(
        subscribes(&out, Kind::Endpoints),
        vec!["default/web"],
        "a service's endpoints are subscribed as soon as it arrives"
    );
    m.on_response(
        response(&res, Kind::Endpoints, &[("default/web", none)], "e1"),
        &mut port,
    );
    m.on_response(
        response(&res, Kind::Workload, &[("default/client", none)], "w1"),
        &mut port,
    );
    m.on_response(response(&res, Kind::Authorization, &[], "a1"), &mut port);
    assert!(port.installs.is_empty(), "a type has not answered yet");
    m.on_response(
        response(
            &res,
            Kind::MeshSettings,
            &[(resource::MESH_SETTINGS_NAME, none)],
            "m1",
        ),
        &mut port,
    );
    assert_eq!(port.installs.len(), 1);
    assert_eq!(port.installs[0].0, vec!["default/web"]);
    assert!(
        port.installs[0].1.starts_with("1:"),
        "{}",
        port.installs[0].1
    );
}

#[test]
fn a_service_waits_for_its_endpoints_and_its_backends_are_subscribed() {
    let (res, mut m, mut port) = synced();
    let out = m.on_wanted(vec!["host:reviews".into()]);
    assert_eq!(subscribes(&out, Kind::Service), vec!["host:reviews"]);
    assert!(
        m.on_wanted(vec!["host:reviews".into()]).is_empty(),
        "subscribed once"
    );
    port.pending = vec!["host:reviews".into()];
    let out = m.on_response(
        response(
            &res,
            Kind::Service,
            &[("default/reviews", &["host:reviews"])],
            "s2",
        ),
        &mut port,
    );
    // By name too: what the alias resolved to, and what its routes send to.
    assert_eq!(
        subscribes(&out, Kind::Service),
        vec!["default/ratings", "default/reviews"]
    );
    let mut eps = subscribes(&out, Kind::Endpoints);
    eps.sort();
    assert_eq!(eps, vec!["default/ratings", "default/reviews"]);
    assert!(
        !port
            .installs
            .last()
            .unwrap()
            .0
            .contains(&"default/reviews".to_owned()),
        "not compiled before its endpoints are answered"
    );
    assert!(port.answers.is_empty(), "not found before it is complete");
    let none: &[&str] = &[];
    m.on_response(
        response(&res, Kind::Endpoints, &[("default/reviews", none)], "e2"),
        &mut port,
    );
    m.on_response(
        response(&res, Kind::Service, &[("default/ratings", none)], "s3"),
        &mut port,
    );
    assert!(
        port.answers.is_empty(),
        "its backend's endpoints are missing"
    );
    m.on_response(
        response(&res, Kind::Endpoints, &[("default/ratings", none)], "e3"),
        &mut port,
    );
    assert_eq!(
        port.answers,
        vec![("host:reviews".to_owned(), Answer::Found)]
    );
    let last = &port.installs.last().unwrap().0;
    assert!(
        last.contains(&"default/reviews".to_owned())
            && last.contains(&"default/ratings".to_owned())
    );
}

#[test]
fn a_bad_resource_is_nacked_and_the_rest_applies() {
    let (res, mut m, mut port) = synced();
    port.own = Some("127.0.0.1:9002".parse().unwrap());
    m.on_wanted(vec!["host:reviews".into()]);
    port.pending = vec!["host:reviews".into()];
    m.on_response(
        response(
            &res,
            Kind::Service,
            &[("default/reviews", &["host:reviews"])],
            "s2",
        ),
        &mut port,
    );
    let none: &[&str] = &[];
    let out = m.on_response(
        response(
            &res,
            Kind::Endpoints,
            &[("default/reviews", none), ("default/ratings", none)],
            "e2",
        ),
        &mut port,
    );
    assert_eq!(acks(&out), vec![("e2", true)]);
    let nack = out[0].error_detail.as_ref().unwrap();
    assert!(
        nack.message
            .contains("endpoints[0].address: 127.0.0.1:9002 is this proxy's own outbound listener"),
        "{}",
        nack.message
    );
    assert_eq!(port.refused.len(), 1);
    let status = m.status("http://cp");
    assert_eq!(
        status.last_nack.as_ref().unwrap().kind,
        Kind::Endpoints.message_name()
    );
    assert_eq!(
        status.held[Kind::Endpoints.message_name()],
        vec!["default/ratings", "default/web"],
        "the good resource of the same response is held"
    );
    // A request waiting on reviews learns it was refused, and why (not `found`).
    match port.answers.as_slice() {
        [(alias, Answer::Refused(why))] => {
            assert_eq!(alias, "host:reviews");
            assert!(why.contains("own outbound listener"), "{why}");
        }
        other => panic!("answers: {other:?}"),
    }
}

#[test]
fn a_service_that_does_not_compile_is_refused_and_named() {
    let (res, mut m, mut port) = synced();
    port.refuse = vec!["default/reviews".into()];
    m.on_wanted(vec!["host:reviews".into()]);
    port.pending = vec!["host:reviews".into()];
    let none: &[&str] = &[];
    m.on_response(
        response(&res, Kind::Endpoints, &[("default/reviews", none)], "e2"),
        &mut port,
    );
    let out = m.on_response(
        response(
            &res,
            Kind::Service,
            &[("default/reviews", &["host:reviews"])],
            "s2",
        ),
        &mut port,
    );
    assert_eq!(acks(&out), vec![("s2", true)]);
    assert!(
        out[0]
            .error_detail
            .as_ref()
            .unwrap()
            .message
            .starts_with("Service default/reviews:")
    );
    let status = m.status("http://cp");
    assert!(
        !status.held[Kind::Service.message_name()].contains(&"default/reviews".to_owned()),
        "a refused service with no good version is not held"
    );
    assert_eq!(
        port.answers.last(),
        Some(&(
            "host:reviews".to_owned(),
            Answer::Refused(
                "default/reviews.endpoints[0]: an endpoint needs a workload or an address".into()
            )
        )),
        "{:?}",
        port.answers
    );
}

#[test]
fn a_reconnect_resends_subscriptions_and_versions() {
    let (res, mut m, mut port) = synced();
    m.closed();
    assert!(!m.status("http://cp").connected);
    let reqs = m.open();
    let svc = reqs
        .iter()
        .find(|r| r.type_url == Kind::Service.type_url())
        .unwrap();
    let versions: BTreeMap<_, _> = svc.initial_resource_versions.clone().into_iter().collect();
    assert_eq!(
        versions.get("default/web").map(String::as_str),
        Some(res.services["default/web"].version())
    );
    assert_eq!(subscribes(&reqs, Kind::Endpoints), vec!["default/web"]);
    // Every type answers again before anything is compiled on the new stream.
    let before = port.installs.len();
    let none: &[&str] = &[];
    m.on_response(
        response(&res, Kind::Endpoints, &[("default/web", none)], "e9"),
        &mut port,
    );
    assert_eq!(port.installs.len(), before);
}

#[test]
fn an_unused_service_is_unsubscribed_after_the_idle_sweeps() {
    let (res, mut m, mut port) = synced();
    m.on_wanted(vec!["host:ratings".into()]);
    let none: &[&str] = &[];
    m.on_response(
        response(
            &res,
            Kind::Service,
            &[("default/ratings", &["host:ratings"])],
            "s2",
        ),
        &mut port,
    );
    m.on_response(
        response(&res, Kind::Endpoints, &[("default/ratings", none)], "e2"),
        &mut port,
    );
    port.usage = vec![
        ("default/web".into(), true),
        ("default/ratings".into(), false),
    ];
    for _ in 1..IDLE_SWEEPS {
        assert!(m.on_sweep(&mut port).is_empty());
    }
    let out = m.on_sweep(&mut port);
    let unsub: Vec<String> = out
        .iter()
        .flat_map(|r| r.resource_names_unsubscribe.clone())
        .collect();
    assert!(unsub.contains(&"host:ratings".to_owned()), "{unsub:?}");
    assert!(unsub.contains(&"default/ratings".to_owned()), "{unsub:?}");
    assert!(
        !unsub
            .iter()
            .any(|n| n.contains("web") || n == CATCH_ALL_ALIAS)
    );
    assert_eq!(port.forgotten, vec!["host:ratings"]);
    assert_eq!(port.installs.last().unwrap().0, vec!["default/web"]);
}

#[test]
fn pod_churn_replaces_endpoints_in_place_and_a_new_service_compiles_the_mesh() {
    let (res, mut m, mut port) = synced();
    let installs = port.installs.len();
    let none: &[&str] = &[];
    let out = m.on_response(
        response(&res, Kind::Endpoints, &[("default/web", none)], "e2"),
        &mut port,
    );
    assert_eq!(acks(&out), vec![("e2", false)]);
    assert_eq!(port.installs.len(), installs, "nothing compiled");
    assert_eq!(port.updates.len(), 1);
    assert_eq!(port.updates[0].0, vec!["default/web"]);
    let generation = |v: &str| v.split(':').next().unwrap().parse::<u64>().unwrap();
    assert_eq!(
        generation(&port.updates[0].1),
        generation(&port.installs[installs - 1].1) + 1,
        "the installed version moves on"
    );
    // Endpoints of a service not installed yet: the whole mesh is compiled.
    m.on_wanted(vec!["host:ratings".into()]);
    m.on_response(
        response(
            &res,
            Kind::Service,
            &[("default/ratings", &["host:ratings"])],
            "s2",
        ),
        &mut port,
    );
    let installs = port.installs.len();
    m.on_response(
        response(&res, Kind::Endpoints, &[("default/ratings", none)], "e3"),
        &mut port,
    );
    assert_eq!(port.installs.len(), installs + 1);
    assert!(
        port.installs
            .last()
            .unwrap()
            .0
            .contains(&"default/ratings".to_owned())
    );
    assert_eq!(port.updates.len(), 1);
}

#[test]
fn ready_waits_for_the_catch_all_service_and_its_endpoints() {
    let res = resources();
    let mut m = machine();
    let mut port = FakePort::default();
    m.open();
    let none: &[&str] = &[];
    m.on_response(
        response(&res, Kind::Workload, &[("default/client", none)], "w1"),
        &mut port,
    );
    m.on_response(
        response(
            &res,
            Kind::MeshSettings,
            &[(resource::MESH_SETTINGS_NAME, none)],
            "m1",
        ),
        &mut port,
    );
    m.on_response(response(&res, Kind::Authorization, &[], "a1"), &mut port);
    // The first Endpoints answer is for the empty start subscription.
    m.on_response(response(&res, Kind::Endpoints, &[], "e0"), &mut port);
    m.on_response(
        response(
            &res,
            Kind::Service,
            &[("default/web", &[CATCH_ALL_ALIAS])],
            "s1",
        ),
        &mut port,
    );
    assert_eq!(port.installs.len(), 1, "every type answered: installed");
    assert!(
        !m.ready(),
        "the catch-all service's endpoints are not in yet"
    );
    m.on_response(
        response(&res, Kind::Endpoints, &[("default/web", none)], "e1"),
        &mut port,
    );
    assert!(m.ready());

    // No service claims the catch-all: ready once every type answered.
    let mut m = machine();
    let mut port = FakePort::default();
    m.open();
    for (kind, nonce) in [
        (Kind::Workload, "w1"),
        (Kind::MeshSettings, "m1"),
        (Kind::Authorization, "a1"),
        (Kind::Endpoints, "e1"),
    ] {
        m.on_response(response(&res, kind, &[], nonce), &mut port);
        assert!(!m.ready(), "{kind} is not the last type");
    }
    let mut missing = response(&res, Kind::Service, &[], "s1");
    missing.removed_resources = vec![CATCH_ALL_ALIAS.to_owned()];
    m.on_response(missing, &mut port);
    assert!(m.ready());
}
