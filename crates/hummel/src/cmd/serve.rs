//! `hummel serve` (master with an embedded store) and `hummel master`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hummel_master::{KeyEvent, Master, MasterConfig, Tokens};
use hummel_proto::api::BuildState;
use hummel_tls::{ClientTls, ServerTls};
use tokio_util::sync::CancellationToken;

use crate::cli::{EdgeLimits, MasterArgs, RepoInfoArgs, RepoWatch, ServeArgs, ServerTokens};
use crate::datadir;
use crate::util::{
    client_tls, listen, normalize_url, optional_token, resolve_token, serve as serve_http,
    server_tls, shutdown_signal, stop_within,
};

fn check_repo(repo: &Path) -> Result<PathBuf> {
    let meta =
        std::fs::metadata(repo).with_context(|| format!("repository folder {}", repo.display()))?;
    if !meta.is_dir() {
        bail!("repository {} is not a folder", repo.display());
    }
    Ok(std::fs::canonicalize(repo)?)
}

/// `--name`, `--description`, `--sets`: a sets file given must exist (it is read at each
/// build, where its content is checked).
fn info_config(args: RepoInfoArgs) -> Result<hummel_master::InfoConfig> {
    if let Some(f) = &args.sets
        && !f.is_file()
    {
        bail!("sets file {} does not exist", f.display());
    }
    let sets_file = args.sets.map(|f| std::fs::canonicalize(&f).unwrap_or(f));
    Ok(hummel_master::InfoConfig {
        name: args.name,
        description: args.description,
        sets_file,
    })
}

fn tokens(given: ServerTokens, data: &Path) -> Result<Tokens> {
    Ok(Tokens {
        write: resolve_token(given.write_token, data, "write")?,
        slave: resolve_token(given.slave_token, data, "slave")?,
        read: optional_token(given.read_token),
        metrics: optional_token(given.metrics_token),
    })
}

/// How a master is reached: where it listens, with or without TLS, the URL it gives out, and
/// how many connections it holds at once and for how long.
struct Edge {
    listen: SocketAddr,
    tls: Option<ServerTls>,
    advertise: Option<String>,
    limits: EdgeLimits,
}

impl Edge {
    /// Checks `--advertise` and loads the TLS files, before anything else happens.
    fn new(
        listen: SocketAddr,
        tls: &crate::cli::ServerTlsArgs,
        advertise: Option<&str>,
        limits: EdgeLimits,
    ) -> Result<Edge> {
        Ok(Edge {
            listen,
            tls: server_tls(tls)?,
            advertise: advertise.map(normalize_url).transpose()?,
            limits,
        })
    }
}

/// `hummel serve REPO_DIR`.
pub async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let edge = Edge::new(args.listen, &args.tls, args.advertise.as_deref(), args.edge)?;
    let repo = check_repo(&args.repo_dir)?;
    // Held until the server stops.
    let _lock = datadir::lock(&args.data)?;
    let tokens = tokens(args.tokens, &args.data)?;
    let master = Master::open(MasterConfig {
        repo,
        data: args.data.clone(),
        replication: 2,
        heartbeat_interval: Duration::from_secs(3),
        stale_after: Duration::from_secs(30),
        dead_after: Duration::from_secs(600),
        tokens,
        embedded_store: true,
        follow_symlinks: args.follow_symlinks,
        repack_level: args.packs.repack_level,
        keep_revisions: args.packs.keep_revisions,
        gc_grace: args.packs.gc_grace,
        // The embedded store serves clients like any slave.
        fallback_limit: 0,
        client_retention: args.clients.client_retention,
        rate_limit: args.clients.rate_limit,
        signature_expiry: args.signing.signature_expiry,
        rotate_key: args.signing.rotate_key,
        probe_interval: hummel_master::DEFAULT_PROBE_INTERVAL,
        probe_tls: ClientTls::system(),
        info: info_config(args.info)?,
    })
    .context("cannot open the master")?;
    show_signing_key(&master);
    run_master(master, edge, "serve", true, args.watch).await
}

