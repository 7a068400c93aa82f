//! Which iptables back end (legacy or nf_tables) `skiff init` drives, and running its
//! `-save` and `-restore` tools. The choice itself (`choose`) is pure: the back end that
//! already holds rules wins, as both cannot be used at once without one shadowing the other.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use super::{InitError, options::BackendChoice, plan::Family};

/// An iptables back end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }

    /// The back end an `iptables --version` line reports: `(nf_tables)`, `(legacy)`, or no
    /// mark at all (before 1.8 there was only the legacy one).
    pub fn from_version(text: &str) -> Option<Backend> {
        let line = text.lines().find(|l| l.contains("iptables"))?;
        Some(if line.contains("(nf_tables)") {
            Backend::Nft
        } else {
            Backend::Legacy
        })
    }
}

/// The tools of one back end and how they are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tools {
    pub backend: Backend,
    /// `iptables-nft-restore` style names; else the plain `iptables-restore`, which is that
    /// back end on this system.
    pub named: bool,
}

impl Tools {
    fn tool(self, family: Family, op: &str) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        if self.named {
            format!("{base}-{}-{op}", self.backend.name())
        } else {
            format!("{base}-{op}")
        }
    }

    pub fn restore(self, family: Family) -> String {
        self.tool(family, "restore")
    }

    pub fn save(self, family: Family) -> String {
        self.tool(family, "save")
    }
}

/// What is installed: the back-end-named commands, and what the plain `iptables` is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Installed {
    pub legacy: bool,
    pub nft: bool,
    /// `None`: no plain `iptables`.
    pub plain: Option<Backend>,
}

/// Rules each back end holds now (`-A` lines over both families).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleCounts {
    pub legacy: usize,
    pub nft: usize,
}

/// Picks the tools. `counts` matters only in `auto` mode with both back ends installed.
pub fn choose(
    choice: BackendChoice,
    installed: Installed,
    counts: Option<RuleCounts>,
) -> Result<Tools, InitError> {
    let forced = |backend: Backend| {
        let named = match backend {
            Backend::Legacy => installed.legacy,
            Backend::Nft => installed.nft,
        };
        if named {
            Ok(Tools {
                backend,
                named: true,
            })
        } else if installed.plain == Some(backend) {
            Ok(Tools {
                backend,
                named: false,
            })
        } else {
            Err(InitError::NoBackend {
                wanted: backend.name(),
            })
        }
    };
    match choice {
        BackendChoice::Legacy => forced(Backend::Legacy),
        BackendChoice::Nft => forced(Backend::Nft),
        BackendChoice::Auto => match (installed.legacy, installed.nft, installed.plain) {
            (true, true, plain) => {
                let backend = match counts {
                    Some(c) if c.legacy > c.nft => Backend::Legacy,
                    Some(c) if c.nft > c.legacy => Backend::Nft,
                    // Neither holds more: the system's own default, else the current one.
                    _ => plain.unwrap_or(Backend::Nft),
                };
                forced(backend)
            }
            (true, false, _) => forced(Backend::Legacy),
            (false, true, _) => forced(Backend::Nft),
            (false, false, Some(plain)) => forced(plain),
            (false, false, None) => Err(InitError::NoIptables),
        },
    }
}

/// Whether `auto` needs rule counts to decide.
pub fn needs_counts(choice: BackendChoice, installed: Installed) -> bool {
    choice == BackendChoice::Auto && installed.legacy && installed.nft
}

/// Looks at the installed commands (each asked for its version).
pub fn probe() -> Installed {
    let runs = |cmd: &str| {
        Command::new(cmd)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    Installed {
        legacy: runs("iptables-legacy").is_some(),
        nft: runs("iptables-nft").is_some(),
        plain: runs("iptables")
            .and_then(|o| Backend::from_version(&String::from_utf8_lossy(&o.stdout))),
    }
}

/// Counts the rules each back end holds, over both families and every table; a tool that
/// fails counts as holding none.
pub fn count_rules() -> RuleCounts {
    let count = |backend: Backend| {
        let tools = Tools {
            backend,
            named: true,
        };
        [Family::V4, Family::V6]
            .into_iter()
            .filter_map(|f| {
                Command::new(tools.save(f))
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output()
                    .ok()
            })
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.starts_with("-A "))
                    .count()
            })
            .sum()
    };
    RuleCounts {
        legacy: count(Backend::Legacy),
        nft: count(Backend::Nft),
    }
}

