//! The admission webhook end to end: the real `skiff-xds serve --webhook-addr 127.0.0.1:0`
//! with a CA directory, AdmissionReviews POSTed over HTTPS by a rustls client that trusts only
//! `<tmp>/ca/ca.crt` and checks the DNS name. Waits are on the startup lines and on
//! responses, with deadlines.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader},
    process::{Child, Command},
};
use x509_parser::{
    extensions::GeneralName,
    prelude::{FromDer as _, X509Certificate},
};

const DEADLINE: Duration = Duration::from_secs(10);

/// The CA directory and the renewal are checked every second; room for a loaded machine.
const RENEW_DEADLINE: Duration = Duration::from_secs(20);

const DNS_NAME: &str = "skiff-xds.skiff-system.svc";

const MESH: &str = r#"
services:
  - name: reviews
    endpoints: [ { workload: reviews-v1 } ]
workloads:
  - name: reviews-v1
    serviceAccount: reviews
    inbound: { listen: 127.0.0.1:16006, app: 127.0.0.1:9081 }
"#;

struct Server {
    _child: Child,
    dir: tempfile::TempDir,
    webhook: SocketAddr,
    stderr: PathBuf,
}

impl Server {
    fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// POSTs `body` to `/inject`, trusting only the CA's `ca.crt`, verifying `DNS_NAME`.
    async fn post(&self, body: Vec<u8>) -> Reply {
        let client = Client::trusting(&self.ca_dir().join("ca.crt"));
        client
            .post(self.webhook, DNS_NAME, "/inject", body)
            .await
            .unwrap_or_else(|e| panic!("POST /inject: {e}\nstderr:\n{}", self.stderr()))
    }

    /// The AdmissionReview's `response`, after checking the HTTP status, version and uid.
    async fn review(&self, object: Value) -> Value {
        let reply = self.post(review(object).to_string().into_bytes()).await;
        assert_eq!(
            reply.status,
            200,
            "body: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let out: Value = serde_json::from_slice(&reply.body).expect("JSON answer");
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(out["response"]["uid"], UID);
        out["response"].clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- skiff-xds stderr ----\n{}", self.stderr());
        }
    }
}

fn serve_command(dir: &Path, extra: &[&str]) -> (Command, PathBuf) {
    let config = dir.join("mesh.yaml");
    std::fs::write(&config, MESH).expect("write mesh file");
    let stderr = dir.join("skiff-xds.stderr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff-xds"));
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("SKIFF_XDS_CA_DIR")
        .env_remove("SKIFF_XDS_WEBHOOK_ADDR")
        .env_remove("SKIFF_XDS_WEBHOOK_DNS")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .kill_on_drop(true);
    (cmd, stderr)
}

/// Starts `serve` with `<tmp>/ca` and the webhook on port 0; `extra` flags are appended.
async fn start(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("ca");
    let mut args = vec![
        "--ca-dir",
        ca.to_str().expect("utf-8 temp path"),
        "--webhook-addr",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let (mut cmd, stderr) = serve_command(dir.path(), &args);
    let mut child = cmd.spawn().expect("spawn skiff-xds");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout);
    let first = read_line(&mut lines).await;
    let second = read_line(&mut lines).await;
    let stderr_text = || std::fs::read_to_string(&stderr).unwrap_or_default();
    // The existing startup line is unchanged: exactly two addresses, nothing else.
    let rest = first
        .strip_suffix('\n')
        .and_then(|l| l.strip_prefix("skiff-xds listening "))
        .unwrap_or_else(|| panic!("startup line {first:?}; stderr:\n{}", stderr_text()));
    let parts: Vec<&str> = rest.split(' ').collect();
    assert_eq!(parts.len(), 2, "{first:?}");
    assert!(
        parts[0]
            .strip_prefix("grpc=")
            .is_some_and(|a| a.parse::<SocketAddr>().is_ok())
    );
    assert!(
        parts[1]
            .strip_prefix("admin=")
            .is_some_and(|a| a.parse::<SocketAddr>().is_ok())
    );
    let webhook: SocketAddr = second
        .strip_suffix('\n')
        .and_then(|l| l.strip_prefix("skiff-xds webhook listening "))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("webhook line {second:?}; stderr:\n{}", stderr_text()));
    assert_ne!(webhook.port(), 0);
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = lines.read_to_end(&mut sink).await;
    });
    Server {
        _child: child,
        dir,
        webhook,
        stderr,
    }
}

