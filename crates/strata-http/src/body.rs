//! The body of a response the layer answers: bytes from the cache, or the origin's body
//! passed through (after whatever of it was already read while deciding to store it).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// A response body: stored bytes, or the inner service's body streamed through.
#[derive(Debug)]
pub struct CacheBody<B> {
    prefix: Option<Bytes>,
    rest: Option<B>,
}

impl<B> CacheBody<B> {
    /// A body of stored bytes.
    pub fn full(bytes: Bytes) -> Self {
        CacheBody {
            prefix: (!bytes.is_empty()).then_some(bytes),
            rest: None,
        }
    }

    /// No body (`HEAD`, `304`).
    pub fn empty() -> Self {
        CacheBody {
            prefix: None,
            rest: None,
        }
    }

    /// The origin's body, as is.
    pub fn streaming(body: B) -> Self {
        CacheBody {
            prefix: None,
            rest: Some(body),
        }
    }

    /// The origin's body of which `prefix` was already read.
    pub(crate) fn prefixed(prefix: Bytes, rest: B) -> Self {
        CacheBody {
            prefix: (!prefix.is_empty()).then_some(prefix),
            rest: Some(rest),
        }
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && self
                .rest
                .as_ref()
                .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(prefix),
            Some(rest) => {
                let hint = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(hint.lower() + prefix);
                if let Some(upper) = hint.upper() {
                    out.set_upper(upper + prefix);
                }
                out
            }
        }
    }
}
