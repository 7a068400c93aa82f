//! The demo HTTP app: names itself and its version on `/`, and has a few paths that make
//! mesh behaviour visible (`/headers`, `/delay`, `/status/N`, `/echo`). Every response carries
//! `x-served-by`, so a traffic split shows which backend answered.

use std::{convert::Infallible, io, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, service::service_fn};

use super::serve::{AppHandle, bind_loopback, serve};

/// Response header naming the app instance that answered (`reviews-v2`).
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");

/// Longest `/delay` the app accepts, so a typo cannot park a connection for hours.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// Largest body `/echo` sends back.
const MAX_ECHO_BYTES: usize = 1 << 20;

struct HttpApp {
    /// `<app> <version>`, the body of `/`.
    title: String,
    served_by: HeaderValue,
}

/// Starts the demo HTTP app `app` at `version` on `127.0.0.1:0` and returns its address.
///
/// It answers, over HTTP/1.1 and h2c alike:
/// - `GET /`: `<app> <version>` and a newline;
/// - `GET /headers`: the request line and every request header it received, one per line;
/// - `GET /delay?ms=N`: the same as `/` after N milliseconds (at most 60 s);
/// - `GET /status/N`: status N (200 to 599);
/// - `POST /echo`: the request body (at most 1 MiB);
/// - anything else: 404.
///
/// Every response has `x-served-by: <app>-<version>`.
pub async fn spawn_http_app(app: &str, version: &str) -> io::Result<(SocketAddr, AppHandle)> {
    let served_by = HeaderValue::try_from(format!("{app}-{version}"))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let state = Arc::new(HttpApp {
        title: format!("{app} {version}"),
        served_by,
    });
    let listener = bind_loopback().await?;
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(state.respond(req).await) }
    });
    let handle = serve(listener, service)?;
    Ok((handle.addr(), handle))
}

impl HttpApp {
    async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let (status, body) = if path == "/" {
            (StatusCode::OK, format!("{}\n", self.title))
        } else if path == "/headers" {
            (StatusCode::OK, describe_request(&req))
        } else if path == "/delay" {
            match delay_from_query(req.uri().query()) {
                Some(delay) => {
                    tokio::time::sleep(delay).await;
                    (
                        StatusCode::OK,
                        format!("{} after {} ms\n", self.title, delay.as_millis()),
                    )
                }
                None => (
                    StatusCode::BAD_REQUEST,
                    "usage: /delay?ms=N with N at most 60000\n".to_owned(),
                ),
            }
        } else if let Some(code) = path.strip_prefix("/status/") {
            match code
                .parse::<u16>()
                .ok()
                .filter(|c| (200..=599).contains(c))
                .map(StatusCode::from_u16)
            {
                Some(Ok(status)) => (
                    status,
                    format!("{}: status {}\n", self.title, status.as_u16()),
                ),
                _ => (
                    StatusCode::BAD_REQUEST,
                    "usage: /status/N with N from 200 to 599\n".to_owned(),
                ),
            }
        } else if path == "/echo" && req.method() == Method::POST {
            return self.echo(req).await;
        } else {
            (
                StatusCode::NOT_FOUND,
                format!("{}: no such path {path}\n", self.title),
            )
        };
        self.reply(status, Bytes::from(body))
    }

    async fn echo(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match Limited::new(req.into_body(), MAX_ECHO_BYTES)
            .collect()
            .await
        {
            Ok(body) => self.reply(StatusCode::OK, body.to_bytes()),
            Err(_) => self.reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                Bytes::from_static(b"body over 1 MiB or broken\n"),
            ),
        }
    }

    fn reply(&self, status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
        let mut rsp = Response::new(Full::new(body));
        *rsp.status_mut() = status;
        let headers = rsp.headers_mut();
        headers.insert(SERVED_BY, self.served_by.clone());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        rsp
    }
}

/// `GET /headers HTTP/1.1` followed by `name: value` lines, as the app received them.
fn describe_request<B>(req: &Request<B>) -> String {
    let mut out = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
    for (name, value) in req.headers() {
        out.push_str(name.as_str());
        out.push_str(": ");
        out.push_str(&String::from_utf8_lossy(value.as_bytes()));
        out.push('\n');
    }
    out
}

/// `ms=N` from the query string; `None` when it is missing, malformed or over the cap.
fn delay_from_query(query: Option<&str>) -> Option<Duration> {
    let ms = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))?
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_millis(ms)).filter(|d| *d <= MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_query() {
        assert_eq!(
            delay_from_query(Some("ms=250")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(delay_from_query(Some("x=1&ms=0")), Some(Duration::ZERO));
        assert_eq!(delay_from_query(Some("ms=60001")), None);
        assert_eq!(delay_from_query(Some("ms=abc")), None);
        assert_eq!(delay_from_query(None), None);
    }

    #[test]
    fn request_description_lists_headers() {
        let req = Request::get("/headers")
            .header("x-test", "1")
            .body(())
            .expect("static request");
        let text = describe_request(&req);
        assert!(text.starts_with("GET /headers HTTP/1.1\n"), "{text}");
        assert!(text.contains("x-test: 1\n"), "{text}");
    }
}
