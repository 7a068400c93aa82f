//! `skiff-xds --help` and every subcommand's help as users read them: each default said once
//! (by clap's `[default: X]`), and the checker itself shown to catch a default said twice.

use std::path::Path;

mod help_text;

#[test]
fn every_subcommand_says_each_default_once() {
    let bin = Path::new(env!("CARGO_BIN_EXE_skiff-xds"));
    // `serve` alone shows a dozen defaults.
    help_text::assert_defaults_once(
        bin,
        "skiff-xds",
        &["serve", "status", "check", "inject", "demo", "describe"],
        20,
    );
}

#[test]
fn serve_help_shows_each_listener_default_once() {
    let bin = Path::new(env!("CARGO_BIN_EXE_skiff-xds"));
    let text = help_text::help(bin, &["serve", "--help"]);
    assert_eq!(text.matches("0.0.0.0:15010").count(), 1, "{text}");
    assert_eq!(text.matches("127.0.0.1:15014").count(), 1, "{text}");
}

#[test]
fn the_check_catches_a_default_told_twice() {
    let twice = "      --grpc-addr <GRPC_ADDR>\n          The discovery gRPC listener. Default:\n          `0.0.0.0:15010`.\n\n          [env: SKIFF_XDS_GRPC_ADDR=]\n          [default: 0.0.0.0:15010]\n";
    let once = "      --grpc-addr <GRPC_ADDR>\n          The discovery gRPC listener.\n\n          [default: 0.0.0.0:15010]\n      --ca-dir <CA_DIR>\n          Default: none, identity off.\n";
    let short = "  -p, --port <PORT>  A port. Default: 8080 [default: 8080]\n";
    let brackets = "      --inbound-addr <ADDR>\n          Default: [::]:15006\n\n          [default: [::]:15006]\n";
    let empty =
        "      --exclude <PORTS>\n          Ports. Default: none\n\n          [default: ]\n";
    let mut report = help_text::Report::default();
    report.check("once", once);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.defaults, 1);
    for (name, text) in [
        ("twice", twice),
        ("short", short),
        ("brackets", brackets),
        ("empty", empty),
    ] {
        let mut report = help_text::Report::default();
        report.check(name, text);
        assert_eq!(report.problems.len(), 1, "{name}: {:?}", report.problems);
    }
}
