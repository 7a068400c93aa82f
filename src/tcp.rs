//! Opaque L4 forwarding: pick an endpoint of the service's cluster, connect (counted by its
//! breaker's `maxConnections`, connect failures fed to outlier detection), then copy bytes
//! both ways, passing a half-close through. Bytes are counted on the accepted side; each
//! connection may leave one span and one access-log line.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Instant, SystemTime},
};

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::{
    cluster::{self, Cluster},
    resilience::{Failure, Tried},
    telemetry::{
        Direction, Recorder,
        access_log::{self, Entry},
        spans::{Span, SpanKind, TraceCx},
        trace_context,
    },
    tls::Inner,
    upstream::ConnectError,
};

/// How an opaque connection went.
#[derive(Debug, Default)]
pub struct Done {
    pub endpoint: Option<SocketAddr>,
    /// The identity the endpoint proved (mesh TLS), if any.
    pub identity: Option<Arc<str>>,
    /// Bytes from the client to the upstream, and back.
    pub sent: u64,
    pub received: u64,
    /// Why it ended early (a reason token), if it did.
    pub error: Option<&'static str>,
}

/// Forwards `client` to an endpoint of `cluster` until both directions are closed. No
/// retries: bytes may already have gone to the first endpoint.
pub async fn forward<I>(mut client: I, cluster: &Cluster) -> Done
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let members = cluster.members();
    let pick = match members.endpoints.pick(Tried::default()) {
        Ok(p) => p,
        Err(e) => {
            debug!(error = %e, "opaque connection closed");
            return Done {
                error: Some("no-healthy-endpoints"),
                ..Done::default()
            };
        }
    };
    let mut done = Done {
        endpoint: Some(pick.endpoint.addr),
        identity: members.pool(&pick).verified_identity().cloned(),
        ..Done::default()
    };
    let (mut upstream, _counted) = match members
        .pool(&pick)
        .connect(&cluster.breaker, Inner::Opaque)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            done.error = Some(if matches!(e, ConnectError::Overflow(_)) {
                "overflow"
            } else {
                cluster.observe(
                    &members,
                    &pick,
                    cluster::Observed::Failed(Failure::ConnectFailure),
                );
                "connect-failed"
            });
            debug!(error = %e, "opaque connection closed");
            return done;
        }
    };
    cluster.observe(&members, &pick, cluster::Observed::Connected);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((from_client, from_upstream)) => {
            debug!(from_client, from_upstream, "opaque connection closed");
            done.sent = from_client;
            done.received = from_upstream;
        }
        Err(e) => {
            debug!(error = %e, "opaque connection ended with an error");
            done.error = Some("reset");
        }
    }
    done
}

/// An opaque connection being observed: its span (a new trace: TCP carries no context) and
/// its access-log line. Made only when one of them will be written.
pub struct Observed {
    recorder: Arc<Recorder>,
    direction: Direction,
    span: Option<Span>,
    cx: Option<TraceCx>,
    start: Instant,
    started_at: SystemTime,
    peer_identity: Option<Arc<str>>,
}

impl Observed {
    pub fn begin(
        recorder: &Arc<Recorder>,
        direction: Direction,
        sampling: Option<f64>,
        peer_identity: Option<&Arc<str>>,
    ) -> Option<Observed> {
        let cx = recorder.tracer.begin_new(sampling);
        let started_at = SystemTime::now();
        let kind = match direction {
            Direction::Outbound => SpanKind::Client,
            Direction::Inbound => SpanKind::Server,
        };
        let span = cx.and_then(|cx| recorder.tracer.span(&cx, kind, started_at));
        if span.is_none() && !recorder.access_log.is_on() {
            return None;
        }
        Some(Observed {
            recorder: recorder.clone(),
            direction,
            span,
            cx,
            start: Instant::now(),
            started_at,
            peer_identity: peer_identity.cloned(),
        })
    }

    pub fn finish(self, cluster: &Cluster, done: &Done) {
        let peer = match self.direction {
            Direction::Inbound => self.peer_identity.as_ref(),
            Direction::Outbound => done.identity.as_ref(),
        };
        if let Some(mut span) = self.span {
            span.set_name_joined("tcp", " ", &cluster.name);
            span.set("network.transport", "tcp");
            span.set("skiff.service", &cluster.name);
            if let Some(e) = done.endpoint {
                span.set("skiff.endpoint", e);
            }
            #[allow(clippy::cast_possible_wrap)]
            {
                span.set("skiff.bytes.sent", done.sent as i64);
                span.set("skiff.bytes.received", done.received as i64);
            }
            if let Some(p) = peer {
                span.set("skiff.peer.identity", p);
            }
            if let Some(e) = done.error {
                span.set("skiff.reason", e);
                span.fail(e);
            }
            self.recorder.tracer.finish(span);
        }
        if self.recorder.access_log.is_on() {
            self.recorder.access_log.write(&Entry {
                time: access_log::rfc3339(self.started_at),
                direction: match self.direction {
                    Direction::Inbound => "inbound",
                    Direction::Outbound => "outbound",
                },
                protocol: "TCP",
                reason: done.error,
                duration_ms: self.start.elapsed().as_secs_f64() * 1000.0,
                service: Some(&cluster.name),
                endpoint: done.endpoint.map(|e| e.to_string()),
                attempts: u32::from(done.endpoint.is_some()),
                peer_identity: peer.map(|p| &**p),
                bytes_sent: Some(done.sent),
                bytes_received: Some(done.received),
                trace_id: self.cx.map(|c| trace_context::hex(&c.trace_id.0)),
                span_id: self.cx.map(|c| trace_context::hex(&c.span_id.0)),
                ..Entry::default()
            });
        }
    }
}
