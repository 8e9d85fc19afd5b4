//! `hummel slave`.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use hummel_slave::{Slave, SlaveConfig};
use tokio_util::sync::CancellationToken;

use crate::cli::SlaveArgs;
use crate::datadir;
use crate::util::{
    client_tls, listen, normalize_url, optional_token, require_token, serve, server_tls,
    shutdown_signal, stop_within,
};

/// `hummel slave --master URL --data DIR`.
pub async fn slave(args: SlaveArgs) -> Result<ExitCode> {
    let master_url = normalize_url(&args.master)?;
    let tls = server_tls(&args.tls)?;
    let trust = client_tls(&args.trust)?;
    let slave_token = require_token(
        args.slave_token,
        "slave",
        "HUMMEL_SLAVE_TOKEN",
        "--slave-token",
    )?;
    if args.advertise.is_none() && args.listen.ip().is_unspecified() {
        bail!(
            "listening on {} needs --advertise {}://HOST:PORT (the address clients reach this slave at)",
            args.listen,
            if tls.is_some() { "https" } else { "http" }
        );
    }
    if args.replication_concurrency == 0 {
        bail!("--replication-concurrency must be at least 1");
    }
    if args.limit_rate == Some(0) {
        bail!("--limit-rate must be at least 1 byte per second");
    }
    // Held until the slave stops.
    let _lock = datadir::lock(&args.data)?;
    let slave = Slave::open(SlaveConfig {
        master_url,
        data: args.data.clone(),
        advertise_url: String::new(),
        quota: args.quota,
        slave_token,
        read_token: optional_token(args.read_token),
        metrics_token: optional_token(args.metrics_token),
        replication_concurrency: args.replication_concurrency,
        scrub_interval: args.scrub_interval,
        serve_limit: args.limit_rate,
        tls: trust,
    })
    .with_context(|| format!("cannot open the slave store in {}", args.data.display()))?;
    let (listener, url) = listen(args.listen, "slave", tls.as_ref()).await?;
    let advertise = match args.advertise {
        Some(a) => normalize_url(&a)?,
        None => url,
    };
    slave.set_advertise_url(advertise);

    let cancel = CancellationToken::new();
    let (server, open) = serve(
        listener,
        args.edge,
        slave.router(),
        cancel.clone().cancelled_owned(),
    );
    // The worker (announces, heartbeats, replication, scrub) stops when `cancel` fires: fetches
    // under way are dropped with their temp files, so only verified packs stay in the store.
    let worker = hummel_slave::run(slave.clone(), cancel.clone().cancelled_owned());
    tokio::pin!(worker);
    let mut result = tokio::select! {
        r = &mut worker => Some(r.map_err(anyhow::Error::from)),
        () = shutdown_signal() => None,
    };
    // A clean stop: no new connections, downloads in flight finish (within the deadline).
    cancel.cancel();
    let stop = async {
        if result.is_none() {
            result = Some(worker.await.map_err(anyhow::Error::from));
        }
        server.await
    };
    let served = stop_within("slave", &open, stop).await?;
    result.unwrap_or(Ok(())).context("slave stopped")?;
    served
        .context("server task failed")?
        .context("server failed")?;
    Ok(ExitCode::SUCCESS)
}
