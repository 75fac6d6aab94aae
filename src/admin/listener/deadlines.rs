//! How long an admitted admin connection's client may take once a request is under way: a
//! request body that stalls or trickles fails ([`TimedBody`]), and an answer the client stops
//! reading ends the connection ([`StalledWrite`]). The listener (`super`) wraps each
//! connection's socket in a `StalledWrite` and each request's body in a `TimedBody`, under
//! `[admin] client_timeout_secs`.

use super::MIN_BODY_RATE;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// A request body that fails when the client keeps it waiting for more than `idle` beyond what
/// a stream of [`MIN_BODY_RATE`] bytes a second would take: a budget of waiting time that
/// starts at `idle`, shrinks by each wait for the client and grows by one second per
/// [`MIN_BODY_RATE`] bytes received, but never above `idle`. So a body that stops for `idle`
/// fails, a steady one slower than the rate fails once it has fallen `idle` behind, and bytes
/// sent ahead earn no credit for later waits. Only the time spent waiting for the client counts
/// (from the first read on), not the time the handler takes before or between its reads.
pub(crate) struct TimedBody<B> {
    inner: Pin<Box<B>>,
    idle: Duration,
    /// How much longer the client may keep the body waiting, before the current wait.
    budget: Duration,
    /// When the current wait began.
    waiting: Option<Instant>,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<B> TimedBody<B> {
    pub(crate) fn new(inner: B, idle: Duration) -> TimedBody<B> {
        TimedBody {
            inner: Box::pin(inner),
            idle,
            budget: idle,
            waiting: None,
            deadline: None,
        }
    }

    /// `bytes` arrived: one second of budget per [`MIN_BODY_RATE`] bytes, at most `idle` in all.
    fn credit(&mut self, bytes: u64) {
        let micros = bytes.saturating_mul(1_000_000) / MIN_BODY_RATE;
        self.budget = (self.budget + Duration::from_micros(micros)).min(self.idle);
    }
}

impl<B> HttpBody for TimedBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = this.waiting.take() {
                    this.budget = this.budget.saturating_sub(since.elapsed());
                }
                if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
                    this.credit(data.len() as u64);
                }
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let since = *this.waiting.get_or_insert_with(Instant::now);
                let until = since + this.budget;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                if deadline.deadline() != until {
                    deadline.as_mut().reset(until);
                }
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(too_slow(this.idle))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn too_slow(idle: Duration) -> axum::BoxError {
    format!(
        "the request body stopped for {} s, or fell that far behind {MIN_BODY_RATE} bytes a second",
        idle.as_secs()
    )
    .into()
}

/// A connection whose writes fail when the client has read nothing for `stall` (an answer
/// waits on a full socket buffer that long). Only a write that goes through ends the wait.
pub(super) struct StalledWrite {
    inner: TcpStream,
    stall: Duration,
    since: Option<Pin<Box<Sleep>>>,
}

impl StalledWrite {
    pub(super) fn new(inner: TcpStream, stall: Duration) -> StalledWrite {
        StalledWrite {
            inner,
            stall,
            since: None,
        }
    }

    /// The write is pending: pending still, or an error once it has been for `stall`.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let stall = self.stall;
        let timer = self
            .since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read nothing for {} s", stall.as_secs()),
            )));
        }
        Poll::Pending
    }

    fn progressed<T>(
        &mut self,
        r: Poll<std::io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Pending => self.pending(cx),
            ready => {
                self.since = None;
                ready
            }
        }
    }
}

impl AsyncRead for StalledWrite {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StalledWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progressed(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progressed(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
