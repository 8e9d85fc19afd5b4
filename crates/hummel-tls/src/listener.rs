//! [`TlsListener`]: TCP in, TLS streams out, for `axum::serve`.
//!
//! Handshakes run concurrently inside [`axum::serve::Listener::accept`] (at most
//! [`MAX_HANDSHAKES`] at once, each bounded by [`HANDSHAKE_TIMEOUT`]), so a slow or silent
//! client never holds up the next one. A connection whose first byte is not a TLS handshake
//! record (plain HTTP) gets a `400` saying to use `https://` and is closed: nothing is served
//! in plain text. `axum::serve`'s graceful shutdown drops the listener, and with it the
//! handshakes still running.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::ServerTls;

/// Longest a client may take from connecting to finishing its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 256;
/// The first byte of a TLS record carrying a handshake message (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Most bytes of a plain HTTP request read before answering it (see [`refuse_plain_http`]).
const PLAIN_REQUEST_MAX: usize = 16 << 10;

type Handshake = Pin<Box<dyn Future<Output = Option<(TlsStream<TcpStream>, SocketAddr)>> + Send>>;

/// An HTTPS-only listener for `axum::serve`. Its connections report the peer's address, as a
/// `TcpListener`'s do; wrap it in `axum::serve::ListenerExt::tap_io` to get axum's
/// `ConnectInfo<SocketAddr>` for them.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: FuturesUnordered<Handshake>,
}

impl TlsListener {
    /// Serves TLS with `tls`'s certificate on the bound `tcp` listener.
    pub fn new(tcp: TcpListener, tls: &ServerTls) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(tls.config()),
            handshakes: FuturesUnordered::new(),
        }
    }
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("tcp", &self.tcp)
            .field("handshakes", &self.handshakes.len())
            .finish()
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_HANDSHAKES => {
                    match accepted {
                        Ok((stream, peer)) => self
                            .handshakes
                            .push(Box::pin(handshake(self.acceptor.clone(), stream, peer))),
                        Err(e) => accept_error(e).await,
                    }
                }
                Some(done) = self.handshakes.next(), if !self.handshakes.is_empty() => {
                    if let Some(connection) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// As axum's own listener does: a failed connection is skipped; anything else (out of file
/// descriptors) is logged and waited out for a second.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("accepting a connection failed: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection's TLS handshake; `None` when it failed, timed out or was plain HTTP.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
    let attempt = async {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before saying anything",
            ));
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            refuse_plain_http(stream).await?;
            return Err(io::Error::other("plain HTTP refused"));
        }
        acceptor.accept(stream).await
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
        Ok(Ok(tls)) => Some((tls, peer)),
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// Answers a plain HTTP request with `400` and closes. The request head is read first: closing
/// a socket with unread data sends a reset, which can destroy the answer before the client
/// reads it.
async fn refuse_plain_http(mut stream: TcpStream) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    while head.len() < PLAIN_REQUEST_MAX && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let body = "this server speaks HTTPS only: use an https:// URL\n";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}
