//! Incoming trace context: W3C Trace Context level 1 (`traceparent`, `tracestate`) and, when
//! no `traceparent` is present, Zipkin's B3 (single `b3` or multi `x-b3-*`). Pure parsing and
//! formatting: an invalid header is treated as absent (a new trace), never as an error.

use http::{HeaderMap, HeaderValue, header::HeaderName};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// 16 bytes, never all zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// 8 bytes, never all zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

/// The context a request arrived with: its trace, the caller's span (our parent) and whether
/// the caller sampled it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

/// `traceparent` version 00, the one this proxy writes.
pub fn format_traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> String {
    let bytes = traceparent_bytes(trace_id, span_id, sampled);
    // Hex digits and dashes: always ASCII.
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The same as a header value, built on the stack (this is on every traced request's path).
pub fn traceparent_value(trace_id: TraceId, span_id: SpanId, sampled: bool) -> HeaderValue {
    let bytes = traceparent_bytes(trace_id, span_id, sampled);
    // Hex digits and dashes are always a valid header value.
    HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn traceparent_bytes(trace_id: TraceId, span_id: SpanId, sampled: bool) -> [u8; 55] {
    let mut out = [b'-'; 55];
    out[0] = b'0';
    out[1] = b'0';
    write_hex(&mut out[3..35], &trace_id.0);
    write_hex(&mut out[36..52], &span_id.0);
    out[53] = b'0';
    out[54] = if sampled { b'1' } else { b'0' };
    out
}

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// Which header a context came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A `traceparent`: valid (`Some` parent) or not (`None`).
    W3c,
    B3,
    /// No trace header at all.
    Absent,
}

/// Like [`extract`], telling also which header the answer came from.
pub fn extract_with_source(headers: &HeaderMap) -> (Option<Parent>, Source) {
    if let Some(tp) = headers.get(TRACEPARENT) {
        return (tp.to_str().ok().and_then(parse_traceparent), Source::W3c);
    }
    if let Some(b3) = headers.get(B3) {
        return (b3.to_str().ok().and_then(parse_b3_single), Source::B3);
    }
    if headers.contains_key(X_B3_TRACEID) {
        return (parse_b3_multi(headers), Source::B3);
    }
    (None, Source::Absent)
}

/// The incoming parent: `traceparent` if valid; else B3 if no `traceparent` was sent at all.
/// A `traceparent` that is present but invalid means a new trace (B3 is not consulted).
pub fn extract(headers: &HeaderMap) -> Option<Parent> {
    extract_with_source(headers).0
}

/// `tracestate` to forward, when the incoming one is valid (several header lines are one
/// list, joined with commas); `None` drops it, as the spec asks of an invalid one.
pub fn tracestate(headers: &HeaderMap) -> Option<String> {
    let mut joined = String::new();
    for v in headers.get_all(TRACESTATE) {
        let s = v.to_str().ok()?;
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(s);
    }
    (!joined.is_empty() && tracestate_is_valid(&joined)).then_some(joined)
}

/// W3C `traceparent`: `version-traceid-parentid-flags`, lowercase hex. Version `ff` is
/// invalid; version 00 is exactly 55 characters; a higher version is read by its first four
/// fields and may carry more after a `-`.
pub fn parse_traceparent(s: &str) -> Option<Parent> {
    let b = s.as_bytes();
    if b.len() < 55 {
        return None;
    }
    let version = hex_u8(&b[0..2])?;
    match version {
        0xff => return None,
        0x00 if b.len() != 55 => return None,
        v if v > 0 && b.len() > 55 && b[55] != b'-' => return None,
        _ => {}
    }
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let trace_id = TraceId(hex_array(&b[3..35])?);
    let span_id = SpanId(hex_array(&b[36..52])?);
    let flags = hex_u8(&b[53..55])?;
    if trace_id.0 == [0; 16] || span_id.0 == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// Single-header B3: `traceid-spanid[-sampling[-parentspanid]]` (a trace id of 16 or 32 hex
/// digits; sampling `1`, `0` or `d` for debug). A lone sampling decision carries no parent.
pub fn parse_b3_single(s: &str) -> Option<Parent> {
    let mut parts = s.trim().split('-');
    let trace_id = b3_trace_id(parts.next()?)?;
    let span_id = SpanId(hex_array(parts.next()?.as_bytes())?);
    let sampled = match parts.next() {
        None => true,
        Some("1" | "d") => true,
        Some("0") => false,
        Some(_) => return None,
    };
    if let Some(parent) = parts.next() {
        hex_array::<8>(parent.as_bytes())?;
    }
    if parts.next().is_some() || span_id.0 == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled,
    })
}

/// Multi-header B3: `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled` (`1`/`0`, `true`/`false`)
/// and `x-b3-flags: 1` (debug, sampled).
pub fn parse_b3_multi(headers: &HeaderMap) -> Option<Parent> {
    let get = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let trace_id = b3_trace_id(get(X_B3_TRACEID)?)?;
    let span_id = SpanId(hex_array(get(X_B3_SPANID)?.as_bytes())?);
    if span_id.0 == [0; 8] {
        return None;
    }
    let debug = get(X_B3_FLAGS) == Some("1");
    let sampled = match get(X_B3_SAMPLED) {
        Some("1" | "true") => true,
        Some("0" | "false") => debug,
        None => true,
        Some(_) => return None,
    };
    Some(Parent {
        trace_id,
        span_id,
        sampled: sampled || debug,
    })
}

/// A B3 trace id: 32 hex digits, or 16 (the high half zero).
fn b3_trace_id(s: &str) -> Option<TraceId> {
    let id = match s.len() {
        32 => hex_array::<16>(s.as_bytes())?,
        16 => {
            let low = hex_array::<8>(s.as_bytes())?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            id
        }
        _ => return None,
    };
    (id != [0; 16]).then_some(TraceId(id))
}

/// The W3C `tracestate` list rules: at most 32 members, unique keys, each `key=value` with
/// a lowercase key (`tenant@system` allowed) and a printable value without `,` or `=`.
fn tracestate_is_valid(s: &str) -> bool {
    let mut keys: Vec<&str> = Vec::new();
    for member in s.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        let Some((key, value)) = member.split_once('=') else {
            return false;
        };
        if !key_is_valid(key) || !value_is_valid(value) || keys.contains(&key) {
            return false;
        }
        keys.push(key);
        if keys.len() > 32 {
            return false;
        }
    }
    true
}

