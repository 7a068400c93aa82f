//! Upstreams that misbehave on purpose, for the resilience tests: one that fails some requests
//! (`FlakyUpstream`), one that never answers (`StallServer`), an HTTP/2 one that refuses its
//! first streams (`RefusingH2Upstream`). As in `upstream`, each binds `127.0.0.1:0` before its
//! address is handed out, stops when dropped, and records what it saw. A gRPC server failing its
//! first calls is `upstream::GrpcUpstream::builder(..).fail_first(..)`; refused connections are
//! `upstream::closed_port`, a connect that hangs is `upstream::BlackHole`.

use std::{
    collections::HashSet,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use tokio::{sync::Notify, task::JoinSet};

use super::{
    STEP,
    upstream::{Task, UpstreamBody, accept_loop, bind, serve_h1_or_h2c},
    within,
};

/// The request header a test uses to name a request across its retries: an unsigned integer.
/// [`Failing::FirstTryOfEvery`] keys its decision on it.
pub const KEY: &str = "x-flaky-key";

/// Which requests a [`FlakyUpstream`] fails while its switch ([`FlakyUpstream::set_failing`])
/// is off. With the switch on, every request fails.
#[derive(Clone, Copy, Debug)]
pub enum Failing {
    Never,
    /// The n-th, 2n-th, 3n-th ... request to arrive fails (a retry is one more arrival). Which
    /// client requests fail depends on how concurrent requests and retries interleave; how many
    /// arrivals fail does not.
    EveryNth(usize),
    /// A request whose [`KEY`] is a multiple of n fails the first time that key arrives; later
    /// arrivals of the same key (its retries) pass, and so do requests without a key. Which
    /// requests fail, and how often, does not depend on interleaving.
    FirstTryOfEvery(usize),
    /// The first n requests to arrive fail, every later one passes: a request retried n times
    /// (and sent alone) succeeds on its last attempt.
    FirstN(usize),
}

/// One request as a [`FlakyUpstream`] received and answered it.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub method: Method,
    pub version: Version,
    /// The request's [`KEY`], when it had a valid one.
    pub key: Option<u64>,
    pub body: Bytes,
    /// What this upstream answered.
    pub status: StatusCode,
    /// The upstream's name, as sent in `x-served-by`.
    pub served_by: Arc<str>,
}

struct FlakyState {
    name: Arc<str>,
    failing: Failing,
    fail_status: StatusCode,
    /// The runtime switch: while on, every request fails.
    fail_all: AtomicBool,
    log: Mutex<FlakyLog>,
}

#[derive(Default)]
struct FlakyLog {
    arrivals: Vec<Arrival>,
    keys_seen: HashSet<u64>,
}

impl FlakyState {
    /// Decides and records in one critical section, so the arrival count a decision is based on
    /// is exactly this request's place in `arrivals`.
    fn answer(&self, method: Method, version: Version, key: Option<u64>, body: Bytes) -> Arrival {
        let mut log = self.log.lock().expect("flaky log lock");
        let nth = log.arrivals.len() + 1;
        let first_try_of_key = key.is_some_and(|k| log.keys_seen.insert(k));
        let fail = self.fail_all.load(Ordering::SeqCst)
            || match self.failing {
                Failing::Never => false,
                Failing::EveryNth(n) => nth.is_multiple_of(n),
                Failing::FirstTryOfEvery(n) => {
                    first_try_of_key && key.is_some_and(|k| k.is_multiple_of(n as u64))
                }
                Failing::FirstN(n) => nth <= n,
            };
        let arrival = Arrival {
            method,
            version,
            key,
            body,
            status: if fail {
                self.fail_status
            } else {
                StatusCode::OK
            },
            served_by: self.name.clone(),
        };
        log.arrivals.push(arrival.clone());
        arrival
    }
}

/// An HTTP/1.1 + h2c server that fails some requests (see [`Failing`]) with a set status (503
/// unless told otherwise) and answers the rest 200. Every response carries `x-served-by: NAME`;
/// a 200 echoes the request body (or is `NAME` when there was none), a failure's body is
/// `NAME failing`.
pub struct FlakyUpstream {
    addr: SocketAddr,
    state: Arc<FlakyState>,
    _task: Task,
}

