//! xDS under load: HTTP/1.1, h2 and gRPC traffic through two real `skiff --xds` sidecars while
//! the control plane pushes 100 config changes, and while it is SIGKILLed and restarted on the
//! same port. Not one request may fail, and the proxies must end in sync with the file.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use http::{StatusCode, Version};
use skiff_api::resource::Kind;
use skiff_xds::{pb::EchoRequest, server::ProxiesReport};
use tokio::{sync::mpsc, task::JoinSet, time::Instant};

use crate::{
    grpc::grpc_client,
    support::{
        STEP, client,
        client::{H1Conn, H2Conn},
        control_plane::{self, ControlPlane, replace_file},
        eventually,
        proxy::{Proxy, ProxyBuilder},
        upstream::{GrpcUpstream, HttpUpstream},
        within,
    },
};

/// The sidecars' workloads; each runs one proxy.
const WORKLOADS: [&str; 2] = ["client-a", "client-b"];
/// Pause between one client's requests: steady traffic without spinning the 2-core box.
const PACE: Duration = Duration::from_millis(10);
/// Reconnection after a control-plane restart: jittered backoff from 100 ms (cap 30 s).
const RECONNECT: Duration = Duration::from_secs(40);

/// `web` splits h1 traffic between `web-v1` and `web-v2`: all to v1, or all to v2.
fn web_services(v1: SocketAddr, v2: SocketAddr, to_v2: bool) -> String {
    let (w1, w2) = if to_v2 { (0, 100) } else { (100, 0) };
    format!(
        r#"
  - name: web
    routes:
      - name: split
        backendRefs: [ {{ service: web-v1, weight: {w1} }}, {{ service: web-v2, weight: {w2} }} ]
  - name: web-v1
    endpoints: [ {{ address: "{v1}" }} ]
  - name: web-v2
    endpoints: [ {{ address: "{v2}" }} ]
"#
    )
}

/// The sidecars' workloads. Their `inbound` addresses are never bound: the proxies get
/// `--inbound-addr 127.0.0.1:0`, and no test traffic goes inbound.
fn workloads() -> String {
    let mut out = String::from("workloads:\n");
    for (i, w) in WORKLOADS.iter().enumerate() {
        let (listen, app) = (2 * i + 1, 2 * i + 2);
        out.push_str(&format!(
            "  - name: {w}\n    inbound: {{ listen: \"127.0.0.1:{listen}\", app: \"127.0.0.1:{app}\" }}\n"
        ));
    }
    out
}

/// Per type, the version a proxy holds once it has applied `yaml` (the control plane's
/// `system_version_info`, computed the way it does).
fn kind_versions(yaml: &str) -> BTreeMap<String, String> {
    let mesh = skiff_api::load(yaml).unwrap_or_else(|e| panic!("invalid test mesh: {e}"));
    let resources = skiff_api::resource::compile(&mesh);
    Kind::ALL
        .iter()
        .map(|&k| (k.message_name().to_owned(), resources.kind_version(k)))
        .collect()
}

/// `/proxies` from a control plane's admin port; `None` while it does not answer.
async fn proxies(admin: SocketAddr) -> Option<ProxiesReport> {
    let r = client::try_send_h1(admin, client::get("admin", "/proxies"))
        .await
        .ok()?;
    assert_eq!(r.status, StatusCode::OK, "/proxies: {r:?}");
    Some(
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("/proxies is not a report: {e}: {}", r.text())),
    )
}

/// True when each workload has exactly one stream, subscribed to services, and has ACKed
/// `want` for every type it subscribed to (so `sent == acked` everywhere) with no NACK.
fn is_synced(report: &ProxiesReport, want: &BTreeMap<String, String>) -> bool {
    WORKLOADS.iter().all(|w| {
        let mine: Vec<_> = report.proxies.iter().filter(|p| p.workload == *w).collect();
        let [p] = mine.as_slice() else { return false };
        p.types.contains_key(Kind::Service.message_name())
            && p.types.iter().all(|(kind, t)| {
                t.in_sync
                    && t.sent == t.acked
                    && t.acked.as_ref() == want.get(kind)
                    && t.last_nack.is_none()
            })
    })
}

