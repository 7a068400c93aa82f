//! Spans on the request path: the sampling decision (parent-based, a ratio for new traces),
//! the trace context a hop forwards, and the span record a sampled hop fills and hands to the
//! exporter's queue. An unsampled request costs a decision and an id, never a span.

use std::{borrow::Cow, cell::RefCell, time::SystemTime};

use http::{HeaderMap, HeaderValue};
use rand::RngExt;

pub use super::otlp::Kind as SpanKind;
use super::{
    export::SpanQueue,
    otlp::{self, AttrValue},
    trace_context::{
        self, B3, SpanId, TRACEPARENT, TRACESTATE, TraceId, X_B3_PARENTSPANID, X_B3_SAMPLED,
        X_B3_SPANID, X_B3_TRACEID,
    },
};

/// Where a request's trace context came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A valid W3C `traceparent`.
    W3c,
    /// B3 headers (no `traceparent` came).
    B3,
    /// Nothing usable came: a new trace. `invalid`: a `traceparent` came and was not valid.
    New { invalid: bool },
}

/// One hop's place in its trace: the trace, this hop's span and its parent, and the sampling
/// decision. Copied into what the hop forwards and what it logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceCx {
    pub trace_id: TraceId,
    /// This hop's span: the parent of what it forwards.
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub sampled: bool,
    pub origin: Origin,
}

impl TraceCx {
    /// The `traceparent` to forward: this hop's span as the parent.
    pub fn traceparent(&self) -> String {
        trace_context::format_traceparent(self.trace_id, self.span_id, self.sampled)
    }

    /// Writes this hop's context into the headers it forwards: `traceparent` always; an
    /// incoming `tracestate` stays unless the `traceparent` it belonged to was invalid; B3
    /// headers the context came from are rewritten so Zipkin-instrumented apps follow too.
    pub fn inject(&self, headers: &mut HeaderMap) {
        headers.insert(
            TRACEPARENT,
            trace_context::traceparent_value(self.trace_id, self.span_id, self.sampled),
        );
        match self.origin {
            Origin::W3c | Origin::New { invalid: false } => {}
            Origin::New { invalid: true } => {
                headers.remove(TRACESTATE);
            }
            Origin::B3 => self.inject_b3(headers),
        }
    }

    fn inject_b3(&self, headers: &mut HeaderMap) {
        let trace = trace_context::hex(&self.trace_id.0);
        let span = trace_context::hex(&self.span_id.0);
        let flag = if self.sampled { "1" } else { "0" };
        if headers.contains_key(B3) {
            if let Ok(v) = HeaderValue::from_str(&format!("{trace}-{span}-{flag}")) {
                headers.insert(B3, v);
            }
            return;
        }
        let mut set = |name, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        };
        set(X_B3_TRACEID, &trace);
        set(X_B3_SPANID, &span);
        set(X_B3_SAMPLED, flag);
        match self.parent {
            Some(p) => set(X_B3_PARENTSPANID, &trace_context::hex(&p.0)),
            None => {
                headers.remove(X_B3_PARENTSPANID);
            }
        }
    }

    /// A child of this hop (a retry attempt's span) in the same trace.
    pub fn child(&self) -> TraceCx {
        TraceCx {
            span_id: new_span_id(),
            parent: Some(self.span_id),
            ..*self
        }
    }
}

/// The proxy's tracer: off without a collector; on, it decides, and queues finished spans.
pub struct Tracer {
    queue: Option<SpanQueue>,
    /// Where the spans go, for `/config_dump`.
    endpoint: Option<String>,
    /// The ratio for new traces when the mesh file sets none (`OTEL_TRACES_SAMPLER*`).
    default_ratio: f64,
}

impl Tracer {
    /// No collector: no spans, no decisions; trace headers pass through untouched.
    pub fn off() -> Tracer {
        Tracer {
            queue: None,
            endpoint: None,
            default_ratio: 0.0,
        }
    }

    pub fn new(queue: SpanQueue, default_ratio: f64, endpoint: &str) -> Tracer {
        Tracer {
            queue: Some(queue),
            endpoint: Some(endpoint.to_owned()),
            default_ratio,
        }
    }

