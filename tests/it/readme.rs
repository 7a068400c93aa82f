//! The README's samples, run: every command of its ```sh and ```console blocks that a test can
//! run (`curl`, mesh edits with `sed -i`, `skiff-xds check`, `status`, `describe`) is run in
//! document order against a demo mesh started here on ephemeral ports, with the README's fixed
//! ports and `<...>` placeholders replaced by the demo's. A ```console block is a transcript:
//! each `$ command` is followed by what it prints, which is compared with what it prints now
//! (after normalising ports, versions, times and paths; a `...` line stands for any lines).
//! A trailing `# exit N` comment gives a command's expected exit status (else 0); on a
//! `curl -si` line, a comment starting with a status (`# 504, x-skiff-reason: timeout`) is
//! checked against the response too. A fenced block preceded by `<!-- not run: why -->` is
//! skipped; a ```yaml block preceded by `<!-- readme-test: file NAME -->` is written to NAME in
//! the directory the commands run in.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::LazyLock,
    time::{Duration, Instant},
};

use regex::Regex;
use skiff_xds::demo::{self, Demo, DemoOptions};

use crate::support::{STEP, within};

const README: &str = include_str!("../../README.md");

/// How long a failing check is retried: a mesh edit reaches the sidecars asynchronously
/// (the watcher's debounce, then a push), so a command right after one may see the old mesh.
const SETTLE: Duration = Duration::from_secs(10);

/// One fenced block of the README.
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    info: String,
    body: Vec<String>,
    /// The HTML comment on the last non-blank line before the fence, if any.
    marker: Option<String>,
}

/// A command to run, with what the README says about its result.
struct Sample {
    line: usize,
    command: String,
    /// The transcript's output lines, for `$ command` lines of a ```console block.
    output: Option<Vec<String>>,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String, usize, Option<String>)> = None;
    let mut body = Vec::new();
    let mut last_nonblank: Option<&str> = None;
    for (i, raw) in readme.lines().enumerate() {
        let trimmed = raw.trim_start();
        match &open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let indent = raw.len() - trimmed.len();
                    let marker = last_nonblank
                        .map(str::trim)
                        .filter(|l| l.starts_with("<!--"))
                        .map(str::to_owned);
                    open = Some((i + 1, info.trim().to_owned(), indent, marker));
                    body.clear();
                } else if !trimmed.is_empty() {
                    last_nonblank = Some(raw);
                }
            }
            Some((line, info, indent, marker)) => {
                if trimmed.starts_with("```") {
                    out.push(Block {
                        line: *line,
                        info: info.clone(),
                        body: std::mem::take(&mut body),
                        marker: marker.clone(),
                    });
                    open = None;
                    last_nonblank = None;
                } else {
                    let cut = raw.len().min(*indent);
                    let cut = if raw[..cut].trim().is_empty() { cut } else { 0 };
                    body.push(raw[cut..].to_owned());
                }
            }
        }
    }
    assert!(open.is_none(), "README.md: an unclosed fenced block");
    out
}

/// Joins `\`-continued lines.
fn logical_lines(lines: &[String]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, l) in lines.iter().enumerate() {
        let (start, mut text) = current.take().unwrap_or((i, String::new()));
        if !text.is_empty() {
            text.push(' ');
        }
        match l.trim_end().strip_suffix('\\') {
            Some(head) => {
                text.push_str(head.trim());
                current = Some((start, text));
            }
            None => {
                text.push_str(l.trim());
                out.push((start, text));
            }
        }
    }
    if let Some(c) = current {
        out.push(c);
    }
    out
}

/// Whether a test can run `command` against the demo: curl against it, an edit of the demo's
/// mesh file, and the `skiff-xds` commands that only read.
fn runnable(command: &str) -> bool {
    static RUNNABLE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"^(curl |for i in \$\(seq \d+\); do curl |sed -i .* <dir>/mesh\.yaml|(\./target/release/)?skiff-xds (check|status|describe)\b)",
        )
        .expect("regex")
    });
    RUNNABLE.is_match(command)
}

