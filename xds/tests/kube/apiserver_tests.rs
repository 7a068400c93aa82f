//! The fake API server against the real kube-rs client: list/watch with resume and relist,
//! pagination, selectors, patches, TokenReview and error bodies. Every wait is on an event or
//! on `wait_for_watches`, under one deadline.

use std::{future::Future, pin::Pin, time::Duration};

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    authentication::v1::{TokenReview, TokenReviewSpec},
    core::v1::{ConfigMap, Service},
};
use kube::{
    Api, Client,
    api::{
        ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
        WatchParams,
    },
    runtime::watcher::{self, Event},
};
use serde_json::{Value, json};

use crate::apiserver::{FakeApiServer, TokenUser};

const DEADLINE: Duration = Duration::from_secs(10);

type Events = Pin<Box<dyn Stream<Item = Result<Event<DynamicObject>, watcher::Error>> + Send>>;

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn services(client: Client) -> Api<DynamicObject> {
    Api::all_with(client, &ApiResource::erase::<Service>(&()))
}

fn watch(api: Api<DynamicObject>, config: watcher::Config) -> Events {
    Box::pin(watcher::watcher(api, config))
}

async fn next(events: &mut Events) -> Event<DynamicObject> {
    match within("a watcher event", events.next()).await {
        Some(Ok(event)) => event,
        other => panic!("expected a watcher event, got {other:?}"),
    }
}

/// Reads Init, InitApply.., InitDone and returns the names listed, in order.
async fn initial_list(events: &mut Events) -> Vec<String> {
    assert!(matches!(next(events).await, Event::Init), "Init first");
    let mut names = Vec::new();
    loop {
        match next(events).await {
            Event::InitApply(object) => names.push(name(&object)),
            Event::InitDone => return names,
            other => panic!("unexpected event during the initial list: {other:?}"),
        }
    }
}

fn name(object: &DynamicObject) -> String {
    object.metadata.name.clone().unwrap_or_default()
}

fn rv(object: &DynamicObject) -> u64 {
    object
        .metadata
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .expect("a numeric resourceVersion")
}

fn applied(event: Event<DynamicObject>) -> DynamicObject {
    match event {
        Event::Apply(object) => object,
        other => panic!("expected Apply, got {other:?}"),
    }
}

fn deleted(event: Event<DynamicObject>) -> DynamicObject {
    match event {
        Event::Delete(object) => object,
        other => panic!("expected Delete, got {other:?}"),
    }
}

fn service(namespace: &str, name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": namespace, "labels": { "app": app } },
        "spec": { "ports": [{ "name": "http", "port": 80 }] },
    })
}

