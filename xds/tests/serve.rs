//! `skiff-xds serve` end to end: the real binary on port 0, a tonic client as the fake proxy,
//! `/proxies` and `skiff-xds status` as the observers. Waits are on responses, with deadlines.

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use skiff_api::{
    pb::{self, discovery_client::DiscoveryClient},
    resource::{
        AUTHORIZATION_TYPE_URL, ENDPOINTS_TYPE_URL, Kind, MESH_SETTINGS_TYPE_URL, SERVICE_TYPE_URL,
        WORKLOAD_TYPE_URL,
    },
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

const DEADLINE: Duration = Duration::from_secs(10);

const MESH: &str = r#"
services:
  - name: reviews
    hosts: [reviews]
    endpoints:
      - workload: reviews-v1
    routes:
      - name: split
        backendRefs: [ { service: reviews-v2, weight: 90 }, { service: reviews, weight: 10 } ]
  - name: reviews-v2
    connectTimeout: 1s
    endpoints:
      - address: 127.0.0.1:9082
workloads:
  - name: reviews-v1
    inbound: { listen: 127.0.0.1:16006, app: 127.0.0.1:9081 }
authorization:
  - { name: readers, target: reviews, from: [ spiffe://cluster.local/ns/default/sa/productpage ] }
"#;

struct Server {
    child: Child,
    _dir: tempfile::TempDir,
    config: PathBuf,
    grpc: SocketAddr,
    admin: SocketAddr,
}

async fn start() -> Server {
    start_logging_to(None).await
}

/// [`start`], with its logs at `info` written to `log` when given (stderr is then a file, not
/// a terminal, and `NO_COLOR` is unset, so only the terminal check keeps colour out).
async fn start_logging_to(log: Option<&Path>) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, MESH).expect("write mesh file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff-xds"));
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if let Some(log) = log {
        let file = std::fs::File::create(log).expect("create log file");
        cmd.env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stderr(Stdio::from(file));
    }
    let mut child = cmd.spawn().expect("spawn skiff-xds");
    let (grpc, admin) = common::startup_addrs(&mut child, DEADLINE)
        .await
        .unwrap_or_else(|line| panic!("unexpected startup line {line:?}"));
    Server {
        child,
        _dir: dir,
        config,
        grpc,
        admin,
    }
}

impl Server {
    /// Replaces the mesh file the way a ConfigMap update does: write aside, rename over.
    fn replace_config(&self, text: &str) {
        let tmp = self.config.with_file_name(".mesh.yaml.tmp");
        std::fs::write(&tmp, text).expect("write temp file");
        std::fs::rename(&tmp, &self.config).expect("rename over the mesh file");
    }
}

struct FakeProxy {
    tx: mpsc::Sender<pb::DiscoveryRequest>,
    rx: Streaming<pb::DiscoveryResponse>,
}

fn node(workload: &str) -> Option<pb::Node> {
    Some(pb::Node {
        workload: workload.to_owned(),
        namespace: "default".to_owned(),
        proxy_version: "test".to_owned(),
    })
}

