//! Clients in front of the proxy: hyper HTTP/1.1 and h2c (prior knowledge) requests, raw TCP
//! bytes for what hyper would refuse to send, and an OpenMetrics reader for `/metrics`.

use std::{collections::BTreeMap, net::SocketAddr};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, Version, header::HOST};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{STEP, within};

/// The reason token header the proxy puts on responses it makes itself.
pub const SKIFF_REASON: &str = "x-skiff-reason";

/// A response read to its end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `x-skiff-reason`, present only on responses the proxy made itself.
    pub fn reason(&self) -> Option<&str> {
        self.header(SKIFF_REASON)
    }

    /// `x-served-by`, set by every test upstream.
    pub fn served_by(&self) -> Option<&str> {
        self.header("x-served-by")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request builder with origin-form target and a `Host` header (HTTP/1.1 style; `H2Conn`
/// turns it into `:authority`).
pub fn request(method: Method, host: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, host)
}

pub fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    request(Method::GET, host, path)
        .body(Full::default())
        .expect("static request parts are valid")
}

pub fn post(host: &str, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    request(Method::POST, host, path)
        .body(Full::new(body.into()))
        .expect("static request parts are valid")
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
    let reply = send_h1(addr, req).await;
    (reply.status, reply.headers, reply.body)
}

/// One HTTP/1.1 request on a fresh connection, panicking on transport errors.
pub async fn send_h1(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    let mut conn = H1Conn::connect(addr).await;
    conn.send(req).await
}

/// One HTTP/1.1 request on a fresh connection; transport errors come back as text.
pub async fn try_send_h1(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Reply, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    try_send_h1_over(stream, req).await
}

/// One HTTP/1.1 request on a connection the caller opened (e.g. in another namespace).
pub async fn try_send_h1_over(
    stream: TcpStream,
    req: Request<Full<Bytes>>,
) -> Result<Reply, String> {
    let mut conn = H1Conn::handshake(stream).await?;
    conn.try_send(req).await
}

/// One HTTP/2 (prior knowledge) request on a fresh connection.
pub async fn send_h2(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    H2Conn::connect(addr).await.send(req).await
}