fn config_map(namespace: &str, name: &str, data: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "namespace": namespace },
        "data": { "mesh.yaml": data },
    })
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String, String) {
    match result {
        Err(kube::Error::Api(status)) => {
            (status.code, status.reason.clone(), status.message.clone())
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_lists_then_follows_live_changes() {
    let server = FakeApiServer::start().await;
    server.apply(service("default", "reviews", "reviews"));
    server.apply(service("shop", "cart", "cart"));
    let mut events = watch(services(server.client()), watcher::Config::default());

    assert_eq!(initial_list(&mut events).await, ["reviews", "cart"]);
    let listed = server.get("Service", "default", "reviews").expect("stored");
    assert!(
        listed["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );
    assert!(
        listed["metadata"]["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    // live: the watch is open before the write
    let (event, ()) = tokio::join!(next(&mut events), async {
        within("the watch", server.wait_for_watches("Service", 1)).await;
        server.apply(service("default", "ratings", "ratings"));
    });
    let added = applied(event);
    assert_eq!(name(&added), "ratings");

    server.apply(service("default", "ratings", "ratings-v2"));
    let modified = applied(next(&mut events).await);
    assert_eq!(
        modified.metadata.labels.as_ref().unwrap()["app"],
        "ratings-v2"
    );
    assert!(
        rv(&modified) > rv(&added),
        "a write moves the resourceVersion on"
    );
    assert_eq!(
        modified.metadata.uid, added.metadata.uid,
        "replace keeps the uid"
    );

    server.delete("Service", "default", "ratings");
    let gone = deleted(next(&mut events).await);
    assert_eq!(name(&gone), "ratings");
    assert!(rv(&gone) > rv(&modified));
    assert!(server.get("Service", "default", "ratings").is_none());
    assert_eq!(server.list_count("Service"), 1);
}

#[tokio::test]
async fn broken_watch_resumes_without_relist() {
    let server = FakeApiServer::start().await;
    server.apply(service("default", "reviews", "reviews"));
    let mut events = watch(services(server.client()), watcher::Config::default());
    assert_eq!(initial_list(&mut events).await, ["reviews"]);

    server.apply(service("default", "ratings", "ratings"));
    assert_eq!(name(&applied(next(&mut events).await)), "ratings");
    assert_eq!(server.watch_count("Service"), 1);

    // the watch ends cleanly; the change made meanwhile is replayed from the history
    server.break_watches();
    assert_eq!(server.watch_count("Service"), 0);
    server.apply(service("default", "details", "details"));
    assert_eq!(name(&applied(next(&mut events).await)), "details");
    within("the new watch", server.wait_for_watches("Service", 1)).await;
    assert_eq!(server.list_count("Service"), 1, "resumed, not relisted");

    // and the new watch is live
    let (event, ()) = tokio::join!(next(&mut events), async {
        server.delete("Service", "default", "reviews");
    });
    assert_eq!(name(&deleted(event)), "reviews");
}

#[tokio::test]
async fn expired_history_forces_a_relist() {
    let server = FakeApiServer::start().await;
    server.apply(service("default", "reviews", "reviews"));
    server.apply(service("default", "ratings", "ratings"));
    let mut events = watch(services(server.client()), watcher::Config::default());
    assert_eq!(initial_list(&mut events).await, ["ratings", "reviews"]);
    server.apply(service("default", "details", "details"));
    assert_eq!(name(&applied(next(&mut events).await)), "details");

    // deleted while no watch is open, then the history is gone
    server.break_watches();
    server.delete("Service", "default", "reviews");
    server.expire_history();

    match within("the 410", events.next()).await {
        Some(Err(watcher::Error::WatchError(status))) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 watch error, got {other:?}"),
    }
    assert_eq!(initial_list(&mut events).await, ["details", "ratings"]);
    assert_eq!(server.list_count("Service"), 2);

    // the relisted watcher follows changes again
    server.apply(service("default", "reviews", "reviews"));
    assert_eq!(name(&applied(next(&mut events).await)), "reviews");
}

#[tokio::test]
async fn watcher_pages_through_a_long_list() {
    let server = FakeApiServer::start().await;
    for i in 0..5 {
        server.apply(config_map("default", &format!("cm-{i}"), "x"));
    }
    let api: Api<DynamicObject> =
        Api::all_with(server.client(), &ApiResource::erase::<ConfigMap>(&()));
    let mut events = watch(api.clone(), watcher::Config::default().page_size(2));
    assert_eq!(
        initial_list(&mut events).await,
        ["cm-0", "cm-1", "cm-2", "cm-3", "cm-4"]
    );
    assert_eq!(server.list_count("ConfigMap"), 3, "pages of 2, 2 and 1");

    // a page is a snapshot: a write between pages does not show up in the rest of the list
    let first = within("page 1", api.list(&ListParams::default().limit(2)))
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().expect("a continue token");
    server.delete("ConfigMap", "default", "cm-4");
    let rest = within(
        "page 2",
        api.list(&ListParams::default().continue_token(&token)),
    )
    .await
    .unwrap();
    let names: Vec<String> = rest.items.iter().map(name).collect();
    assert_eq!(names, ["cm-2", "cm-3", "cm-4"]);
    assert_eq!(
        rest.metadata.resource_version,
        first.metadata.resource_version
    );
    assert_eq!(rest.metadata.continue_, None);

    // continue tokens do not survive an expired history
    let first = within("page 1", api.list(&ListParams::default().limit(1)))
        .await
        .unwrap();
    server.expire_history();
    let token = first.metadata.continue_.expect("a continue token");
    let (code, reason, _) = api_error(
        within(
            "page 2",
            api.list(&ListParams::default().continue_token(&token)),
        )
        .await,
    );
    assert_eq!((code, reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn namespaced_watch_honours_field_and_label_selectors() {
    let server = FakeApiServer::start().await;
    server.apply(config_map("skiff-system", "skiff-mesh", "v1"));
    server.apply(config_map("skiff-system", "other", "x"));
    server.apply(config_map("default", "skiff-mesh", "elsewhere"));
    let api: Api<DynamicObject> = Api::namespaced_with(
        server.client(),
        "skiff-system",
        &ApiResource::erase::<ConfigMap>(&()),
    );
    let mut events = watch(
        api,
        watcher::Config::default().fields("metadata.name=skiff-mesh"),
    );
    assert_eq!(initial_list(&mut events).await, ["skiff-mesh"]);

    // writes the selector excludes are not sent; the next event is the matching one
    let (event, ()) = tokio::join!(next(&mut events), async {
        within("the watch", server.wait_for_watches("ConfigMap", 1)).await;
        server.apply(config_map("default", "skiff-mesh", "still elsewhere"));
        server.apply(config_map("skiff-system", "other", "y"));
        server.apply(config_map("skiff-system", "skiff-mesh", "v2"));
    });
    let object = applied(event);
    assert_eq!(object.metadata.namespace.as_deref(), Some("skiff-system"));
    assert_eq!(object.data["data"]["mesh.yaml"], "v2");

    // labels: an object that stops matching is deleted from the watcher's view
    let mut labelled = watch(
        services(server.client()),
        watcher::Config::default().labels("app=reviews,tier!=db"),
    );
    server.apply(service("default", "reviews", "reviews"));
    server.apply(service("default", "ratings", "ratings"));
    assert_eq!(initial_list(&mut labelled).await, ["reviews"]);
    server.apply(service("default", "reviews", "reviews-v2"));
    assert_eq!(name(&deleted(next(&mut labelled).await)), "reviews");
    server.apply(service("default", "ratings", "reviews"));
    assert_eq!(name(&applied(next(&mut labelled).await)), "ratings");

    let (code, reason, message) = api_error(
        within(
            "a bad selector",
            services(server.client()).list(&ListParams::default().fields("spec.type=ClusterIP")),
        )
        .await,
    );
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    assert!(message.contains("spec.type"), "{message}");
}

fn webhook_configuration() -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": "skiff-injector" },
        "webhooks": [{
            "name": "inject.skiff.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "clientConfig": {
                "service": { "name": "skiff-xds", "namespace": "skiff-system", "path": "/inject" },
                "caBundle": "",
            },
        }],
    })
}

fn json_patch_request(name: &str, patch: &Value) -> http::Request<Vec<u8>> {
    http::Request::patch(format!(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}"
    ))
    .header("content-type", "application/json-patch+json")
    .body(serde_json::to_vec(patch).unwrap())
    .unwrap()
}

#[tokio::test]
async fn webhook_configuration_takes_json_and_merge_patches() {
    let server = FakeApiServer::start().await;
    server.apply(webhook_configuration());
    let client = server.client();
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let before = within("get", api.get("skiff-injector")).await.unwrap();
    let before_rv: u64 = before.metadata.resource_version.unwrap().parse().unwrap();

    let mut events = watch(
        Api::all_with(
            client.clone(),
            &ApiResource::erase::<MutatingWebhookConfiguration>(&()),
        ),
        watcher::Config::default(),
    );
    assert_eq!(initial_list(&mut events).await, ["skiff-injector"]);

    let patch = json!([
        { "op": "test", "path": "/webhooks/0/name", "value": "inject.skiff.dev" },
        { "op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": "Q0EK" },
    ]);
    let patched: MutatingWebhookConfiguration = within(
        "the patch",
        client.request(json_patch_request("skiff-injector", &patch)),
    )
    .await
    .unwrap();
    let webhooks = patched.webhooks.as_deref().unwrap();
    assert_eq!(
        webhooks[0]
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.clone()),
        Some(b"CA\n".to_vec())
    );
    let after_rv: u64 = patched.metadata.resource_version.unwrap().parse().unwrap();
    assert!(after_rv > before_rv);
    let modified = applied(next(&mut events).await);
    assert_eq!(
        modified.data["webhooks"][0]["clientConfig"]["caBundle"],
        "Q0EK"
    );

    // a failing test changes nothing
    let stale = json!([
        { "op": "test", "path": "/webhooks/0/clientConfig/caBundle", "value": "" },
        { "op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": "T0xECg==" },
    ]);
    let (code, reason, _) = api_error(
        within(
            "the failing patch",
            client.request::<Value>(json_patch_request("skiff-injector", &stale)),
        )
        .await,
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    let stored = server
        .get("MutatingWebhookConfiguration", "", "skiff-injector")
        .unwrap();
    assert_eq!(stored["webhooks"][0]["clientConfig"]["caBundle"], "Q0EK");
    assert_eq!(stored["metadata"]["resourceVersion"], after_rv.to_string());

    // merge patch, through kube's own Patch type
    let merged = within(
        "the merge patch",
        api.patch(
            "skiff-injector",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "app": "skiff" } } })),
        ),
    )
    .await
    .unwrap();
    assert_eq!(merged.metadata.labels.unwrap()["app"], "skiff");
    let merged_rv = merged.metadata.resource_version.clone();
    assert_ne!(merged_rv, Some(after_rv.to_string()));

    // a patch that changes nothing writes nothing: same resourceVersion, no event
    let again = within(
        "the same merge patch",
        api.patch(
            "skiff-injector",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "app": "skiff" } } })),
        ),
    )
    .await
    .unwrap();
    assert_eq!(again.metadata.resource_version, merged_rv);
    let labelled = applied(next(&mut events).await);
    assert_eq!(labelled.metadata.resource_version, merged_rv);
    server.apply(webhook_configuration());
    let reset = applied(next(&mut events).await);
    assert!(
        rv(&reset) > rv(&labelled),
        "the next event is the apply, not the no-op patch"
    );

    let patches = server.patches();
    assert_eq!(patches.len(), 4);
    assert_eq!(
        patches[0].0,
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/skiff-injector"
    );
    assert_eq!(patches[0].1, "application/json-patch+json");
    assert_eq!(patches[0].2, patch);
    assert_eq!(patches[2].1, "application/merge-patch+json");

    let (code, reason, _) = api_error(
        within(
            "a patch of nothing",
            client.request::<Value>(json_patch_request("missing", &patch)),
        )
        .await,
    );
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
}