async fn read_line(lines: &mut BufReader<tokio::process::ChildStdout>) -> String {
    let mut line = String::new();
    tokio::time::timeout(DEADLINE, lines.read_line(&mut line))
        .await
        .expect("a line in time")
        .expect("read stdout");
    line
}

const UID: &str = "0df28fbd-5f5f-11e8-bc74-36e6bb280816";

fn review(object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "requestKind": { "group": "", "version": "v1", "kind": "Pod" },
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": { "username": "system:serviceaccount:kube-system:replicaset-controller" },
            "object": object,
            "oldObject": null,
            "dryRun": false,
        }
    })
}

/// A pod as a ReplicaSet of Deployment `web` creates it.
fn deployment_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-6d5f7c9b8d-",
            "namespace": "shop",
            "labels": { "app.kubernetes.io/name": "web", "pod-template-hash": "6d5f7c9b8d" },
            "annotations": { "skiff.dev/skip-outbound-ports": "5432" },
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-6d5f7c9b8d",
                "uid": "3f1e", "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "serviceAccountName": "web",
            "initContainers": [ { "name": "migrate", "image": "web-migrate:1.4" } ],
            "containers": [{
                "name": "web",
                "image": "nginx:1.27",
                "ports": [ { "name": "http", "containerPort": 8080, "protocol": "TCP" } ],
                "resources": {},
                "terminationMessagePath": "/dev/termination-log"
            }],
            "volumes": [ { "name": "kube-api-access-x7d2q", "projected": { "sources": [] } } ],
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst"
        }
    })
}

struct Reply {
    status: u16,
    body: Vec<u8>,
    /// The server's certificate chain as the client received it.
    chain: Vec<Vec<u8>>,
}

struct Client {
    config: Arc<rustls::ClientConfig>,
}

impl Client {
    fn trusting(ca_crt: &Path) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for der in pem_certs(ca_crt) {
            roots
                .add(CertificateDer::from(der))
                .expect("anchor accepted");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Client {
            config: Arc::new(config),
        }
    }

    async fn post(
        &self,
        addr: SocketAddr,
        name: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
        let tls = tokio::time::timeout(
            DEADLINE,
            tokio_rustls::TlsConnector::from(self.config.clone()).connect(server_name, tcp),
        )
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS: {e}"))?;
        let chain = tls
            .get_ref()
            .1
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| c.as_ref().to_vec())
            .collect();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(conn);
        let req = http::Request::post(path)
            .header(http::header::HOST, name)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let rsp = tokio::time::timeout(DEADLINE, sender.send_request(req))
            .await
            .map_err(|_| "no response in time".to_owned())?
            .map_err(|e| format!("request: {e}"))?;
        let status = rsp.status().as_u16();
        let body = rsp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(Reply {
            status,
            body,
            chain,
        })
    }
}

fn pem_certs(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).expect("read PEM");
    x509_parser::pem::Pem::iter_from_buffer(&bytes)
        .map(|p| p.expect("valid PEM").contents)
        .collect()
}

/// Applies a JSON Patch (the `add`, `remove`, `replace` and `test` operations of RFC 6902).
fn apply(doc: &mut Value, patch: &Value) {
    for op in patch.as_array().expect("a patch is a list") {
        let path = op["path"].as_str().expect("path");
        let steps: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect();
        let (last, parents) = steps.split_last().expect("not the root");
        let mut node = &mut *doc;
        for step in parents {
            node = match node {
                Value::Object(m) => m.get_mut(step).expect("parent exists"),
                Value::Array(items) => &mut items[step.parse::<usize>().expect("index")],
                other => panic!("{path}: cannot descend into {other}"),
            };
        }
        let value = op.get("value").cloned();
        match (op["op"].as_str().expect("op"), node) {
            ("add" | "replace", Value::Object(m)) => {
                m.insert(last.clone(), value.expect("value"));
            }
            ("remove", Value::Object(m)) => {
                m.remove(last).expect("removed member exists");
            }
            ("add", Value::Array(items)) if last == "-" => items.push(value.expect("value")),
            ("add", Value::Array(items)) => {
                items.insert(last.parse().expect("index"), value.expect("value"))
            }
            ("replace", Value::Array(items)) => {
                items[last.parse::<usize>().expect("index")] = value.expect("value")
            }
            ("remove", Value::Array(items)) => {
                items.remove(last.parse().expect("index"));
            }
            (other, node) => panic!("{other} at {path} on {node}"),
        }
    }
}

