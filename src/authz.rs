//! Authorization decisions on the inbound side: which policies apply to a workload, and whether
//! a peer may make a request (or open an opaque TCP connection) under them, enforced and audited.
//! Pure: callers hand in the peer identity and request facts; no sockets, no responses, no I/O.

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use skiff_api::model::{self, AuthorizationPolicy, AuthzAction, AuthzMode, MeshFile};

mod path;
#[cfg(test)]
mod tests;

pub use path::normalize as normalize_path;

/// The `from` entry for a peer that presented no mesh certificate.
const UNAUTHENTICATED: &str = "unauthenticated";

/// The `policy` label of `skiff_authz_decisions_total` when no policy decided: no allow policy
/// matched (`deny`), or only deny policies exist and none matched (`allow`). Empty, because a
/// policy label is always `namespace/name` and so can never be empty.
pub const NO_POLICY: &str = "";

/// Why a request or connection was refused; the caller answers 403 `unauthorized` (HTTP) or
/// closes the connection (TCP).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    #[error("denied by authorization policy {policy}")]
    DeniedByPolicy {
        /// `namespace/name` of the enforced deny policy that matched.
        policy: Arc<str>,
    },
    #[error("no authorization policy allows it")]
    NotAllowed,
}

// === Inputs ===

/// Who is asking, as the inbound TLS handshake established it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer<'a> {
    /// The SPIFFE ID of the peer's verified mesh certificate.
    Authenticated(&'a str),
    /// No mesh certificate: plaintext under permissive mTLS, or mTLS disabled.
    Unauthenticated,
}

impl<'a> From<Option<&'a str>> for Peer<'a> {
    fn from(id: Option<&'a str>) -> Self {
        id.map_or(Peer::Unauthenticated, Peer::Authenticated)
    }
}

/// What is asked for. `method` and `path` are `None` for an opaque TCP connection, which is
/// decided once, when it is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Option<&'a str>,
    /// The request path; anything from a `?` on is ignored (the query is never part of it).
    pub path: Option<&'a str>,
    /// The app port the connection was for.
    pub port: u16,
}

impl<'a> Request<'a> {
    pub fn http(method: &'a str, path: &'a str, port: u16) -> Self {
        Request {
            method: Some(method),
            path: Some(path),
            port,
        }
    }

    pub fn tcp(port: u16) -> Self {
        Request {
            method: None,
            path: None,
            port,
        }
    }
}

// === Outputs ===

/// What one set of policies (the enforced ones, or the audit ones) says.
#[derive(Clone, Copy, Debug)]
pub struct Verdict<'p> {
    allowed: bool,
    by: Option<&'p Policy>,
}

impl<'p> Verdict<'p> {
    const ALLOWED: Verdict<'static> = Verdict {
        allowed: true,
        by: None,
    };

    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// `namespace/name` of the policy that decided; `None` when none did (no allow policy
    /// matched, or no policy at all matched and there is no allow policy).
    pub fn policy(&self) -> Option<&'p str> {
        self.by.map(|p| &*p.name)
    }

    /// `allow` or `deny`, for logs.
    pub fn as_str(&self) -> &'static str {
        if self.allowed { "allow" } else { "deny" }
    }
}

/// The enforced verdict, and what the audit policies would have done if any exist.
#[derive(Clone, Copy, Debug)]
pub struct Decision<'p> {
    enforced: Verdict<'p>,
    audit: Option<Verdict<'p>>,
}

impl<'p> Decision<'p> {
    const ALLOWED: Decision<'static> = Decision {
        enforced: Verdict::ALLOWED,
        audit: None,
    };

    /// The enforced outcome: the only one that may refuse anything.
    pub fn is_allowed(&self) -> bool {
        self.enforced.allowed
    }

    /// The enforced deciding policy, as [`Verdict::policy`].
    pub fn policy(&self) -> Option<&'p str> {
        self.enforced.policy()
    }

    pub fn enforced(&self) -> Verdict<'p> {
        self.enforced
    }

    /// What the audit policies would have decided; `None` when the workload has none.
    pub fn audit(&self) -> Option<Verdict<'p>> {
        self.audit
    }

    /// `Err` when the enforced verdict refuses. Clones the policy name only when refused.
    pub fn check(&self) -> Result<(), AuthzError> {
        match (self.enforced.allowed, self.enforced.by) {
            (true, _) => Ok(()),
            (false, Some(p)) => Err(AuthzError::DeniedByPolicy {
                policy: p.name.clone(),
            }),
            (false, None) => Err(AuthzError::NotAllowed),
        }
    }
}

// === Policies ===

/// The compiled policies of one workload, built once per snapshot.
#[derive(Debug, Default)]
pub struct Policies {
    enforced: Set,
    audit: Set,
}

