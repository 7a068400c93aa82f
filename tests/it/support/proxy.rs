//! The real `skiff` binary under test: started in static mode on a mesh file in its own tempdir,
//! with every listener on `127.0.0.1:0`, its addresses read from the startup line and `/ready`
//! polled before a test gets it. Its stderr goes to a file that is printed when a test panics;
//! its stdout after the startup line (the access log) is kept for [`Proxy::stdout_lines`].

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use http::StatusCode;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use super::{
    STEP,
    client::{self, Metrics, Reply},
    eventually,
    netns::{ChildSetup, NetNs, NsPath},
    within,
};

/// Time allowed for the binary to print its startup line and then report ready.
const START: Duration = Duration::from_secs(30);

/// Options for starting a proxy.
pub struct ProxyBuilder {
    mesh: String,
    workload: Option<(String, String)>,
    args: Vec<String>,
    xds: Option<String>,
    env: Vec<(String, String)>,
    current_dir: Option<PathBuf>,
    /// `--outbound-addr`, `--inbound-addr`.
    listen: (String, String),
    setup: Option<ChildSetup>,
    /// The namespace the proxy runs in, when not this thread's: admin requests go there.
    netns: Option<NsPath>,
}

impl ProxyBuilder {
    pub fn new(mesh: &str) -> ProxyBuilder {
        ProxyBuilder {
            mesh: mesh.to_owned(),
            workload: None,
            args: Vec::new(),
            xds: None,
            env: Vec::new(),
            current_dir: None,
            listen: ("127.0.0.1:0".to_owned(), "127.0.0.1:0".to_owned()),
            setup: None,
            netns: None,
        }
    }

    /// Runs as a pod's sidecar: inside `ns`, as `uid` (the uid `skiff init` exempts); admin
    /// requests are made from inside `ns`.
    pub fn sidecar_in(mut self, ns: &NetNs, uid: u32) -> Self {
        self.setup = Some(ns.child().user(uid));
        self.netns = Some(ns.path());
        self
    }

    /// The outbound and inbound listener addresses (each one or more, comma-separated).
    /// Default: `127.0.0.1:0` for both.
    pub fn listen(mut self, outbound: &str, inbound: &str) -> Self {
        self.listen = (outbound.to_owned(), inbound.to_owned());
        self
    }

    /// xDS mode: config from the control plane at `url` (needs `.workload(..)`).
    pub fn xds(url: &str) -> ProxyBuilder {
        ProxyBuilder {
            xds: Some(url.to_owned()),
            ..ProxyBuilder::new("")
        }
    }

    /// Runs as the sidecar of `name` in `namespace` (`--workload`, `--namespace`). Default: none.
    pub fn workload(mut self, name: &str, namespace: &str) -> Self {
        self.workload = Some((name.to_owned(), namespace.to_owned()));
        self
    }

    /// Adds a flag without a value, e.g. `.flag("--access-log")`.
    pub fn flag(mut self, flag: &str) -> Self {
        self.args.push(flag.to_owned());
        self
    }

    /// Adds a flag and its value, e.g. `.arg("--drain-timeout", "5s")`.
    pub fn arg(mut self, flag: &str, value: &str) -> Self {
        self.args.push(flag.to_owned());
        self.args.push(value.to_owned());
        self
    }

