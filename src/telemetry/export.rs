//! Span export: a bounded queue the request path copies finished (already encoded) spans into
//! without waiting, grouped into batches as they arrive (the `OTEL_BSP_*` settings), and one
//! task on the proxy's runtime that sends each batch as an OTLP/gRPC `TraceService/Export`
//! call. Owns tracing's metric families.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::{
    sync::{Notify, oneshot},
    task::JoinHandle,
    time::Instant,
};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::{Channel, Endpoint},
};
use tracing::{debug, info, warn};

use super::otlp::{self, Envelope};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Where spans go and how they are batched; resolved once at start from `OTEL_*` variables.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportSettings {
    /// The OTLP/gRPC collector, e.g. `http://jaeger:4317`.
    pub endpoint: String,
    /// Resource attributes, in order; a later key replaces an earlier one.
    pub resource: Vec<(String, String)>,
    /// `OTEL_BSP_SCHEDULE_DELAY`: the longest a finished span waits for its batch.
    pub schedule_delay: Duration,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans waiting beyond this are dropped.
    pub max_queue: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`.
    pub max_batch: usize,
    /// `OTEL_BSP_EXPORT_TIMEOUT`: one batch's export, retries included.
    pub export_timeout: Duration,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`: one export call, connecting included.
    pub otlp_timeout: Duration,
}

impl ExportSettings {
    pub fn new(endpoint: String) -> Self {
        ExportSettings {
            endpoint,
            resource: Vec::new(),
            schedule_delay: Duration::from_millis(5000),
            max_queue: 2048,
            max_batch: 512,
            export_timeout: Duration::from_millis(30_000),
            otlp_timeout: Duration::from_millis(10_000),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
}

/// Tracing's own families, registered whether or not tracing is on.
#[derive(Clone, Debug, Default)]
pub struct TraceMetrics {
    exported: Counter,
    dropped: Family<DropLabels, Counter>,
    export_errors: Counter,
}

impl TraceMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = TraceMetrics::default();
        reg.register(
            "skiff_trace_spans_exported",
            "Spans the collector accepted",
            m.exported.clone(),
        );
        reg.register(
            "skiff_trace_spans_dropped",
            "Spans dropped: the export queue was full (queue-full) or their batch failed \
             (export-failed)",
            m.dropped.clone(),
        );
        reg.register(
            "skiff_trace_export_errors",
            "Batches the collector did not accept in time",
            m.export_errors.clone(),
        );
        m
    }

    fn dropped(&self, reason: &'static str, n: usize) {
        self.dropped
            .get_or_create(&DropLabels { reason })
            .inc_by(n as u64);
    }
}

/// Bytes of a typical encoded HTTP span with its attributes, to size a batch's buffer.
const TYPICAL_SPAN: usize = 512;

/// Spans waiting for export, already grouped into batches of at most `max_batch`.
#[derive(Debug, Default)]
struct Pending {
    /// Oldest first; only the last one may still be filling.
    batches: VecDeque<Batch>,
    /// Spans in `batches`.
    queued: usize,
}

/// Encoded spans as `ScopeSpans.spans` entries ([`otlp::put_span`]), ready for one request.
#[derive(Debug, Default)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub spans: usize,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    /// A batch filled up: the exporter need not wait for its timer.
    filled: Notify,
    max_queue: usize,
    max_batch: usize,
    metrics: TraceMetrics,
}

impl Shared {
    /// Nothing panics while the lock is held, so a poisoned lock still holds whole batches.
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The request path's end of the export queue: pushing copies the span under a short lock
/// (never held across an await) and never waits; the exporter is woken once per full batch,
/// not per span.
#[derive(Clone, Debug)]
pub struct SpanQueue {
    shared: Arc<Shared>,
}

impl SpanQueue {
    /// Queues one encoded `Span` body; a full queue drops it and counts the drop.
    pub fn push(&self, span: &[u8]) {
        let shared = &*self.shared;
        let filled = {
            let mut p = shared.lock();
            if p.queued >= shared.max_queue {
                drop(p);
                shared.metrics.dropped("queue-full", 1);
                return;
            }
            let room = p.batches.back().is_some_and(|b| b.spans < shared.max_batch);
            if !room {
                // A full batch's worth of typical spans: it seldom grows.
                let bytes = Vec::with_capacity(shared.max_batch.saturating_mul(TYPICAL_SPAN));
                p.batches.push_back(Batch { bytes, spans: 0 });
            }
            p.queued += 1;
            let Some(batch) = p.batches.back_mut() else {
                return;
            };
            otlp::put_span(&mut batch.bytes, span);
            batch.spans += 1;
            batch.spans == shared.max_batch
        };
        if filled {
            shared.filled.notify_one();
        }
    }

