//! Connection deadlines the HTTP server does not keep by itself.
//!
//! poem's server hands connections to hyper without a timer, so hyper's `header_read_timeout` is
//! off, and the request time limit of `api::middleware` starts only once a request's head has
//! been parsed. A client that sends its request a byte at a time, or opens a connection and sends
//! nothing, would hold a connection (and a file descriptor) forever. [`DeadlineAcceptor`] wraps
//! the listener so that every connection keeps two deadlines, enforced on its reads and writes:
//!
//! - **request**: from the first byte of a request until the first byte of its answer, at most
//!   `Limits::request` (the request time limit plus a grace second, so that the middleware's own
//!   503 `request-timeout` comes first whenever the service, not the client, is slow). A request
//!   head or body trickled in slower than that is cut: the connection is closed.
//! - **idle**: a connection with no request in progress (just opened, or between keep-alive
//!   requests) is closed after `Limits::idle`.
//!
//! While an answer is being written, a write that makes no progress for `Limits::request` (a
//! client that does not read) also closes the connection.
//!
//! The deadlines are per connection, on the bytes, so they hold for HTTP/1.1 whatever the
//! request's shape. For HTTP/2 (prior knowledge only; there is no TLS here) they bound the
//! connection as a whole, not each stream.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use poem::{
    http::uri::Scheme,
    listener::Acceptor,
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// How long a connection may take for each phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// First byte of a request to the first byte of its answer; also a stalled answer.
    pub request: Duration,
    /// No request in progress.
    pub idle: Duration,
}

impl Limits {
    /// For a service whose request time limit is `request_timeout`: that plus one second for a
    /// request, and a minute for an idle connection (above the usual keep-alive of proxies and
    /// browsers, which close theirs first).
    pub fn for_request_timeout(request_timeout: Duration) -> Self {
        Self {
            request: request_timeout + Duration::from_secs(1),
            idle: Duration::from_secs(60),
        }
    }
}

/// An [`Acceptor`] whose connections keep [`Limits`].
pub struct DeadlineAcceptor<A> {
    inner: A,
    limits: Limits,
}

impl<A> DeadlineAcceptor<A> {
    pub fn new(inner: A, limits: Limits) -> Self {
        Self { inner, limits }
    }
}

impl<A: Acceptor> Acceptor for DeadlineAcceptor<A> {
    type Io = DeadlineIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    fn accept(
        &mut self,
    ) -> impl Future<Output = io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)>> + Send {
        let limits = self.limits;
        let accepted = self.inner.accept();
        async move {
            let (io, local, remote, scheme) = accepted.await?;
            Ok((DeadlineIo::new(io, limits), local, remote, scheme))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request: the idle deadline runs.
    Idle,
    /// A request is arriving or being handled: the request deadline runs from its first byte.
    Request,
    /// The answer is being written: a write may stall at most the request limit.
    Answer,
}

/// A connection with deadlines; see the module documentation.
pub struct DeadlineIo<T> {
    inner: T,
    limits: Limits,
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
}

impl<T> DeadlineIo<T> {
    pub fn new(inner: T, limits: Limits) -> Self {
        Self {
            inner,
            limits,
            phase: Phase::Idle,
            deadline: Box::pin(tokio::time::sleep(limits.idle)),
        }
    }

    fn enter(&mut self, phase: Phase) {
        let limit = match phase {
            Phase::Idle => self.limits.idle,
            Phase::Request | Phase::Answer => self.limits.request,
        };
        self.phase = phase;
        self.deadline.as_mut().reset(Instant::now() + limit);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                match self.phase {
                    Phase::Idle => "the connection was idle too long",
                    Phase::Request => "the request took too long to arrive",
                    Phase::Answer => "the client stopped reading the answer",
                },
            )),
            Poll::Pending => Ok(()),
        }
    }

    /// The deadline side of a write: bytes written mean an answer in progress, which may stall at
    /// most the answer limit; a write that cannot proceed is checked against that limit too.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match poll {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.enter(Phase::Answer);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                if self.phase != Phase::Answer {
                    self.enter(Phase::Answer);
                }
                self.expired(cx)?;
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeadlineIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.phase != Phase::Answer {
            // Checked before reading too: a client that always has one more byte ready must not
            // outrun the deadline.
            this.expired(cx)?;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.phase != Phase::Request {
                    // The first bytes of a request: its deadline starts now.
                    this.enter(Phase::Request);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.phase == Phase::Answer {
                    // The server is reading again with nothing to read: the answer is out.
                    this.enter(Phase::Idle);
                }
                // Waiting on the client: the deadline of the phase applies (and wakes us).
                this.expired(cx)?;
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    const LIMITS: Limits = Limits {
        request: Duration::from_millis(400),
        idle: Duration::from_millis(800),
    };

    #[tokio::test]
    async fn a_trickled_request_is_cut_at_the_request_limit() {
        let (mut client, server) = duplex(1024);
        let mut server = DeadlineIo::new(server, LIMITS);
        let mut buf = [0u8; 64];
        client.write_all(b"G").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 1);
        let started = Instant::now();
        let err = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if started.elapsed() < Duration::from_secs(5) {
                let _ = client.write_all(b"E").await;
            }
            match tokio::time::timeout(Duration::from_millis(1), server.read(&mut buf)).await {
                Ok(Ok(_)) | Err(_) => continue,
                Ok(Err(e)) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(
            took >= LIMITS.request && took <= LIMITS.request + Duration::from_millis(250),
            "cut after {took:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_connection_is_cut_at_the_idle_limit() {
        let (_client, server) = duplex(1024);
        let mut server = DeadlineIo::new(server, LIMITS);
        let started = Instant::now();
        let err = server.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= LIMITS.idle && took < LIMITS.idle * 2, "{took:?}");
    }

    #[tokio::test]
    async fn an_answer_resets_to_idle_and_a_new_request_gets_a_fresh_deadline() {
        let (mut client, server) = duplex(1024);
        let mut server = DeadlineIo::new(server, LIMITS);
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            client.write_all(b"ping").await.unwrap();
            assert_eq!(server.read(&mut buf).await.unwrap(), 4);
            // The service thinks for a while, within the limit, then answers.
            tokio::time::sleep(Duration::from_millis(150)).await;
            server.write_all(b"pong").await.unwrap();
            assert_eq!(client.read(&mut buf).await.unwrap(), 4);
            // Keep-alive pause shorter than the idle limit, longer than the request limit.
            let pending = tokio::time::timeout(Duration::from_millis(600), server.read(&mut buf));
            assert!(pending.await.is_err(), "still open while idle");
        }
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut() {
        let (_client, server) = duplex(16);
        let mut server = DeadlineIo::new(server, LIMITS);
        let started = Instant::now();
        let err = server.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(
            took >= LIMITS.request && took < LIMITS.request * 2,
            "{took:?}"
        );
    }
}