/// Polls `/proxies` until both sidecars have ACKed `want`; panics with the last report.
async fn wait_synced(
    admin: SocketAddr,
    want: &BTreeMap<String, String>,
    limit: Duration,
) -> ProxiesReport {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        if let Some(report) = proxies(admin).await {
            if is_synced(&report, want) {
                return report;
            }
            last = Some(report);
        }
        if Instant::now() >= deadline {
            panic!("proxies not in sync with {want:?} after {limit:?}; last /proxies: {last:#?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn sidecar(grpc: SocketAddr, workload: &str) -> Proxy {
    ProxyBuilder::xds(&format!("http://{grpc}"))
        .workload(workload, "default")
        .start()
        .await
}

/// One h1 request to `web` on a fresh connection: which upstream served it.
async fn web_served_by(proxy: &Proxy) -> String {
    let r = client::send_h1(proxy.outbound, client::get("web", "/check")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.served_by().unwrap_or("?").to_owned()
}

/// Whether the proxy knows `host` (the proxy may subscribe on demand): one h1 request.
async fn warm_up_h1(proxy: &Proxy, host: &str) {
    let r = client::send_h1(proxy.outbound, client::get(host, "/warm-up")).await;
    assert_eq!(r.status, StatusCode::OK, "warm-up of {host}: {r:?}");
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Traffic {
    /// HTTP/1.1 requests on one kept-alive connection.
    Http1KeepAlive,
    /// HTTP/1.1 requests, each on a new connection.
    Http1Fresh,
    /// h2c (prior knowledge) requests, two in flight on one connection.
    Http2,
    GrpcUnary,
    /// Replies on one long-lived bidi stream.
    GrpcStream,
}

/// What the load clients saw: completed requests per (proxy, traffic), and every failure.
#[derive(Default)]
struct Tally(Mutex<Seen>);

#[derive(Clone, Debug, Default)]
struct Seen {
    ok: BTreeMap<(usize, Traffic), usize>,
    failures: Vec<String>,
}

impl Tally {
    fn seen(&self) -> Seen {
        self.0.lock().expect("tally lock").clone()
    }

    fn count(&self, proxy: usize, t: Traffic) -> usize {
        let seen = self.0.lock().expect("tally lock");
        seen.ok.get(&(proxy, t)).copied().unwrap_or(0)
    }
}

/// One load client: which proxy it sends through, what it sends, where it counts.
struct Client {
    proxy: usize,
    outbound: SocketAddr,
    traffic: Traffic,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
}

impl Client {
    fn is_running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }

    fn ok(&self) {
        let mut seen = self.tally.0.lock().expect("tally lock");
        *seen.ok.entry((self.proxy, self.traffic)).or_default() += 1;
    }

    fn fail(&self, what: String) {
        let mut seen = self.tally.0.lock().expect("tally lock");
        let at = format!("proxy {} {:?}", self.proxy, self.traffic);
        seen.failures.push(format!("{at}: {what}"));
    }
}

/// Clients sending continuously until `finish`.
struct Load {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    tasks: JoinSet<()>,
}

impl Load {
    fn new() -> Load {
        Load {
            tally: Arc::default(),
            stop: Arc::default(),
            tasks: JoinSet::new(),
        }
    }

    /// Starts one client of `traffic` through the proxy numbered `proxy`.
    fn spawn(&mut self, proxy: usize, outbound: SocketAddr, traffic: Traffic) {
        let c = Client {
            proxy,
            outbound,
            traffic,
            tally: self.tally.clone(),
            stop: self.stop.clone(),
        };
        match traffic {
            Traffic::Http1KeepAlive | Traffic::Http1Fresh => self.tasks.spawn(h1_client(c)),
            Traffic::Http2 => self.tasks.spawn(h2_client(c)),
            Traffic::GrpcUnary => self.tasks.spawn(grpc_unary_client(c)),
            Traffic::GrpcStream => self.tasks.spawn(grpc_stream_client(c)),
        };
    }

    /// Stops every client (a stream ends cleanly) and returns what they saw.
    async fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        while let Some(joined) = within("load clients stop", STEP, self.tasks.join_next()).await {
            joined.expect("a load client panicked");
        }
        self.tally.seen()
    }
}

/// `web` over HTTP/1.1: on one kept-alive connection (a new one only after a failure), or
/// on a new connection per request.
async fn h1_client(c: Client) {
    let mut kept = match c.traffic {
        Traffic::Http1KeepAlive => Some(H1Conn::connect(c.outbound).await),
        _ => None,
    };
    while c.is_running() {
        let req = client::get("web", "/load");
        let sent = match &mut kept {
            Some(conn) => conn.try_send(req).await,
            None => client::try_send_h1(c.outbound, req).await,
        };
        match sent {
            Ok(r) if r.status.is_success() && r.served_by().is_some() => c.ok(),
            Ok(r) => c.fail(format!("status {} reason {:?}", r.status, r.reason())),
            Err(e) => {
                c.fail(e);
                if let Some(conn) = &mut kept {
                    *conn = H1Conn::connect(c.outbound).await;
                }
            }
        }
        tokio::time::sleep(PACE).await;
    }
}

/// `api` over h2c, two requests in flight at a time on one connection; the upstream must
/// have been spoken to in HTTP/2 as well.
async fn h2_client(c: Client) {
    let mut conn = H2Conn::connect(c.outbound).await;
    while c.is_running() {
        let (a, b) = tokio::join!(
            conn.try_send(client::get("api", "/load/a")),
            conn.try_send(client::get("api", "/load/b"))
        );
        let mut broken = false;
        for r in [a, b] {
            match r {
                Ok(r)
                    if r.status.is_success()
                        && r.version == Version::HTTP_2
                        && r.header("x-echo-version") == Some("HTTP/2.0") =>
                {
                    c.ok()
                }
                Ok(r) => c.fail(format!(
                    "status {} reason {:?} upstream version {:?}",
                    r.status,
                    r.reason(),
                    r.header("x-echo-version")
                )),
                Err(e) => {
                    c.fail(e);
                    broken = true;
                }
            }
        }
        if broken {
            conn = H2Conn::connect(c.outbound).await;
        }
        tokio::time::sleep(PACE).await;
    }
}

/// Unary `echo` calls on one tonic channel; anything but OK with the message echoed fails.
async fn grpc_unary_client(c: Client) {
    let mut client = grpc_client(c.outbound, "echo").await;
    let mut i = 0u64;
    while c.is_running() {
        let message = format!("u{i}");
        let call = client.unary(EchoRequest {
            message: message.clone(),
            fail_with: 0,
        });
        match within("unary call", STEP, call).await {
            Ok(r) if r.get_ref().message == message => c.ok(),
            Ok(r) => c.fail(format!("sent {message:?}, got {:?}", r.get_ref())),
            Err(status) => c.fail(format!("{status:?}")),
        }
        i += 1;
        tokio::time::sleep(PACE).await;
    }
}

/// One bidi `echo` stream for the whole run, ping-pong: message i+1 goes after reply i. Any
/// error ends it (so a count that keeps growing proves the same stream is still open); on
/// stop it half-closes and expects a clean end (`grpc-status: 0`).
async fn grpc_stream_client(c: Client) {
    let mut client = grpc_client(c.outbound, "echo").await;
    let (tx, rx) = mpsc::channel::<EchoRequest>(4);
    let requests =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let message = |i: u64| EchoRequest {
        message: format!("s{i}"),
        fail_with: 0,
    };
    // The first message goes before the call, so its headers are not held back waiting for data.
    tx.send(message(0)).await.expect("queue the first message");
    let mut replies = match within("bidi call", STEP, client.bidi(requests)).await {
        Ok(r) => r.into_inner(),
        Err(status) => return c.fail(format!("open: {status:?}")),
    };
    let mut i = 0u64;
    loop {
        match within("bidi reply", STEP, replies.message()).await {
            Ok(Some(r)) if r.message == format!("s{i}") => c.ok(),
            Ok(Some(r)) => return c.fail(format!("reply {i}: {r:?}")),
            Ok(None) => return c.fail(format!("ended before reply {i}")),
            Err(status) => return c.fail(format!("reply {i}: {status:?}")),
        }
        if !c.is_running() {
            break;
        }
        tokio::time::sleep(PACE).await;
        i += 1;
        if tx.send(message(i)).await.is_err() {
            return c.fail(format!("request stream closed at {i}"));
        }
    }
    drop(tx);
    match within("bidi end", STEP, replies.message()).await {
        Ok(None) => {}
        Ok(Some(r)) => c.fail(format!("a reply after the last: {r:?}")),
        Err(status) => c.fail(format!("end: {status:?}")),
    }
}

/// Asserts that no client saw a failure and that each (proxy, traffic) completed requests.
fn assert_clean(seen: &Seen, kinds: &[Traffic]) {
    let failures = &seen.failures;
    assert!(
        failures.is_empty(),
        "{} failed requests, first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    for proxy in 0..WORKLOADS.len() {
        for &t in kinds {
            assert!(
                seen.ok.get(&(proxy, t)).is_some_and(|&n| n > 0),
                "proxy {proxy} completed no {t:?}"
            );
        }
    }
}

/// 100 file edits, each one waited for until both sidecars ACK it, while h1, h2 and gRPC
/// (unary and one bidi stream per proxy) keep going: every response is a success and the
/// streams opened before the first push still carry messages after the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_pushes_fail_no_request() {
    const PUSHES: usize = 100;
    const TRAFFIC: [Traffic; 4] = [
        Traffic::Http1KeepAlive,
        Traffic::Http2,
        Traffic::GrpcUnary,
        Traffic::GrpcStream,
    ];
    let (v1, v2) = (
        HttpUpstream::start("v1").await,
        HttpUpstream::start("v2").await,
    );
    let api = HttpUpstream::start("api").await;
    let echo = GrpcUpstream::start("echo").await;
    // Every push changes one Service of each protocol: the h1 split flips, the h2 route's
    // timeout and the gRPC route's header match take the push number.
    let mesh = |push: usize| {
        format!(
            r#"
services:
{web}
  - name: api
    protocol: http2
    endpoints: [ {{ address: "{api}" }} ]
    routes:
      - name: bounded
        timeouts: {{ request: {timeout}s }}
  - name: echo
    protocol: grpc
    endpoints: [ {{ address: "{echo}" }} ]
    routes:
      - name: tagged
        matches: [ {{ headers: [ {{ name: x-push, value: "{push}" }} ] }} ]
{workloads}"#,
            web = web_services(v1.addr(), v2.addr(), push % 2 == 1),
            api = api.addr(),
            timeout = 10 + push,
            echo = echo.addr(),
            workloads = workloads(),
        )
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mesh.yaml");
    replace_file(&path, &mesh(0));
    let cp = control_plane::in_process(&path).await;
    let proxies = [
        sidecar(cp.grpc_addr, WORKLOADS[0]).await,
        sidecar(cp.grpc_addr, WORKLOADS[1]).await,
    ];

    // Whether services are subscribed up front or on first use, each is known before load.
    for p in &proxies {
        for host in ["web", "web-v1", "web-v2"] {
            warm_up_h1(p, host).await;
        }
        let r = H2Conn::connect(p.outbound)
            .await
            .send(client::get("api", "/warm-up"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "warm-up of api: {r:?}");
        let reply = within(
            "unary warm-up",
            STEP,
            grpc_client(p.outbound, "echo").await.unary(EchoRequest {
                message: "warm-up".into(),
                fail_with: 0,
            }),
        )
        .await
        .expect("warm-up of echo");
        assert_eq!(reply.get_ref().served_by, "echo");
    }
    let mut want = kind_versions(&mesh(0));
    wait_synced(cp.admin_addr, &want, STEP).await;

    let mut load = Load::new();
    for (i, p) in proxies.iter().enumerate() {
        for t in TRAFFIC {
            load.spawn(i, p.outbound, t);
        }
    }
    let tally = load.tally.clone();
    eventually("every client has completed a request", STEP, || async {
        (0..proxies.len()).all(|i| TRAFFIC.iter().all(|&t| tally.count(i, t) > 0))
    })
    .await;

    let started = Instant::now();
    for push in 1..=PUSHES {
        let text = mesh(push);
        let next = kind_versions(&text);
        assert_ne!(
            next[Kind::Service.message_name()],
            want[Kind::Service.message_name()],
            "push {push} changes the services"
        );
        want = next;
        replace_file(&path, &text);
        wait_synced(cp.admin_addr, &want, STEP).await;
        // An ACK follows the install, so the very next request sees the new split.
        let expected = if push % 2 == 1 { "v2" } else { "v1" };
        for p in &proxies {
            assert_eq!(web_served_by(p).await, expected, "after push {push}");
        }
    }
    let pushing = started.elapsed();

    // The streams opened before the first push carry messages after the last one.
    let after_pushes: Vec<usize> = (0..proxies.len())
        .map(|i| tally.count(i, Traffic::GrpcStream))
        .collect();
    eventually(
        "the gRPC streams carry messages after the last push",
        STEP,
        || async {
            (0..proxies.len()).all(|i| tally.count(i, Traffic::GrpcStream) > after_pushes[i])
        },
    )
    .await;
    let seen = load.finish().await;
    assert_clean(&seen, &TRAFFIC);
    eprintln!(
        "{PUSHES} pushes applied in {pushing:?}; completed: {:?}",
        seen.ok
    );

    assert!(
        api.requests().iter().all(|s| s.version == Version::HTTP_2),
        "api is spoken to in HTTP/2"
    );
    assert!(!v1.requests().is_empty() && !v2.requests().is_empty());
    assert_eq!(
        echo.calls(),
        // Per proxy: the warm-up, the unary calls, one stream.
        proxies.len() * 2
            + (0..proxies.len())
                .map(|i| seen.ok[&(i, Traffic::GrpcUnary)])
                .sum::<usize>(),
        "one bidi call per proxy: the streams were never reopened"
    );
    cp.stop().await.expect("control plane stops");
}

/// The control plane (a real `skiff-xds serve` process) is SIGKILLed under h1 load and
/// restarted on the same gRPC port: no request fails, both sidecars reconnect on their own
/// and resync, and an edit made after the restart reaches their traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_killed_and_restarted() {
    const TRAFFIC: [Traffic; 2] = [Traffic::Http1KeepAlive, Traffic::Http1Fresh];
    /// Requests each proxy must complete while the control plane is gone.
    const DURING_OUTAGE: usize = 200;
    let (v1, v2) = (
        HttpUpstream::start("v1").await,
        HttpUpstream::start("v2").await,
    );
    let mesh = |to_v2: bool| {
        format!(
            "services:\n{}{}",
            web_services(v1.addr(), v2.addr(), to_v2),
            workloads()
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mesh.yaml");
    replace_file(&path, &mesh(false));
    let want = kind_versions(&mesh(false));

    let mut cp = ControlPlane::start(&path, "127.0.0.1:0".parse().expect("literal")).await;
    let grpc = cp.grpc;
    let mut proxies = [
        sidecar(grpc, WORKLOADS[0]).await,
        sidecar(grpc, WORKLOADS[1]).await,
    ];
    for p in &proxies {
        for host in ["web", "web-v1", "web-v2"] {
            warm_up_h1(p, host).await;
        }
        assert_eq!(web_served_by(p).await, "v1");
    }
    wait_synced(cp.admin, &want, STEP).await;

    let mut load = Load::new();
    for (i, p) in proxies.iter().enumerate() {
        for t in TRAFFIC {
            load.spawn(i, p.outbound, t);
        }
    }
    let tally = load.tally.clone();
    let served = |i: usize| TRAFFIC.iter().map(|&t| tally.count(i, t)).sum::<usize>();
    eventually("every client has completed a request", STEP, || async {
        (0..proxies.len()).all(|i| TRAFFIC.iter().all(|&t| tally.count(i, t) > 0))
    })
    .await;

    cp.kill().await;
    let at_kill: Vec<usize> = (0..proxies.len()).map(served).collect();
    eventually(
        "the proxies serve without a control plane",
        STEP,
        || async { (0..proxies.len()).all(|i| served(i) >= at_kill[i] + DURING_OUTAGE) },
    )
    .await;
    for p in &proxies {
        assert_eq!(
            p.ready_status().await,
            Some(StatusCode::OK),
            "ready while the control plane is gone"
        );
    }

    let restarted = Instant::now();
    let cp = ControlPlane::start(&path, grpc).await;
    assert_eq!(cp.grpc, grpc, "the proxies' configured address");
    let report = wait_synced(cp.admin, &want, RECONNECT).await;
    let resynced = restarted.elapsed();
    let status = cp.status().await;
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "skiff-xds status: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    for w in WORKLOADS {
        let types = report
            .proxies
            .iter()
            .find(|p| p.workload == w)
            .map_or(0, |p| p.types.len());
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(w))
            .unwrap_or_else(|| panic!("no row for {w} in:\n{table}"));
        assert!(
            row.matches("SYNCED").count() == types && !row.contains("STALE"),
            "{w} is synced on all its {types} types:\n{table}"
        );
    }
    for p in &mut proxies {
        assert!(p.exit_status().is_none(), "the sidecar was not restarted");
    }

    // The restarted control plane's watch is live: an edit reaches the proxies' traffic.
    replace_file(&path, &mesh(true));
    for p in &proxies {
        eventually(
            "the edit after the restart reaches the proxy",
            STEP,
            || async { web_served_by(p).await == "v2" },
        )
        .await;
        for _ in 0..10 {
            assert_eq!(web_served_by(p).await, "v2", "the new split holds");
        }
    }
    wait_synced(cp.admin, &kind_versions(&mesh(true)), STEP).await;

    let seen = load.finish().await;
    assert_clean(&seen, &TRAFFIC);
    eprintln!(
        "resynced {resynced:?} after the restart; completed: {:?}",
        seen.ok
    );
}
