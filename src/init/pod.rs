//! What `skiff init` learns about the pod it runs in: whether this process holds NET_ADMIN
//! (`/proc/self/status`) and whether the pod has a global IPv6 address (`/proc/net/if_inet6`);
//! and the one address it adds, the sidecar's IPv6 source on `lo`. The parsers are pure.

/// CAP_NET_ADMIN's bit in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// Whether this process may change iptables rules: `Some(false)` when its effective set lacks
/// NET_ADMIN, `None` when that cannot be read (the tools then answer for themselves).
pub fn has_net_admin() -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    effective_caps(&status).map(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// The `CapEff:` mask of a `/proc/<pid>/status` text.
fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Whether the pod has an IPv6 address of global scope (unique-local included, as Kubernetes
/// dual-stack clusters often use those) on an interface other than loopback.
pub fn has_global_ipv6() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|t| lists_global_ipv6(&t))
}

/// `/proc/net/if_inet6` lines: address, interface index, prefix length, scope, flags, name
/// (all but the name in hex). Scope 00 is global.
fn lists_global_ipv6(text: &str) -> bool {
    text.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        matches!(fields.as_slice(), [_, _, _, scope, _, name] if *scope == "00" && *name != "lo")
    })
}

/// Puts `addr`/128 on `lo`, as `ip -6 addr add ADDR/128 dev lo` would; there already is
/// fine. The kernel's IPv6 address ioctl, so the init image needs no iproute2.
pub fn add_loopback_v6(addr: std::net::Ipv6Addr) -> std::io::Result<()> {
    use std::{io, os::fd::AsRawFd};

    // SAFETY: a plain socket call; the descriptor is owned (and closed) right after.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    let request = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr {
            s6_addr: addr.octets(),
        },
        ifr6_prefixlen: 128,
        ifr6_ifindex: i32::try_from(index).unwrap_or(i32::MAX),
    };
    // SAFETY: SIOCSIFADDR on an AF_INET6 socket reads one `in6_ifreq`, which outlives the call.
    let done = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFADDR, &request) };
    if done < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities() {
        let status = |eff: &str| {
            format!(
                "Name:\tskiff\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t{eff}\nCapBnd:\t000001ffffffffff\n"
            )
        };
        let cases = [
            ("000001ffffffffff", Some(true)),  // root
            ("0000000000003000", Some(true)),  // NET_ADMIN and NET_RAW only
            ("0000000000002000", Some(false)), // NET_RAW only
            ("0000000000000000", Some(false)), // an unprivileged user
            ("not hex", None),
        ];
        for (eff, want) in cases {
            let got = effective_caps(&status(eff)).map(|c| c & (1 << CAP_NET_ADMIN) != 0);
            assert_eq!(got, want, "{eff}");
        }
        assert_eq!(effective_caps("Name:\tx\n"), None);
    }

    #[test]
    fn global_ipv6() {
        let lo = "00000000000000000000000000000001 01 80 10 80       lo\n";
        let link_local = "fe800000000000000000000000000001 02 40 20 80     eth0\n";
        let ula = "fd000000000000000000000000000005 02 40 00 80     eth0\n";
        let global = "20010db8000000000000000000000005 03 40 00 00     eth1\n";
        let cases = [
            ("", false),
            (lo, false),
            (&*format!("{lo}{link_local}"), false),
            (&*format!("{lo}{link_local}{ula}"), true),
            (global, true),
            ("garbage line\n", false),
        ];
        for (text, want) in cases {
            assert_eq!(lists_global_ipv6(text), want, "{text:?}");
        }
    }
}
