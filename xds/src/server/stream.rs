//! One proxy's discovery stream as a state machine: its subscriptions per type, the versions
//! it holds, the responses awaiting an ACK. Pure bookkeeping over a `Resources` snapshot; the
//! task that owns the gRPC stream (`server`) feeds it requests and config changes.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use prometheus_client::metrics::counter::Counter;
use skiff_api::{
    pb,
    resource::{Kind, MAX_NAME_LEN, Resources, is_alias},
};
use tonic::Status;

use super::registry::Registration;
use crate::metrics::Metrics;

/// Subscribed names (all types together) one stream may hold: far above any real proxy, low
/// enough that a flood cannot grow the control plane without bound.
pub const MAX_NAMES_PER_STREAM: usize = 100_000;

/// Responses of one type awaiting an answer; older ones are forgotten (their ACK is stale).
const MAX_PENDING: usize = 16;

pub struct StreamState {
    id: u64,
    nonce_seq: u64,
    names: usize,
    types: BTreeMap<Kind, TypeState>,
    registration: Registration,
    pushes: BTreeMap<Kind, Counter>,
    nacks: BTreeMap<Kind, Counter>,
}

#[derive(Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Resource name → the version the proxy holds (or was last sent).
    held: HashMap<String, String>,
    /// Subscribed alias → the resource names the proxy was told it means (empty: told it
    /// means nothing).
    announced: HashMap<String, BTreeSet<String>>,
    /// The first request of this type was seen (its `initial_resource_versions` applied).
    seen: bool,
    /// At least one response of this type went out.
    responded: bool,
    /// (nonce, system version) of responses not yet answered, oldest first.
    pending: VecDeque<(String, String)>,
}

impl StreamState {
    pub fn new(id: u64, registration: Registration, metrics: &Metrics) -> Self {
        StreamState {
            id,
            nonce_seq: 0,
            names: 0,
            types: BTreeMap::new(),
            registration,
            pushes: Kind::ALL.iter().map(|&k| (k, metrics.push(k))).collect(),
            nacks: Kind::ALL.iter().map(|&k| (k, metrics.nack(k))).collect(),
        }
    }

    /// Handles one request from the proxy; returns the response it calls for, if any. An
    /// error ends the stream with that status.
    pub fn on_request(
        &mut self,
        req: pb::DiscoveryRequest,
        resources: &Resources,
    ) -> Result<Option<pb::DiscoveryResponse>, Status> {
        let Some(kind) = Kind::from_type_url(&req.type_url) else {
            // A newer proxy may ask for a type this control plane does not have: not fatal.
            tracing::warn!(stream = self.id, type_url = %req.type_url, "ignoring request for an unknown type URL");
            return Ok(None);
        };
        let total_names = self.names;
        let ts = self.types.entry(kind).or_default();
        let mut names = total_names;
        if !ts.seen {
            ts.seen = true;
            if req.initial_resource_versions.len() > MAX_NAMES_PER_STREAM {
                return Err(Status::resource_exhausted(format!(
                    "more than {MAX_NAMES_PER_STREAM} initial resource versions"
                )));
            }
            ts.held = req.initial_resource_versions.into_iter().collect();
        }
        if !req.response_nonce.is_empty() {
            match ts
                .pending
                .iter()
                .position(|(n, _)| *n == req.response_nonce)
            {
                Some(at) => {
                    let (_, version) = ts.pending[at].clone();
                    ts.pending.drain(..=at);
                    match &req.error_detail {
                        None => self.registration.acked(kind, &version),
                        Some(detail) => {
                            tracing::warn!(stream = self.id, %kind, %version, reason = %detail.message, "proxy NACKed a response");
                            self.nacks[&kind].inc();
                            self.registration.nacked(kind, &version, &detail.message);
                        }
                    }
                }
                None => {
                    tracing::debug!(stream = self.id, %kind, nonce = %req.response_nonce, "stale or unknown nonce")
                }
            }
        }
        let changed_subscription =
            !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty();
        if let Some(long) = req
            .resource_names_subscribe
            .iter()
            .find(|n| n.len() > MAX_NAME_LEN)
        {
            return Err(Status::invalid_argument(format!(
                "a subscribed name of {} bytes; names are at most {MAX_NAME_LEN}",
                long.len()
            )));
        }
        for name in req.resource_names_subscribe {
            if name == "*" {
                ts.wildcard = true;
            } else if !ts.names.contains(&name) {
                if names >= MAX_NAMES_PER_STREAM {
                    return Err(Status::resource_exhausted(format!(
                        "more than {MAX_NAMES_PER_STREAM} subscribed resource names on one stream"
                    )));
                }
                ts.names.insert(name);
                names += 1;
            }
        }
        for name in req.resource_names_unsubscribe {
            if name == "*" {
                ts.wildcard = false;
            } else if ts.names.remove(&name) {
                names -= 1;
            }
        }
        self.names = names;
        if changed_subscription || !ts.responded {
            Ok(self.diff(kind, resources))
        } else {
            Ok(None)
        }
    }