    /// A queue holding at most `cap` spans in batches of `max_batch`, and its exporting end
    /// (the batch task's, or a test's or benchmark's).
    pub fn bounded(cap: usize, max_batch: usize, metrics: TraceMetrics) -> (SpanQueue, Drain) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            filled: Notify::new(),
            max_queue: cap.max(1),
            max_batch: max_batch.clamp(1, cap.max(1)),
            metrics,
        });
        (
            SpanQueue {
                shared: shared.clone(),
            },
            Drain { shared },
        )
    }
}

/// The exporting end of a [`SpanQueue`].
#[derive(Debug)]
pub struct Drain {
    shared: Arc<Shared>,
}

impl Drain {
    /// The oldest batch: only a full one unless `any`.
    pub fn take(&self, any: bool) -> Option<Batch> {
        let mut p = self.shared.lock();
        let front = p.batches.front()?;
        if !any && front.spans < self.shared.max_batch {
            return None;
        }
        let batch = p.batches.pop_front()?;
        p.queued -= batch.spans;
        Some(batch)
    }

    /// Spans in a full batch.
    pub fn batch_size(&self) -> usize {
        self.shared.max_batch
    }

    /// Resolves once a batch has filled since the last call (a fill while nobody waited
    /// counts).
    pub async fn filled(&self) {
        self.shared.filled.notified().await;
    }
}

/// Stops the export task: what is queued is sent once more, within a bounded wait.
pub struct ExportHandle {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ExportHandle {
    pub async fn shutdown(mut self, wait: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(wait, &mut self.task).await.is_err() {
            self.task.abort();
            debug!("span export did not finish before exit");
        }
    }
}

/// Starts the batch task (inside the runtime: the channel spawns a task). The collector is
/// dialled lazily: one that is down costs failed exports, not a start.
pub fn start(
    settings: &ExportSettings,
    metrics: TraceMetrics,
) -> Result<(SpanQueue, ExportHandle), String> {
    let channel = Endpoint::from_shared(settings.endpoint.clone())
        .map_err(|e| format!("OTLP endpoint {}: {e}", settings.endpoint))?
        .connect_timeout(settings.otlp_timeout)
        .timeout(settings.otlp_timeout)
        .tcp_nodelay(true)
        .connect_lazy();
    let envelope = Envelope::new(&settings.resource, "skiff", env!("CARGO_PKG_VERSION"));
    let (queue, drain) =
        SpanQueue::bounded(settings.max_queue, settings.max_batch, metrics.clone());
    let (stop_tx, stop_rx) = oneshot::channel();
    let batcher = Batcher {
        client: tonic::client::Grpc::new(channel),
        envelope,
        delay: settings.schedule_delay,
        export_timeout: settings.export_timeout,
        metrics,
        failing: false,
    };
    let task = tokio::spawn(batcher.run(drain, stop_rx));
    Ok((
        queue,
        ExportHandle {
            stop: Some(stop_tx),
            task,
        },
    ))
}

struct Batcher {
    client: tonic::client::Grpc<Channel>,
    envelope: Envelope,
    delay: Duration,
    export_timeout: Duration,
    metrics: TraceMetrics,
    /// The last export failed (logged once until one succeeds).
    failing: bool,
}

impl Batcher {
    async fn run(mut self, drain: Drain, mut stop: oneshot::Receiver<()>) {
        let mut due = Instant::now() + self.delay;
        loop {
            let mut any = tokio::select! {
                biased;
                _ = &mut stop => break,
                () = drain.filled() => false,
                () = tokio::time::sleep_until(due) => {
                    due = Instant::now() + self.delay;
                    true
                }
            };
            // Full batches at once; on the timer, the one still filling too, once (spans
            // that arrive during the export wait for the next round).
            while let Some(batch) = drain.take(any) {
                any &= batch.spans == drain.batch_size();
                self.export(batch).await;
            }
        }
        // Shutting down: what is queued goes out once more.
        while let Some(batch) = drain.take(true) {
            self.export(batch).await;
        }
    }

