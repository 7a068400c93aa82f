//! An OTLP/gRPC trace sink for `benches/trace-load.sh`: serves
//! `opentelemetry.proto.collector.trace.v1.TraceService/Export` (what Jaeger serves on 4317),
//! accepts every batch, counts its spans per `service.name`, and prints the counts when
//! stopped with SIGTERM or Ctrl-C.
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
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
    resource::v1::Resource,
};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

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

#[derive(Clone, Default)]
struct Sink {
    counts: Arc<Counts>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut per_service: Vec<(String, u64)> = Vec::new();
        let mut total = 0;
        for rs in &request.get_ref().resource_spans {
            let spans: u64 = rs.scope_spans.iter().map(|s| s.spans.len() as u64).sum();
            total += spans;
            per_service.push((service_name(rs.resource.as_ref()), spans));
        }
        self.counts.spans.fetch_add(total, Ordering::Relaxed);
        self.counts.exports.fetch_add(1, Ordering::Relaxed);
        // A poisoned lock only means another export panicked mid-update; keep counting.
        let mut by_service = self
            .counts
            .by_service
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (name, spans) in per_service {
            *by_service.entry(name).or_default() += spans;
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The resource's `service.name` string attribute, or `-`.
fn service_name(resource: Option<&Resource>) -> String {
    resource
        .into_iter()
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map_or_else(
            || String::from("-"),
            |v| match v {
                Value::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            },
        )
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
    let service =
        TraceServiceServer::new(sink.clone()).max_decoding_message_size(MAX_REQUEST_BYTES);
    let server = tonic::transport::Server::builder()
        .add_service(service)
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
