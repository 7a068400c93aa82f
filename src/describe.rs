//! The admin port's `GET /describe?host=H[&path=P][&method=M]`: what this proxy would do with
//! an outbound HTTP request for `H`, decided by the same lookups a request makes (the service
//! by host or the catch-all, fetched on demand first, then its route table), as JSON: the
//! service, route, weighted backends and their endpoints, or the 503 it would answer and why.

use std::sync::Arc;

use http::{Method, Request, header::HOST, request::Parts};
use serde_json::{Value, json};
use skiff_api::resource::{host_alias, is_plausible_authority};

use crate::{cluster::Cluster, ondemand::Answer, state::State};

/// Why a describe query cannot be answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DescribeError {
    #[error("query parameter `host` is required")]
    NoHost,
    #[error("query parameter `{0}`: {1}")]
    Bad(&'static str, String),
}

/// The request a query stands for.
struct Query {
    host: String,
    path: String,
    method: Method,
}

fn parse(query: Option<&str>) -> Result<Query, DescribeError> {
    let (mut host, mut path, mut method) = (None, None, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)
            .ok_or_else(|| DescribeError::Bad("query", format!("{pair:?} is not valid UTF-8")))?;
        match key {
            "host" => host = Some(value),
            "path" => path = Some(value),
            "method" => method = Some(value),
            _ => {}
        }
    }
    let host = host
        .filter(|h| !h.is_empty())
        .ok_or(DescribeError::NoHost)?;
    let method = match method {
        Some(m) => Method::from_bytes(m.as_bytes())
            .map_err(|_| DescribeError::Bad("method", format!("{m:?} is not a method")))?,
        None => Method::GET,
    };
    Ok(Query {
        host,
        path: path.unwrap_or_else(|| "/".to_owned()),
        method,
    })
}

/// `%XX` and `+` decoded; `None` when the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn parts(q: &Query) -> Result<Parts, DescribeError> {
    let (parts, ()) = Request::builder()
        .method(q.method.clone())
        .uri(q.path.as_str())
        .header(HOST, q.host.as_str())
        .body(())
        .map_err(|e| DescribeError::Bad("path or host", e.to_string()))?
        .into_parts();
    Ok(parts)
}

/// Answers one `/describe` query; fetches the host on demand first, as a request would.
pub async fn describe(state: &State, query: Option<&str>) -> Result<Value, DescribeError> {
    let q = parse(query)?;
    let parts = parts(&q)?;
    let host = q.host.as_str();
    let alias = host_alias(host);
    if let Some(od) = state.on_demand()
        && state.snapshot().service_by_host(Some(host)).is_none()
        && is_plausible_authority(host)
    {
        // Not counted in `skiff_xds_lookups_total`: no request of the app asked.
        od.lookup(std::slice::from_ref(&alias)).await;
    }
    let snap = state.snapshot();
    let mut out = json!({
        "host": host,
        "method": q.method.as_str(),
        "path": q.path,
    });
    let found = match snap.service_by_host(Some(host)) {
        Some(svc) => Some((svc, "host")),
        None => snap
            .catch_all()
            .filter(|_| {
                state
                    .on_demand()
                    .is_none_or(|od| !is_plausible_authority(host) || od.asked(&alias))
            })
            .map(|svc| (svc, "catch-all")),
    };
    let Some((svc, by)) = found else {
        let why = match state.on_demand().and_then(|od| od.answer_of(&alias)) {
            Some(Answer::Refused(reason)) => format!("this proxy refused the service: {reason}"),
            Some(Answer::Pending) => {
                "the control plane did not answer within --xds-fetch-timeout".to_owned()
            }
            Some(Answer::Missing) | None if state.on_demand().is_some() => {
                "no service of the mesh claims this host".to_owned()
            }
            _ => "no service claims this host and there is no catch-all service".to_owned(),
        };
        out["refused"] = json!({ "status": 503, "reason": "unknown-service", "why": why });
        return Ok(out);
    };
    let route = svc.route(&parts);
    out["service"] = json!(name(&svc.namespace, &svc.name));
    out["matchedBy"] = json!(by);
    out["protocol"] = json!(format!("{:?}", svc.protocol).to_lowercase());
    out["route"] = json!(&*route.name);
    out["backends"] = route
        .backends()
        .map(|(cluster, weight)| backend(cluster, weight))
        .collect();
    Ok(out)
}

fn name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn backend(cluster: &Arc<Cluster>, weight: u32) -> Value {
    let members = cluster.members();
    let endpoints: Vec<Value> = members
        .endpoints
        .endpoints()
        .iter()
        .map(|e| {
            json!({
                "address": e.addr.to_string(),
                "workload": e.workload.as_deref(),
                "identity": e.identity.as_deref(),
                "ejected": e.health.is_ejected(),
            })
        })
        .collect();
    json!({
        "service": name(&cluster.namespace, &cluster.name),
        "weight": weight,
        "endpoints": endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_with_defaults_and_decoding() {
        let q = parse(Some("host=reviews%3A9080&path=%2Fapi%2Fv1&method=POST")).expect("parses");
        assert_eq!(
            (q.host.as_str(), q.path.as_str(), q.method),
            ("reviews:9080", "/api/v1", Method::POST)
        );
        let q = parse(Some("host=web")).expect("parses");
        assert_eq!((q.path.as_str(), q.method), ("/", Method::GET));
        assert_eq!(parse(None).err(), Some(DescribeError::NoHost));
        assert_eq!(parse(Some("host=")).err(), Some(DescribeError::NoHost));
        assert!(matches!(
            parse(Some("host=a&method=GE%20T")),
            Err(DescribeError::Bad("method", _))
        ));
        assert!(parse(Some("host=a&path=%ff")).is_err(), "not UTF-8");
        assert_eq!(percent_decode("100%"), Some("100%".to_owned()));
        assert_eq!(percent_decode("a%zzb"), Some("a%zzb".to_owned()));
    }
}
