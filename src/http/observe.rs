//! What a request leaves behind: its hop span (sampled requests), one span per attempt when it
//! was retried, and its access-log line (when on). Gathered as the request goes and finished
//! when the response body ends or is dropped, so a stream's span covers the stream.

use std::{
    borrow::Cow,
    net::SocketAddr,
    sync::Arc,
    time::{Instant, SystemTime},
};

use http::{HeaderMap, HeaderValue, Method, Response, request::Parts};

use super::{ProxyBody, Version, respond::SKIFF_REASON};
use crate::telemetry::{
    Direction, Recorder,
    access_log::{self, Entry},
    spans::{Span, SpanKind, TraceCx},
    trace_context,
};

const GRPC_STATUS: &str = "grpc-status";

/// What forwarding learned about a request, for its span and log line. Cheap when nothing
/// observes the request: every field stays empty.
#[derive(Default)]
pub struct Hop {
    /// The context the upstream request carries (`traceparent`), when tracing is on.
    pub trace: Option<TraceCx>,
    /// Something records this request: keep the details below.
    pub observed: bool,
    pub service: Option<Arc<str>>,
    pub endpoint: Option<SocketAddr>,
    /// The identity the endpoint proves over mesh TLS (`None` in plaintext).
    pub identity: Option<Arc<str>>,
    pub attempts: u32,
    pub request_id: Option<HeaderValue>,
    /// Each attempt, kept for a sampled request (spans for a retried one).
    pub attempt_log: Option<AttemptLog>,
}

impl Hop {
    pub fn new(trace: Option<TraceCx>, observed: bool) -> Hop {
        let sampled = trace.is_some_and(|t| t.sampled);
        Hop {
            trace,
            observed,
            attempt_log: sampled.then(AttemptLog::default),
            ..Hop::default()
        }
    }
}

/// One attempt of a request, as its span shows it.
pub struct AttemptRecord {
    pub n: u32,
    pub start: SystemTime,
    pub end: SystemTime,
    pub endpoint: Option<SocketAddr>,
    pub status: Option<u16>,
    /// The reason token of a failed attempt.
    pub error: Option<&'static str>,
}

/// The attempts of a sampled request. The first is kept inline: most requests make one, and
/// then the log allocates nothing.
#[derive(Default)]
pub struct AttemptLog {
    first: Option<AttemptRecord>,
    more: Vec<AttemptRecord>,
}

impl AttemptLog {
    pub fn push(&mut self, attempt: AttemptRecord) {
        if self.first.is_none() {
            self.first = Some(attempt);
        } else {
            self.more.push(attempt);
        }
    }

    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn into_records(self) -> impl Iterator<Item = AttemptRecord> {
        self.first.into_iter().chain(self.more)
    }
}

/// A request being observed: boxed, and only made when a span or a log line will be written.
pub struct Exchange {
    recorder: Arc<Recorder>,
    direction: Direction,
    span: Option<Span>,
    log: bool,
    trace: Option<TraceCx>,
    start: Instant,
    started_at: SystemTime,
    method: Method,
    /// The request target and `Host`, kept by reference count (no copy of their text).
    uri: http::Uri,
    host: Option<HeaderValue>,
    version: Version,
    grpc: bool,
    route: Option<Arc<str>>,
    peer_identity: Option<Arc<str>>,
    /// Inbound: the workload this sidecar serves.
    workload: Option<Arc<str>>,
    hop: Hop,
    status: Option<u16>,
    reason: Option<HeaderValue>,
    grpc_status: Option<u32>,
    /// The response body ended (or there was none to stream); dropped before: cancelled.
    ended: bool,
    body_failed: bool,
}

impl Exchange {
    /// `None` when neither a span nor a log line would come of it (the common, cheap case).
    #[allow(clippy::too_many_arguments)]
    pub fn begin(
        recorder: &Arc<Recorder>,
        trace: Option<TraceCx>,
        direction: Direction,
        parts: &Parts,
        version: Version,
        grpc: bool,
        start: Instant,
    ) -> Option<Box<Exchange>> {
        let log = recorder.access_log.is_on();
        if !log && !trace.is_some_and(|t| t.sampled) {
            return None;
        }
        let started_at = SystemTime::now()
            .checked_sub(start.elapsed())
            .unwrap_or_else(SystemTime::now);
        let kind = match direction {
            Direction::Outbound => SpanKind::Client,
            Direction::Inbound => SpanKind::Server,
        };
        let span = trace.and_then(|cx| recorder.tracer.span(&cx, kind, started_at));
        if span.is_none() && !log {
            return None;
        }
        Some(Box::new(Exchange {
            recorder: recorder.clone(),
            direction,
            span,
            log,
            trace,
            start,
            started_at,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            host: if parts.uri.authority().is_some() {
                None
            } else {
                parts.headers.get(http::header::HOST).cloned()
            },
            version,
            grpc,
            route: None,
            peer_identity: None,
            workload: None,
            hop: Hop::default(),
            status: None,
            reason: None,
            grpc_status: None,
            ended: false,
            body_failed: false,
        }))
    }