fn review(token: &str, audiences: &[&str]) -> TokenReview {
    TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: (!audiences.is_empty())
                .then(|| audiences.iter().map(|a| a.to_string()).collect()),
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn token_reviews_authenticate_service_accounts() {
    let server = FakeApiServer::start().await;
    server.add_token(
        "good",
        TokenUser {
            namespace: "shop".into(),
            service_account: "cart".into(),
            pod: Some(("cart-7d9f".into(), "pod-uid-1".into())),
            audiences: vec!["skiff".into(), "https://kubernetes.default.svc".into()],
        },
    );
    let api: Api<TokenReview> = Api::all(server.client());
    let create = |review: TokenReview| {
        let api = api.clone();
        async move {
            within("a TokenReview", api.create(&PostParams::default(), &review))
                .await
                .unwrap()
                .status
                .expect("a status")
        }
    };

    let known = create(review("good", &["skiff", "other"])).await;
    assert_eq!(known.authenticated, Some(true));
    assert_eq!(known.audiences, Some(vec!["skiff".to_string()]));
    let user = known.user.expect("a user");
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:shop:cart")
    );
    assert!(user.uid.is_some_and(|u| !u.is_empty()));
    assert!(
        user.groups
            .unwrap()
            .contains(&"system:serviceaccounts:shop".to_string())
    );
    let extra = user.extra.expect("pod extras");
    assert_eq!(
        extra["authentication.kubernetes.io/pod-name"],
        ["cart-7d9f"]
    );
    assert_eq!(extra["authentication.kubernetes.io/pod-uid"], ["pod-uid-1"]);

    let default_audience = create(review("good", &[])).await;
    assert_eq!(default_audience.authenticated, Some(true));
    assert_eq!(
        default_audience.audiences,
        Some(vec!["https://kubernetes.default.svc".to_string()])
    );

    let unknown = create(review("forged", &["skiff"])).await;
    assert_ne!(unknown.authenticated, Some(true));
    assert_eq!(unknown.error.as_deref(), Some("invalid bearer token"));

    let wrong_audience = create(review("good", &["istio-ca"])).await;
    assert_ne!(wrong_audience.authenticated, Some(true));
    assert!(wrong_audience.error.unwrap().contains("audiences"));

    assert_eq!(server.token_reviews(), 4);
}

