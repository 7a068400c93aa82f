//! OTLP trace messages written straight to protobuf bytes: a span is encoded once, when it
//! ends, into the bytes a batch request carries; a batch is the pre-encoded resource and
//! scope around the spans. Field numbers per `opentelemetry/proto/trace/v1/trace.proto`.

/// `Span.SpanKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

/// An attribute value: the `AnyValue` cases spans use.
#[derive(Clone, Copy, Debug)]
pub enum AttrValue<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    /// A socket address, written as `ip:port`.
    Addr(std::net::SocketAddr),
}

impl From<std::net::SocketAddr> for AttrValue<'_> {
    fn from(a: std::net::SocketAddr) -> Self {
        AttrValue::Addr(a)
    }
}

/// `ip:port` into `buf`, without the formatting machinery for the common IPv4 case.
pub fn addr_text(addr: std::net::SocketAddr, buf: &mut [u8; 64]) -> &[u8] {
    /// The decimal digits of `n` at `buf[at..]`, without leading zeros; returns the new end.
    #[allow(clippy::cast_possible_truncation)]
    fn decimal(buf: &mut [u8; 64], at: usize, n: u16) -> usize {
        let digits = match n {
            0..=9 => 1,
            10..=99 => 2,
            100..=999 => 3,
            1000..=9999 => 4,
            _ => 5,
        };
        let mut n = n;
        for i in (at..at + digits).rev() {
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        at + digits
    }
    let at = match addr {
        std::net::SocketAddr::V4(a) => {
            let mut at = 0;
            for (i, o) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    buf[at] = b'.';
                    at += 1;
                }
                at = decimal(buf, at, u16::from(o));
            }
            buf[at] = b':';
            decimal(buf, at + 1, a.port())
        }
        std::net::SocketAddr::V6(_) => {
            use std::io::Write;
            let mut w = &mut buf[..];
            let _ = write!(w, "{addr}");
            64 - w.len()
        }
    };
    &buf[..at]
}

impl<'a> From<&'a str> for AttrValue<'a> {
    fn from(s: &'a str) -> Self {
        AttrValue::Str(s)
    }
}

impl<'a> From<&'a String> for AttrValue<'a> {
    fn from(s: &'a String) -> Self {
        AttrValue::Str(s)
    }
}

impl<'a> From<&'a std::sync::Arc<str>> for AttrValue<'a> {
    fn from(s: &'a std::sync::Arc<str>) -> Self {
        AttrValue::Str(s)
    }
}

impl From<i64> for AttrValue<'_> {
    fn from(n: i64) -> Self {
        AttrValue::Int(n)
    }
}

impl From<bool> for AttrValue<'_> {
    fn from(b: bool) -> Self {
        AttrValue::Bool(b)
    }
}

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

#[inline]
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    if v < 0x80 {
        #[allow(clippy::cast_possible_truncation)]
        buf.push(v as u8);
        return;
    }
    while v >= 0x80 {
        #[allow(clippy::cast_possible_truncation)]
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    #[allow(clippy::cast_possible_truncation)]
    buf.push(v as u8);
}

#[inline]
fn varint_len(v: u64) -> usize {
    // Attribute and span lengths are almost always below 2^14.
    if v < 1 << 7 {
        1
    } else if v < 1 << 14 {
        2
    } else {
        // 1 byte per 7 bits.
        (64 - v.leading_zeros() as usize).div_ceil(7)
    }
}

#[inline]
fn put_tag(buf: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(buf, u64::from(field << 3 | wire));
}

