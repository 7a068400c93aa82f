//! gRPC retry conditions: a call failed UNAVAILABLE (trailers-only) is retried under
//! `retryOn: [unavailable]`; a status the policy does not list comes back untouched.

use skiff_xds::pb::EchoRequest;
use tonic::Code;

use super::ATTEMPTS;
use crate::{
    grpc::grpc_client,
    support::{STEP, proxy::Proxy, upstream::GrpcUpstream, within},
};

fn mesh(unavailable: &GrpcUpstream, invalid: &GrpcUpstream) -> String {
    let service = |name: &str, upstream: &GrpcUpstream| {
        format!(
            r#"
  - name: {name}
    protocol: grpc
    endpoints: [{{ address: "{}" }}]
    routes:
      - name: main
        retry: {{ attempts: 3, retryOn: [unavailable] }}
"#,
            upstream.addr()
        )
    };
    format!(
        "services:{}{}",
        service("flaky-echo", unavailable),
        service("strict-echo", invalid)
    )
}

fn hello() -> EchoRequest {
    EchoRequest {
        message: "hello".into(),
        fail_with: 0,
    }
}

#[tokio::test]
async fn unavailable_is_retried_and_invalid_argument_is_not() {
    let unavailable = GrpcUpstream::builder("flaky-echo")
        .fail_first(1, Code::Unavailable)
        .start()
        .await;
    let invalid = GrpcUpstream::builder("strict-echo")
        .fail_first(1, Code::InvalidArgument)
        .start()
        .await;
    let proxy = Proxy::start(&mesh(&unavailable, &invalid)).await;

    let mut client = grpc_client(proxy.outbound, "flaky-echo").await;
    let rsp = within("unary on flaky-echo", STEP, client.unary(hello()))
        .await
        .expect("the retry succeeds");
    assert_eq!(
        rsp.metadata().get(ATTEMPTS).and_then(|v| v.to_str().ok()),
        Some("2"),
        "{rsp:?}"
    );
    assert_eq!(rsp.into_inner().served_by, "flaky-echo");
    assert_eq!(unavailable.calls(), 2, "the failed call and its retry");

    let mut client = grpc_client(proxy.outbound, "strict-echo").await;
    let status = within("unary on strict-echo", STEP, client.unary(hello()))
        .await
        .expect_err("INVALID_ARGUMENT is not in retryOn");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.metadata().get(ATTEMPTS).is_none(),
        "one attempt: {status:?}"
    );
    assert!(
        status.metadata().get("x-skiff-reason").is_none(),
        "the upstream's own status: {status:?}"
    );
    assert_eq!(invalid.calls(), 1, "not retried");

    let m = proxy.metric_values().await;
    assert_eq!(
        m.sum(
            "skiff_retry_attempts_total",
            &[("service", "flaky-echo"), ("reason", "unavailable")]
        ),
        1.0
    );
    assert_eq!(
        m.sum("skiff_retry_attempts_total", &[("service", "strict-echo")]),
        0.0
    );
}
