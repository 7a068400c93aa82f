//! Resilience through the real proxy: retries and their budget, body replay, per-try and request
//! timeouts, circuit breakers, outlier detection, fail-fast, the inbound rate limit, fault
//! injection, plus opaque TCP by original destination without redirection and the refusal of
//! bad resilience config. Misbehaving upstreams come from `support::faulty`.

mod body;
mod breaker;
mod config;
mod connect;
mod fault;
mod grpc;
mod outlier;
mod rate_limit;
mod retry;
mod tcp;
mod timeouts;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::client::{H1Conn, H2Conn, Reply};

/// The response header counting attempts when a request was tried more than once.
pub const ATTEMPTS: &str = "x-skiff-attempts";

/// `x-skiff-attempts` as a number; `None` when absent (one attempt). Panics on a value that is
/// not a number of at least 2: the contract allows no other.
pub fn attempts(r: &Reply) -> Option<u32> {
    let raw = r.header(ATTEMPTS)?;
    let n: u32 = raw
        .parse()
        .unwrap_or_else(|_| panic!("{ATTEMPTS} is not a number: {raw:?} in {r:?}"));
    assert!(n >= 2, "{ATTEMPTS} appears only from 2 attempts on: {r:?}");
    Some(n)
}

/// One kept-alive client connection of either protocol.
enum Conn {
    H1(H1Conn),
    H2(H2Conn),
}

impl Conn {
    async fn send(&mut self, req: Request<Full<Bytes>>) -> Reply {
        match self {
            Conn::H1(c) => c.send(req).await,
            Conn::H2(c) => c.send(req).await,
        }
    }
}

/// Sends requests `0..total`, built by `make(i)`, from `workers` concurrent clients, each on one
/// kept-alive connection: HTTP/1.1 for even workers, h2c for odd ones. Returns the replies
/// indexed by request number. A transport error panics (the proxy must always answer).
pub async fn load<F>(addr: SocketAddr, total: usize, workers: usize, make: F) -> Vec<Reply>
where
    F: Fn(usize) -> Request<Full<Bytes>>,
{
    let next = Arc::new(AtomicUsize::new(0));
    let make = &make;
    let tasks = (0..workers).map(|w| {
        let next = next.clone();
        async move {
            let mut conn = if w % 2 == 0 {
                Conn::H1(H1Conn::connect(addr).await)
            } else {
                Conn::H2(H2Conn::connect(addr).await)
            };
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    return got;
                }
                got.push((i, conn.send(make(i)).await));
            }
        }
    });
    let mut all: Vec<(usize, Reply)> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .flatten()
        .collect();
    all.sort_by_key(|(i, _)| *i);
    assert_eq!(all.len(), total, "every request got a reply");
    all.into_iter().map(|(_, r)| r).collect()
}

/// Bytes that look random (xorshift), the same for the same `seed`: a body whose corruption or
/// truncation an upstream would notice.
pub fn noise(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}
