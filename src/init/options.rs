//! `skiff init`'s flags and their typed values: port and CIDR lists, the IPv6 mode and the
//! iptables back end. Every list is parsed and validated here, once, so the planner only ever
//! sees well-formed values.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// `skiff init`: installs (or removes, or prints) the `nat` rules that send a pod's TCP
/// through its sidecar.
#[derive(clap::Args, Debug, Clone)]
pub struct InitArgs {
    /// Print the rules (iptables-restore format) instead of installing them; needs no privilege.
    #[arg(long, conflicts_with = "cleanup")]
    pub dry_run: bool,
    /// Remove every SKIFF_ rule and chain; succeeds on a clean table.
    #[arg(long)]
    pub cleanup: bool,
    /// The uid the proxy runs as: its own connections are never redirected.
    #[arg(long, env = "SKIFF_PROXY_UID", default_value_t = 1337)]
    pub proxy_uid: u32,
    /// A gid whose connections are never redirected either (as `--proxy-uid`). Default: none.
    #[arg(long, env = "SKIFF_PROXY_GID")]
    pub proxy_gid: Option<u32>,
    /// Where redirected inbound TCP goes (the proxy's inbound listener).
    #[arg(long, env = "SKIFF_INBOUND_PORT", default_value_t = 15006, value_parser = clap::value_parser!(u16).range(1..))]
    pub inbound_port: u16,
    /// Where redirected outbound TCP goes (the proxy's outbound listener).
    #[arg(long, env = "SKIFF_OUTBOUND_PORT", default_value_t = 15001, value_parser = clap::value_parser!(u16).range(1..))]
    pub outbound_port: u16,
    /// The proxy's admin port: reached directly, never redirected inbound.
    #[arg(long, env = "SKIFF_ADMIN_PORT", default_value_t = 15000, value_parser = clap::value_parser!(u16).range(1..))]
    pub admin_port: u16,
    /// Inbound destination ports that bypass the proxy (comma-separated). Default: none.
    #[arg(
        long,
        env = "SKIFF_EXCLUDE_INBOUND_PORTS",
        default_value = "",
        hide_default_value = true,
        value_name = "PORTS"
    )]
    pub exclude_inbound_ports: PortList,
    /// Outbound destination ports that bypass the proxy (comma-separated). Default: none.
    #[arg(
        long,
        env = "SKIFF_EXCLUDE_OUTBOUND_PORTS",
        default_value = "",
        hide_default_value = true,
        value_name = "PORTS"
    )]
    pub exclude_outbound_ports: PortList,
    /// Outbound destinations (CIDRs or addresses, comma-separated) that bypass the proxy; they
    /// win over `--include-outbound-cidrs`. Default: none.
    #[arg(
        long,
        env = "SKIFF_EXCLUDE_OUTBOUND_CIDRS",
        default_value = "",
        hide_default_value = true,
        value_name = "CIDRS"
    )]
    pub exclude_outbound_cidrs: CidrList,
    /// Outbound destinations sent through the proxy: `*` for all, or CIDRs (comma-separated;
    /// empty: none).
    #[arg(
        long,
        env = "SKIFF_INCLUDE_OUTBOUND_CIDRS",
        default_value = "*",
        value_name = "CIDRS"
    )]
    pub include_outbound_cidrs: Include,
    /// IPv6 rules (ip6tables): `auto` when the pod has a global IPv6 address.
    #[arg(
        long,
        env = "SKIFF_IPV6",
        default_value = "auto",
        value_name = "auto|on|off"
    )]
    pub ipv6: Ipv6Mode,
    /// The iptables back end: `auto` picks the one already holding rules, else what
    /// `iptables --version` reports.
    #[arg(
        long,
        env = "SKIFF_IPTABLES_BACKEND",
        default_value = "auto",
        value_name = "auto|legacy|nft"
    )]
    pub iptables_backend: BackendChoice,
}

/// A comma-separated list of TCP ports, deduplicated in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortList(pub Vec<u16>);

impl FromStr for PortList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut ports = Vec::new();
        for item in items(s) {
            let port = match item.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("{item:?} is not a port (1-65535)")),
            };
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        Ok(PortList(ports))
    }
}

/// The non-empty items of a comma-separated list, trimmed.
fn items(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|i| !i.is_empty())
}

/// An address range: `10.0.0.0/8`, `fd00::/8`, or one address (`/32`, `/128`). Host bits are
/// cleared, as iptables does, so the rules read back exactly as planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a CIDR (like 10.0.0.0/8 or fd00::/8) or an address");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {max}")),
            },
        };
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A comma-separated list of CIDRs, deduplicated in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrList(pub Vec<Cidr>);

impl FromStr for CidrList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut cidrs = Vec::new();
        for item in items(s) {
            let c: Cidr = item.parse()?;
            if !cidrs.contains(&c) {
                cidrs.push(c);
            }
        }
        Ok(CidrList(cidrs))
    }
}

