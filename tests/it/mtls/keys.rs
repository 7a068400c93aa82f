//! The workload's private key lives in memory only: after two sidecars got certificates and
//! served traffic (logging at trace), no file they could have written (their working
//! directory, their `TMPDIR`, their logs) and no admin page carries key material.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use http::StatusCode;

use super::{CLIENT, Pair, SERVER, SERVICE, handshakes};
use crate::support::{client, mesh::token, proxy::Proxy, upstream::HttpUpstream};

/// What key material looks like, by name: PEM armour of any private key; the start of an
/// EC PKCS#8 key (version, then the ecPublicKey algorithm) as DER, as the base64 of a PEM
/// body, as hex and as a Rust `{:?}` of its bytes.
const MARKERS: &[(&str, &[u8])] = &[
    ("PEM private key", b"PRIVATE KEY"),
    (
        "PKCS#8 DER (v1)",
        &[
            0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
        ],
    ),
    (
        "PKCS#8 DER (v2)",
        &[
            0x02, 0x01, 0x01, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
        ],
    ),
    ("PKCS#8 base64", b"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49"),
    ("PKCS#8 hex", b"020100301306072a8648ce3d0201"),
    (
        "PKCS#8 debug bytes",
        b"2, 1, 0, 48, 19, 6, 7, 42, 134, 72, 206, 61, 2, 1",
    ),
];

/// Bounds on the walk: enough for a proxy's few files, finite whatever lands there.
const MAX_FILES: usize = 10_000;
const MAX_DEPTH: usize = 12;
const MAX_FILE_BYTES: u64 = 64 << 20;

fn markers_in(bytes: &[u8]) -> Vec<&'static str> {
    MARKERS
        .iter()
        .filter(|(_, m)| bytes.windows(m.len()).any(|w| w == *m))
        .map(|(name, _)| *name)
        .collect()
}

/// Files under some roots modified since a time, and the markers found in them.
#[derive(Default)]
struct Scan {
    files: Vec<PathBuf>,
    findings: Vec<(PathBuf, Vec<&'static str>)>,
}

impl Scan {
    /// Walks `root` (no symlinks followed), skipping `skip` and anything older than `since`.
    fn walk(&mut self, root: &Path, since: SystemTime, skip: &[PathBuf], depth: usize) {
        if depth > MAX_DEPTH || skip.iter().any(|s| s == root) {
            return;
        }
        let Ok(entries) = std::fs::read_dir(root) else {
            return;
        };
        for entry in entries.flatten() {
            assert!(
                self.files.len() < MAX_FILES,
                "too many files under {root:?}"
            );
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                self.walk(&path, since, skip, depth + 1);
            } else if meta.is_file() && meta.modified().is_ok_and(|m| m >= since) {
                let mut bytes = Vec::new();
                let read = std::fs::File::open(&path).and_then(|f| {
                    std::io::Read::read_to_end(
                        &mut std::io::Read::take(f, MAX_FILE_BYTES),
                        &mut bytes,
                    )
                });
                if read.is_err() {
                    continue;
                }
                let found = markers_in(&bytes);
                if !found.is_empty() {
                    self.findings.push((path.clone(), found));
                }
                self.files.push(path);
            }
        }
    }
}

/// Every JSON object key in `v`, recursively.
fn json_keys(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, inner) in map {
                out.push(k.clone());
                json_keys(inner, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| json_keys(i, out)),
        _ => {}
    }
}

/// The scanner finds key material written the ways [`MARKERS`] describe; otherwise an empty
/// result below would prove nothing.
fn scanner_finds_a_planted_key(scratch: &Path) {
    let dir = scratch.join("canary");
    std::fs::create_dir(&dir).expect("canary dir");
    let key = rcgen::KeyPair::generate().expect("a key");
    let der = key.serialize_der();
    let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write");
    std::fs::write(dir.join("key.der"), &der).expect("write");
    std::fs::write(dir.join("key.hex"), hex).expect("write");
    std::fs::write(dir.join("key.log"), format!("key={der:?}")).expect("write");
    let mut scan = Scan::default();
    scan.walk(&dir, SystemTime::UNIX_EPOCH, &[], 0);
    let mut found: Vec<(String, Vec<&str>)> = scan
        .findings
        .iter()
        .map(|(p, m)| (p.file_name().unwrap().to_string_lossy().into(), m.clone()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("key.der".to_owned(), vec!["PKCS#8 DER (v1)"]),
            ("key.hex".to_owned(), vec!["PKCS#8 hex"]),
            ("key.log".to_owned(), vec!["PKCS#8 debug bytes"]),
            (
                "key.pem".to_owned(),
                vec!["PEM private key", "PKCS#8 base64"]
            ),
        ],
        "the scanner recognises a real key in every form"
    );
}