/// `hummel master`.
pub async fn master(args: MasterArgs) -> Result<ExitCode> {
    let edge = Edge::new(args.listen, &args.tls, args.advertise.as_deref(), args.edge)?;
    let repo = check_repo(&args.repo)?;
    if args.stale_after >= args.dead_after {
        bail!("--stale-after must be shorter than --dead-after");
    }
    // Held until the server stops.
    let _lock = datadir::lock(&args.data)?;
    let tokens = tokens(args.tokens, &args.data)?;
    let master = Master::open_with_pack_target(
        MasterConfig {
            repo,
            data: args.data.clone(),
            replication: args.replication,
            heartbeat_interval: args.heartbeat_interval,
            stale_after: args.stale_after,
            dead_after: args.dead_after,
            tokens,
            embedded_store: false,
            follow_symlinks: args.follow_symlinks,
            repack_level: args.packs.repack_level,
            keep_revisions: args.packs.keep_revisions,
            gc_grace: args.packs.gc_grace,
            fallback_limit: args.fallback_limit,
            client_retention: args.clients.client_retention,
            rate_limit: args.clients.rate_limit,
            signature_expiry: args.signing.signature_expiry,
            rotate_key: args.signing.rotate_key,
            probe_interval: args.probe_interval,
            probe_tls: client_tls(&args.trust)?,
            info: info_config(args.info)?,
        },
        args.pack_target,
    )
    .context("cannot open the master")?;
    show_signing_key(&master);
    run_master(master, edge, "master", args.build_on_start, args.watch).await
}

/// Prints the signing key's fingerprint (and what this start did with the key) on stderr.
fn show_signing_key(master: &Master) {
    let k = master.signing_key();
    match k.event {
        KeyEvent::Made => eprintln!(
            "made a new signing key, stored in {}; keep it secret and back it up",
            k.path.display()
        ),
        KeyEvent::Rotated { from } => eprintln!(
            "rotated the signing key: {from} handed over to the new key in {}; clients that \
             pinned the old key follow the handover",
            k.path.display()
        ),
        KeyEvent::Loaded => {}
    }
    eprintln!(
        "signing key fingerprint {} (clients pin it on first contact, or pass --trust {})",
        k.key, k.key
    );
}

async fn run_master(
    master: Master,
    edge: Edge,
    what: &str,
    build: bool,
    watch: RepoWatch,
) -> Result<ExitCode> {
    let (listener, url) = listen(edge.listen, what, edge.tls.as_ref()).await?;
    master.set_public_url(edge.advertise.unwrap_or(url));
    let cancel = CancellationToken::new();
    if watch.watch {
        // The watch builds at start itself, then after each settled change.
        tokio::spawn(
            hummel_master::watch_repository(
                master.clone(),
                watch.watch_settle,
                cancel.clone().cancelled_owned(),
            )
            .context("--watch")?,
        );
    } else if build {
        let id = master.start_build().context("cannot start the build")?;
        tokio::spawn(report_build(master.clone(), id));
    }
    let background = tokio::spawn(hummel_master::run_background(
        master.clone(),
        cancel.clone().cancelled_owned(),
    ));
    let (mut server, open) = serve_http(
        listener,
        edge.limits,
        master.router(),
        cancel.clone().cancelled_owned(),
    );
    let failed = tokio::select! {
        () = shutdown_signal() => None,
        ended = &mut server => Some(ended),
    };
    let unexpected = failed.is_some();
    // A clean stop: no new connections, requests in flight finish, the background loop ends,
    // a running build or repack stops and publishes nothing, the database is checkpointed.
    cancel.cancel();
    master.shut_down();
    let stop = async {
        let served = match failed {
            Some(ended) => ended,
            None => server.await,
        };
        let _ = background.await;
        while !master.is_idle() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let m = master.clone();
        match tokio::task::spawn_blocking(move || m.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not checkpoint the database"),
            Err(e) => tracing::warn!(error = %e, "checkpointing the database failed"),
        }
        served
    };
    let served = stop_within(what, &open, stop).await?;
    served
        .context("server task failed")?
        .context("server failed")?;
    if unexpected {
        bail!("the server stopped unexpectedly");
    }
    Ok(ExitCode::SUCCESS)
}

/// Logs how the start-up build ended.
async fn report_build(master: Master, id: u64) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(st) = master.build_status(id) else {
            continue;
        };
        match st.state {
            BuildState::Running => continue,
            BuildState::Succeeded => {
                tracing::info!(
                    revision = st.revision,
                    files = st.files_total,
                    bytes = st.bytes_total,
                    "build {id} published revision {}",
                    st.revision.unwrap_or_default()
                );
            }
            BuildState::Failed => {
                tracing::error!("build {id} failed: {}", st.error.unwrap_or_default());
            }
        }
        return;
    }
}
