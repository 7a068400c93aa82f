//! The response body the proxy hands to hyper: a streamed upstream body (which returns its
//! HTTP/1.1 connection to the pool when it ends, and finishes the request's span and log line)
//! or a small body the proxy made itself.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::observe::Exchange;
use crate::upstream::Checkout;

/// A response body going to a client.
pub enum ProxyBody {
    Full(Option<Bytes>),
    Upstream {
        body: Incoming,
        checkout: Option<Checkout>,
        /// The observed request this body ends (its span and log line), if any.
        exchange: Option<Box<Exchange>>,
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
        let mut b = ProxyBody::Upstream {
            body,
            checkout,
            exchange: None,
        };
        b.release_if_done();
        b
    }

    /// Hands `exchange` to the body: it finishes when the body ends or is dropped. A body the
    /// proxy made (or one already over) finishes it now.
    pub fn observe(&mut self, mut ex: Box<Exchange>) {
        match self {
            ProxyBody::Upstream { body, exchange, .. } if !body.is_end_stream() => {
                *exchange = Some(ex);
            }
            _ => ex.ended(false),
        }
    }

    /// Returns the upstream connection to its pool once the body is read in full.
    fn release_if_done(&mut self) {
        if let ProxyBody::Upstream {
            body,
            checkout,
            exchange,
        } = self
            && body.is_end_stream()
        {
            if let Some(c) = checkout.take() {
                c.pool.put_h1(c.sender);
            }
            if let Some(mut ex) = exchange.take() {
                ex.ended(false);
            }
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
            ProxyBody::Upstream {
                body,
                checkout,
                exchange,
            } => {
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => {
                        if let Some(c) = checkout.take() {
                            c.pool.put_h1(c.sender);
                        }
                        if let Some(mut ex) = exchange.take() {
                            ex.ended(false);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        checkout.take();
                        if let Some(mut ex) = exchange.take() {
                            ex.ended(true);
                        }
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(t), Some(ex)) = (frame.trailers_ref(), exchange.as_mut()) {
                            ex.trailers(t);
                        }
                        this.release_if_done();
                    }
                    Poll::Pending => {}
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
