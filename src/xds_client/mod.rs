//! The discovery stream to the control plane. Subscribes to this workload, the mesh settings
//! and policies, the catch-all service, and outbound services on demand (by the host or
//! address the app used, plus what those services route to); unsubscribes services no request
//! used for the idle timeout. Compiles what it holds into a `Snapshot`, installs it, and ACKs
//! or NACKs each response per resource. Reconnects with jittered backoff, resending the
//! subscriptions and versions it holds; the last good snapshot keeps serving meanwhile.
//! The decisions are the pure state machine in `machine`; this module is the task around it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use prometheus_client::{metrics::gauge::Gauge, registry::Registry};
use skiff_api::{model::MeshFile, pb::discovery_client::DiscoveryClient};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::{
    ondemand::{Answer, LookupMetrics, OnDemand},
    resilience::Backoff,
    snapshot::{CompileContext, Snapshot, SnapshotError},
    state::State,
    telemetry::ReloadResult,
};

mod machine;

use machine::{IDLE_SWEEPS, Machine, Port};
pub use machine::{Nack, XdsStatus};

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

/// Where the control plane is, who this proxy is, and how on-demand discovery behaves.
#[derive(Clone, Debug)]
pub struct XdsConfig {
    pub url: String,
    pub workload: String,
    pub namespace: String,
    /// How long a request waits for a service it asked for.
    pub fetch_timeout: Duration,
    /// How long an unused service stays subscribed.
    pub idle_timeout: Duration,
    /// HTTP/2 PING interval, and how long a PING may go unanswered.
    pub keepalive: Duration,
}

/// The discovery stream's own families (registered in every mode, so the names are stable).
#[derive(Clone, Debug, Default)]
pub struct XdsMetrics {
    /// 1 while the discovery stream is open.
    connected: Gauge,
    /// Services held (fetched on demand, and what they route to).
    services: Gauge,
    lookups: LookupMetrics,
}

impl XdsMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = XdsMetrics {
            lookups: LookupMetrics::register(reg),
            ..XdsMetrics::default()
        };
        reg.register(
            "skiff_xds_connected",
            "1 while the discovery stream to the control plane is open",
            m.connected.clone(),
        );
        reg.register(
            "skiff_xds_services",
            "Services held from the control plane",
            m.services.clone(),
        );
        m
    }
}

/// Runs the client forever. `applied` turns true once the first snapshot is installed.
pub async fn run(
    cfg: XdsConfig,
    state: Arc<State>,
    metrics: XdsMetrics,
    applied: watch::Sender<bool>,
) {
    let (od, mut wanted) = OnDemand::new(cfg.fetch_timeout, &metrics.lookups);
    state.set_on_demand(od.clone());
    let mut machine = Machine::new(&cfg.workload, &cfg.namespace, cfg.idle_timeout);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    let client = Client {
        cfg: &cfg,
        state: &state,
        od: &od,
        applied: &applied,
        metrics: &metrics,
    };
    loop {
        let ended = client
            .session(&mut machine, &mut wanted, &mut backoff)
            .await;
        match (StreamEnd::of(&ended), state.is_draining()) {
            // The proxy is shutting down: the control plane going too is expected.
            (end, true) => {
                debug!(url = %cfg.url, reason = %end.reason(&ended), "discovery stream closed")
            }
            (end @ StreamEnd::Closed, false) => {
                info!(url = %cfg.url, reason = %end.reason(&ended), "discovery stream closed; reconnecting")
            }
            (StreamEnd::Failed, false) => {
                if let Err(e) = &ended {
                    warn!(url = %cfg.url, error = %e, "control-plane stream failed; keeping the last config")
                }
            }
        }
        machine.closed();
        metrics.connected.set(0);
        state.set_xds_status(machine.status(&cfg.url).render());
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

/// How a session of the discovery stream ended, which decides how loudly it is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamEnd {
    /// A normal close: the control plane ended the stream, answered `UNAVAILABLE` (it is
    /// stopping or restarting), or closed the connection with a graceful GOAWAY.
    Closed,
    /// Anything else (connect failures, resets, timeouts, protocol errors): worth a warning.
    Failed,
}

impl StreamEnd {
    fn of(ended: &Result<(), XdsError>) -> StreamEnd {
        match ended {
            Ok(()) => StreamEnd::Closed,
            Err(XdsError::Stream(status)) if is_normal_close(status) => StreamEnd::Closed,
            Err(_) => StreamEnd::Failed,
        }
    }

    /// Why the stream closed, in words for the log (never the transport's own error text
    /// for a normal close).
    fn reason(self, ended: &Result<(), XdsError>) -> String {
        match ended {
            Ok(()) => "ended by the control plane".to_owned(),
            Err(XdsError::Stream(status)) if status.code() == tonic::Code::Unavailable => {
                format!("unavailable: {}", status.message())
            }
            Err(XdsError::Stream(_)) if self == StreamEnd::Closed => {
                "the control plane closed the connection".to_owned()
            }
            Err(e) => e.to_string(),
        }
    }
}

/// `UNAVAILABLE` from the control plane, or the connection closed under the stream by a
/// GOAWAY or stream reset without error, is how a control plane stops; a keep-alive that
/// timed out (also mapped to `UNAVAILABLE`) is not.
fn is_normal_close(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    let mut graceful_h2 = false;
    while let Some(err) = source {
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return false;
        }
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            graceful_h2 |= (h2.is_go_away() || h2.is_reset())
                && h2.is_remote()
                && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        source = err.source();
    }
    status.code() == tonic::Code::Unavailable || graceful_h2
}

