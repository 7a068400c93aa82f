//! The attempt loop: one request, as many attempts as the policy, the budget and the breaker
//! allow, each under the per-try and request deadlines. `RetryState` alone decides whether an
//! outcome goes again; the caller's [`Attempt`] picks the endpoint and does the I/O.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

pub use crate::balance::Tried;

use super::{
    Backoff, Breaker, Budget, ClusterMetrics, ResilienceError, RetryPolicy,
    breaker::Guard,
    policy::{Class, Condition, Failure},
};

/// Replays of a request the upstream provably did not process, beyond the policy's attempts.
/// Concurrent requests racing a server's GOAWAY may each be refused on a connection or two.
const MAX_UNPROCESSED: u32 = 4;

/// What one attempt is given.
#[derive(Clone, Copy, Debug)]
pub struct AttemptCx {
    /// 1 for the first attempt.
    pub n: u32,
    /// The attempt must end by then: the earlier of the per-try and the request deadlines.
    pub deadline: Option<Instant>,
    /// Endpoints earlier attempts used; the pick prefers others.
    pub tried: Tried,
}

/// A response that came back, with what retrying needs to know of it.
pub struct Reply<R> {
    pub rsp: R,
    pub status: u16,
    /// `grpc-status` of a trailers-only gRPC response.
    pub grpc: Option<u32>,
    pub endpoint: usize,
}

/// How one attempt ended.
pub enum Outcome<R, E> {
    Response(Reply<R>),
    Failed {
        err: E,
        failure: Failure,
        endpoint: Option<usize>,
    },
}

impl<R, E> Outcome<R, E> {
    fn class(&self) -> Class {
        match self {
            Outcome::Response(r) => Class::Response {
                status: r.status,
                grpc: r.grpc,
            },
            Outcome::Failed { failure, .. } => Class::Failed(*failure),
        }
    }

    fn endpoint(&self) -> Option<usize> {
        match self {
            Outcome::Response(r) => Some(r.endpoint),
            Outcome::Failed { endpoint, .. } => *endpoint,
        }
    }

    fn into_result(self) -> Result<R, E> {
        match self {
            Outcome::Response(r) => Ok(r.rsp),
            Outcome::Failed { err, .. } => Err(err),
        }
    }
}

/// The caller's half of the loop: one send to one endpoint.
pub trait Attempt {
    type Response: Send;
    type Error: From<ResilienceError> + Send;

    fn attempt(
        &mut self,
        cx: AttemptCx,
    ) -> impl Future<Output = Outcome<Self::Response, Self::Error>> + Send;

    /// The request can be sent once more (its body is still replayable).
    fn can_replay(&self) -> bool;

    /// The wait a failed response asks for (`Retry-After`, `grpc-retry-pushback-ms`).
    fn pushback(rsp: &Self::Response) -> Option<Duration>;
}

/// What the loop needs to know about the request and where it goes.
pub struct Plan<'a> {
    pub retry: Option<&'a RetryPolicy>,
    /// `timeouts.backendRequest`.
    pub per_try: Option<Duration>,
    /// `timeouts.request`, over every attempt and the waits between them.
    pub request_timeout: Option<Duration>,
    pub idempotent: bool,
    pub grpc: bool,
    pub breaker: &'a Breaker,
    pub budget: Option<&'a Budget>,
    pub metrics: &'a ClusterMetrics,
}

/// The loop's result and how many attempts it took.
pub struct Finished<R, E> {
    pub result: Result<R, E>,
    pub attempts: u32,
}

/// Decides, outcome by outcome, whether the request goes again. Pure: no clock, no I/O.
#[derive(Debug)]
pub struct RetryState<'a> {
    policy: Option<&'a RetryPolicy>,
    idempotent: bool,
    grpc: bool,
    /// Retries the policy made so far.
    policy_retries: u32,
    /// Replays of unprocessed requests outside the policy.
    unprocessed: u32,
}

impl<'a> RetryState<'a> {
    pub fn new(policy: Option<&'a RetryPolicy>, idempotent: bool, grpc: bool) -> Self {
        RetryState {
            policy,
            idempotent,
            grpc,
            policy_retries: 0,
            unprocessed: 0,
        }
    }

