//! Network namespaces of the test's own, joined by a veth pair like two pods on one node, with
//! redirection installed by the real `skiff init`. Sockets are made inside a namespace (`bind`,
//! `connect`, or a body on a thread that entered it, `run`), and children are started in one
//! (`ChildSetup`). Needs root, `ip` (iproute2) and iptables: without them [`skipped`] prints
//! why, straight to the terminal, and the test returns.

use std::{
    fs::File,
    future::Future,
    io::Write,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, OwnedFd},
    process::{Command, Output, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

/// Why namespace tests cannot run on this machine, if they cannot.
fn unavailable() -> Option<&'static str> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("not root: network namespaces and iptables need root".to_owned());
        }
        let runs = |argv: &[&str]| {
            Command::new(argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !runs(&["ip", "-V"]) {
            return Some("no `ip` (install iproute2)".to_owned());
        }
        if !runs(&["iptables-save", "--version"]) || !runs(&["ip6tables-save", "--version"]) {
            return Some("no iptables/ip6tables (install iptables)".to_owned());
        }
        let probe = format!("skiff-it-probe-{}", std::process::id());
        let made = Command::new("ip").args(["netns", "add", &probe]).output();
        let _ = Command::new("ip").args(["netns", "del", &probe]).output();
        match made {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "cannot make a network namespace: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Some(format!("cannot run ip netns: {e}")),
        }
    })
    .as_deref()
}

