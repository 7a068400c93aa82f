//! Mesh-TLS recognition: reads a TLS ClientHello far enough to see its ALPN list, without
//! consuming it. Mesh TLS offers `skiff-mesh/1` first; anything else is an app's own TLS.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::MESH_ALPN;

/// A ClientHello is at most this long here; past it the connection is not mesh TLS.
const MAX_HELLO: usize = 16 * 1024;

/// What the bytes so far say about the ClientHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hello {
    /// Incomplete: read more.
    NeedMore,
    /// ALPN offers `skiff-mesh/1` first.
    Mesh,
    /// Another TLS client (or not a ClientHello at all).
    Other,
}

/// Reads on from `prefix` (the bytes detection saw) until the ClientHello is complete, the
/// deadline passes or the client stops; returns the verdict and every byte read.
pub async fn read_hello<I: AsyncRead + Unpin>(
    io: &mut I,
    prefix: Bytes,
    timeout: Duration,
) -> std::io::Result<(Hello, Bytes)> {
    let mut buf = BytesMut::from(prefix);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match classify(&buf) {
            Hello::NeedMore if buf.len() < MAX_HELLO + 64 => {}
            Hello::NeedMore => return Ok((Hello::Other, buf.freeze())),
            done => return Ok((done, buf.freeze())),
        }
        buf.reserve(4096);
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => return Ok((Hello::Other, buf.freeze())),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Classifies the bytes read so far. The handshake message may span several records.
pub fn classify(buf: &[u8]) -> Hello {
    let mut handshake = Vec::new();
    let mut rest = buf;
    loop {
        // Record header: type 22 (handshake), version, 16-bit length.
        let Some(header) = rest.get(..5) else {
            return Hello::NeedMore;
        };
        if header[0] != 22 {
            return Hello::Other;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let Some(body) = rest.get(5..5 + len) else {
            return Hello::NeedMore;
        };
        handshake.extend_from_slice(body);
        rest = &rest[5 + len..];
        // Handshake header: type 1 (ClientHello), 24-bit length.
        if handshake.len() >= 4 {
            if handshake[0] != 1 {
                return Hello::Other;
            }
            let want = usize::from(handshake[1]) << 16
                | usize::from(handshake[2]) << 8
                | usize::from(handshake[3]);
            if want > MAX_HELLO {
                return Hello::Other;
            }
            if handshake.len() >= 4 + want {
                return match first_alpn(&handshake[4..4 + want]) {
                    Some(p) if p == MESH_ALPN => Hello::Mesh,
                    _ => Hello::Other,
                };
            }
        }
    }
}

/// A cursor over big-endian, length-prefixed fields; `None` on truncation.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// The first protocol of the ALPN extension (type 16) of a ClientHello body.
fn first_alpn(hello: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(hello);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind == 16 {
            let mut list = Reader(Reader(data).vec16()?);
            return list.vec8();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A real ClientHello from rustls offering `alpn`.
    fn client_hello(alpn: &[&[u8]]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls_pki_types::ServerName::try_from("mesh.skiff").unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn mesh_alpn_first_is_mesh_and_everything_else_is_not() {
        assert_eq!(classify(&client_hello(&[MESH_ALPN, b"h2"])), Hello::Mesh);
        assert_eq!(classify(&client_hello(&[MESH_ALPN])), Hello::Mesh);
        assert_eq!(classify(&client_hello(&[b"h2", MESH_ALPN])), Hello::Other);
        assert_eq!(classify(&client_hello(&[b"http/1.1"])), Hello::Other);
        assert_eq!(classify(&client_hello(&[])), Hello::Other);
    }

    #[test]
    fn a_partial_hello_asks_for_more_at_every_cut() {
        let hello = client_hello(&[MESH_ALPN, b"http/1.1"]);
        for cut in 0..hello.len() {
            assert_eq!(classify(&hello[..cut]), Hello::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn a_hello_split_across_records_is_reassembled() {
        let hello = client_hello(&[MESH_ALPN]);
        let body = &hello[5..];
        let (a, b) = body.split_at(40);
        let mut split = Vec::new();
        for part in [a, b] {
            split.extend_from_slice(&[22, 3, 1]);
            split.extend_from_slice(&u16::try_from(part.len()).unwrap().to_be_bytes());
            split.extend_from_slice(part);
        }
        assert_eq!(classify(&split), Hello::Mesh);
    }

    #[test]
    fn garbage_never_panics() {
        let hello = client_hello(&[MESH_ALPN]);
        for i in 5..hello.len() {
            let mut bad = hello.clone();
            bad[i] ^= 0xff;
            let _ = classify(&bad);
        }
        assert_eq!(classify(&[23, 3, 3, 0, 0]), Hello::Other);
        assert_eq!(classify(&[22, 3, 1, 0, 0, 23]), Hello::NeedMore);
    }
}
