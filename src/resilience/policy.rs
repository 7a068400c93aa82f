//! A route's retry policy, compiled once per snapshot from the mesh file's `retry`: which
//! outcomes are worth another attempt, how many attempts, how long to back off between them.

use std::time::Duration;

use skiff_api::model::{self, RetryOn};

use super::Backoff;

/// A `retryOn` token, or `Unprocessed`: a request the upstream provably never processed, which
/// goes again whatever the policy says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Condition {
    Status5xx,
    GatewayError,
    Reset,
    ConnectFailure,
    RefusedStream,
    Retriable4xx,
    RetriableStatusCodes,
    Cancelled,
    DeadlineExceeded,
    ResourceExhausted,
    Unavailable,
    Unprocessed,
}

impl Condition {
    /// The mesh file's token (the `reason` label of the retry metric).
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Status5xx => "5xx",
            Condition::GatewayError => "gateway-error",
            Condition::Reset => "reset",
            Condition::ConnectFailure => "connect-failure",
            Condition::RefusedStream => "refused-stream",
            Condition::Retriable4xx => "retriable-4xx",
            Condition::RetriableStatusCodes => "retriable-status-codes",
            Condition::Cancelled => "cancelled",
            Condition::DeadlineExceeded => "deadline-exceeded",
            Condition::ResourceExhausted => "resource-exhausted",
            Condition::Unavailable => "unavailable",
            Condition::Unprocessed => "unprocessed",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    fn from_model(on: RetryOn) -> Condition {
        match on {
            RetryOn::Status5xx => Condition::Status5xx,
            RetryOn::GatewayError => Condition::GatewayError,
            RetryOn::Reset => Condition::Reset,
            RetryOn::ConnectFailure => Condition::ConnectFailure,
            RetryOn::RefusedStream => Condition::RefusedStream,
            RetryOn::Retriable4xx => Condition::Retriable4xx,
            RetryOn::RetriableStatusCodes => Condition::RetriableStatusCodes,
            RetryOn::Cancelled => Condition::Cancelled,
            RetryOn::DeadlineExceeded => Condition::DeadlineExceeded,
            RetryOn::ResourceExhausted => Condition::ResourceExhausted,
            RetryOn::Unavailable => Condition::Unavailable,
        }
    }
}

/// How an attempt failed without a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Connecting to the endpoint failed or timed out.
    ConnectFailure,
    /// The upstream reset or closed before a complete response head.
    Reset,
    /// The upstream provably did not process the request (REFUSED_STREAM, a GOAWAY above its
    /// stream, a pooled HTTP/1.1 connection that closed before the request was written).
    Refused,
    /// The per-try deadline passed.
    Timeout,
    /// The proxy's own refusal (no endpoint, a full breaker, a bad request): never retried and
    /// never charged to an endpoint.
    Local,
}

/// What an attempt came back with, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A response: its status and, for a gRPC call answered trailers-only, its `grpc-status`.
    Response {
        status: u16,
        grpc: Option<u32>,
    },
    Failed(Failure),
}

/// A compiled `retry` block.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Every attempt, the first included (1..=10).
    pub attempts: u32,
    conditions: u16,
    /// In the order the mesh file lists them (for `/config_dump`).
    pub retry_on: Vec<Condition>,
    pub status_codes: Vec<u16>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Bodies over this stream through once, unretried.
    pub max_body_bytes: u64,
    pub non_idempotent: bool,
}

impl RetryPolicy {
    pub fn compile(spec: &model::Retry) -> RetryPolicy {
        let retry_on: Vec<Condition> = spec
            .retry_on
            .iter()
            .map(|&on| Condition::from_model(on))
            .collect();
        let (backoff_base, backoff_max) = spec.backoff.as_ref().map_or(
            (Duration::from_millis(25), Duration::from_millis(250)),
            |b| (b.base.get(), b.max.get()),
        );
        RetryPolicy {
            attempts: spec.attempts.max(1),
            conditions: retry_on.iter().fold(0, |bits, c| bits | c.bit()),
            retry_on,
            status_codes: spec.retriable_status_codes.clone(),
            backoff_base,
            backoff_max,
            max_body_bytes: spec.max_body_bytes,
            non_idempotent: spec.non_idempotent,
        }
    }

    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_base, self.backoff_max)
    }

    pub fn has(&self, c: Condition) -> bool {
        self.conditions & c.bit() != 0
    }

    /// The listed condition `class` meets, the most specific first (so the metric says
    /// `connect-failure` rather than `5xx` when both are listed).
    pub fn matching(&self, class: Class, grpc_call: bool) -> Option<Condition> {
        use Condition as C;
        let candidates: &[Condition] = match class {
            Class::Failed(Failure::ConnectFailure) => {
                &[C::ConnectFailure, C::GatewayError, C::Status5xx]
            }
            Class::Failed(Failure::Reset) => &[C::Reset, C::GatewayError, C::Status5xx],
            // Only its own token: otherwise a refused request goes again as `Unprocessed`.
            Class::Failed(Failure::Refused) => &[C::RefusedStream],
            Class::Failed(Failure::Timeout) => &[C::GatewayError, C::Status5xx],
            Class::Failed(Failure::Local) => &[],
            Class::Response { status, grpc } => {
                if grpc_call && let Some(code) = grpc {
                    let c = match code {
                        1 => Some(C::Cancelled),
                        4 => Some(C::DeadlineExceeded),
                        8 => Some(C::ResourceExhausted),
                        14 => Some(C::Unavailable),
                        _ => None,
                    };
                    if let Some(c) = c.filter(|c| self.has(*c)) {
                        return Some(c);
                    }
                }
                if self.has(C::RetriableStatusCodes) && self.status_codes.contains(&status) {
                    return Some(C::RetriableStatusCodes);
                }
                return match status {
                    409 if self.has(C::Retriable4xx) => Some(C::Retriable4xx),
                    502..=504 if self.has(C::GatewayError) => Some(C::GatewayError),
                    500..=599 if self.has(C::Status5xx) => Some(C::Status5xx),
                    _ => None,
                };
            }
        };
        candidates.iter().copied().find(|c| self.has(*c))
    }
}