/// What `skiff-xds inject -f` prints for `object`, as JSON.
fn cli_inject(object: &Value) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pod.json");
    std::fs::write(&file, object.to_string()).expect("write pod");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff-xds"))
        .arg("inject")
        .arg("-f")
        .arg(&file)
        .env_remove("SKIFF_INJECT_IMAGE")
        .env_remove("SKIFF_INJECT_CONTROL_PLANE")
        .output()
        .expect("run skiff-xds inject");
    assert!(
        out.status.success(),
        "inject failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    serde_saphyr::from_str(&text).expect("inject prints one document")
}

#[tokio::test]
async fn a_deployment_pod_is_patched_into_what_inject_prints() {
    let server = start(&[]).await;
    let pod = deployment_pod();
    let response = server.review(pod.clone()).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().expect("patch"))
            .expect("base64"),
    )
    .expect("the patch is JSON");
    let mut patched = pod.clone();
    apply(&mut patched, &patch);
    assert_ne!(patched, pod);
    assert_eq!(patched, cli_inject(&pod));
    let init: Vec<&str> = patched["spec"]["initContainers"]
        .as_array()
        .expect("init containers")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(init, ["skiff-init", "skiff-proxy", "migrate"]);
}

#[tokio::test]
async fn host_network_pods_are_allowed_unpatched() {
    let server = start(&[]).await;
    let mut pod = deployment_pod();
    pod["spec"]["hostNetwork"] = json!(true);
    let response = server.review(pod).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
    assert!(response.get("patchType").is_none(), "{response}");
}

#[tokio::test]
async fn a_bad_annotation_is_denied_with_400_naming_it() {
    let server = start(&[]).await;
    let mut pod = deployment_pod();
    pod["metadata"]["annotations"] = json!({ "skiff.dev/proxy-memory-request": "a lot" });
    let response = server.review(pod).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 400);
    let message = response["status"]["message"].as_str().expect("message");
    assert!(
        message.contains("skiff.dev/proxy-memory-request") && message.contains("a lot"),
        "{message}"
    );
    assert!(response.get("patch").is_none());
}

#[tokio::test]
async fn a_body_that_is_not_an_admission_review_is_http_400() {
    let server = start(&[]).await;
    for body in [
        b"\x00\x01 not json".to_vec(),
        br#"{"apiVersion":"v1","kind":"Pod"}"#.to_vec(),
    ] {
        let reply = server.post(body).await;
        assert_eq!(reply.status, 400);
        let text = String::from_utf8(reply.body).expect("plain text");
        assert!(!text.trim().is_empty());
    }
    // Over the body limit: refused without being read whole.
    let reply = server.post(vec![b' '; 5 * 1024 * 1024]).await;
    assert_eq!(reply.status, 413);
    // The server is still there.
    let response = server.review(deployment_pod()).await;
    assert_eq!(response["allowed"], true);
}

#[tokio::test]
async fn the_certificate_chains_to_the_ca_and_names_the_service() {
    let server = start(&[
        "--webhook-dns",
        "skiff-xds.skiff-system.svc,skiff-xds.skiff-system.svc.cluster.local",
    ])
    .await;
    let reply = server
        .post(review(deployment_pod()).to_string().into_bytes())
        .await;
    assert_eq!(reply.status, 200);
    let anchors = pem_certs(&server.ca_dir().join("ca.crt"));
    let leaf = verify_server(&reply.chain, &anchors);
    assert_eq!(
        dns_names(&leaf),
        [
            "skiff-xds.skiff-system.svc",
            "skiff-xds.skiff-system.svc.cluster.local"
        ]
    );
    let (_, cert) = X509Certificate::from_der(&leaf).expect("leaf parses");
    let eku = cert
        .extended_key_usage()
        .expect("eku")
        .expect("present")
        .value;
    assert!(eku.server_auth && !eku.client_auth, "serverAuth only");
    assert!(!cert.is_ca());

    // Another name is refused by the client: the name check can fail.
    let client = Client::trusting(&server.ca_dir().join("ca.crt"));
    let refused = client
        .post(server.webhook, "skiff-xds.other.svc", "/inject", Vec::new())
        .await
        .err()
        .expect("a name not in the certificate is refused");
    assert!(refused.contains("TLS"), "{refused}");
}

