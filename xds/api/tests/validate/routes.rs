//! Rules for routes: names, matches, backend references, timeouts, retry and fault ranges.

use super::*;

fn with_route(route: &str) -> String {
    format!(
        "services: [ {{ name: a, routes: [ {{ name: r0 }}, {route} ] }}, {{ name: b }}, {{ name: c, namespace: other }} ]"
    )
}

const R: &str = "services[0].routes[1]";

#[test]
fn route_names_are_unique_within_a_service() {
    only(&with_route("{ name: r0 }"), &format!("{R}.name"));
    // The default name of routes[1] is route-1.
    only(
        "services: [ { name: a, routes: [ { name: route-1 }, { } ] } ]",
        R,
    );
    valid(
        "services: [ { name: a, routes: [ { name: r } ] }, { name: b, routes: [ { name: r } ] } ]",
    );
}

#[test]
fn exact_and_prefix_paths_start_with_a_slash() {
    only(
        &with_route("{ matches: [ { path: { value: api } } ] }"),
        &format!("{R}.matches[0].path.value"),
    );
    only(
        &with_route("{ matches: [ {}, { path: { type: Exact, value: 'x/' } } ] }"),
        &format!("{R}.matches[1].path.value"),
    );
    only(
        &with_route("{ matches: [ { path: { type: Exact, value: '/a?b=1' } } ] }"),
        &format!("{R}.matches[0].path.value"),
    );
}

#[test]
fn regular_expressions_compile_whole() {
    only(
        &with_route("{ matches: [ { path: { type: RegularExpression, value: '/a(' } } ] }"),
        &format!("{R}.matches[0].path.value"),
    );
    // Only compiles once wrapped in `^(?:...)$`, with another meaning: refused.
    only(
        &with_route("{ matches: [ { path: { type: RegularExpression, value: '/a)|(/b' } } ] }"),
        &format!("{R}.matches[0].path.value"),
    );
    only(
        &with_route(
            "{ matches: [ { headers: [ { name: x, type: RegularExpression, value: '[' } ] } ] }",
        ),
        &format!("{R}.matches[0].headers[0].value"),
    );
    only(
        &with_route(
            "{ matches: [ { queryParams: [ { name: q, value: ok }, { name: q, type: RegularExpression, value: '*' } ] } ] }",
        ),
        &format!("{R}.matches[0].queryParams[1].value"),
    );
    // Not a regex when the type is Exact.
    valid(&with_route(
        "{ matches: [ { headers: [ { name: x, value: '[' } ] } ] }",
    ));
}

#[test]
fn methods_and_header_names_are_tokens() {
    only(
        &with_route("{ matches: [ { method: 'GE T' } ] }"),
        &format!("{R}.matches[0].method"),
    );
    only(
        &with_route("{ matches: [ { headers: [ { name: 'x:y', value: v } ] } ] }"),
        &format!("{R}.matches[0].headers[0].name"),
    );
    valid(&with_route(
        "{ matches: [ { method: PURGE, headers: [ { name: x-canary, value: v } ] } ] }",
    ));
}

#[test]
fn query_param_names_are_not_empty() {
    only(
        &with_route("{ matches: [ { queryParams: [ { name: '', value: v } ] } ] }"),
        &format!("{R}.matches[0].queryParams[0].name"),
    );
}

#[test]
fn backend_refs_name_existing_services() {
    let msg = only(
        &with_route("{ backendRefs: [ { service: a }, { service: reviews-v3 } ] }"),
        &format!("{R}.backendRefs[1].service"),
    );
    assert_eq!(msg, r#"no service "reviews-v3" in namespace "default""#);
    // The namespace defaults to the route's service's, so `c` needs its own.
    only(
        &with_route("{ backendRefs: [ { service: c } ] }"),
        &format!("{R}.backendRefs[0].service"),
    );
    valid(&with_route(
        "{ backendRefs: [ { service: c, namespace: other }, { service: b } ] }",
    ));
}

#[test]
fn backend_weights_are_bounded_and_may_all_be_zero() {
    let msg = only(
        &with_route("{ backendRefs: [ { service: a }, { service: b, weight: 2000000 } ] }"),
        &format!("{R}.backendRefs[1].weight"),
    );
    assert_eq!(msg, "must be at most 1000000, got 2000000");
    valid(&with_route(
        "{ backendRefs: [ { service: a, weight: 0 }, { service: b, weight: 0 } ] }",
    ));
    valid(&with_route(
        "{ backendRefs: [ { service: a, weight: 1000000 } ] }",
    ));
}

#[test]
fn timeouts_are_positive() {
    only(
        &with_route("{ timeouts: { request: 0s } }"),
        &format!("{R}.timeouts.request"),
    );
    only(
        &with_route("{ timeouts: { backendRequest: 0s } }"),
        &format!("{R}.timeouts.backendRequest"),
    );
    // As in the Gateway API, a try cannot outlive its request.
    only(
        &with_route("{ timeouts: { request: 1s, backendRequest: 2s } }"),
        &format!("{R}.timeouts.backendRequest"),
    );
}

#[test]
fn retry_ranges() {
    only(
        &with_route("{ retry: { attempts: 0 } }"),
        &format!("{R}.retry.attempts"),
    );
    only(
        &with_route("{ retry: { attempts: 11 } }"),
        &format!("{R}.retry.attempts"),
    );
    only(
        &with_route("{ retry: { retryOn: [] } }"),
        &format!("{R}.retry.retryOn"),
    );
    only(
        &with_route("{ retry: { backoff: { base: 0s } } }"),
        &format!("{R}.retry.backoff.base"),
    );
    only(
        &with_route("{ retry: { backoff: { base: 1s, max: 100ms } } }"),
        &format!("{R}.retry.backoff.base"),
    );
    only(
        &with_route("{ retry: { maxBodyBytes: 16777217 } }"),
        &format!("{R}.retry.maxBodyBytes"),
    );
    valid(&with_route(
        "{ retry: { attempts: 10, maxBodyBytes: 16777216, backoff: { base: 1s, max: 1s } } }",
    ));
}

#[test]
fn fault_ranges() {
    only(
        &with_route("{ fault: { abort: { percent: 101, status: 503 } } }"),
        &format!("{R}.fault.abort.percent"),
    );
    only(
        &with_route("{ fault: { abort: { percent: .nan, status: 503 } } }"),
        &format!("{R}.fault.abort.percent"),
    );
    only(
        &with_route("{ fault: { abort: { percent: 5, status: 600 } } }"),
        &format!("{R}.fault.abort.status"),
    );
    only(
        &with_route("{ fault: { abort: { percent: 5, status: 199 } } }"),
        &format!("{R}.fault.abort.status"),
    );
    only(
        &with_route("{ fault: { delay: { percent: -1, duration: 1s } } }"),
        &format!("{R}.fault.delay.percent"),
    );
    only(
        &with_route("{ fault: { delay: { percent: 1, duration: 0s } } }"),
        &format!("{R}.fault.delay.duration"),
    );
    valid(&with_route(
        "{ fault: { abort: { percent: 100, status: 200 }, delay: { percent: 0, duration: 1ms } } }",
    ));
}

// ---- resilience fields: a bad value is refused naming its path ----