impl Policies {
    /// Compiles the policies that apply to one workload ([`applying_to`] in static mode; in
    /// xDS mode the control plane sends only those). Within each kind, policies are tried in
    /// `namespace/name` order, so the one reported as deciding does not depend on input order.
    /// Expects policies that passed `skiff-api` validation; an entry validation would refuse
    /// is matched literally, so it never matches a real peer or path.
    pub fn compile<'m>(
        policies: impl IntoIterator<Item = &'m AuthorizationPolicy>,
        metrics: &AuthzMetrics,
    ) -> Policies {
        let mut sorted: Vec<&AuthorizationPolicy> = policies.into_iter().collect();
        sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut out = Policies::default();
        for p in sorted {
            let set = match p.mode {
                AuthzMode::Enforce => &mut out.enforced,
                AuthzMode::Audit => &mut out.audit,
            };
            let compiled = Policy::compile(p, metrics);
            match p.action {
                AuthzAction::Allow => set.allow.push(compiled),
                AuthzAction::Deny => set.deny.push(compiled),
            }
        }
        for (set, mode) in [
            (&mut out.enforced, AuthzMode::Enforce),
            (&mut out.audit, AuthzMode::Audit),
        ] {
            if !set.is_empty() {
                set.none_allowed = metrics.counter(NO_POLICY, result_label(mode, true));
                set.none_denied = metrics.counter(NO_POLICY, result_label(mode, false));
            }
        }
        out
    }

    /// No policy applies: every request is allowed and nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.enforced.is_empty() && self.audit.is_empty()
    }

    /// `namespace/name` of every policy, enforced then audit, for `/config_dump`.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        [&self.enforced, &self.audit]
            .into_iter()
            .flat_map(|s| s.deny.iter().chain(&s.allow))
            .map(|p| &*p.name)
    }

    /// Decides and counts (`skiff_authz_decisions_total`): the enforced verdict when any
    /// enforced policy exists, the audit verdict when any audit policy exists. With no
    /// policies this is one branch. Call it once per HTTP request, or once per accepted TCP
    /// connection.
    pub fn decide(&self, peer: Peer<'_>, req: &Request<'_>) -> Decision<'_> {
        if self.is_empty() {
            return Decision::ALLOWED;
        }
        let decision = self.evaluate(peer, req);
        if !self.enforced.is_empty() {
            self.enforced.record(&decision.enforced);
        }
        if let Some(audit) = &decision.audit {
            self.audit.record(audit);
        }
        decision
    }

    /// [`decide`](Self::decide) without counting.
    pub fn evaluate(&self, peer: Peer<'_>, req: &Request<'_>) -> Decision<'_> {
        Decision {
            enforced: self.enforced.verdict(peer, req),
            audit: (!self.audit.is_empty()).then(|| self.audit.verdict(peer, req)),
        }
    }
}

/// The policies of one mode, by action, and the counters for "no policy decided".
#[derive(Debug, Default)]
struct Set {
    deny: Vec<Policy>,
    allow: Vec<Policy>,
    none_allowed: Counter,
    none_denied: Counter,
}

impl Set {
    fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.allow.is_empty()
    }

    /// Deny overrides allow; with any allow policy, only what one allows is allowed.
    fn verdict(&self, peer: Peer<'_>, req: &Request<'_>) -> Verdict<'_> {
        if let Some(p) = self.deny.iter().find(|p| p.matches(peer, req)) {
            return Verdict {
                allowed: false,
                by: Some(p),
            };
        }
        if self.allow.is_empty() {
            return Verdict::ALLOWED;
        }
        let by = self.allow.iter().find(|p| p.matches(peer, req));
        Verdict {
            allowed: by.is_some(),
            by,
        }
    }

    fn record(&self, verdict: &Verdict<'_>) {
        match (verdict.by, verdict.allowed) {
            (Some(p), _) => p.decided.inc(),
            (None, true) => self.none_allowed.inc(),
            (None, false) => self.none_denied.inc(),
        };
    }
}

/// One policy with its matchers and the counter of the decisions it makes (its action and
/// mode fix the `result` label, so one counter is enough).
#[derive(Debug)]
struct Policy {
    name: Arc<str>,
    from: Vec<PeerMatch>,
    to: Vec<Rule>,
    /// What a method or path condition says about a TCP connection, which has neither: true
    /// for deny policies (fail closed), false for allow policies (allow nothing by accident).
    tcp_matches_http_conditions: bool,
    decided: Counter,
}

impl Policy {
    fn compile(p: &AuthorizationPolicy, metrics: &AuthzMetrics) -> Policy {
        let name = format!("{}/{}", p.namespace, p.name);
        let allowed = p.action == AuthzAction::Allow;
        Policy {
            decided: metrics.counter(&name, result_label(p.mode, allowed)),
            name: name.into(),
            from: p.from.iter().map(|f| PeerMatch::compile(f)).collect(),
            to: p.to.iter().map(Rule::compile).collect(),
            tcp_matches_http_conditions: !allowed,
        }
    }

    fn matches(&self, peer: Peer<'_>, req: &Request<'_>) -> bool {
        (self.from.is_empty() || self.from.iter().any(|f| f.matches(peer)))
            && (self.to.is_empty()
                || self
                    .to
                    .iter()
                    .any(|r| r.matches(req, self.tcp_matches_http_conditions)))
    }
}

