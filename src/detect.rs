//! Protocol detection: reads a connection's first bytes (bounded in size and time) and
//! classifies them as HTTP/2 preface, HTTP/1 request, TLS ClientHello or opaque bytes.
//! The bytes read are handed on in a [`crate::io::Prefixed`] stream so nothing is lost.

use std::{io, time::Duration};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest method token we take for HTTP/1 (the longest registered method is 17 bytes).
const MAX_METHOD: usize = 20;
/// Most headers accepted in a request head.
pub const MAX_HEADERS: usize = 100;

/// What the first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1 request; `head` says whether its first head is usable.
    Http1 {
        head: HeadCheck,
    },
    Http2,
    Tls,
    Opaque,
    /// Nothing decisive before the deadline (or the client closed first): opaque TCP.
    Timeout,
}

/// The first HTTP/1 request head, checked before hyper sees it, so a bad one gets a
/// response carrying `x-skiff-reason` rather than a bare error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadCheck {
    Ok,
    /// Still incomplete at the deadline; hyper reads the rest.
    Incomplete,
    Malformed,
    TooLarge,
}

enum Step {
    Done(Detected),
    NeedMore,
}

/// Classifies `buf` so far. `max_head` bounds how much of an HTTP/1 head is read.
fn classify(buf: &[u8], max_head: usize) -> Step {
    if buf.is_empty() {
        return Step::NeedMore;
    }
    if buf[0] == 0x16 {
        // TLS record: handshake type 22, then a 3.x record version.
        return match buf.get(1) {
            None => Step::NeedMore,
            Some(3) => Step::Done(Detected::Tls),
            Some(_) => Step::Done(Detected::Opaque),
        };
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if buf.len() >= H2_PREFACE.len() {
            Step::Done(Detected::Http2)
        } else {
            Step::NeedMore
        };
    }
    match request_line(buf) {
        Line::No => Step::Done(Detected::Opaque),
        Line::Partial if buf.len() >= max_head => Step::Done(Detected::Http1 {
            head: HeadCheck::TooLarge,
        }),
        Line::Partial => Step::NeedMore,
        Line::Yes => match check_head(buf, max_head) {
            Some(head) => Step::Done(Detected::Http1 { head }),
            None => Step::NeedMore,
        },
    }
}

enum Line {
    Yes,
    No,
    Partial,
}

/// Does `buf` start with `METHOD SP target SP HTTP/1.x CRLF`?
fn request_line(buf: &[u8]) -> Line {
    let method_len = buf.iter().take_while(|b| is_tchar(**b)).count();
    if method_len == buf.len() {
        return if method_len <= MAX_METHOD {
            Line::Partial
        } else {
            Line::No
        };
    }
    if method_len == 0 || method_len > MAX_METHOD || buf[method_len] != b' ' {
        return Line::No;
    }
    let rest = &buf[method_len + 1..];
    let Some(eol) = rest.iter().position(|b| *b == b'\n') else {
        // A target is visible ASCII: anything else cannot become a request line.
        return if rest
            .iter()
            .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\r')
        {
            Line::Partial
        } else {
            Line::No
        };
    };
    let line = rest[..eol].strip_suffix(b"\r").unwrap_or(&rest[..eol]);
    let Some(sp) = line.iter().rposition(|b| *b == b' ') else {
        return Line::No;
    };
    let version = &line[sp + 1..];
    if version.len() == 8 && version.starts_with(b"HTTP/1.") && version[7].is_ascii_digit() {
        Line::Yes
    } else {
        Line::No
    }
}

/// `None` while the head is incomplete and under the limit.
fn check_head(buf: &[u8], max_head: usize) -> Option<HeadCheck> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > max_head => Some(HeadCheck::TooLarge),
        Ok(httparse::Status::Complete(_)) => Some(framing_check(req.headers)),
        Ok(httparse::Status::Partial) if buf.len() >= max_head => Some(HeadCheck::TooLarge),
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(HeadCheck::TooLarge),
        Err(_) => Some(HeadCheck::Malformed),
    }
}

/// Request smuggling guards (RFC 9112 §6.3): conflicting or invalid message framing.
fn framing_check(headers: &[httparse::Header<'_>]) -> HeadCheck {
    let mut content_length: Option<&[u8]> = None;
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let valid = !h.value.is_empty() && h.value.iter().all(u8::is_ascii_digit);
            if !valid || content_length.is_some_and(|prev| prev != h.value) {
                return HeadCheck::Malformed;
            }
            content_length = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        }
    }
    if chunked && content_length.is_some() {
        HeadCheck::Malformed
    } else {
        HeadCheck::Ok
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Classifies a buffer in one go: `None` means more bytes are needed.
pub fn classify_buf(buf: &[u8], max_head: usize) -> Option<Detected> {
    match classify(buf, max_head) {
        Step::Done(d) => Some(d),
        Step::NeedMore => None,
    }
}

/// Reads from `io` until the protocol is known or `timeout` passes.
/// Returns what was found and every byte read.
pub async fn detect<I: AsyncRead + Unpin>(
    io: &mut I,
    timeout: Duration,
    max_head: usize,
) -> io::Result<(Detected, Bytes)> {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Step::Done(d) = classify(&buf, max_head) {
            return Ok((d, buf.freeze()));
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(buf.len().max(1024));
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => {
                let found = match request_line(&buf) {
                    Line::Yes => Detected::Http1 {
                        head: HeadCheck::Incomplete,
                    },
                    Line::No | Line::Partial => Detected::Timeout,
                };
                return Ok((found, buf.freeze()));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> Option<Detected> {
        match classify(buf, 1024) {
            Step::Done(d) => Some(d),
            Step::NeedMore => None,
        }
    }

    #[test]
    fn classifies() {
        assert_eq!(done(H2_PREFACE), Some(Detected::Http2));
        assert_eq!(done(&H2_PREFACE[..10]), None);
        assert_eq!(
            done(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(Detected::Http1 {
                head: HeadCheck::Ok
            })
        );
        assert_eq!(done(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(done(b"GET / HT"), None);
        assert_eq!(done(b"\x16\x03\x01\x02\x00"), Some(Detected::Tls));
        assert_eq!(done(b"\x00\x01binary"), Some(Detected::Opaque));
        assert_eq!(done(b"HELLO world\r\n"), Some(Detected::Opaque));
        assert_eq!(done(b"PING\r\n"), Some(Detected::Opaque));
    }

    #[test]
    fn checks_first_head() {
        let bad = b"GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n";
        assert_eq!(
            done(bad),
            Some(Detected::Http1 {
                head: HeadCheck::Malformed
            })
        );
        let smuggle = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            done(smuggle),
            Some(Detected::Http1 {
                head: HeadCheck::Malformed
            })
        );
        let mut big = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2000));
        assert_eq!(
            done(&big),
            Some(Detected::Http1 {
                head: HeadCheck::TooLarge
            })
        );
    }

    #[tokio::test]
    async fn prefixed_replays_bytes() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"GET / HTTP/1.1\r\n\r\nrest")
            .await
            .unwrap();
        drop(a);
        let mut b = b;
        let (d, prefix) = detect(&mut b, Duration::from_secs(1), 1024).await.unwrap();
        assert_eq!(
            d,
            Detected::Http1 {
                head: HeadCheck::Ok
            }
        );
        let mut all = Vec::new();
        crate::io::Prefixed::new(prefix, b)
            .read_to_end(&mut all)
            .await
            .unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\n\r\nrest");
    }
}