/// Methods that may be sent twice with the effect of once (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &http::Method) -> bool {
    use http::Method as M;
    matches!(
        *method,
        M::GET | M::HEAD | M::OPTIONS | M::TRACE | M::PUT | M::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &[RetryOn], codes: &[u16]) -> RetryPolicy {
        RetryPolicy::compile(&model::Retry {
            attempts: 3,
            retry_on: on.to_vec(),
            backoff: None,
            max_body_bytes: 65536,
            non_idempotent: false,
            retriable_status_codes: codes.to_vec(),
        })
    }

    #[test]
    fn five_xx_covers_failures_and_responses() {
        let p = policy(&[RetryOn::Status5xx], &[]);
        let rsp = |status| Class::Response { status, grpc: None };
        assert_eq!(p.matching(rsp(503), false), Some(Condition::Status5xx));
        assert_eq!(p.matching(rsp(500), false), Some(Condition::Status5xx));
        assert_eq!(p.matching(rsp(404), false), None);
        assert_eq!(p.matching(rsp(200), false), None);
        assert_eq!(p.matching(Class::Failed(Failure::Refused), false), None);
        for f in [Failure::ConnectFailure, Failure::Reset, Failure::Timeout] {
            assert_eq!(
                p.matching(Class::Failed(f), false),
                Some(Condition::Status5xx),
                "{f:?}"
            );
        }
        assert_eq!(p.matching(Class::Failed(Failure::Local), false), None);
    }

    #[test]
    fn gateway_error_is_only_502_to_504() {
        let p = policy(&[RetryOn::GatewayError], &[]);
        let rsp = |status| Class::Response { status, grpc: None };
        assert_eq!(p.matching(rsp(500), false), None);
        assert_eq!(p.matching(rsp(502), false), Some(Condition::GatewayError));
        assert_eq!(p.matching(rsp(504), false), Some(Condition::GatewayError));
        assert_eq!(
            p.matching(Class::Failed(Failure::Timeout), false),
            Some(Condition::GatewayError)
        );
    }

    #[test]
    fn most_specific_condition_names_the_retry() {
        let p = policy(
            &[RetryOn::Status5xx, RetryOn::ConnectFailure, RetryOn::Reset],
            &[],
        );
        assert_eq!(
            p.matching(Class::Failed(Failure::ConnectFailure), false),
            Some(Condition::ConnectFailure)
        );
        assert_eq!(
            p.matching(Class::Failed(Failure::Reset), false),
            Some(Condition::Reset)
        );
        let only_connect = policy(&[RetryOn::ConnectFailure], &[]);
        assert_eq!(
            only_connect.matching(Class::Failed(Failure::Reset), false),
            None
        );
        assert_eq!(
            only_connect.matching(
                Class::Response {
                    status: 503,
                    grpc: None
                },
                false
            ),
            None
        );
    }

    #[test]
    fn grpc_codes_apply_to_grpc_calls_only() {
        let p = policy(&[RetryOn::Unavailable], &[]);
        let unavailable = Class::Response {
            status: 200,
            grpc: Some(14),
        };
        assert_eq!(p.matching(unavailable, true), Some(Condition::Unavailable));
        assert_eq!(p.matching(unavailable, false), None);
        let invalid = Class::Response {
            status: 200,
            grpc: Some(3),
        };
        assert_eq!(p.matching(invalid, true), None);
    }

    #[test]
    fn status_code_lists() {
        let p = policy(
            &[RetryOn::RetriableStatusCodes, RetryOn::Retriable4xx],
            &[429],
        );
        let rsp = |status| Class::Response { status, grpc: None };
        assert_eq!(
            p.matching(rsp(429), false),
            Some(Condition::RetriableStatusCodes)
        );
        assert_eq!(p.matching(rsp(409), false), Some(Condition::Retriable4xx));
        assert_eq!(p.matching(rsp(503), false), None);
    }

    #[test]
    fn idempotent_methods() {
        assert!(is_idempotent(&http::Method::GET));
        assert!(is_idempotent(&http::Method::PUT));
        assert!(!is_idempotent(&http::Method::POST));
        assert!(!is_idempotent(&http::Method::PATCH));
    }
}
