//! Resilience settings refused by path: shape errors, ranges, retriable status codes,
//! retryOn tokens, fault aborts.

use super::*;

/// A mesh whose one service holds `fields` (YAML flow-mapping entries) and the route `route`.
fn resilient(fields: &str, route: &str) -> String {
    format!("services: [ {{ name: a, {fields} routes: [ {route} ] }} ]")
}

/// The route as `services[0].routes[0]`.
fn on_route(route: &str) -> String {
    resilient("", route)
}

const R0: &str = "services[0].routes[0]";

#[test]
fn resilience_shape_errors_name_their_path() {
    // (the route, where serde stopped, fragments of its message)
    let cases: [(&str, &str, &[&str]); 4] = [
        // A negative count is no u32: serde refuses it where it stands.
        (
            "retry: { attempts: -1 }",
            "retry.attempts",
            &["must be an integer from 1 to 10, got -1", "line 4"],
        ),
        (
            "retry: { retryOn: [5xx, sometimes] }",
            "retry.retryOn[1]",
            &["must be one of 5xx,", "retriable-status-codes", "line 4"],
        ),
        (
            "retry: { retryOn: [retriable-status-codes], retriableStatusCodes: [70000] }",
            "retry.retriableStatusCodes[0]",
            &["must be an integer from 100 to 599, got 70000", "line 4"],
        ),
        (
            "fault: { abort: { percent: 1, grpcStatus: -1 } }",
            "fault.abort.grpcStatus",
            &["must be an integer from 0 to 16, got -1", "line 4"],
        ),
    ];
    for (route, path, fragments) in cases {
        let yaml = format!("services:\n  - name: a\n    routes:\n      - {route}\n");
        let err = load(&yaml).expect_err(&yaml);
        assert_eq!(err.errors.len(), 1, "{yaml}: {err}");
        assert_eq!(err.errors[0].path, format!("{R0}.{path}"), "{yaml}");
        let message = &err.errors[0].message;
        for fragment in fragments {
            assert!(message.contains(fragment), "{yaml}: {message:?}");
        }
    }
}

#[test]
fn resilience_rules_name_their_path() {
    let cases = [
        (
            on_route("{ retry: { attempts: 0 } }"),
            format!("{R0}.retry.attempts"),
            "must be from 1 to 10, got 0",
        ),
        (
            on_route("{ retry: { attempts: 11 } }"),
            format!("{R0}.retry.attempts"),
            "must be from 1 to 10, got 11",
        ),
        (
            on_route("{ retry: { backoff: { base: 1s, max: 100ms } } }"),
            format!("{R0}.retry.backoff.base"),
            "must be at most backoff.max (100ms), got 1s",
        ),
        (
            on_route("{ fault: { abort: { percent: 101, status: 503 } } }"),
            format!("{R0}.fault.abort.percent"),
            "must be from 0 to 100, got 101",
        ),
        (
            on_route("{ fault: { delay: { percent: -1, duration: 1s } } }"),
            format!("{R0}.fault.delay.percent"),
            "must be from 0 to 100, got -1",
        ),
        (
            on_route("{ fault: { abort: { percent: 5, grpcStatus: 17 } } }"),
            format!("{R0}.fault.abort.grpcStatus"),
            "must be from 0 to 16, got 17",
        ),
        (
            on_route("{ fault: { abort: { percent: 5, status: 503, grpcStatus: 14 } } }"),
            format!("{R0}.fault.abort"),
            "must set only one of status or grpcStatus",
        ),
        (
            resilient("outlierDetection: { maxEjectionPercent: 101 },", ""),
            "services[0].outlierDetection.maxEjectionPercent".to_owned(),
            "must be at most 100, got 101",
        ),
        (
            resilient("retryBudget: { ratio: 1.5 },", ""),
            "services[0].retryBudget.ratio".to_owned(),
            "must be from 0 to 1, got 1.5",
        ),
        (
            resilient("circuitBreaker: { maxRequests: 0 },", ""),
            "services[0].circuitBreaker.maxRequests".to_owned(),
            "must be at least 1, got 0",
        ),
        (
            "workloads: [ { name: w, rateLimit: { requestsPerSecond: 0 } } ]".to_owned(),
            "workloads[0].rateLimit.requestsPerSecond".to_owned(),
            "must be at least 1, got 0",
        ),
        (
            "workloads: [ { name: w, rateLimit: { requestsPerSecond: 1, burst: 0 } } ]".to_owned(),
            "workloads[0].rateLimit.burst".to_owned(),
            "must be at least 1, got 0",
        ),
    ];
    for (yaml, path, message) in cases {
        let errs = errors(&yaml);
        let got: Vec<_> = errs
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(got, [(path.as_str(), message)], "{yaml}");
    }
}

