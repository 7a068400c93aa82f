//! The demo's `skiff` sidecar processes: finding the binary, starting one
//! `skiff run --xds` per workload, reading the startup line for the bound addresses, waiting
//! for `/ready`, and stopping them (SIGTERM, a grace period, then SIGKILL).

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode, header::HOST};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
    time::{Instant, timeout, timeout_at},
};

use super::{otlp::EnvChange, topology::Placement};

/// Where a started sidecar is and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarInfo {
    pub workload: String,
    /// Process id.
    pub pid: u32,
    pub admin: SocketAddr,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    /// The demo app behind the inbound listener.
    pub app: SocketAddr,
    /// The sidecar's stderr and its stdout after the startup line.
    pub log: PathBuf,
}

/// Why a sidecar did not come up.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error(
        "{}: pass --skiff PATH or set SKIFF_BIN, or build it with `cargo build --release` at the \
         workspace root (that puts target/release/skiff next to target/release/skiff-xds, where \
         the demo looks first)",
        not_found(bin)
    )]
    BinaryNotFound { bin: PathBuf },
    #[error("starting `{}` for workload {workload}: {source}", bin.display())]
    Spawn {
        workload: String,
        bin: PathBuf,
        source: io::Error,
    },
    #[error("opening the log file {}: {source}", path.display())]
    Log { path: PathBuf, source: io::Error },
    #[error("reading the stdout of the sidecar of {workload}: {source}")]
    Stdout { workload: String, source: io::Error },
    #[error(
        "the sidecar of {workload} exited ({status}) before it was ready; its log {} ends with:\n{tail}",
        log.display()
    )]
    Exited {
        workload: String,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "the sidecar of {workload} printed no `skiff listening ...` line within {waited:?}; see {}",
        log.display()
    )]
    NoStartupLine {
        workload: String,
        waited: Duration,
        log: PathBuf,
    },
    #[error(
        "the sidecar of {workload} was not ready at http://{admin}/ready within {waited:?} (last: {last})"
    )]
    NotReady {
        workload: String,
        admin: SocketAddr,
        waited: Duration,
        last: String,
    },
}

/// Where the binary was looked for: a bare name means `PATH` (and the directory of the
/// running executable, which `find_skiff` already tried).
fn not_found(bin: &Path) -> String {
    if bin.components().count() == 1 {
        format!("no `{}` next to this executable or on PATH", bin.display())
    } else {
        format!("the skiff binary `{}` does not exist", bin.display())
    }
}

/// The addresses on `skiff listening admin=ADDR outbound=ADDR inbound=ADDR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListeningLine {
    pub admin: SocketAddr,
    pub outbound: SocketAddr,
    /// Absent only if a future proxy stops printing it; the mesh file's `inbound.listen` then.
    pub inbound: Option<SocketAddr>,
}

/// Parses the startup line; `None` for any other line. Unknown `key=value` pairs are ignored.
pub fn parse_listening_line(line: &str) -> Option<ListeningLine> {
    let rest = line.trim().strip_prefix("skiff listening ")?;
    let (mut admin, mut outbound, mut inbound) = (None, None, None);
    for pair in rest.split_whitespace() {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let slot = match key {
            "admin" => &mut admin,
            "outbound" => &mut outbound,
            "inbound" => &mut inbound,
            _ => continue,
        };
        *slot = Some(value.parse::<SocketAddr>().ok()?);
    }
    Some(ListeningLine {
        admin: admin?,
        outbound: outbound?,
        inbound,
    })
}

/// The `skiff` binary to run: `explicit` (the `--skiff` flag or `SKIFF_BIN`), else a `skiff`
/// next to the running executable (both binaries land in `target/<profile>/`), else `skiff`
/// looked up on `PATH` when it is started.
pub fn find_skiff(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(bin) = explicit {
        return bin;
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let sibling = dir.join("skiff");
        if sibling.is_file() {
            return sibling;
        }
    }
    PathBuf::from("skiff")
}

/// How to start one sidecar.
pub(crate) struct Launch<'a> {
    pub bin: &'a Path,
    /// The control plane's discovery URL, `http://ADDR`.
    pub xds: &'a str,
    pub placement: Placement,
    pub admin_addr: SocketAddr,
    pub outbound_addr: SocketAddr,
    pub log: PathBuf,
    /// The workload's bootstrap token: identity on, mTLS with the other sidecars.
    pub token_file: Option<PathBuf>,
    /// Changes to the environment the sidecar inherits (tracing's `OTEL_*` variables).
    pub env: Vec<EnvChange>,
}