#[inline]
fn put_len(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(buf, field, LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn put_fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_tag(buf, field, FIXED64);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Length of a field `tag + length + body` with a one-byte tag (every field here is < 16).
#[inline]
fn len_field(body: usize) -> usize {
    1 + varint_len(body as u64) + body
}

/// A `KeyValue` as field `field` of the enclosing message (spans: 9; resources: 1).
pub fn put_attribute(buf: &mut Vec<u8>, field: u32, key: &str, value: AttrValue<'_>) {
    match value {
        AttrValue::Str(s) => put_str_attribute(buf, field, key.as_bytes(), s.as_bytes()),
        AttrValue::Addr(a) => {
            let mut text = [0u8; 64];
            put_str_attribute(buf, field, key.as_bytes(), addr_text(a, &mut text));
        }
        AttrValue::Int(n) => {
            // AnyValue.int_value (3), a varint of the two's complement.
            #[allow(clippy::cast_sign_loss)]
            let n = n as u64;
            let any = 1 + varint_len(n);
            put_kv_head(buf, field, key, any);
            put_tag(buf, 3, VARINT);
            put_varint(buf, n);
        }
        AttrValue::Bool(b) => {
            // AnyValue.bool_value (2).
            put_kv_head(buf, field, key, 2);
            buf.extend_from_slice(&[2 << 3 | VARINT as u8, u8::from(b)]);
        }
    }
}

/// A string-valued `KeyValue`: the common case, written with one reservation and no
/// per-byte pushes for lengths below 128.
#[inline]
fn put_str_attribute(buf: &mut Vec<u8>, field: u32, key: &[u8], value: &[u8]) {
    let any = len_field(value.len());
    let kv = len_field(key.len()) + len_field(any);
    if kv < 128 {
        // Every length fits one byte: the heads are written as two small slices.
        buf.reserve(2 + kv);
        #[allow(clippy::cast_possible_truncation)]
        {
            buf.extend_from_slice(&[(field << 3 | LEN) as u8, kv as u8, 1 << 3 | LEN as u8]);
            buf.push(key.len() as u8);
            buf.extend_from_slice(key);
            buf.extend_from_slice(&[
                2 << 3 | LEN as u8,
                any as u8,
                1 << 3 | LEN as u8,
                value.len() as u8,
            ]);
        }
        buf.extend_from_slice(value);
        return;
    }
    buf.reserve(len_field(kv));
    put_tag(buf, field, LEN);
    put_varint(buf, kv as u64);
    put_len(buf, 1, key);
    put_tag(buf, 2, LEN);
    put_varint(buf, any as u64);
    put_len(buf, 1, value);
}

/// The head of a `KeyValue` whose `AnyValue` body (`any` bytes) the caller writes next.
fn put_kv_head(buf: &mut Vec<u8>, field: u32, key: &str, any: usize) {
    let kv = len_field(key.len()) + len_field(any);
    buf.reserve(len_field(kv));
    put_tag(buf, field, LEN);
    put_varint(buf, kv as u64);
    put_len(buf, 1, key.as_bytes());
    put_tag(buf, 2, LEN);
    put_varint(buf, any as u64);
}

/// The span's name (field 5) made of `parts`, written without joining them first.
pub fn put_name(buf: &mut Vec<u8>, parts: &[&str]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    buf.reserve(len_field(len));
    put_tag(buf, 5, LEN);
    put_varint(buf, len as u64);
    for p in parts {
        buf.extend_from_slice(p.as_bytes());
    }
}

/// Appends `span` (an encoded `Span` body) as one entry of `ScopeSpans.spans`: what a batch
/// is made of ([`Envelope::head`]).
pub fn put_span(buf: &mut Vec<u8>, span: &[u8]) {
    put_len(buf, 2, span);
}

/// What a finished span is made of.
pub struct SpanFields<'a> {
    pub trace_id: &'a [u8; 16],
    pub span_id: &'a [u8; 8],
    pub parent: Option<&'a [u8; 8]>,
    /// Empty: not written here (a span that wrote it with [`put_name`] already).
    pub name: &'a str,
    pub kind: Kind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// Attributes already encoded as field-9 entries ([`put_attribute`]); ignored by
    /// [`finish_span`], whose buffer holds them.
    pub attributes: &'a [u8],
    /// `Some`: status ERROR with this message.
    pub error: Option<&'a str>,
}

/// Encodes one `Span` message (its body, without a field tag of its own).
pub fn encode_span(f: &SpanFields<'_>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(96 + f.name.len() + f.attributes.len());
    buf.extend_from_slice(f.attributes);
    finish_span(&mut buf, f);
    buf
}

/// Appends the span's own fields to `buf`, which holds its attributes already (protobuf
/// fields may come in any order), so a span is written into one buffer, never copied.
pub fn finish_span(buf: &mut Vec<u8>, f: &SpanFields<'_>) {
    let buf = &mut *buf;
    put_len(buf, 1, f.trace_id);
    put_len(buf, 2, f.span_id);
    if let Some(p) = f.parent {
        put_len(buf, 4, p);
    }
    if !f.name.is_empty() {
        put_len(buf, 5, f.name.as_bytes());
    }
    put_tag(buf, 6, VARINT);
    put_varint(buf, f.kind as u64);
    put_fixed64(buf, 7, f.start_unix_nanos);
    put_fixed64(buf, 8, f.end_unix_nanos);
    if let Some(message) = f.error {
        // Status { message = 2, code = 3 (ERROR = 2) }
        let body = len_field(message.len()) + 2;
        put_tag(buf, 15, LEN);
        put_varint(buf, body as u64);
        put_len(buf, 2, message.as_bytes());
        put_tag(buf, 3, VARINT);
        buf.push(2);
    }
    // Span flags: the parent's remoteness is known (bit 8), and it is remote (bit 9).
    let flags: u32 = if f.parent.is_some() { 0x300 } else { 0x100 };
    put_tag(buf, 16, FIXED32);
    buf.extend_from_slice(&flags.to_le_bytes());
}

/// The parts of every request from one proxy: its resource and instrumentation scope,
/// encoded once.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// `resource` field (1) of `ResourceSpans`, tag included.
    resource: Vec<u8>,
    /// `scope` field (1) of `ScopeSpans`, tag included.
    scope: Vec<u8>,
}