    /// The responses a config change calls for: per type, only what changed for this proxy.
    pub fn on_config(&mut self, resources: &Resources) -> Vec<pb::DiscoveryResponse> {
        let kinds: Vec<Kind> = self
            .types
            .iter()
            .filter(|(_, t)| t.responded)
            .map(|(k, _)| *k)
            .collect();
        kinds
            .into_iter()
            .filter_map(|k| self.diff(k, resources))
            .collect()
    }

    /// What the proxy lacks of `kind`; the first response of a type goes out even if empty.
    /// Subscribed aliases are resolved against this config: the resource they stand for is
    /// sent with them listed, one that nothing claims is announced as removed (once), and so
    /// is a held resource that is gone while still subscribed.
    fn diff(&mut self, kind: Kind, resources: &Resources) -> Option<pb::DiscoveryResponse> {
        let ts = self.types.get_mut(&kind)?;
        // What the proxy was told each alias means, before this response.
        let told = std::mem::take(&mut ts.announced);
        // Resource name → the subscribed aliases that resolve to it.
        let mut want: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut unclaimed = Vec::new();
        if ts.wildcard {
            for r in resources.of_kind(kind) {
                want.entry(r.name.as_str()).or_default();
            }
        }
        for name in &ts.names {
            let found = resources.resolve(kind, name);
            if is_alias(name) {
                if found.is_empty() {
                    unclaimed.push(name.as_str());
                }
                ts.announced.insert(
                    name.clone(),
                    found.iter().map(|f| (*f).to_owned()).collect(),
                );
                for f in found {
                    want.entry(f).or_default().push(name);
                }
            } else {
                for f in found {
                    want.entry(f).or_default();
                }
            }
        }
        // Held but no longer wanted: announced if the proxy still subscribes to it (the
        // resource is gone, or its alias now means another); dropped quietly if the proxy
        // unsubscribed (it forgets what it unsubscribed from itself).
        let unwanted: Vec<String> = ts
            .held
            .keys()
            .filter(|name| !want.contains_key(name.as_str()))
            .cloned()
            .collect();
        let mut removed = Vec::new();
        for name in unwanted {
            ts.held.remove(&name);
            let still_subscribed = ts.wildcard
                || ts.names.contains(&name)
                || told
                    .iter()
                    .any(|(alias, meant)| meant.contains(&name) && ts.names.contains(alias));
            if still_subscribed {
                removed.push(name);
            }
        }
        let mut out = Vec::new();
        for (name, aliases) in &want {
            let Some(r) = resources.get(kind, name) else {
                continue;
            };
            let new_alias = aliases
                .iter()
                .any(|a| !told.get(*a).is_some_and(|meant| meant.contains(*name)));
            if ts.held.get(*name) != Some(&r.version) || new_alias {
                ts.held.insert((*name).to_owned(), r.version.clone());
                let mut r = r.clone();
                r.aliases = aliases.iter().map(|a| (*a).to_owned()).collect();
                out.push(r);
            }
        }
        for alias in unclaimed {
            // Announced once: an alias already told to mean nothing is not repeated.
            if told.get(alias).is_none_or(|meant| !meant.is_empty()) {
                removed.push(alias.to_owned());
            }
        }
        removed.sort();
        if out.is_empty() && removed.is_empty() && ts.responded {
            return None;
        }
        ts.responded = true;
        self.nonce_seq += 1;
        let nonce = format!("{}-{}", self.id, self.nonce_seq);
        let version = resources.kind_version(kind);
        ts.pending.push_back((nonce.clone(), version.clone()));
        if ts.pending.len() > MAX_PENDING {
            ts.pending.pop_front();
        }
        self.registration.sent(kind, &version);
        self.pushes[&kind].inc();
        Some(pb::DiscoveryResponse {
            system_version_info: version,
            resources: out,
            type_url: kind.type_url().to_owned(),
            removed_resources: removed,
            nonce,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::server::registry::{ProxyStatus, Registry};

    const MESH: &str = "services:\n  - name: a\n    endpoints: [ { address: 127.0.0.1:1 } ]\n  - name: b\n    endpoints: [ { address: 127.0.0.1:2 } ]\n";

    fn resources(text: &str) -> Resources {
        skiff_api::resource::compile(&skiff_api::load(text).expect("valid test mesh"))
    }

    fn state() -> StreamState {
        let registry = Arc::new(Registry::default());
        let status = ProxyStatus {
            workload: "w".into(),
            namespace: "default".into(),
            proxy_version: "t".into(),
            connected_since: 0,
            types: Default::default(),
        };
        StreamState::new(1, registry.register(1, status), &Metrics::default())
    }

    fn req(names: &[&str]) -> pb::DiscoveryRequest {
        pb::DiscoveryRequest {
            type_url: Kind::Service.type_url().to_owned(),
            resource_names_subscribe: names.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn names(rsp: &pb::DiscoveryResponse) -> Vec<&str> {
        rsp.resources.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn initial_versions_are_not_resent() {
        let res = resources(MESH);
        let mut s = state();
        let mut first = req(&["*"]);
        let a = res.get(Kind::Service, "default/a").expect("a");
        first
            .initial_resource_versions
            .insert(a.name.clone(), a.version.clone());
        first
            .initial_resource_versions
            .insert("default/gone".into(), "x".into());
        let rsp = s.on_request(first, &res).expect("ok").expect("a response");
        assert_eq!(names(&rsp), ["default/b"]);
        assert_eq!(rsp.removed_resources, ["default/gone"]);
    }

    #[test]
    fn nacked_version_is_not_resent_and_removal_is_announced() {
        let res = resources(MESH);
        let mut s = state();
        let rsp = s
            .on_request(req(&["*"]), &res)
            .expect("ok")
            .expect("a response");
        let mut nack = req(&[]);
        nack.response_nonce = rsp.nonce.clone();
        nack.error_detail = Some(pb::Status {
            code: 3,
            message: "no".into(),
        });
        assert!(s.on_request(nack, &res).expect("ok").is_none());
        assert!(
            s.on_config(&res).is_empty(),
            "the NACKed version is not resent"
        );

        let fewer =
            resources("services:\n  - name: a\n    endpoints: [ { address: 127.0.0.1:1 } ]\n");
        let out = s.on_config(&fewer);
        assert_eq!(out.len(), 1);
        assert!(out[0].resources.is_empty());
        assert_eq!(out[0].removed_resources, ["default/b"]);
    }

    #[test]
    fn subscription_flood_is_refused() {
        let res = resources(MESH);
        let mut s = state();
        let many: Vec<String> = (0..=MAX_NAMES_PER_STREAM)
            .map(|i| format!("n{i}"))
            .collect();
        let mut flood = req(&[]);
        flood.resource_names_subscribe = many;
        let err = s.on_request(flood, &res).expect_err("refused");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn aliases_resolve_and_unclaimed_ones_are_announced_once() {
        let res = resources(MESH);
        let mut s = state();
        let rsp = s
            .on_request(req(&["host:a:8080", "host:nobody"]), &res)
            .expect("ok")
            .expect("a response");
        assert_eq!(names(&rsp), ["default/a"]);
        assert_eq!(rsp.resources[0].aliases, ["host:a:8080"]);
        assert_eq!(rsp.removed_resources, ["host:nobody"]);
        assert!(s.on_config(&res).is_empty(), "nothing new to say");

        // A second alias of a held resource is announced even though its version is known.
        let rsp = s
            .on_request(req(&["addr:127.0.0.9:80", "host:a"]), &res)
            .expect("ok")
            .expect("a response");
        assert_eq!(names(&rsp), ["default/a"]);
        assert_eq!(rsp.resources[0].aliases, ["host:a", "host:a:8080"]);
        assert_eq!(rsp.removed_resources, ["addr:127.0.0.9:80"]);

        // The service goes away: its name and its aliases are announced as removed.
        let fewer =
            resources("services:\n  - name: b\n    endpoints: [ { address: 127.0.0.1:2 } ]\n");
        let out = s.on_config(&fewer);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].removed_resources,
            ["default/a", "host:a", "host:a:8080"]
        );
        // It comes back: the aliases resolve again.
        let out = s.on_config(&res);
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), ["default/a"]);
    }

    #[test]
    fn an_over_long_name_ends_the_stream() {
        let res = resources(MESH);
        let mut s = state();
        let long = format!("host:{}", "a".repeat(MAX_NAME_LEN));
        let err = s.on_request(req(&[&long]), &res).expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
