//! The discovery stream to the control plane: subscribes (this workload, mesh settings, and
//! every service, endpoints and policy for now), compiles what arrives into a `Snapshot`,
//! installs it, and ACKs or NACKs each response. Reconnects with jittered backoff, resending
//! the versions it holds; the last good snapshot keeps serving while disconnected.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use skiff_api::{
    pb::{self, discovery_client::DiscoveryClient},
    resource::{self, Kind, MESH_SETTINGS_NAME, Received},
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::{
    resilience::Backoff,
    snapshot::{CompileContext, Snapshot},
    state::State,
    telemetry::ReloadResult,
};

/// gRPC `INVALID_ARGUMENT`, the code of a NACK's error detail.
const NACK_CODE: i32 = 3;
/// Longest wait for the control plane to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("invalid control-plane address {url:?}: {source}")]
    Address {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("connect: {0}")]
    Connect(#[source] tonic::transport::Error),
    #[error("stream: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the stream's request channel closed")]
    RequestsClosed,
}

/// Where the control plane is and who this proxy is.
#[derive(Clone, Debug)]
pub struct XdsConfig {
    pub url: String,
    pub workload: String,
    pub namespace: String,
}

/// What the proxy holds from the control plane, kept across reconnects.
#[derive(Default)]
struct Held {
    received: Received,
    /// Per type: resource name → version, sent back on a new stream.
    versions: HashMap<Kind, BTreeMap<String, String>>,
    /// Per type: the control plane's `system_version_info` of the last applied response.
    system_versions: BTreeMap<&'static str, String>,
    generation: u64,
}

/// Runs the client forever. `applied` turns true once the first snapshot is installed.
pub async fn run(cfg: XdsConfig, state: Arc<State>, applied: watch::Sender<bool>) {
    let mut held = Held::default();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        match session(&cfg, &state, &mut held, &applied, &mut backoff).await {
            Ok(()) => info!(url = %cfg.url, "control-plane stream ended; reconnecting"),
            Err(e) => {
                warn!(url = %cfg.url, error = %e, "control-plane stream failed; keeping the last config")
            }
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

fn request(
    kind: Kind,
    names: Vec<String>,
    held: &Held,
    node: Option<pb::Node>,
) -> pb::DiscoveryRequest {
    pb::DiscoveryRequest {
        node,
        type_url: kind.type_url().to_owned(),
        resource_names_subscribe: names,
        initial_resource_versions: held
            .versions
            .get(&kind)
            .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        ..Default::default()
    }
}

async fn session(
    cfg: &XdsConfig,
    state: &State,
    held: &mut Held,
    applied: &watch::Sender<bool>,
    backoff: &mut Backoff,
) -> Result<(), XdsError> {
    let endpoint = tonic::transport::Endpoint::from_shared(cfg.url.clone())
        .map_err(|source| XdsError::Address {
            url: cfg.url.clone(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(XdsError::Connect)?;
    let mut client = DiscoveryClient::new(channel);
    let (tx, rx) = mpsc::channel::<pb::DiscoveryRequest>(64);
    let node = pb::Node {
        workload: cfg.workload.clone(),
        namespace: cfg.namespace.clone(),
        proxy_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let own = resource::resource_name(&cfg.namespace, &cfg.workload);
    let subscriptions = [
        (Kind::Workload, vec![own]),
        (Kind::MeshSettings, vec![MESH_SETTINGS_NAME.to_owned()]),
        (Kind::Service, vec!["*".to_owned()]),
        (Kind::Endpoints, vec!["*".to_owned()]),
        (Kind::Authorization, vec!["*".to_owned()]),
    ];
    let mut node = Some(node);
    for (kind, names) in subscriptions {
        let req = request(kind, names, held, node.take());
        tx.send(req).await.map_err(|_| XdsError::RequestsClosed)?;
    }
    let mut stream = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    info!(url = %cfg.url, "control-plane stream open");
    let mut first_seen: HashSet<Kind> = HashSet::new();
    while let Some(rsp) = stream.message().await? {
        backoff.reset();
        let nonce = rsp.nonce.clone();
        let type_url = rsp.type_url.clone();
        let nack = match Kind::from_type_url(&rsp.type_url) {
            None => Some(format!("unknown type URL {:?}", rsp.type_url)),
            Some(kind) => {
                first_seen.insert(kind);
                apply(
                    cfg,
                    state,
                    held,
                    kind,
                    rsp,
                    first_seen.len() == Kind::ALL.len(),
                )
            }
        };
        if let Some(message) = &nack {
            warn!(type_url = %type_url, error = %message, "NACK: config refused; keeping the last good one");
            state.reject(message.clone());
            state.metrics.reload(ReloadResult::Failed);
        }
        if state.is_applied() {
            applied.send_replace(true);
        }
        let reply = pb::DiscoveryRequest {
            type_url,
            response_nonce: nonce,
            error_detail: nack.map(|message| pb::Status {
                code: NACK_CODE,
                message,
            }),
            ..Default::default()
        };
        tx.send(reply).await.map_err(|_| XdsError::RequestsClosed)?;
    }
    Ok(())
}

/// Applies one response: good resources replace their previous versions, bad ones are kept
/// out (the previous version stays) and named in the NACK. Until every type has answered once
/// nothing is compiled, so the first snapshot is whole.
fn apply(
    cfg: &XdsConfig,
    state: &State,
    held: &mut Held,
    kind: Kind,
    rsp: pb::DiscoveryResponse,
    complete: bool,
) -> Option<String> {
    let mut next = held.received.clone();
    let mut versions = held.versions.get(&kind).cloned().unwrap_or_default();
    let mut errors = Vec::new();
    for r in &rsp.resources {
        match resource::decode(r) {
            Ok(d) if d.kind() == kind => {
                versions.insert(r.name.clone(), r.version.clone());
                next.insert(d);
            }
            Ok(d) => errors.push(format!(
                "{}: a {:?} resource in a {kind:?} response",
                r.name,
                d.kind()
            )),
            Err(e) => errors.push(e.to_string()),
        }
    }
    for name in &rsp.removed_resources {
        next.remove(kind, name);
        versions.remove(name);
    }
    if complete {
        let prev = state.snapshot();
        held.generation += 1;
        let mut system_versions = held.system_versions.clone();
        system_versions.insert(kind.message_name(), rsp.system_version_info.clone());
        let version = system_versions
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let cx = CompileContext {
            settings: &state.settings,
            metrics: &state.metrics,
            workload: Some((cfg.workload.as_str(), cfg.namespace.as_str())),
            version: format!("{}:{version}", held.generation),
        };
        match Snapshot::compile(&next.to_mesh_file(), &cx, Some(&prev)) {
            Ok(snap) => {
                debug!(version = %snap.version, "applying config from the control plane");
                state.install(snap);
                state.metrics.reload(ReloadResult::Ok);
                held.system_versions = system_versions;
            }
            // The whole response is refused: nothing of it is kept.
            Err(e) => return Some(e.to_string()),
        }
    } else {
        held.system_versions
            .insert(kind.message_name(), rsp.system_version_info.clone());
    }
    held.received = next;
    held.versions.insert(kind, versions);
    if errors.is_empty() {
        None
    } else {
        Some(errors.join("; "))
    }
}
