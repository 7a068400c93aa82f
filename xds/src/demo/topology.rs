//! The demo mesh itself: which workloads run which app, the services and routes between
//! them, and the mesh file written with the real loopback ports. Knows nothing of processes;
//! `sidecar` starts them.

use std::{
    fmt::Write as _,
    io,
    net::{Ipv4Addr, SocketAddr, TcpListener},
};

/// Which demo app runs behind a workload's sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppKind {
    /// `spawn_http_app(app, version)`.
    Http,
    /// `spawn_grpc_echo(name)`.
    GrpcEcho,
}

/// One workload of the demo mesh: a demo app and the sidecar in front of it.
#[derive(Clone, Copy, Debug)]
pub struct WorkloadSpec {
    /// Workload name, also the app's `x-served-by` (`reviews-v2`).
    pub name: &'static str,
    pub app: &'static str,
    pub version: &'static str,
    pub kind: AppKind,
}

/// The workload whose sidecar's outbound listener the user points curl at.
pub const CLIENT: &str = "client";

/// The service with the demo's weighted traffic split (50/50 between its two versions).
pub const SPLIT_SERVICE: &str = "reviews";

/// Where that split's weights are in the rendered mesh file, named the way validation
/// names fields.
pub const SPLIT_PATH: &str = "services[1].routes[0].backendRefs";

/// Every workload of the demo, the client first.
pub const WORKLOADS: [WorkloadSpec; 5] = [
    WorkloadSpec {
        name: CLIENT,
        app: "client",
        version: "v1",
        kind: AppKind::Http,
    },
    WorkloadSpec {
        name: "web-v1",
        app: "web",
        version: "v1",
        kind: AppKind::Http,
    },
    WorkloadSpec {
        name: "reviews-v1",
        app: "reviews",
        version: "v1",
        kind: AppKind::Http,
    },
    WorkloadSpec {
        name: "reviews-v2",
        app: "reviews",
        version: "v2",
        kind: AppKind::Http,
    },
    WorkloadSpec {
        name: "echo-v1",
        app: "echo",
        version: "v1",
        kind: AppKind::GrpcEcho,
    },
];

/// The `sed` expression that changes the split's weights from `from` to `to`
/// ([reviews-v1, reviews-v2]; `render` writes 50/50). `sed -i` writes a new file and renames
/// it over the old one, as a ConfigMap update does; the control plane's watcher sees both.
pub fn split_edit(from: [u32; 2], to: [u32; 2]) -> String {
    format!(
        "s/service: reviews-v1, weight: {} /service: reviews-v1, weight: {} /; \
         s/service: reviews-v2, weight: {} /service: reviews-v2, weight: {} /",
        from[0], to[0], from[1], to[1]
    )
}

/// A workload with its addresses: where its sidecar listens inbound and where its app is.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub spec: WorkloadSpec,
    pub listen: SocketAddr,
    pub app: SocketAddr,
}

/// Picks `n` distinct free loopback ports for the sidecars' inbound listeners, which must be
/// written into the mesh file before the sidecars bind them.
///
/// The ports come from just below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`), which `bind(…:0)` and outgoing connections
/// never use, so nothing else that asks for "any port" can take one in the window before the
/// sidecar binds it; each is checked free by binding it. Without that file (not Linux), the
/// kernel picks (`127.0.0.1:0`), and the window is the demo's to accept: the sidecar then
/// fails loudly, naming its port.
pub fn reserve_ports(n: usize) -> io::Result<Vec<u16>> {
    let below = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|low| *low > RESERVED_SPAN + 1024);
    let held = match below {
        Some(low) => pick_below(n, low)?,
        None => (0..n)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .collect::<io::Result<Vec<_>>>()?,
    };
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// How many ports below the ephemeral range the demo picks from.
const RESERVED_SPAN: u16 = 8192;

/// `n` listeners on free ports of `[low - RESERVED_SPAN, low)`, tried from a random start.
fn pick_below(n: usize, low: u16) -> io::Result<Vec<TcpListener>> {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let start = hasher.finish() % u64::from(RESERVED_SPAN);
    let base = low - RESERVED_SPAN;
    let mut held = Vec::with_capacity(n);
    for i in 0..u64::from(RESERVED_SPAN) {
        if held.len() == n {
            break;
        }
        // In range by construction: the offset is below RESERVED_SPAN.
        let port = base + ((start + i) % u64::from(RESERVED_SPAN)) as u16;
        if let Ok(l) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            held.push(l);
        }
    }
    if held.len() < n {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("fewer than {n} free loopback ports below {low}"),
        ));
    }
    Ok(held)
}

/// The mesh file for `placements`, with comments, as written to the demo directory.
pub fn render(placements: &[Placement]) -> String {
    let mut out = String::from(HEADER);
    out.push_str(SERVICES);
    out.push_str(AUTHORIZATION);
    out.push_str("workloads:\n");
    for p in placements {
        let WorkloadSpec {
            name, app, version, ..
        } = p.spec;
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "  - name: {name}\n    namespace: default\n    serviceAccount: {app}\n    \
             labels: {{ app: {app}, version: {version} }}\n    \
             inbound: {{ listen: \"{}\", app: \"{}\", mtls: permissive }}\n",
            p.listen, p.app
        );
    }
    out
}

