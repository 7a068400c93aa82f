//! `serve --kubernetes` against the fake API server, through the real kube-rs client: the
//! cluster becomes the mesh proxies stream (identities from service accounts, `appProtocol`),
//! adds, updates, deletes and readiness changes reach them as only what changed, a refused
//! ConfigMap keeps the previous one, the webhook's `caBundle` is patched, and Certify is
//! decided by TokenReview.

use std::{net::SocketAddr, time::Duration};

use rcgen::{CertificateParams, KeyPair, SanType};
use serde_json::{Value, json};
use skiff_api::{
    pb::{self, discovery_client::DiscoveryClient, identity_client::IdentityClient},
    resource::{
        AUTHORIZATION_TYPE_URL, ENDPOINTS_TYPE_URL, MESH_SETTINGS_TYPE_URL, SERVICE_TYPE_URL,
        WORKLOAD_TYPE_URL,
    },
};
use skiff_xds::serve::{IdentityArgs, KubeArgs, Running, ServeArgs, Source, WebhookArgs};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::apiserver::{FakeApiServer, TokenUser};

const DEADLINE: Duration = Duration::from_secs(20);

// === cluster objects ===

fn service(name: &str, ip: &str, port: u16, app_protocol: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                  "ports": [ { "name": "main", "port": port, "protocol": "TCP",
                               "appProtocol": app_protocol } ] }
    })
}

/// `(address, pod, ready)` endpoints of `service`'s one slice.
fn slice(service: &str, port: u16, endpoints: &[(&str, &str, bool)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(addr, pod, ready)| {
            json!({
                "addresses": [addr],
                "conditions": { "ready": ready, "serving": ready, "terminating": false },
                "targetRef": { "kind": "Pod", "name": pod, "namespace": "default" }
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": format!("{service}-x1"), "namespace": "default",
                      "labels": { "kubernetes.io/service-name": service } },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [ { "name": "main", "port": port, "protocol": "TCP" } ]
    })
}

fn pod(name: &str, ip: &str, app: &str, service_account: &str, meshed: bool) -> Value {
    let init: Vec<Value> = if meshed {
        vec![json!({ "name": "skiff-proxy", "image": "skiff", "restartPolicy": "Always" })]
    } else {
        Vec::new()
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "default", "labels": { "app": app } },
        "spec": { "serviceAccountName": service_account, "initContainers": init,
                  "containers": [ { "name": "app", "image": "app" } ] },
        "status": { "phase": "Running", "podIP": ip }
    })
}

fn config_map(mesh_yaml: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "skiff-mesh", "namespace": "skiff-system" },
        "data": { "mesh.yaml": mesh_yaml }
    })
}

fn webhook_configuration() -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": "skiff-injector" },
        "webhooks": [ {
            "name": "inject.skiff.dev",
            "clientConfig": { "service": { "name": "skiff-xds", "namespace": "skiff-system",
                                           "path": "/inject", "port": 15017 } },
            "admissionReviewVersions": ["v1"], "sideEffects": "None"
        } ]
    })
}

/// reviews (HTTP, a meshed pod and a plain one), grpc-echo (gRPC, no endpoints), the
/// ConfigMap and the webhook configuration.
async fn cluster() -> FakeApiServer {
    let api = FakeApiServer::start().await;
    api.apply(service("reviews", "10.96.0.10", 9080, "http"));
    api.apply(service("grpc-echo", "10.96.0.11", 9000, "grpc"));
    api.apply(pod("reviews-1", "10.1.0.1", "reviews", "reviews", true));
    api.apply(pod("legacy-1", "10.1.0.2", "legacy", "default", false));
    api.apply(slice(
        "reviews",
        9080,
        &[
            ("10.1.0.1", "reviews-1", true),
            ("10.1.0.2", "legacy-1", true),
        ],
    ));
    api.apply(config_map("mesh: { trustDomain: cluster.local }\n"));
    api.apply(webhook_configuration());
    api
}

