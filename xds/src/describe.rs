//! `skiff-xds describe HOST`: asks a proxy's admin port (`/describe`) what it would do with an
//! outbound request for HOST (service, route, backends and their endpoints, or the 503 it
//! would answer and why) and prints it for a person. The decision is the proxy's own.

use std::{fmt::Write as _, process::ExitCode, time::Duration};

use anyhow::Context as _;
use serde_json::Value;

use crate::status::admin_get;

#[derive(clap::Args, Debug, Clone)]
pub struct DescribeArgs {
    /// The host the app would call, as it writes it (`reviews`, `reviews:9080`).
    pub host: String,
    /// The request path.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// The request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// The proxy's admin address (its `--admin-addr`).
    #[arg(long, env = "SKIFF_ADMIN", default_value = "http://127.0.0.1:15000")]
    pub admin: String,
}

/// The proxy may first fetch the host from the control plane (`--xds-fetch-timeout`).
const TIMEOUT: Duration = Duration::from_secs(15);

pub fn main(args: DescribeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff-xds describe: {e}");
            return ExitCode::FAILURE;
        }
    };
    let query = format!(
        "/describe?host={}&path={}&method={}",
        encode(&args.host),
        encode(&args.path),
        encode(&args.method)
    );
    let answer = runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, admin_get(&args.admin, &query))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {TIMEOUT:?}"))?
            .and_then(|body| serde_json::from_slice::<Value>(&body).context("unexpected body"))
    });
    match answer {
        Ok(answer) => {
            print!("{}", render(&answer));
            if answer.get("refused").is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("skiff-xds describe: {}: {e:#}", args.admin);
            ExitCode::FAILURE
        }
    }
}

/// Query-string encoding: unreserved characters kept, the rest `%XX`.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The answer of `/describe` as text.
pub fn render(answer: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "request   {} {} (host {})",
        s(&answer["method"]),
        s(&answer["path"]),
        s(&answer["host"])
    );
    if let Some(refused) = answer.get("refused") {
        let _ = writeln!(
            out,
            "refused   {} {}: {}",
            refused["status"],
            s(&refused["reason"]),
            s(&refused["why"])
        );
        return out;
    }
    let _ = writeln!(
        out,
        "service   {} (matched by {}, protocol {})",
        s(&answer["service"]),
        s(&answer["matchedBy"]),
        s(&answer["protocol"])
    );
    let _ = writeln!(out, "route     {}", s(&answer["route"]));
    for b in answer["backends"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "backend   {} (weight {})",
            s(&b["service"]),
            b["weight"]
        );
        let endpoints = b["endpoints"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if endpoints.is_empty() {
            let _ = writeln!(out, "  no endpoints: requests get 503 no-endpoints");
        }
        for e in endpoints {
            let mut line = format!("  endpoint {}", s(&e["address"]));
            if let Some(w) = e["workload"].as_str() {
                let _ = write!(line, "  workload {w}");
            }
            match e["identity"].as_str() {
                Some(id) => {
                    let _ = write!(line, "  mTLS {id}");
                }
                None => line.push_str("  plaintext"),
            }
            if e["ejected"].as_bool() == Some(true) {
                line.push_str("  EJECTED (outlier detection)");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_a_route_and_a_refusal() {
        let answer = json!({
            "host": "reviews", "method": "GET", "path": "/",
            "service": "default/reviews", "matchedBy": "host", "protocol": "http1",
            "route": "split",
            "backends": [
                { "service": "default/reviews-v1", "weight": 90, "endpoints": [
                    { "address": "127.0.0.1:9001", "workload": "reviews-v1",
                      "identity": "spiffe://cluster.local/ns/default/sa/reviews", "ejected": false } ] },
                { "service": "default/reviews-v2", "weight": 10, "endpoints": [] }
            ]
        });
        assert_eq!(
            render(&answer),
            "request   GET / (host reviews)\n\
             service   default/reviews (matched by host, protocol http1)\n\
             route     split\n\
             backend   default/reviews-v1 (weight 90)\n  \
             endpoint 127.0.0.1:9001  workload reviews-v1  mTLS spiffe://cluster.local/ns/default/sa/reviews\n\
             backend   default/reviews-v2 (weight 10)\n  \
             no endpoints: requests get 503 no-endpoints\n"
        );
        let refused = json!({ "host": "nope", "method": "GET", "path": "/",
            "refused": { "status": 503, "reason": "unknown-service", "why": "no service of the mesh claims this host" } });
        assert_eq!(
            render(&refused),
            "request   GET / (host nope)\nrefused   503 unknown-service: no service of the mesh claims this host\n"
        );
        assert_eq!(encode("a b/c?d=é"), "a%20b/c%3Fd%3D%C3%A9");
    }
}