/// The `nat` table as `-save -t nat` prints it. A table the kernel has not created yet reads
/// as empty.
pub fn save_nat(tools: Tools, family: Family) -> Result<String, InitError> {
    let tool = tools.save(family);
    let out = Command::new(&tool)
        .args(["-t", "nat"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(&tool, e))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if is_permission(&stderr) {
        return Err(InitError::NoNetAdmin);
    }
    if stderr.contains("does not exist") {
        return Ok(String::new());
    }
    Err(InitError::ToolFailed {
        tool,
        status: out.status.to_string(),
        stderr,
    })
}

/// Feeds `text` to `-restore --noflush`: one transaction, all of it or nothing.
pub fn restore(tools: Tools, family: Family, text: &str) -> Result<(), InitError> {
    let tool = tools.restore(family);
    let mut child = Command::new(&tool)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(&tool, e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A tool that dies early closes the pipe; its exit status below says why.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| spawn_error(&tool, e))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if is_permission(&stderr) {
        return Err(InitError::NoNetAdmin);
    }
    Err(InitError::ToolFailed {
        tool,
        status: out.status.to_string(),
        stderr,
    })
}

fn spawn_error(tool: &str, e: std::io::Error) -> InitError {
    if e.kind() == std::io::ErrorKind::NotFound {
        InitError::ToolMissing {
            tool: tool.to_owned(),
        }
    } else {
        InitError::Spawn {
            tool: tool.to_owned(),
            source: e,
        }
    }
}

/// How the iptables tools report a missing capability (EPERM), on either back end.
fn is_permission(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("permission denied") || s.contains("operation not permitted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let cases = [
            ("iptables v1.8.9 (nf_tables)\n", Some(Backend::Nft)),
            ("iptables v1.8.7 (legacy)\n", Some(Backend::Legacy)),
            ("iptables v1.6.1\n", Some(Backend::Legacy)),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(Backend::from_version(text), want, "{text:?}");
        }
    }

    #[test]
    fn tool_names() {
        let nft = Tools {
            backend: Backend::Nft,
            named: true,
        };
        let plain = Tools {
            backend: Backend::Legacy,
            named: false,
        };
        assert_eq!(nft.restore(Family::V4), "iptables-nft-restore");
        assert_eq!(nft.save(Family::V6), "ip6tables-nft-save");
        assert_eq!(plain.restore(Family::V6), "ip6tables-restore");
        assert_eq!(plain.save(Family::V4), "iptables-save");
    }

    #[test]
    fn choices() {
        use Backend::{Legacy, Nft};
        use BackendChoice as C;
        let both = |plain| Installed {
            legacy: true,
            nft: true,
            plain,
        };
        let only_plain = |plain| Installed {
            legacy: false,
            nft: false,
            plain: Some(plain),
        };
        let counts = |legacy, nft| Some(RuleCounts { legacy, nft });
        let named = |backend| {
            Ok(Tools {
                backend,
                named: true,
            })
        };
        let plain = |backend| {
            Ok(Tools {
                backend,
                named: false,
            })
        };
        type Case = (
            C,
            Installed,
            Option<RuleCounts>,
            Result<Tools, &'static str>,
        );
        let cases: Vec<Case> = vec![
            // Auto: the back end holding rules wins, whatever the default.
            (C::Auto, both(Some(Nft)), counts(12, 0), named(Legacy)),
            (C::Auto, both(Some(Legacy)), counts(0, 3), named(Nft)),
            // A tie goes to what `iptables --version` says, else nft.
            (C::Auto, both(Some(Legacy)), counts(0, 0), named(Legacy)),
            (C::Auto, both(None), counts(4, 4), named(Nft)),
            (C::Auto, both(Some(Nft)), None, named(Nft)),
            // Only one back end installed, or only the plain commands.
            (
                C::Auto,
                Installed {
                    legacy: true,
                    nft: false,
                    plain: Some(Legacy),
                },
                None,
                named(Legacy),
            ),
            (C::Auto, only_plain(Legacy), None, plain(Legacy)),
            (C::Auto, only_plain(Nft), None, plain(Nft)),
            (C::Auto, Installed::default(), None, Err("no-iptables")),
            // Forced: the flag wins over rule counts.
            (C::Legacy, both(Some(Nft)), counts(0, 9), named(Legacy)),
            (C::Nft, both(Some(Legacy)), counts(9, 0), named(Nft)),
            (C::Nft, only_plain(Nft), None, plain(Nft)),
            (C::Nft, only_plain(Legacy), None, Err("no-nft")),
            (C::Legacy, Installed::default(), None, Err("no-legacy")),
        ];
        for (choice, installed, counts, want) in cases {
            let got = choose(choice, installed, counts).map_err(|e| match e {
                InitError::NoIptables => "no-iptables",
                InitError::NoBackend { wanted: "nft" } => "no-nft",
                InitError::NoBackend { .. } => "no-legacy",
                _ => "other",
            });
            assert_eq!(got, want, "{choice:?} {installed:?} {counts:?}");
        }
        assert!(needs_counts(C::Auto, both(None)));
        assert!(!needs_counts(C::Nft, both(None)));
        assert!(!needs_counts(C::Auto, only_plain(Nft)));
    }

    #[test]
    fn permission_errors() {
        assert!(is_permission(
            "iptables-restore v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)"
        ));
        assert!(is_permission(
            "iptables-restore: line 2 failed: Operation not permitted"
        ));
        assert!(!is_permission("iptables-restore: line 2 failed"));
    }
}
