//! The response body the proxy hands to hyper: a streamed upstream body (which returns its
//! HTTP/1.1 connection to the pool when it ends) or a small body the proxy made itself.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::Checkout;

/// A response body going to a client.
pub enum ProxyBody {
    Full(Option<Bytes>),
    Upstream {
        body: Incoming,
        checkout: Option<Checkout>,
    },
}

impl ProxyBody {
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }
    pub fn full(b: Bytes) -> Self {
        ProxyBody::Full(Some(b))
    }
    pub fn upstream(body: Incoming, checkout: Option<Checkout>) -> Self {
        let mut b = ProxyBody::Upstream { body, checkout };
        b.release_if_done();
        b
    }

    /// Returns the upstream connection to its pool once the body is read in full.
    fn release_if_done(&mut self) {
        if let ProxyBody::Upstream { body, checkout } = self
            && body.is_end_stream()
            && let Some(c) = checkout.take()
        {
            c.pool.put_h1(c.sender);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match this {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream { body, checkout } => {
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => {
                        if let Some(c) = checkout.take() {
                            c.pool.put_h1(c.sender);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        checkout.take();
                    }
                    _ => this.release_if_done(),
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream { body, .. } => body.size_hint(),
        }
    }
}