async fn control_plane(api: &FakeApiServer, dir: &std::path::Path) -> Running {
    let source = Source::Kubernetes {
        client: api.client(),
        args: KubeArgs {
            kubernetes: true,
            ..KubeArgs::default()
        },
    };
    let args = ServeArgs {
        config: None,
        grpc_addr: "127.0.0.1:0".parse().expect("literal"),
        admin_addr: "127.0.0.1:0".parse().expect("literal"),
    };
    let identity = IdentityArgs {
        ca_dir: Some(dir.join("ca")),
        ..IdentityArgs::default()
    };
    let webhook = WebhookArgs {
        webhook_addr: Some("127.0.0.1:0".parse().expect("literal")),
        webhook_dns: vec!["skiff-xds.skiff-system.svc".to_owned()],
        ..WebhookArgs::default()
    };
    tokio::time::timeout(
        DEADLINE,
        skiff_xds::serve::start_source(source, args, identity, webhook),
    )
    .await
    .expect("started in time")
    .expect("control plane starts")
}

// === a proxy's view ===

struct Proxy {
    tx: mpsc::Sender<pb::DiscoveryRequest>,
    rx: tonic::Streaming<pb::DiscoveryResponse>,
}

fn subscribe(type_url: &str, names: &[&str]) -> pb::DiscoveryRequest {
    pb::DiscoveryRequest {
        type_url: type_url.to_owned(),
        resource_names_subscribe: names.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

impl Proxy {
    /// Streams as `default/reviews`, subscribed to everything.
    async fn connect(addr: SocketAddr) -> Proxy {
        let mut client = DiscoveryClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let (tx, rx) = mpsc::channel(16);
        let mut first = subscribe(WORKLOAD_TYPE_URL, &["default/reviews"]);
        first.node = Some(pb::Node {
            workload: "reviews".into(),
            namespace: "default".into(),
            proxy_version: "test".into(),
        });
        tx.send(first).await.expect("queue");
        let rsp = client
            .stream(ReceiverStream::new(rx))
            .await
            .expect("stream accepted");
        let proxy = Proxy {
            tx,
            rx: rsp.into_inner(),
        };
        proxy
            .send(subscribe(MESH_SETTINGS_TYPE_URL, &["mesh"]))
            .await;
        for t in [SERVICE_TYPE_URL, ENDPOINTS_TYPE_URL, AUTHORIZATION_TYPE_URL] {
            proxy.send(subscribe(t, &["*"])).await;
        }
        proxy
    }

    async fn send(&self, req: pb::DiscoveryRequest) {
        self.tx.send(req).await.expect("stream open");
    }

    /// The next response, ACKed.
    async fn recv(&mut self) -> pb::DiscoveryResponse {
        let rsp = tokio::time::timeout(DEADLINE, self.rx.message())
            .await
            .expect("a response in time")
            .expect("stream healthy")
            .expect("stream open");
        self.send(pb::DiscoveryRequest {
            type_url: rsp.type_url.clone(),
            response_nonce: rsp.nonce.clone(),
            ..Default::default()
        })
        .await;
        rsp
    }

    /// The first response of each of the five types, by type URL.
    async fn first_round(&mut self) -> std::collections::BTreeMap<String, pb::DiscoveryResponse> {
        let mut got = std::collections::BTreeMap::new();
        while got.len() < 5 {
            let rsp = self.recv().await;
            got.insert(rsp.type_url.clone(), rsp);
        }
        got
    }
}

/// The next response of `type_url`; a response of another type before it fails the test
/// (it would be a change nobody made), naming it.
async fn next_of(proxy: &mut Proxy, type_url: &str) -> pb::DiscoveryResponse {
    let rsp = proxy.recv().await;
    assert_eq!(
        rsp.type_url,
        type_url,
        "unexpected push of {:?} (version {})",
        names(&rsp),
        rsp.system_version_info
    );
    rsp
}

fn decode<M: prost::Message + Default>(rsp: &pb::DiscoveryResponse, name: &str) -> Option<M> {
    let r = rsp.resources.iter().find(|r| r.name == name)?;
    let any = r.resource.as_ref().expect("resource body");
    Some(M::decode(any.value.as_slice()).expect("decodes"))
}

fn names(rsp: &pb::DiscoveryResponse) -> Vec<&str> {
    rsp.resources.iter().map(|r| r.name.as_str()).collect()
}

fn addresses(eps: &pb::Endpoints) -> Vec<&str> {
    eps.endpoints.iter().map(|e| e.address.as_str()).collect()
}

// === tests ===

#[tokio::test]
async fn the_cluster_becomes_the_mesh_and_changes_reach_proxies_as_only_what_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = cluster().await;
    let cp = control_plane(&api, dir.path()).await;
    let mut proxy = Proxy::connect(cp.grpc_addr).await;
    let first = proxy.first_round().await;

    let services = &first[SERVICE_TYPE_URL];
    assert_eq!(names(services), ["default/grpc-echo", "default/reviews"]);
    let grpc: pb::Service = decode(services, "default/grpc-echo").expect("grpc-echo");
    assert_eq!(grpc.protocol(), pb::Protocol::Grpc, "appProtocol: grpc");
    let reviews: pb::Service = decode(services, "default/reviews").expect("reviews");
    assert_eq!(reviews.protocol(), pb::Protocol::Http1, "appProtocol: http");
    assert_eq!(reviews.addresses, ["10.96.0.10:9080"]);
    assert!(
        reviews
            .hosts
            .contains(&"reviews.default.svc.cluster.local".to_owned())
    );

    let eps: pb::Endpoints =
        decode(&first[ENDPOINTS_TYPE_URL], "default/reviews").expect("endpoints");
    assert_eq!(addresses(&eps), ["10.1.0.1:9080", "10.1.0.2:9080"]);
    assert_eq!(eps.endpoints[0].workload, "reviews", "the meshed pod");
    assert_eq!(
        eps.endpoints[0].identity, "spiffe://cluster.local/ns/default/sa/reviews",
        "its service account's identity"
    );
    assert_eq!(eps.endpoints[1].identity, "", "a plain pod has none");
    let workload: pb::Workload =
        decode(&first[WORKLOAD_TYPE_URL], "default/reviews").expect("workload from the pod");
    assert_eq!(
        workload.spiffe_id,
        "spiffe://cluster.local/ns/default/sa/reviews"
    );

    // Readiness: the plain pod goes unready. Only reviews' Endpoints are sent.
    api.apply(slice(
        "reviews",
        9080,
        &[
            ("10.1.0.1", "reviews-1", true),
            ("10.1.0.2", "legacy-1", false),
        ],
    ));
    let rsp = next_of(&mut proxy, ENDPOINTS_TYPE_URL).await;
    assert_eq!(names(&rsp), ["default/reviews"], "only that service");
    let eps: pb::Endpoints = decode(&rsp, "default/reviews").expect("endpoints");
    assert_eq!(addresses(&eps), ["10.1.0.1:9080"]);

    // Add: a Service with a ready endpoint.
    api.apply(service("ratings", "10.96.0.12", 8080, "h2c"));
    api.apply(pod("ratings-1", "10.1.0.5", "ratings", "ratings", true));
    api.apply(slice("ratings", 8080, &[("10.1.0.5", "ratings-1", true)]));
    let mut seen_endpoints = None;
    let mut seen_service = None;
    while seen_endpoints.is_none() || seen_service.is_none() {
        let rsp = proxy.recv().await;
        if rsp.type_url == SERVICE_TYPE_URL {
            seen_service = decode::<pb::Service>(&rsp, "default/ratings");
        }
        if rsp.type_url == ENDPOINTS_TYPE_URL
            && let Some(eps) = decode::<pb::Endpoints>(&rsp, "default/ratings")
            && !eps.endpoints.is_empty()
        {
            seen_endpoints = Some(eps);
        }
    }
    assert_eq!(seen_service.expect("seen").protocol(), pb::Protocol::Http2);
    let eps = seen_endpoints.expect("seen");
    assert_eq!(
        eps.endpoints[0].identity,
        "spiffe://cluster.local/ns/default/sa/ratings"
    );

    // Delete: the Service goes, and the proxy is told.
    api.delete("Service", "default", "ratings");
    loop {
        let rsp = proxy.recv().await;
        if rsp.type_url == SERVICE_TYPE_URL
            && rsp
                .removed_resources
                .contains(&"default/ratings".to_owned())
        {
            break;
        }
    }
    cp.stop().await.expect("stops");
}

#[tokio::test]
async fn broken_and_expired_watches_resume_and_a_refused_config_map_keeps_the_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = cluster().await;
    let cp = control_plane(&api, dir.path()).await;
    let mut proxy = Proxy::connect(cp.grpc_addr).await;
    proxy.first_round().await;

    // A refused ConfigMap: nothing is pushed, /proxies says why.
    api.apply(config_map("services: fifty\n"));
    let why = wait_last_error(cp.admin_addr, |e| e.is_some()).await;
    let why = why.expect("an error");
    assert!(why.contains("skiff-system/skiff-mesh"), "{why}");

    // The watches end, and their history is gone: the source lists again and keeps going.
    let lists = api.list_count("EndpointSlice");
    api.expire_history();
    api.break_watches();
    api.apply(slice("reviews", 9080, &[("10.1.0.2", "legacy-1", true)]));
    // Nothing before it: the refused ConfigMap pushed nothing.
    let rsp = next_of(&mut proxy, ENDPOINTS_TYPE_URL).await;
    let eps: pb::Endpoints = decode(&rsp, "default/reviews").expect("endpoints");
    assert_eq!(addresses(&eps), ["10.1.0.2:9080"]);
    assert!(api.list_count("EndpointSlice") > lists, "listed again");

    // A good ConfigMap clears the error and applies.
    api.apply(config_map("mesh: { trustDomain: cluster.local }\nservices:\n  - name: reviews\n    namespace: default\n    retryBudget: { ratio: 0.5, minRetriesPerSecond: 3 }\n"));
    let error = wait_last_error(cp.admin_addr, |e| e.is_none()).await;
    assert_eq!(error, None);
    loop {
        let rsp = proxy.recv().await;
        if rsp.type_url == SERVICE_TYPE_URL
            && let Some(svc) = decode::<pb::Service>(&rsp, "default/reviews")
            && svc.retry_budget.is_some()
        {
            break;
        }
    }
    cp.stop().await.expect("stops");
}

