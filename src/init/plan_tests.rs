//! The planner's tables: which flags give which rules, and the restore texts for installing
//! over, reinstalling on and cleaning up every shape of existing `nat` table.

use clap::Parser;

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: InitArgs,
}

fn opts(flags: &[&str]) -> InitArgs {
    Cli::try_parse_from(std::iter::once("init").chain(flags.iter().copied()))
        .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
        .args
}

fn lines(p: &Plan) -> Vec<String> {
    p.chains
        .iter()
        .chain(&p.jumps)
        .map(|r| format!("-A {} {}", r.chain, r.spec))
        .collect()
}

const DEFAULT_V4: &str = "\
*nat
:SKIFF_INBOUND - [0:0]
:SKIFF_IN_REDIRECT - [0:0]
:SKIFF_OUTPUT - [0:0]
:SKIFF_REDIRECT - [0:0]
-A SKIFF_INBOUND -p tcp -m tcp --dport 15000 -j RETURN
-A SKIFF_INBOUND -p tcp -m tcp --dport 15001 -j RETURN
-A SKIFF_INBOUND -p tcp -m tcp --dport 15006 -j RETURN
-A SKIFF_INBOUND -p tcp -j SKIFF_IN_REDIRECT
-A SKIFF_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A SKIFF_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A SKIFF_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j SKIFF_INBOUND
-A SKIFF_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A SKIFF_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A SKIFF_OUTPUT -d 127.0.0.1/32 -j RETURN
-A SKIFF_OUTPUT -j SKIFF_REDIRECT
-A SKIFF_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A PREROUTING -p tcp -j SKIFF_INBOUND
-A OUTPUT -p tcp -j SKIFF_OUTPUT
COMMIT
";

#[test]
fn default_rules() {
    assert_eq!(plan(&opts(&[]), Family::V4).restore_text(), DEFAULT_V4);
    let v6 = plan(&opts(&[]), Family::V6).restore_text();
    // The same, with the IPv6 loopback and the IPv6 source of the sidecar's connections to
    // its app at the pod's address.
    let want_v6 = DEFAULT_V4
        .replace("127.0.0.6/32", "::6/128")
        .replace("127.0.0.1/32", "::1/128");
    assert_eq!(v6, want_v6);
}

/// Each case: flags, family, lines that must be in the plan, lines that must not.
#[test]
fn flags_to_rules() {
    struct Case {
        flags: &'static [&'static str],
        family: Family,
        has: &'static [&'static str],
        lacks: &'static [&'static str],
    }
    let cases = [
        Case {
            flags: &[
                "--proxy-uid",
                "2102",
                "--inbound-port",
                "4143",
                "--outbound-port",
                "4140",
            ],
            family: Family::V4,
            has: &[
                "-A SKIFF_OUTPUT -m owner --uid-owner 2102 -j RETURN",
                "-A SKIFF_OUTPUT -o lo -m owner ! --uid-owner 2102 -j RETURN",
                "-A SKIFF_IN_REDIRECT -p tcp -j REDIRECT --to-ports 4143",
                "-A SKIFF_REDIRECT -p tcp -j REDIRECT --to-ports 4140",
                "-A SKIFF_INBOUND -p tcp -m tcp --dport 4143 -j RETURN",
                "-A SKIFF_INBOUND -p tcp -m tcp --dport 4140 -j RETURN",
            ],
            lacks: &["-A SKIFF_OUTPUT -m owner --uid-owner 1337 -j RETURN"],
        },
        Case {
            flags: &["--proxy-gid", "1338"],
            family: Family::V4,
            has: &[
                "-A SKIFF_OUTPUT -m owner --uid-owner 1337 -j RETURN",
                "-A SKIFF_OUTPUT -m owner --gid-owner 1338 -j RETURN",
                "-A SKIFF_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner 1338 -j SKIFF_INBOUND",
            ],
            lacks: &[],
        },
        Case {
            flags: &["--exclude-inbound-ports", "22,15000,8081"],
            family: Family::V6,
            has: &[
                "-A SKIFF_INBOUND -p tcp -m tcp --dport 22 -j RETURN",
                "-A SKIFF_INBOUND -p tcp -m tcp --dport 8081 -j RETURN",
            ],
            lacks: &[],
        },
        Case {
            flags: &[
                "--exclude-outbound-ports",
                "5432",
                "--exclude-outbound-cidrs",
                "169.254.169.254,10.1.0.0/16,fd00:1::/64",
            ],
            family: Family::V4,
            has: &[
                "-A SKIFF_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN",
                "-A SKIFF_OUTPUT -d 169.254.169.254/32 -j RETURN",
                "-A SKIFF_OUTPUT -d 10.1.0.0/16 -j RETURN",
                "-A SKIFF_OUTPUT -j SKIFF_REDIRECT",
            ],
            lacks: &["-A SKIFF_OUTPUT -d fd00:1::/64 -j RETURN"],
        },
        Case {
            flags: &["--exclude-outbound-cidrs", "10.1.0.0/16,fd00:1::/64"],
            family: Family::V6,
            has: &["-A SKIFF_OUTPUT -d fd00:1::/64 -j RETURN"],
            lacks: &["-A SKIFF_OUTPUT -d 10.1.0.0/16 -j RETURN"],
        },
        Case {
            flags: &["--include-outbound-cidrs", "10.96.0.0/12,fd00:96::/108"],
            family: Family::V4,
            has: &["-A SKIFF_OUTPUT -d 10.96.0.0/12 -j SKIFF_REDIRECT"],
            lacks: &[
                "-A SKIFF_OUTPUT -j SKIFF_REDIRECT",
                "-A SKIFF_OUTPUT -d fd00:96::/108 -j SKIFF_REDIRECT",
            ],
        },
        Case {
            // No outbound redirect at all; inbound untouched.
            flags: &["--include-outbound-cidrs", ""],
            family: Family::V4,
            has: &[
                "-A SKIFF_INBOUND -p tcp -j SKIFF_IN_REDIRECT",
                "-A SKIFF_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
            ],
            lacks: &["-A SKIFF_OUTPUT -j SKIFF_REDIRECT"],
        },
    ];
    for c in cases {
        let got = lines(&plan(&opts(c.flags), c.family));
        for want in c.has {
            assert!(
                got.iter().any(|l| l == want),
                "{:?}: no {want:?} in\n{}",
                c.flags,
                got.join("\n")
            );
        }
        for unwanted in c.lacks {
            assert!(
                !got.iter().any(|l| l == unwanted),
                "{:?}: {unwanted:?} in\n{}",
                c.flags,
                got.join("\n")
            );
        }
    }
}

