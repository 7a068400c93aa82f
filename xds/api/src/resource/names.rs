//! Resource names and the aliases a proxy may subscribe by instead: `host:<authority>` and
//! `addr:<ip:port>` for Services, `workload:<ns>/<name>` for Authorization; their limits.

/// The name of a namespaced resource: `<namespace>/<name>` (Endpoints take their service's).
pub fn resource_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Prefix of a Service alias by authority: `host:reviews:9080`.
pub const HOST_ALIAS: &str = "host:";
/// Prefix of a Service alias by original destination: `addr:10.96.0.7:80`.
pub const ADDR_ALIAS: &str = "addr:";
/// The alias of the catch-all service (`hosts: ["*"]`).
pub const CATCH_ALL_ALIAS: &str = "host:*";
/// Prefix of an Authorization alias: `workload:<namespace>/<name>` stands for every policy
/// that applies on that workload's inbound side.
pub const WORKLOAD_ALIAS: &str = "workload:";

/// The Authorization alias for a workload.
pub fn workload_alias(namespace: &str, name: &str) -> String {
    format!("{WORKLOAD_ALIAS}{namespace}/{name}")
}

/// Longest subscribed name the control plane takes: far above any resource name or
/// alias of a real host, low enough that names cannot grow a stream's memory without bound.
pub const MAX_NAME_LEN: usize = 512;

/// Whether an authority can name a service, so is worth an on-demand subscription: a
/// hostname or IP literal with an optional port, in DNS characters, short enough that its
/// alias stays within [`MAX_NAME_LEN`]. Anything else cannot be claimed by a service.
pub fn is_plausible_authority(authority: &str) -> bool {
    !authority.is_empty()
        && authority.len() + HOST_ALIAS.len() <= 261
        && authority.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_' | b'[' | b']' | b'*')
        })
}

/// The Service alias for an authority as a request wrote it (lowercased).
pub fn host_alias(authority: &str) -> String {
    let mut alias = String::with_capacity(HOST_ALIAS.len() + authority.len());
    alias.push_str(HOST_ALIAS);
    alias.extend(authority.chars().map(|c| c.to_ascii_lowercase()));
    alias
}

/// The Service alias for an original destination.
pub fn addr_alias(addr: std::net::SocketAddr) -> String {
    format!("{ADDR_ALIAS}{addr}")
}

/// Whether a subscribed name is an alias rather than a resource name (resource names hold no
/// `:`, being DNS labels around one `/`, or `mesh`).
pub fn is_alias(name: &str) -> bool {
    name.starts_with(HOST_ALIAS) || name.starts_with(ADDR_ALIAS) || name.starts_with(WORKLOAD_ALIAS)
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`; anything else unchanged.
pub fn strip_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']')) =>
        {
            host
        }
        _ => authority,
    }
}