    async fn export(&mut self, batch: Batch) {
        let n = batch.spans;
        let request = Payload {
            head: self.envelope.head(batch.bytes.len()),
            spans: batch.bytes,
        };
        let error = match tokio::time::timeout(self.export_timeout, self.send(request)).await {
            Ok(Ok(())) => {
                self.metrics.exported.inc_by(n as u64);
                if self.failing {
                    info!("span export works again");
                    self.failing = false;
                }
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.export_timeout),
        };
        self.failed(n);
        // Once per outage at warn: a collector that is gone fails every batch.
        if self.failing {
            debug!(%error, spans = n, "span export failed; spans dropped");
        } else {
            warn!(%error, spans = n, "span export failed; spans dropped until it works again");
            self.failing = true;
        }
    }

    /// One `Export` call. The answer's partial-success details are not read: a collector
    /// that rejects spans says so in its own logs.
    async fn send(&mut self, request: Payload) -> Result<(), Status> {
        self.client
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        self.client
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(EXPORT_PATH),
                RawCodec,
            )
            .await
            .map(|_| ())
    }

    fn failed(&self, n: usize) {
        self.metrics.export_errors.inc();
        self.metrics.dropped("export-failed", n);
    }
}

/// An export request already encoded: its head and its batch of spans.
struct Payload {
    head: Vec<u8>,
    spans: Vec<u8>,
}

/// Messages already encoded: sent as they are, answers kept as bytes.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Payload;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Payload;
    type Error = Status;

    fn encode(&mut self, item: Payload, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.head);
        dst.put_slice(&item.spans);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(m: &TraceMetrics) -> String {
        let mut reg = Registry::default();
        reg.register("d", "", m.dropped.clone());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        out
    }

    #[test]
    fn spans_are_grouped_into_batches_and_the_queue_is_bounded() {
        let metrics = TraceMetrics::default();
        let (q, drain) = SpanQueue::bounded(5, 2, metrics.clone());
        for i in 0..7u8 {
            q.push(&[i; 3]);
        }
        assert!(
            scrape(&metrics).contains(r#"d_total{reason="queue-full"} 2"#),
            "two spans beyond the five queued are dropped and counted"
        );
        // Two full batches, then the one still filling only when asked for.
        for expect in [[0u8, 1], [2, 3]] {
            let b = drain.take(false).unwrap();
            assert_eq!(b.spans, 2);
            let mut want = Vec::new();
            for i in expect {
                otlp::put_span(&mut want, &[i; 3]);
            }
            assert_eq!(b.bytes, want);
        }
        assert!(drain.take(false).is_none(), "the last batch is not full");
        let last = drain.take(true).unwrap();
        assert_eq!(last.spans, 1);
        assert!(drain.take(true).is_none());
        // Taken batches free their room: the queue takes spans again.
        q.push(&[9]);
        assert_eq!(drain.take(true).unwrap().spans, 1);
    }

    #[tokio::test]
    async fn a_full_batch_wakes_the_exporter_once() {
        let (q, drain) = SpanQueue::bounded(100, 3, TraceMetrics::default());
        q.push(&[1]);
        q.push(&[2]);
        let early = tokio::time::timeout(Duration::from_millis(20), drain.filled()).await;
        assert!(early.is_err(), "no wake before the batch is full");
        q.push(&[3]);
        // The fill happened while nobody waited: the next wait returns at once.
        drain.filled().await;
        assert_eq!(drain.take(false).unwrap().spans, 3);
    }
}
