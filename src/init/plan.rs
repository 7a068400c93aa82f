//! The rule planner: from the options to the exact `nat` rules for one address family, and from
//! those rules plus what `iptables-save -t nat` shows to the `iptables-restore --noflush` text
//! that installs them once, or removes every `SKIFF_` rule and chain. Pure: no I/O.

use std::fmt::Write as _;

use super::options::{Cidr, Include, InitArgs};

pub const INBOUND: &str = "SKIFF_INBOUND";
pub const IN_REDIRECT: &str = "SKIFF_IN_REDIRECT";
pub const OUTPUT: &str = "SKIFF_OUTPUT";
pub const REDIRECT: &str = "SKIFF_REDIRECT";
/// Every chain `skiff init` owns, in the order they are declared.
pub const CHAINS: [&str; 4] = [INBOUND, IN_REDIRECT, OUTPUT, REDIRECT];
/// What every chain name this tool owns starts with; cleanup removes all such chains.
pub const PREFIX: &str = "SKIFF_";

/// The address family a rule set is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    fn holds(self, cidr: &Cidr) -> bool {
        cidr.is_ipv6() == (self == Family::V6)
    }

    /// How the family is named to a person, e.g. in `--dry-run`'s comments.
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// One `-A` line: the chain it is appended to and the rest of the line, written the way
/// `iptables-save` prints it (so an installed plan reads back identical).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub spec: String,
}

impl Rule {
    fn new(chain: &str, spec: impl Into<String>) -> Rule {
        Rule {
            chain: chain.to_owned(),
            spec: spec.into(),
        }
    }

    /// The chain this rule jumps (`-j`) or goes (`-g`) to, when it is a user chain or target.
    fn target(&self) -> Option<&str> {
        let mut words = self.spec.split_whitespace();
        while let Some(w) = words.next() {
            if w == "-j" || w == "-g" {
                return words.next();
            }
        }
        None
    }
}

/// The rules of one family: the SKIFF_ chains' contents, then the jumps into them from the
/// built-in chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub family: Family,
    pub chains: Vec<Rule>,
    pub jumps: Vec<Rule>,
}

/// Plans the rules for `family` from the options.
pub fn plan(opts: &InitArgs, family: Family) -> Plan {
    let mut chains = Vec::new();
    let mut push = |chain: &str, spec: String| chains.push(Rule::new(chain, spec));

    // Inbound: the proxy's own ports are reached directly (the admin port by probes, the
    // listeners by nobody else); excluded ports reach the app untouched.
    let mut skipped = vec![opts.admin_port, opts.outbound_port, opts.inbound_port];
    for p in &opts.exclude_inbound_ports.0 {
        if !skipped.contains(p) {
            skipped.push(*p);
        }
    }
    for port in skipped {
        push(INBOUND, format!("-p tcp -m tcp --dport {port} -j RETURN"));
    }
    push(INBOUND, format!("-p tcp -j {IN_REDIRECT}"));
    push(
        IN_REDIRECT,
        format!("-p tcp -j REDIRECT --to-ports {}", opts.inbound_port),
    );

    // Outbound. The proxy connecting to this pod's own address (an app calling itself through
    // its Service) leaves through `lo`: that goes to the inbound side, like any peer's
    // connection, with the same port exclusions. Other traffic on `lo` (the app to itself,
    // the proxy to the app on 127.0.0.1) and everything else the proxy sends stays untouched.
    let lo = family.loopback();
    // The sidecar's connections to the app at the pod's own address (an app that does not
    // listen on loopback) come from a source address of their own: straight to the app.
    let (source, bits) = match family {
        Family::V4 => (crate::inbound::POD_SOURCE.ip(), 32),
        Family::V6 => (crate::inbound::POD_SOURCE_V6.ip(), 128),
    };
    push(OUTPUT, format!("-s {source}/{bits} -o lo -j RETURN"));
    let mut owners = vec![format!("--uid-owner {}", opts.proxy_uid)];
    if let Some(gid) = opts.proxy_gid {
        owners.push(format!("--gid-owner {gid}"));
    }
    for owner in &owners {
        push(
            OUTPUT,
            format!("! -d {lo} -o lo -m owner {owner} -j {INBOUND}"),
        );
        push(OUTPUT, format!("-o lo -m owner ! {owner} -j RETURN"));
        push(OUTPUT, format!("-m owner {owner} -j RETURN"));
    }
    push(OUTPUT, format!("-d {lo} -j RETURN"));
    for port in &opts.exclude_outbound_ports.0 {
        push(OUTPUT, format!("-p tcp -m tcp --dport {port} -j RETURN"));
    }
    for cidr in opts
        .exclude_outbound_cidrs
        .0
        .iter()
        .filter(|c| family.holds(c))
    {
        push(OUTPUT, format!("-d {cidr} -j RETURN"));
    }
    match &opts.include_outbound_cidrs {
        Include::All => push(OUTPUT, format!("-j {REDIRECT}")),
        Include::Only(list) => {
            for cidr in list.0.iter().filter(|c| family.holds(c)) {
                push(OUTPUT, format!("-d {cidr} -j {REDIRECT}"));
            }
        }
    }
    push(
        REDIRECT,
        format!("-p tcp -j REDIRECT --to-ports {}", opts.outbound_port),
    );

    let jumps = vec![
        Rule::new("PREROUTING", format!("-p tcp -j {INBOUND}")),
        Rule::new("OUTPUT", format!("-p tcp -j {OUTPUT}")),
    ];
    Plan {
        family,
        chains,
        jumps,
    }
}