/// Options of a [`FlakyUpstream`].
pub struct FlakyUpstreamBuilder {
    name: String,
    failing: Failing,
    fail_status: StatusCode,
    fail_all: bool,
}

impl FlakyUpstreamBuilder {
    /// Which requests fail. Default: [`Failing::Never`].
    pub fn failing(mut self, failing: Failing) -> Self {
        self.failing = failing;
        self
    }

    /// The status of a failed request. Default: 503.
    pub fn fail_status(mut self, status: StatusCode) -> Self {
        self.fail_status = status;
        self
    }

    /// Starts with the switch on: every request fails until `set_failing(false)`. Default: off.
    pub fn always_fail(mut self) -> Self {
        self.fail_all = true;
        self
    }

    pub async fn start(self) -> FlakyUpstream {
        let listener = bind().await;
        let addr = listener.local_addr().expect("bound address");
        let state = Arc::new(FlakyState {
            name: Arc::from(self.name.as_str()),
            failing: self.failing,
            fail_status: self.fail_status,
            fail_all: AtomicBool::new(self.fail_all),
            log: Mutex::default(),
        });
        let task = accept_loop(listener, {
            let state = state.clone();
            move |stream, _| {
                let state = state.clone();
                serve_h1_or_h2c(stream, move |req| handle_flaky(req, state.clone()))
            }
        });
        FlakyUpstream {
            addr,
            state,
            _task: task,
        }
    }
}

async fn handle_flaky(
    req: Request<hyper::body::Incoming>,
    state: Arc<FlakyState>,
) -> Result<Response<UpstreamBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let key = parts
        .headers
        .get(KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let arrival = state.answer(parts.method, parts.version, key, body);
    let reply = if arrival.status != StatusCode::OK {
        Bytes::from(format!("{} failing", state.name))
    } else if arrival.body.is_empty() {
        Bytes::from(state.name.to_string())
    } else {
        arrival.body
    };
    let mut rsp = Response::new(Full::new(reply).boxed());
    *rsp.status_mut() = arrival.status;
    rsp.headers_mut().insert(
        "x-served-by",
        HeaderValue::from_str(&state.name).expect("upstream names are header-safe"),
    );
    Ok(rsp)
}

