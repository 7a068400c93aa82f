//! A real `skiff --xds` proxy against a scripted control plane that sends it junk: unknown
//! type URLs, payloads of the wrong type, bytes that do not decode, names that do not match
//! their content. Each is NACKed with its reason and nonce; the proxy keeps serving, and the
//! same stream still applies a good response afterwards.

use std::net::SocketAddr;

use http::StatusCode;
use prost::Message;
use skiff_api::{
    pb::{
        self,
        discovery_server::{Discovery, DiscoveryServer},
    },
    resource::{self, Kind},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::support::{STEP, client, proxy::ProxyBuilder, upstream::HttpUpstream, within};

/// One accepted stream, handed to the test to script.
struct Opened {
    requests: Streaming<pb::DiscoveryRequest>,
    responses: mpsc::Sender<Result<pb::DiscoveryResponse, Status>>,
}

struct Scripted {
    opened: mpsc::Sender<Opened>,
}

#[tonic::async_trait]
impl Discovery for Scripted {
    type StreamStream = ReceiverStream<Result<pb::DiscoveryResponse, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<pb::DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let (responses, rx) = mpsc::channel(16);
        let opened = Opened {
            requests: request.into_inner(),
            responses,
        };
        self.opened
            .send(opened)
            .await
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn scripted_control_plane() -> (SocketAddr, mpsc::Receiver<Opened>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (opened, rx) = mpsc::channel(4);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DiscoveryServer::new(Scripted { opened }))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (addr, rx)
}

struct Script {
    stream: Opened,
    nonce: u64,
}

impl Script {
    async fn send(
        &mut self,
        type_url: &str,
        resources: Vec<pb::Resource>,
        removed: &[&str],
    ) -> String {
        self.nonce += 1;
        let nonce = format!("n{}", self.nonce);
        let rsp = pb::DiscoveryResponse {
            system_version_info: format!("v{}", self.nonce),
            resources,
            type_url: type_url.to_owned(),
            removed_resources: removed.iter().map(|s| (*s).to_owned()).collect(),
            nonce: nonce.clone(),
        };
        self.stream
            .responses
            .send(Ok(rsp))
            .await
            .expect("the proxy's stream is open");
        nonce
    }

    /// The proxy's answer to `nonce` (skipping subscription changes): its NACK message, or
    /// `None` for an ACK.
    async fn answer(&mut self, nonce: &str) -> Option<String> {
        within("the proxy answers", STEP, async {
            loop {
                let req = self
                    .stream
                    .requests
                    .message()
                    .await
                    .expect("a healthy stream")
                    .expect("the stream stays open");
                if req.response_nonce == nonce {
                    return req.error_detail.map(|d| d.message);
                }
            }
        })
        .await
    }
}

/// An envelope around any message, with the type URL and name given.
fn envelope(name: &str, type_url: &str, value: Vec<u8>) -> pb::Resource {
    let mut r = pb::Resource {
        name: name.to_owned(),
        version: resource::content_version(&value),
        resource: Some(Default::default()),
        aliases: Vec::new(),
    };
    if let Some(any) = &mut r.resource {
        any.type_url = type_url.to_owned();
        any.value = value;
    }
    r
}

#[tokio::test]
async fn junk_from_the_control_plane_is_nacked_and_the_proxy_keeps_serving() {
    let app = HttpUpstream::start("app").await;
    let mesh = skiff_api::load(&format!(
        "services:\n  - name: web\n    endpoints: [ {{ address: \"{}\" }} ]\nworkloads:\n  - name: client\n    inbound: {{ listen: \"127.0.0.1:1\", app: \"127.0.0.1:2\" }}\n",
        app.addr()
    ))
    .expect("valid mesh");
    let good = resource::compile(&mesh);
    let (addr, mut opened) = scripted_control_plane().await;
    let proxy = tokio::spawn(
        ProxyBuilder::xds(&format!("http://{addr}"))
            .workload("client", "default")
            .start(),
    );
    let stream = within("the proxy connects", STEP, opened.recv())
        .await
        .expect("a stream");
    let mut cp = Script { stream, nonce: 0 };

    // A first answer for every type: the workload and mesh settings, no services yet.
    let firsts = [
        (
            Kind::Workload,
            vec![good.workloads["default/client"].resource.clone()],
        ),
        (Kind::MeshSettings, vec![good.mesh.resource.clone()]),
        (Kind::Service, Vec::new()),
        (Kind::Endpoints, Vec::new()),
        (Kind::Authorization, Vec::new()),
    ];
    for (kind, resources) in firsts {
        let nonce = cp.send(kind.type_url(), resources, &[]).await;
        assert_eq!(cp.answer(&nonce).await, None, "{kind} is ACKed");
    }
    let p = proxy.await.expect("the proxy starts");
    let r = client::send_h1(p.outbound, client::get("web", "/")).await;
    assert_eq!(r.reason(), Some("unknown-service"), "not sent yet");

    let service = good.services["default/web"].resource.clone();
    let endpoints = good.endpoints["default/web"].resource.clone();
    let junk: Vec<(&str, Vec<pb::Resource>, &str)> = vec![
        (
            "type.googleapis.com/skiff.xds.v1.Nonsense",
            vec![service.clone()],
            "unknown type URL",
        ),
        (
            resource::SERVICE_TYPE_URL,
            vec![endpoints.clone()],
            "a Endpoints resource in a Service response",
        ),
        (
            resource::SERVICE_TYPE_URL,
            vec![envelope(
                "default/other",
                resource::SERVICE_TYPE_URL,
                good.services["default/web"].message.encode_to_vec(),
            )],
            "does not match its content",
        ),
        (
            resource::SERVICE_TYPE_URL,
            vec![pb::Resource {
                name: "default/web".into(),
                ..Default::default()
            }],
            "carries no payload",
        ),
    ];
    for (type_url, resources, reason) in junk {
        let nonce = cp.send(type_url, resources, &[]).await;
        let nack = cp.answer(&nonce).await;
        assert!(
            nack.as_deref().is_some_and(|m| m.contains(reason)),
            "{type_url}: NACK {nack:?} should say {reason:?}"
        );
        assert_eq!(p.ready_status().await, Some(StatusCode::OK));
    }

    // The same stream still takes good config.
    let nonce = cp
        .send(resource::ENDPOINTS_TYPE_URL, vec![endpoints], &[])
        .await;
    assert_eq!(cp.answer(&nonce).await, None);
    let nonce = cp
        .send(resource::SERVICE_TYPE_URL, vec![service], &[])
        .await;
    assert_eq!(cp.answer(&nonce).await, None);
    let r = client::send_h1(p.outbound, client::get("web", "/")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.served_by(), Some("app"));
    let dump = p.config_dump().await;
    assert!(
        dump["xds"]["lastNack"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("carries no payload")),
        "{dump}"
    );
}
