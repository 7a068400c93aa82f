//! A network namespace of the test's own, with real iptables redirection: `NetNs::run` runs a
//! test body on a thread inside the namespace, so the sockets it opens and the processes it
//! starts (skiff, iptables) all live there. Needs root, `ip` (iproute2) and `iptables`.

use std::{
    fs::File,
    future::Future,
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

/// A named network namespace with loopback up; deleted on drop.
pub struct NetNs {
    name: String,
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e} (are iproute2 and iptables installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    pub fn new() -> NetNs {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "skiff-it-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, argv: &[&str]) {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv));
    }

    /// Adds an address to the namespace's loopback; on `lo` the whole prefix becomes local.
    pub fn add_address(&self, cidr: &str) {
        self.exec(&["ip", "addr", "add", cidr, "dev", "lo"]);
    }

    /// Runs `body` on a thread that has entered the namespace, on a runtime of its own.
    pub fn run<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let path = format!("/var/run/netns/{}", self.name);
        let joined = std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns on a valid namespace fd; it changes only this thread's network
            // namespace, which is what the sockets and children made here should use.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(body());
        })
        .join();
        if let Err(panic) = joined {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Redirects TCP bound for `dst` (a CIDR) to `port` on loopback, as `skiff init` will in a pod.
/// Call it inside [`NetNs::run`]: iptables acts on the calling thread's namespace.
pub fn redirect_here(dst: &str, port: u16) {
    let port = port.to_string();
    run(Command::new("iptables").args([
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        dst,
        "-j",
        "REDIRECT",
        "--to-ports",
        &port,
    ]));
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