/// Which outbound destinations go through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Include {
    /// `*`: every destination not excluded.
    All,
    /// Only these (an empty list: none).
    Only(CidrList),
}

impl FromStr for Include {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if items(s).any(|i| i == "*") {
            if items(s).count() > 1 {
                return Err(format!(
                    "{s:?}: `*` means every destination and takes no CIDRs beside it"
                ));
            }
            return Ok(Include::All);
        }
        s.parse().map(Include::Only)
    }
}

/// Whether the IPv6 rules are installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Mode {
    /// When the pod has a global IPv6 address.
    Auto,
    On,
    Off,
}

impl FromStr for Ipv6Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Ipv6Mode::Auto),
            "on" | "true" => Ok(Ipv6Mode::On),
            "off" | "false" => Ok(Ipv6Mode::Off),
            _ => Err(format!("{s:?}: expected auto, on or off")),
        }
    }
}

/// The iptables back end asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    Legacy,
    Nft,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "legacy" => Ok(BackendChoice::Legacy),
            "nft" | "nf_tables" => Ok(BackendChoice::Nft),
            _ => Err(format!("{s:?}: expected auto, legacy or nft")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists() {
        let cases: &[(&str, Result<&[u16], &str>)] = &[
            ("", Ok(&[])),
            ("80", Ok(&[80])),
            (" 80, 443 ,80,", Ok(&[80, 443])),
            ("0", Err("\"0\" is not a port (1-65535)")),
            ("65536", Err("\"65536\" is not a port (1-65535)")),
            ("80,http", Err("\"http\" is not a port (1-65535)")),
            ("80-90", Err("\"80-90\" is not a port (1-65535)")),
        ];
        for (input, want) in cases {
            let got = input.parse::<PortList>();
            match want {
                Ok(ports) => assert_eq!(got, Ok(PortList(ports.to_vec())), "{input:?}"),
                Err(e) => assert_eq!(got, Err((*e).to_owned()), "{input:?}"),
            }
        }
    }

    #[test]
    fn cidrs() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("10.0.0.0/8", Ok("10.0.0.0/8")),
            ("10.1.2.3/8", Ok("10.0.0.0/8")),
            ("10.1.2.3", Ok("10.1.2.3/32")),
            ("0.0.0.0/0", Ok("0.0.0.0/0")),
            ("fd00::1/8", Ok("fd00::/8")),
            ("2001:db8::5", Ok("2001:db8::5/128")),
            ("::/0", Ok("::/0")),
            (
                "10.0.0.0/33",
                Err("\"10.0.0.0/33\": the prefix length must be 0 to 32"),
            ),
            (
                "fd00::/129",
                Err("\"fd00::/129\": the prefix length must be 0 to 128"),
            ),
            (
                "10.0.0/8",
                Err("\"10.0.0/8\" is not a CIDR (like 10.0.0.0/8 or fd00::/8) or an address"),
            ),
            (
                "host.local",
                Err("\"host.local\" is not a CIDR (like 10.0.0.0/8 or fd00::/8) or an address"),
            ),
        ];
        for (input, want) in cases {
            let got = input.parse::<Cidr>().map(|c| c.to_string());
            assert_eq!(
                got,
                want.map(str::to_owned).map_err(str::to_owned),
                "{input:?}"
            );
        }
        let list: CidrList = "10.0.0.0/8, 10.9.9.9/8,fd00::/8".parse().unwrap();
        assert_eq!(list.0.len(), 2, "duplicates after normalising are dropped");
    }

    #[test]
    fn include_lists() {
        assert_eq!("*".parse::<Include>(), Ok(Include::All));
        assert_eq!(" * ".parse::<Include>(), Ok(Include::All));
        assert_eq!(
            "".parse::<Include>(),
            Ok(Include::Only(CidrList::default()))
        );
        assert!(matches!("10.0.0.0/8".parse::<Include>(), Ok(Include::Only(l)) if l.0.len() == 1));
        assert!("*,10.0.0.0/8".parse::<Include>().is_err());
        assert!("10.0.0.0/8,nope".parse::<Include>().is_err());
    }

    #[test]
    fn modes() {
        assert_eq!("auto".parse(), Ok(Ipv6Mode::Auto));
        assert_eq!("on".parse(), Ok(Ipv6Mode::On));
        assert_eq!("true".parse(), Ok(Ipv6Mode::On));
        assert_eq!("OFF".parse(), Ok(Ipv6Mode::Off));
        assert!("yes".parse::<Ipv6Mode>().is_err());
        assert_eq!("nft".parse(), Ok(BackendChoice::Nft));
        assert_eq!("legacy".parse(), Ok(BackendChoice::Legacy));
        assert!("ebpf".parse::<BackendChoice>().is_err());
    }
}