impl Envelope {
    pub fn new(resource: &[(String, String)], scope_name: &str, scope_version: &str) -> Self {
        // A later key replaces an earlier one.
        let mut attrs = Vec::new();
        for (i, (k, v)) in resource.iter().enumerate() {
            if resource[i + 1..].iter().any(|(later, _)| later == k) {
                continue;
            }
            put_attribute(&mut attrs, 1, k, AttrValue::Str(v));
        }
        let mut res = Vec::with_capacity(attrs.len() + 4);
        put_len(&mut res, 1, &attrs);
        let mut scope_body = Vec::new();
        put_len(&mut scope_body, 1, scope_name.as_bytes());
        put_len(&mut scope_body, 2, scope_version.as_bytes());
        let mut scope = Vec::with_capacity(scope_body.len() + 4);
        put_len(&mut scope, 1, &scope_body);
        Envelope {
            resource: res,
            scope,
        }
    }

    /// The start of one `ExportTraceServiceRequest` whose `ScopeSpans.spans` entries (as
    /// [`put_span`] writes them, `spans_len` bytes) follow it: a request is this head and
    /// the batch's bytes, sent one after the other without joining them first.
    pub fn head(&self, spans_len: usize) -> Vec<u8> {
        let scope_spans = self.scope.len() + spans_len;
        let resource_spans = self.resource.len() + len_field(scope_spans);
        let mut buf = Vec::with_capacity(len_field(resource_spans) - spans_len);
        put_tag(&mut buf, 1, LEN);
        put_varint(&mut buf, resource_spans as u64);
        buf.extend_from_slice(&self.resource);
        put_tag(&mut buf, 2, LEN);
        put_varint(&mut buf, scope_spans as u64);
        buf.extend_from_slice(&self.scope);
        buf
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::ExportTraceServiceRequest,
        common::v1::any_value::Value,
        trace::v1::{Span, span::SpanKind, status::StatusCode},
    };
    use prost::Message;

    use super::*;

    #[test]
    fn addresses_as_text() {
        let mut b = [0u8; 64];
        for a in [
            "127.0.0.1:9080",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.100.9.99:1000",
            "1.20.0.255:9999",
            "[::1]:80",
            "[2001:db8::ffff:1]:65535",
        ] {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            assert_eq!(addr_text(addr, &mut b), a.as_bytes());
        }
    }

