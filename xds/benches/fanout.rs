//! Control-plane fan-out benchmark: one `skiff-xds serve` process, N discovery streams from
//! in-process tonic clients that subscribe and ACK like proxies, then K edits of the mesh file
//! (atomic rename; under `kube-churn` an EndpointSlice replaced in the fake API server), each
//! timed from the change until every stream has received it.
//!
//! Run with `cargo bench -p skiff-xds --bench fanout`. Knobs (environment):
//! `SKIFF_BENCH_STREAMS` (default 1000), `SKIFF_BENCH_EDITS` (20),
//! `SKIFF_BENCH_STREAMS_PER_CONN` (1: one HTTP/2 connection per stream, as real proxies;
//! more multiplexes that many streams on one connection), `SKIFF_BENCH_SCENARIO`:
//! `split` (default: each edit changes the hot service's traffic split, a Service change;
//! 200 services of 3 endpoints) or `churn` (pod churn: each edit changes one endpoint of the
//! hot service, an Endpoints change, in a mesh of 1,000 services of 10 endpoints, 10,000 in
//! all; run it with `SKIFF_BENCH_STREAMS=100`) or `kube-churn` (the same churn through
//! `serve --kubernetes`: a fake API server in this process holds 1,000 Services with an
//! EndpointSlice of 10 endpoints each and the 10,000 meshed pods behind them, and each edit
//! replaces the hot service's EndpointSlice; needs `--features kubernetes`). Prints a
//! Markdown summary, with the responses the streams received during the edits by type.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::SocketAddr,
    path::Path,
    process::{ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use skiff_api::{
    pb::{self, discovery_client::DiscoveryClient},
    resource::{ENDPOINTS_TYPE_URL, Kind, MESH_SETTINGS_NAME, SERVICE_TYPE_URL},
};
use skiff_xds::server::ProxiesReport;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
    time::{Instant, timeout},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// Which change each edit makes, and the mesh around it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// The hot service's traffic split (a Service resource).
    Split,
    /// One endpoint of the hot service (its Endpoints resource), in a large mesh.
    Churn,
    /// `Churn` with the mesh from a (fake) Kubernetes API server.
    KubeChurn,
}

impl Scenario {
    /// Services in the generated mesh besides the edited one and its two versions.
    fn services(self) -> usize {
        match self {
            Scenario::Split => 200,
            Scenario::Churn | Scenario::KubeChurn => 1000,
        }
    }

    /// Endpoints of each of those services.
    fn endpoints(self) -> usize {
        match self {
            Scenario::Split => 3,
            Scenario::Churn | Scenario::KubeChurn => 10,
        }
    }

    /// The type of the response that carries an edit.
    fn changed_type(self) -> &'static str {
        match self {
            Scenario::Split => SERVICE_TYPE_URL,
            Scenario::Churn | Scenario::KubeChurn => ENDPOINTS_TYPE_URL,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scenario::Split => "split",
            Scenario::Churn => "churn",
            Scenario::KubeChurn => "kube-churn",
        }
    }
}
/// Workloads in the mesh; stream `i` is a replica of workload `i % WORKLOADS`.
const WORKLOADS: usize = 100;
/// Authorization policies (every stream subscribes to them all with `*`).
const POLICIES: usize = 10;
/// Services each stream subscribes to (Service and Endpoints), the edited one included.
const SERVICES_PER_STREAM: usize = 5;
/// The service every stream subscribes to and every edit changes (its traffic split).
const HOT: &str = "catalog";
/// Namespace of everything in the generated mesh.
const NS: &str = "default";

/// How long one phase may take before the run is called failed.
const PHASE_LIMIT: Duration = Duration::from_secs(120);
/// How long one edit may take to reach every stream.
const EDIT_LIMIT: Duration = Duration::from_secs(30);

/// The control plane's file-watcher debounce (`source::file::DEBOUNCE`), stated in the report.
const WATCHER_DEBOUNCE_MS: u64 = 100;

struct Knobs {
    streams: usize,
    edits: usize,
    per_conn: usize,
    scenario: Scenario,
}

