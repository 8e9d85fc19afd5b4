//! [`Capped`]: a listener for `axum::serve` that holds at most a fixed number of connections
//! open at once (`--max-connections`). Under it, the master bounds requests per address and at
//! once (`hummel_master`'s limits) and bodies per route; this bounds what a connection costs
//! before any request: a file descriptor, buffers and a task each.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A listener that holds at most a fixed number of connections open at once: each accepted
/// connection keeps a permit of a semaphore until it closes, and at the cap `accept` waits
/// (new connections wait in the kernel's backlog) instead of taking more. It bounds the file
/// descriptors, buffers and tasks that connections cost, whatever they send. (A connection that
/// stays idle keeps its permit: put a proxy with timeouts in front against many idle ones.)
pub struct Capped<L> {
    inner: L,
    permits: Arc<Semaphore>,
    max: usize,
    /// The cap was reached and not yet logged.
    saturated: bool,
}

impl<L> Capped<L> {
    /// `inner`, at most `max` connections at once (at least 1).
    pub fn new(inner: L, max: usize) -> Capped<L> {
        let max = max.max(1);
        Capped {
            inner,
            permits: Arc::new(Semaphore::new(max)),
            max,
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
            },
            addr,
        )
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection of a [`Capped`] listener: the stream, and its place among the connections.
pub struct CappedIo<T> {
    io: T,
    _permit: OwnedSemaphorePermit,
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
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
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
        let mut capped = Capped::new(tcp, 2);
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
}