/// The thin task around the machine: the stream, the timers and the proxy's state.
struct Client<'a> {
    cfg: &'a XdsConfig,
    state: &'a State,
    od: &'a OnDemand,
    applied: &'a watch::Sender<bool>,
    metrics: &'a XdsMetrics,
}

impl Client<'_> {
    async fn session(
        &self,
        machine: &mut Machine,
        wanted: &mut mpsc::Receiver<String>,
        backoff: &mut Backoff,
    ) -> Result<(), XdsError> {
        let cfg = self.cfg;
        let endpoint = tonic::transport::Endpoint::from_shared(cfg.url.clone())
            .map_err(|source| XdsError::Address {
                url: cfg.url.clone(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(cfg.keepalive)
            .keep_alive_timeout(cfg.keepalive)
            .keep_alive_while_idle(true);
        let channel = endpoint.connect().await.map_err(XdsError::Connect)?;
        let mut client = DiscoveryClient::new(channel);
        let (tx, rx) = mpsc::channel(64);
        for req in machine.open() {
            tx.send(req).await.map_err(|_| XdsError::RequestsClosed)?;
        }
        let mut stream = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        info!(url = %cfg.url, "control-plane stream open");
        self.metrics.connected.set(1);
        self.state.set_xds_status(machine.status(&cfg.url).render());
        let period = (cfg.idle_timeout / IDLE_SWEEPS).max(Duration::from_millis(100));
        let mut sweeps = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut port = ProxyPort {
            cfg,
            state: self.state,
            od: self.od,
        };
        loop {
            let requests = tokio::select! {
                msg = stream.message() => {
                    let Some(rsp) = msg? else { return Ok(()) };
                    backoff.reset();
                    let out = machine.on_response(rsp, &mut port);
                    // Ready once what was subscribed at start is installed; after that a
                    // reconnect never takes readiness back.
                    if self.state.is_applied() && (machine.ready() || *self.applied.borrow()) {
                        self.applied.send_replace(true);
                    }
                    out
                }
                Some(alias) = wanted.recv() => {
                    let mut aliases = vec![alias];
                    while let Ok(more) = wanted.try_recv() {
                        aliases.push(more);
                    }
                    machine.on_wanted(aliases)
                }
                _ = sweeps.tick() => machine.on_sweep(&mut port),
            };
            for req in requests {
                if req.response_nonce.is_empty()
                    && req.resource_names_subscribe.is_empty()
                    && req.resource_names_unsubscribe.is_empty()
                {
                    continue;
                }
                if tx.send(req).await.is_err() {
                    return ended_under_requests(&mut stream).await;
                }
            }
            self.metrics
                .services
                .set(i64::try_from(machine.services_held()).unwrap_or(i64::MAX));
            self.state.set_xds_status(machine.status(&cfg.url).render());
        }
    }
}

/// The request side closes when the stream ends, so a request that finds it closed asks the
/// response side how the stream ended: a control plane that stopped (`UNAVAILABLE`) is a
/// normal close, not a failure.
async fn ended_under_requests(
    stream: &mut tonic::Streaming<skiff_api::pb::DiscoveryResponse>,
) -> Result<(), XdsError> {
    match tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
        Ok(Ok(None)) => Ok(()),
        Ok(Err(status)) => Err(status.into()),
        Ok(Ok(Some(_))) | Err(_) => Err(XdsError::RequestsClosed),
    }
}

/// The machine's view of the proxy: compiling into the live state, the listeners, and the
/// on-demand lookups.
struct ProxyPort<'a> {
    cfg: &'a XdsConfig,
    state: &'a State,
    od: &'a OnDemand,
}