fn subscribe(type_url: &str, names: &[&str]) -> pb::DiscoveryRequest {
    pb::DiscoveryRequest {
        type_url: type_url.to_owned(),
        resource_names_subscribe: names.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

/// Opens a stream whose first request is `first`; the call's own error if it is refused.
async fn open(addr: SocketAddr, first: pb::DiscoveryRequest) -> Result<FakeProxy, tonic::Status> {
    let mut client = DiscoveryClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the control plane");
    let (tx, rx) = mpsc::channel(16);
    tx.send(first).await.expect("queue first request");
    let rsp = tokio::time::timeout(DEADLINE, client.stream(ReceiverStream::new(rx)))
        .await
        .expect("stream opened in time")?;
    Ok(FakeProxy {
        tx,
        rx: rsp.into_inner(),
    })
}

/// Connects as `default/reviews-v1` and subscribes the way the proxy does.
async fn connect_proxy(addr: SocketAddr) -> FakeProxy {
    let mut first = subscribe(WORKLOAD_TYPE_URL, &["default/reviews-v1"]);
    first.node = node("reviews-v1");
    let proxy = open(addr, first).await.expect("stream accepted");
    proxy
        .send(subscribe(MESH_SETTINGS_TYPE_URL, &["mesh"]))
        .await;
    for t in [SERVICE_TYPE_URL, ENDPOINTS_TYPE_URL, AUTHORIZATION_TYPE_URL] {
        proxy.send(subscribe(t, &["*"])).await;
    }
    proxy
}

impl FakeProxy {
    async fn send(&self, req: pb::DiscoveryRequest) {
        self.tx.send(req).await.expect("stream open");
    }

    async fn recv(&mut self) -> pb::DiscoveryResponse {
        tokio::time::timeout(DEADLINE, self.rx.message())
            .await
            .expect("a response in time")
            .expect("stream healthy")
            .expect("stream not ended")
    }

    async fn ack(&self, rsp: &pb::DiscoveryResponse) {
        self.send(pb::DiscoveryRequest {
            type_url: rsp.type_url.clone(),
            response_nonce: rsp.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    async fn nack(&self, rsp: &pb::DiscoveryResponse, why: &str) {
        self.send(pb::DiscoveryRequest {
            type_url: rsp.type_url.clone(),
            response_nonce: rsp.nonce.clone(),
            error_detail: Some(pb::Status {
                code: 3,
                message: why.to_owned(),
            }),
            ..Default::default()
        })
        .await;
    }

    /// The first response of every type, by type URL, each ACKed.
    async fn first_round(&mut self) -> Vec<pb::DiscoveryResponse> {
        let mut got = Vec::new();
        for _ in Kind::ALL {
            let rsp = self.recv().await;
            self.ack(&rsp).await;
            got.push(rsp);
        }
        got.sort_by(|a, b| a.type_url.cmp(&b.type_url));
        got
    }
}

fn names(rsp: &pb::DiscoveryResponse) -> Vec<&str> {
    rsp.resources.iter().map(|r| r.name.as_str()).collect()
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect admin");
    let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut out))
        .await
        .expect("admin answers in time")
        .expect("read admin answer");
    assert!(out.starts_with("HTTP/1.1 200"), "{path}: {out}");
    out.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

async fn proxies(admin: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&http_get(admin, "/proxies").await).expect("JSON /proxies")
}

/// Polls `/proxies` until `ok` holds; panics with the last body at the deadline.
async fn wait_proxies(
    admin: SocketAddr,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let body = proxies(admin).await;
        if ok(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting; last /proxies: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn all_in_sync(body: &serde_json::Value) -> bool {
    body["proxies"][0]["types"]
        .as_object()
        .is_some_and(|t| t.len() == Kind::ALL.len() && t.values().all(|v| v["inSync"] == true))
}

#[tokio::test]
async fn first_responses_of_every_type() {
    let server = start().await;
    let mut proxy = connect_proxy(server.grpc).await;
    let got = proxy.first_round().await;
    let urls: Vec<&str> = got.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(
        urls,
        [
            AUTHORIZATION_TYPE_URL,
            ENDPOINTS_TYPE_URL,
            MESH_SETTINGS_TYPE_URL,
            SERVICE_TYPE_URL,
            WORKLOAD_TYPE_URL
        ]
    );
    assert_eq!(names(&got[0]), ["default/readers"]);
    assert_eq!(names(&got[1]), ["default/reviews", "default/reviews-v2"]);
    assert_eq!(names(&got[2]), ["mesh"]);
    assert_eq!(names(&got[3]), ["default/reviews", "default/reviews-v2"]);
    assert_eq!(names(&got[4]), ["default/reviews-v1"]);
    let nonces: std::collections::HashSet<&str> = got.iter().map(|r| r.nonce.as_str()).collect();
    assert_eq!(nonces.len(), got.len(), "nonces are unique");
    assert!(got.iter().all(|r| !r.system_version_info.is_empty()));
}

#[tokio::test]
async fn unknown_workload_and_missing_node_are_refused() {
    let server = start().await;
    let mut first = subscribe(WORKLOAD_TYPE_URL, &["default/nobody"]);
    first.node = node("nobody");
    let err = open(server.grpc, first).await.err().expect("refused");
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("default/nobody"),
        "{}",
        err.message()
    );

    let err = open(
        server.grpc,
        subscribe(WORKLOAD_TYPE_URL, &["default/reviews-v1"]),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn ack_shows_in_sync_on_proxies_and_status() {
    let server = start().await;
    let mut proxy = connect_proxy(server.grpc).await;
    proxy.first_round().await;
    let body = wait_proxies(server.admin, all_in_sync).await;
    assert_eq!(body["proxies"][0]["workload"], "reviews-v1");
    assert_eq!(body["proxies"][0]["namespace"], "default");
    assert!(body["lastError"].is_null());

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff-xds"))
        .args(["status", "--admin", &format!("http://{}", server.admin)])
        .output()
        .await
        .expect("run status");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("reviews-v1"), "{stdout}");
    assert_eq!(
        stdout.matches("SYNCED").count(),
        Kind::ALL.len(),
        "{stdout}"
    );
    assert!(!stdout.contains("STALE"), "{stdout}");

    // The proxy goes away: it leaves /proxies.
    drop(proxy);
    wait_proxies(server.admin, |b| {
        b["proxies"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
}

#[tokio::test]
async fn status_fails_without_a_control_plane() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff-xds"))
        .args(["status", "--admin", &format!("http://{addr}")])
        .output()
        .await
        .expect("run status");
    assert!(!out.status.success());
}

#[tokio::test]
async fn atomic_replace_pushes_only_the_changed_service() {
    let server = start().await;
    let mut proxy = connect_proxy(server.grpc).await;
    let before = proxy.first_round().await;

    server.replace_config(&MESH.replace("connectTimeout: 1s", "connectTimeout: 2s"));
    let rsp = proxy.recv().await;
    assert_eq!(rsp.type_url, SERVICE_TYPE_URL);
    assert_eq!(names(&rsp), ["default/reviews-v2"]);
    assert!(rsp.removed_resources.is_empty());
    assert_ne!(rsp.system_version_info, before[3].system_version_info);
    proxy.ack(&rsp).await;

    // A second change of another type: its response is the very next one, so nothing else
    // was pushed for the first change.
    server.replace_config(
        &MESH
            .replace("connectTimeout: 1s", "connectTimeout: 2s")
            .replace("sa/productpage", "sa/ratings"),
    );
    let rsp = proxy.recv().await;
    assert_eq!(rsp.type_url, AUTHORIZATION_TYPE_URL);
    assert_eq!(names(&rsp), ["default/readers"]);
}

#[tokio::test]
async fn invalid_edit_pushes_nothing_and_names_the_field() {
    let server = start().await;
    let mut proxy = connect_proxy(server.grpc).await;
    proxy.first_round().await;

    server.replace_config(&MESH.replace(
        "service: reviews-v2, weight: 90",
        "service: nowhere, weight: 90",
    ));
    let body = wait_proxies(server.admin, |b| b["lastError"].is_string()).await;
    let error = body["lastError"].as_str().unwrap_or_default();
    assert!(
        error.contains("services[0].routes[0].backendRefs[0]"),
        "{error}"
    );
    let metrics = http_get(server.admin, "/metrics").await;
    assert!(
        metrics.contains("skiff_xds_config_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );

    // The next response is the next good edit's: the refused one was never pushed.
    server.replace_config(&MESH.replace("connectTimeout: 1s", "connectTimeout: 3s"));
    let rsp = proxy.recv().await;
    assert_eq!(rsp.type_url, SERVICE_TYPE_URL);
    assert_eq!(names(&rsp), ["default/reviews-v2"]);
    wait_proxies(server.admin, |b| b["lastError"].is_null()).await;
}

#[tokio::test]
async fn nack_shows_on_proxies_with_its_reason() {
    let server = start().await;
    let mut proxy = connect_proxy(server.grpc).await;
    for _ in Kind::ALL {
        let rsp = proxy.recv().await;
        if rsp.type_url == SERVICE_TYPE_URL {
            proxy
                .nack(
                    &rsp,
                    "routes[0].matches[0].path.value: regex does not compile",
                )
                .await;
        } else {
            proxy.ack(&rsp).await;
        }
    }
    let body = wait_proxies(server.admin, |b| {
        b["proxies"][0]["types"]["Service"]["lastNack"].is_object()
    })
    .await;
    let service = &body["proxies"][0]["types"]["Service"];
    assert_eq!(service["inSync"], false);
    assert!(
        service["lastNack"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("regex does not compile")),
        "{body:#}"
    );
    let metrics = http_get(server.admin, "/metrics").await;
    assert!(
        metrics.contains("skiff_xds_nacks_total{type=\"Service\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn garbage_and_unknown_types_do_not_kill_the_server() {
    let server = start().await;

    // Not HTTP/2 at all.
    let mut raw = tokio::net::TcpStream::connect(server.grpc)
        .await
        .expect("connect");
    raw.write_all(b"\x00\x01garbage\r\n\r\nmore garbage")
        .await
        .expect("write");
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, raw.read_to_end(&mut sink)).await;

    // An unknown type URL is ignored; the stream keeps working.
    let mut proxy = connect_proxy(server.grpc).await;
    proxy.first_round().await;
    proxy
        .send(subscribe(
            "type.googleapis.com/skiff.xds.v1.Nonsense",
            &["*"],
        ))
        .await;
    let mut narrow = subscribe(SERVICE_TYPE_URL, &["default/later"]);
    narrow.resource_names_unsubscribe = vec!["*".to_owned()];
    proxy.send(narrow).await;
    // Drop, then re-add, one Endpoints name: its response proves every request before it
    // was handled (a stream is handled in order).
    let mut drop_all = subscribe(ENDPOINTS_TYPE_URL, &[]);
    drop_all.resource_names_unsubscribe = vec!["*".to_owned()];
    proxy.send(drop_all).await;
    proxy
        .send(subscribe(ENDPOINTS_TYPE_URL, &["default/reviews"]))
        .await;
    let rsp = proxy.recv().await;
    assert_eq!(rsp.type_url, ENDPOINTS_TYPE_URL);
    assert_eq!(names(&rsp), ["default/reviews"]);

    // A name subscribed before it exists arrives when it appears; nothing unsubscribed does.
    server.replace_config(&MESH.replace("reviews-v2", "later"));
    let rsp = proxy.recv().await;
    assert_eq!(rsp.type_url, SERVICE_TYPE_URL);
    assert_eq!(names(&rsp), ["default/later"]);
    assert!(rsp.removed_resources.is_empty());

    // A flood of subscriptions ends that stream with an error, not the server.
    let mut flood = connect_proxy(server.grpc).await;
    flood.first_round().await;
    let many: Vec<String> = (0..100_001).map(|i| format!("default/s{i}")).collect();
    flood
        .send(pb::DiscoveryRequest {
            type_url: SERVICE_TYPE_URL.to_owned(),
            resource_names_subscribe: many,
            ..Default::default()
        })
        .await;
    let end = tokio::time::timeout(DEADLINE, flood.rx.message())
        .await
        .expect("an answer in time");
    assert_eq!(end.err().map(|s| s.code()), Some(Code::ResourceExhausted));

    let mut again = connect_proxy(server.grpc).await;
    assert_eq!(again.first_round().await.len(), Kind::ALL.len());
}

/// A request body that is not a `DiscoveryRequest`: field 1 (`node`, a message) holds bytes
/// that do not decode as one.
#[derive(Clone, PartialEq, prost::Message)]
struct NotARequest {
    #[prost(bytes = "vec", tag = "1")]
    node: Vec<u8>,
}

/// Opens a stream that sends `first` with an arbitrary message type; the stream's outcome.
async fn raw_stream<M>(addr: SocketAddr, first: M) -> Result<Option<pb::DiscoveryResponse>, Code>
where
    M: prost::Message + Default + Send + Sync + 'static,
{
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<M, pb::DiscoveryResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/skiff.xds.v1.Discovery/Stream");
    let requests = tokio_stream::iter([first]);
    let call = async {
        let mut rsp = grpc
            .streaming(tonic::Request::new(requests), path, codec)
            .await
            .map_err(|s| s.code())?
            .into_inner();
        rsp.message().await.map_err(|s| s.code())
    };
    tokio::time::timeout(DEADLINE, call)
        .await
        .expect("an answer in time, not a stuck stream")
}

#[tokio::test]
async fn malformed_requests_get_grpc_errors_and_bogus_nonces_are_ignored() {
    let server = start().await;

    // Bytes that do not decode: a gRPC error on that stream.
    let garbage = NotARequest {
        node: vec![0xff, 0xff, 0xff, 0xff],
    };
    let code = raw_stream(server.grpc, garbage).await.expect_err("refused");
    assert!(
        matches!(code, Code::Internal | Code::InvalidArgument),
        "{code:?}"
    );

    // Another message type that happens to decode (a Service's name lands in `node`): the
    // stream is refused for what it then lacks, never served.
    let service = pb::Service {
        name: "reviews".to_owned(),
        ..Default::default()
    };
    let outcome = raw_stream(server.grpc, service).await;
    assert!(
        matches!(
            outcome,
            Err(Code::InvalidArgument | Code::NotFound | Code::Internal)
        ),
        "{outcome:?}"
    );

    // ACKs and NACKs of nonces never sent, and a subscription to a name that is not a
    // resource, leave a healthy stream healthy.
    let mut proxy = connect_proxy(server.grpc).await;
    proxy.first_round().await;
    for error_detail in [
        None,
        Some(pb::Status {
            code: 3,
            message: "x".into(),
        }),
    ] {
        proxy
            .send(pb::DiscoveryRequest {
                type_url: SERVICE_TYPE_URL.to_owned(),
                response_nonce: "no-such-nonce".to_owned(),
                error_detail,
                ..Default::default()
            })
            .await;
    }
    proxy
        .send(subscribe(
            SERVICE_TYPE_URL,
            &["host:nobody", "addr:garbage"],
        ))
        .await;
    let rsp = proxy.recv().await;
    assert_eq!(rsp.type_url, SERVICE_TYPE_URL);
    assert_eq!(rsp.removed_resources, ["addr:garbage", "host:nobody"]);

    // The server still serves new streams.
    let mut again = connect_proxy(server.grpc).await;
    assert_eq!(again.first_round().await.len(), Kind::ALL.len());
}

/// The `skiff_xds_config_reloads_total` sample for `result`, 0 when absent.
async fn reloads(admin: SocketAddr, result: &str) -> u64 {
    let metrics = http_get(admin, "/metrics").await;
    let prefix = format!("skiff_xds_config_reloads_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Reads `path` until it contains `needle`; panics with the text at the deadline.
async fn wait_log(path: &Path, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {needle:?} in {}:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_plain(what: &str, log: &str) {
    assert!(!log.trim().is_empty(), "{what}: empty log");
    assert!(
        !log.contains('\x1b'),
        "{what}: escape bytes in a log written to a file:\n{log:?}"
    );
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("child still running");
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill(2) with a pid this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM");
}

#[tokio::test]
async fn a_good_file_after_a_refused_edit_is_applied_and_counted() {
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("skiff-xds.log");
    let server = start_logging_to(Some(&log)).await;
    let ok = reloads(server.admin, "ok").await;

    server.replace_config(&MESH.replace(
        "service: reviews-v2, weight: 90",
        "service: nowhere, weight: 90",
    ));
    wait_proxies(server.admin, |b| b["lastError"].is_string()).await;
    wait_log(&log, "config refused").await;
    assert!(reloads(server.admin, "failed").await >= 1);

    // The edit is reverted: the file equals the config still served, and is news anyway.
    server.replace_config(MESH);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while reloads(server.admin, "ok").await < ok + 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reverted file was not counted as a reload ok"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reloads(server.admin, "ok").await, ok + 1);
    wait_proxies(server.admin, |b| b["lastError"].is_null()).await;
    let text = wait_log(&log, "config applied").await;
    let refused = text.find("config refused").expect("refusal logged");
    let applied = text.rfind("config applied").expect("recovery logged");
    assert!(refused < applied, "applied after the refusal:\n{text}");
    assert_plain("skiff-xds serve", &text);
}

/// The `skiff` binary of this build, beside `skiff-xds`; built once if absent.
fn skiff_bin() -> PathBuf {
    let xds = Path::new(env!("CARGO_BIN_EXE_skiff-xds"));
    let bin = xds.with_file_name("skiff");
    if !bin.is_file() {
        let profile_dir = xds.parent().expect("target/<profile>/");
        let target_dir = profile_dir.parent().expect("target/");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "skiff", "--bin", "skiff"])
            .arg("--manifest-path")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir)
            .args(["--profile", profile])
            .stdin(Stdio::null())
            .status()
            .expect("run cargo build -p skiff");
        assert!(status.success(), "cargo build -p skiff failed");
    }
    bin
}

/// `skiff run` as workload reviews-v1 of `grpc`'s control plane, logging at info to `log`;
/// returns once it printed its startup line (its first config is applied).
async fn spawn_proxy(grpc: SocketAddr, log: &Path) -> Child {
    let mut proxy = Command::new(skiff_bin())
        .arg("run")
        .arg("--xds")
        .arg(format!("http://{grpc}"))
        .args(["--workload", "reviews-v1", "--namespace", "default"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .args(["--outbound-addr", "127.0.0.1:0"])
        .args(["--inbound-addr", "127.0.0.1:0"])
        .env("SKIFF_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(log).expect("create proxy log"),
        ))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn skiff");
    let mut lines = BufReader::new(proxy.stdout.take().expect("piped stdout")).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("the proxy's startup line in time")
        .expect("read the proxy's stdout");
    assert!(
        line.as_deref()
            .is_some_and(|l| l.starts_with("skiff listening ")),
        "{line:?}; log: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    proxy
}

#[tokio::test]
async fn a_proxy_that_stops_is_logged_as_gone_not_as_a_protocol_error() {
    let logs = tempfile::tempdir().expect("temp dir");
    let cp_log = logs.path().join("skiff-xds.log");
    let proxy_log = logs.path().join("skiff.log");
    let server = start_logging_to(Some(&cp_log)).await;
    let mut proxy = spawn_proxy(server.grpc, &proxy_log).await;
    wait_log(&cp_log, "proxy connected").await;

    sigterm(&proxy);
    let status = tokio::time::timeout(DEADLINE, proxy.wait())
        .await
        .expect("skiff exits in time")
        .expect("reap skiff");
    assert!(status.success(), "skiff: {status}");
    let text = wait_log(&cp_log, "proxy disconnected").await;
    let line = text
        .lines()
        .find(|l| l.contains("proxy disconnected"))
        .unwrap_or_default();
    assert!(
        line.contains(" INFO ") && !line.contains("h2 protocol error"),
        "{line}"
    );
    assert!(
        line.contains("the proxy closed the connection") || line.contains("closed by the proxy"),
        "{line}"
    );
    assert_plain("skiff-xds serve", &text);
    assert_plain(
        "skiff run",
        &std::fs::read_to_string(&proxy_log).expect("read proxy log"),
    );
}

#[tokio::test]
async fn logs_in_files_are_plain_and_a_stopping_control_plane_closes_the_stream_quietly() {
    let logs = tempfile::tempdir().expect("temp dir");
    let cp_log = logs.path().join("skiff-xds.log");
    let proxy_log = logs.path().join("skiff.log");
    let mut server = start_logging_to(Some(&cp_log)).await;

    let mut proxy = spawn_proxy(server.grpc, &proxy_log).await;
    wait_log(&cp_log, "proxy connected").await;

    // The control plane stops: the proxy's stream ends with UNAVAILABLE, which is no error.
    sigterm(&server.child);
    let status = tokio::time::timeout(DEADLINE, server.child.wait())
        .await
        .expect("skiff-xds exits in time")
        .expect("reap skiff-xds");
    assert!(status.success(), "skiff-xds: {status}");
    wait_log(&proxy_log, "discovery stream closed").await;

    sigterm(&proxy);
    let status = tokio::time::timeout(DEADLINE, proxy.wait())
        .await
        .expect("skiff exits in time")
        .expect("reap skiff");
    assert!(status.success(), "skiff: {status}");

    let proxy_text = std::fs::read_to_string(&proxy_log).expect("read proxy log");
    let cp_text = std::fs::read_to_string(&cp_log).expect("read control-plane log");
    assert_plain("skiff run", &proxy_text);
    assert_plain("skiff-xds serve", &cp_text);
    assert!(
        !proxy_text.contains("h2 protocol error"),
        "a normal close logged as a protocol error:\n{proxy_text}"
    );
    // Reconnecting to a control plane that is gone may warn; the close itself does not.
    let closed = proxy_text
        .lines()
        .find(|l| l.contains("discovery stream closed"))
        .unwrap_or_default();
    assert!(
        closed.contains(" INFO ") && closed.contains("control plane shutting down"),
        "{closed}"
    );
}
