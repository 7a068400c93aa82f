//! An OTLP/gRPC trace sink for `benches/trace-load.sh`: serves
//! `opentelemetry.proto.collector.trace.v1.TraceService/Export` (what Jaeger serves on 4317),
//! accepts every batch, counts its spans per `service.name`, and prints the counts when
//! stopped with SIGTERM or Ctrl-C.
//!
//! It stands in for a collector on another machine, so it costs as little CPU as it can: it
//! walks each request's protobuf fields to count the spans and read `service.name`, without
//! decoding the spans themselves (the integration tests' collector decodes everything).
//!
//! ```sh
//! cargo build --release --example otlp-sink
//! ./target/release/examples/otlp-sink 127.0.0.1:4317
//! ```
//!
//! Once bound it prints `otlp-sink listening ADDR` (port 0 picks a free one). On exit:
//! `otlp-sink spans=N exports=M`, then one `otlp-sink service=NAME spans=N` line per service.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::{Buf, BufMut, Bytes};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::{BoxFuture, Context, Poll, Service, http},
    server::{NamedService, UnaryService},
    transport::server::TcpIncoming,
};

/// Largest export request taken; the proxy's batches of 512 spans are far below it.
const MAX_REQUEST_BYTES: usize = 64 << 20;

/// What has arrived so far.
#[derive(Default)]
struct Counts {
    spans: AtomicU64,
    exports: AtomicU64,
    /// Spans per `service.name` (`-` for a resource without one).
    by_service: Mutex<BTreeMap<String, u64>>,
}

/// The `TraceService`, routed by its name; every method is taken as `Export`.
#[derive(Clone, Default)]
struct Sink {
    counts: Arc<Counts>,
}

impl NamedService for Sink {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl Service<http::Request<tonic::body::Body>> for Sink {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let export = Export(self.counts.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
            Ok(grpc.unary(export, request).await)
        })
    }
}

struct Export(Arc<Counts>);

impl UnaryService<Bytes> for Export {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let counts = self.0.clone();
        Box::pin(async move {
            let per_service = count(request.get_ref())
                .ok_or_else(|| Status::invalid_argument("malformed ExportTraceServiceRequest"))?;
            let total: u64 = per_service.iter().map(|(_, n)| n).sum();
            counts.spans.fetch_add(total, Ordering::Relaxed);
            counts.exports.fetch_add(1, Ordering::Relaxed);
            // A poisoned lock only means another export panicked mid-update; keep counting.
            let mut by_service = counts.by_service.lock().unwrap_or_else(|e| e.into_inner());
            for (name, spans) in per_service {
                *by_service.entry(name).or_default() += spans;
            }
            // An empty ExportTraceServiceResponse: no partial-success details.
            Ok(tonic::Response::new(Bytes::new()))
        })
    }
}

/// Messages as bytes: requests are walked by [`count`], answers are empty.
#[derive(Clone, Copy, Default)]
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

/// One protobuf field: its number and, for length-delimited fields, its bytes.
struct Field<'a> {
    number: u64,
    body: Option<&'a [u8]>,
}

/// The fields of one message, in order; `None` as an item when the bytes are malformed.
fn fields(mut buf: &[u8]) -> impl Iterator<Item = Option<Field<'_>>> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let field = (|| {
            let key = varint(&mut buf)?;
            let body = match key & 7 {
                0 => {
                    varint(&mut buf)?;
                    None
                }
                1 | 5 => {
                    let n = if key & 7 == 1 { 8 } else { 4 };
                    buf = buf.get(n..)?;
                    None
                }
                2 => {
                    let n = usize::try_from(varint(&mut buf)?).ok()?;
                    let (body, rest) = (buf.get(..n)?, buf.get(n..)?);
                    buf = rest;
                    Some(body)
                }
                _ => return None,
            };
            Some(Field {
                number: key >> 3,
                body,
            })
        })();
        if field.is_none() {
            buf = &[];
        }
        Some(field)
    })
}

/// Spans per `service.name` in one `ExportTraceServiceRequest`; `None` when malformed.
fn count(request: &[u8]) -> Option<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for resource_spans in fields(request) {
        let resource_spans = resource_spans?;
        let Some(rs) = resource_spans.body.filter(|_| resource_spans.number == 1) else {
            continue;
        };
        let (mut service, mut spans) = (String::from("-"), 0u64);
        for f in fields(rs) {
            match f? {
                Field {
                    number: 1,
                    body: Some(resource),
                } => {
                    if let Some(name) = service_name(resource)? {
                        service = name;
                    }
                }
                Field {
                    number: 2,
                    body: Some(scope_spans),
                } => {
                    for s in fields(scope_spans) {
                        spans += u64::from(s?.number == 2);
                    }
                }
                _ => {}
            }
        }
        out.push((service, spans));
    }
    Some(out)
}

/// The resource's `service.name` string attribute (the last one wins, as in decoding).
fn service_name(resource: &[u8]) -> Option<Option<String>> {
    let mut found = None;
    for attr in fields(resource) {
        let Field {
            number: 1,
            body: Some(kv),
        } = attr?
        else {
            continue;
        };
        let (mut key, mut value) = (None, None);
        for f in fields(kv) {
            match f? {
                Field {
                    number: 1,
                    body: Some(k),
                } => key = Some(k),
                Field {
                    number: 2,
                    body: Some(any),
                } => {
                    for v in fields(any) {
                        if let Field {
                            number: 1,
                            body: Some(text),
                        } = v?
                        {
                            value = Some(String::from_utf8_lossy(text).into_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        if key == Some(b"service.name".as_slice()) && value.is_some() {
            found = value;
        }
    }
    Some(found)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| String::from("127.0.0.1:4317"));
    let addr: SocketAddr = match addr.parse() {
        Ok(addr) if args.next().is_none() => addr,
        _ => {
            eprintln!("usage: otlp-sink [LISTEN_ADDR]   (default 127.0.0.1:4317)");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("otlp-sink: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otlp-sink: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let listener = TcpListener::bind(addr).await?;
    println!("otlp-sink listening {}", listener.local_addr()?);

    let sink = Sink::default();
    // Large HTTP/2 windows, as a collector tuned for throughput has (gRPC servers grow theirs
    // with the bandwidth-delay product): a 64 KiB default would make each ~250 KiB batch
    // wait for window updates from this process, which shares a CPU with the load generator.
    let server = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .add_service(sink.clone())
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::select! {
        served = server => served?,
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    // Counted before the open connections are dropped: what arrived is what is printed.
    let counts = &sink.counts;
    println!(
        "otlp-sink spans={} exports={}",
        counts.spans.load(Ordering::Relaxed),
        counts.exports.load(Ordering::Relaxed)
    );
    let by_service = counts.by_service.lock().unwrap_or_else(|e| e.into_inner());
    for (name, spans) in by_service.iter() {
        println!("otlp-sink service={name} spans={spans}");
    }
    Ok(())
}