    /// The condition under which the request goes again, if it does. `can_replay`: the body
    /// can be sent once more.
    pub fn decide(&mut self, class: Class, can_replay: bool) -> Option<Condition> {
        if !can_replay {
            return None;
        }
        // Attempts the policy still allows; unprocessed replays do not spend them.
        let policy_left = self.policy.filter(|p| self.policy_retries + 1 < p.attempts);
        let listed = policy_left.and_then(|p| p.matching(class, self.grpc));
        if let Class::Failed(Failure::Refused) = class {
            // Always safe: nothing reached the application.
            if let Some(c) = listed {
                self.policy_retries += 1;
                return Some(c);
            }
            if self.unprocessed < MAX_UNPROCESSED {
                self.unprocessed += 1;
                return Some(Condition::Unprocessed);
            }
            return None;
        }
        let c = listed?;
        // gRPC calls are POSTs, but their retry conditions are theirs to list (DESIGN: the
        // non-idempotent rule is for other requests).
        let safe = self.idempotent
            || self.grpc
            || policy_left.is_some_and(|p| p.non_idempotent)
            || matches!(class, Class::Failed(Failure::ConnectFailure));
        if safe {
            self.policy_retries += 1;
        }
        safe.then_some(c)
    }

    /// A retried attempt's outcome for the metric: `true` unless the policy would retry it.
    fn succeeded(&self, class: Class) -> bool {
        match class {
            Class::Failed(_) => false,
            Class::Response { .. } => self
                .policy
                .is_none_or(|p| p.matching(class, self.grpc).is_none()),
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Runs attempts until one is final: a response or failure the policy does not retry, the
/// policy's attempts spent, the budget or `maxRetries` exhausted, or the request deadline.
pub async fn run<A: Attempt>(plan: &Plan<'_>, a: &mut A) -> Finished<A::Response, A::Error> {
    let deadline = plan.request_timeout.map(|t| Instant::now() + t);
    let mut state = RetryState::new(plan.retry, plan.idempotent, plan.grpc);
    let mut backoff: Option<Backoff> = None;
    let mut tried = Tried::default();
    let mut retrying: Option<(Condition, Option<Guard>)> = None;
    let mut n = 1;
    loop {
        let per_try = plan.per_try.map(|t| Instant::now() + t);
        let cx = AttemptCx {
            n,
            deadline: earliest(per_try, deadline),
            tried,
        };
        let outcome = a.attempt(cx).await;
        let class = outcome.class();
        if let Some((reason, _guard)) = retrying.take() {
            plan.metrics.retried(reason, state.succeeded(class));
        }
        if let (Class::Failed(Failure::Timeout), Some(d)) = (class, deadline)
            && Instant::now() >= d
        {
            return timed_out(plan, n);
        }
        let Some(reason) = state.decide(class, a.can_replay()) else {
            return Finished {
                result: outcome.into_result(),
                attempts: n,
            };
        };
        let guard = match plan.breaker.retry() {
            Ok(g) => g,
            Err(_) => {
                return Finished {
                    result: outcome.into_result(),
                    attempts: n,
                };
            }
        };
        if plan.budget.is_some_and(|b| !b.withdraw()) {
            plan.metrics.budget_exhausted();
            return Finished {
                result: outcome.into_result(),
                attempts: n,
            };
        }
        // A refused request goes again at once: nothing was processed, there is nothing to
        // wait for. Other retries back off, or wait as long as the upstream asked (capped).
        let wait = if reason == Condition::Unprocessed {
            Duration::ZERO
        } else {
            let policy = plan.retry;
            let b = backoff.get_or_insert_with(|| {
                policy.map_or_else(
                    || Backoff::new(Duration::ZERO, Duration::ZERO),
                    |p| p.backoff(),
                )
            });
            let jittered = b.next_wait();
            let asked = match &outcome {
                Outcome::Response(r) => A::pushback(&r.rsp),
                Outcome::Failed { .. } => None,
            };
            match (asked, policy) {
                (Some(asked), Some(p)) => asked.min(p.backoff_max),
                _ => jittered,
            }
        };
        if let Some(i) = outcome.endpoint() {
            tried.add(i);
        }
        drop(outcome);
        if !wait.is_zero() {
            let until = Instant::now() + wait;
            match deadline {
                Some(d) if d <= until => {
                    tokio::time::sleep_until(d).await;
                    return timed_out(plan, n);
                }
                _ => tokio::time::sleep_until(until).await,
            }
        }
        retrying = Some((reason, guard));
        n += 1;
    }
}

fn timed_out<R, E: From<ResilienceError>>(plan: &Plan<'_>, attempts: u32) -> Finished<R, E> {
    Finished {
        result: Err(ResilienceError::Timeout {
            after: plan.request_timeout.unwrap_or_default(),
        }
        .into()),
        attempts,
    }
}

#[cfg(test)]
mod tests {
    use skiff_api::model::{self, RetryOn};

    use super::*;

    fn policy(attempts: u32, on: &[RetryOn], non_idempotent: bool) -> RetryPolicy {
        RetryPolicy::compile(&model::Retry {
            attempts,
            retry_on: on.to_vec(),
            backoff: None,
            max_body_bytes: 65536,
            non_idempotent,
            retriable_status_codes: Vec::new(),
        })
    }

    const E503: Class = Class::Response {
        status: 503,
        grpc: None,
    };

    #[test]
    fn attempts_count_the_first() {
        let p = policy(3, &[RetryOn::Status5xx], false);
        let mut s = RetryState::new(Some(&p), true, false);
        assert_eq!(s.decide(E503, true), Some(Condition::Status5xx));
        assert_eq!(s.decide(E503, true), Some(Condition::Status5xx));
        assert_eq!(s.decide(E503, true), None, "3 attempts made");
    }

    #[test]
    fn no_policy_no_retry_but_unprocessed_goes_again() {
        let mut s = RetryState::new(None, false, false);
        assert_eq!(s.decide(E503, true), None);
        let mut s = RetryState::new(None, false, false);
        for _ in 0..MAX_UNPROCESSED {
            assert_eq!(
                s.decide(Class::Failed(Failure::Refused), true),
                Some(Condition::Unprocessed)
            );
        }
        assert_eq!(
            s.decide(Class::Failed(Failure::Refused), true),
            None,
            "bounded"
        );
    }

    #[test]
    fn non_idempotent_only_on_safe_failures() {
        let p = policy(3, &[RetryOn::Status5xx, RetryOn::ConnectFailure], false);
        let mut s = RetryState::new(Some(&p), false, false);
        assert_eq!(
            s.decide(E503, true),
            None,
            "a POST answered 503 is not retried"
        );
        let mut s = RetryState::new(Some(&p), false, false);
        assert_eq!(
            s.decide(Class::Failed(Failure::ConnectFailure), true),
            Some(Condition::ConnectFailure)
        );
        assert_eq!(
            s.decide(Class::Failed(Failure::Refused), true),
            Some(Condition::Unprocessed),
            "a refused stream is always safe, and not the policy's to count"
        );
        let mut s = RetryState::new(Some(&p), false, false);
        assert_eq!(s.decide(Class::Failed(Failure::Reset), true), None);
        let allowed = policy(3, &[RetryOn::Status5xx], true);
        let mut s = RetryState::new(Some(&allowed), false, false);
        assert_eq!(s.decide(E503, true), Some(Condition::Status5xx));
    }

    #[test]
    fn grpc_calls_are_not_held_to_the_non_idempotent_rule() {
        let p = policy(3, &[RetryOn::Unavailable], false);
        let mut s = RetryState::new(Some(&p), false, true);
        let unavailable = Class::Response {
            status: 200,
            grpc: Some(14),
        };
        assert_eq!(s.decide(unavailable, true), Some(Condition::Unavailable));
    }

    #[test]
    fn unreplayable_body_is_never_retried() {
        let p = policy(3, &[RetryOn::Status5xx], false);
        let mut s = RetryState::new(Some(&p), true, false);
        assert_eq!(s.decide(E503, false), None);
        assert_eq!(s.decide(Class::Failed(Failure::Refused), false), None);
    }

    #[test]
    fn unprocessed_replays_leave_the_policy_attempts_alone() {
        let p = policy(2, &[RetryOn::Status5xx], false);
        let mut s = RetryState::new(Some(&p), true, false);
        let refused = Class::Failed(Failure::Refused);
        assert_eq!(s.decide(refused, true), Some(Condition::Unprocessed));
        assert_eq!(s.decide(E503, true), Some(Condition::Status5xx));
        assert_eq!(s.decide(E503, true), None, "2 attempts of the policy made");
        let listed = policy(2, &[RetryOn::RefusedStream], false);
        let mut s = RetryState::new(Some(&listed), false, false);
        assert_eq!(s.decide(refused, true), Some(Condition::RefusedStream));
        assert_eq!(s.decide(refused, true), Some(Condition::Unprocessed));
    }

    #[test]
    fn local_failures_are_final() {
        let p = policy(3, &[RetryOn::Status5xx], false);
        let mut s = RetryState::new(Some(&p), true, false);
        assert_eq!(s.decide(Class::Failed(Failure::Local), true), None);
    }

    #[test]
    fn tried_set() {
        let mut t = Tried::default();
        assert_eq!(t, Tried::default());
        t.add(3);
        t.add(70);
        assert!(t.contains(3));
        assert!(!t.contains(2));
        assert!(
            !t.contains(70),
            "past 64 endpoints the preference is dropped"
        );
    }
}
