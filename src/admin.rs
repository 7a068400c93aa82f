//! The admin HTTP server: `/live`, `/ready`, `/metrics`, `/config_dump`, `/logging` and `/certs`.
//! Runs beside the data plane; its own connections are not counted in proxy metrics.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::{
    balance::{Endpoint, clock},
    cluster::Cluster,
    describe,
    route::Route,
    snapshot::Snapshot,
    state::State,
    telemetry::access_log::rfc3339,
    tls::MeshTls,
};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin API until the process exits (it keeps answering while draining).
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                debug!(error = %e, "admin connection ended");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

/// Whether `peer` may change the proxy (`PUT /logging`): only from the pod itself. The admin
/// port listens on the pod IP for the kubelet's probes, which only read.
fn may_write(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

async fn route(state: &State, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") => {
            if state.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else if state.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET, "/metrics") => {
            let mut rsp = text(StatusCode::OK, state.metrics.encode());
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(OPENMETRICS),
            );
            rsp
        }
        (&Method::GET, "/certs") => {
            let Some(tls) = state.tls() else {
                return text(
                    StatusCode::NOT_FOUND,
                    "no identity: run with --xds and --token-file to get a mesh certificate\n",
                );
            };
            json(certs(tls))
        }
        (&Method::GET, "/config_dump") => json(config_dump(state)),
        (&Method::GET, "/describe") => match describe::describe(state, req.uri().query()).await {
            Ok(answer) => json(answer),
            Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        },
        (&Method::GET, "/logging") => text(StatusCode::OK, format!("{}\n", state.logs.current())),
        (&Method::PUT | &Method::POST, "/logging") if !may_write(peer) => text(
            StatusCode::FORBIDDEN,
            "the log level can be changed from the pod itself only (loopback): use kubectl exec \
             or kubectl port-forward\n",
        ),
        (&Method::PUT | &Method::POST, "/logging") => {
            let body = match Limited::new(req.into_body(), 4096).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return text(StatusCode::BAD_REQUEST, "body too large or unreadable\n"),
            };
            let input = String::from_utf8_lossy(&body);
            match state.logs.set(&input) {
                Ok(now) => text(StatusCode::OK, format!("{now}\n")),
                Err(e) => text(StatusCode::BAD_REQUEST, format!("invalid filter: {e}\n")),
            }
        }
        (
            _,
            "/live" | "/ready" | "/metrics" | "/config_dump" | "/describe" | "/logging" | "/certs",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /ready /live /metrics /config_dump /describe /logging /certs\n",
        ),
    }
}

fn endpoint_json(e: &Endpoint) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let until = e.health.ejected_until.load(Relaxed);
    let left = (until != 0).then(|| Duration::from_nanos(until.saturating_sub(clock())));
    json!({
        "address": e.addr.to_string(),
        "workload": e.workload.as_deref(),
        "identity": e.identity.as_deref(),
        "inFlight": e.load.in_flight(),
        "ewmaMs": (e.load.ewma_ms() * 1000.0).round() / 1000.0,
        "consecutiveErrors": e.health.consecutive.load(Relaxed),
        "ejections": e.health.ejections.load(Relaxed),
        "ejected": until != 0,
        "ejectedUntil": left.map(|l| rfc3339(SystemTime::now() + l)),
        "ejectedForMs": left.map(|l| l.as_millis()),
    })
}

fn duration(d: Duration) -> String {
    skiff_api::duration::Dur(d).to_string()
}

/// A UTC time as RFC 3339 with milliseconds (days to civil date: Howard Hinnant's algorithm).
fn json(value: Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(&value).unwrap_or_default();
    let mut rsp = text(StatusCode::OK, body);
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    rsp
}

/// `/certs`: this proxy's certificate and the trust anchors; never the key.
fn certs(tls: &MeshTls) -> Value {
    let anchors = tls.anchors();
    let cert = tls.certified().map(|c| {
        json!({
            "spiffeId": &*c.spiffe_id,
            "serial": c.serial,
            "notBefore": rfc3339(c.not_before),
            "notAfter": rfc3339(c.not_after),
            "issuedAt": rfc3339(c.issued_at),
            "renewAt": rfc3339(c.renew_at()),
            "chainLength": c.key.cert.len(),
        })
    });
    json!({
        "certificate": cert,
        "trustAnchors": anchors.fingerprints.iter().map(|f| json!({"sha256": f})).collect::<Vec<_>>(),
    })
}

/// A service's resilience settings and live counters.
fn cluster_json(c: &Cluster) -> Value {
    let (connections, pending, requests, retries) = c.breaker.counters.open();
    json!({
        "circuitBreaker": c.breaker.limits.map(|l| json!({
            "maxConnections": l.max_connections,
            "maxPendingRequests": l.max_pending_requests,
            "maxRequests": l.max_requests,
            "maxRetries": l.max_retries,
            "open": {
                "connections": connections, "pendingRequests": pending,
                "requests": requests, "retries": retries,
            },
        })),
        "outlierDetection": c.outlier.as_ref().map(|o| json!({
            "consecutiveErrors": o.consecutive_errors,
            "interval": duration(o.interval),
            "baseEjectionTime": duration(o.base_ejection_time),
            "maxEjectionPercent": o.max_ejection_percent,
        })),
        "retryBudget": c.budget.as_ref().map(|b| {
            let (requests, retries) = b.state.window();
            json!({
                "ratio": b.ratio, "minRetriesPerSecond": b.min_retries_per_second,
                "requests10s": requests, "retries10s": retries,
            })
        }),
    })
}

