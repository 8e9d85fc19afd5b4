//! Small things the commands share: parsing sizes and durations, tokens, logging, TLS files,
//! listening and serving.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hummel_tls::{ClientTls, ServerTls, TlsListener};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing_subscriber::EnvFilter;

use crate::capped::{Capped, OpenConnections};
use crate::cli::{Cli, ClientTlsArgs, Command, EdgeLimits, ServerTlsArgs};

/// Parses `500M`, `20G`, `1.5T`, `4096`, `64k`, `10MiB` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("not a size: {s:?} (try 500M, 20G or plain bytes)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("unknown size unit in {s:?} (use K, M, G or T)")),
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("size out of range: {s:?}"));
    }
    Ok(bytes as u64)
}

/// Parses `500ms`, `5s`, `10m`, `1h`, `2h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("not a duration: {s:?} ({e}; try 500ms, 5s or 10m)"))
}

/// Logs go to stderr. Servers log at info, client commands only warnings, unless -v or RUST_LOG.
pub fn init_logging(cli: &Cli) {
    let server = matches!(
        cli.command,
        Some(Command::Serve(_) | Command::Master(_) | Command::Slave(_))
    );
    let ours = match (cli.verbose, server) {
        (0, true) => "info",
        (0, false) => "warn",
        (1, _) => "debug",
        _ => "trace",
    };
    // The platform verifier logs each certificate it refuses; the error that follows says it.
    let default = format!(
        "warn,hummel={ours},hummel_master={ours},hummel_slave={ours},hummel_client={ours},hummel_store={ours},hummel_tls={ours},rustls_platform_verifier=off"
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(cli.verbose > 0)
        .init();
}

/// A token from a flag or the environment, or else from `DATA/NAME.token`, or else a newly
/// generated one stored there (atomically, mode 0600); says on stderr where a generated one was
/// stored. An empty or whitespace-only token file (an old crash) counts as missing: it is
/// replaced, with a warning, rather than accepted as an empty token.
pub fn resolve_token(given: Option<String>, data: &Path, name: &str) -> Result<String> {
    if let Some(t) = given {
        let t = t.trim().to_string();
        if t.is_empty() {
            bail!("the {name} token is empty");
        }
        return Ok(t);
    }
    let path = data.join(format!("{name}.token"));
    match fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => eprintln!(
            "warning: {} is empty; replacing it with a new {name} token",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    hummel_store::write_private_atomic(&path, token.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("generated a {name} token, stored in {}", path.display());
    Ok(token)
}

/// A token that may be absent; a blank one counts as absent.
pub fn optional_token(token: Option<String>) -> Option<String> {
    token
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// A token that must be given (client side).
pub fn require_token(given: Option<String>, what: &str, env: &str, flag: &str) -> Result<String> {
    match given.map(|t| t.trim().to_string()) {
        Some(t) if !t.is_empty() => Ok(t),
        _ => bail!("no {what} token: set {env} or pass {flag}"),
    }
}

/// `--tls-cert` and `--tls-key`, loaded and checked; `None` for plain HTTP.
pub fn server_tls(args: &ServerTlsArgs) -> Result<Option<ServerTls>> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(ServerTls::from_pem_files(cert, key)?)),
        (None, None) => Ok(None),
        // clap requires both; kept for callers that build the arguments themselves.
        _ => bail!("--tls-cert and --tls-key go together"),
    }
}

/// The system's roots plus `--ca-cert` (or `HUMMEL_CA_CERT`), loaded and checked.
pub fn client_tls(args: &ClientTlsArgs) -> Result<ClientTls> {
    Ok(match &args.ca_cert {
        Some(path) => ClientTls::with_ca_file(path)?,
        None => ClientTls::system(),
    })
}

/// A bound listener: plain HTTP, or HTTPS only.
pub enum Listener {
    /// Plain HTTP.
    Plain(TcpListener),
    /// HTTPS; plain HTTP refused.
    Tls(TlsListener),
}

/// Binds `addr` and prints the contract's `listening on http://IP:PORT` line on stderr
/// (`https://` with TLS); returns the listener and that URL.
pub async fn listen(
    addr: SocketAddr,
    what: &str,
    tls: Option<&ServerTls>,
) -> Result<(Listener, String)> {
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = tcp.local_addr()?;
    let (listener, url) = match tls {
        None => (Listener::Plain(tcp), format!("http://{bound}")),
        Some(tls) => (
            Listener::Tls(TlsListener::new(tcp, tls)),
            format!("https://{bound}"),
        ),
    };
    eprintln!("hummel {what} listening on {url}");
    Ok((listener, url))
}

/// Serves `router` on `listener` in a task of its own, within `limits` (at most
/// `max_connections` connections at once; a connection that takes longer than
/// `header_timeout` to send a request's headers, idle ones included, is closed; a request
/// body that sends nothing for `body_timeout` fails its request; an answer whose client takes
/// nothing for `send_timeout` fails its connection), until
/// `shutdown` completes; then it takes no new connection, lets the requests in flight finish,
/// and the task ends when the last connection closed. Handlers see the peer as
/// `ConnectInfo<SocketAddr>`. Also returns the count of open connections.
pub fn serve(
    listener: Listener,
    limits: EdgeLimits,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (JoinHandle<std::io::Result<()>>, OpenConnections) {
    /// One listener of either kind, capped, its loop in a task of its own.
    fn spawn<L>(
        inner: L,
        limits: EdgeLimits,
        router: axum::Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> (JoinHandle<std::io::Result<()>>, OpenConnections)
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
        L::Io: Unpin,
    {
        let capped = Capped::new(inner, limits.max_connections as usize, limits.send_timeout);
        let open = capped.gauge();
        (
            tokio::spawn(serve_connections(capped, limits, router, shutdown)),
            open,
        )
    }
    match listener {
        Listener::Plain(tcp) => spawn(tcp, limits, router, shutdown),
        Listener::Tls(tls) => spawn(tls, limits, router, shutdown),
    }
}

/// The accept loop of [`serve`]: one task per connection, HTTP/1.1 (what every Hummel client
/// speaks, over TCP and TLS alike) with hyper's header timeout, which `axum::serve` leaves off
/// (it sets no timer, and its HTTP/2 detection waits for a first byte without a bound), each
/// request body under tower-http's stall timeout; then a graceful shutdown of every
/// connection.
async fn serve_connections<L>(
    mut listener: L,
    limits: EdgeLimits,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let stalls_after = limits.body_timeout;
            router.clone().oneshot(request.map(|body| {
                axum::body::Body::new(tower_http::timeout::TimeoutBody::new(stalls_after, body))
            }))
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// How long a server (`serve`, `master`, `slave`) may take to stop after SIGTERM or SIGINT
/// (Ctrl-C): requests in flight finish, background work stops, state is flushed. Then it
/// exits anyway.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Runs `stop`, the rest of a clean stop that a signal began, for at most
/// [`SHUTDOWN_DEADLINE`]. Past the deadline, or at a second signal, it gives up with one line
/// saying so and how many connections it cut off; the caller then exits (non-zero).
pub async fn stop_within<T>(
    what: &str,
    open: &OpenConnections,
    stop: impl Future<Output = T>,
) -> Result<T> {
    let started = std::time::Instant::now();
    tracing::info!(
        open = open.count(),
        deadline = ?SHUTDOWN_DEADLINE,
        "{what}: taking no new connections; finishing the requests in flight"
    );
    tokio::select! {
        done = stop => {
            tracing::info!(took = ?started.elapsed(), "{what} stopped cleanly");
            Ok(done)
        }
        () = tokio::time::sleep(SHUTDOWN_DEADLINE) => bail!(
            "{what}: the shutdown deadline of {} s passed with {} connection(s) still open; \
             stopped without waiting for them",
            SHUTDOWN_DEADLINE.as_secs(),
            open.count()
        ),
        () = shutdown_signal() => bail!(
            "{what}: a second signal; stopped at once, {} connection(s) cut off",
            open.count()
        ),
    }
}

/// `http://host:port` without a trailing slash; refuses anything but http(s) URLs.
pub fn normalize_url(url: &str) -> Result<String> {
    let u = url.trim().trim_end_matches('/');
    if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() <= "http://".len() {
        bail!("not an http URL: {url:?} (expected e.g. http://127.0.0.1:7070)");
    }
    Ok(u.to_string())
}

/// Resolves when the process gets SIGINT or SIGTERM (on Windows: Ctrl-C, Ctrl-Break, or its
/// console closing).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(windows)]
    let term = async {
        use tokio::signal::windows;
        match (windows::ctrl_break(), windows::ctrl_close()) {
            (Ok(mut brk), Ok(mut close)) => {
                tokio::select! {
                    _ = brk.recv() => {},
                    _ = close.recv() => {},
                }
            }
            _ => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(any(unix, windows)))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// `1.5 GB`-style decimal sizes for humans.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("20G").unwrap(), 20 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn a_token_file_is_generated_once_and_an_empty_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("write.token");
        let t = resolve_token(None, dir.path(), "write").unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(fs::read_to_string(&path).unwrap(), t);
        assert_eq!(resolve_token(None, dir.path(), "write").unwrap(), t, "kept");
        assert_eq!(
            resolve_token(Some(" given ".into()), dir.path(), "write").unwrap(),
            "given"
        );
        for empty in ["", " \n\t "] {
            fs::write(&path, empty).unwrap();
            let fresh = resolve_token(None, dir.path(), "write").unwrap();
            assert_eq!(fresh.len(), 64, "an empty token file is never accepted");
            assert_ne!(fresh, t);
            assert_eq!(fs::read_to_string(&path).unwrap(), fresh);
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            normalize_url("http://127.0.0.1:7070/").unwrap(),
            "http://127.0.0.1:7070"
        );
        assert!(normalize_url("127.0.0.1:7070").is_err());
        assert!(normalize_url("ftp://x").is_err());
    }
}