impl FlakyUpstream {
    pub fn builder(name: &str) -> FlakyUpstreamBuilder {
        FlakyUpstreamBuilder {
            name: name.to_owned(),
            failing: Failing::Never,
            fail_status: StatusCode::SERVICE_UNAVAILABLE,
            fail_all: false,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Turns the switch on (every request fails) or off (back to the configured [`Failing`]).
    pub fn set_failing(&self, on: bool) {
        self.state.fail_all.store(on, Ordering::SeqCst);
    }

    /// Every request received so far, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state
            .log
            .lock()
            .expect("flaky log lock")
            .arrivals
            .clone()
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.state
            .log
            .lock()
            .expect("flaky log lock")
            .arrivals
            .len()
    }

    /// Requests answered with the failure status so far.
    pub fn failures(&self) -> usize {
        self.state
            .log
            .lock()
            .expect("flaky log lock")
            .arrivals
            .iter()
            .filter(|a| a.status != StatusCode::OK)
            .count()
    }

    /// The arrivals that carried `key`.
    pub fn arrivals_of(&self, key: u64) -> Vec<Arrival> {
        self.arrivals()
            .into_iter()
            .filter(|a| a.key == Some(key))
            .collect()
    }
}

#[derive(Default)]
struct StallState {
    arrived: AtomicUsize,
    in_flight: AtomicUsize,
    connections: AtomicUsize,
    changed: Notify,
}

/// Decrements the in-flight count when hyper drops a stalled request (its stream was reset or
/// its connection closed).
struct InFlight(Arc<StallState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// An HTTP/1.1 + h2c server that reads each request (head and body) and never answers it.
/// Counts requests arrived, requests held now, and connections accepted.
pub struct StallServer {
    addr: SocketAddr,
    state: Arc<StallState>,
    _task: Task,
}

impl StallServer {
    pub async fn start() -> StallServer {
        let listener = bind().await;
        let addr = listener.local_addr().expect("bound address");
        let state = Arc::new(StallState::default());
        let task = accept_loop(listener, {
            let state = state.clone();
            move |stream, _| {
                state.connections.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                serve_h1_or_h2c(stream, move |req: Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        state.in_flight.fetch_add(1, Ordering::SeqCst);
                        let _held = InFlight(state.clone());
                        state.arrived.fetch_add(1, Ordering::SeqCst);
                        state.changed.notify_waiters();
                        std::future::pending::<Result<Response<UpstreamBody>, Infallible>>().await
                    }
                })
            }
        });
        StallServer {
            addr,
            state,
            _task: task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests read to their end so far.
    pub fn arrived(&self) -> usize {
        self.state.arrived.load(Ordering::SeqCst)
    }

    /// Requests held now (arrived, and neither reset nor closed by the sender).
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Returns once `n` requests have arrived; panics after [`STEP`].
    pub async fn wait_arrived(&self, n: usize) {
        within(
            &format!("stall server waiting for {n} requests"),
            STEP,
            async {
                loop {
                    let changed = self.state.changed.notified();
                    if self.arrived() >= n {
                        return;
                    }
                    changed.await;
                }
            },
        )
        .await;
    }
}

#[derive(Default)]
struct RefusingState {
    streams: AtomicUsize,
    refused: AtomicUsize,
    /// Method and body of every stream served (not refused), in completion order.
    served: Mutex<Vec<(Method, Bytes)>>,
}

/// An HTTP/2 (prior knowledge) server, on the `h2` crate directly: it answers its first `k`
/// streams, counted across connections, with RST_STREAM(REFUSED_STREAM) as soon as their
/// headers arrive (so it provably processed nothing), then serves normally: 200, `x-served-by:
/// NAME`, the request body echoed.
pub struct RefusingH2Upstream {
    addr: SocketAddr,
    state: Arc<RefusingState>,
    _task: Task,
}

impl RefusingH2Upstream {
    pub async fn start(name: &str, refuse_first: usize) -> RefusingH2Upstream {
        let listener = bind().await;
        let addr = listener.local_addr().expect("bound address");
        let state = Arc::new(RefusingState::default());
        let name: Arc<str> = Arc::from(name);
        let task = accept_loop(listener, {
            let state = state.clone();
            move |stream, _| {
                let (state, name) = (state.clone(), name.clone());
                async move {
                    let Ok(mut conn) = h2::server::handshake(stream).await else {
                        return;
                    };
                    // Stream tasks live as long as the connection's task (aborted with it).
                    let mut streams = JoinSet::new();
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        let nth = state.streams.fetch_add(1, Ordering::SeqCst);
                        if nth < refuse_first {
                            state.refused.fetch_add(1, Ordering::SeqCst);
                            respond.send_reset(h2::Reason::REFUSED_STREAM);
                            continue;
                        }
                        let (state, name) = (state.clone(), name.clone());
                        streams.spawn(async move {
                            let (parts, mut body) = req.into_parts();
                            let mut all = BytesMut::new();
                            while let Some(chunk) = body.data().await {
                                let Ok(chunk) = chunk else { return };
                                let _ = body.flow_control().release_capacity(chunk.len());
                                all.extend_from_slice(&chunk);
                            }
                            let all = all.freeze();
                            state
                                .served
                                .lock()
                                .expect("refusing upstream lock")
                                .push((parts.method, all.clone()));
                            let rsp = Response::builder()
                                .status(StatusCode::OK)
                                .header("x-served-by", name.as_ref())
                                .body(())
                                .expect("static response parts are valid");
                            let Ok(mut send) = respond.send_response(rsp, all.is_empty()) else {
                                return;
                            };
                            if !all.is_empty() {
                                let _ = send.send_data(all, true);
                            }
                        });
                    }
                    // The peer closed: let the streams finish what they were sending.
                    while streams.join_next().await.is_some() {}
                }
            }
        });
        RefusingH2Upstream {
            addr,
            state,
            _task: task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Streams opened so far, refused ones included.
    pub fn streams(&self) -> usize {
        self.state.streams.load(Ordering::SeqCst)
    }

    /// Streams refused so far.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Method and body of each stream served, in the order they completed.
    pub fn served(&self) -> Vec<(Method, Bytes)> {
        self.state
            .served
            .lock()
            .expect("refusing upstream lock")
            .clone()
    }
}
