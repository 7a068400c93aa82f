//! The feed: lists, relists, readiness and refusals, as the watchers report them folded into
//! the state.

use skiff_api::model::MeshFile;

use super::{addrs, config_map, ready, reviews, slice, slice_port, svc};
use crate::source::kube::{
    ClusterSettings, Event, KubeError, Object, ObjectKey, ObjectKind,
    feed::{Change, Feed, KINDS},
};

fn list(feed: &mut Feed, kind: ObjectKind, objects: Vec<Object>) -> Result<(), KubeError> {
    feed.handle(Change::List(kind))?;
    for o in objects {
        feed.handle(Change::Listed(o))?;
    }
    feed.handle(Change::ListDone(kind))
}

fn of_kind(objects: &[Object], kind: ObjectKind) -> Vec<Object> {
    objects
        .iter()
        .filter(|o| o.kind() == kind)
        .cloned()
        .collect()
}

fn synced_feed() -> Feed {
    let mut feed = Feed::new(ClusterSettings::default());
    let all = reviews();
    for kind in KINDS {
        assert!(!feed.synced(), "not synced before {kind} is listed");
        list(&mut feed, kind, of_kind(&all, kind)).expect("lists");
    }
    assert!(feed.synced());
    feed
}

#[test]
fn synced_once_every_kind_is_listed_and_impact_is_taken_once() {
    let mut feed = synced_feed();
    let impact = feed.take_impact();
    assert!(impact.everything, "the first lists touch everything");
    assert!(feed.take_impact().is_empty(), "taken");
    let mesh = feed.state().mesh().expect("builds");
    assert_eq!(
        addrs(&svc(&mesh, "reviews").endpoints),
        ["10.1.0.1:9080", "10.1.0.2:9080"]
    );
}

#[test]
fn a_relist_deletes_what_it_does_not_name_and_touches_only_those_endpoints() {
    let mut feed = synced_feed();
    feed.take_impact();
    // The EndpointSlice watcher restarts; the slice now lists only the legacy pod.
    let slice = slice(
        "default",
        "reviews-abc12",
        "reviews",
        "IPv4",
        &[ready("10.1.0.2", "legacy-1")],
        slice_port("http", 9080),
    );
    list(&mut feed, ObjectKind::EndpointSlice, vec![slice]).expect("relist");
    let impact = feed.take_impact();
    assert!(!impact.everything);
    assert_eq!(
        impact.endpoints.into_iter().collect::<Vec<_>>(),
        [ObjectKey::new("default", "reviews")]
    );
    let mesh = feed.state().mesh().expect("builds");
    assert_eq!(addrs(&svc(&mesh, "reviews").endpoints), ["10.1.0.2:9080"]);

    // A relist with nothing: the slice is gone.
    list(&mut feed, ObjectKind::EndpointSlice, Vec::new()).expect("relist");
    assert!(
        svc(&feed.state().mesh().expect("builds"), "reviews")
            .endpoints
            .is_empty()
    );
    // A pod relist without the meshed pod drops its workload.
    list(&mut feed, ObjectKind::Pod, Vec::new()).expect("relist");
    assert!(
        feed.take_impact()
            .workloads
            .contains(&ObjectKey::new("default", "reviews"))
    );
}

#[test]
fn live_events_between_lists() {
    let mut feed = synced_feed();
    feed.take_impact();
    feed.handle(Change::Watched(Event::Deleted(
        ObjectKind::Service,
        ObjectKey::new("default", "reviews"),
    )))
    .expect("delete");
    assert!(feed.take_impact().everything);
    assert!(feed.state().mesh().expect("builds").services.is_empty());
}

#[test]
fn a_refused_config_map_is_remembered_until_a_good_one_or_its_deletion() {
    let mut feed = synced_feed();
    let bad = config_map("services: fifty\n");
    assert!(feed.handle(Change::Watched(Event::Applied(bad))).is_err());
    let why = feed.refusal().expect("refused").to_owned();
    assert!(why.contains("skiff-system/skiff-mesh"), "{why}");
    // Other changes keep the refusal.
    feed.handle(Change::Watched(Event::Deleted(
        ObjectKind::Pod,
        ObjectKey::new("default", "legacy-1"),
    )))
    .expect("pod");
    assert!(feed.refusal().is_some());
    let good = config_map("mesh: { trustDomain: example.org }\n");
    feed.handle(Change::Watched(Event::Applied(good)))
        .expect("good");
    assert_eq!(feed.refusal(), None);
    assert_eq!(feed.state().config().mesh.trust_domain, "example.org");

    let bad = config_map("services: fifty\n");
    assert!(feed.handle(Change::Watched(Event::Applied(bad))).is_err());
    feed.handle(Change::Watched(Event::Deleted(
        ObjectKind::ConfigMap,
        ObjectKey::new("skiff-system", "skiff-mesh"),
    )))
    .expect("delete");
    assert_eq!(feed.refusal(), None, "no ConfigMap, nothing refused");
    // A relist that still has the config map keeps it.
    let good = config_map("mesh: { trustDomain: example.org }\n");
    list(&mut feed, ObjectKind::ConfigMap, vec![good]).expect("list");
    assert_eq!(feed.state().keys(ObjectKind::ConfigMap).len(), 1);
    list(&mut feed, ObjectKind::ConfigMap, Vec::new()).expect("list");
    assert!(feed.state().keys(ObjectKind::ConfigMap).is_empty());
    assert_eq!(
        feed.state().config().mesh.trust_domain,
        MeshFile::default().mesh.trust_domain
    );
}