    pub fn is_on(&self) -> bool {
        self.queue.is_some()
    }

    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    pub fn default_ratio(&self) -> f64 {
        self.default_ratio
    }

    /// The context of a request arriving with `headers`: a child of what came, or a new trace
    /// sampled at `mesh_ratio` (the mesh file's, which wins) or the default. `None`: off.
    pub fn begin(&self, headers: &HeaderMap, mesh_ratio: Option<f64>) -> Option<TraceCx> {
        self.queue.as_ref()?;
        let (parent, source) = trace_context::extract_with_source(headers);
        let origin = match (parent, source) {
            (Some(_), trace_context::Source::W3c) => Origin::W3c,
            (Some(_), _) => Origin::B3,
            (None, source) => Origin::New {
                invalid: source == trace_context::Source::W3c,
            },
        };
        Some(match parent {
            Some(p) => TraceCx {
                trace_id: p.trace_id,
                span_id: new_span_id(),
                parent: Some(p.span_id),
                sampled: p.sampled,
                origin,
            },
            None => self.new_trace(mesh_ratio, origin),
        })
    }

    /// A new trace (a TCP connection, which carries no headers). `None`: off.
    pub fn begin_new(&self, mesh_ratio: Option<f64>) -> Option<TraceCx> {
        self.queue.as_ref()?;
        Some(self.new_trace(mesh_ratio, Origin::New { invalid: false }))
    }

    fn new_trace(&self, mesh_ratio: Option<f64>, origin: Origin) -> TraceCx {
        let trace_id = new_trace_id();
        TraceCx {
            trace_id,
            span_id: new_span_id(),
            parent: None,
            sampled: ratio_samples(mesh_ratio.unwrap_or(self.default_ratio), trace_id),
            origin,
        }
    }

    /// A span for `cx`, when it is sampled and tracing is on.
    pub fn span(&self, cx: &TraceCx, kind: SpanKind, start: SystemTime) -> Option<Span> {
        (cx.sampled && self.queue.is_some()).then(|| Span {
            cx: *cx,
            kind,
            start,
            buf: spare_buffer(),
            error: None,
        })
    }

    /// Ends `span` now and queues it; a full queue drops it (counted), never waits.
    pub fn finish(&self, span: Span) {
        self.finish_at(span, SystemTime::now());
    }

    pub fn finish_at(&self, span: Span, end: SystemTime) {
        if let Some(q) = &self.queue {
            let buf = span.encode(end);
            q.push(&buf);
            recycle_buffer(buf);
        }
    }
}

/// Trace-id-ratio sampling: the same trace id gets the same answer on every proxy.
fn ratio_samples(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id.0[8..]);
    let low = u64::from_be_bytes(low) >> 1;
    // The ratio scaled over 63 bits; exact enough for any ratio a mesh file can state.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    low < bound
}

thread_local! {
    /// Per-thread id generator state (wyrand), seeded once from the OS-seeded thread RNG. Ids
    /// must be unique and unpredictable enough to not collide, not secret; this costs a few
    /// instructions per id where the seeded RNG costs hundreds.
    static IDS: std::cell::Cell<u64> = std::cell::Cell::new(rand::rng().random());
}

fn next_u64() -> u64 {
    IDS.with(|state| {
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        #[allow(clippy::cast_possible_truncation)]
        let folded = (t >> 64) as u64 ^ t as u64;
        folded
    })
}

fn new_trace_id() -> TraceId {
    loop {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&next_u64().to_be_bytes());
        id[8..].copy_from_slice(&next_u64().to_be_bytes());
        if id != [0; 16] {
            return TraceId(id);
        }
    }
}

pub fn new_span_id() -> SpanId {
    loop {
        let id = next_u64().to_be_bytes();
        if id != [0; 8] {
            return SpanId(id);
        }
    }
}