impl Plan {
    /// The whole plan as `iptables-restore --noflush` input for a table without SKIFF_ rules
    /// (what `--dry-run` prints).
    pub fn restore_text(&self) -> String {
        let mut out = String::from("*nat\n");
        for chain in CHAINS {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        for r in self.chains.iter().chain(&self.jumps) {
            let _ = writeln!(out, "-A {} {}", r.chain, r.spec);
        }
        out.push_str("COMMIT\n");
        out
    }

    /// Whether `saved` already holds exactly this plan: the SKIFF_ chains with these rules in
    /// this order, each jump once, nothing else of ours.
    pub fn is_installed(&self, saved: &Saved) -> bool {
        // Chain by chain: `iptables-save` may list the chains in another order than planned.
        let chain_rules = |rules: &'_ [Rule], chain: &str| -> Vec<Rule> {
            rules.iter().filter(|r| r.chain == chain).cloned().collect()
        };
        let chains_match = saved.rules.iter().filter(|r| is_ours(&r.chain)).count()
            == self.chains.len()
            && CHAINS
                .iter()
                .all(|c| chain_rules(&saved.rules, c) == chain_rules(&self.chains, c));
        let mut owned: Vec<&str> = saved.owned_chains().collect();
        owned.sort_unstable();
        let mut wanted = CHAINS.to_vec();
        wanted.sort_unstable();
        let jumps: Vec<&Rule> = saved.jumps_in().collect();
        chains_match
            && owned == wanted
            && jumps.len() == self.jumps.len()
            && self.jumps.iter().all(|j| jumps.contains(&j))
    }

    /// The restore text that turns `saved` into this plan: the SKIFF_ chains declared (which
    /// creates or empties them), any other SKIFF_ chain and any jump into one that is not
    /// ours removed, the rules appended, and each jump added only where it is missing.
    pub fn apply_text(&self, saved: &Saved) -> String {
        let mut out = String::from("*nat\n");
        for chain in CHAINS {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        let mut kept: Vec<&Rule> = Vec::new();
        for jump in saved.jumps_in() {
            if self.jumps.contains(jump) && !kept.contains(&jump) {
                kept.push(jump);
            } else {
                let _ = writeln!(out, "-D {} {}", jump.chain, jump.spec);
            }
        }
        let stale: Vec<&str> = saved
            .owned_chains()
            .filter(|c| !CHAINS.contains(c))
            .collect();
        for chain in &stale {
            let _ = writeln!(out, "-F {chain}");
        }
        for chain in &stale {
            let _ = writeln!(out, "-X {chain}");
        }
        for r in &self.chains {
            let _ = writeln!(out, "-A {} {}", r.chain, r.spec);
        }
        for jump in self.jumps.iter().filter(|j| !kept.contains(j)) {
            let _ = writeln!(out, "-A {} {}", jump.chain, jump.spec);
        }
        out.push_str("COMMIT\n");
        out
    }
}

/// The restore text that removes every jump into a SKIFF_ chain and every SKIFF_ chain, or
/// `None` when `saved` holds none (a clean table needs no change).
pub fn cleanup_text(saved: &Saved) -> Option<String> {
    let jumps: Vec<&Rule> = saved.jumps_in().collect();
    let chains: Vec<&str> = saved.owned_chains().collect();
    if jumps.is_empty() && chains.is_empty() {
        return None;
    }
    let mut out = String::from("*nat\n");
    for jump in jumps {
        let _ = writeln!(out, "-D {} {}", jump.chain, jump.spec);
    }
    // Emptied first, all of them: a chain cannot be deleted while another still jumps to it.
    for chain in &chains {
        let _ = writeln!(out, "-F {chain}");
    }
    for chain in &chains {
        let _ = writeln!(out, "-X {chain}");
    }
    out.push_str("COMMIT\n");
    Some(out)
}

fn is_ours(chain: &str) -> bool {
    chain.starts_with(PREFIX)
}

/// The `nat` table as `iptables-save -t nat` printed it: its chains and its rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    pub chains: Vec<String>,
    pub rules: Vec<Rule>,
}

impl Saved {
    /// Reads the `*nat` section of `iptables-save` output; comments, counters and other
    /// tables are ignored.
    pub fn parse(text: &str) -> Saved {
        let mut saved = Saved::default();
        let mut in_nat = false;
        for line in text.lines().map(str::trim) {
            if let Some(table) = line.strip_prefix('*') {
                in_nat = table == "nat";
            } else if line == "COMMIT" {
                in_nat = false;
            } else if !in_nat {
                continue;
            } else if let Some(decl) = line.strip_prefix(':') {
                if let Some(name) = decl.split_whitespace().next() {
                    saved.chains.push(name.to_owned());
                }
            } else if let Some(rest) = line.strip_prefix("-A ")
                && let Some((chain, spec)) = rest.split_once(' ')
            {
                saved.rules.push(Rule::new(chain, spec.trim()));
            }
        }
        saved
    }

    /// The SKIFF_ chains present.
    fn owned_chains(&self) -> impl Iterator<Item = &str> {
        self.chains
            .iter()
            .map(String::as_str)
            .filter(|c| is_ours(c))
    }

    /// Rules outside the SKIFF_ chains that jump into one of them.
    fn jumps_in(&self) -> impl Iterator<Item = &Rule> {
        self.rules
            .iter()
            .filter(|r| !is_ours(&r.chain) && r.target().is_some_and(is_ours))
    }

    /// Whether anything of ours is present.
    pub fn has_skiff(&self) -> bool {
        self.owned_chains().next().is_some() || self.jumps_in().next().is_some()
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
