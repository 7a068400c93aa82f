//! `skiff-xds check` run as users run it: the real binary on files on disk, judged by exit
//! code and by the lines it prints.

use std::{io::Write, path::Path, process::Output};

use tempfile::NamedTempFile;

const VALID: &str = r#"
services:
  - name: reviews
    hosts: [reviews]
    endpoints:
      - workload: reviews-v1
    routes:
      - name: split
        backendRefs: [ { service: reviews-v2, weight: 90 }, { service: reviews, weight: 10 } ]
  - name: reviews-v2
    endpoints:
      - address: 127.0.0.1:9082
workloads:
  - name: reviews-v1
    inbound: { listen: 127.0.0.1:16006, app: 127.0.0.1:9081 }
authorization:
  - { name: readers, target: reviews, from: [ spiffe://cluster.local/ns/default/sa/productpage ] }
"#;

fn mesh_file(text: &str) -> NamedTempFile {
    let mut file = NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write mesh file");
    file
}

fn check(path: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_skiff-xds"))
        .arg("check")
        .arg(path)
        .output()
        .expect("run skiff-xds check")
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_valid_file_prints_one_ok_line_and_exits_0() {
    let file = mesh_file(VALID);
    let out = check(file.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = file.path().display();
    assert_eq!(
        lines(&out.stdout),
        [format!(
            "{shown}: ok (2 services, 1 route, 2 endpoints, 1 workload, 1 authorization policy)"
        )]
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn a_bad_file_names_every_bad_field_and_exits_1() {
    let bad = VALID
        .replace(
            "{ service: reviews, weight: 10 }",
            "{ service: reviews, weight: 2000000 }",
        )
        .replace("target: reviews", "target: ratings");
    let file = mesh_file(&bad);
    let out = check(file.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let shown = file.path().display();
    assert_eq!(
        lines(&out.stderr),
        [
            format!(
                "{shown}: services[0].routes[0].backendRefs[1].weight: must be at most 1000000, got 2000000"
            ),
            format!(
                r#"{shown}: authorization[0].target: no service "ratings" in namespace "default""#
            ),
            format!("{shown}: 2 errors"),
        ]
    );
}

#[test]
fn a_shape_error_names_its_field_on_one_line() {
    let file = mesh_file(&VALID.replace("weight: 10", "weight: -10"));
    let out = check(file.path());
    assert_eq!(out.status.code(), Some(1));
    let shown = file.path().display().to_string();
    let err = lines(&out.stderr);
    assert_eq!(err.len(), 2, "{err:?}");
    assert!(
        err[0].starts_with(&format!(
            "{shown}: services[0].routes[0].backendRefs[1].weight: "
        )),
        "{err:?}"
    );
    assert_eq!(err[1], format!("{shown}: 1 error"));
}

#[test]
fn an_unreadable_file_exits_1_with_the_io_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nowhere.yaml");
    let out = check(&missing);
    assert_eq!(out.status.code(), Some(1));
    let err = lines(&out.stderr);
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(
        err[0].starts_with(&format!("{}: ", missing.display())),
        "{err:?}"
    );
    assert!(err[0].to_lowercase().contains("no such file"), "{err:?}");
}
