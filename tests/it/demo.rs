//! `skiff-xds demo` end to end: the demo mesh (apps, mesh file, the in-process control plane,
//! one real `skiff --xds` sidecar per workload) started through the library entry point on
//! ephemeral ports, then driven with plain HTTP/1.1 requests through the client sidecar's
//! outbound listener, and changed live by editing the mesh file.

use std::{collections::BTreeMap, net::SocketAddr, process::Command};

use http::StatusCode;
use skiff_xds::{
    demo::{self, DemoOptions, SPLIT_SERVICE},
    server::ProxiesReport,
};

use crate::support::{STEP, client, eventually, within};

/// Requests sent to the 50/50 `reviews` split; all of them landing on one side by chance
/// has probability 2^-49.
const SPLIT_REQUESTS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mesh_serves_web_and_splits_reviews() {
    let dir = tempfile::Builder::new()
        .prefix("skiff-it-demo-")
        .tempdir()
        .expect("tempdir");
    let opts = DemoOptions {
        skiff_bin: env!("CARGO_BIN_EXE_skiff").into(),
        dir: Some(dir.path().to_owned()),
        outbound_port: 0,
        admin_port: 0,
        xds_port: 0,
        xds_admin_port: 0,
        ..DemoOptions::default()
    };
    // On failure the error names the sidecar and quotes the end of its log.
    let demo = demo::start(opts)
        .await
        .unwrap_or_else(|e| panic!("the demo mesh did not start: {e:#}"));
    assert!(
        demo.mesh_path().starts_with(dir.path()),
        "mesh file at {}",
        demo.mesh_path().display()
    );
    assert_eq!(demo.sidecars().count(), demo::WORKLOADS.len());
    let outbound = demo.outbound_addr();

    // Every sidecar runs in xDS mode against the demo's control plane, which lists each of
    // them and sees their ACKs.
    let xds_url = format!("http://{}", demo.xds_addr());
    for sc in demo.sidecars() {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", sc.pid)).expect("sidecar cmdline");
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let xds_at = args.iter().position(|a| *a == b"--xds");
        assert_eq!(
            xds_at.and_then(|i| args.get(i + 1)).copied(),
            Some(xds_url.as_bytes()),
            "{}: {:?}",
            sc.workload,
            String::from_utf8_lossy(&cmdline)
        );
        assert!(!args.contains(&&b"--config"[..]), "{}", sc.workload);
    }
    let mut expected: Vec<&str> = demo::WORKLOADS.iter().map(|w| w.name).collect();
    expected.sort_unstable();
    eventually("every sidecar is listed and in sync", STEP, || async {
        let report = proxies(demo.xds_admin_addr()).await;
        let mut listed: Vec<&str> = report.proxies.iter().map(|p| p.workload.as_str()).collect();
        listed.sort_unstable();
        listed == expected
            && report
                .proxies
                .iter()
                .all(|p| !p.types.is_empty() && p.types.values().all(|t| t.in_sync))
    })
    .await;

    let ready = client::send_h1(demo.admin_addr(), client::get("localhost", "/ready")).await;
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "the client sidecar's admin port: {ready:?}"
    );

    let web = client::send_h1(outbound, client::get("web", "/")).await;
    assert_eq!(web.status, StatusCode::OK, "{web:?}");
    assert_eq!(web.served_by(), Some("web-v1"), "{web:?}");
    assert_eq!(web.text(), "web v1\n");

    // Identity is on: the sidecars hold certificates from the demo's CA, the hop to web-v1
    // was mutual TLS with the client's identity, and reviews is read-only.
    let web_sc = demo
        .sidecars()
        .find(|sc| sc.workload == "web-v1")
        .expect("a web-v1 sidecar");
    let certs = client::send_h1(web_sc.admin, client::get("localhost", "/certs")).await;
    let certs: serde_json::Value = serde_json::from_str(&certs.text()).expect("/certs is JSON");
    assert_eq!(
        certs["certificate"]["spiffeId"], "spiffe://cluster.local/ns/default/sa/web",
        "{certs}"
    );
    let m = client::Metrics::parse(
        &client::send_h1(web_sc.admin, client::get("localhost", "/metrics"))
            .await
            .text(),
    )
    .expect("metrics parse");
    assert!(
        m.sum(
            "skiff_inbound_peer_requests_total",
            &[(
                "peer_identity",
                "spiffe://cluster.local/ns/default/sa/client"
            )]
        ) >= 1.0,
        "web-v1 saw the client's identity"
    );
    let post = client::send_h1(outbound, client::post(SPLIT_SERVICE, "/echo", "hi")).await;
    assert_eq!(post.status, StatusCode::FORBIDDEN, "{post:?}");
    assert_eq!(post.reason(), Some("unauthorized"));

    let served_by = split(outbound, SPLIT_REQUESTS).await;
    let backends: Vec<&str> = served_by.keys().map(String::as_str).collect();
    assert_eq!(
        backends,
        ["reviews-v1", "reviews-v2"],
        "the split over {SPLIT_REQUESTS} requests: {served_by:?}"
    );

    // The edit the demo prints: `sed -i` writes a new file and renames it over the mesh file,
    // as a ConfigMap update does. The control plane pushes it; traffic shifts to v2 alone.
    let edit = Command::new("sed")
        .arg("-i")
        .arg(demo::split_edit([50, 50], [0, 100]))
        .arg(demo.mesh_path())
        .status()
        .expect("run sed");
    assert!(edit.success(), "sed -i on the mesh file: {edit}");
    eventually(
        "the edited split reaches the client sidecar",
        STEP,
        || async {
            let by = split(outbound, 20).await;
            by.len() == 1 && by.contains_key("reviews-v2")
        },
    )
    .await;
    let after = split(outbound, SPLIT_REQUESTS).await;
    assert_eq!(
        after.keys().map(String::as_str).collect::<Vec<_>>(),
        ["reviews-v2"],
        "the 0/100 split over {SPLIT_REQUESTS} requests: {after:?}"
    );

    // `skiff-xds describe` asks the client sidecar what it would do, by its own lookups.
    let bin = crate::support::control_plane::skiff_xds_bin().await;
    let admin = format!("http://{}", demo.admin_addr());
    let describe = |host: &'static str| {
        let (bin, admin) = (bin.to_owned(), admin.clone());
        async move {
            tokio::process::Command::new(bin)
                .args(["describe", host, "--admin", &admin])
                .output()
                .await
                .expect("run skiff-xds describe")
        }
    };
    let out = describe(SPLIT_SERVICE).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("service   default/reviews (matched by host"),
        "{text}"
    );
    assert!(text.contains("route     "), "{text}");
    assert!(
        text.contains("backend   default/reviews-v2 (weight 100)"),
        "the edited split: {text}"
    );
    assert!(
        text.contains("  endpoint 127.0.0.1:")
            && text.contains("mTLS spiffe://cluster.local/ns/default/sa/reviews"),
        "{text}"
    );
    let lookups = || async {
        let page = client::send_h1(demo.admin_addr(), client::get("admin", "/metrics")).await;
        client::Metrics::parse(&page.text())
            .unwrap_or_else(|e| panic!("/metrics: {e}"))
            .sum("skiff_xds_lookups_total", &[])
    };
    let before = lookups().await;
    let out = describe("nobody.example").await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("refused   503 unknown-service: no service of the mesh claims this host"),
        "{text}"
    );
    assert_eq!(
        lookups().await,
        before,
        "a describe is no request of the app: skiff_xds_lookups_total stays"
    );

    within("demo shutdown", STEP, demo.shutdown()).await;
}

