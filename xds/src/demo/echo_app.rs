//! The demo gRPC app: `skiff.demo.v1.Echo` answering unary and bidirectional calls with the
//! name of the instance that served them, or with the status a request asks for (`fail_with`).
//! Served over h2c by the shared accept loop in `serve`.

use std::{io, net::SocketAddr, pin::Pin};

use futures_util::{Stream, StreamExt};
use hyper_util::service::TowerToHyperService;
use tonic::{Code, Request, Response, Status, Streaming, metadata::MetadataValue};

use super::serve::{AppHandle, bind_loopback, serve};
use crate::pb::{
    EchoReply, EchoRequest,
    echo_server::{Echo, EchoServer},
};

/// Starts the demo gRPC echo app on `127.0.0.1:0` and returns its address.
///
/// `Unary` echoes `message` with `served_by = name`; `Bidi` echoes every message in order.
/// A request whose `fail_with` is non-zero is answered with that gRPC status instead (on
/// `Bidi` it ends the stream). Responses and errors carry `x-served-by: <name>` metadata.
pub async fn spawn_grpc_echo(name: &str) -> io::Result<(SocketAddr, AppHandle)> {
    let served_by = MetadataValue::try_from(name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let app = EchoApp {
        name: name.to_owned(),
        served_by,
    };
    let listener = bind_loopback().await?;
    let handle = serve(listener, TowerToHyperService::new(EchoServer::new(app)))?;
    Ok((handle.addr(), handle))
}

#[derive(Clone)]
struct EchoApp {
    name: String,
    served_by: MetadataValue<tonic::metadata::Ascii>,
}

impl EchoApp {
    fn answer(&self, req: EchoRequest) -> Result<EchoReply, Status> {
        if req.fail_with != 0 {
            let message = format!("{} failing as asked", self.name);
            let mut status = Status::new(Code::from(req.fail_with), message);
            status
                .metadata_mut()
                .insert(SERVED_BY_KEY, self.served_by.clone());
            return Err(status);
        }
        Ok(EchoReply {
            message: req.message,
            served_by: self.name.clone(),
        })
    }

    fn respond<T>(&self, body: T) -> Response<T> {
        let mut rsp = Response::new(body);
        rsp.metadata_mut()
            .insert(SERVED_BY_KEY, self.served_by.clone());
        rsp
    }
}

/// gRPC metadata twin of the HTTP app's `x-served-by` header.
const SERVED_BY_KEY: &str = "x-served-by";

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Echo for EchoApp {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let reply = self.answer(req.into_inner())?;
        Ok(self.respond(reply))
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        // The stream outlives `&self`, so it answers through its own copy of the app.
        let app = self.clone();
        let replies = req
            .into_inner()
            .map(move |item| item.and_then(|req| app.answer(req)));
        // tonic ends the response stream with the first `Err` it yields, as trailers.
        let stream: ReplyStream = Box::pin(replies);
        Ok(self.respond(stream))
    }
}