    pub fn set_route(&mut self, route: &Arc<str>) {
        self.route = Some(route.clone());
    }

    /// Inbound: who called (the identity it proved) and the workload this sidecar serves.
    pub fn set_inbound(&mut self, peer: Option<&Arc<str>>, workload: Option<&Arc<str>>) {
        self.peer_identity = peer.cloned();
        self.workload = workload.cloned();
    }

    pub fn set_hop(&mut self, hop: Hop) {
        self.hop = hop;
    }

    /// The response head is known: its status, the proxy's reason, a trailers-only status.
    /// Only a response this proxy made gives the reason: one a next hop made is that hop's.
    pub fn respond(&mut self, rsp: &Response<ProxyBody>) {
        self.status = Some(rsp.status().as_u16());
        if matches!(rsp.body(), ProxyBody::Full(_)) {
            self.reason = rsp.headers().get(SKIFF_REASON).cloned();
        }
        if self.grpc {
            self.grpc_status = grpc_status(rsp.headers());
        }
    }

    /// Trailers of a streamed response (gRPC's status).
    pub fn trailers(&mut self, trailers: &HeaderMap) {
        if self.grpc
            && let Some(s) = grpc_status(trailers)
        {
            self.grpc_status = Some(s);
        }
    }

    /// The body was sent in full (`failed`: it broke off with an error).
    pub fn ended(&mut self, failed: bool) {
        self.ended = true;
        self.body_failed = failed;
    }

    /// The request's authority: the target's, else the `Host` header's.
    fn authority(&self) -> Option<&str> {
        self.uri
            .authority()
            .map(http::uri::Authority::as_str)
            .or_else(|| self.host.as_ref().and_then(|h| h.to_str().ok()))
    }