thread_local! {
    /// Span buffers of finished spans (their bytes already copied into the export queue),
    /// reused by the next spans on this thread instead of allocating.
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Buffers kept per thread; a span's is ~400 bytes.
const SPARE_PER_THREAD: usize = 64;
/// A buffer grown beyond this (an unusually large span) is freed, not kept.
const SPARE_MAX_CAPACITY: usize = 4096;

fn spare_buffer() -> Vec<u8> {
    SPARE
        .try_with(|s| s.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(512))
}

fn recycle_buffer(mut buf: Vec<u8>) {
    if buf.capacity() > SPARE_MAX_CAPACITY {
        return;
    }
    buf.clear();
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARE_PER_THREAD {
            s.push(buf);
        }
    });
}

/// A sampled hop's span while it is open: its name and attributes are encoded as they are
/// set, the rest of its fields when it ends.
pub struct Span {
    pub cx: TraceCx,
    kind: SpanKind,
    start: SystemTime,
    /// The OTLP `Span` message being written (protobuf fields may come in any order).
    buf: Vec<u8>,
    /// Set: the span ends in error with this description.
    error: Option<Cow<'static, str>>,
}

impl Span {
    /// Names the span; set it once.
    pub fn set_name(&mut self, name: &str) {
        otlp::put_name(&mut self.buf, &[name]);
    }

    /// Names the span `first` `sep` `second`, without joining them into a string first.
    pub fn set_name_joined(&mut self, first: &str, sep: &str, second: &str) {
        otlp::put_name(&mut self.buf, &[first, sep, second]);
    }

