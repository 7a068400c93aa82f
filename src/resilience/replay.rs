//! A request body that can be sent more than once: it streams to the first attempt while
//! keeping a copy of what passed, up to a cap; later attempts replay the copy, then go on
//! reading the client. Past the cap the copy is dropped and the body streams on, unretriable.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

struct Shared<B> {
    inner: B,
    chunks: Vec<Bytes>,
    len: usize,
    cap: usize,
    /// The copy was dropped (over the cap, or the client's body failed): no more replays.
    spent: bool,
    /// The client's body has ended.
    ended: bool,
    trailers: Option<HeaderMap>,
    hint: SizeHint,
}

/// One reader of a shared, replayable body. Attempts run one after another, so readers never
/// contend; the lock is held only inside `poll_frame`, never across an await.
pub struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    /// Chunks of the copy this reader has passed on.
    pos: usize,
    trailers_sent: bool,
}

impl<B> ReplayBody<B> {
    /// Wraps `body`, keeping up to `cap` bytes of it for replays.
    pub fn new(body: B, hint: SizeHint, cap: usize) -> Self {
        ReplayBody {
            shared: Arc::new(Mutex::new(Shared {
                inner: body,
                chunks: Vec::new(),
                len: 0,
                cap,
                spent: false,
                ended: false,
                trailers: None,
                hint,
            })),
            pos: 0,
            trailers_sent: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared<B>> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new reader from the start, unless the copy is gone.
    pub fn replay(&self) -> Option<Self> {
        (!self.lock().spent).then(|| ReplayBody {
            shared: self.shared.clone(),
            pos: 0,
            trailers_sent: false,
        })
    }

    pub fn is_replayable(&self) -> bool {
        !self.lock().spent
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let mut s = this.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if this.pos < s.chunks.len() {
            let chunk = s.chunks[this.pos].clone();
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if s.ended {
            if !this.trailers_sent
                && let Some(t) = s.trailers.clone()
            {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut s.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !s.spent {
                        if s.len + data.len() <= s.cap {
                            s.len += data.len();
                            s.chunks.push(data.clone());
                            this.pos = s.chunks.len();
                        } else {
                            s.spent = true;
                            s.chunks = Vec::new();
                            this.pos = 0;
                        }
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    s.trailers = Some(t.clone());
                    s.ended = true;
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                s.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                s.spent = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = self.lock();
        s.ended && self.pos >= s.chunks.len() && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        self.lock().hint
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    type Chunks = StreamBody<
        futures_util::stream::Iter<
            std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>,
        >,
    >;

    fn body(parts: &[&'static str]) -> Chunks {
        let frames: Vec<_> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn read<B: Body<Data = Bytes> + Unpin>(b: B) -> Bytes
    where
        B::Error: std::fmt::Debug,
    {
        b.collect().await.expect("body").to_bytes()
    }

    #[tokio::test]
    async fn replays_what_the_first_attempt_sent() {
        let first = ReplayBody::new(body(&["ab", "cd"]), SizeHint::with_exact(4), 16);
        let second = first.replay().expect("under the cap");
        assert_eq!(read(first).await, "abcd");
        assert_eq!(read(second).await, "abcd");
    }

    #[tokio::test]
    async fn a_replay_after_a_partial_read_continues_from_the_client() {
        let mut first = ReplayBody::new(body(&["ab", "cd", "ef"]), SizeHint::default(), 16);
        let frame = first.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().ok(), Some(Bytes::from_static(b"ab")));
        let second = first.replay().expect("under the cap");
        drop(first);
        assert_eq!(read(second).await, "abcdef");
    }

    #[tokio::test]
    async fn over_the_cap_streams_once() {
        let first = ReplayBody::new(body(&["abc", "def"]), SizeHint::default(), 4);
        assert!(first.is_replayable(), "nothing read yet");
        let probe = first.replay().expect("still under");
        assert_eq!(read(first).await, "abcdef", "streams through unbroken");
        assert!(!probe.is_replayable());
        assert!(probe.replay().is_none());
    }
}