/// A running sidecar process; SIGKILLed if dropped before it exits (`kill_on_drop`).
pub(crate) struct Sidecar {
    pub info: SidecarInfo,
    child: Child,
}

/// Starts a sidecar and returns once its `/ready` answers 200, or fails by `deadline`.
pub(crate) async fn start(launch: Launch<'_>, deadline: Instant) -> Result<Sidecar, SidecarError> {
    let started = Instant::now();
    let workload = launch.placement.spec.name.to_owned();
    let log_err = |source| SidecarError::Log {
        path: launch.log.clone(),
        source,
    };
    let stderr = open_append(&launch.log)
        .await
        .map_err(log_err)?
        .into_std()
        .await;
    let mut stdout_log = open_append(&launch.log).await.map_err(log_err)?;

    let mut cmd = Command::new(launch.bin);
    cmd.arg("run")
        .args(["--xds", launch.xds])
        .args(["--workload", &workload, "--namespace", "default"])
        .arg("--admin-addr")
        .arg(launch.admin_addr.to_string())
        .arg("--outbound-addr")
        .arg(launch.outbound_addr.to_string())
        .args(
            launch
                .token_file
                .iter()
                .flat_map(|t| [std::ffi::OsStr::new("--token-file"), t.as_os_str()]),
        )
        // Log files are read with `less`/`tail`, not a terminal: ask for no ANSI colours.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        // Its own process group: Ctrl-C in the terminal reaches only `skiff-xds demo`, which
        // then stops the sidecars in order instead of racing them.
        .process_group(0);
    // A demo killed outright (SIGKILL, a crash) cannot stop its sidecars: the kernel does.
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, kill on itself); it allocates nothing.
    let demo_pid = std::process::id();
    unsafe {
        cmd.pre_exec(move || die_with_parent(demo_pid));
    }
    for change in &launch.env {
        match change {
            EnvChange::Set(key, value) => cmd.env(key, value),
            EnvChange::Remove(key) => cmd.env_remove(key),
        };
    }
    let mut child = cmd.spawn().map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => SidecarError::BinaryNotFound {
            bin: launch.bin.to_owned(),
        },
        _ => SidecarError::Spawn {
            workload: workload.clone(),
            bin: launch.bin.to_owned(),
            source,
        },
    })?;
    let pid = child.id().unwrap_or_default();
    let Some(stdout) = child.stdout.take() else {
        let source = io::Error::other("stdout was not captured");
        return Err(SidecarError::Stdout { workload, source });
    };

    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    let listening = loop {
        line.clear();
        let read = match timeout_at(deadline, stdout.read_line(&mut line)).await {
            Ok(read) => read.map_err(|source| SidecarError::Stdout {
                workload: workload.clone(),
                source,
            })?,
            Err(_) => {
                return Err(SidecarError::NoStartupLine {
                    workload,
                    waited: started.elapsed(),
                    log: launch.log,
                });
            }
        };
        if read == 0 {
            return Err(exited(&mut child, workload, launch.log, deadline).await);
        }
        if let Some(listening) = parse_listening_line(&line) {
            break listening;
        }
        // Best effort: a full disk must not stop the demo.
        let _ = stdout_log.write_all(line.as_bytes()).await;
    };
    // Keep draining stdout so a chatty proxy never blocks on a full pipe.
    tokio::spawn(async move {
        let _ = tokio::io::copy_buf(&mut stdout, &mut stdout_log).await;
    });

    let info = SidecarInfo {
        workload,
        pid,
        admin: listening.admin,
        outbound: listening.outbound,
        inbound: listening.inbound.unwrap_or(launch.placement.listen),
        app: launch.placement.app,
        log: launch.log,
    };
    let mut sidecar = Sidecar { info, child };
    sidecar.wait_ready(started, deadline).await?;
    Ok(sidecar)
}

