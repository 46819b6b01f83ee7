//! The response body: the server's own, possibly cut (watches), or an injected error answer.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use rand::RngExt as _;
use rand::rngs::ChaCha8Rng;
use tokio::time::Sleep;
use tower::BoxError;

use crate::State;

/// When a watch stream is cut: after a frame with probability `rate`, or at `deadline`.
pub(crate) struct Cut {
    rate: f64,
    rng: ChaCha8Rng,
    deadline: Pin<Box<Sleep>>,
    state: Arc<State>,
}

impl std::fmt::Debug for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cut").field("rate", &self.rate).finish()
    }
}

impl Cut {
    pub(crate) fn new(rate: f64, lifetime: Duration, rng: ChaCha8Rng, state: Arc<State>) -> Self {
        Cut {
            rate,
            rng,
            deadline: Box::pin(tokio::time::sleep(lifetime)),
            state,
        }
    }
}

enum Inner<B> {
    Server {
        body: B,
        cut: Option<Box<Cut>>,
    },
    Synthetic(Option<Bytes>),
    /// Cut: the next poll reports the reset, then the body ends.
    Cutting,
    Done,
}

pub struct FaultBody<B> {
    inner: Inner<B>,
}

impl<B> FaultBody<B> {
    pub(crate) fn wrap(body: B, cut: Option<Cut>) -> Self {
        FaultBody {
            inner: Inner::Server {
                body,
                cut: cut.map(Box::new),
            },
        }
    }

    pub(crate) fn synthetic(bytes: Bytes) -> Self {
        FaultBody {
            inner: Inner::Synthetic(Some(bytes)),
        }
    }
}

fn cut_error() -> BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "watch stream cut: connection reset by peer (injected fault)",
    ))
}

impl<B> Body for FaultBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Synthetic(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Done => Poll::Ready(None),
            Inner::Cutting => {
                this.inner = Inner::Done;
                Poll::Ready(Some(Err(cut_error())))
            }
            Inner::Server { body, cut } => {
                if let Some(c) = cut.as_mut()
                    && c.deadline.as_mut().poll(cx).is_ready()
                {
                    c.state.watch_cuts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(fault = "watch-cut", after = "lifetime", "injected fault");
                    this.inner = Inner::Done;
                    return Poll::Ready(Some(Err(cut_error())));
                }
                let frame = match Pin::new(body).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(f) => f.map(|f| f.map_err(Into::into)),
                };
                if let (Some(Ok(f)), Some(c)) = (&frame, cut.as_mut())
                    && f.is_data()
                    && c.rng.random_bool(c.rate)
                {
                    c.state.watch_cuts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(fault = "watch-cut", after = "frame", "injected fault");
                    this.inner = Inner::Cutting;
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Server { body, .. } => body.is_end_stream(),
            Inner::Synthetic(b) => b.is_none(),
            Inner::Cutting => false,
            Inner::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Server { body, cut: None } => body.size_hint(),
            Inner::Synthetic(Some(b)) => SizeHint::with_exact(b.len() as u64),
            _ => SizeHint::default(),
        }
    }
}
