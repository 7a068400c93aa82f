//! The control plane for tests: in this process on port 0 (`in_process`), or the real
//! `skiff-xds serve` in a process of its own for tests that SIGKILL it (its addresses come from
//! the startup line; killed when dropped; the binary belongs to another package, so it is built
//! on first use, next to `skiff`). Plus `replace_file`, the ConfigMap-style edit.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::OnceCell,
};

use skiff_xds::serve::{Running, ServeArgs};

use super::{STEP, within};

/// A ConfigMap-style update: write a new file and rename it over the old one.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write the new mesh file");
    std::fs::rename(&tmp, path).expect("rename it into place");
}

/// A control plane in this process watching `config`, on `grpc_addr` (port 0: any) and any
/// admin port.
pub async fn in_process_on(config: &Path, grpc_addr: SocketAddr) -> Running {
    skiff_xds::serve::start(ServeArgs {
        config: Some(config.to_owned()),
        grpc_addr,
        admin_addr: "127.0.0.1:0".parse().expect("literal"),
    })
    .await
    .expect("control plane starts")
}

/// A control plane in this process watching `config`, on free loopback ports.
pub async fn in_process(config: &Path) -> Running {
    in_process_on(config, "127.0.0.1:0".parse().expect("literal")).await
}

/// A first build may compile the control plane's own dependency features; later ones are no-ops.
const BUILD: Duration = Duration::from_secs(600);

/// The `skiff-xds` binary of this build, next to `skiff` in `target/<profile>/`. Cargo only
/// builds the binaries of the package under test, so this runs `cargo build -p skiff-xds`
/// once per test process (cargo releases its build lock before it runs the tests). It builds
/// with the `kubernetes` feature, as `scripts/test.sh` does: a build without it would replace
/// the binary that skiff-xds's own `serve --kubernetes` tests run, mid-run.
pub async fn skiff_xds_bin() -> &'static Path {
    static BIN: OnceCell<PathBuf> = OnceCell::const_new();
    BIN.get_or_init(|| async {
        let skiff = Path::new(env!("CARGO_BIN_EXE_skiff"));
        let profile_dir = skiff.parent().expect("skiff lives in target/<profile>/");
        let target_dir = profile_dir
            .parent()
            .expect("target/<profile>/ has a parent");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let build = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--locked",
                "-p",
                "skiff-xds",
                "--bin",
                "skiff-xds",
                "--features",
                "skiff-xds/kubernetes",
            ])
            .arg("--manifest-path")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir)
            .args(["--profile", profile])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = within("cargo build -p skiff-xds", BUILD, build)
            .await
            .expect("run cargo");
        assert!(
            out.status.success(),
            "cargo build -p skiff-xds failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = profile_dir.join("skiff-xds");
        assert!(bin.is_file(), "no {} after the build", bin.display());
        bin
    })
    .await
}

/// A running `skiff-xds serve`; SIGKILLed when dropped.
pub struct ControlPlane {
    child: Child,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    stderr_path: PathBuf,
}

impl ControlPlane {
    /// Serves `config` with the gRPC listener on `grpc` (port 0 picks one) and the admin
    /// listener on a free port; returns once the startup line is printed. Its stderr goes to
    /// `config`'s directory.
    pub async fn start(config: &Path, grpc: SocketAddr) -> ControlPlane {
        let bin = skiff_xds_bin().await;
        let dir = config.parent().expect("the mesh file is in a directory");
        let stderr_path = dir.join(format!("skiff-xds-{}.stderr", grpc.port()));
        let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--grpc-addr", &grpc.to_string()])
            .args(["--admin-addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn skiff-xds");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = within("the skiff-xds startup line", STEP, lines.next_line())
            .await
            .expect("read skiff-xds stdout")
            .unwrap_or_else(|| {
                panic!(
                    "skiff-xds exited before its startup line: {}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                )
            });
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (grpc, admin) = parse_startup_line(&line);
        ControlPlane {
            child,
            grpc,
            admin,
            stderr_path,
        }
    }

    /// SIGKILL, then reap: no graceful close of the proxies' streams.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL skiff-xds");
        within("skiff-xds exit", STEP, self.child.wait())
            .await
            .expect("reap skiff-xds");
    }

    /// Runs `skiff-xds status --admin http://ADMIN` to completion.
    pub async fn status(&self) -> Output {
        let bin = skiff_xds_bin().await;
        let out = Command::new(bin)
            .args(["status", "--admin", &format!("http://{}", self.admin)])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        within("skiff-xds status", STEP, out)
            .await
            .expect("run skiff-xds status")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- skiff-xds (grpc={} admin={}) stderr ----\n{}\n---- end of skiff-xds stderr ----",
                self.grpc,
                self.admin,
                std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
            );
        }
    }
}

/// Parses `skiff-xds listening grpc=ADDR admin=ADDR`.
fn parse_startup_line(line: &str) -> (SocketAddr, SocketAddr) {
    let rest = line
        .strip_prefix("skiff-xds listening ")
        .unwrap_or_else(|| panic!("not the skiff-xds startup line: {line:?}"));
    let (mut grpc, mut admin) = (None, None);
    for field in rest.split_whitespace() {
        let (key, value) = field
            .split_once('=')
            .unwrap_or_else(|| panic!("bad field {field:?} in {line:?}"));
        let addr: SocketAddr = value
            .parse()
            .unwrap_or_else(|_| panic!("bad address {value:?} in {line:?}"));
        match key {
            "grpc" => grpc = Some(addr),
            "admin" => admin = Some(addr),
            other => panic!("unknown field {other:?} in {line:?}"),
        }
    }
    (
        grpc.unwrap_or_else(|| panic!("no grpc= in {line:?}")),
        admin.unwrap_or_else(|| panic!("no admin= in {line:?}")),
    )
}