/// True (after saying so on the terminal, past the test harness's capture) when `test` cannot
/// run here for want of root, iproute2 or iptables.
pub fn skipped(test: &str) -> bool {
    let Some(why) = unavailable() else {
        return false;
    };
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    true
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e} (are iproute2 and iptables installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A named network namespace with loopback up; deleted on drop.
pub struct NetNs {
    name: String,
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

    /// Where the namespace is mounted: enough to enter it while it exists.
    pub fn path(&self) -> NsPath {
        NsPath(format!("/var/run/netns/{}", self.name))
    }

    fn open(&self) -> File {
        self.path().open()
    }

    /// Runs a command inside the namespace; panics when it fails.
    pub fn exec(&self, argv: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv))
    }

    /// Runs `body` on a thread that has entered the namespace, on a runtime of its own, so
    /// the sockets it opens and the processes it starts live there.
    pub fn run<F, Fut, T>(&self, body: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let ns = self.open();
        let joined = std::thread::spawn(move || {
            enter(&ns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(body())
        })
        .join();
        joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// A listener bound inside the namespace, served from any runtime. `[::]` takes both
    /// families (IPv4 arrives as mapped addresses).
    pub fn bind(&self, addr: SocketAddr) -> tokio::net::TcpListener {
        self.path().bind(addr)
    }

    /// A connection opened from inside the namespace; panics when it fails.
    pub fn connect(&self, addr: SocketAddr) -> tokio::net::TcpStream {
        self.path()
            .connect(addr)
            .unwrap_or_else(|e| panic!("connect {addr} in {}: {e}", self.name))
    }

    /// How a child is started inside this namespace.
    pub fn child(&self) -> ChildSetup {
        ChildSetup {
            netns: Some(self.open().into()),
            ..ChildSetup::default()
        }
    }

    /// Runs `skiff init ARGS` inside the namespace, as root, and returns how it went.
    pub fn init(&self, args: &[&str]) -> Output {
        self.init_with(self.child(), args)
    }

    /// Runs `skiff init ARGS` as `setup` says (e.g. without NET_ADMIN).
    pub fn init_with(&self, setup: ChildSetup, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
        cmd.arg("init").args(args).stdin(Stdio::null());
        setup.apply_std(&mut cmd);
        cmd.output().expect("run skiff init")
    }

    /// `skiff init ARGS`, which must succeed.
    pub fn init_ok(&self, args: &[&str]) {
        let out = self.init(args);
        assert!(
            out.status.success(),
            "skiff init {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The `nat` table as `iptables-save` (or `ip6tables-save`, or a `-legacy-save`) prints
    /// it, without its comments and counters, which change between two reads.
    pub fn nat(&self, save: &str) -> String {
        let mut cmd = Command::new(save);
        cmd.args(["-t", "nat"]).stdin(Stdio::null());
        self.child().apply_std(&mut cmd);
        let out = run(&mut cmd);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.find(" [") {
                Some(at) if l.starts_with(':') => format!("{} [0:0]\n", &l[..at]),
                _ => format!("{l}\n"),
            })
            .collect()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A namespace's mount path, cloned freely (it does not keep the namespace alive).
#[derive(Clone, Debug)]
pub struct NsPath(String);

impl NsPath {
    fn open(&self) -> File {
        File::open(&self.0).unwrap_or_else(|e| panic!("open {}: {e}", self.0))
    }

    /// Runs `f` on a short-lived thread inside the namespace.
    fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = self.open();
        std::thread::spawn(move || {
            enter(&ns);
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    pub fn bind(&self, addr: SocketAddr) -> tokio::net::TcpListener {
        let l = self.within(move || {
            std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
        });
        l.set_nonblocking(true).expect("nonblocking listener");
        tokio::net::TcpListener::from_std(l).expect("listener into tokio")
    }

    /// A connection opened from inside the namespace (only the handshake blocks, briefly).
    pub fn connect(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let s = self.within(move || std::net::TcpStream::connect_timeout(&addr, super::STEP))?;
        s.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(s)
    }
}

fn enter(ns: &File) {
    // SAFETY: setns on a valid namespace fd; it changes only this thread's network
    // namespace, which is what the sockets and children made here should use.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// What a child process does between fork and exec: enter a namespace, drop NET_ADMIN from
/// its bounding set (so even root runs without it), become another user.
#[derive(Default)]
pub struct ChildSetup {
    netns: Option<OwnedFd>,
    drop_net_admin: bool,
    uid: Option<u32>,
}

/// CAP_NET_ADMIN (linux/capability.h).
const CAP_NET_ADMIN: libc::c_ulong = 12;

impl ChildSetup {
    /// Runs without NET_ADMIN, as an unprivileged container would.
    pub fn without_net_admin(mut self) -> Self {
        self.drop_net_admin = true;
        self
    }

    /// Runs as `uid` (and gid `uid`, no supplementary groups).
    pub fn user(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// The user the child runs as, if not this process's.
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    fn hook(self) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
        move || {
            let check = |rc: libc::c_int| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            // SAFETY: plain syscalls between fork and exec, on an fd this process owns; none
            // allocates or takes a lock.
            unsafe {
                if let Some(ns) = &self.netns {
                    check(libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET))?;
                }
                if self.drop_net_admin {
                    check(libc::prctl(libc::PR_CAPBSET_DROP, CAP_NET_ADMIN, 0, 0, 0))?;
                }
                if let Some(uid) = self.uid {
                    check(libc::setgroups(0, std::ptr::null()))?;
                    check(libc::setgid(uid))?;
                    check(libc::setuid(uid))?;
                }
            }
            Ok(())
        }
    }

    pub fn apply_std(self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        let hook = self.hook();
        // SAFETY: the hook only makes async-signal-safe syscalls (see `hook`).
        unsafe {
            cmd.pre_exec(hook);
        }
    }

    pub fn apply_tokio(self, cmd: &mut tokio::process::Command) {
        let hook = self.hook();
        // SAFETY: the hook only makes async-signal-safe syscalls (see `hook`).
        unsafe {
            cmd.pre_exec(hook);
        }
    }
}

/// Two namespaces, `client` and `server`, joined by a veth pair (`eth0` in each) carrying
/// [`CLIENT_V4`]/[`SERVER_V4`] and [`CLIENT_V6`]/[`SERVER_V6`], like two pods on one node.
/// Destinations in `10.96.0.0/16` (service addresses) are routed from the client to the server,
/// so they leave the client pod as a ClusterIP connection would.
pub struct PodPair {
    pub client: NetNs,
    pub server: NetNs,
}

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);

impl PodPair {
    pub fn new() -> PodPair {
        let client = NetNs::new();
        let server = NetNs::new();
        client.exec(&[
            "ip",
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &server.name,
        ]);
        for (ns, v4, v6) in [
            (&client, CLIENT_V4, CLIENT_V6),
            (&server, SERVER_V4, SERVER_V6),
        ] {
            ns.exec(&["ip", "addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
            // No duplicate address detection: the address is usable at once.
            ns.exec(&[
                "ip",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            ns.exec(&["ip", "link", "set", "eth0", "up"]);
        }
        // Neighbours known up front: IPv6 neighbour discovery while the link is still coming
        // up loses the first SYN, which then waits a second for its retransmission.
        let mac = |ns: &NetNs| {
            let out = ns.exec(&["cat", "/sys/class/net/eth0/address"]);
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let (client_mac, server_mac) = (mac(&client), mac(&server));
        for (ns, peer, lladdr) in [
            (&client, SERVER_V6, &server_mac),
            (&server, CLIENT_V6, &client_mac),
        ] {
            let peer = peer.to_string();
            ns.exec(&[
                "ip",
                "-6",
                "neigh",
                "replace",
                &peer,
                "lladdr",
                lladdr,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ]);
        }
        client.exec(&[
            "ip",
            "route",
            "add",
            "10.96.0.0/16",
            "via",
            &SERVER_V4.to_string(),
        ]);
        PodPair { client, server }
    }

    /// Adds another address to the server's `eth0`, routed from the client.
    pub fn add_server_address(&self, v4: Ipv4Addr) {
        self.server
            .exec(&["ip", "addr", "add", &format!("{v4}/32"), "dev", "eth0"]);
        self.client
            .exec(&["ip", "route", "add", &format!("{v4}/32"), "dev", "eth0"]);
    }
}

/// `ip` with a port, for either family.
pub fn at(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}