impl ProxyPort<'_> {
    fn compile_context(&self, version: String) -> CompileContext<'_> {
        CompileContext {
            settings: &self.state.settings,
            metrics: &self.state.metrics,
            resilience: &self.state.resilience,
            authz: &self.state.authz,
            policies_selected: true,
            tls: self.state.tls(),
            workload: Some((self.cfg.workload.as_str(), self.cfg.namespace.as_str())),
            version,
        }
    }
}

impl Port for ProxyPort<'_> {
    fn install(
        &mut self,
        mesh: &MeshFile,
        version: String,
    ) -> Result<Vec<(String, SnapshotError)>, SnapshotError> {
        let prev = self.state.snapshot();
        let cx = self.compile_context(version);
        let (snap, skipped) = Snapshot::compile_lenient(mesh, &cx, Some(&prev))?;
        debug!(version = %snap.version(), "applying config from the control plane");
        self.state.install(snap);
        self.state.metrics.reload(ReloadResult::Ok);
        Ok(skipped)
    }

    fn update_endpoints(
        &mut self,
        mesh: &MeshFile,
        changed: &[String],
        version: String,
    ) -> Result<bool, SnapshotError> {
        let snap = self.state.snapshot();
        let cx = self.compile_context(version);
        let done = snap.update_endpoints(mesh, changed, &cx)?;
        if done {
            debug!(services = ?changed, version = %snap.version(), "endpoints updated in place");
            self.state.metrics.reload(ReloadResult::Ok);
        }
        Ok(done)
    }

    fn own_listener(&self, addr: SocketAddr) -> Option<&'static str> {
        let bound = self.state.bound()?;
        if bound.is_outbound(addr) {
            Some("outbound")
        } else if addr == bound.admin {
            Some("admin")
        } else {
            None
        }
    }

    fn refused(&mut self, message: &str) {
        self.state.reject(message.to_owned());
        self.state.metrics.reload(ReloadResult::Failed);
    }

    fn take_usage(&mut self) -> Vec<(String, bool)> {
        self.state
            .snapshot()
            .services
            .iter()
            .map(|svc| {
                (
                    skiff_api::resource::resource_name(&svc.namespace, &svc.name),
                    svc.used.swap(false, std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect()
    }

    fn pending_lookups(&self) -> Vec<String> {
        self.od.pending()
    }

    fn answer(&mut self, alias: &str, answer: Answer) {
        self.od.answer(alias, answer);
    }

    fn forget(&mut self, aliases: &[String]) {
        self.od.forget(aliases);
    }

    fn sweep_missing(&mut self) -> Vec<String> {
        self.od.sweep_missing()
    }

    fn lookups_settled(&mut self) {
        self.od.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(status: tonic::Status) -> Result<(), XdsError> {
        Err(XdsError::Stream(status))
    }

    #[test]
    fn a_stopping_control_plane_is_a_closed_stream() {
        let ended = Ok(());
        assert_eq!(StreamEnd::of(&ended), StreamEnd::Closed);
        assert_eq!(
            StreamEnd::Closed.reason(&ended),
            "ended by the control plane"
        );

        let ended = stream(tonic::Status::unavailable("control plane shutting down"));
        assert_eq!(StreamEnd::of(&ended), StreamEnd::Closed);
        assert_eq!(
            StreamEnd::Closed.reason(&ended),
            "unavailable: control plane shutting down"
        );
    }

    #[test]
    fn real_errors_stay_failures() {
        let protocol = stream(tonic::Status::internal(
            "h2 protocol error: frame with invalid size",
        ));
        assert_eq!(StreamEnd::of(&protocol), StreamEnd::Failed);
        assert!(
            StreamEnd::Failed
                .reason(&protocol)
                .contains("frame with invalid size")
        );
        // A reset this side's library made is no close by the control plane.
        let local = stream(tonic::Status::from_error(Box::new(h2::Error::from(
            h2::Reason::NO_ERROR,
        ))));
        assert_eq!(StreamEnd::of(&local), StreamEnd::Failed);
        let refused = stream(tonic::Status::not_found("unknown workload default/x"));
        assert_eq!(StreamEnd::of(&refused), StreamEnd::Failed);
        assert_eq!(
            StreamEnd::of(&Err(XdsError::RequestsClosed)),
            StreamEnd::Failed
        );
    }
}
