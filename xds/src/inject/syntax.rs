//! The syntax of the values injection accepts from annotations and flags: port lists, CIDR
//! lists, Kubernetes quantities, proxy log filters and image references. Each parser returns
//! the normalised text Skiff writes into the pod, or the reason the value is refused.

use std::{fmt, net::IpAddr};

/// A comma-separated list of ports (1-65535), spaces allowed; duplicates dropped, order kept.
/// An empty or blank value is an empty list.
pub fn ports(text: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let port = item
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                if item.contains('-') {
                    format!("{item:?} is a range; list the ports one by one (8080,8081)")
                } else {
                    format!("{item:?} is not a port (1-65535)")
                }
            })?;
        if !out.contains(&port) {
            out.push(port);
        }
    }
    Ok(out)
}

/// A comma-separated list of CIDRs (`10.0.0.0/8`, `fd00::/8`); a bare address means that one
/// host and gets `/32` or `/128`. Duplicates dropped, order kept.
pub fn cidrs(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || format!("{item:?} is not a CIDR (10.0.0.0/8, fd00::/8) or an IP address");
        let (addr, prefix) = match item.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (item, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{item:?}: the prefix length must be at most {max}"))?,
            Some(_) => return Err(bad()),
        };
        let cidr = format!("{addr}/{prefix}");
        if !out.contains(&cidr) {
            out.push(cidr);
        }
    }
    Ok(out)
}

/// Which resource a quantity sizes: it decides which suffixes make sense.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Memory,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        })
    }
}

/// A Kubernetes resource quantity (`100m`, `0.5`, `64Mi`, `1e3`), kept as written, with its
/// value for comparing a request with a limit.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantity {
    text: String,
    value: f64,
}