#[tokio::test]
async fn the_certificate_is_renewed_at_half_its_lifetime() {
    let server = start(&["--cert-lifetime", "4s"]).await;
    let first = server.post(Vec::new()).await.chain;
    let deadline = tokio::time::Instant::now() + RENEW_DEADLINE;
    loop {
        let now = server.post(Vec::new()).await.chain;
        if now != first {
            let anchors = pem_certs(&server.ca_dir().join("ca.crt"));
            verify_server(&now, &anchors);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not renewed in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_replaced_ca_reissues_the_certificate() {
    let server = start(&[]).await;
    let before = server.post(Vec::new()).await.chain;

    // A new CA made aside, then renamed into place (key first), as a Secret update lands.
    let other = tempfile::tempdir().expect("temp dir");
    let next = other.path().join("ca");
    skiff_xds::ca::Authority::open(&next).expect("a new CA");
    for file in ["ca.key", "ca.crt"] {
        let staged = server.ca_dir().join(format!(".{file}.next"));
        std::fs::copy(next.join(file), &staged).expect("stage");
        std::fs::rename(&staged, server.ca_dir().join(file)).expect("rename into place");
    }
    let next_anchors = pem_certs(&next.join("ca.crt"));
    let client = Client::trusting(&next.join("ca.crt"));
    let deadline = tokio::time::Instant::now() + RENEW_DEADLINE;
    let chain = loop {
        match client
            .post(server.webhook, DNS_NAME, "/inject", Vec::new())
            .await
        {
            Ok(reply) => break reply.chain,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still not served by the new CA: {e}\n{}",
                    server.stderr()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_ne!(chain, before);
    verify_server(&chain, &next_anchors);
}

#[tokio::test]
async fn without_a_ca_the_webhook_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut cmd, stderr) = serve_command(dir.path(), &["--webhook-addr", "127.0.0.1:0"]);
    let status = tokio::time::timeout(DEADLINE, cmd.status())
        .await
        .expect("exits in time")
        .expect("runs");
    assert!(!status.success());
    let text = std::fs::read_to_string(stderr).expect("stderr");
    assert!(text.contains("--ca-dir"), "{text}");

    let ca = dir.path().join("ca");
    let ca = ca.to_str().expect("utf-8 temp path");
    let (mut cmd, stderr) = serve_command(
        dir.path(),
        &[
            "--ca-dir",
            ca,
            "--webhook-addr",
            "127.0.0.1:0",
            "--webhook-dns",
            "Bad_Name",
        ],
    );
    let status = tokio::time::timeout(DEADLINE, cmd.status())
        .await
        .expect("exits in time")
        .expect("runs");
    assert!(!status.success());
    let text = std::fs::read_to_string(stderr).expect("stderr");
    assert!(text.contains("Bad_Name"), "{text}");
}

/// Verifies `chain` (leaf first) for TLS server use against `anchors`; returns the leaf.
fn verify_server(chain: &[Vec<u8>], anchors: &[Vec<u8>]) -> Vec<u8> {
    let anchor_ders: Vec<CertificateDer<'_>> = anchors
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let trust: Vec<_> = anchor_ders
        .iter()
        .map(|d| webpki::anchor_from_trusted_cert(d).expect("anchor parses"))
        .collect();
    let leaf = CertificateDer::from(chain[0].as_slice());
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let ee = webpki::EndEntityCert::try_from(&leaf).expect("leaf parses");
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &trust,
        &intermediates,
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .expect("the chain verifies to the CA");
    let name = ServerName::try_from(DNS_NAME).expect("name");
    ee.verify_is_valid_for_subject_name(&name)
        .expect("valid for the service name");
    chain[0].clone()
}

fn dns_names(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).expect("parses");
    cert.subject_alternative_name()
        .expect("san parses")
        .expect("san present")
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => (*d).to_owned(),
            other => panic!("only DNS names expected, found {other:?}"),
        })
        .collect()
}