fn route_json(r: &Route) -> Value {
    json!({
        "name": &*r.name,
        "timeout": r.timeout.map(duration),
        "perTryTimeout": r.per_try_timeout.map(duration),
        "retry": r.retry.as_ref().map(|p| json!({
            "attempts": p.attempts,
            "retryOn": p.retry_on.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "retriableStatusCodes": &p.status_codes,
            "backoff": { "base": duration(p.backoff_base), "max": duration(p.backoff_max) },
            "maxBodyBytes": p.max_body_bytes,
            "nonIdempotent": p.non_idempotent,
        })),
        "fault": r.fault.as_ref().map(|f| json!({
            "abort": f.abort.map(|(percent, a)| json!({
                "percent": percent, "status": a.status, "grpcStatus": a.grpc,
            })),
            "delay": f.delay.map(|(percent, d)| json!({ "percent": percent, "duration": duration(d) })),
        })),
        "backends": r.backends().map(|(c, w)| json!({
            "service": &*c.name, "namespace": &*c.namespace, "weight": w,
        })).collect::<Vec<_>>(),
    })
}

/// What the proxy runs now: listeners, config version, services with live LB state.
/// Whether spans are exported, and the ratio new traces are sampled at (and who set it).
fn tracing_json(state: &State, snap: &Snapshot) -> Value {
    let tracer = &state.recorder.tracer;
    match tracer.endpoint() {
        None => json!({ "exporting": false, "accessLog": state.recorder.access_log.is_on() }),
        Some(endpoint) => json!({
            "exporting": true,
            "endpoint": endpoint,
            "sampling": snap.sampling.unwrap_or(tracer.default_ratio()),
            "samplingFrom": if snap.sampling.is_some() { "mesh" } else { "environment" },
            "accessLog": state.recorder.access_log.is_on(),
        }),
    }
}

fn config_dump(state: &State) -> Value {
    let snap: Arc<Snapshot> = state.snapshot();
    let bound = state.bound();
    let services: Vec<Value> = snap
        .services
        .iter()
        .map(|s| {
            let members = s.cluster.members();
            let mut svc = json!({
                "name": &*s.name,
                "namespace": &*s.namespace,
                "hosts": &s.hosts,
                "addresses": s.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "protocol": s.protocol,
                "loadBalancer": members.endpoints.kind(),
                "routes": s.routes.routes().iter().map(route_json).collect::<Vec<_>>(),
                "endpoints": members.endpoints.endpoints().iter().map(|e| endpoint_json(e)).collect::<Vec<_>>(),
            });
            if let (Some(obj), Value::Object(extra)) = (svc.as_object_mut(), cluster_json(&s.cluster)) {
                obj.extend(extra);
            }
            svc
        })
        .collect();
    let inbound = snap.inbound.as_ref().map(|ib| {
        json!({
            "workload": &*ib.workload, "namespace": &*ib.namespace,
            "listen": ib.listener.as_ref().map(|l| l.listen.to_string()),
            "app": ib.listener.as_ref().map(|l| l.app.to_string()),
            "mtls": format!("{:?}", ib.mtls).to_lowercase(),
            "authorization": ib.authz.names().collect::<Vec<_>>(),
        })
    });
    json!({
        "version": &*snap.version(),
        "listeners": bound.map(|b| json!({
            "admin": b.admin.to_string(), "outbound": b.outbound_list(), "inbound": b.inbound_list(),
        })),
        "lastError": state.last_error().map(|e| e.to_string()),
        "draining": state.is_draining(),
        "trustDomain": &snap.trust_domain,
        "identity": snap.identity.as_deref(),
        "tracing": tracing_json(state, &snap),
        "inbound": inbound,
        "services": services,
        "xds": state.xds_status().as_deref().cloned(),
        "onDemand": state.on_demand().map(|od| {
            od.lookups()
                .into_iter()
                .map(|(alias, answer)| (alias, json!(answer.to_string())))
                .collect::<serde_json::Map<_, _>>()
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_from_loopback() {
        for (peer, ok) in [
            ("127.0.0.1:5000", true),
            ("127.0.0.9:5000", true),
            ("[::1]:5000", true),
            ("[::ffff:127.0.0.1]:5000", true),
            ("10.1.2.3:5000", false),
            ("[::ffff:10.1.2.3]:5000", false),
            ("[fd00::1]:5000", false),
        ] {
            assert_eq!(may_write(peer.parse().unwrap()), ok, "{peer}");
        }
    }
}
