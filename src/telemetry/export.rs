//! Span export: a bounded queue the request path pushes finished (already encoded) spans into
//! without waiting, and one task on the proxy's runtime that batches them (the `OTEL_BSP_*`
//! settings) and sends each batch as an OTLP/gRPC `TraceService/Export` call. Owns tracing's
//! metric families.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::{Channel, Endpoint},
};
use tracing::{debug, info, warn};

use super::otlp::Envelope;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// One finished span, encoded as an OTLP `Span` message.
pub type EncodedSpan = Vec<u8>;

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

/// The request path's end of the export queue: pushing never waits.
#[derive(Clone, Debug)]
pub struct SpanQueue {
    tx: mpsc::Sender<EncodedSpan>,
    metrics: TraceMetrics,
}

impl SpanQueue {
    pub fn push(&self, span: EncodedSpan) {
        if self.tx.try_send(span).is_err() {
            self.metrics.dropped("queue-full", 1);
        }
    }

    /// A queue of `cap` spans and its receiving end (the batch task's, or a benchmark's).
    pub fn bounded(cap: usize, metrics: TraceMetrics) -> (SpanQueue, mpsc::Receiver<EncodedSpan>) {
        let (tx, rx) = mpsc::channel(cap.max(1));
        (SpanQueue { tx, metrics }, rx)
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
    let (queue, rx) = SpanQueue::bounded(settings.max_queue, metrics.clone());
    let (stop_tx, stop_rx) = oneshot::channel();
    let batcher = Batcher {
        client: tonic::client::Grpc::new(channel),
        envelope,
        max_batch: settings.max_batch.clamp(1, settings.max_queue.max(1)),
        delay: settings.schedule_delay,
        export_timeout: settings.export_timeout,
        metrics,
        failing: false,
    };
    let task = tokio::spawn(batcher.run(rx, stop_rx));
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
    max_batch: usize,
    delay: Duration,
    export_timeout: Duration,
    metrics: TraceMetrics,
    /// The last export failed (logged once until one succeeds).
    failing: bool,
}

impl Batcher {
    async fn run(mut self, mut rx: mpsc::Receiver<EncodedSpan>, mut stop: oneshot::Receiver<()>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut due = Instant::now() + self.delay;
        loop {
            let room = self.max_batch - batch.len();
            tokio::select! {
                biased;
                _ = &mut stop => break,
                n = rx.recv_many(&mut batch, room) => {
                    if n == 0 {
                        break;
                    }
                    if batch.len() >= self.max_batch {
                        self.export(&mut batch).await;
                        due = Instant::now() + self.delay;
                    }
                }
                () = tokio::time::sleep_until(due) => {
                    if !batch.is_empty() {
                        self.export(&mut batch).await;
                    }
                    due = Instant::now() + self.delay;
                }
            }
        }
        // Shutting down: what is queued goes out once more.
        rx.close();
        while let Some(span) = rx.recv().await {
            batch.push(span);
            if batch.len() >= self.max_batch {
                self.export(&mut batch).await;
            }
        }
        if !batch.is_empty() {
            self.export(&mut batch).await;
        }
    }

    async fn export(&mut self, batch: &mut Vec<EncodedSpan>) {
        let n = batch.len();
        let request = Bytes::from(self.envelope.request(batch));
        batch.clear();
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
    async fn send(&mut self, request: Bytes) -> Result<(), Status> {
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

/// Messages already encoded: sent as they are, answers kept as bytes.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
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
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
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