#[tokio::test]
async fn the_webhook_configuration_gets_the_mesh_anchors_as_its_ca_bundle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = cluster().await;
    let cp = control_plane(&api, dir.path()).await;
    assert!(cp.webhook_addr.is_some(), "the webhook runs");
    let want = skiff_xds::webhook::ca_bundle(&cp.trust_anchors());
    let patched = poll(|| {
        let config = api.get("MutatingWebhookConfiguration", "", "skiff-injector")?;
        let bundle = config["webhooks"][0]["clientConfig"]["caBundle"].as_str()?;
        Some(bundle.to_owned())
    })
    .await;
    assert_eq!(patched, want);
    let patches = api.patches();
    assert_eq!(patches.len(), 1, "one patch: {patches:?}");
    assert_eq!(patches[0].1, "application/json-patch+json");
    cp.stop().await.expect("stops");
}

#[tokio::test]
async fn certify_issues_only_the_identity_a_reviewed_token_proves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = cluster().await;
    let user = |namespace: &str, sa: &str, audiences: &[&str]| TokenUser {
        namespace: namespace.into(),
        service_account: sa.into(),
        pod: Some(("reviews-1".into(), "uid-1".into())),
        audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
    };
    api.add_token("good", user("default", "reviews", &["skiff"]));
    api.add_token("wrong-audience", user("default", "reviews", &["vault"]));
    api.add_token("other-namespace", user("shop", "reviews", &["skiff"]));
    let cp = control_plane(&api, dir.path()).await;
    let mut client = IdentityClient::connect(format!("http://{}", cp.grpc_addr))
        .await
        .expect("connect");
    let own = "spiffe://cluster.local/ns/default/sa/reviews";

    let issued = client
        .certify(request("reviews", "good", csr(own)))
        .await
        .expect("issued")
        .into_inner();
    let (_, leaf) =
        x509_parser::parse_x509_certificate(&issued.certificate_chain[0]).expect("a certificate");
    let san = leaf
        .subject_alternative_name()
        .expect("parses")
        .expect("has SANs");
    let uris: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, [own]);
    assert_eq!(issued.trust_anchors, cp.trust_anchors());

    let refused = [
        // Another account's identity with a good token.
        (
            request(
                "reviews",
                "good",
                csr("spiffe://cluster.local/ns/default/sa/admin"),
            ),
            Code::PermissionDenied,
        ),
        (
            request("reviews", "forged", csr(own)),
            Code::Unauthenticated,
        ),
        (
            request("reviews", "wrong-audience", csr(own)),
            Code::Unauthenticated,
        ),
        (
            request("reviews", "other-namespace", csr(own)),
            Code::Unauthenticated,
        ),
        // A workload the cluster does not have.
        (request("nobody", "good", csr(own)), Code::Unauthenticated),
        (request("reviews", "", csr(own)), Code::Unauthenticated),
    ];
    for (req, code) in refused {
        let token = req.token.clone();
        let got = client.certify(req).await.expect_err("refused");
        assert_eq!(got.code(), code, "token {token:?}: {}", got.message());
    }
    assert!(api.token_reviews() >= 5, "each token was reviewed");
    cp.stop().await.expect("stops");
}