    /// Sets an environment variable of the process, e.g. `.env("TMPDIR", dir)`. Default: the
    /// test's own environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs the process in `dir`. Default: the test's working directory.
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.current_dir = Some(dir.to_owned());
        self
    }

    /// Starts the proxy and returns once `/ready` says 200.
    pub async fn start(self) -> Proxy {
        let proxy = self.spawn().await;
        proxy.wait_ready().await;
        proxy
    }

    /// Starts the proxy and returns once its startup line is read (listeners bound, a first
    /// config applied), without waiting for `/ready`: for proxies a test expects not ready.
    pub async fn spawn(self) -> Proxy {
        let dir = tempfile::Builder::new()
            .prefix("skiff-it-")
            .tempdir()
            .expect("tempdir");
        let mesh_path = dir.path().join("mesh.yaml");
        std::fs::write(&mesh_path, &self.mesh).expect("write mesh file");
        let stderr_path = dir.path().join("skiff.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("create stderr file");

        let other_user = self.setup.as_ref().and_then(ChildSetup::uid).is_some();
        if other_user {
            // Another user must read the mesh file and run the binary.
            use std::os::unix::fs::PermissionsExt;
            let open = |p: &Path, mode| {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                    .expect("open up the proxy's files")
            };
            open(dir.path(), 0o755);
            open(&mesh_path, 0o644);
        }
        let binary = if other_user {
            binary_for_others()
        } else {
            PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
        };
        let mut cmd = Command::new(binary);
        cmd.arg("run");
        match &self.xds {
            Some(url) => cmd.args(["--xds", url]),
            None => cmd.arg("--config").arg(&mesh_path),
        };
        cmd.args(["--admin-addr", "127.0.0.1:0"]);
        cmd.args(["--outbound-addr", &self.listen.0]);
        cmd.args(["--inbound-addr", &self.listen.1]);
        if let Some(setup) = self.setup {
            setup.apply_tokio(&mut cmd);
        }
        if let Some((name, ns)) = &self.workload {
            cmd.args(["--workload", name, "--namespace", ns]);
        }
        cmd.args(&self.args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &self.current_dir {
            cmd.current_dir(cwd);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn skiff");

        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START, lines.next_line()).await;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let mut proxy = Proxy {
            netns: self.netns,
            child,
            stdout: stdout.clone(),
            admin: unbound(),
            outbound: unbound(),
            inbound: unbound(),
            stderr_path,
            mesh_path,
            dir,
        };
        let line = match first {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = tokio::time::timeout(Duration::from_secs(5), proxy.child.wait()).await;
                panic!("skiff closed stdout before its startup line (exit: {status:?})");
            }
            Err(_) => panic!("no startup line from skiff within {START:?}"),
        };
        // Keep draining stdout so a chatty binary never blocks on a full pipe; keep the lines.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                stdout.lock().expect("stdout lines lock").push(line);
            }
        });

        let addrs = parse_startup_line(&line);
        proxy.admin = addrs.admin;
        proxy.outbound = addrs.outbound;
        proxy.inbound = addrs.inbound;
        proxy
    }
}

/// The `skiff` binary where any user can run it: the build's own when every directory above it
/// lets others through, else a copy in a temporary directory, made once.
fn binary_for_others() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY
        .get_or_init(|| {
            let built = Path::new(env!("CARGO_BIN_EXE_skiff"));
            let mode = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.permissions().mode());
            let reachable = mode(built) & 0o005 == 0o005
                && built.ancestors().skip(1).all(|d| mode(d) & 0o001 != 0);
            if reachable {
                return built.to_owned();
            }
            let dir = std::env::temp_dir().join(format!("skiff-it-bin-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a directory for the binary");
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                .expect("open the binary's directory");
            let copy = dir.join("skiff");
            std::fs::copy(built, &copy).expect("copy the skiff binary");
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
                .expect("make the copy runnable");
            copy
        })
        .clone()
}

fn unbound() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

struct StartupAddrs {
    admin: SocketAddr,
    outbound: SocketAddr,
    inbound: SocketAddr,
}

/// Parses `skiff listening admin=ADDR outbound=ADDR inbound=ADDR`.
fn parse_startup_line(line: &str) -> StartupAddrs {
    let rest = line
        .strip_prefix("skiff listening ")
        .unwrap_or_else(|| panic!("first stdout line is not the startup line: {line:?}"));
    let mut admin = None;
    let mut outbound = None;
    let mut inbound = None;
    for field in rest.split_whitespace() {
        let (key, value) = field
            .split_once('=')
            .unwrap_or_else(|| panic!("bad field {field:?} in {line:?}"));
        // A direction with several listeners lists them all; the first stands for it.
        let first = value.split(',').next().unwrap_or(value);
        let addr: SocketAddr = first
            .parse()
            .unwrap_or_else(|_| panic!("bad address {value:?} in {line:?}"));
        match key {
            "admin" => admin = Some(addr),
            "outbound" => outbound = Some(addr),
            "inbound" => inbound = Some(addr),
            other => panic!("unknown field {other:?} in {line:?}"),
        }
    }
    StartupAddrs {
        admin: admin.unwrap_or_else(|| panic!("no admin= in {line:?}")),
        outbound: outbound.unwrap_or_else(|| panic!("no outbound= in {line:?}")),
        inbound: inbound.unwrap_or_else(|| panic!("no inbound= in {line:?}")),
    }
}

/// Runs `skiff version` to completion.
pub async fn run_version() -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    within("skiff version", STEP, out)
        .await
        .expect("run skiff version")
}