#[test]
fn exclusions_come_before_the_redirect() {
    let p = plan(
        &opts(&[
            "--exclude-outbound-cidrs",
            "10.1.0.0/16",
            "--include-outbound-cidrs",
            "10.0.0.0/8",
            "--exclude-outbound-ports",
            "3306",
        ]),
        Family::V4,
    );
    let l = lines(&p);
    let at = |s: &str| {
        l.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("no {s}"))
    };
    let include = at("-A SKIFF_OUTPUT -d 10.0.0.0/8 -j SKIFF_REDIRECT");
    assert!(at("-A SKIFF_OUTPUT -d 10.1.0.0/16 -j RETURN") < include);
    assert!(at("-A SKIFF_OUTPUT -p tcp -m tcp --dport 3306 -j RETURN") < include);
    assert!(at("-A SKIFF_OUTPUT -m owner --uid-owner 1337 -j RETURN") < include);
    // Inbound exclusions precede the catch-all into the redirect.
    assert!(
        at("-A SKIFF_INBOUND -p tcp -m tcp --dport 15006 -j RETURN")
            < at("-A SKIFF_INBOUND -p tcp -j SKIFF_IN_REDIRECT")
    );
}

fn save(body: &str) -> Saved {
    Saved::parse(&format!(
        "# Generated by iptables-save v1.8.9 (nf_tables) on Mon\n*nat\n:PREROUTING ACCEPT [3:180]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [7:420]\n:POSTROUTING ACCEPT [0:0]\n{body}COMMIT\n# Completed on Mon\n"
    ))
}

fn installed(p: &Plan) -> Saved {
    let text = p.restore_text();
    let decl: String = CHAINS.iter().map(|c| format!(":{c} - [0:0]\n")).collect();
    let rules: String = text
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(|l| format!("{l}\n"))
        .collect();
    save(&format!("{decl}{rules}"))
}

#[test]
fn parse_reads_only_the_nat_table() {
    let s = Saved::parse(
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j SKIFF_X\nCOMMIT\n*nat\n:OUTPUT ACCEPT [0:0]\n:SKIFF_OUTPUT - [0:0]\n-A OUTPUT -p tcp -m comment --comment \"a b\" -j SKIFF_OUTPUT\nCOMMIT\n",
    );
    assert_eq!(s.chains, ["OUTPUT", "SKIFF_OUTPUT"]);
    assert_eq!(
        s.rules,
        [Rule::new(
            "OUTPUT",
            "-p tcp -m comment --comment \"a b\" -j SKIFF_OUTPUT"
        )]
    );
}

