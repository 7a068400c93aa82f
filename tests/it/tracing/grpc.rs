//! gRPC through a sidecar: the client span is named `<service>/<method>` and carries the
//! `rpc.*` attributes, the status code read from trailers (a reply) or headers (trailers-only).

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use skiff_xds::pb::EchoRequest;
use tonic::Code;

use super::{one, sampled_parent, traced, wait_kind};
use crate::{
    grpc::grpc_client,
    support::{
        STEP,
        collector::{Attr, Collector},
        proxy::ProxyBuilder,
        upstream::GrpcUpstream,
        within,
    },
};

/// A unary call carrying a fresh sampled `traceparent`; returns its trace id and outcome.
async fn call(
    client: &mut skiff_xds::pb::echo_client::EchoClient<tonic::transport::Channel>,
    fail_with: i32,
) -> (String, Result<(), tonic::Status>) {
    let (trace, _, tp) = sampled_parent();
    let mut req = tonic::Request::new(EchoRequest {
        message: "hi".into(),
        fail_with,
    });
    req.metadata_mut()
        .insert("traceparent", tp.parse().expect("ascii header value"));
    let out = within("unary", STEP, client.unary(req)).await.map(|_| ());
    (trace, out)
}

#[tokio::test]
async fn grpc_call_spans_carry_rpc_attributes() {
    let collector = Collector::start().await;
    let echo = GrpcUpstream::start("echo-1").await;
    let mesh = format!(
        "services:\n  - name: echo\n    protocol: grpc\n    endpoints: [{{ address: \"{}\" }}]\n",
        echo.addr()
    );
    let proxy = traced(ProxyBuilder::new(&mesh), &collector.endpoint())
        .start()
        .await;
    let mut client = grpc_client(proxy.outbound, "echo").await;

    let (ok, out) = call(&mut client, 0).await;
    out.expect("the call succeeds");
    let (not_found, out) = call(&mut client, Code::NotFound as i32).await;
    assert_eq!(out.expect_err("fails as asked").code(), Code::NotFound);

    for (trace, code) in [(&ok, 0), (&not_found, Code::NotFound as i64)] {
        let spans = wait_kind(&collector, trace, SpanKind::Client).await;
        let span = one(&spans, SpanKind::Client);
        assert_eq!(span.name, "skiff.demo.v1.Echo/Unary", "{span:?}");
        assert_eq!(span.str("rpc.system"), Some("grpc"), "{span:?}");
        assert_eq!(
            span.str("rpc.service"),
            Some("skiff.demo.v1.Echo"),
            "{span:?}"
        );
        assert_eq!(span.str("rpc.method"), Some("Unary"), "{span:?}");
        assert_eq!(
            span.attr("rpc.grpc.status_code"),
            Some(&Attr::Int(code)),
            "{span:?}"
        );
        assert_eq!(span.str("network.protocol.version"), Some("2"), "{span:?}");
        assert_eq!(
            span.str("url.path"),
            Some("/skiff.demo.v1.Echo/Unary"),
            "{span:?}"
        );
    }
}