/// The process's working directory and `TMPDIR`, as the kernel has them.
fn process_dirs(proxy: &Proxy) -> (PathBuf, PathBuf) {
    let pid = proxy.pid();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("read the proxy's cwd");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read the proxy's env");
    let tmp = environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"TMPDIR="))
        .map(|v| PathBuf::from(String::from_utf8_lossy(v).into_owned()))
        .expect("the proxy runs with TMPDIR set");
    (cwd, tmp)
}

#[tokio::test]
async fn the_private_key_is_never_on_disk_nor_on_an_admin_endpoint() {
    // File times can be coarse; a little slack keeps a file written at once in scope.
    let since = SystemTime::now() - Duration::from_secs(2);
    let scratch = tempfile::Builder::new()
        .prefix("skiff-keys-")
        .tempdir()
        .expect("tempdir");
    let dirs_of = |w: &str| {
        let (cwd, tmp) = (
            scratch.path().join(format!("{w}-cwd")),
            scratch.path().join(format!("{w}-tmp")),
        );
        for d in [&cwd, &tmp] {
            std::fs::create_dir_all(d).expect("create a proxy dir");
        }
        (cwd, tmp)
    };
    let app = HttpUpstream::start("reviews-app").await;
    let pair = Pair::start_with("auto", app.addr(), "strict", |w, b| {
        let (cwd, tmp) = dirs_of(w);
        b.env("TMPDIR", tmp.to_str().expect("utf-8 path"))
            .current_dir(&cwd)
            .arg("--log", "trace")
    })
    .await;

    for req in [
        client::get(SERVICE, "/one"),
        client::post(SERVICE, "/two", "x"),
    ] {
        let r = client::send_h1(pair.client.outbound, req).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
    }
    let h2 = client::send_h2(pair.client.outbound, client::get(SERVICE, "/three")).await;
    assert_eq!(h2.status, StatusCode::OK, "{h2:?}");
    assert!(
        handshakes(&pair.server.metric_values().await, "inbound", "ok") >= 1.0,
        "the traffic went over mesh TLS, so both keys were used"
    );

    let skip = [pair.mesh.ca_dir()];
    for (workload, proxy) in [(CLIENT, &pair.client), (SERVER, &pair.server)] {
        let (cwd, tmp) = process_dirs(proxy);
        let (want_cwd, want_tmp) = dirs_of(workload);
        assert_eq!(
            cwd.canonicalize().expect("cwd"),
            want_cwd.canonicalize().expect("cwd")
        );
        assert_eq!(tmp, want_tmp);
        let log = proxy.stderr();
        assert!(
            log.contains("certificate installed"),
            "the log covers the certificate's arrival:\n{log}"
        );

        let mut scan = Scan::default();
        for root in [
            &cwd,
            &tmp,
            &proxy.dir().to_owned(),
            &pair.mesh.dir.path().to_owned(),
        ] {
            scan.walk(root, since, &skip, 0);
        }
        assert!(
            scan.files.iter().any(|f| f.ends_with("skiff.stderr")),
            "the proxy's log was scanned: {:?}",
            scan.files
        );
        assert!(
            scan.findings.is_empty(),
            "{workload}: key material on disk: {:?}",
            scan.findings
        );

        for path in [
            "/certs",
            "/config_dump",
            "/metrics",
            "/ready",
            "/live",
            "/logging",
        ] {
            let r = proxy.admin_get(path).await;
            assert_eq!(r.status, StatusCode::OK, "{workload} {path}");
            assert_eq!(markers_in(&r.body), Vec::<&str>::new(), "{workload} {path}");
            let text = r.text();
            assert!(
                !text.contains(&token(workload)),
                "{workload} {path} shows the bootstrap token"
            );
            if path == "/certs" {
                let certs: serde_json::Value =
                    serde_json::from_slice(&r.body).expect("/certs is JSON");
                assert!(!certs["certificate"].is_null(), "{certs}");
                let mut keys = Vec::new();
                json_keys(&certs, &mut keys);
                assert!(
                    keys.iter().all(|k| !k.to_ascii_lowercase().contains("key")),
                    "{workload} /certs has a key-like field: {keys:?}"
                );
            }
        }
    }

    scanner_finds_a_planted_key(scratch.path());
}