/// Runs `skiff run --config` on `mesh_yaml`, which the test expects to be refused, and returns
/// how it exited with what it wrote. Panics if it is still running after [`STEP`] (it took the
/// file and started).
pub async fn run_refused(mesh_yaml: &str) -> std::process::Output {
    let dir = tempfile::Builder::new()
        .prefix("skiff-it-")
        .tempdir()
        .expect("tempdir");
    let mesh_path = dir.path().join("mesh.yaml");
    std::fs::write(&mesh_path, mesh_yaml).expect("write mesh file");
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("run")
        .arg("--config")
        .arg(&mesh_path)
        .args([
            "--admin-addr",
            "127.0.0.1:0",
            "--outbound-addr",
            "127.0.0.1:0",
            "--inbound-addr",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    within("skiff run on a file it should refuse", STEP, out)
        .await
        .expect("run skiff")
}

/// A running `skiff run --config ...`; killed when dropped.
pub struct Proxy {
    child: Child,
    /// The namespace it runs in, when not the test thread's.
    netns: Option<NsPath>,
    /// Lines written to stdout after the startup line, as they arrive.
    stdout: Arc<Mutex<Vec<String>>>,
    pub admin: SocketAddr,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    stderr_path: PathBuf,
    mesh_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts a proxy on `mesh_yaml` with no workload and no extra flags.
    pub async fn start(mesh_yaml: &str) -> Proxy {
        ProxyBuilder::new(mesh_yaml).start().await
    }

    pub fn pid(&self) -> i32 {
        let pid = self.child.id().expect("skiff has not been reaped");
        i32::try_from(pid).expect("pids fit in i32")
    }

    /// The test-side directory of this proxy: its mesh file and its stderr log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The lines the proxy has written to stdout since its startup line.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().expect("stdout lines lock").clone()
    }

    /// What the proxy has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    async fn wait_ready(&self) {
        let mut last = String::from("no attempt");
        let ready = tokio::time::timeout(START, async {
            loop {
                match self.try_admin_get("/ready").await {
                    Ok(r) if r.status == StatusCode::OK => return,
                    Ok(r) => last = format!("status {}", r.status),
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        if ready.is_err() {
            panic!("skiff not ready within {START:?}; last /ready: {last}");
        }
    }

    /// `GET path` on the admin listener.
    pub async fn admin_get(&self, path: &str) -> Reply {
        self.try_admin_get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} on the admin listener: {e}"))
    }

    /// `GET path` on the admin listener, from inside the proxy's namespace.
    async fn try_admin_get(&self, path: &str) -> Result<Reply, String> {
        let req = client::get("admin", path);
        match &self.netns {
            None => client::try_send_h1(self.admin, req).await,
            Some(ns) => {
                let stream = ns
                    .connect(self.admin)
                    .map_err(|e| format!("connect {}: {e}", self.admin))?;
                client::try_send_h1_over(stream, req).await
            }
        }
    }

    /// `/ready`'s status, or `None` when the admin listener does not answer.
    pub async fn ready_status(&self) -> Option<StatusCode> {
        self.try_admin_get("/ready").await.ok().map(|r| r.status)
    }

    /// The `/metrics` page as text.
    pub async fn metrics(&self) -> String {
        let r = self.admin_get("/metrics").await;
        assert_eq!(r.status, StatusCode::OK, "/metrics status");
        r.text()
    }

    /// The `/metrics` page parsed; panics when it is not valid OpenMetrics text.
    pub async fn metric_values(&self) -> Metrics {
        let text = self.metrics().await;
        Metrics::parse(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"))
    }

    pub async fn config_dump(&self) -> serde_json::Value {
        let r = self.admin_get("/config_dump").await;
        assert_eq!(r.status, StatusCode::OK, "/config_dump status");
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("/config_dump is not JSON: {e}: {}", r.text()))
    }

    /// Sends `sig` (e.g. `libc::SIGHUP`) to the proxy process.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) only takes plain integers; the pid is our own un-reaped child.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(
            rc,
            0,
            "kill({}, {sig}): {}",
            self.pid(),
            std::io::Error::last_os_error()
        );
    }

    /// Replaces the mesh file (atomically, by rename) without signalling.
    pub fn rewrite_mesh(&self, yaml: &str) {
        let tmp = self.mesh_path.with_extension("yaml.new");
        std::fs::write(&tmp, yaml).expect("write new mesh file");
        std::fs::rename(&tmp, &self.mesh_path).expect("replace mesh file");
    }

    /// Rewrites the mesh file, sends SIGHUP, and waits until `/config_dump` shows a version other
    /// than the one before.
    pub async fn reload(&self, yaml: &str) {
        let before = self.config_dump().await["version"].clone();
        self.rewrite_mesh(yaml);
        self.signal(libc::SIGHUP);
        eventually("config_dump version changes after SIGHUP", STEP, || async {
            self.config_dump().await["version"] != before
        })
        .await;
    }

    /// The exit status if the process has already exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll skiff's exit status")
    }

    /// Waits for the process to exit; panics at the deadline.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        within("skiff exit", timeout, self.child.wait())
            .await
            .expect("wait for skiff")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- skiff (admin={} outbound={} inbound={}) stderr ----\n{}\n---- end of skiff stderr ----",
                self.admin,
                self.outbound,
                self.inbound,
                self.stderr()
            );
        }
    }
}