    #[test]
    fn attributes_and_names_decode_on_both_sides_of_one_byte_lengths() {
        use opentelemetry_proto::tonic::common::v1::KeyValue;
        for key_len in [1, 60, 63, 64, 127, 128, 300] {
            for value_len in [0, 1, 58, 59, 60, 61, 127, 128, 20_000] {
                let key = "k".repeat(key_len);
                let value = "v".repeat(value_len);
                let mut buf = Vec::new();
                put_name(&mut buf, &["GET", " ", &value]);
                put_attribute(&mut buf, 9, &key, value.as_str().into());
                let span = Span::decode(buf.as_slice()).expect("decodes");
                assert_eq!(span.name, format!("GET {value}"));
                let KeyValue {
                    key: k, value: v, ..
                } = &span.attributes[0];
                assert_eq!((k.len(), k.as_str()), (key_len, key.as_str()));
                assert_eq!(
                    v.as_ref().unwrap().value,
                    Some(Value::StringValue(value.clone()))
                );
            }
        }
    }

    #[test]
    fn varint_lengths() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn a_request_decodes_as_otlp() {
        let mut attrs = Vec::new();
        put_attribute(&mut attrs, 9, "http.request.method", "GET".into());
        put_attribute(&mut attrs, 9, "http.response.status_code", 503_i64.into());
        put_attribute(&mut attrs, 9, "skiff.retried", true.into());
        put_attribute(&mut attrs, 9, "neg", (-5_i64).into());
        put_attribute(
            &mut attrs,
            9,
            &"k".repeat(200),
            "v".repeat(300).as_str().into(),
        );
        let span = encode_span(&SpanFields {
            trace_id: &[1; 16],
            span_id: &[2; 8],
            parent: Some(&[3; 8]),
            name: "GET reviews",
            kind: Kind::Client,
            start_unix_nanos: 1_000,
            end_unix_nanos: 2_000,
            attributes: &attrs,
            error: Some("timeout"),
        });
        let root = encode_span(&SpanFields {
            trace_id: &[1; 16],
            span_id: &[4; 8],
            parent: None,
            name: "attempt 1",
            kind: Kind::Internal,
            start_unix_nanos: 1,
            end_unix_nanos: 2,
            attributes: &[],
            error: None,
        });
        let env = Envelope::new(
            &[
                ("service.name".into(), "a".into()),
                ("service.namespace".into(), "default".into()),
                ("service.name".into(), "reviews".into()),
            ],
            "skiff",
            "0.1.0",
        );
        let mut spans = Vec::new();
        put_span(&mut spans, &span);
        put_span(&mut spans, &root);
        let mut request = env.head(spans.len());
        request.extend_from_slice(&spans);
        let req = ExportTraceServiceRequest::decode(request.as_slice()).expect("decodes");
        let rs = &req.resource_spans[0];
        let res = rs.resource.as_ref().unwrap();
        assert_eq!(
            res.attributes.len(),
            2,
            "the later service.name replaced the earlier"
        );
        assert_eq!(res.attributes[1].key, "service.name");
        assert_eq!(
            res.attributes[1].value.as_ref().unwrap().value,
            Some(Value::StringValue("reviews".into()))
        );
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "skiff");
        assert_eq!(ss.scope.as_ref().unwrap().version, "0.1.0");
        let s: &Span = &ss.spans[0];
        assert_eq!(s.trace_id, vec![1; 16]);
        assert_eq!(s.span_id, vec![2; 8]);
        assert_eq!(s.parent_span_id, vec![3; 8]);
        assert_eq!(s.name, "GET reviews");
        assert_eq!(s.kind, SpanKind::Client as i32);
        assert_eq!(
            (s.start_time_unix_nano, s.end_time_unix_nano),
            (1_000, 2_000)
        );
        let v = |i: usize| s.attributes[i].value.as_ref().unwrap().value.clone();
        assert_eq!(v(0), Some(Value::StringValue("GET".into())));
        assert_eq!(v(1), Some(Value::IntValue(503)));
        assert_eq!(v(2), Some(Value::BoolValue(true)));
        assert_eq!(v(3), Some(Value::IntValue(-5)));
        assert_eq!(s.attributes[4].key.len(), 200);
        let status = s.status.as_ref().unwrap();
        assert_eq!(status.code, StatusCode::Error as i32);
        assert_eq!(status.message, "timeout");
        assert_eq!(s.flags, 0x300);
        let r = &ss.spans[1];
        assert!(r.parent_span_id.is_empty());
        assert_eq!(r.kind, SpanKind::Internal as i32);
        assert!(r.status.is_none());
    }
}
