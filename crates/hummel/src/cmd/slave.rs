//! `hummel slave`.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use hummel_slave::{Slave, SlaveConfig};
use tokio_util::sync::CancellationToken;

use crate::cli::SlaveArgs;
use crate::datadir;
use crate::util::{
    client_tls, listen, normalize_url, optional_token, require_token, serve, server_tls,
    shutdown_signal,
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
    let stop = cancel.clone();
    let server = tokio::spawn(serve(
        listener,
        args.edge.max_connections,
        slave.router(),
        stop.cancelled_owned(),
    ));
    let worker = hummel_slave::run(slave.clone(), cancel.clone().cancelled_owned());
    let result = tokio::select! {
        r = worker => r.map_err(anyhow::Error::from),
        _ = shutdown_signal() => Ok(()),
    };
    cancel.cancel();
    let _ = server.await;
    result.context("slave stopped")?;
    Ok(ExitCode::SUCCESS)
}
