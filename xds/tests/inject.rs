//! Sidecar injection judged by whole outputs: every `tests/inject/NAME.yaml` is injected and
//! compared byte for byte with `tests/inject/NAME.injected.yaml`; then the real
//! `skiff-xds inject` binary on files and stdin, its refusals and its exit codes.
//!
//! After an intended change of the output, regenerate the expected files and review the diff:
//! `SKIFF_UPDATE_GOLDEN=1 cargo test -p skiff-xds --test inject`.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use skiff_xds::inject::{Settings, Skip, Value, inject_manifests, inject_pod};

/// The image the goldens are made with: fixed, so a version bump changes no golden.
const IMAGE: &str = "ghcr.io/example/skiff:1.0";

fn settings() -> Settings {
    Settings {
        image: IMAGE.to_owned(),
        ..Settings::default()
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inject")
}

/// Every input of the golden directory with its expected output's path.
fn cases() -> Vec<(PathBuf, PathBuf)> {
    let mut cases: Vec<_> = std::fs::read_dir(golden_dir())
        .expect("tests/inject")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".yaml") && !name.ends_with(".injected.yaml")
        })
        .map(|input| {
            let expected = input.with_extension("injected.yaml");
            (input, expected)
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "golden cases missing: {cases:?}");
    cases
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first line where `got` and `want` differ, for a readable failure.
fn first_difference(got: &str, want: &str) -> String {
    let (mut g, mut w) = (got.lines(), want.lines());
    for n in 1.. {
        match (g.next(), w.next()) {
            (None, None) => return "no difference".to_owned(),
            (a, b) if a == b => continue,
            (a, b) => return format!("line {n}: got {a:?}, expected {b:?}"),
        }
    }
    unreachable!()
}

#[test]
fn every_golden_case_matches_its_expected_output() {
    let update = std::env::var_os("SKIFF_UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for (input, expected) in cases() {
        let got = match inject_manifests(&read(&input), &settings()) {
            Ok(out) => out.text,
            Err(errors) => {
                failures.push(format!("{}: refused: {errors:?}", input.display()));
                continue;
            }
        };
        if update {
            std::fs::write(&expected, &got).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&expected).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{}: {} (SKIFF_UPDATE_GOLDEN=1 regenerates it)",
                expected.display(),
                first_difference(&got, &want)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn injecting_an_injected_output_changes_nothing() {
    for (_, expected) in cases() {
        let once = read(&expected);
        let twice = inject_manifests(&once, &settings()).expect("accepted").text;
        assert_eq!(twice, once, "{}", expected.display());
    }
}

#[test]
fn skipped_pods_and_other_kinds_come_out_byte_for_byte() {
    for name in ["already-injected-pod", "host-network-pod", "service"] {
        let input = golden_dir().join(format!("{name}.yaml"));
        let expected = golden_dir().join(format!("{name}.injected.yaml"));
        assert_eq!(read(&input), read(&expected), "{name}");
    }
}

#[test]
fn skipped_pods_are_noted_with_the_reason() {
    let notes = |name: &str| {
        let input = read(&golden_dir().join(format!("{name}.yaml")));
        let out = inject_manifests(&input, &settings()).expect("accepted");
        out.notes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        notes("host-network-pod"),
        ["document 1 (Pod node-agent): not injected: hostNetwork: true"]
    );
    assert_eq!(
        notes("already-injected-pod"),
        ["document 1 (Pod debug): not injected: already injected"]
    );
    assert_eq!(
        notes("multi-document"),
        ["document 6 (Pod toolbox): not injected: skiff.dev/inject: disabled"]
    );
    assert!(notes("deployment").is_empty());
}

#[test]
fn the_webhook_patch_turns_the_pod_into_the_injected_pod() {
    let pod: Value = serde_saphyr::from_str(&read(&golden_dir().join("pod.yaml"))).unwrap();
    let injected: Value =
        serde_saphyr::from_str(&read(&golden_dir().join("pod.injected.yaml"))).unwrap();
    let out = inject_pod(&pod, None, &settings()).expect("accepted");
    assert_eq!(out.report.skipped, None);
    assert_eq!(out.pod, injected);
    // Two containers in front of the user's init container, one volume added: three adds.
    let ops = serde_json::to_value(&out.patch).unwrap();
    let summary: Vec<(String, String)> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|op| {
            (
                op["op"].as_str().unwrap().to_owned(),
                op["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("add", "/spec/initContainers/0"),
        ("add", "/spec/initContainers/1"),
        ("add", "/spec/volumes"),
    ];
    assert_eq!(summary, expected.map(|(o, p)| (o.to_owned(), p.to_owned())));
    assert_eq!(ops[0]["value"]["name"], "skiff-init");
    assert_eq!(ops[1]["value"]["name"], "skiff-proxy");

    let again = inject_pod(&out.pod, None, &settings()).expect("accepted");
    assert_eq!(again.report.skipped, Some(Skip::AlreadyInjected));
    assert!(again.patch.is_empty());
}

// === the binary ===

fn skiff_xds(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff-xds"))
        .arg("inject")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run skiff-xds inject");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(pipe);
    child.wait_with_output().expect("wait for skiff-xds inject")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_cli_prints_the_injected_file_and_exits_0() {
    let input = golden_dir().join("deployment.yaml");
    let out = skiff_xds(&["--image", IMAGE, "-f", input.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        read(&golden_dir().join("deployment.injected.yaml"))
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn the_cli_reads_stdin_and_joins_several_files() {
    let out = skiff_xds(
        &["--image", IMAGE, "-f", "-"],
        Some(&read(&golden_dir().join("job.yaml"))),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        read(&golden_dir().join("job.injected.yaml"))
    );

    let (a, b) = (
        golden_dir().join("service.yaml"),
        golden_dir().join("cronjob.yaml"),
    );
    let out = skiff_xds(
        &[
            "--image",
            IMAGE,
            "-f",
            a.to_str().unwrap(),
            "-f",
            b.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let want = format!(
        "{}---\n{}",
        read(&golden_dir().join("service.injected.yaml")),
        read(&golden_dir().join("cronjob.injected.yaml"))
    );
    assert_eq!(text(&out.stdout), want);
}

#[test]
fn the_cli_flags_set_what_every_pod_gets() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: x}]\n";
    let out = skiff_xds(
        &[
            "-f",
            "-",
            "--image",
            "registry.example/skiff:2",
            "--control-plane",
            "https://cp.example:15010",
            "--log-level",
            "debug",
            "--cpu-request",
            "20m",
            "--memory-limit",
            "256Mi",
            "--otlp-endpoint",
            "http://jaeger.skiff-system.svc:4317",
        ],
        Some(pod),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let injected: Value = serde_saphyr::from_str(&text(&out.stdout)).unwrap();
    let proxy = &injected
        .pointer(&["spec", "initContainers"])
        .unwrap()
        .as_seq()
        .unwrap()[1];
    assert_eq!(
        proxy.get("image").unwrap().as_str(),
        Some("registry.example/skiff:2")
    );
    let env: Vec<(String, Option<String>)> = proxy
        .get("env")
        .unwrap()
        .as_seq()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e.get("name").unwrap().as_str().unwrap().to_owned(),
                e.get("value").and_then(Value::as_str).map(str::to_owned),
            )
        })
        .collect();
    assert!(env.contains(&("SKIFF_XDS".into(), Some("https://cp.example:15010".into()))));
    assert!(env.contains(&("SKIFF_LOG".into(), Some("debug".into()))));
    assert!(env.contains(&("SKIFF_WORKLOAD".into(), Some("p".into()))));
    assert!(env.contains(&(
        "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
        Some("http://jaeger.skiff-system.svc:4317".into())
    )));
    let resources = serde_json::to_string(proxy.get("resources").unwrap()).unwrap();
    assert_eq!(
        resources,
        r#"{"requests":{"cpu":"20m","memory":"32Mi"},"limits":{"memory":"256Mi"}}"#
    );
}

#[test]
fn bad_annotations_are_named_and_nothing_is_printed() {
    let input = "\
apiVersion: v1
kind: Service
metadata: {name: ok}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata:
      labels: {app: web}
      annotations:
        skiff.dev/skip-inbound-ports: \"80,http\"
        skiff.dev/proxy-memory-request: 64m
    spec:
      containers: [{name: web, image: nginx}]
---
apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations: {skiff.dev/inject: \"no\"}
spec:
  containers: [{name: c, image: x}]
";
    let out = skiff_xds(&["-f", "-"], Some(input));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            r#"skiff-xds inject: <stdin>: document 2 (Deployment shop/web): annotation skiff.dev/skip-inbound-ports: "http" is not a port (1-65535)"#,
            r#"skiff-xds inject: <stdin>: document 2 (Deployment shop/web): annotation skiff.dev/proxy-memory-request: "64m" means 64 millibytes; write 64Mi for mebibytes or 64M for megabytes"#,
            r#"skiff-xds inject: <stdin>: document 3 (Pod p): annotation skiff.dev/inject: "no": use enabled or disabled"#,
        ]
    );
}

#[test]
fn a_request_above_its_limit_is_refused() {
    let input = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {skiff.dev/proxy-cpu-request: 500m, skiff.dev/proxy-cpu-limit: 250m}\nspec:\n  containers: [{name: c, image: x}]\n";
    let out = skiff_xds(&["-f", "-"], Some(input));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr).trim_end(),
        "skiff-xds inject: <stdin>: document 1 (Pod p): skiff.dev/proxy-cpu-request (500m) is above skiff.dev/proxy-cpu-limit (250m); the cpu request must not exceed the limit"
    );
}

#[test]
fn bad_flags_and_missing_files_exit_non_zero() {
    let out = skiff_xds(&["-f", "-", "--cpu-request", "lots"], Some(""));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--cpu-request"),
        "{}",
        text(&out.stderr)
    );

    let out = skiff_xds(&["-f", "-", "--control-plane", "skiff-xds:15010"], Some(""));
    assert_eq!(out.status.code(), Some(2));

    let out = skiff_xds(
        &["-f", "-", "--cpu-request", "2", "--cpu-limit", "1"],
        Some(""),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "skiff-xds inject: --cpu-request 2 is above --cpu-limit 1"
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.yaml");
    let out = skiff_xds(&["-f", missing.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).starts_with(&format!("skiff-xds inject: {}: ", missing.display())),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn warnings_go_to_stderr_and_the_output_still_comes() {
    let input = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {skiff.dev/opaque-port: \"5432\"}\nspec:\n  containers: [{name: c, image: x}]\n";
    let out = skiff_xds(&["-f", "-"], Some(input));
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("skiff-proxy"));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "skiff-xds inject: <stdin>: document 1 (Pod p): warning: annotation skiff.dev/opaque-port is not one Skiff reads; ignored (did you mean skiff.dev/opaque-ports?)"
    );
}