fn samples(blocks: &[Block]) -> Vec<Sample> {
    let mut out = Vec::new();
    for b in blocks {
        if b.marker.as_deref().is_some_and(|m| m.contains("not run")) {
            continue;
        }
        match b.info.as_str() {
            "sh" => {
                for (i, command) in logical_lines(&b.body) {
                    if runnable(&command) {
                        out.push(Sample {
                            line: b.line + 1 + i,
                            command,
                            output: None,
                        });
                    }
                }
            }
            "console" => {
                let mut i = 0;
                while i < b.body.len() {
                    let Some(first) = b.body[i].strip_prefix("$ ") else {
                        panic!(
                            "README.md:{}: a console block must start with a `$ command` line",
                            b.line + 1 + i
                        );
                    };
                    let start = i;
                    let mut cmd_lines = vec![first.to_owned()];
                    while cmd_lines
                        .last()
                        .is_some_and(|l| l.trim_end().ends_with('\\'))
                    {
                        i += 1;
                        cmd_lines.push(b.body[i].clone());
                    }
                    i += 1;
                    let mut output = Vec::new();
                    while i < b.body.len() && !b.body[i].starts_with("$ ") {
                        output.push(b.body[i].clone());
                        i += 1;
                    }
                    let (_, command) = logical_lines(&cmd_lines).pop().expect("a command line");
                    if runnable(&command) {
                        out.push(Sample {
                            line: b.line + 1 + start,
                            command,
                            output: Some(output),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The files the README names with `<!-- readme-test: file NAME -->`.
fn files(blocks: &[Block]) -> Vec<(String, String)> {
    blocks
        .iter()
        .filter_map(|b| {
            let name = b
                .marker
                .as_deref()?
                .strip_prefix("<!-- readme-test: file ")?
                .strip_suffix("-->")?
                .trim();
            Some((name.to_owned(), b.body.join("\n") + "\n"))
        })
        .collect()
}

/// The README's addresses and placeholders, as this demo has them.
struct Subst {
    pairs: Vec<(String, String)>,
}

impl Subst {
    fn new(demo: &Demo, bin_dir: &Path) -> Subst {
        let mut pairs = vec![
            (
                "127.0.0.1:15001".to_owned(),
                demo.outbound_addr().to_string(),
            ),
            ("127.0.0.1:15000".to_owned(), demo.admin_addr().to_string()),
            (
                "127.0.0.1:15014".to_owned(),
                demo.xds_admin_addr().to_string(),
            ),
            ("127.0.0.1:15010".to_owned(), demo.xds_addr().to_string()),
            ("<dir>".to_owned(), demo.dir().display().to_string()),
            (
                "./target/release/".to_owned(),
                format!("{}/", bin_dir.display()),
            ),
        ];
        for sc in demo.sidecars() {
            let addr = |a: SocketAddr| a.to_string();
            pairs.push((format!("<{} admin>", sc.workload), addr(sc.admin)));
            pairs.push((format!("<{} inbound>", sc.workload), addr(sc.inbound)));
        }
        Subst { pairs }
    }

    fn apply(&self, command: &str, line: usize) -> String {
        let mut out = command.to_owned();
        for (from, to) in &self.pairs {
            out = out.replace(from, to);
        }
        static LEFT: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"<[a-z][a-z0-9 -]*>").expect("regex"));
        if let Some(m) = LEFT.find(&out) {
            panic!(
                "README.md:{line}: no value for the placeholder {} in `{command}`",
                m.as_str()
            );
        }
        out
    }
}

/// What varies from run to run replaced by a fixed token, and runs of spaces made one.
fn normalise(line: &str, demo_dir: &Path) -> String {
    static RULES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
        [
            (r"^date: .*", "date: <date>"),
            (r"\d{4}-\d{2}-\d{2}T[0-9:.]+Z", "<time>"),
            (
                r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                "<uuid>",
            ),
            (r"127\.0\.0\.1:\d+", "127.0.0.1:<port>"),
            (r"\b[0-9a-f]{8,}\b", "<hex>"),
            (r#""version": "\d+:"#, r#""version": "<n>:"#),
            (r"\b\d+(ms|s|m|h) ago\b", "<age> ago"),
            (r"^(skiff_[a-z_]+(\{.*\})?) \S+$", "$1 <n>"),
            (r"\b\d+(\.\d+)+\b", "<num>"),
        ]
        .into_iter()
        .map(|(re, to)| (Regex::new(re).expect("regex"), to))
        .collect()
    });
    let mut out = line.replace(&demo_dir.display().to_string(), "<dir>");
    for (re, to) in RULES.iter() {
        out = re.replace_all(&out, *to).into_owned();
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `actual` is `expected`, where an expected `...` line stands for any lines.
fn matches(expected: &[String], actual: &[String]) -> bool {
    let (n, m) = (expected.len(), actual.len());
    // ok[i][j]: expected[i..] matches actual[j..].
    let mut ok = vec![vec![false; m + 1]; n + 1];
    ok[n][m] = true;
    for i in (0..n).rev() {
        for j in (0..=m).rev() {
            ok[i][j] = if expected[i] == "..." {
                ok[i + 1][j] || (j < m && ok[i][j + 1])
            } else {
                j < m && expected[i] == actual[j] && ok[i + 1][j + 1]
            };
        }
    }
    ok[0][0]
}

/// The exit status a trailing `# ... exit N` comment gives, else 0.
fn expected_exit(command: &str) -> i32 {
    static EXIT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"#.*\bexits? (?:status )?(\d+)").expect("regex"));
    EXIT.captures(command)
        .and_then(|c| c[1].parse().ok())
        .unwrap_or(0)
}

/// For `curl -si`: the status and `x-…` headers its comment announces.
fn announced(command: &str) -> (Option<String>, Vec<String>) {
    static STATUS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\s*(\d{3})\b").expect("regex"));
    static HEADER: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\b(x-[a-z-]+: [a-z0-9-]+)").expect("regex"));
    let Some((cmd, comment)) = command.split_once(" #") else {
        return (None, Vec::new());
    };
    if !cmd.starts_with("curl -si ") {
        return (None, Vec::new());
    }
    let status = STATUS.captures(comment).map(|c| c[1].to_owned());
    let headers = HEADER
        .captures_iter(comment)
        .map(|c| c[1].to_owned())
        .collect();
    (status, headers)
}

/// Runs `command` with `sh -c`, stderr into stdout; its exit status and output.
async fn run(command: &str, cwd: &Path, path: &str) -> (Option<i32>, String) {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{{ {command}\n}} 2>&1"))
        .current_dir(cwd)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = within(&format!("`{command}`"), STEP, child)
        .await
        .expect("run sh");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Checks one run of a sample: `None` when it is as the README says, else why not.
fn verdict(s: &Sample, status: Option<i32>, printed: &str, demo_dir: &Path) -> Option<String> {
    let want = expected_exit(&s.command);
    if status != Some(want) {
        return Some(format!("exit status {status:?}, the README says {want}"));
    }
    let actual: Vec<String> = printed
        .lines()
        .map(|l| normalise(l, demo_dir))
        .filter(|l| !l.is_empty())
        .collect();
    let (code, headers) = announced(&s.command);
    if let Some(code) = code {
        let first = printed.lines().next().unwrap_or_default();
        if !first.starts_with("HTTP/") || !first.contains(&format!(" {code} ")) {
            return Some(format!("status line {first:?}, the README says {code}"));
        }
    }
    for h in headers {
        if !printed.lines().any(|l| l.trim_end() == h) {
            return Some(format!("no `{h}` header, which the README announces"));
        }
    }
    let expected: Vec<String> = s
        .output
        .as_ref()?
        .iter()
        .map(|l| normalise(l, demo_dir))
        .filter(|l| !l.is_empty())
        .collect();
    let same = if s.command.contains("/metrics") || s.command.contains("skiff-xds status ") {
        // Series of one family, and the proxies `status` lists, come in no fixed order.
        let (mut e, mut a) = (expected.clone(), actual.clone());
        e.sort();
        a.sort();
        e == a
    } else {
        matches(&expected, &actual)
    };
    (!same).then(|| {
        format!(
            "the output differs (normalised).\n--- README\n{}\n--- now\n{}",
            expected.join("\n"),
            actual.join("\n")
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_samples_run_against_the_demo() {
    let blocks = blocks(README);
    let samples = samples(&blocks);
    let count = |p: &str| samples.iter().filter(|s| s.command.contains(p)).count();
    // The extraction must keep finding what the README shows; a README rewritten into another
    // shape fails here rather than testing nothing.
    assert!(
        count("curl ") >= 15,
        "curl samples found: {}",
        count("curl ")
    );
    assert!(count("skiff-xds check ") >= 2, "check samples");
    assert!(count("skiff-xds status ") >= 1, "status samples");
    assert!(count("skiff-xds describe ") >= 2, "describe samples");
    assert!(
        samples.iter().filter(|s| s.output.is_some()).count() >= 8,
        "transcripts"
    );

    let work = tempfile::Builder::new()
        .prefix("skiff-it-readme-")
        .tempdir()
        .expect("tempdir");
    let demo_dir = work.path().join("demo");
    let run_dir = work.path().join("run");
    std::fs::create_dir_all(&run_dir).expect("mkdir");
    for (name, text) in files(&blocks) {
        std::fs::write(run_dir.join(&name), text).expect("write a README file");
    }

    let bin_dir = crate::support::control_plane::skiff_xds_bin()
        .await
        .parent()
        .expect("skiff-xds lives in a directory")
        .to_owned();
    assert!(bin_dir.join("skiff").exists(), "skiff next to skiff-xds");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let demo = demo::start(DemoOptions {
        skiff_bin: env!("CARGO_BIN_EXE_skiff").into(),
        dir: Some(demo_dir.clone()),
        outbound_port: 0,
        admin_port: 0,
        xds_port: 0,
        xds_admin_port: 0,
        ..DemoOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("the demo mesh did not start: {e:#}"));
    let demo_dir: PathBuf = demo.dir().to_owned();
    let subst = Subst::new(&demo, &bin_dir);

    // The README's metrics sample needs both reviews replicas to have been called; its ten
    // GETs miss one of them once in 2^10 runs. These requests make that 2^-30.
    for _ in 0..20 {
        let cmd = format!(
            "curl -s -H 'Host: reviews' http://{}/",
            demo.outbound_addr()
        );
        run(&cmd, &run_dir, &path).await;
    }

    let mut failures = String::new();
    for s in &samples {
        let command = subst.apply(&s.command, s.line);
        let deadline = Instant::now() + SETTLE;
        loop {
            let (status, printed) = run(&command, &run_dir, &path).await;
            match verdict(s, status, &printed, &demo_dir) {
                None => break,
                Some(why) if Instant::now() >= deadline => {
                    let _ = writeln!(
                        failures,
                        "README.md:{}: `{}`: {why}\n--- printed\n{printed}",
                        s.line, s.command
                    );
                    break;
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    within("demo shutdown", STEP, demo.shutdown()).await;
    assert!(
        failures.is_empty(),
        "README samples that no longer hold:\n{failures}"
    );
}

#[test]
fn matching_and_normalising() {
    let lines = |s: &[&str]| s.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
    assert!(matches(
        &lines(&["a", "...", "d"]),
        &lines(&["a", "b", "c", "d"])
    ));
    assert!(matches(&lines(&["a", "...", "d"]), &lines(&["a", "d"])));
    assert!(!matches(&lines(&["a", "...", "d"]), &lines(&["a", "b"])));
    assert!(!matches(&lines(&["a", "b"]), &lines(&["a", "c"])));
    let dir = Path::new("/tmp/skiff-demo-x");
    assert_eq!(
        normalise("  endpoint 127.0.0.1:41234  workload reviews-v1", dir),
        normalise("  endpoint 127.0.0.1:5  workload   reviews-v1", dir)
    );
    assert_ne!(
        normalise("HTTP/1.1 403 Forbidden", dir),
        normalise("HTTP/1.1 200 OK", dir)
    );
    assert_eq!(expected_exit("skiff-xds check bad.yaml   # exit 1"), 1);
    assert_eq!(expected_exit("curl -s http://x/   # 200"), 0);
    assert_eq!(
        announced("curl -si -H 'Host: web' 'http://x/delay'   # 504, x-skiff-reason: timeout"),
        (
            Some("504".to_owned()),
            vec!["x-skiff-reason: timeout".to_owned()]
        )
    );
}