/// Sends `n` requests to the split service; how many each backend answered.
async fn split(outbound: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut served_by: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..n {
        let rsp = client::send_h1(outbound, client::get(SPLIT_SERVICE, "/")).await;
        assert_eq!(rsp.status, StatusCode::OK, "request {i}: {rsp:?}");
        let by = rsp
            .served_by()
            .unwrap_or_else(|| panic!("request {i} has no x-served-by: {rsp:?}"));
        *served_by.entry(by.to_owned()).or_default() += 1;
    }
    served_by
}

/// The control plane's `/proxies`.
async fn proxies(admin: SocketAddr) -> ProxiesReport {
    let rsp = client::send_h1(admin, client::get("localhost", "/proxies")).await;
    assert_eq!(rsp.status, StatusCode::OK, "{rsp:?}");
    serde_json::from_slice(&rsp.body).expect("JSON /proxies")
}

/// `skiff-xds demo` as a user runs it, in a process of its own on free ports; the sidecar
/// pids and admin addresses it prints once the mesh is ready.
async fn try_demo_process(
    dir: &std::path::Path,
) -> Result<(tokio::process::Child, Vec<u32>, Vec<SocketAddr>), String> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let bin = crate::support::control_plane::skiff_xds_bin().await;
    let mut child = tokio::process::Command::new(bin)
        .arg("demo")
        .arg("--skiff")
        .arg(env!("CARGO_BIN_EXE_skiff"))
        .arg("--dir")
        .arg(dir)
        .args([
            "--outbound-port=0",
            "--admin-port=0",
            "--xds-port=0",
            "--xds-admin-port=0",
            // The suite starts several demos at once on two cores.
            "--ready-timeout=90s",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.join("demo.stderr")).expect("stderr file"))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn skiff-xds demo");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut pids = Vec::new();
    let mut admins = Vec::new();
    within("the demo's instructions", 4 * STEP, async {
        let mut in_table = false;
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if line.trim() == "Sidecars:" {
                in_table = true;
                continue;
            }
            if in_table {
                let mut words = line.split_whitespace();
                match (words.next(), words.next().and_then(|p| p.parse().ok())) {
                    (Some(_), Some(pid)) => {
                        pids.push(pid);
                        let admin = words.next().and_then(|a| a.strip_prefix("http://"));
                        admins.push(admin.and_then(|a| a.parse().ok()).expect("admin address"));
                    }
                    // The header row, then the blank line after the table.
                    _ if pids.is_empty() => {}
                    _ => break,
                }
            }
        }
    })
    .await;
    // Keep reading, so the demo never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    if pids.len() != demo::WORKLOADS.len() {
        let stderr = std::fs::read_to_string(dir.join("demo.stderr")).unwrap_or_default();
        return Err(format!(
            "sidecar pids: {pids:?}; the demo's stderr: {stderr}"
        ));
    }
    Ok((child, pids, admins))
}