#[tokio::test]
async fn errors_are_status_objects() {
    let server = FakeApiServer::start().await;
    let client = server.client();

    let (code, reason, message) = api_error(
        within(
            "a missing service",
            Api::<Service>::namespaced(client.clone(), "default").get("nope"),
        )
        .await,
    );
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert_eq!(message, "services \"nope\" not found");

    let unknown = ApiResource {
        group: "example.dev".into(),
        version: "v1".into(),
        api_version: "example.dev/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let (code, reason, _) = api_error(
        within(
            "an unknown resource",
            Api::<DynamicObject>::all_with(client.clone(), &unknown).list(&ListParams::default()),
        )
        .await,
    );
    assert_eq!((code, reason.as_str()), (404, "NotFound"));

    // injected failures are 500s; the watcher reports them and recovers
    server.apply(service("default", "reviews", "reviews"));
    server.fail_next(1);
    let mut events = watch(services(client), watcher::Config::default());
    assert!(matches!(next(&mut events).await, Event::Init));
    match within("the failed list", events.next()).await {
        Some(Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))) => {
            assert_eq!(status.code, 500)
        }
        other => panic!("expected a failed list, got {other:?}"),
    }
    assert_eq!(initial_list(&mut events).await, ["reviews"]);
}

#[tokio::test]
async fn kubeconfig_points_a_client_at_the_server() {
    let server = FakeApiServer::start().await;
    server.apply(config_map("default", "skiff-mesh", "v1"));
    let dir = tempfile::tempdir().unwrap();
    let path = server.write_kubeconfig(dir.path());
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = Client::try_from(config).unwrap();
    let cm = within(
        "get",
        Api::<ConfigMap>::default_namespaced(client).get("skiff-mesh"),
    )
    .await
    .unwrap();
    assert_eq!(cm.data.unwrap()["mesh.yaml"], "v1");
}