#[test]
fn apply_on_a_clean_table_adds_both_jumps() {
    let p = plan(&opts(&[]), Family::V4);
    let clean = save("-A OUTPUT -d 10.0.0.1/32 -j DNAT --to-destination 10.0.0.2\n");
    assert!(!p.is_installed(&clean));
    assert!(!clean.has_skiff());
    assert_eq!(
        p.apply_text(&clean),
        p.restore_text(),
        "the same as --dry-run prints"
    );
}

#[test]
fn apply_over_itself_keeps_one_jump_each() {
    let p = plan(&opts(&[]), Family::V4);
    let once = installed(&p);
    assert!(p.is_installed(&once));
    let again = p.apply_text(&once);
    assert!(!again.contains("-A PREROUTING"), "{again}");
    assert!(!again.contains("-A OUTPUT "), "{again}");
    assert!(!again.contains("-D "), "{again}");
    assert!(
        again.contains(":SKIFF_OUTPUT - [0:0]\n"),
        "chains are declared, so emptied and refilled"
    );
}

#[test]
fn apply_repairs_duplicates_stale_jumps_and_old_chains() {
    let p = plan(&opts(&[]), Family::V4);
    let messy = save(
        ":SKIFF_INBOUND - [0:0]\n:SKIFF_OUTPUT - [0:0]\n:SKIFF_OLD - [0:0]\n\
         -A PREROUTING -p tcp -j SKIFF_INBOUND\n-A PREROUTING -p tcp -j SKIFF_INBOUND\n\
         -A OUTPUT -j SKIFF_OUTPUT\n-A OUTPUT -p udp -j SKIFF_OLD\n\
         -A SKIFF_OUTPUT -j SKIFF_OLD\n-A SKIFF_OLD -p tcp -j REDIRECT --to-ports 1\n",
    );
    assert!(!p.is_installed(&messy));
    let text = p.apply_text(&messy);
    let want_deletes = [
        "-D PREROUTING -p tcp -j SKIFF_INBOUND",
        "-D OUTPUT -j SKIFF_OUTPUT",
        "-D OUTPUT -p udp -j SKIFF_OLD",
        "-F SKIFF_OLD",
        "-X SKIFF_OLD",
    ];
    for d in want_deletes {
        assert_eq!(
            text.lines().filter(|l| *l == d).count(),
            1,
            "{d} once in\n{text}"
        );
    }
    assert!(
        !text.contains("-A PREROUTING"),
        "one PREROUTING jump already there:\n{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| *l == "-A OUTPUT -p tcp -j SKIFF_OUTPUT")
            .count(),
        1
    );
    // Declarations (which empty SKIFF_OUTPUT, the old chain's last user) come before -X.
    let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("no {s}"));
    assert!(at(":SKIFF_OUTPUT") < at("-X SKIFF_OLD"));
}

#[test]
fn is_installed_notices_differences() {
    let p = plan(&opts(&[]), Family::V4);
    let other = plan(&opts(&["--exclude-outbound-ports", "25"]), Family::V4);
    assert!(!p.is_installed(&installed(&other)));
    let mut missing_jump = installed(&p);
    missing_jump.rules.retain(|r| r.chain != "PREROUTING");
    assert!(!p.is_installed(&missing_jump));
}

#[test]
fn cleanup() {
    assert_eq!(cleanup_text(&save("")), None, "a clean table needs nothing");
    assert_eq!(
        cleanup_text(&save("-A OUTPUT -p tcp -j REDIRECT --to-ports 8080\n")),
        None,
        "rules of others are left alone"
    );
    let p = plan(
        &opts(&["--exclude-outbound-cidrs", "10.0.0.0/8"]),
        Family::V4,
    );
    let text = cleanup_text(&installed(&p)).expect("something to remove");
    assert_eq!(
        text,
        "*nat\n\
         -D PREROUTING -p tcp -j SKIFF_INBOUND\n\
         -D OUTPUT -p tcp -j SKIFF_OUTPUT\n\
         -F SKIFF_INBOUND\n-F SKIFF_IN_REDIRECT\n-F SKIFF_OUTPUT\n-F SKIFF_REDIRECT\n\
         -X SKIFF_INBOUND\n-X SKIFF_IN_REDIRECT\n-X SKIFF_OUTPUT\n-X SKIFF_REDIRECT\n\
         COMMIT\n"
    );
    // Only a chain left over, or only a jump: still removed.
    let only_chain = save(":SKIFF_REDIRECT - [0:0]\n");
    assert!(only_chain.has_skiff());
    assert_eq!(
        cleanup_text(&only_chain).as_deref(),
        Some("*nat\n-F SKIFF_REDIRECT\n-X SKIFF_REDIRECT\nCOMMIT\n")
    );
}