impl Sidecar {
    /// Polls `GET /ready` on the admin port until it answers 200.
    async fn wait_ready(
        &mut self,
        started: Instant,
        deadline: Instant,
    ) -> Result<(), SidecarError> {
        const POLL: Duration = Duration::from_millis(50);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                let (workload, log) = (self.info.workload.clone(), self.info.log.clone());
                return Err(exited(&mut self.child, workload, log, deadline).await);
            }
            let last = match timeout(Duration::from_secs(1), probe_ready(self.info.admin)).await {
                Ok(Ok(StatusCode::OK)) => return Ok(()),
                Ok(Ok(status)) => format!("status {status}"),
                Ok(Err(e)) => e,
                Err(_) => String::from("no answer within 1s"),
            };
            if Instant::now() + POLL > deadline {
                return Err(SidecarError::NotReady {
                    workload: self.info.workload.clone(),
                    admin: self.info.admin,
                    waited: started.elapsed(),
                    last,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Asks the sidecar to drain and exit (SIGTERM). Does not wait.
    pub(crate) fn terminate(&mut self) {
        // `id()` is `None` once the child was reaped, so a recycled pid is never signalled.
        if let Some(pid) = self.child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }

    /// Waits for the sidecar to exit until `deadline`, then kills it.
    pub(crate) async fn wait_or_kill(&mut self, deadline: Instant) -> io::Result<ExitStatus> {
        match timeout_at(deadline, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                self.child.kill().await?;
                self.child.wait().await
            }
        }
    }

    /// Resolves when the process exits on its own.
    pub(crate) async fn exited(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }
}

/// Opens a log file for appending, creating it if needed; stderr and stdout share one file.
async fn open_append(path: &Path) -> io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

/// The error for a sidecar that quit during startup, with the end of its log.
async fn exited(
    child: &mut Child,
    workload: String,
    log: PathBuf,
    deadline: Instant,
) -> SidecarError {
    // Stdout closed; the process is exiting, or it closed stdout and went on running.
    let status = match timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(source)) => return SidecarError::Stdout { workload, source },
        Err(_) => {
            let _ = child.kill().await;
            match child.wait().await {
                Ok(status) => status,
                Err(source) => return SidecarError::Stdout { workload, source },
            }
        }
    };
    let tail = log_tail(&log, 20).await;
    SidecarError::Exited {
        workload,
        status,
        log,
        tail,
    }
}

/// The last `lines` lines of a log file, indented; a placeholder when it cannot be read.
async fn log_tail(path: &Path, lines: usize) -> String {
    match tokio::fs::read(path).await {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            if all.is_empty() {
                return String::from("  (empty)");
            }
            all[start..]
                .iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Err(e) => format!("  (unreadable: {e})"),
    }
}

/// One `GET /ready` on a fresh HTTP/1.1 connection.
async fn probe_ready(admin: SocketAddr) -> Result<StatusCode, String> {
    let stream = TcpStream::connect(admin)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let req = Request::get("/ready")
        .header(HOST, admin.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let result = send
        .send_request(req)
        .await
        .map(|rsp| rsp.status())
        .map_err(|e| e.to_string());
    conn.abort();
    result
}

/// In a freshly forked sidecar: SIGTERM when the demo dies (the sidecar drains and exits as on
/// Ctrl-C), and at once if it already has. The signal follows the thread that spawned the
/// child, one of the demo's runtime threads, which live as long as the demo.
fn die_with_parent(demo_pid: u32) -> io::Result<()> {
    // SAFETY: plain syscalls on the calling process, no memory passed.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        // The demo may have died between the fork and the prctl.
        if libc::getppid() as u32 != demo_pid {
            libc::kill(libc::getpid(), libc::SIGTERM);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line() {
        let line = "skiff listening admin=127.0.0.1:15000 outbound=127.0.0.1:15001 inbound=127.0.0.1:41234\n";
        let parsed = parse_listening_line(line).expect("a startup line");
        assert_eq!(parsed.admin, "127.0.0.1:15000".parse().expect("addr"));
        assert_eq!(parsed.outbound, "127.0.0.1:15001".parse().expect("addr"));
        assert_eq!(
            parsed.inbound,
            Some("127.0.0.1:41234".parse().expect("addr"))
        );
    }

    #[test]
    fn listening_line_rejects_others() {
        assert_eq!(parse_listening_line("skiff starting"), None);
        assert_eq!(
            parse_listening_line("skiff listening admin=127.0.0.1:1"),
            None
        );
        assert_eq!(
            parse_listening_line("skiff listening admin=nope outbound=127.0.0.1:2"),
            None
        );
        let extra =
            parse_listening_line("skiff listening foo=bar admin=[::1]:1 outbound=127.0.0.1:2");
        assert_eq!(extra.map(|l| l.admin.port()), Some(1));
    }

    #[test]
    fn explicit_binary_wins() {
        assert_eq!(
            find_skiff(Some(PathBuf::from("/opt/skiff"))),
            PathBuf::from("/opt/skiff")
        );
    }
}
