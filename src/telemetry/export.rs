//! Span export: a bounded queue the request path pushes finished spans into without waiting,
//! and one task on the proxy's runtime that batches them (the `OTEL_BSP_*` settings) and sends
//! each batch through `opentelemetry-otlp`'s gRPC exporter. Owns tracing's metric families.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanExporter as _},
};
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
use tracing::{debug, info, warn};

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
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`: one export call.
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
    tx: mpsc::Sender<SpanData>,
    metrics: TraceMetrics,
}

impl SpanQueue {
    pub fn push(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            self.metrics.dropped("queue-full", 1);
        }
    }

    /// A queue of `cap` spans and its receiving end (the batch task's, or a benchmark's).
    pub fn bounded(cap: usize, metrics: TraceMetrics) -> (SpanQueue, mpsc::Receiver<SpanData>) {
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

/// Builds the exporter (inside the runtime: its channel spawns a task) and starts the batch
/// task. The collector is dialled lazily: one that is down costs failed exports, not a start.
pub fn start(
    settings: &ExportSettings,
    metrics: TraceMetrics,
) -> Result<(SpanQueue, ExportHandle), String> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(settings.endpoint.clone())
        .with_timeout(settings.otlp_timeout)
        .build()
        .map_err(|e| format!("OTLP exporter for {}: {e}", settings.endpoint))?;
    exporter.set_resource(&resource(&settings.resource));
    let (queue, rx) = SpanQueue::bounded(settings.max_queue, metrics.clone());
    let (stop_tx, stop_rx) = oneshot::channel();
    let batcher = Batcher {
        exporter,
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

fn resource(attrs: &[(String, String)]) -> Resource {
    // Later keys win: the builder keeps the last value of a key.
    Resource::builder_empty()
        .with_attributes(
            attrs
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build()
}

struct Batcher {
    exporter: opentelemetry_otlp::SpanExporter,
    max_batch: usize,
    delay: Duration,
    export_timeout: Duration,
    metrics: TraceMetrics,
    /// The last export failed (logged once until one succeeds).
    failing: bool,
}

impl Batcher {
    async fn run(mut self, mut rx: mpsc::Receiver<SpanData>, mut stop: oneshot::Receiver<()>) {
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

    async fn export(&mut self, batch: &mut Vec<SpanData>) {
        let n = batch.len();
        let spans = std::mem::replace(batch, Vec::with_capacity(self.max_batch));
        let error =
            match tokio::time::timeout(self.export_timeout, self.exporter.export(spans)).await {
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

    fn failed(&self, n: usize) {
        self.metrics.export_errors.inc();
        self.metrics.dropped("export-failed", n);
    }
}