    /// The error type of the whole exchange, if it failed.
    fn error_type(&self) -> Option<Cow<'static, str>> {
        if let Some(r) = self.reason.as_ref().and_then(|r| r.to_str().ok()) {
            return Some(Cow::Owned(r.to_owned()));
        }
        if self.body_failed {
            return Some(Cow::Borrowed("response-incomplete"));
        }
        if !self.ended && self.status.is_some() {
            return Some(Cow::Borrowed("cancelled"));
        }
        if self.grpc
            && let Some(code) = self.grpc_status.filter(|c| *c != 0)
        {
            return Some(Cow::Owned(code.to_string()));
        }
        match self.status {
            Some(s) if s >= 500 => Some(Cow::Owned(s.to_string())),
            None => Some(Cow::Borrowed("no-response")),
            _ => None,
        }
    }

    fn finish(&mut self) {
        let end = SystemTime::now();
        let error = self.error_type();
        if let Some(mut span) = self.span.take() {
            self.fill(&mut span, error.clone());
            let hop_cx = span.cx;
            self.recorder.tracer.finish_at(span, end);
            if self.hop.attempts > 1
                && let Some(log) = self.hop.attempt_log.take()
            {
                self.attempt_spans(&hop_cx, log);
            }
        }
        if self.log {
            self.write_log(end);
        }
    }

    fn fill(&self, span: &mut Span, error: Option<Cow<'static, str>>) {
        let host = self.authority().map(host_of);
        let rpc = if self.grpc {
            rpc_parts(self.uri.path())
        } else {
            None
        };
        // Outbound names the service called; inbound the workload serving it (its cluster is
        // the local app, whatever service name the caller used).
        let (service, named) = match self.direction {
            Direction::Outbound => (self.hop.service.as_ref(), self.hop.service.as_ref()),
            Direction::Inbound => (None, self.workload.as_ref()),
        };
        match (rpc, named) {
            (Some((svc, method)), _) => span.set_name_joined(svc, "/", method),
            (None, named) => {
                let what: &str = named.map_or(host.unwrap_or(""), |s| s);
                span.set_name_joined(self.method.as_str(), " ", what);
            }
        }
        span.set("http.request.method", self.method.as_str());
        span.set("url.path", self.uri.path());
        if let Some(h) = host {
            span.set("server.address", h);
        }
        span.set(
            "network.protocol.version",
            match self.version {
                Version::Http1 => "1.1",
                Version::Http2 => "2",
            },
        );
        if let Some(s) = self.status {
            span.set("http.response.status_code", i64::from(s));
        }
        if let Some(r) = &self.route {
            span.set("skiff.route", r);
        }
        if let Some(s) = service {
            span.set("skiff.service", s);
        }
        if let Some(w) = &self.workload {
            span.set("skiff.workload", w);
        }
        if let Some(e) = self.hop.endpoint {
            span.set("skiff.endpoint", e);
        }
        if self.hop.attempts > 0 {
            span.set("skiff.attempt", i64::from(self.hop.attempts));
        }
        let peer = match self.direction {
            Direction::Inbound => self.peer_identity.as_ref(),
            Direction::Outbound => self.hop.identity.as_ref(),
        };
        if let Some(p) = peer {
            span.set("skiff.peer.identity", p);
        }
        if let Some(r) = self.reason.as_ref().and_then(|r| r.to_str().ok()) {
            span.set("skiff.reason", r);
        }
        if let Some((svc, method)) = rpc {
            span.set("rpc.system", "grpc");
            span.set("rpc.service", svc);
            span.set("rpc.method", method);
            if let Some(code) = self.grpc_status {
                span.set("rpc.grpc.status_code", i64::from(code));
            }
        }
        if let Some(e) = error {
            span.fail(e);
        }
    }

    fn attempt_spans(&self, hop: &TraceCx, log: AttemptLog) {
        let last = log.len();
        for (i, a) in log.into_records().enumerate() {
            let cx = hop.child();
            let Some(mut span) = self.recorder.tracer.span(&cx, SpanKind::Internal, a.start) else {
                return;
            };
            span.set_name(&format!("attempt {}", a.n));
            span.set("skiff.attempt", i64::from(a.n));
            if let Some(e) = a.endpoint {
                span.set("skiff.endpoint", e);
            }
            if let Some(s) = a.status {
                span.set("http.response.status_code", i64::from(s));
                if s >= 500 {
                    span.fail(s.to_string());
                }
            }
            if let Some(e) = a.error {
                span.set("skiff.reason", e);
                span.fail(e);
            }
            span.set("skiff.retried", i + 1 < last);
            self.recorder.tracer.finish_at(span, a.end);
        }
    }

    fn write_log(&self, end: SystemTime) {
        let (trace_id, span_id) = match &self.trace {
            Some(cx) => (
                Some(trace_context::hex(&cx.trace_id.0)),
                Some(trace_context::hex(&cx.span_id.0)),
            ),
            None => (None, None),
        };
        let duration = end
            .duration_since(self.started_at)
            .unwrap_or_else(|_| self.start.elapsed());
        let entry = Entry {
            time: access_log::rfc3339(self.started_at),
            direction: match self.direction {
                Direction::Inbound => "inbound",
                Direction::Outbound => "outbound",
            },
            method: Some(self.method.as_str()),
            authority: self.authority(),
            path: Some(self.uri.path()),
            protocol: match self.version {
                Version::Http1 => "HTTP/1.1",
                Version::Http2 => "HTTP/2",
            },
            status: self.status,
            reason: self.reason.as_ref().and_then(|r| r.to_str().ok()),
            duration_ms: duration.as_secs_f64() * 1000.0,
            route: self.route.as_deref(),
            service: match self.direction {
                Direction::Outbound => self.hop.service.as_deref(),
                Direction::Inbound => self.workload.as_deref(),
            },
            endpoint: self.hop.endpoint.map(|e| e.to_string()),
            attempts: self.hop.attempts,
            peer_identity: match self.direction {
                Direction::Inbound => self.peer_identity.as_deref(),
                Direction::Outbound => self.hop.identity.as_deref(),
            },
            grpc_status: self.grpc_status,
            trace_id,
            span_id,
            request_id: self.hop.request_id.as_ref().and_then(|v| v.to_str().ok()),
            ..Entry::default()
        };
        self.recorder.access_log.write(&entry);
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.finish();
    }
}

/// For the log when tracing is off: the context the request came with, passed on unchanged.
pub fn incoming_context(headers: &HeaderMap) -> Option<TraceCx> {
    trace_context::extract(headers).map(|p| TraceCx {
        trace_id: p.trace_id,
        span_id: p.span_id,
        parent: None,
        sampled: p.sampled,
        origin: crate::telemetry::spans::Origin::W3c,
    })
}

/// The host of an authority, without its port (IPv6 brackets kept).
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |i| &authority[..=i]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// `/pkg.Service/Method` into its service and method.
fn rpc_parts(path: &str) -> Option<(&str, &str)> {
    let (svc, method) = path.strip_prefix('/')?.split_once('/')?;
    (!svc.is_empty() && !method.is_empty() && !method.contains('/')).then_some((svc, method))
}

fn grpc_status(h: &HeaderMap) -> Option<u32> {
    h.get(GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_rpc_names() {
        assert_eq!(host_of("reviews:9080"), "reviews");
        assert_eq!(host_of("reviews"), "reviews");
        assert_eq!(host_of("[::1]:80"), "[::1]");
        assert_eq!(
            rpc_parts("/skiff.demo.Ratings/Get"),
            Some(("skiff.demo.Ratings", "Get"))
        );
        assert_eq!(rpc_parts("/x"), None);
        assert_eq!(rpc_parts("/a/b/c"), None);
    }
}