#[tokio::test]
async fn streaming_lists_and_bookmarks() {
    let server = FakeApiServer::start().await;
    server.apply(service("default", "reviews", "reviews"));
    let mut events = watch(
        services(server.client()),
        watcher::Config::default().streaming_lists(),
    );
    // initial events end with the annotated bookmark; no list request at all
    assert_eq!(initial_list(&mut events).await, ["reviews"]);
    assert_eq!(server.list_count("Service"), 0);
    server.apply(service("default", "ratings", "ratings"));
    assert_eq!(name(&applied(next(&mut events).await)), "ratings");

    // a raw watch from "0": the current objects as ADDED, then bookmarks on request
    let api = services(server.client());
    let mut raw = within("the raw watch", api.watch(&WatchParams::default(), "0"))
        .await
        .unwrap()
        .boxed();
    let mut added = Vec::new();
    for _ in 0..2 {
        match within("an event", raw.next()).await {
            Some(Ok(WatchEvent::Added(object))) => added.push(name(&object)),
            other => panic!("expected ADDED, got {other:?}"),
        }
    }
    assert_eq!(added, ["ratings", "reviews"]);
    server.send_bookmarks();
    let current =
        server.get("Service", "default", "ratings").unwrap()["metadata"]["resourceVersion"].clone();
    match within("the bookmark", raw.next()).await {
        Some(Ok(WatchEvent::Bookmark(bookmark))) => {
            assert_eq!(Value::from(bookmark.metadata.resource_version), current);
            assert_eq!(bookmark.types.kind, "Service");
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }

    // timeoutSeconds closes the response
    let mut short = within(
        "a short watch",
        api.watch(&WatchParams::default().timeout(1), "0"),
    )
    .await
    .unwrap()
    .boxed();
    let mut seen = 0;
    while let Some(event) = within("the end of the watch", short.next()).await {
        assert!(matches!(event, Ok(WatchEvent::Added(_))), "{event:?}");
        seen += 1;
    }
    assert_eq!(seen, 2);
}
