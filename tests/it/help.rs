//! `skiff --help` and every subcommand's help as users read them: each default said once (by
//! clap's `[default: X]`), and both ways of running the proxy described (static and xDS mode).

use std::path::Path;

#[path = "../../xds/tests/help_text/mod.rs"]
mod help_text;

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

#[test]
fn every_subcommand_says_each_default_once() {
    // `run` and `init` alone show more than a dozen.
    help_text::assert_defaults_once(Path::new(SKIFF), "skiff", &["run", "init", "version"], 15);
}

#[test]
fn help_describes_static_and_xds_mode() {
    let top = help_text::help(Path::new(SKIFF), &["--help"]);
    let run = help_text::help(Path::new(SKIFF), &["run", "--help"]);
    for (what, text) in [("skiff --help", &top), ("skiff run --help", &run)] {
        let lower = text.to_lowercase();
        for want in [
            "static mode",
            "xds mode",
            "--config",
            "--xds",
            "--workload",
            "--token-file",
            "sighup",
        ] {
            assert!(
                lower.contains(want),
                "{what} does not mention {want}:\n{text}"
            );
        }
    }
    // Each mode's flags sit under their own heading.
    let heading = |h: &str| run.lines().position(|l| l == h);
    let (Some(static_at), Some(xds_at)) = (heading("Static mode:"), heading("xDS mode:")) else {
        panic!("skiff run --help has no 'Static mode:' and 'xDS mode:' headings:\n{run}");
    };
    let flag_at = |f: &str| {
        run.lines()
            .position(|l| l.trim_start().starts_with(f))
            .unwrap_or_else(|| panic!("no {f} in skiff run --help:\n{run}"))
    };
    assert!(flag_at("--config") > static_at);
    for flag in [
        "--xds ",
        "--token-file",
        "--xds-fetch-timeout",
        "--xds-keepalive",
    ] {
        assert!(flag_at(flag) > xds_at, "{flag} is not under 'xDS mode:'");
    }
}
