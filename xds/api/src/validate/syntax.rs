//! Syntax of the strings a mesh file holds: DNS labels and names, hosts, HTTP tokens,
//! SPIFFE IDs, Kubernetes labels, paths and whole-value regexes. Each check returns the
//! message to show; where the string sits in the file is the caller's business.

use regex::Regex;

/// `Err` holds the message for the user.
pub(super) type Verdict = Result<(), String>;

/// RFC 1123 label, as Kubernetes checks names: `reviews`, `reviews-v2`.
pub(super) fn dns_label(s: &str) -> Verdict {
    if s.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if s.len() > 63 {
        return Err(format!("must be at most 63 characters, got {}", s.len()));
    }
    if !is_dns_label(s) {
        return Err(format!(
            "must be a DNS label (lowercase letters, digits and '-', starting and ending \
             with a letter or digit), got {s:?}"
        ));
    }
    Ok(())
}

/// RFC 1123 subdomain, as Kubernetes checks object names: `cluster.local`.
pub(super) fn dns_name(s: &str) -> Verdict {
    if s.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if s.len() > 253 {
        return Err(format!("must be at most 253 characters, got {}", s.len()));
    }
    if !is_dns_name(s) {
        return Err(format!(
            "must be a DNS name (dot-separated labels of lowercase letters, digits and '-', \
             each starting and ending with a letter or digit), got {s:?}"
        ));
    }
    Ok(())
}

/// A `hosts` entry: `*`, or a lowercase hostname with an optional `:port`.
pub(super) fn host(s: &str) -> Verdict {
    if s == "*" {
        return Ok(());
    }
    let expected =
        || format!("must be \"*\" or a lowercase hostname with an optional :port, got {s:?}");
    let name = match s.split_once(':') {
        None => s,
        Some((name, port)) => {
            match port.parse::<u16>() {
                Ok(p) if p > 0 && !port.starts_with('+') => {}
                _ => {
                    return Err(format!(
                        "port must be a number from 1 to 65535, got {port:?}"
                    ));
                }
            }
            name
        }
    };
    if name.len() > 253 || !is_dns_name(name) {
        return Err(expected());
    }
    Ok(())
}

/// An HTTP method: any RFC 9110 token, so extension methods (`PURGE`) pass.
pub(super) fn method(s: &str) -> Verdict {
    if is_token(s) {
        Ok(())
    } else {
        Err(format!(
            "must be an HTTP method token (e.g. GET, POST, PURGE), got {s:?}"
        ))
    }
}

/// An HTTP field name: an RFC 9110 token.
pub(super) fn header_name(s: &str) -> Verdict {
    if is_token(s) {
        Ok(())
    } else {
        Err(format!(
            "must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~), got {s:?}"
        ))
    }
}

/// A SPIFFE ID naming a workload: `spiffe://<trust-domain>/<path>`, as the SPIFFE spec
/// restricts them (no empty, `.` or `..` segments, no query, no percent-encoding).
/// Returns the trust domain.
pub(crate) fn spiffe_id(s: &str) -> Result<&str, String> {
    let expected = || {
        format!("must be a SPIFFE ID like spiffe://cluster.local/ns/default/sa/reviews, got {s:?}")
    };
    let rest = s.strip_prefix("spiffe://").ok_or_else(expected)?;
    let (domain, path) = rest.split_once('/').ok_or_else(expected)?;
    if is_trust_domain(domain) && path.split('/').all(is_spiffe_segment) {
        Ok(domain)
    } else {
        Err(expected())
    }
}

/// The word an authorization `from` entry uses for a peer without a mesh certificate.
const UNAUTHENTICATED: &str = "unauthenticated";