#[test]
fn retriable_status_codes_come_with_their_token() {
    let at = format!("{R0}.retry.retriableStatusCodes");
    for route in [
        "{ retry: { retryOn: [retriable-status-codes] } }",
        "{ retry: { retryOn: [5xx, retriable-status-codes], retriableStatusCodes: [] } }",
    ] {
        assert_eq!(
            only(&on_route(route), &at),
            "must not be empty when retryOn has retriable-status-codes",
            "{route}"
        );
    }
    // The default retryOn does not have the token either.
    for route in [
        "{ retry: { retriableStatusCodes: [429] } }",
        "{ retry: { retryOn: [5xx], retriableStatusCodes: [409, 429] } }",
    ] {
        assert_eq!(
            only(&on_route(route), &at),
            "only used with retryOn retriable-status-codes",
            "{route}"
        );
    }
    let errs = errors(&on_route(
        "{ retry: { retryOn: [retriable-status-codes], retriableStatusCodes: [409, 99, 600] } }",
    ));
    let got: Vec<_> = errs
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                format!("{at}[1]").as_str(),
                "must be from 100 to 599, got 99"
            ),
            (
                format!("{at}[2]").as_str(),
                "must be from 100 to 599, got 600"
            ),
        ]
    );
    valid(&on_route(
        "{ retry: { retryOn: [5xx, retriable-status-codes], retriableStatusCodes: [100, 409, 429, 599] } }",
    ));
}

#[test]
fn retry_on_tokens_are_listed_once() {
    let errs = errors(&on_route(
        "{ retry: { retryOn: [5xx, reset, unavailable, 5xx, reset] } }",
    ));
    let got: Vec<_> = errs
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "services[0].routes[0].retry.retryOn[3]",
                "5xx is listed twice (first at retryOn[0])"
            ),
            (
                "services[0].routes[0].retry.retryOn[4]",
                "reset is listed twice (first at retryOn[1])"
            ),
        ]
    );
}

#[test]
fn every_retry_on_token_is_spelled_as_documented() {
    let tokens: Vec<_> = RetryOn::ALL.iter().map(|on| on.as_str()).collect();
    let mesh = load(&dedent(&on_route(&format!(
        "{{ retry: {{ retryOn: [{}], retriableStatusCodes: [409] }} }}",
        tokens.join(", ")
    ))))
    .unwrap_or_else(|e| panic!("every token refused: {e}"));
    let retry = mesh.services[0].routes[0].retry.as_ref().expect("a retry");
    assert_eq!(retry.retry_on, RetryOn::ALL);
    assert_eq!(retry.retriable_status_codes, [409]);
}

#[test]
fn fault_abort_sets_status_or_grpc_status() {
    let at = format!("{R0}.fault.abort");
    assert_eq!(
        only(&on_route("{ fault: { abort: { percent: 5 } } }"), &at),
        "must set one of status or grpcStatus"
    );
    // Both set and out of range: each problem at its own path.
    assert_eq!(
        paths(&on_route(
            "{ fault: { abort: { percent: 5, status: 700, grpcStatus: 17 } } }"
        )),
        [
            at.clone(),
            format!("{at}.status"),
            format!("{at}.grpcStatus")
        ]
    );
    let mesh = load(&dedent(&on_route(
        "{ fault: { abort: { percent: 5, grpcStatus: 0 } } }",
    )))
    .unwrap_or_else(|e| panic!("grpcStatus 0 (OK) refused: {e}"));
    let abort = mesh.services[0].routes[0]
        .fault
        .as_ref()
        .and_then(|f| f.abort.clone())
        .expect("an abort");
    assert_eq!((abort.status, abort.grpc_status), (None, Some(0)));
    valid(&on_route(
        "{ fault: { abort: { percent: 5, grpcStatus: 16 } } }",
    ));
    valid(&on_route(
        "{ fault: { abort: { percent: 5, status: 599 } } }",
    ));
}

// ---- workloads ----
