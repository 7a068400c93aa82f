//! `demo::start` failing early, without a real proxy: a missing binary, a binary that exits
//! at once, and one that never prints the startup line (the control plane starts in each).

use std::time::Duration;

use super::*;

fn opts(bin: &str, dir: &Path) -> DemoOptions {
    DemoOptions {
        skiff_bin: PathBuf::from(bin),
        dir: Some(dir.to_owned()),
        outbound_port: 0,
        admin_port: 0,
        xds_port: 0,
        xds_admin_port: 0,
        ready_timeout: Duration::from_secs(5),
        ..DemoOptions::default()
    }
}

fn sidecar_error(err: &anyhow::Error) -> &SidecarError {
    err.downcast_ref::<SidecarError>()
        .unwrap_or_else(|| panic!("not a sidecar error: {err:#}"))
}

#[tokio::test]
async fn missing_binary_says_what_to_build() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = start(opts("/nonexistent/skiff", dir.path()))
        .await
        .err()
        .expect("no binary, no demo");
    assert!(
        matches!(sidecar_error(&err), SidecarError::BinaryNotFound { .. }),
        "{err:#}"
    );
    assert!(err.to_string().contains("cargo build --release"), "{err:#}");
    // The mesh file was written and validated before any sidecar was started.
    let mesh = std::fs::read_to_string(dir.path().join("mesh.yaml")).expect("mesh file written");
    skiff_api::load(&mesh).expect("the written mesh validates");
    assert!(dir.path().join("demo.proto").is_file());
}

#[tokio::test]
async fn a_sidecar_that_exits_is_reported_with_its_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = start(opts("/bin/false", dir.path()))
        .await
        .err()
        .expect("false never listens");
    match sidecar_error(&err) {
        SidecarError::Exited { status, log, .. } => {
            assert_eq!(status.code(), Some(1));
            // Not next to the mesh file: the control plane watches that directory.
            assert!(
                log.starts_with(dir.path().join(LOG_DIR)),
                "{}",
                log.display()
            );
        }
        other => panic!("unexpected error: {other}"),
    }
}

#[tokio::test]
async fn a_silent_sidecar_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A script that ignores its arguments and never prints the startup line.
    let script = dir.path().join("silent-skiff");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").expect("write script");
    let mut perms = std::fs::metadata(&script).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).expect("chmod");

    let mut o = opts(script.to_str().expect("utf-8 path"), dir.path());
    o.ready_timeout = Duration::from_millis(500);
    let err = start(o).await.err().expect("silent sidecar");
    assert!(
        matches!(sidecar_error(&err), SidecarError::NoStartupLine { .. }),
        "{err:#}"
    );
}

#[tokio::test]
async fn a_taken_control_plane_port_says_how_to_pick_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut o = opts("/nonexistent/skiff", dir.path());
    o.xds_port = taken.local_addr().expect("addr").port();
    let err = start(o).await.err().expect("the gRPC port is taken");
    let text = format!("{err:#}");
    assert!(text.contains("--xds-port 0 --xds-admin-port 0"), "{text}");
    // The holder is this test process: named, with how to stop it.
    let me = std::process::id();
    assert!(text.contains(&format!("`kill {me}`")), "{text}");
}

#[tokio::test]
async fn otlp_reaches_every_sidecars_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let envs = dir.path().join("envs");
    std::fs::create_dir(&envs).expect("mkdir");
    // Records its environment as `<workload>.env`, then stays silent like a stuck proxy.
    let script = dir.path().join("env-skiff");
    let text = format!(
        "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --workload ] && w=$2; shift; done\n\
         env > '{0}'/$w.tmp && mv '{0}'/$w.tmp '{0}'/$w.env\nexec sleep 30\n",
        envs.display()
    );
    std::fs::write(&script, text).expect("write script");
    let mut perms = std::fs::metadata(&script).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).expect("chmod");

    let mut o = opts(script.to_str().expect("utf-8 path"), dir.path());
    o.ready_timeout = Duration::from_secs(2);
    o.otlp = Some("http://127.0.0.1:4317".to_owned());
    let err = start(o).await.err().expect("the script never listens");
    assert!(
        matches!(sidecar_error(&err), SidecarError::NoStartupLine { .. }),
        "{err:#}"
    );
    for spec in WORKLOADS {
        let path = envs.join(format!("{}.env", spec.name));
        let env =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let lines: Vec<&str> = env.lines().collect();
        assert!(
            lines.contains(&"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317"),
            "{env}"
        );
        let service = format!("OTEL_SERVICE_NAME={}", spec.name);
        assert!(lines.contains(&service.as_str()), "{env}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("OTEL_BSP_SCHEDULE_DELAY=")),
            "{env}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=")),
            "{env}"
        );
    }
}