    pub fn set<'a>(&mut self, key: &str, value: impl Into<AttrValue<'a>>) {
        otlp::put_attribute(&mut self.buf, 9, key, value.into());
    }

    /// Marks the span failed: `error.type` (once) and an error status.
    pub fn fail(&mut self, error_type: impl Into<Cow<'static, str>>) {
        if self.error.is_none() {
            let e: Cow<'static, str> = error_type.into();
            self.set("error.type", &*e);
            self.error = Some(e);
        }
    }

    /// The span as an OTLP `Span` message, ended at `end`: its fields appended to the name
    /// and attributes already written.
    fn encode(self, end: SystemTime) -> Vec<u8> {
        let nanos = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        };
        let start = nanos(self.start);
        let mut buf = self.buf;
        otlp::finish_span(
            &mut buf,
            &otlp::SpanFields {
                trace_id: &self.cx.trace_id.0,
                span_id: &self.cx.span_id.0,
                parent: self.cx.parent.as_ref().map(|p| &p.0),
                name: "",
                kind: self.kind,
                start_unix_nanos: start,
                end_unix_nanos: nanos(end).max(start),
                attributes: &[],
                error: self.error.as_deref(),
            },
        );
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::export::Drain;

    fn with_traceparent(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("traceparent", value.parse().unwrap());
        h
    }

    fn queue() -> (SpanQueue, Drain) {
        SpanQueue::bounded(8, 8, super::super::export::TraceMetrics::default())
    }

    #[test]
    fn off_decides_nothing() {
        let t = Tracer::off();
        let h = with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        assert!(t.begin(&h, Some(1.0)).is_none());
        assert!(t.begin_new(Some(1.0)).is_none());
    }

    #[test]
    fn incoming_context_is_the_parent_and_its_flag_wins() {
        let (q, _rx) = queue();
        let t = Tracer::new(q, 1.0, "http://collector:4317");
        let h = with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
        let cx = t.begin(&h, Some(1.0)).unwrap();
        assert!(!cx.sampled, "parent-based: the caller's decision wins");
        assert_eq!(
            cx.parent.unwrap().0,
            [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]
        );
        assert_ne!(cx.span_id, cx.parent.unwrap());
        assert_eq!(cx.origin, Origin::W3c);
        let tp = cx.traceparent();
        assert!(tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
        assert!(tp.ends_with("-00"));
    }

    #[test]
    fn invalid_traceparent_starts_a_new_trace() {
        let (q, _rx) = queue();
        let t = Tracer::new(q, 0.0, "http://collector:4317");
        let h = with_traceparent("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01");
        let cx = t.begin(&h, None).unwrap();
        assert_eq!(cx.origin, Origin::New { invalid: true });
        assert!(cx.parent.is_none());
        assert!(!cx.sampled);
    }

    #[test]
    fn mesh_ratio_wins_over_the_default() {
        let (q, _rx) = queue();
        let t = Tracer::new(q, 1.0, "http://collector:4317");
        let h = HeaderMap::new();
        assert!(!t.begin(&h, Some(0.0)).unwrap().sampled);
        assert!(t.begin(&h, None).unwrap().sampled);
    }

    #[test]
    fn ratio_is_by_trace_id() {
        let mut id = [0u8; 16];
        id[8] = 0x10; // the low half is 1/16 of its range
        assert!(ratio_samples(0.07, TraceId(id)));
        assert!(!ratio_samples(0.06, TraceId(id)));
        assert!(!ratio_samples(f64::NAN, TraceId(id)));
        let hits = (0..20_000)
            .filter(|_| ratio_samples(0.1, new_trace_id()))
            .count();
        assert!((1_500..2_500).contains(&hits), "{hits}");
    }

    #[test]
    fn a_finished_span_carries_its_context_and_error() {
        let (q, drain) = queue();
        let t = Tracer::new(q, 1.0, "http://collector:4317");
        let cx = t.begin_new(None).unwrap();
        let mut span = t.span(&cx, SpanKind::Client, SystemTime::now()).unwrap();
        span.set_name("GET reviews");
        span.set("http.response.status_code", 504_i64);
        span.fail("timeout");
        span.fail("ignored");
        t.finish(span);
        let batch = drain.take(true).unwrap();
        assert_eq!(batch.spans, 1);
        let spans = <opentelemetry_proto::tonic::trace::v1::ScopeSpans as prost::Message>::decode(
            batch.bytes.as_slice(),
        )
        .unwrap()
        .spans;
        let data = spans.into_iter().next().unwrap();
        assert_eq!(data.name, "GET reviews");
        assert_eq!(data.trace_id, cx.trace_id.0.to_vec());
        assert_eq!(data.kind, SpanKind::Client as i32);
        assert_eq!(data.status.unwrap().message, "timeout");
        assert_eq!(
            data.attributes
                .iter()
                .filter(|kv| kv.key == "error.type")
                .count(),
            1
        );
    }

    #[test]
    fn injection_keeps_tracestate_and_follows_b3() {
        let (q, _rx) = queue();
        let t = Tracer::new(q, 1.0, "http://collector:4317");
        let mut h = with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        h.insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
        let cx = t.begin(&h, None).unwrap();
        cx.inject(&mut h);
        assert_eq!(h["traceparent"], cx.traceparent().as_str());
        assert_eq!(h["tracestate"], "congo=t61rcWkgMzE");

        let mut bad = HeaderMap::new();
        bad.insert("traceparent", "00-xyz".parse().unwrap());
        bad.insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
        let cx = t.begin(&bad, None).unwrap();
        cx.inject(&mut bad);
        assert!(
            !bad.contains_key("tracestate"),
            "it belonged to the invalid parent"
        );

        let mut b3 = HeaderMap::new();
        b3.insert("x-b3-traceid", "463ac35c9f6413ad".parse().unwrap());
        b3.insert("x-b3-spanid", "a2fb4a1d1a96d312".parse().unwrap());
        b3.insert("x-b3-sampled", "1".parse().unwrap());
        let cx = t.begin(&b3, None).unwrap();
        assert_eq!(cx.origin, Origin::B3);
        cx.inject(&mut b3);
        assert_eq!(b3["x-b3-traceid"], "0000000000000000463ac35c9f6413ad");
        assert_eq!(b3["x-b3-parentspanid"], "a2fb4a1d1a96d312");
        assert_eq!(
            b3["x-b3-spanid"],
            trace_context::hex(&cx.span_id.0).as_str()
        );
        assert!(b3.contains_key("traceparent"));
    }

    #[test]
    fn ids_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100_000 {
            assert!(seen.insert(new_span_id()));
        }
        assert_ne!(new_trace_id(), new_trace_id());
    }

    #[test]
    fn unsampled_gets_no_span() {
        let (q, _rx) = queue();
        let t = Tracer::new(q, 0.0, "http://collector:4317");
        let cx = t.begin_new(None).unwrap();
        assert!(t.span(&cx, SpanKind::Server, SystemTime::now()).is_none());
    }
}