/// [`try_demo_process`], again when a sidecar lost its port: the demo picks free ports for
/// the sidecars' inbound listeners before they bind them, and another test of the suite can
/// take one in between.
async fn demo_process(dir: &std::path::Path) -> (tokio::process::Child, Vec<u32>, Vec<SocketAddr>) {
    let mut last = String::new();
    for attempt in 0..3 {
        let sub = dir.join(format!("try-{attempt}"));
        std::fs::create_dir_all(&sub).expect("mkdir");
        match try_demo_process(&sub).await {
            Ok(started) => return started,
            Err(e) if e.contains("Address already in use") => last = e,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("three demos lost a port: {last}")
}

/// Whether `pid` is a live process (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_killed_or_hung_up_takes_its_sidecars_with_it() {
    // One demo after the other: the suite runs enough demos at once already.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, pids, admins) = demo_process(&dir.path().join("killed")).await;
    assert!(pids.iter().all(|&p| alive(p)), "{pids:?} run");
    // SIGKILL: the demo cannot stop anything itself.
    child.start_kill().expect("SIGKILL the demo");
    child.wait().await.expect("reap the demo");
    eventually("every sidecar of the killed demo is gone", STEP, || async {
        pids.iter().all(|&p| !alive(p))
    })
    .await;
    // Their ports are free again: nothing answers there.
    for admin in admins {
        assert!(
            std::net::TcpStream::connect(admin).is_err(),
            "{admin} still answers"
        );
    }

    // SIGHUP, the terminal closing: the demo stops as on Ctrl-C.
    let (mut child, pids, admins) = demo_process(&dir.path().join("hung-up")).await;
    let pid = child.id().expect("running") as i32;
    // SAFETY: a signal to our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let status = within("the demo exits on SIGHUP", STEP, child.wait())
        .await
        .expect("reap the demo");
    assert!(status.success(), "stops as on Ctrl-C: {status}");
    assert!(
        pids.iter().all(|&p| !alive(p)),
        "the demo stopped every sidecar before it exited: {pids:?}"
    );
    for admin in admins {
        assert!(
            std::net::TcpStream::connect(admin).is_err(),
            "{admin} still answers"
        );
    }
}