impl Quantity {
    /// Parses `text` as a quantity of `resource`. Beyond the Kubernetes grammar it refuses a
    /// negative value, binary suffixes for CPU (`1Ki` cores) and `m` for memory (`100m` is a
    /// tenth of a byte: almost always a typo for `100Mi`).
    pub fn parse(text: &str, resource: Resource) -> Result<Quantity, String> {
        let example = match resource {
            Resource::Cpu => "100m, 0.5 or 2",
            Resource::Memory => "64Mi, 1Gi or 128M",
        };
        let bad = || format!("{text:?} is not a Kubernetes quantity (like {example})");
        let t = text.trim();
        if t != text || t.is_empty() {
            return Err(bad());
        }
        let (number, suffix) = t.split_at(
            t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
                .unwrap_or(t.len()),
        );
        let number = number.strip_prefix('+').unwrap_or(number);
        if number.starts_with('-') {
            return Err(format!(
                "{text:?}: a {resource} quantity cannot be negative"
            ));
        }
        let digits = number.replace('.', "");
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || number.matches('.').count() > 1
        {
            return Err(bad());
        }
        let base: f64 = number.parse().map_err(|_| bad())?;
        let binary = |exp: i32| 2f64.powi(exp);
        let scale = match suffix {
            "" => 1.0,
            "m" if resource == Resource::Memory => {
                return Err(format!(
                    "{text:?} means {number} millibytes; write {number}Mi for mebibytes or {number}M for megabytes"
                ));
            }
            "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" if resource == Resource::Cpu => {
                return Err(format!(
                    "{text:?}: CPU is counted in cores (0.5, 2) or millicores (100m), not with binary suffixes"
                ));
            }
            "n" => 1e-9,
            "u" => 1e-6,
            "m" => 1e-3,
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "P" => 1e15,
            "E" => 1e18,
            "Ki" => binary(10),
            "Mi" => binary(20),
            "Gi" => binary(30),
            "Ti" => binary(40),
            "Pi" => binary(50),
            "Ei" => binary(60),
            s if s.starts_with(['e', 'E']) => {
                let exp = &s[1..];
                let unsigned = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let exp: i32 = exp.parse().map_err(|_| bad())?;
                10f64.powi(exp)
            }
            _ => return Err(bad()),
        };
        Ok(Quantity {
            text: text.to_owned(),
            value: base * scale,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this quantity is larger than `other` (beyond rounding: `0.1` and `100m` are
    /// equal).
    pub fn exceeds(&self, other: &Quantity) -> bool {
        self.value > other.value * (1.0 + 1e-9)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// The proxy's log filter (`SKIFF_LOG`): a level (`debug`), or comma-separated directives
/// each a level or `target=level` (`info,skiff::xds_client=debug`). A bare word that is not a
/// level is refused (the filter syntax would read it as a target and log it all at trace).
pub fn log_level(text: &str) -> Result<String, String> {
    let directives: Vec<&str> = text.split(',').map(str::trim).collect();
    if directives.iter().all(|d| d.is_empty()) {
        return Err("empty; use one of trace, debug, info, warn, error, off".to_owned());
    }
    for d in directives.iter().filter(|d| !d.is_empty()) {
        let (target, level) = match d.rsplit_once('=') {
            Some((t, l)) => (Some(t), l),
            None => (None, *d),
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{d:?}: {level:?} is not a level (trace, debug, info, warn, error, off)"
            ));
        }
        if let Some(t) = target
            && (t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-' | '.')))
        {
            return Err(format!("{d:?}: {t:?} is not a module path"));
        }
    }
    Ok(directives
        .into_iter()
        .filter(|d| !d.is_empty())
        .collect::<Vec<_>>()
        .join(","))
}

/// A container image reference: not empty, no whitespace or control characters.
pub fn image(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("empty; an image reference like skiff:0.1.0".to_owned());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{text:?} contains whitespace"));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists() {
        assert_eq!(ports("8080, 9090,8080,"), Ok(vec![8080, 9090]));
        assert_eq!(ports(" "), Ok(vec![]));
        for bad in ["0", "65536", "http", "80-90", "8080;9090"] {
            assert!(ports(bad).is_err(), "{bad}");
        }
        assert!(ports("80-90").unwrap_err().contains("range"));
    }

    #[test]
    fn cidr_lists() {
        assert_eq!(
            cidrs("10.0.0.0/8, 169.254.169.254, fd00::/8,10.0.0.0/8"),
            Ok(vec![
                "10.0.0.0/8".to_owned(),
                "169.254.169.254/32".to_owned(),
                "fd00::/8".to_owned()
            ])
        );
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x",
        ] {
            assert!(cidrs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quantities() {
        let q = |t, r| Quantity::parse(t, r);
        for ok in ["10m", "0.5", "2", "1e3", "1E-2", "+1", ".5", "5.", "100n"] {
            assert!(q(ok, Resource::Cpu).is_ok(), "{ok}");
        }
        for ok in ["32Mi", "1Gi", "128M", "1e9", "512Ki", "1000"] {
            assert!(q(ok, Resource::Memory).is_ok(), "{ok}");
        }
        for bad in [
            "", " 1", "ten", "1.2.3", "1x", "1e", "1e+", "1Mi", "-1", "m", ".",
        ] {
            assert!(q(bad, Resource::Cpu).is_err(), "{bad}");
        }
        assert!(q("100m", Resource::Memory).unwrap_err().contains("Mi"));
        let (a, b) = (
            q("0.1", Resource::Cpu).unwrap(),
            q("100m", Resource::Cpu).unwrap(),
        );
        assert!(!a.exceeds(&b) && !b.exceeds(&a));
        let (a, b) = (
            q("1Gi", Resource::Memory).unwrap(),
            q("1G", Resource::Memory).unwrap(),
        );
        assert!(a.exceeds(&b) && !b.exceeds(&a));
        assert_eq!(q("64Mi", Resource::Memory).unwrap().as_str(), "64Mi");
    }

    #[test]
    fn log_levels() {
        assert_eq!(log_level("debug"), Ok("debug".to_owned()));
        assert_eq!(
            log_level("info, skiff::xds_client=debug"),
            Ok("info,skiff::xds_client=debug".to_owned())
        );
        for bad in ["", "verbose", "skiff=loud", "=debug", "a b=info"] {
            assert!(log_level(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn images() {
        assert!(image("registry.example/skiff:1.2").is_ok());
        assert!(image("").is_err());
        assert!(image("skiff 1").is_err());
    }
}
