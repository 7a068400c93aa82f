//! `skiff-xds status`: asks the control plane's admin port for `/proxies` and prints one row
//! per connected proxy (workload, namespace, connected since, each type's sent vs ACKed
//! version, the last NACK), like `istioctl proxy-status`. Owns only the table.

use std::{fmt::Write as _, process::ExitCode, time::Duration};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use skiff_api::resource::Kind;

use crate::server::{ProxiesReport, ProxyStatus, TypeStatus, registry::unix_now};

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// The control plane's admin address.
    #[arg(
        long,
        env = "SKIFF_XDS_ADMIN",
        default_value = "http://127.0.0.1:15014"
    )]
    pub admin: String,
}

const TIMEOUT: Duration = Duration::from_secs(5);

pub fn main(args: StatusArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff-xds status: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(async { tokio::time::timeout(TIMEOUT, fetch(&args.admin)).await }) {
        Ok(Ok(report)) => {
            print!("{}", table(&report, unix_now()));
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("skiff-xds status: {}: {e:#}", args.admin);
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "skiff-xds status: {}: no answer within {TIMEOUT:?}",
                args.admin
            );
            ExitCode::FAILURE
        }
    }
}

async fn fetch(admin: &str) -> anyhow::Result<ProxiesReport> {
    let body = admin_get(admin, "/proxies").await?;
    serde_json::from_slice(&body).context("GET /proxies: unexpected body")
}

/// `GET path_and_query` on an admin port given as `http://host:port`; the body of a 2xx
/// answer, else an error quoting the status and the body's first line.
pub(crate) async fn admin_get(admin: &str, path_and_query: &str) -> anyhow::Result<Bytes> {
    let uri: http::Uri = admin.parse().context("not a URL")?;
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow!("the URL has no host"))?
        .clone();
    let target = match authority.port_u16() {
        Some(_) => authority.to_string(),
        None => format!("{}:80", authority.host()),
    };
    let stream = tokio::net::TcpStream::connect(&target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::get(path_and_query)
        .header(http::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())?;
    let rsp = sender.send_request(req).await?;
    let status = rsp.status();
    let body = rsp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let first = text.lines().next().unwrap_or("").trim();
        let path = path_and_query.split('?').next().unwrap_or(path_and_query);
        bail!("GET {path} answered {status}: {first}");
    }
    Ok(body)
}

/// The printed table; `now` in seconds since the Unix epoch.
pub fn table(report: &ProxiesReport, now: u64) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        ["WORKLOAD", "NAMESPACE", "CONNECTED"]
            .into_iter()
            .map(str::to_owned)
            .chain(Kind::ALL.iter().map(|k| k.message_name().to_uppercase()))
            .chain(std::iter::once("LAST NACK".to_owned()))
            .collect(),
    ];
    for p in &report.proxies {
        rows.push(row(p, now));
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "config version: {}", report.config_version);
    if let Some(e) = &report.last_error {
        let _ = writeln!(out, "config error: {e}");
    }
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if report.proxies.is_empty() {
        out.push_str("no proxies connected\n");
    }
    out
}

fn row(p: &ProxyStatus, now: u64) -> Vec<String> {
    let mut cells = vec![
        p.workload.clone(),
        p.namespace.clone(),
        format!("{} ago", age(now.saturating_sub(p.connected_since))),
    ];
    let mut last_nack: Option<(u64, String)> = None;
    for kind in Kind::ALL {
        let t = p.types.get(kind.message_name());
        cells.push(t.map_or_else(|| "-".to_owned(), type_cell));
        if let Some(n) = t.and_then(|t| t.last_nack.as_ref())
            && last_nack.as_ref().is_none_or(|(at, _)| n.at >= *at)
        {
            let message = n.message.replace(['\r', '\n'], " ");
            last_nack = Some((n.at, format!("{kind}: {message}")));
        }
    }
    cells.push(last_nack.map_or_else(|| "-".to_owned(), |(_, m)| m));
    cells
}

/// `SYNCED 1a2b3c4d`, or `STALE sent=1a2b3c4d acked=5e6f7a8b` (versions shortened).
fn type_cell(t: &TypeStatus) -> String {
    let short = |v: &Option<String>| {
        v.as_deref()
            .map_or_else(|| "-".to_owned(), |v| v.chars().take(8).collect())
    };
    if t.in_sync {
        format!("SYNCED {}", short(&t.sent))
    } else {
        format!("STALE sent={} acked={}", short(&t.sent), short(&t.acked))
    }
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}
