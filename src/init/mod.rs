//! `skiff init`: the `nat` rules a pod's init container installs so that its TCP goes through
//! the sidecar (inbound to `--inbound-port`, outbound to `--outbound-port`), their removal
//! (`--cleanup`) and their printing (`--dry-run`). `plan` decides the rules; this file only
//! runs the steps.

mod backend;
mod options;
mod plan;
mod pod;

use std::{io::Write, process::ExitCode};

use self::backend::Tools;
pub use self::{
    options::{BackendChoice, Cidr, CidrList, Include, InitArgs, Ipv6Mode, PortList},
    plan::{CHAINS, Family, Plan, Saved, cleanup_text, plan},
};

/// Why `skiff init` changed nothing, or stopped part way.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "changing iptables rules needs the NET_ADMIN capability (and NET_RAW for the iptables tools): run skiff init as root, or in an init container whose securityContext adds NET_ADMIN and NET_RAW; nothing was changed"
    )]
    NoNetAdmin,
    #[error("{tool} is not installed")]
    ToolMissing { tool: String },
    #[error(
        "--iptables-backend {wanted}: neither iptables-{wanted} nor an iptables of that back end is installed"
    )]
    NoBackend { wanted: &'static str },
    #[error("no iptables is installed (looked for iptables-nft, iptables-legacy and iptables)")]
    NoIptables,
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `skiff init`; exits 1 on any error, saying why on stderr.
pub fn run(args: InitArgs) -> ExitCode {
    match execute(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff init: {e}");
            ExitCode::FAILURE
        }
    }
}

fn execute(args: &InitArgs) -> Result<(), InitError> {
    let v6 = match args.ipv6 {
        Ipv6Mode::On => true,
        Ipv6Mode::Off => false,
        Ipv6Mode::Auto => pod::has_global_ipv6(),
    };
    let families: &[Family] = if v6 {
        &[Family::V4, Family::V6]
    } else {
        &[Family::V4]
    };
    if args.dry_run {
        print!("{}", dry_run_text(args, families));
        let _ = std::io::stdout().flush();
        return Ok(());
    }
    // Before anything runs: without the capability, say so plainly and touch nothing.
    if pod::has_net_admin() == Some(false) {
        return Err(InitError::NoNetAdmin);
    }
    let installed = backend::probe();
    let counts = backend::needs_counts(args.iptables_backend, installed).then(backend::count_rules);
    let tools = backend::choose(args.iptables_backend, installed, counts)?;
    if args.cleanup {
        // Rules an earlier run installed may be there whatever the pod's addresses are now.
        let families: &[Family] = match args.ipv6 {
            Ipv6Mode::Off => &[Family::V4],
            Ipv6Mode::On | Ipv6Mode::Auto => &[Family::V4, Family::V6],
        };
        return cleanup(tools, families, args.ipv6 == Ipv6Mode::Auto);
    }
    install(args, tools, families)
}

/// `--dry-run`: each family's full rule set, headed by a comment naming its tool (comments
/// are valid `iptables-restore` input, so one family's part can be fed to it as is).
pub fn dry_run_text(args: &InitArgs, families: &[Family]) -> String {
    let plain = Tools {
        backend: backend::Backend::Nft,
        named: false,
    };
    families
        .iter()
        .map(|&f| {
            let also = match f {
                Family::V4 => String::new(),
                Family::V6 => format!(
                    "# skiff init: and {}/128 on lo, the sidecar's source for an app at the pod's IPv6 address\n",
                    crate::inbound::POD_SOURCE_V6_IP
                ),
            };
            format!(
                "# skiff init: {} rules for {} --noflush\n{also}{}",
                f.label(),
                plain.restore(f),
                plan(args, f).restore_text()
            )
        })
        .collect()
}

fn install(args: &InitArgs, tools: Tools, families: &[Family]) -> Result<(), InitError> {
    // Read every table first, then change them: a failure while reading changes nothing.
    let mut steps = Vec::new();
    for &family in families {
        let plan = plan(args, family);
        let saved = Saved::parse(&backend::save_nat(tools, family)?);
        if plan.is_installed(&saved) {
            eprintln!(
                "skiff init: {} rules already in place ({}); nothing changed",
                family.label(),
                tools.restore(family)
            );
        } else {
            steps.push((family, plan.apply_text(&saved)));
        }
    }
    if families.contains(&Family::V6) {
        // The sidecar's source for an app at the pod's IPv6 address; the IPv6 rules let it
        // through `lo` untouched. Without it only that fallback is lost, so warn and go on.
        let source = crate::inbound::POD_SOURCE_V6_IP;
        if let Err(e) = pod::add_loopback_v6(source) {
            eprintln!(
                "skiff init: cannot add {source}/128 to lo ({e}); an app that listens only on the pod's IPv6 address will not be reached"
            );
        }
    }
    for (family, text) in steps {
        backend::restore(tools, family, &text)?;
        eprintln!(
            "skiff init: {} rules installed ({}): inbound TCP to port {}, outbound TCP to port {}, uid {} excluded",
            family.label(),
            tools.restore(family),
            args.inbound_port,
            args.outbound_port,
            args.proxy_uid,
        );
    }
    Ok(())
}

/// Removes every SKIFF_ rule and chain. With `lenient_v6`, IPv6 tables that cannot be read
/// (no ip6tables, no IPv6 in the kernel) are skipped: nothing can have been installed there.
fn cleanup(tools: Tools, families: &[Family], lenient_v6: bool) -> Result<(), InitError> {
    for &family in families {
        let saved = match backend::save_nat(tools, family) {
            Ok(text) => Saved::parse(&text),
            Err(InitError::NoNetAdmin) => return Err(InitError::NoNetAdmin),
            Err(e) if lenient_v6 && family == Family::V6 => {
                eprintln!("skiff init: IPv6 skipped: {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        match cleanup_text(&saved) {
            None => eprintln!("skiff init: no {} rules to remove", family.label()),
            Some(text) => {
                backend::restore(tools, family, &text)?;
                eprintln!(
                    "skiff init: {} rules removed ({})",
                    family.label(),
                    tools.restore(family)
                );
            }
        }
    }
    Ok(())
}
