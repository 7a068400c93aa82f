//! Fault injection per route (`fault`): a share of requests is delayed before it is sent, and
//! a share is answered by the proxy itself with the configured status (`fault-injected`).

use std::time::Duration;

use rand::RngExt;
use skiff_api::model;

use super::FaultStats;

/// An injected answer: the HTTP status, and the `grpc-status` gRPC callers get instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abort {
    pub status: u16,
    pub grpc: Option<u32>,
}

/// A compiled `fault` block.
#[derive(Debug)]
pub struct FaultPolicy {
    pub delay: Option<(f64, Duration)>,
    pub abort: Option<(f64, Abort)>,
    stats: FaultStats,
}

/// The HTTP status a gRPC status means to a caller that is not gRPC (gRPC's own mapping,
/// read backwards).
fn http_status_of_grpc(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

fn roll(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && rand::rng().random_range(0.0..100.0) < percent)
}

impl FaultPolicy {
    pub fn compile(spec: &model::Fault, stats: FaultStats) -> FaultPolicy {
        FaultPolicy {
            delay: spec.delay.as_ref().map(|d| (d.percent, d.duration.get())),
            abort: spec.abort.as_ref().map(|a| {
                let abort = match (a.status, a.grpc_status) {
                    (Some(status), grpc) => Abort { status, grpc },
                    (None, Some(code)) => Abort {
                        status: http_status_of_grpc(code),
                        grpc: Some(code),
                    },
                    // Validation refuses a block with neither; answer as an upstream would.
                    (None, None) => Abort {
                        status: 503,
                        grpc: None,
                    },
                };
                (a.percent, abort)
            }),
            stats,
        }
    }

    /// The delay to inject into this request, if it draws one.
    pub fn delay(&self) -> Option<Duration> {
        let (percent, d) = self.delay?;
        roll(percent).then(|| {
            self.stats.delays.inc();
            d
        })
    }

    /// The answer to inject instead of forwarding, if this request draws one.
    pub fn abort(&self) -> Option<Abort> {
        let (percent, a) = self.abort?;
        roll(percent).then(|| {
            self.stats.aborts.inc();
            a
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_hold_roughly() {
        assert!(roll(100.0));
        assert!(!roll(0.0));
        let hits = (0..10_000).filter(|_| roll(30.0)).count();
        assert!((2_700..3_300).contains(&hits), "{hits} of 10000 at 30%");
    }

    #[test]
    fn grpc_status_maps_to_http_for_other_callers() {
        assert_eq!(http_status_of_grpc(14), 503);
        assert_eq!(http_status_of_grpc(4), 504);
        assert_eq!(http_status_of_grpc(99), 500);
    }
}