/// A kept-alive HTTP/1.1 client connection.
pub struct H1Conn {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl H1Conn {
    pub async fn connect(addr: SocketAddr) -> H1Conn {
        let stream = within("connect", STEP, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        H1Conn::handshake(stream)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn handshake(stream: TcpStream) -> Result<H1Conn, String> {
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H1Conn { sender })
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Reply {
        let what = format!("{} {}", req.method(), req.uri());
        self.try_send(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    pub async fn try_send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, String> {
        within("h1 request", STEP, async {
            self.sender
                .ready()
                .await
                .map_err(|e| format!("connection not ready: {e}"))?;
            let rsp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| format!("h1 request: {e}"))?;
            read_reply(rsp).await
        })
        .await
    }
}

/// An HTTP/2 prior-knowledge client connection; clones share the connection (multiplexing).
#[derive(Clone)]
pub struct H2Conn {
    sender: http2::SendRequest<Full<Bytes>>,
}

impl H2Conn {
    pub async fn connect(addr: SocketAddr) -> H2Conn {
        let stream = within("connect", STEP, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let (sender, conn) = within(
            "h2 handshake",
            STEP,
            http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
        )
        .await
        .unwrap_or_else(|e| panic!("h2 handshake with {addr}: {e}"));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H2Conn { sender }
    }

    /// Sends `req`; an origin-form target plus `Host` becomes an absolute `http://host/path` URI
    /// (`:authority`), as an h2 client would send it.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let what = format!("{} {}", req.method(), req.uri());
        self.try_send(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    pub async fn try_send(&self, mut req: Request<Full<Bytes>>) -> Result<Reply, String> {
        if req.uri().authority().is_none() {
            let host = req
                .headers_mut()
                .remove(HOST)
                .ok_or("h2 request without authority or Host")?;
            let host = host.to_str().map_err(|e| e.to_string())?.to_owned();
            let path = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            *req.uri_mut() = Uri::builder()
                .scheme("http")
                .authority(host)
                .path_and_query(path)
                .build()
                .map_err(|e| e.to_string())?;
        }
        *req.version_mut() = Version::HTTP_2;
        let mut sender = self.sender.clone();
        within("h2 request", STEP, async move {
            sender
                .ready()
                .await
                .map_err(|e| format!("connection not ready: {e}"))?;
            let rsp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("h2 request: {e}"))?;
            read_reply(rsp).await
        })
        .await
    }
}

async fn read_reply(rsp: http::Response<hyper::body::Incoming>) -> Result<Reply, String> {
    let (parts, body) = rsp.into_parts();
    let collected = body
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?;
    let trailers = collected.trailers().cloned();
    Ok(Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// A raw TCP connection with a read buffer, for bytes hyper would not send and for checking
/// exactly what crosses the wire.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = within("connect", STEP, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        within("raw write", STEP, self.stream.write_all(bytes))
            .await
            .expect("raw write");
    }

    /// Writes what it can; a proxy that answers early and closes may refuse the rest.
    pub async fn write_lenient(&mut self, bytes: &[u8]) {
        let _ = within("raw write", STEP, self.stream.write_all(bytes)).await;
    }

    /// Sends FIN: the client is done writing but keeps reading.
    pub async fn shutdown_write(&mut self) {
        self.stream.shutdown().await.expect("shutdown write side");
    }

    /// Sends FIN if it still can; a peer that already reset the connection may refuse it.
    pub async fn shutdown_write_lenient(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Reads until `pattern` has arrived and returns everything up to and including it; the rest
    /// stays buffered. Panics on EOF or at the deadline.
    pub async fn read_until(&mut self, pattern: &[u8]) -> Vec<u8> {
        within(
            &format!("waiting for {:?}", String::from_utf8_lossy(pattern)),
            STEP,
            async {
                loop {
                    if let Some(at) = find(&self.buf, pattern) {
                        return self.buf.drain(..at + pattern.len()).collect();
                    }
                    if self.fill().await == 0 {
                        panic!(
                            "EOF before {:?}; got {:?}",
                            String::from_utf8_lossy(pattern),
                            String::from_utf8_lossy(&self.buf)
                        );
                    }
                }
            },
        )
        .await
    }

    /// Reads until EOF (a reset counts as EOF) and returns the buffered bytes plus the rest.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        within("raw read to EOF", STEP, async {
            while self.fill().await > 0 {}
            std::mem::take(&mut self.buf)
        })
        .await
    }

    /// Reads one HTTP/1.x response (an interim `1xx` one counts as a response).
    pub async fn read_response(&mut self) -> RawResponse {
        within("raw response", STEP, self.read_response_inner()).await
    }

    async fn read_response_inner(&mut self) -> RawResponse {
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            if self.fill().await == 0 {
                panic!(
                    "EOF inside a response head; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        };
        let head: Vec<u8> = self.buf.drain(..head_end).collect();
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_owned();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad header line {l:?}"));
                (n.to_owned(), v.trim().to_owned())
            })
            .collect();
        let mut rsp = RawResponse {
            status,
            head,
            headers,
            body: Vec::new(),
        };
        if (100..200).contains(&status) || status == 204 || status == 304 {
            return rsp;
        }
        if rsp
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            rsp.body = self.read_chunked().await;
        } else if let Some(len) = rsp.header("content-length") {
            let len: usize = len
                .parse()
                .unwrap_or_else(|_| panic!("bad content-length {len:?}"));
            while self.buf.len() < len {
                if self.fill().await == 0 {
                    panic!("EOF after {} of {len} body bytes", self.buf.len());
                }
            }
            rsp.body = self.buf.drain(..len).collect();
        } else {
            while self.fill().await > 0 {}
            rsp.body = std::mem::take(&mut self.buf);
        }
        rsp
    }

    async fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.read_until(b"\r\n").await;
            let size = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
            let size = size.split(';').next().unwrap_or_default().trim().to_owned();
            let size = usize::from_str_radix(&size, 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
            if size == 0 {
                // Trailer section: header lines up to an empty line.
                while self.read_until(b"\r\n").await.len() > 2 {}
                return body;
            }
            while self.buf.len() < size + 2 {
                if self.fill().await == 0 {
                    panic!("EOF inside a chunk");
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// One read into the buffer; 0 on EOF or reset.
    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(_) => 0,
        }
    }
}

/// An HTTP/1.x response as read off the wire; header names keep their case.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The head as received, status line and headers.
    pub head: String,
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn reason(&self) -> Option<&str> {
        self.header(SKIFF_REASON)
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Runs curl with `args` (blocking, on the blocking pool) and returns its stdout; panics with
/// stderr when curl fails.
pub async fn curl(args: Vec<String>) -> Vec<u8> {
    let shown = args.join(" ");
    let out = within(
        "curl",
        STEP,
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-sS", "--max-time", "15"])
                .args(&args)
                .output()
        }),
    )
    .await
    .expect("curl task")
    .expect("curl is installed");
    assert!(
        out.status.success(),
        "curl {shown} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// One parsed OpenMetrics sample.
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the OpenMetrics text format strictly enough to catch a broken page: every line is
    /// a comment, a sample `name{labels} value [timestamp]`, and `# EOF` is the last line.
    pub fn parse(text: &str) -> Result<Metrics, String> {
        let body = text
            .strip_suffix('\n')
            .ok_or("page does not end with a newline")?;
        let mut lines: Vec<&str> = body.split('\n').collect();
        if lines.pop() != Some("# EOF") {
            return Err("last line is not `# EOF`".into());
        }
        let mut samples = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with('#') {
                if *line == "# EOF" {
                    return Err(format!("line {}: `# EOF` before the end", i + 1));
                }
                if !(line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.starts_with("# UNIT "))
                {
                    return Err(format!("line {}: unknown comment {line:?}", i + 1));
                }
                continue;
            }
            samples.push(parse_sample(line).map_err(|e| format!("line {}: {e}: {line:?}", i + 1))?);
        }
        Ok(Metrics { samples })
    }

    /// Sum over the samples named `name` whose labels include all of `labels`; 0 when none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
        })
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    let mut chars = name.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if !valid_start || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut s = after;
        loop {
            if let Some(r) = s.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = s.find('=').ok_or("label without `=`")?;
            let key = &s[..eq];
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("bad label name {key:?}"));
            }
            s = s[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut it = s.char_indices();
            let end = loop {
                match it.next() {
                    Some((_, '\\')) => match it.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err("dangling escape".into()),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            };
            labels.insert(key.to_owned(), value);
            s = &s[end + 1..];
            s = s.strip_prefix(',').unwrap_or(s);
        }
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    // Exemplars follow ` # `; the value is the first field, an optional timestamp the second.
    let rest = rest.split(" # ").next().unwrap_or_default();
    let mut fields = rest.split(' ');
    let raw = fields.next().unwrap_or_default();
    let value = match raw {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<f64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A header value the tests put on requests; panics only on test-authored bad input.
pub fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("test header values are valid")
}