/// An authorization peer: a SPIFFE ID, `spiffe://<td>/*` (any identity of the trust domain),
/// `spiffe://<td>/ns/<ns>/*` (any identity of a namespace) or `unauthenticated`. A `*` is
/// allowed only as the whole last segment of those two patterns. Returns the trust domain
/// named, `None` for `unauthenticated`.
pub(super) fn authz_peer(s: &str) -> Result<Option<&str>, String> {
    if s == UNAUTHENTICATED {
        return Ok(None);
    }
    if !s.contains('*') {
        return spiffe_id(s).map(Some).map_err(|_| {
            format!(
                "must be a SPIFFE ID like spiffe://cluster.local/ns/default/sa/reviews, a \
                 pattern spiffe://<trustDomain>/ns/<namespace>/* or spiffe://<trustDomain>/*, \
                 or \"{UNAUTHENTICATED}\", got {s:?}"
            )
        });
    }
    let pattern = s
        .strip_suffix("/*")
        .and_then(|head| head.strip_prefix("spiffe://"))
        .and_then(|rest| match rest.split_once('/') {
            None => Some(rest),
            Some((domain, path)) => path
                .strip_prefix("ns/")
                .is_some_and(is_spiffe_segment)
                .then_some(domain),
        })
        .filter(|domain| is_trust_domain(domain));
    pattern.map(Some).ok_or_else(|| {
        format!(
            "'*' is allowed only as the whole last segment of spiffe://<trustDomain>/* (any \
             identity of the trust domain) or spiffe://<trustDomain>/ns/<namespace>/* (any \
             identity of a namespace), got {s:?}"
        )
    })
}

fn is_trust_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b".-_".contains(&c))
}

fn is_spiffe_segment(seg: &str) -> bool {
    !seg.is_empty()
        && seg != "."
        && seg != ".."
        && seg
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".-_".contains(&c))
}

/// A route's `Exact` or `PathPrefix` value.
pub(super) fn route_path(s: &str) -> Verdict {
    if !s.starts_with('/') {
        return Err(format!("must start with '/', got {s:?}"));
    }
    if s.contains(['?', '#']) {
        return Err(format!(
            "must not contain '?' or '#' (the query string is never part of the path), got {s:?}"
        ));
    }
    Ok(())
}

/// An authorization path: exact (`/health`), a subtree (`/reviews/*`), or `*`.
pub(super) fn authz_path(s: &str) -> Verdict {
    let star_ok = match s.find('*') {
        None => true,
        Some(at) => at + 1 == s.len() && s.ends_with("/*"),
    };
    if s == "*" || (s.starts_with('/') && star_ok) {
        Ok(())
    } else {
        Err(format!(
            "must start with '/' and may contain '*' only as a final \"/*\" (or be \"*\"), got {s:?}"
        ))
    }
}

/// A `RegularExpression` value; it must match the whole path, header or query value, so it
/// is also compiled the way the proxy uses it, anchored as `^(?:...)$`.
pub(super) fn whole_value_regex(s: &str) -> Verdict {
    // The bare pattern first: `a)|(b` only compiles once wrapped, with another meaning.
    Regex::new(s)
        .and_then(|_| Regex::new(&format!("^(?:{s})$")))
        .map(|_| ())
        .map_err(|e| format!("invalid regular expression: {}", regex_reason(&e)))
}

/// The regex crate's syntax errors draw the pattern over several lines; keep the reason.
fn regex_reason(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(text) => text
            .lines()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or("syntax error")
            .to_owned(),
        regex::Error::CompiledTooBig(limit) => format!("compiled size exceeds {limit} bytes"),
        other => other
            .to_string()
            .lines()
            .next()
            .unwrap_or("unknown error")
            .to_owned(),
    }
}

/// A Kubernetes label key: `version`, `app.kubernetes.io/name`.
pub(super) fn label_key(k: &str) -> Verdict {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && is_dns_name(p));
    if prefix_ok && !name.is_empty() && is_label_text(name) {
        Ok(())
    } else {
        Err(format!(
            "label key must be up to 63 letters, digits, '-', '_' or '.', starting and ending \
             with a letter or digit, with an optional DNS-name prefix and '/', got {k:?}"
        ))
    }
}

/// A Kubernetes label value: empty, or like a label key's name part.
pub(super) fn label_value(v: &str) -> Verdict {
    if v.is_empty() || is_label_text(v) {
        Ok(())
    } else {
        Err(format!(
            "label value must be empty or up to 63 letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit, got {v:?}"
        ))
    }
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let edge = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    b.len() <= 63 && b.iter().all(inner) && edge(b.first()) && edge(b.last())
}

fn is_dns_name(s: &str) -> bool {
    s.split('.').all(is_dns_label)
}