fn key_is_valid(key: &str) -> bool {
    let part = |s: &str, max: usize, first_digit_ok: bool| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= max
            && (b[0].is_ascii_lowercase() || (first_digit_ok && b[0].is_ascii_digit()))
            && b[1..]
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/".contains(c))
    };
    match key.split_once('@') {
        None => part(key, 256, false),
        Some((tenant, system)) => part(tenant, 241, true) && part(system, 14, false),
    }
}

fn value_is_valid(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.last() != Some(&b' ')
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

/// One lowercase hex digit.
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_u8(b: &[u8]) -> Option<u8> {
    match b {
        [h, l] => Some(nibble(*h)? << 4 | nibble(*l)?),
        _ => None,
    }
}

fn hex_array<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = hex_u8(pair)?;
    }
    Some(out)
}

/// Lowercase hex of `bytes`, as trace and span ids are written.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_follows_the_spec_table() {
        let cases: &[(&str, Option<bool>)] = &[
            (VALID, Some(true)),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                Some(false),
            ),
            // Flags other than sampled are ignored.
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
                Some(true),
            ),
            // A later version: the first fields count, more may follow a '-'.
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Some(true),
            ),
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future",
                Some(true),
            ),
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                None,
            ),
            // Version ff is invalid; version 00 is exactly 55 characters.
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                None,
            ),
            // Uppercase hex, all-zero ids, bad lengths, bad separators, not hex.
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
                None,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
                None,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                None,
            ),
            (
                "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                None,
            ),
            ("", None),
        ];
        for (input, sampled) in cases {
            assert_eq!(
                parse_traceparent(input).map(|p| p.sampled),
                *sampled,
                "{input:?}"
            );
        }
    }

    #[test]
    fn a_parsed_traceparent_formats_back_the_same() {
        let p = parse_traceparent(VALID).unwrap();
        assert_eq!(format_traceparent(p.trace_id, p.span_id, p.sampled), VALID);
    }

    #[test]
    fn an_invalid_traceparent_is_a_new_trace_even_with_b3_present() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static("garbage"));
        h.insert(
            "b3",
            HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        );
        assert_eq!(extract(&h), None);
        h.remove("traceparent");
        assert!(extract(&h).is_some());
    }

    #[test]
    fn b3_single_and_multi_join_the_trace() {
        let cases: &[(&str, Option<bool>)] = &[
            (
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
                Some(true),
            ),
            (
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0",
                Some(false),
            ),
            (
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d",
                Some(true),
            ),
            (
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1",
                Some(true),
            ),
            ("64fe8b2a57d3eff7-e457b5a2e4d86bd1-1", Some(true)),
            ("0", None),
            ("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-x", None),
            (
                "80f198ee56343ba8-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-more",
                None,
            ),
            ("00000000000000000000000000000000-e457b5a2e4d86bd1-1", None),
        ];
        for (input, sampled) in cases {
            assert_eq!(
                parse_b3_single(input).map(|p| p.sampled),
                *sampled,
                "{input:?}"
            );
        }
        let short = parse_b3_single("64fe8b2a57d3eff7-e457b5a2e4d86bd1-1").unwrap();
        assert_eq!(&short.trace_id.0[..8], &[0; 8]);

        let mut h = HeaderMap::new();
        h.insert(
            "x-b3-traceid",
            HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7"),
        );
        h.insert("x-b3-spanid", HeaderValue::from_static("e457b5a2e4d86bd1"));
        h.insert("x-b3-sampled", HeaderValue::from_static("0"));
        assert_eq!(extract(&h).map(|p| p.sampled), Some(false));
        h.insert("x-b3-flags", HeaderValue::from_static("1"));
        assert_eq!(extract(&h).map(|p| p.sampled), Some(true));
        h.insert("x-b3-spanid", HeaderValue::from_static("nothex"));
        assert_eq!(extract(&h), None);
    }

    #[test]
    fn tracestate_is_kept_when_valid_and_dropped_when_not() {
        let ok = |s: &'static str| {
            let mut h = HeaderMap::new();
            h.append("tracestate", HeaderValue::from_static(s));
            tracestate(&h)
        };
        assert_eq!(
            ok("congo=t61rcWkgMzE").as_deref(),
            Some("congo=t61rcWkgMzE")
        );
        assert!(ok("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE").is_some());
        assert!(ok("fw529a3039@dt=s,1tenant@vendor=x").is_some());
        for bad in [
            "Rojo=1",
            "rojo",
            "rojo=1,rojo=2",
            "rojo=a=b",
            "1rojo=x",
            "@v=1",
            "t@Vendor=1",
        ] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
        let many: String = (0..33).map(|i| format!("k{i}=v,")).collect();
        let mut h = HeaderMap::new();
        h.insert("tracestate", HeaderValue::from_str(&many).unwrap());
        assert_eq!(tracestate(&h), None, "33 members");
        let mut two = HeaderMap::new();
        two.append("tracestate", HeaderValue::from_static("a=1"));
        two.append("tracestate", HeaderValue::from_static("b=2"));
        assert_eq!(tracestate(&two).as_deref(), Some("a=1,b=2"));
    }
}