const HEADER: &str = "\
# Skiff demo mesh, written by `skiff-xds demo` with this run's loopback ports.
# The demo's control plane serves this file; each workload runs a demo app (at
# `inbound.app`) and a sidecar started as
#   skiff run --xds http://<control plane> --workload <name> --namespace default
# which listens for mesh traffic at `inbound.listen`. Sidecars prove who they are with a
# token (tokens.yaml) and get a SPIFFE certificate from the control plane's CA (ca/): traffic
# between them is mutual TLS. `mtls: permissive` also takes plaintext (unauthenticated); set
# `strict` on a workload to refuse it. The control plane watches this file:
# save an edit and it reaches every sidecar; an invalid edit is refused and changes nothing
# (`skiff-xds status` names the bad field).
mesh:
  trustDomain: cluster.local
";

const SERVICES: &str = "\
services:
  # `curl -H 'Host: web' http://<client outbound>/`
  - name: web
    namespace: default
    endpoints:
      - workload: web-v1
    routes:
      - name: slow
        matches:
          - path: { type: PathPrefix, value: /delay }
        timeouts: { request: 1s }              # /delay?ms=2000 answers 504 `timeout`
  # Half of the requests go to reviews-v1, half to reviews-v2 (see `x-served-by`).
  - name: reviews
    namespace: default
    endpoints:
      - workload: reviews-v1
      - workload: reviews-v2
    routes:
      - name: split
        backendRefs:
          - { service: reviews-v1, weight: 50 }
          - { service: reviews-v2, weight: 50 }
  - name: reviews-v1
    namespace: default
    endpoints:
      - workload: reviews-v1
  - name: reviews-v2
    namespace: default
    endpoints:
      - workload: reviews-v2
  # gRPC: skiff.demo.v1.Echo (demo.proto sits next to this file).
  - name: echo
    namespace: default
    protocol: grpc
    endpoints:
      - workload: echo-v1
";

const AUTHORIZATION: &str = "\
authorization:
  # reviews is read-only, and only for the client and web: any other method, or any other
  # caller (plaintext included), gets 403 `unauthorized`.
  - name: reviews-read-only
    namespace: default
    target: reviews
    action: allow
    from:
      - spiffe://cluster.local/ns/default/sa/client
      - spiffe://cluster.local/ns/default/sa/web
    to:
      - methods: [GET, HEAD]
";

#[cfg(test)]
mod tests {
    use super::*;

    fn placements() -> Vec<Placement> {
        WORKLOADS
            .iter()
            .enumerate()
            .map(|(i, spec)| Placement {
                spec: *spec,
                listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 20000 + i as u16)),
                app: SocketAddr::from((Ipv4Addr::LOCALHOST, 30000 + i as u16)),
            })
            .collect()
    }

    #[test]
    fn rendered_mesh_is_valid_and_complete() {
        let mesh = skiff_api::load(&render(&placements())).expect("the demo mesh validates");
        let names: Vec<_> = mesh.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["web", "reviews", "reviews-v1", "reviews-v2", "echo"]
        );
        assert_eq!(mesh.workloads.len(), WORKLOADS.len());
        let reviews_v2 = mesh
            .workloads
            .iter()
            .find(|w| w.name == "reviews-v2")
            .expect("reviews-v2 workload");
        let inbound = reviews_v2.inbound.as_ref().expect("inbound");
        assert_eq!(inbound.listen.port(), 20003);
        assert_eq!(inbound.app.port(), 30003);
        // SPLIT_PATH and the printed edit instructions point at this split.
        assert_eq!(SPLIT_PATH, "services[1].routes[0].backendRefs");
        assert_eq!(mesh.services[1].name, SPLIT_SERVICE);
        let split = &mesh.services[1].routes[0].backend_refs;
        let weights: Vec<(&str, u32)> = split
            .iter()
            .map(|b| (b.service.as_str(), b.weight))
            .collect();
        assert_eq!(weights, [("reviews-v1", 50), ("reviews-v2", 50)]);
        assert_eq!(mesh.services[4].protocol, skiff_api::model::Protocol::Grpc);
    }

    /// Applies `split_edit`'s substitutions the way sed does (first match on each line).
    fn sed(text: &str, expr: &str) -> String {
        let subs: Vec<(&str, &str)> = expr
            .split("; ")
            .map(|s| {
                let parts: Vec<&str> = s.split('/').collect();
                assert_eq!(parts.len(), 4, "{s}");
                (parts[1], parts[2])
            })
            .collect();
        text.lines()
            .map(|line| {
                let mut line = line.to_owned();
                for (from, to) in &subs {
                    line = line.replacen(from, to, 1);
                }
                line + "\n"
            })
            .collect()
    }

    #[test]
    fn split_edit_changes_the_weights() {
        let weights = |text: &str| -> Vec<u32> {
            let mesh = skiff_api::load(text).expect("the edited mesh validates");
            mesh.services[1].routes[0]
                .backend_refs
                .iter()
                .map(|b| b.weight)
                .collect()
        };
        let edited = sed(&render(&placements()), &split_edit([50, 50], [0, 100]));
        assert_eq!(weights(&edited), [0, 100]);
        let back = sed(&edited, &split_edit([0, 100], [50, 50]));
        assert_eq!(weights(&back), [50, 50]);
    }

    #[test]
    fn reserved_ports_are_distinct() {
        let ports = reserve_ports(8).expect("loopback ports");
        if let Some(low) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
            .filter(|low| *low > RESERVED_SPAN + 1024)
        {
            assert!(
                ports.iter().all(|p| *p < low && *p >= low - RESERVED_SPAN),
                "outside the kernel's ephemeral range {low}..: {ports:?}"
            );
        }
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 8);
        assert!(ports.iter().all(|p| *p != 0));
    }
}