fn is_label_text(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || b"-_.".contains(c);
    let edge = |c: Option<&u8>| c.is_some_and(u8::is_ascii_alphanumeric);
    b.len() <= 63 && b.iter().all(inner) && edge(b.first()) && edge(b.last())
}

/// RFC 9110 `token`: one or more `tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_follow_rfc_1123() {
        for ok in ["a", "reviews", "reviews-v2", "0abc", &"a".repeat(63)] {
            assert!(dns_label(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "-a", "a-", "Reviews", "a.b", "a_b", &"a".repeat(64)] {
            assert!(dns_label(bad).is_err(), "{bad:?}");
        }
        assert!(dns_name("cluster.local").is_ok());
        for bad in [
            "",
            "cluster..local",
            ".local",
            "local.",
            "Cluster.local",
            "a b",
        ] {
            assert!(dns_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_take_an_optional_port() {
        for ok in [
            "*",
            "reviews",
            "reviews:9080",
            "reviews.default.svc.cluster.local",
            "10.0.0.1:80",
        ] {
            assert!(host(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "*.example.com",
            "*:80",
            "reviews:0",
            "reviews:70000",
            "reviews:",
            "r:+80",
            "Reviews",
            "[::1]:80",
            "a:b:80",
        ] {
            assert!(host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_tchars() {
        for ok in ["GET", "PURGE", "M-SEARCH", "x-canary", "X_Y"] {
            assert!(method(ok).is_ok() && header_name(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "GE T", "x:y", "a\"b", "é"] {
            assert!(method(bad).is_err() && header_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spiffe_ids_name_a_workload() {
        assert_eq!(
            spiffe_id("spiffe://cluster.local/ns/default/sa/reviews"),
            Ok("cluster.local")
        );
        for bad in [
            "spiffe://cluster.local",
            "spiffe://cluster.local/",
            "spiffe://cluster.local/ns//sa",
            "spiffe://cluster.local/ns/../sa",
            "spiffe://Cluster.local/ns",
            "spiffe:///ns",
            "https://cluster.local/ns",
            "spiffe://cluster.local/ns?x=1",
        ] {
            assert!(spiffe_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn authz_peers_are_ids_namespace_or_domain_patterns_or_unauthenticated() {
        for (ok, domain) in [
            (
                "spiffe://cluster.local/ns/default/sa/reviews",
                Some("cluster.local"),
            ),
            ("spiffe://cluster.local/ns/default/*", Some("cluster.local")),
            ("spiffe://mesh.example/*", Some("mesh.example")),
            ("unauthenticated", None),
        ] {
            assert_eq!(authz_peer(ok), Ok(domain), "{ok:?}");
        }
        for bad in [
            "*",
            "Unauthenticated",
            "spiffe://*",
            "spiffe://*/ns/a/*",
            "spiffe://cluster.local//*",
            "spiffe://cluster.local/ns/*",
            "spiffe://cluster.local/ns//*",
            "spiffe://cluster.local/ns/a/sa/*",
            "spiffe://cluster.local/ns/a*",
            "spiffe://cluster.local/ns/a/*/sa/b",
            "spiffe://cluster.local/ns/a/**",
            "spiffe://cluster.local/team/a/*",
            "spiffe://cluster.local/ns/../*",
            "spiffe://cluster.local",
            "ns/a/sa/b",
        ] {
            assert!(authz_peer(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn authz_paths_end_in_a_single_star() {
        for ok in ["*", "/", "/health", "/reviews/*", "/*"] {
            assert!(authz_path(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "reviews", "/a*", "/*/x", "/a/**", "**"] {
            assert!(authz_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn regexes_compile_bare_and_anchored() {
        assert!(whole_value_regex("/api/v[0-9]+").is_ok());
        assert!(whole_value_regex("a)|(b").is_err());
        let msg = whole_value_regex("(").unwrap_err();
        assert!(!msg.contains('\n'), "{msg:?}");
    }

    #[test]
    fn labels_follow_kubernetes() {
        assert!(label_key("app.kubernetes.io/name").is_ok());
        assert!(label_key("version").is_ok());
        assert!(label_key("/x").is_err());
        assert!(label_key("a b").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_x").is_ok());
        assert!(label_value("-v1").is_err());
    }
}
