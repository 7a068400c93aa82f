//! `skiff init` on its own: the exact `--dry-run` text (golden file), invalid lists refused,
//! and in a network namespace, per back end (nft, legacy): a second run changes nothing,
//! `--cleanup` restores the tables as they were, and without NET_ADMIN it exits 1 and changes
//! nothing. The namespace tests need root and iptables, and say so when skipped.

use crate::support::netns::{NetNs, skipped};

/// Runs `init` twice and `--cleanup` twice with one back end, comparing the tables each time.
fn install_twice_then_clean(ns: &NetNs, backend: &str, save4: &str, save6: &str) {
    let tables = || (ns.nat(save4), ns.nat(save6));
    // Someone else's rules are there before and must survive.
    ns.exec(&[
        save4.replace("-save", "").as_str(),
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-d",
        "192.0.2.1/32",
        "-j",
        "RETURN",
    ]);
    let before = tables();
    let flags = ["--iptables-backend", backend, "--ipv6", "on"];
    ns.init_ok(&flags);
    let once = tables();
    assert_ne!(once, before, "{backend}: init changed nothing");
    for (table, jump) in [
        (&once.0, "-A PREROUTING -p tcp -j SKIFF_INBOUND\n"),
        (&once.0, "-A OUTPUT -p tcp -j SKIFF_OUTPUT\n"),
        (&once.1, "-A PREROUTING -p tcp -j SKIFF_INBOUND\n"),
    ] {
        assert_eq!(
            table.matches(jump).count(),
            1,
            "{backend}: {jump} in\n{table}"
        );
    }
    assert!(once.0.contains("-A OUTPUT -d 192.0.2.1/32 -j RETURN\n"));
    // What --dry-run promises is what is installed.
    let dry = ns.init(&["--dry-run", "--ipv6", "off"]);
    let dry = String::from_utf8_lossy(&dry.stdout);
    for line in dry.lines().filter(|l| l.starts_with("-A SKIFF_")) {
        assert!(
            once.0.contains(&format!("{line}\n")),
            "{backend}: {line} not in\n{}",
            once.0
        );
    }

    let again = ns.init(&flags);
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{backend}: {said}");
    assert_eq!(
        said.matches("already in place").count(),
        2,
        "{backend}: both families seen as installed: {said}"
    );
    assert_eq!(tables(), once, "{backend}: a second init changes nothing");

    ns.init_ok(&["--cleanup", "--iptables-backend", backend]);
    assert_eq!(tables(), before, "{backend}: --cleanup restores the tables");
    ns.init_ok(&["--cleanup", "--iptables-backend", backend]);
    assert_eq!(tables(), before, "{backend}: --cleanup on a clean table");
}

#[test]
fn second_init_changes_nothing_and_cleanup_restores_nft() {
    if skipped("second_init_changes_nothing_and_cleanup_restores_nft") {
        return;
    }
    let ns = NetNs::new();
    install_twice_then_clean(&ns, "nft", "iptables-nft-save", "ip6tables-nft-save");
}

#[test]
fn second_init_changes_nothing_and_cleanup_restores_legacy() {
    if skipped("second_init_changes_nothing_and_cleanup_restores_legacy") {
        return;
    }
    let ns = NetNs::new();
    // Some kernels have only nf_tables: the legacy back end cannot work there.
    let mut probe = std::process::Command::new("iptables-legacy-save");
    probe.args(["-t", "nat"]).stdin(std::process::Stdio::null());
    ns.child().apply_std(&mut probe);
    match probe.output() {
        Ok(o) if o.status.success() => {}
        other => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED second_init_changes_nothing_and_cleanup_restores_legacy: no legacy iptables here ({other:?})"
            );
            return;
        }
    }
    install_twice_then_clean(
        &ns,
        "legacy",
        "iptables-legacy-save",
        "ip6tables-legacy-save",
    );
}

#[test]
fn without_net_admin_init_exits_1_and_changes_nothing() {
    if skipped("without_net_admin_init_exits_1_and_changes_nothing") {
        return;
    }
    let ns = NetNs::new();
    let before = ns.nat("iptables-save");
    for flags in [&[][..], &["--cleanup"][..]] {
        let out = ns.init_with(ns.child().without_net_admin(), flags);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {stderr}");
        assert!(stderr.contains("NET_ADMIN"), "{flags:?}: {stderr}");
    }
    assert_eq!(ns.nat("iptables-save"), before, "nothing changed");
    // --dry-run needs no privilege.
    let out = ns.init_with(ns.child().without_net_admin(), &["--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The exact `--dry-run` text; `SKIFF_UPDATE_GOLDEN=1` rewrites the file from the output.
#[test]
fn dry_run_prints_the_rules() {
    let golden = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/golden/init-dry-run.txt"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "init",
            "--dry-run",
            "--ipv6",
            "on",
            "--exclude-inbound-ports",
            "22,8081",
            "--exclude-outbound-ports",
            "5432",
            "--exclude-outbound-cidrs",
            "169.254.169.254,fd00:ec2::254",
            "--include-outbound-cidrs",
            "*",
        ])
        .output()
        .expect("run skiff init --dry-run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8(out.stdout).expect("utf-8");
    if std::env::var_os("SKIFF_UPDATE_GOLDEN").is_some() {
        std::fs::write(golden, &got).expect("write the golden file");
    }
    let want = std::fs::read_to_string(golden).expect("read the golden file");
    assert_eq!(got, want, "--dry-run output differs from {golden}");
}

#[test]
fn invalid_lists_are_refused_with_the_flag_named() {
    for (flag, value) in [
        ("--exclude-inbound-ports", "80,http"),
        ("--exclude-outbound-ports", "70000"),
        ("--exclude-outbound-cidrs", "10.0.0.0/33"),
        ("--include-outbound-cidrs", "*,10.0.0.0/8"),
        ("--ipv6", "maybe"),
        ("--iptables-backend", "ebpf"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["init", "--dry-run", flag, value])
            .output()
            .expect("run skiff init");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}
