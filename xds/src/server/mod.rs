//! The discovery service: one task per connected proxy that reads its requests, answers
//! subscriptions, tracks ACK/NACK per type and pushes what changed when the config does.
//! Config comes from `source::ConfigStore`; who is connected is kept in [`Registry`].

pub mod registry;
mod stream;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use skiff_api::{
    pb::{self, discovery_server::Discovery},
    resource::resource_name,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub use self::registry::{ProxiesReport, ProxyStatus, Registry, TypeStatus};
pub use self::stream::MAX_NAMES_PER_STREAM;
use self::{registry::unix_now, stream::StreamState};
use crate::{metrics::Metrics, source::ConfigStore};

/// How long a new stream may take to send its first request (the one naming its node).
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Responses queued for one proxy before its task waits for it to read.
const RESPONSE_QUEUE: usize = 16;

/// The `Discovery` service; cheap to clone.
#[derive(Clone)]
pub struct DiscoveryService {
    store: Arc<ConfigStore>,
    registry: Arc<Registry>,
    metrics: Metrics,
    next_id: Arc<AtomicU64>,
    shutdown: watch::Receiver<bool>,
}

impl DiscoveryService {
    /// `shutdown` turning true ends every open stream with `UNAVAILABLE`, so proxies
    /// reconnect (to this control plane's successor) instead of holding a dead stream.
    pub fn new(
        store: Arc<ConfigStore>,
        registry: Arc<Registry>,
        metrics: Metrics,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        DiscoveryService {
            store,
            registry,
            metrics,
            next_id: Arc::new(AtomicU64::new(1)),
            shutdown,
        }
    }

    pub fn into_server(self) -> pb::discovery_server::DiscoveryServer<Self> {
        pb::discovery_server::DiscoveryServer::new(self)
    }
}

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type StreamStream = ReceiverStream<Result<pb::DiscoveryResponse, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<pb::DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(FIRST_REQUEST_TIMEOUT, inbound.message()).await {
            Err(_elapsed) => return Err(Status::deadline_exceeded("no first request")),
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => {
                return Err(Status::cancelled("stream closed before its first request"));
            }
            Ok(Ok(Some(first))) => first,
        };
        let Some(node) = first.node.clone() else {
            return Err(Status::invalid_argument(
                "the first request of a stream must carry `node`",
            ));
        };
        let workload = resource_name(&node.namespace, &node.workload);
        let resources = self.store.current();
        if !resources.workloads.contains_key(&workload) {
            tracing::info!(%workload, "refusing a stream: unknown workload");
            return Err(Status::not_found(format!(
                "workload {workload} is not in the control plane's config"
            )));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let registration = self.registry.register(
            id,
            ProxyStatus {
                workload: node.workload.clone(),
                namespace: node.namespace.clone(),
                proxy_version: node.proxy_version.clone(),
                connected_since: unix_now(),
                types: Default::default(),
            },
        );
        let mut state = StreamState::new(id, registration, &self.metrics);
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
        let task = StreamTask {
            id,
            workload,
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            tx,
            shutdown: self.shutdown.clone(),
        };
        // The first request is answered before the task starts, so its response is queued
        // before anything the config watch could produce.
        let first_response = state.on_request(first, &resources);
        tokio::spawn(task.run(state, inbound, first_response));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct StreamTask {
    id: u64,
    workload: String,
    store: Arc<ConfigStore>,
    metrics: Metrics,
    tx: mpsc::Sender<Result<pb::DiscoveryResponse, Status>>,
    shutdown: watch::Receiver<bool>,
}

impl StreamTask {
    async fn run(
        mut self,
        mut state: StreamState,
        mut inbound: Streaming<pb::DiscoveryRequest>,
        first: Result<Option<pb::DiscoveryResponse>, Status>,
    ) {
        self.metrics.connected_proxies.inc();
        tracing::info!(stream = self.id, workload = %self.workload, "proxy connected");
        let mut changes = self.store.subscribe();
        changes.mark_unchanged();
        let why = match self
            .serve(&mut state, &mut inbound, &mut changes, first)
            .await
        {
            Ok(()) => "closed by the proxy".to_owned(),
            Err(status) => {
                let why = disconnect_reason(&status);
                // The proxy may be gone already; then there is no one to tell.
                let _ = self.tx.send(Err(status)).await;
                why
            }
        };
        self.metrics.connected_proxies.dec();
        tracing::info!(stream = self.id, workload = %self.workload, reason = %why, "proxy disconnected");
    }

    async fn serve(
        &mut self,
        state: &mut StreamState,
        inbound: &mut Streaming<pb::DiscoveryRequest>,
        changes: &mut tokio::sync::watch::Receiver<u64>,
        first: Result<Option<pb::DiscoveryResponse>, Status>,
    ) -> Result<(), Status> {
        if let Some(rsp) = first? {
            self.send(rsp).await?;
        }
        let shutting_down = || Status::unavailable("control plane shutting down");
        if *self.shutdown.borrow() {
            return Err(shutting_down());
        }
        loop {
            tokio::select! {
                _ = self.shutdown.changed() => return Err(shutting_down()),
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => {
                        let resources = self.store.current();
                        if let Some(rsp) = state.on_request(req, &resources)? {
                            self.send(rsp).await?;
                        }
                    }
                    Ok(None) => return Ok(()),
                    // A request that does not decode, or a reset: the status goes back if anyone
                    // is still listening.
                    Err(status) => return Err(status),
                },
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(shutting_down());
                    }
                    let resources = self.store.current();
                    for rsp in state.on_config(&resources) {
                        self.send(rsp).await?;
                    }
                }
                () = self.tx.closed() => return Ok(()),
            }
        }
    }

    async fn send(&self, rsp: pb::DiscoveryResponse) -> Result<(), Status> {
        self.tx
            .send(Ok(rsp))
            .await
            .map_err(|_| Status::cancelled("proxy went away"))
    }
}

/// Why a stream ended, for the log. A proxy that went away (it stopped, or its connection
/// closed) is said so, rather than as the transport's "h2 protocol error".
fn disconnect_reason(status: &Status) -> String {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            let quiet_close = h2.is_remote()
                && matches!(h2.reason(), Some(h2::Reason::NO_ERROR | h2::Reason::CANCEL));
            if h2.is_io() || quiet_close {
                return "the proxy closed the connection".to_owned();
            }
        }
        source = err.source();
    }
    status.message().to_owned()
}

#[cfg(test)]
mod disconnect_tests {
    use super::*;

    #[test]
    fn a_status_without_a_transport_cause_keeps_its_message() {
        let status = Status::invalid_argument("the first request of a stream must carry `node`");
        assert_eq!(
            disconnect_reason(&status),
            "the first request of a stream must carry `node`"
        );
        // A reset this side made is not the proxy going away.
        let local = Status::from_error(Box::new(h2::Error::from(h2::Reason::NO_ERROR)));
        assert!(disconnect_reason(&local).contains("h2 protocol error"));
    }
}