#[derive(Debug)]
enum PeerMatch {
    Exact(Box<str>),
    /// `spiffe://<td>/*` or `spiffe://<td>/ns/<ns>/*`, kept without the `*`: any identity
    /// with more after this prefix.
    Under(Box<str>),
    Unauthenticated,
}

impl PeerMatch {
    fn compile(s: &str) -> PeerMatch {
        if s == UNAUTHENTICATED {
            return PeerMatch::Unauthenticated;
        }
        match s.strip_suffix('*').filter(|prefix| prefix.ends_with('/')) {
            Some(prefix) => PeerMatch::Under(prefix.into()),
            None => PeerMatch::Exact(s.into()),
        }
    }

    fn matches(&self, peer: Peer<'_>) -> bool {
        match (self, peer) {
            (PeerMatch::Unauthenticated, Peer::Unauthenticated) => true,
            (PeerMatch::Exact(want), Peer::Authenticated(id)) => **want == *id,
            (PeerMatch::Under(prefix), Peer::Authenticated(id)) => id
                .strip_prefix(&**prefix)
                .is_some_and(|rest| !rest.is_empty()),
            _ => false,
        }
    }
}

/// One `to` entry: every non-empty list must match.
#[derive(Debug)]
struct Rule {
    methods: Vec<Box<str>>,
    paths: Vec<PathMatch>,
    ports: Vec<u16>,
}

impl Rule {
    fn compile(r: &model::AuthzRule) -> Rule {
        Rule {
            methods: r.methods.iter().map(|m| m.as_str().into()).collect(),
            paths: r.paths.iter().map(|p| PathMatch::compile(p)).collect(),
            ports: r.ports.clone(),
        }
    }

    /// `unknown`: the answer of a method or path condition when the request has none (TCP).
    fn matches(&self, req: &Request<'_>, unknown: bool) -> bool {
        (self.ports.is_empty() || self.ports.contains(&req.port))
            && (self.methods.is_empty()
                || req
                    .method
                    .map_or(unknown, |m| self.methods.iter().any(|want| **want == *m)))
            && (self.paths.is_empty()
                || req.path.map_or(unknown, |p| {
                    let p = p.split_once('?').map_or(p, |(path, _)| path);
                    self.paths.iter().any(|want| want.matches(p))
                }))
    }
}

#[derive(Debug)]
enum PathMatch {
    /// `*`
    Any,
    Exact(Box<str>),
    /// `/x/*`, kept as `/x/`: that path and everything below it, not `/x`.
    Below(Box<str>),
}

impl PathMatch {
    fn compile(s: &str) -> PathMatch {
        if s == "*" {
            return PathMatch::Any;
        }
        match s.strip_suffix('*').filter(|prefix| prefix.ends_with('/')) {
            Some(prefix) => PathMatch::Below(prefix.into()),
            None => PathMatch::Exact(s.into()),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Any => true,
            PathMatch::Exact(want) => **want == *path,
            PathMatch::Below(prefix) => path.starts_with(&**prefix),
        }
    }
}

/// The policies whose target service (in the policy's namespace) lists this workload among
/// its endpoints: `workload:` entries in the workload's namespace (the endpoint's `namespace`,
/// else the service's). Static mode compiles these; in xDS mode the control plane sends only
/// the policies that apply.
pub fn applying_to<'m>(
    mesh: &'m MeshFile,
    namespace: &str,
    workload: &str,
) -> impl Iterator<Item = &'m AuthorizationPolicy> {
    mesh.authorization.iter().filter(move |p| {
        mesh.services
            .iter()
            .find(|s| s.namespace == p.namespace && s.name == p.target)
            .is_some_and(|s| {
                s.endpoints.iter().any(|e| {
                    e.workload.as_deref() == Some(workload)
                        && e.namespace.as_deref().unwrap_or(&s.namespace) == namespace
                })
            })
    })
}

// === Metrics ===

fn result_label(mode: AuthzMode, allowed: bool) -> &'static str {
    match (mode, allowed) {
        (AuthzMode::Enforce, true) => "allow",
        (AuthzMode::Enforce, false) => "deny",
        (AuthzMode::Audit, true) => "audit-allow",
        (AuthzMode::Audit, false) => "audit-deny",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    /// `namespace/name`, or [`NO_POLICY`].
    policy: String,
    /// `allow`, `deny`, `audit-allow` or `audit-deny`.
    result: &'static str,
}

/// `skiff_authz_decisions_total{policy, result}`; cloned handles share the series. Counters
/// are resolved when policies are compiled, so a decision increments an atomic and no more.
#[derive(Clone, Debug, Default)]
pub struct AuthzMetrics {
    decisions: Family<DecisionLabels, Counter>,
}

impl AuthzMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = AuthzMetrics::default();
        reg.register(
            "skiff_authz_decisions",
            "Authorization decisions by deciding policy (empty: none decided) and result \
             (allow, deny; audit-allow, audit-deny for what audit policies would have done)",
            m.decisions.clone(),
        );
        m
    }

    fn counter(&self, policy: &str, result: &'static str) -> Counter {
        self.decisions.get_or_create_owned(&DecisionLabels {
            policy: policy.to_owned(),
            result,
        })
    }
}
