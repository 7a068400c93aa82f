//! Trace collectors for the tracing tests: `Collector` is a real OTLP/gRPC server (the
//! `TraceService` Jaeger serves on 4317) that keeps every span it is sent, `StalledCollector`
//! accepts connections and never answers, and `dead_endpoint` names a port nobody listens on.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::{span::SpanKind, status::StatusCode},
};
use tokio::{io::AsyncReadExt, sync::Notify, time::Instant};

use super::upstream::{Task, accept_loop, bind};

/// An attribute value as OTLP typed it (`AnyValue`), reduced to what the proxy sends.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    /// Arrays, maps, bytes: shown, never expected.
    Other(String),
}

impl Attr {
    fn from_any(v: Option<&AnyValue>) -> Attr {
        match v.and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => Attr::Str(s.clone()),
            Some(Value::IntValue(i)) => Attr::Int(*i),
            Some(Value::BoolValue(b)) => Attr::Bool(*b),
            Some(Value::DoubleValue(d)) => Attr::Double(*d),
            other => Attr::Other(format!("{other:?}")),
        }
    }
}

fn attr_map(kvs: &[KeyValue]) -> BTreeMap<String, Attr> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), Attr::from_any(kv.value.as_ref())))
        .collect()
}

/// One span as the collector received it, flattened with its resource and scope.
#[derive(Clone, PartialEq)]
pub struct CollectedSpan {
    /// Attributes of the resource (the proxy) that sent it.
    pub resource: BTreeMap<String, Attr>,
    /// The instrumentation scope's name.
    pub scope: String,
    /// Lowercase hex, 32 digits.
    pub trace_id: String,
    /// Lowercase hex, 16 digits.
    pub span_id: String,
    /// Lowercase hex, 16 digits; empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub kind: SpanKind,
    pub attributes: BTreeMap<String, Attr>,
    pub status: StatusCode,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

impl CollectedSpan {
    pub fn attr(&self, key: &str) -> Option<&Attr> {
        self.attributes.get(key)
    }

    /// A string attribute; `None` when absent or of another type.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.attr(key) {
            Some(Attr::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// An int attribute; `None` when absent or of another type.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attr(key) {
            Some(Attr::Int(i)) => Some(*i),
            _ => None,
        }
    }

    /// A bool attribute; `None` when absent or of another type.
    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.attr(key) {
            Some(Attr::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// A string attribute of the resource.
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        match self.resource.get(key) {
            Some(Attr::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The resource's `service.name`.
    pub fn service_name(&self) -> Option<&str> {
        self.resource_str("service.name")
    }
}

impl fmt::Debug for CollectedSpan {
    /// One span per line-ish, so a failing assert listing many spans stays readable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\n  [{} {:?} {:?} trace={} span={} parent={} status={:?} service={:?} attrs={:?}]",
            self.scope,
            self.name,
            self.kind,
            self.trace_id,
            self.span_id,
            if self.parent_span_id.is_empty() {
                "-"
            } else {
                &self.parent_span_id
            },
            self.status,
            self.service_name(),
            self.attributes,
        )
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
struct Store {
    spans: Mutex<Vec<CollectedSpan>>,
    changed: Notify,
}

impl Store {
    fn take(&self, req: ExportTraceServiceRequest) {
        let mut got = Vec::new();
        for rs in req.resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| attr_map(&r.attributes))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                let scope = ss
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                for span in ss.spans {
                    got.push(CollectedSpan {
                        resource: resource.clone(),
                        scope: scope.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name.clone(),
                        kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                        attributes: attr_map(&span.attributes),
                        status: span
                            .status
                            .as_ref()
                            .and_then(|s| StatusCode::try_from(s.code).ok())
                            .unwrap_or(StatusCode::Unset),
                        start_unix_nano: span.start_time_unix_nano,
                        end_unix_nano: span.end_time_unix_nano,
                    });
                }
            }
        }
        self.spans.lock().expect("collector lock").extend(got);
        self.changed.notify_waiters();
    }
}

struct Service(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A real OTLP/gRPC trace collector on `127.0.0.1:<port>`; stops when dropped.
pub struct Collector {
    addr: SocketAddr,
    store: Arc<Store>,
    _task: Task,
}

impl Collector {
    pub async fn start() -> Collector {
        let listener = bind().await;
        let addr = listener.local_addr().expect("bound address");
        let store = Arc::new(Store::default());
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let svc = TraceServiceServer::new(Service(store.clone()));
        let task = Task(tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await;
        }));
        Collector {
            addr,
            store,
            _task: task,
        }
    }

    /// `http://127.0.0.1:PORT`, the value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.store.spans.lock().expect("collector lock").clone()
    }

    /// The spans of trace `trace_id` received so far.
    pub fn trace(&self, trace_id: &str) -> Vec<CollectedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    /// Waits until `pred` holds for the spans received, or until `limit` passes; returns the
    /// spans seen either way, so the caller's assertions show what did arrive.
    pub async fn wait_for<F>(&self, limit: Duration, pred: F) -> Vec<CollectedSpan>
    where
        F: Fn(&[CollectedSpan]) -> bool,
    {
        let deadline = Instant::now() + limit;
        loop {
            let changed = self.store.changed.notified();
            let spans = self.spans();
            if pred(&spans) || Instant::now() >= deadline {
                return spans;
            }
            // Woken by an export, or polls again shortly (a bounded wait, not a pacing sleep).
            let _ = tokio::time::timeout_at(
                deadline.min(Instant::now() + Duration::from_millis(100)),
                changed,
            )
            .await;
        }
    }

    /// Waits until trace `trace_id` has at least `n` spans (or `limit` passes) and returns its
    /// spans.
    pub async fn wait_trace(
        &self,
        trace_id: &str,
        n: usize,
        limit: Duration,
    ) -> Vec<CollectedSpan> {
        let spans = self
            .wait_for(limit, |all| {
                all.iter().filter(|s| s.trace_id == trace_id).count() >= n
            })
            .await;
        spans
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}

/// A collector that accepts TCP connections and never answers (nor reads the HTTP/2 preface
/// to its end); connections stay open until it is dropped.
pub struct StalledCollector {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    _task: Task,
}

impl StalledCollector {
    pub async fn start() -> StalledCollector {
        let listener = bind().await;
        let addr = listener.local_addr().expect("bound address");
        let connections = Arc::new(AtomicUsize::new(0));
        let task = accept_loop(listener, {
            let connections = connections.clone();
            move |mut stream, _| {
                connections.fetch_add(1, Ordering::SeqCst);
                async move {
                    // Swallow whatever comes and answer nothing, until the peer goes.
                    let mut sink = [0u8; 4096];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                }
            }
        });
        StalledCollector {
            addr,
            connections,
            _task: task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// `http://127.0.0.1:PORT` where nothing listens (bound to learn a free port, then released):
/// a dead collector, connections refused.
pub async fn dead_endpoint() -> String {
    let listener = bind().await;
    let addr = listener.local_addr().expect("bound address");
    drop(listener);
    format!("http://{addr}")
}
