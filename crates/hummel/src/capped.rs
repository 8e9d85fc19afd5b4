//! [`Capped`]: a listener for `axum::serve` that holds at most a fixed number of connections
//! open at once (`--max-connections`). Under it, the master bounds requests per address and at
//! once (`hummel_master`'s limits) and bodies per route; this bounds what a connection costs
//! before any request: a file descriptor, buffers and a task each. A connection whose client
//! stops taking bytes (a write pending for the send timeout) fails its write, and closes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A listener that holds at most a fixed number of connections open at once: each accepted
/// connection keeps a permit of a semaphore until it closes, and at the cap `accept` waits
/// (new connections wait in the kernel's backlog) instead of taking more. It bounds the file
/// descriptors, buffers and tasks that connections cost, whatever they send (the server closes
/// idle ones: its header timeout), and whatever they fail to read: a write that stays pending
/// for the send timeout fails.
pub struct Capped<L> {
    inner: L,
    permits: Arc<Semaphore>,
    max: usize,
    /// How long a write may stay pending (the client takes no byte) before it fails.
    send_timeout: Duration,
    /// The cap was reached and not yet logged.
    saturated: bool,
}

impl<L> Capped<L> {
    /// `inner`, at most `max` connections at once (at least 1), each failing a write that
    /// stays pending for `send_timeout`.
    pub fn new(inner: L, max: usize, send_timeout: Duration) -> Capped<L> {
        let max = max.max(1);
        Capped {
            inner,
            permits: Arc::new(Semaphore::new(max)),
            max,
            send_timeout,
            saturated: false,
        }
    }

    /// Counts this listener's open connections, also after it was handed to the server.
    pub fn gauge(&self) -> OpenConnections {
        OpenConnections {
            permits: self.permits.clone(),
            max: self.max,
        }
    }
}

/// The connections a [`Capped`] listener holds open now (what a shutdown waits for).
#[derive(Clone, Debug)]
pub struct OpenConnections {
    permits: Arc<Semaphore>,
    max: usize,
}

impl OpenConnections {
    /// Connections open now.
    pub fn count(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }
}

impl<L> axum::serve::Listener for Capped<L>
where
    L: axum::serve::Listener,
    L::Io: Unpin,
{
    type Io = CappedIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => {
                self.saturated = false;
                p
            }
            Err(_) => {
                if !self.saturated {
                    self.saturated = true;
                    tracing::warn!(
                        max = self.max,
                        "connection limit reached; new connections wait (--max-connections)"
                    );
                }
                match self.permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    // The semaphore is never closed.
                    Err(_) => std::future::pending().await,
                }
            }
        };
        let (io, addr) = self.inner.accept().await;
        (
            CappedIo {
                io,
                _permit: permit,
                send_timeout: self.send_timeout,
                stalled: None,
            },
            addr,
        )
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection of a [`Capped`] listener: the stream, its place among the connections, and
/// the timer of a write the client is not taking.
pub struct CappedIo<T> {
    io: T,
    _permit: OwnedSemaphorePermit,
    send_timeout: Duration,
    /// Runs while a write (or flush, or shutdown) is pending; gone once one makes progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> CappedIo<T> {
    /// A write's outcome under the send timeout: ready passes (and stops the timer); pending
    /// starts the timer, and fails the write with `TimedOut` once the timer has run out.
    fn paced<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.send_timeout;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client took no byte for {timeout:?} (--send-timeout)"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CappedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CappedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.paced(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.paced(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.paced(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.paced(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_connection_past_the_cap_waits_for_one_to_close() {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut capped = Capped::new(tcp, 2, Duration::from_secs(60));
        let open = capped.gauge();
        assert_eq!(open.count(), 0);
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let (a, _) = capped.accept().await;
        let (_b, _) = capped.accept().await;
        // The third is connected (the kernel's backlog) but not accepted while two are open.
        let third = tokio::time::timeout(std::time::Duration::from_millis(200), capped.accept());
        assert!(third.await.is_err(), "a third connection was accepted");
        assert_eq!(open.count(), 2);
        drop(a);
        let (mut c, _) = tokio::time::timeout(std::time::Duration::from_secs(5), capped.accept())
            .await
            .expect("the third connection once the first closed");
        c.write_all(b"x").await.unwrap();
        drop((c, _b));
        assert_eq!(open.count(), 0);
    }

    /// A client that stops reading: the server's write fails once it has been pending for the
    /// send timeout. A client that reads slowly, but reads, keeps its connection.
    #[tokio::test]
    async fn a_write_the_client_does_not_take_fails_after_the_send_timeout() {
        use tokio::io::AsyncReadExt;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let timeout = Duration::from_secs(1);
        let mut capped = Capped::new(tcp, 4, timeout);
        let piece = vec![7u8; 64 << 10];

        // Never read: the socket buffers fill, then a write stays pending and fails.
        let _deaf = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut to_deaf, _) = capped.accept().await;
        let mut taken = 0usize;
        let mut last_progress = std::time::Instant::now();
        let err = loop {
            match tokio::time::timeout(Duration::from_secs(30), to_deaf.write_all(&piece)).await {
                Ok(Ok(())) => {
                    taken += piece.len();
                    last_progress = std::time::Instant::now();
                }
                Ok(Err(e)) => break e,
                Err(_) => panic!("a write stayed pending for 30 s"),
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains("--send-timeout"), "{err}");
        assert!(
            last_progress.elapsed() >= timeout,
            "failed before the timeout"
        );

        // Reads what has arrived every 20 ms: each write waits for the reader (and for the
        // kernel to open the window again), but never for the whole timeout.
        let slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut to_slow, _) = capped.accept().await;
        let reader = tokio::spawn(async move {
            let mut slow = slow;
            let mut buf = vec![0u8; 1 << 20];
            let mut got = 0usize;
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match slow.read(&mut buf).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got += n,
                }
            }
        });
        let total = taken + (4 << 20);
        let mut sent = 0usize;
        while sent < total {
            to_slow
                .write_all(&piece)
                .await
                .expect("a slow reader was cut");
            sent += piece.len();
        }
        drop(to_slow);
        assert_eq!(reader.await.unwrap(), sent);
    }
}