fn knob(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("{name}={v:?}: expected a positive integer"),
        },
        Err(_) => Ok(default),
    }
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fanout: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fanout: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let scenario = match std::env::var("SKIFF_BENCH_SCENARIO").as_deref() {
        Err(_) | Ok("split") => Scenario::Split,
        Ok("churn") => Scenario::Churn,
        Ok("kube-churn") => Scenario::KubeChurn,
        Ok(other) => {
            bail!("SKIFF_BENCH_SCENARIO={other:?}: expected split, churn or kube-churn")
        }
    };
    let knobs = Knobs {
        streams: knob("SKIFF_BENCH_STREAMS", 1000)?,
        edits: knob("SKIFF_BENCH_EDITS", 20)?,
        per_conn: knob("SKIFF_BENCH_STREAMS_PER_CONN", 1)?,
        scenario,
    };
    let conns = knobs.streams.div_ceil(knobs.per_conn);
    // Both processes hold one socket per connection; the control plane inherits the limit.
    raise_nofile(conns as u64 + 256)?;

    let dir = tempfile::Builder::new()
        .prefix("skiff-fanout-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mesh_path = dir.path().join("mesh.yaml");
    let log_path = dir.path().join("skiff-xds.log");
    #[cfg(feature = "kubernetes")]
    let api = match scenario {
        Scenario::KubeChurn => Some(kube::cluster(dir.path()).await),
        _ => None,
    };
    let source = match scenario {
        #[cfg(feature = "kubernetes")]
        Scenario::KubeChurn => Source::Kube(api.as_ref().map(|a| a.1.clone()).unwrap_or_default()),
        #[cfg(not(feature = "kubernetes"))]
        Scenario::KubeChurn => bail!("kube-churn needs `--features kubernetes`"),
        _ => {
            std::fs::write(&mesh_path, mesh(scenario, 0)).context("writing the mesh file")?;
            Source::File(mesh_path.clone())
        }
    };
    let cp = ControlPlane::start(&source, &log_path).await?;
    let idle = cp.memory()?;
    let cpu_idle = cp.cpu()?;
    eprintln!(
        "fanout: control plane pid {} grpc={} admin={}; opening {} streams on {conns} connections",
        cp.pid, cp.grpc, cp.admin, knobs.streams
    );

    // Connect storm: every stream opened at once, as after a control-plane restart.
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let counts = Arc::new(TypeCounts::default());
    let storm = Instant::now();
    let mut channels = Vec::with_capacity(conns);
    for _ in 0..conns {
        let channel = Endpoint::from_shared(format!("http://{}", cp.grpc))?
            .tcp_nodelay(true)
            .connect_lazy();
        channels.push(channel);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for idx in 0..knobs.streams {
        let channel = channels[idx / knobs.per_conn].clone();
        tasks.spawn(run_stream(
            idx,
            scenario,
            channel,
            events_tx.clone(),
            counts.clone(),
        ));
    }
    drop(events_tx);

    let mut synced = vec![false; knobs.streams];
    let mut last_version = vec![String::new(); knobs.streams];
    let mut synced_count = 0;
    let storm_deadline = storm + PHASE_LIMIT;
    while synced_count < knobs.streams {
        match next_event(&mut events, storm_deadline, "initial sync").await? {
            Event::Synced { idx } => {
                if !std::mem::replace(&mut synced[idx], true) {
                    synced_count += 1;
                }
            }
            Event::Hot { idx, version, .. } => last_version[idx] = version,
        }
    }
    let storm_client = storm.elapsed();
    // The client saw every first response; the control plane must also have every ACK.
    wait_server_sync(cp.admin, knobs.streams, storm_deadline).await?;
    let storm_server = storm.elapsed();
    let synced_mem = cp.memory()?;
    let cpu_synced = cp.cpu()?;
    eprintln!(
        "fanout: {} streams in sync after {:.0} ms (control plane agrees after {:.0} ms)",
        knobs.streams,
        ms(storm_client),
        ms(storm_server)
    );

    let mut per_edit = Vec::with_capacity(knobs.edits);
    counts.reset();
    for k in 1..=knobs.edits {
        // The version every stream must reach; `None`: any new one (the cluster's mesh is
        // not compiled here).
        let expected = match scenario {
            Scenario::KubeChurn => None,
            _ => Some(hot_version(scenario, &mesh(scenario, k))?),
        };
        let tmp = dir.path().join(".mesh.yaml.tmp");
        if expected.is_some() {
            std::fs::write(&tmp, mesh(scenario, k)).context("writing the edited mesh file")?;
        }
        let cpu_before = cp.cpu()?;
        let t0 = Instant::now();
        match scenario {
            #[cfg(feature = "kubernetes")]
            Scenario::KubeChurn => {
                if let Some((api, _)) = &api {
                    api.apply(kube::hot_slice(k));
                }
            }
            _ => std::fs::rename(&tmp, &mesh_path).context("renaming the edit into place")?,
        }
        let deadline = t0 + EDIT_LIMIT;
        let mut seen = vec![false; knobs.streams];
        let mut times = Vec::with_capacity(knobs.streams);
        while times.len() < knobs.streams {
            match next_event(&mut events, deadline, "an edit to reach every stream").await? {
                // A stream reports each version once; `seen` guards against counting twice.
                Event::Hot { idx, version, at }
                    if expected
                        .as_ref()
                        .map_or(version != last_version[idx], |e| version == *e)
                        && !std::mem::replace(&mut seen[idx], true) =>
                {
                    last_version[idx] = version;
                    times.push(at.saturating_duration_since(t0));
                }
                _ => {}
            }
        }
        let cpu = cp.cpu()?.saturating_sub(cpu_before);
        times.sort_unstable();
        let edit = EditTimes {
            cpu,
            first: times[0],
            median: times[times.len() / 2],
            last: times[times.len() - 1],
        };
        eprintln!(
            "fanout: edit {k}: first {:.1} ms, median {:.1} ms, last {:.1} ms",
            ms(edit.first),
            ms(edit.median),
            ms(edit.last)
        );
        per_edit.push(edit);
        // Untimed: the ACKs reached the control plane before the next edit starts.
        wait_server_sync(cp.admin, knobs.streams, Instant::now() + EDIT_LIMIT).await?;
    }
    let edited_mem = cp.memory()?;
    let during_edits = counts.snapshot();

    tasks.abort_all();
    let report = Report {
        knobs: &knobs,
        conns,
        storm_client,
        storm_server,
        idle,
        synced: synced_mem,
        edited: edited_mem,
        cpu_storm: cpu_synced.saturating_sub(cpu_idle),
        per_edit,
        during_edits,
    };
    print!("{}", report.render());
    Ok(())
}

// === the simulated proxies ===

enum Event {
    /// A stream got (and ACKed) its first response of every type it subscribed to.
    Synced { idx: usize },
    /// A stream got (and ACKed) a response of the edited type carrying the hot service.
    Hot {
        idx: usize,
        version: String,
        at: Instant,
    },
}

async fn next_event(
    events: &mut mpsc::UnboundedReceiver<Event>,
    deadline: Instant,
    what: &str,
) -> anyhow::Result<Event> {
    match tokio::time::timeout_at(deadline, events.recv()).await {
        Ok(Some(e)) => Ok(e),
        Ok(None) => bail!("every stream ended while waiting for {what}"),
        Err(_) => bail!("timed out waiting for {what}"),
    }
}

fn subscribe(kind: Kind, names: Vec<String>) -> pb::DiscoveryRequest {
    pb::DiscoveryRequest {
        type_url: kind.type_url().to_owned(),
        resource_names_subscribe: names,
        ..Default::default()
    }
}

/// The services stream `idx` subscribes to: the hot one and a spread of the others.
fn services_of(idx: usize, scenario: Scenario) -> Vec<String> {
    let services = scenario.services();
    let mut names = vec![format!("{NS}/{HOT}")];
    let stride = services / (SERVICES_PER_STREAM - 1);
    for j in 0..SERVICES_PER_STREAM - 1 {
        names.push(format!("{NS}/svc-{:03}", (idx + j * stride) % services));
    }
    names
}

/// Responses the streams received, by type (the order of `Kind::ALL`).
#[derive(Default)]
struct TypeCounts([AtomicU64; 5]);

impl TypeCounts {
    fn add(&self, type_url: &str) {
        if let Some(i) = Kind::ALL.iter().position(|k| k.type_url() == type_url) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn reset(&self) {
        for c in &self.0 {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Kind::ALL
            .iter()
            .zip(&self.0)
            .map(|(k, c)| (k.message_name(), c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// One simulated proxy: subscribes, ACKs every response (same type URL, its nonce, no
/// error), and reports what the benchmark times. A failed stream is logged; the phase
/// waiting for it then times out and names what it was waiting for.
async fn run_stream(
    idx: usize,
    scenario: Scenario,
    channel: Channel,
    events: mpsc::UnboundedSender<Event>,
    counts: Arc<TypeCounts>,
) {
    if let Err(e) = stream(idx, scenario, channel, &events, &counts).await {
        eprintln!("fanout: stream {idx}: {e:#}");
    }
}

async fn stream(
    idx: usize,
    scenario: Scenario,
    channel: Channel,
    events: &mpsc::UnboundedSender<Event>,
    counts: &TypeCounts,
) -> anyhow::Result<()> {
    let workload = format!("app-{:03}", idx % WORKLOADS);
    let services = services_of(idx, scenario);
    let mut first = subscribe(Kind::Workload, vec![format!("{NS}/{workload}")]);
    first.node = Some(pb::Node {
        workload,
        namespace: NS.to_owned(),
        proxy_version: "fanout-bench".to_owned(),
    });
    let requests = [
        first,
        subscribe(Kind::MeshSettings, vec![MESH_SETTINGS_NAME.to_owned()]),
        subscribe(Kind::Service, services.clone()),
        subscribe(Kind::Endpoints, services),
        subscribe(Kind::Authorization, vec!["*".to_owned()]),
    ];
    let subscribed = requests.len();
    let (tx, rx) = mpsc::channel(16);
    for req in requests {
        tx.send(req).await.context("queueing a subscription")?;
    }
    let mut client = DiscoveryClient::new(channel);
    let mut inbound = client
        .stream(ReceiverStream::new(rx))
        .await
        .context("opening the stream")?
        .into_inner();
    let hot = format!("{NS}/{HOT}");
    let mut first_seen = BTreeSet::new();
    while let Some(rsp) = inbound.message().await.context("reading a response")? {
        tx.send(pb::DiscoveryRequest {
            type_url: rsp.type_url.clone(),
            response_nonce: rsp.nonce.clone(),
            ..Default::default()
        })
        .await
        .context("queueing an ACK")?;
        let at = Instant::now();
        counts.add(&rsp.type_url);
        if first_seen.len() < subscribed
            && first_seen.insert(rsp.type_url.clone())
            && first_seen.len() == subscribed
        {
            let _ = events.send(Event::Synced { idx });
        }
        if rsp.type_url == scenario.changed_type()
            && let Some(r) = rsp.resources.iter().find(|r| r.name == hot)
        {
            let _ = events.send(Event::Hot {
                idx,
                version: r.version.clone(),
                at,
            });
        }
    }
    bail!("the control plane ended the stream")
}

// === the mesh file ===

/// The benchmark's mesh at edit `k` (0 = the initial file): from one edit to the next only
/// the hot service's split changes (`split`) or one of its endpoints (`churn`).
fn mesh(scenario: Scenario, k: usize) -> String {
    let (v1, moving) = match scenario {
        Scenario::Split => (1 + (49 + k) % 99, 1),
        Scenario::Churn | Scenario::KubeChurn => (50, 1 + k % 250),
    };
    let v2 = 100 - v1;
    let mut out = String::from("mesh:\n  trustDomain: cluster.local\nservices:\n");
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "  - name: {HOT}\n    namespace: {NS}\n    endpoints: [ {{ address: \"10.0.0.{moving}:8080\" }} ]\n    \
         routes:\n      - name: split\n        backendRefs:\n          \
         - {{ service: {HOT}-v1, weight: {v1} }}\n          - {{ service: {HOT}-v2, weight: {v2} }}\n        \
         timeouts: {{ request: 2s }}\n        \
         retry: {{ attempts: 3, retryOn: [5xx, connect-failure], backoff: {{ base: 25ms, max: 250ms }} }}\n"
    );
    for (i, v) in ["v1", "v2"].into_iter().enumerate() {
        let _ = write!(
            out,
            "  - name: {HOT}-{v}\n    namespace: {NS}\n    endpoints:\n      \
             - {{ address: \"10.0.1.{}:8080\", labels: {{ version: {v} }} }}\n      \
             - {{ address: \"10.0.1.{}:8080\", labels: {{ version: {v} }} }}\n",
            10 * i + 1,
            10 * i + 2
        );
    }
    for s in 0..scenario.services() {
        let _ = write!(
            out,
            "  - name: svc-{s:03}\n    namespace: {NS}\n    \
             addresses: [\"10.96.{}.{}:80\"]\n    endpoints:\n",
            s / 250,
            s % 250 + 1
        );
        for e in 0..scenario.endpoints() {
            let _ = writeln!(
                out,
                "      - {{ address: \"10.{}.{}.{}:8080\" }}",
                2 + s / 250,
                s % 250,
                e + 1
            );
        }
        let _ = write!(
            out,
            "    routes:\n      - name: api\n        matches: [ {{ path: {{ type: PathPrefix, value: /api }} }} ]\n        \
             timeouts: {{ request: 5s }}\n"
        );
    }
    out.push_str("workloads:\n");
    for w in 0..WORKLOADS {
        let _ = write!(
            out,
            "  - name: app-{w:03}\n    namespace: {NS}\n    serviceAccount: app-{w:03}\n    \
             labels: {{ app: app-{w:03} }}\n    \
             inbound: {{ listen: \"10.3.{}.{}:15006\", app: \"10.3.{}.{}:8080\" }}\n",
            w / 250,
            w % 250 + 1,
            w / 250,
            w % 250 + 1
        );
    }
    out.push_str("authorization:\n");
    for p in 0..POLICIES {
        let _ = writeln!(
            out,
            "  - {{ name: p-{p:02}, namespace: {NS}, target: svc-{p:03}, \
             from: [ \"spiffe://cluster.local/ns/{NS}/sa/app-{p:03}\" ] }}"
        );
    }
    out
}

/// The content version the hot service's edited resource has in `text`, as the control
/// plane will send it.
fn hot_version(scenario: Scenario, text: &str) -> anyhow::Result<String> {
    let mesh = skiff_api::load(text).map_err(|e| anyhow!("the bench mesh is invalid: {e}"))?;
    let resources = skiff_api::resource::compile(&mesh);
    let name = format!("{NS}/{HOT}");
    match scenario {
        Scenario::Split => resources
            .services
            .get(&name)
            .map(|c| c.version().to_owned()),
        Scenario::Churn | Scenario::KubeChurn => resources
            .endpoints
            .get(&name)
            .map(|c| c.version().to_owned()),
    }
    .ok_or_else(|| anyhow!("the bench mesh has no {HOT} service"))
}

// === the control plane process ===

/// What `serve` reads.
enum Source {
    File(std::path::PathBuf),
    /// `--kubernetes`, with this kubeconfig.
    #[cfg_attr(not(feature = "kubernetes"), expect(dead_code))]
    Kube(std::path::PathBuf),
}

struct ControlPlane {
    _child: Child,
    pid: u32,
    grpc: SocketAddr,
    admin: SocketAddr,
}

impl ControlPlane {
    /// Starts `skiff-xds serve` on ephemeral ports and reads its startup line.
    async fn start(source: &Source, log: &Path) -> anyhow::Result<ControlPlane> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_skiff-xds"));
        command.arg("serve");
        match source {
            Source::File(mesh) => {
                command.arg("--config").arg(mesh);
            }
            Source::Kube(kubeconfig) => {
                command.arg("--kubernetes").env("KUBECONFIG", kubeconfig);
            }
        }
        let mut child = command
            .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .context("starting skiff-xds serve")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("skiff-xds exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("skiff-xds stdout was not captured"))?;
        let mut line = String::new();
        timeout(
            Duration::from_secs(20),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .context("no startup line from skiff-xds within 20 s")?
        .context("reading the startup line")?;
        let (grpc, admin) = parse_startup_line(&line)
            .ok_or_else(|| anyhow!("unexpected startup line {line:?}; see {}", log.display()))?;
        Ok(ControlPlane {
            _child: child,
            pid,
            grpc,
            admin,
        })
    }

    fn memory(&self) -> anyhow::Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("reading the control plane's /proc status")?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse().ok())
                .ok_or_else(|| anyhow!("no {name} in /proc/{}/status", self.pid))
        };
        Ok(Memory {
            rss_kb: field("VmRSS:")?,
            hwm_kb: field("VmHWM:")?,
        })
    }

    /// CPU time the control plane's threads have run so far (the first field of each
    /// thread's schedstat, in ns): finer than /proc/<pid>/stat's 10 ms ticks. Threads that
    /// already exited are not counted; tokio's workers live as long as the process.
    fn cpu(&self) -> anyhow::Result<Duration> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .context("listing the control plane's threads")?;
        let mut ns = 0u64;
        for task in tasks {
            let path = task?.path().join("schedstat");
            // A thread may exit between the listing and the read.
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            ns += text
                .split_whitespace()
                .next()
                .and_then(|f| f.parse::<u64>().ok())
                .ok_or_else(|| anyhow!("malformed {}", path.display()))?;
        }
        Ok(Duration::from_nanos(ns))
    }
}

fn parse_startup_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix("skiff-xds listening ")?;
    let (mut grpc, mut admin) = (None, None);
    for pair in rest.split_whitespace() {
        match pair.split_once('=') {
            Some(("grpc", a)) => grpc = a.parse().ok(),
            Some(("admin", a)) => admin = a.parse().ok(),
            _ => {}
        }
    }
    Some((grpc?, admin?))
}

/// Polls the control plane's `/proxies` until it lists `streams` proxies with every type
/// in sync (each response ACKed). A readiness poll: the admin port has no push signal.
async fn wait_server_sync(
    admin: SocketAddr,
    streams: usize,
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        let report: ProxiesReport = serde_json::from_str(&http_get(admin, "/proxies").await?)
            .context("parsing /proxies")?;
        let in_sync = report
            .proxies
            .iter()
            .filter(|p| p.types.len() == Kind::ALL.len() && p.types.values().all(|t| t.in_sync))
            .count();
        if report.proxies.len() == streams && in_sync == streams {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the control plane lists {} proxies, {in_sync} in sync; expected {streams}",
                report.proxies.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .context("connecting to the admin port")?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    timeout(Duration::from_secs(10), stream.read_to_string(&mut out))
        .await
        .context("admin answer in time")??;
    if !out.starts_with("HTTP/1.1 200") {
        bail!("{path}: {}", out.lines().next().unwrap_or_default());
    }
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

/// Raises the soft open-files limit to `needed` (at most the hard limit) if it is lower.
fn raise_nofile(needed: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if lim.rlim_cur >= needed {
        return Ok(());
    }
    if lim.rlim_max < needed {
        bail!(
            "need {needed} open files but the hard limit is {}; raise it or set \
             SKIFF_BENCH_STREAMS_PER_CONN to multiplex streams",
            lim.rlim_max
        );
    }
    lim.rlim_cur = needed;
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        bail!("setrlimit: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

// === the report ===

#[derive(Clone, Copy)]
struct Memory {
    rss_kb: u64,
    hwm_kb: u64,
}

struct EditTimes {
    /// Control-plane CPU from the rename until the last stream had the change.
    cpu: Duration,
    first: Duration,
    median: Duration,
    last: Duration,
}

struct Report<'a> {
    knobs: &'a Knobs,
    conns: usize,
    storm_client: Duration,
    storm_server: Duration,
    idle: Memory,
    synced: Memory,
    edited: Memory,
    cpu_storm: Duration,
    per_edit: Vec<EditTimes>,
    /// Responses the streams received during the edits, by type.
    during_edits: Vec<(&'static str, u64)>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Report<'_> {
    fn render(&self) -> String {
        let mut last: Vec<Duration> = self.per_edit.iter().map(|e| e.last).collect();
        let mut median: Vec<Duration> = self.per_edit.iter().map(|e| e.median).collect();
        let mut first: Vec<Duration> = self.per_edit.iter().map(|e| e.first).collect();
        for v in [&mut last, &mut median, &mut first] {
            v.sort_unstable();
        }
        let row = |name: &str, v: &[Duration]| {
            format!(
                "| {name} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                ms(percentile(v, 50.0)),
                ms(percentile(v, 99.0)),
                ms(v[v.len() - 1]),
                ms(v[0]),
            )
        };
        let mb = |kb: u64| kb as f64 / 1024.0;
        let mut s = String::new();
        let scenario = self.knobs.scenario;
        let _ = writeln!(
            s,
            "\nscenario: {} ({} services of {} endpoints besides the hot one; each edit changes \
             the hot service's {})\nstreams: {} on {} HTTP/2 connections ({} per connection); \
             edits: {}; {}\n",
            scenario.name(),
            scenario.services(),
            scenario.endpoints(),
            match scenario {
                Scenario::Split => "traffic split (its Service)",
                Scenario::Churn => "endpoints (its Endpoints)",
                Scenario::KubeChurn => "EndpointSlice (its Endpoints)",
            },
            self.knobs.streams,
            self.conns,
            self.knobs.per_conn,
            self.knobs.edits,
            match scenario {
                Scenario::KubeChurn => "no debounce: the change comes over a watch".to_owned(),
                _ => format!("watcher debounce: {WATCHER_DEBOUNCE_MS} ms"),
            }
        );
        let change = match scenario {
            Scenario::KubeChurn => "EndpointSlice update",
            _ => "rename",
        };
        let _ = writeln!(
            s,
            "Per edit, from the {change} to the moment the Nth stream had received (and queued \
             its ACK for) the response carrying the change; p50/p99/max over the {} edits:\n",
            self.knobs.edits
        );
        let _ = writeln!(
            s,
            "| time from {change} (ms) | p50 | p99 | max | min |\n|---|---|---|---|---|"
        );
        s.push_str(&row("last stream (all in sync)", &last));
        s.push_str(&row("median stream", &median));
        s.push_str(&row("first stream", &first));
        let _ = writeln!(
            s,
            "\nConnect storm (all streams opened at once): every stream had its first response \
             of every type after {:.0} ms; the control plane had every ACK after {:.0} ms.\n",
            ms(self.storm_client),
            ms(self.storm_server)
        );
        let _ = writeln!(
            s,
            "Control plane process (`skiff-xds serve`, its own /proc/<pid>/status):\n\n\
             | point | VmRSS (MB) | VmHWM (MB) |\n|---|---|---|\n\
             | started, no streams | {:.1} | {:.1} |\n\
             | {} streams in sync | {:.1} | {:.1} |\n\
             | after {} edits | {:.1} | {:.1} |\n",
            mb(self.idle.rss_kb),
            mb(self.idle.hwm_kb),
            self.knobs.streams,
            mb(self.synced.rss_kb),
            mb(self.synced.hwm_kb),
            self.knobs.edits,
            mb(self.edited.rss_kb),
            mb(self.edited.hwm_kb),
        );
        let per_stream = (self.synced.rss_kb.saturating_sub(self.idle.rss_kb)) as f64
            / self.knobs.streams as f64;
        let mut cpu: Vec<Duration> = self.per_edit.iter().map(|e| e.cpu).collect();
        cpu.sort_unstable();
        let _ = writeln!(
            s,
            "RSS per stream: {per_stream:.1} kB. Control-plane CPU: {:.2} s for the connect \
             storm; per edit ({change} to last stream) p50 {:.1} ms, max {:.1} ms.",
            self.cpu_storm.as_secs_f64(),
            ms(percentile(&cpu, 50.0)),
            ms(cpu[cpu.len() - 1]),
        );
        let by_type: Vec<String> = self
            .during_edits
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "\nResponses the streams received during the edits, by type: {}.",
            by_type.join(", ")
        );
        s
    }
}

// === the cluster (kube-churn) ===

#[cfg(feature = "kubernetes")]
#[path = "../tests/kube/apiserver.rs"]
#[allow(
    dead_code,
    reason = "the benchmark uses part of the tests' fake API server"
)]
mod apiserver;

#[cfg(feature = "kubernetes")]
mod kube {
    //! The kube-churn cluster: what `mesh` describes for `churn`, as API objects.

    use std::path::{Path, PathBuf};

    use serde_json::{Value, json};

    use super::{HOT, NS, Scenario, WORKLOADS, apiserver::FakeApiServer};

    fn service(name: &str, ip: &str, port: u16) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": name, "namespace": NS },
            "spec": { "clusterIP": ip, "clusterIPs": [ip],
                      "ports": [ { "name": "http", "port": port, "protocol": "TCP", "appProtocol": "http" } ] }
        })
    }

    fn slice(service: &str, endpoints: Vec<Value>) -> Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": { "name": format!("{service}-s1"), "namespace": NS,
                          "labels": { "kubernetes.io/service-name": service } },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [ { "name": "http", "port": 8080, "protocol": "TCP" } ]
        })
    }

    fn endpoint(ip: &str, pod: Option<&str>) -> Value {
        let mut e = json!({ "addresses": [ip], "conditions": { "ready": true } });
        if let Some(pod) = pod {
            e["targetRef"] = json!({ "kind": "Pod", "name": pod, "namespace": NS });
        }
        e
    }

    /// The hot service's slice at edit `k`: one plain endpoint that moves.
    pub fn hot_slice(k: usize) -> Value {
        slice(
            HOT,
            vec![endpoint(&format!("10.0.0.{}", 1 + k % 250), None)],
        )
    }

    /// Starts the fake API server with the whole cluster; returns it and a kubeconfig.
    pub async fn cluster(dir: &Path) -> (FakeApiServer, PathBuf) {
        let api = FakeApiServer::start().await;
        let scenario = Scenario::KubeChurn;
        api.apply(service(HOT, "10.95.0.1", 80));
        api.apply(hot_slice(0));
        for s in 0..scenario.services() {
            let name = format!("svc-{s:03}");
            api.apply(service(
                &name,
                &format!("10.96.{}.{}", s / 250, s % 250 + 1),
                80,
            ));
            let mut endpoints = Vec::new();
            for e in 0..scenario.endpoints() {
                let ip = format!("10.{}.{}.{}", 2 + s / 250, s % 250, e + 1);
                let pod = format!("{name}-{e}");
                let app = format!("app-{:03}", (s * scenario.endpoints() + e) % WORKLOADS);
                api.apply(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": { "name": pod, "namespace": NS, "labels": { "app": app } },
                    "spec": { "serviceAccountName": app,
                              "initContainers": [ { "name": "skiff-proxy", "image": "skiff", "restartPolicy": "Always" } ],
                              "containers": [ { "name": "app", "image": "app" } ] },
                    "status": { "phase": "Running", "podIP": ip }
                }));
                endpoints.push(endpoint(&ip, Some(&pod)));
            }
            api.apply(slice(&name, endpoints));
        }
        let kubeconfig = api.write_kubeconfig(dir);
        (api, kubeconfig)
    }
}
