//! Header hygiene between hops: hop-by-hop headers removed (RFC 9110 §7.6.1), `x-request-id`
//! set when absent, `traceparent` written for this hop, the request target and
//! `Host`/`:authority` rewritten for the upstream's HTTP version. `x-forwarded-for` and
//! `forwarded` pass through untouched (see README).

use http::{
    HeaderMap, HeaderValue, Uri, Version as HttpVersion,
    header::{self, HeaderName},
    request::Parts,
    uri::{PathAndQuery, Scheme},
};
use rand::RngExt;

use super::{RequestError, Version};
use crate::telemetry::spans::TraceCx;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop headers, as bits of a presence mask.
const HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
    KEEP_ALIVE,
    PROXY_CONNECTION,
];
const CONNECTION_BIT: u8 = 1 << 0;
const TE_BIT: u8 = 1 << 2;

/// Removes hop-by-hop headers and those the `Connection` header names. An upgrade keeps
/// `Connection: upgrade` and `Upgrade`, which the next hop needs to switch protocols.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass of cheap name comparisons: most messages carry at most `Connection`, and a
    // removal costs a hash and a probe per name, so only present names are removed.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present & CONNECTION_BIT != 0 {
        let named_extra = headers.get_all(header::CONNECTION).iter().any(|v| {
            let v = v.as_bytes();
            !(v.eq_ignore_ascii_case(b"keep-alive")
                || v.eq_ignore_ascii_case(b"close")
                || v.eq_ignore_ascii_case(b"upgrade"))
        });
        if named_extra {
            // Rare: `Connection` names extra headers. Collect first; the map is borrowed.
            let named: Vec<HeaderName> = headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
                .filter(|n| !(keep_upgrade && n == header::UPGRADE))
                .collect();
            for n in named {
                headers.remove(n);
            }
        }
    }
    // `te: trailers` is end to end in practice: gRPC requires it on HTTP/2.
    if present & TE_BIT != 0
        && headers
            .get(header::TE)
            .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        present &= !TE_BIT;
    }
    if keep_upgrade {
        present &= !(CONNECTION_BIT | 1 << 3);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    for (i, name) in HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Does this HTTP/1.1 request ask to switch protocols (e.g. WebSocket)?
pub fn is_upgrade(parts: &Parts) -> bool {
    parts.version == HttpVersion::HTTP_11
        && parts.headers.contains_key(header::UPGRADE)
        && parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Bytes of the request head as a client would have sent it (target and header lines).
pub fn request_head_size(parts: &Parts) -> usize {
    let target = parts.uri.path_and_query().map_or(1, |p| p.as_str().len());
    parts
        .headers
        .iter()
        .fold(target + 16, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

fn request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits: u128 = rand::rng().random();
    // RFC 9562 version 4, variant 10.
    bits = (bits & !(0xF << 76)) | (0x4 << 76);
    bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let mut out = [0u8; 36];
    let mut nibble = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *slot = b'-';
            continue;
        }
        *slot = HEX[((bits >> (124 - 4 * nibble)) & 0xF) as usize];
        nibble += 1;
    }
    // Hex digits and dashes are always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Prepares a request head for an upstream speaking `upstream`, carrying `trace` (this hop's
/// span as the parent) when tracing is on.
pub fn prepare_request(
    parts: &mut Parts,
    upstream: Version,
    upgrade: bool,
    trace: Option<&TraceCx>,
) -> Result<(), RequestError> {
    strip_hop_by_hop(&mut parts.headers, upgrade);
    if let Some(cx) = trace {
        cx.inject(&mut parts.headers);
    }
    // The proxy answers `Expect: 100-continue` itself (hyper sends the 100 once the body is
    // read), so the upstream sees a plain request.
    parts.headers.remove(header::EXPECT);
    if !parts.headers.contains_key(X_REQUEST_ID) {
        parts.headers.insert(X_REQUEST_ID, request_id());
    }
    match upstream {
        Version::Http1 => {
            if !parts.headers.contains_key(header::HOST)
                && let Some(a) = parts.uri.authority()
            {
                let host =
                    HeaderValue::from_str(a.as_str()).map_err(|_| RequestError::Malformed {
                        reason: "invalid authority",
                    })?;
                parts.headers.insert(header::HOST, host);
            }
            if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
                let pq = parts
                    .uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/"));
                parts.uri = Uri::from(pq);
            }
            parts.version = HttpVersion::HTTP_11;
        }
        Version::Http2 => {
            if parts.uri.authority().is_none() {
                let host = parts
                    .headers
                    .get(header::HOST)
                    .ok_or(RequestError::Malformed { reason: "no host" })?;
                let authority = http::uri::Authority::try_from(host.as_bytes()).map_err(|_| {
                    RequestError::Malformed {
                        reason: "invalid host",
                    }
                })?;
                let mut uri = std::mem::take(&mut parts.uri).into_parts();
                uri.scheme = Some(Scheme::HTTP);
                uri.authority = Some(authority);
                if uri.path_and_query.is_none() {
                    uri.path_and_query = Some(PathAndQuery::from_static("/"));
                }
                parts.uri = Uri::from_parts(uri).map_err(|_| RequestError::Malformed {
                    reason: "invalid target",
                })?;
            }
            parts.headers.remove(header::HOST);
            parts.version = HttpVersion::HTTP_2;
        }
    }
    Ok(())
}

/// Prepares a response head for the client.
pub fn prepare_response(headers: &mut HeaderMap, switching: bool) {
    strip_hop_by_hop(headers, switching);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_named() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-foo, keep-alive"),
        );
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn keeps_te_trailers() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.contains_key(header::TE));
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let a = request_id();
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert_ne!(a, request_id());
    }

    #[test]
    fn h1_to_h2_moves_host_into_authority() {
        let (mut p, _) = http::Request::get("/x?y=1")
            .header("host", "reviews:9080")
            .body(())
            .unwrap()
            .into_parts();
        prepare_request(&mut p, Version::Http2, false, None).unwrap();
        assert_eq!(p.uri.to_string(), "http://reviews:9080/x?y=1");
        assert!(!p.headers.contains_key(header::HOST));
    }

    #[test]
    fn h2_to_h1_sets_host_and_origin_form() {
        let (mut p, _) = http::Request::get("http://reviews/x")
            .version(HttpVersion::HTTP_2)
            .body(())
            .unwrap()
            .into_parts();
        prepare_request(&mut p, Version::Http1, false, None).unwrap();
        assert_eq!(p.uri.to_string(), "/x");
        assert_eq!(p.headers[header::HOST], "reviews");
    }
}
