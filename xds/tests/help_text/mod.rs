//! Reading `--help` as clap prints it: the subcommands under `Commands:` and each option's
//! entry, checked so that a default clap shows as `[default: X]` is not spelled out again as
//! `Default: X` in the entry's own text. Shared by the help tests of `skiff` and `skiff-xds`.

use std::{path::Path, process::Command};

/// `bin args..` run with an empty environment (so no `SKIFF_*` variable shows up as a value);
/// its stdout, after checking it exited 0.
pub fn help(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .env_clear()
        .output()
        .expect("run the binary");
    assert!(
        out.status.success(),
        "{} {} exited {}: {}",
        bin.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help text is UTF-8")
}

/// The subcommands listed under `Commands:`, without clap's own `help`.
pub fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// The entries of one help text: an option or argument line (`--flag <X>`, `-f`, `<PATH>`) and
/// its description lines below it (indented further), or one line in the `-h` layout.
pub fn entries(help: &str) -> Vec<String> {
    let mut entries: Vec<String> = Vec::new();
    let mut open = false;
    for line in help.lines() {
        let text = line.trim();
        let indent = line.len() - line.trim_start().len();
        if text.is_empty() {
            continue;
        }
        if indent == 0 {
            open = false; // a heading, the usage line or free text
        } else if indent < 10 && text.starts_with(['-', '<', '[']) {
            entries.push(text.to_owned());
            open = true;
        } else if open && indent >= 10 {
            if let Some(entry) = entries.last_mut() {
                entry.push('\n');
                entry.push_str(text);
            }
        } else {
            open = false;
        }
    }
    entries
}

/// The values of the `[default: X]` clap printed in `entry`, and the rest of the entry's text.
pub fn split_defaults(entry: &str) -> (Vec<String>, String) {
    const OPEN: &str = "[default: ";
    let mut values = Vec::new();
    let mut prose = String::new();
    let mut rest = entry;
    while let Some(at) = rest.find(OPEN) {
        prose.push_str(&rest[..at]);
        let tail = &rest[at + OPEN.len()..];
        let end = closing_bracket(tail);
        values.push(tail[..end].to_owned());
        rest = tail.get(end + 1..).unwrap_or("");
    }
    prose.push_str(rest);
    (values, prose)
}

/// Where the `]` closing an already opened `[` is (values such as `[::]:15006` hold brackets).
fn closing_bracket(text: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' if depth == 0 => return i,
            ']' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

/// Lower case, backticks dropped, every run of whitespace one space (descriptions wrap).
fn normalize(text: &str) -> String {
    text.replace('`', "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// What is wrong with one entry's defaults: a value given both by clap and by the text as
/// `Default: X`, or an empty `[default: ]` that tells the reader nothing.
pub fn default_problems(entry: &str) -> Vec<String> {
    let (values, prose) = split_defaults(entry);
    let prose = normalize(&prose);
    values
        .iter()
        .filter_map(|value| {
            if value.trim().is_empty() {
                Some("an empty [default: ]".to_owned())
            } else if prose.contains(&normalize(&format!("default: {value}"))) {
                Some(format!("the default {value} twice"))
            } else {
                None
            }
        })
        .collect()
}

/// The checks over one binary: how many defaults clap printed, and each problem as
/// `<command>: <problem> in <entry>`.
#[derive(Debug, Default)]
pub struct Report {
    pub defaults: usize,
    pub problems: Vec<String>,
}

impl Report {
    /// Adds the entries of `text`, the help of `command`.
    pub fn check(&mut self, command: &str, text: &str) {
        for entry in entries(text) {
            self.defaults += split_defaults(&entry).0.len();
            for problem in default_problems(&entry) {
                self.problems
                    .push(format!("{command}: {problem} in\n{entry}\n"));
            }
        }
    }
}

/// [`check_binary`], asserting that at least `min_defaults` `[default: ..]` were read (fewer
/// means the help layout changed under the parser) and that none is told twice.
pub fn assert_defaults_once(bin: &Path, name: &str, expected: &[&str], min_defaults: usize) {
    let (report, _) = check_binary(bin, name, expected);
    assert!(
        report.defaults >= min_defaults,
        "only {} [default: ..] seen: the help layout changed under the parser",
        report.defaults
    );
    assert!(
        report.problems.is_empty(),
        "defaults told twice:\n{}",
        report.problems.join("\n")
    );
}

/// `bin --help`, `bin -h` and both for every subcommand, which must include `expected`. Returns
/// the report and the top-level `--help`.
pub fn check_binary(bin: &Path, name: &str, expected: &[&str]) -> (Report, String) {
    let top = help(bin, &["--help"]);
    let subs = subcommands(&top);
    for want in expected {
        assert!(
            subs.iter().any(|s| s == want),
            "`{name} --help` lists {subs:?}, not {want}:\n{top}"
        );
    }
    let mut report = Report::default();
    report.check(&format!("{name} --help"), &top);
    report.check(&format!("{name} -h"), &help(bin, &["-h"]));
    for sub in &subs {
        for flag in ["--help", "-h"] {
            let text = help(bin, &[sub, flag]);
            report.check(&format!("{name} {sub} {flag}"), &text);
        }
    }
    (report, top)
}