fn request(workload: &str, token: &str, csr: Vec<u8>) -> pb::CertifyRequest {
    pb::CertifyRequest {
        workload: workload.to_owned(),
        namespace: "default".to_owned(),
        token: token.to_owned(),
        csr,
    }
}

fn csr(uri: &str) -> Vec<u8> {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("ia5"))];
    params.serialize_request(&key).expect("CSR").der().to_vec()
}

/// `f` until it gives something, within [`DEADLINE`] (for state with no change signal).
async fn poll<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "not in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/proxies`' `last_error` once `want` holds for it.
async fn wait_last_error(
    admin: SocketAddr,
    want: impl Fn(&Option<String>) -> bool,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let body = http_get(admin, "/proxies").await;
        let v: Value = serde_json::from_str(&body).expect("JSON");
        let error = v["lastError"].as_str().map(str::to_owned);
        if want(&error) {
            return error;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "last_error: {error:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_binary_serves_the_cluster_named_by_kubeconfig() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = cluster().await;
    let kubeconfig = api.write_kubeconfig(dir.path());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff-xds"))
        .args([
            "serve",
            "--kubernetes",
            "--grpc-addr=127.0.0.1:0",
            "--admin-addr=127.0.0.1:0",
            "--webhook-addr=127.0.0.1:0",
        ])
        .arg("--ca-dir")
        .arg(dir.path().join("ca"))
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("SKIFF_XDS_CONFIG")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn skiff-xds");
    let (grpc, admin) = crate::common::startup_addrs(&mut child, DEADLINE)
        .await
        .expect("the startup line");
    assert!(http_get(admin, "/ready").await.starts_with("ready"));
    let mut proxy = Proxy::connect(grpc).await;
    let first = proxy.first_round().await;
    assert_eq!(
        names(&first[SERVICE_TYPE_URL]),
        ["default/grpc-echo", "default/reviews"]
    );
    child.kill().await.expect("kill");
}
