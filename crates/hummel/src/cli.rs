//! Command-line definitions. The outer contract (commands, flags, tokens) is in the README.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::util::{parse_duration, parse_size};

/// Hummel distributes large file trees one way: from one master, through mirror slaves, to many
/// clients. Only changed chunks travel, several mirrors serve a client at once, every byte is
/// verified and nothing half-written ever appears.
#[derive(Parser, Debug)]
#[command(name = "hummel", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More logging (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command. None: the player page on Windows (a double-click on hummel.exe), this help
    /// elsewhere.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// All in one: master plus an embedded slave store. Builds REPO_DIR at start, then serves
    /// it; `hummel sync http://ADDR DEST` against it just works.
    Serve(ServeArgs),
    /// The master: indexes the repository, keeps metadata, tracks slaves and clients, serves
    /// the API and the dashboard at `/`.
    Master(MasterArgs),
    /// A slave (mirror): stores packs the master assigns, replicates them, serves clients.
    Slave(SlaveArgs),
    /// Asks the master to build a new revision of its repository.
    Build(BuildArgs),
    /// Lists the master's revisions, newest first: number, time, message, files and bytes
    /// changed.
    Revisions(RevisionsArgs),
    /// Shows what changed between two revisions: mods and files added, changed, removed.
    Changes(ChangesArgs),
    /// Publishes revision N's tree again as the newest revision.
    Rollback(RollbackArgs),
    /// Publishes LOCAL_DIR at --path PREFIX of a master's repository (the rest unchanged),
    /// uploading only the chunks the master lacks.
    Push(PushArgs),
    /// Makes DEST an exact, verified copy of the repository (or of --path SUBTREE of it).
    Sync(SyncArgs),
    /// Re-hashes DEST against the master's index; exits 0 only if identical.
    Verify(VerifyArgs),
    /// Shows the revision, slaves, replication health and clients of a master.
    Status(StatusArgs),
    /// Forgets a slave (its claims and its enrolled key), so that another key may enroll its
    /// id: for a slave whose data folder was lost or that was replaced.
    RemoveSlave(RemoveSlaveArgs),
    /// Drain a slave: no new packs for it, its packs copied to the others until each has the
    /// replication target there (then `hummel status` says "drained" and removing it is safe).
    /// Write token.
    DrainSlave(DrainSlaveArgs),
    /// The player page: a local web page to add a repository, tick mods, choose the game's
    /// folder, sync with progress, see what changed and launch the game. (What hummel.exe runs
    /// when started without arguments.)
    Ui(UiArgs),
}

/// `hummel ui`.
#[derive(Args, Debug, Default)]
pub struct UiArgs {
    /// Address to listen on: a loopback address (the page is for this computer only); port 0
    /// picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: Option<SocketAddr>,
    /// Print the page's address but do not open it in the browser.
    #[arg(long)]
    pub no_browser: bool,
    /// Trust for https:// repositories.
    #[command(flatten)]
    pub trust: ClientTlsArgs,
}

/// Token flags shared by the servers.
#[derive(Args, Debug, Clone)]
pub struct ServerTokens {
    /// Token that allows starting builds. Generated and stored in the
    /// data dir when missing.
    #[arg(long, env = "HUMMEL_WRITE_TOKEN", hide_env_values = true)]
    pub write_token: Option<String>,
    /// Token slaves use to announce themselves. Generated and stored in
    /// the data dir when missing.
    #[arg(long, env = "HUMMEL_SLAVE_TOKEN", hide_env_values = true)]
    pub slave_token: Option<String>,
    /// Token clients need to read. Without one, reads are public. Slaves must then be
    /// started with the same token, or the master refuses them.
    #[arg(long, env = "HUMMEL_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// Token accepted for /metrics (besides the read and write tokens). With neither this nor
    /// a read token, /metrics is public.
    #[arg(long, env = "HUMMEL_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

/// The bounds of a server's public edge.
#[derive(Args, Debug, Clone, Copy)]
pub struct EdgeLimits {
    /// Most connections open at once; further ones wait until one closes.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// How long a connection may take to send a request's headers, counted from when it is
    /// opened or its previous answer was sent: an idle or trickling connection is closed
    /// then, and gives its place among --max-connections back.
    #[arg(long, default_value = HEADER_TIMEOUT, value_parser = parse_timeout)]
    pub header_timeout: Duration,
    /// How long a request's body may go without sending a byte: a body that stalls is cut
    /// there, and its request with it.
    #[arg(long, default_value = BODY_TIMEOUT, value_parser = parse_timeout)]
    pub body_timeout: Duration,
    /// How long an answer may wait for its client to take a byte: a client that stops
    /// reading is cut there, and its connection closed.
    #[arg(long, default_value = SEND_TIMEOUT, value_parser = parse_timeout)]
    pub send_timeout: Duration,
}

/// `--header-timeout`'s default.
const HEADER_TIMEOUT: &str = "30s";
/// `--body-timeout`'s default.
const BODY_TIMEOUT: &str = "60s";
/// `--send-timeout`'s default.
const SEND_TIMEOUT: &str = "60s";

impl EdgeLimits {
    /// At most `max_connections` connections, each with the flags' default timeouts (for a
    /// server that has no flags of its own, the player page's).
    pub fn defaults_with(max_connections: u32) -> EdgeLimits {
        let default = |s: &str| parse_timeout(s).expect("the defaults parse");
        EdgeLimits {
            max_connections,
            header_timeout: default(HEADER_TIMEOUT),
            body_timeout: default(BODY_TIMEOUT),
            send_timeout: default(SEND_TIMEOUT),
        }
    }
}

/// A duration of at least a second (`--header-timeout`, `--body-timeout`, `--send-timeout`).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s:?} is under a second"));
    }
    Ok(d)
}

/// How a master (`serve` or `master`) bounds what its clients may do.
#[derive(Args, Debug, Clone, Copy)]
pub struct ClientLimits {
    /// Requests a second each client address may make to the API, the dashboard and /metrics
    /// (bursts of ten times as many); beyond it, 429 with Retry-After. 0: no limit (behind a
    /// reverse proxy every client has the proxy's address: limit there instead).
    #[arg(long, default_value_t = hummel_master::DEFAULT_RATE_LIMIT)]
    pub rate_limit: u32,
    /// How long a client that stopped reporting stays listed (status, dashboard).
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    pub client_retention: Duration,
}

/// HTTPS for the servers (`serve`, `master`, `slave`).
#[derive(Args, Debug, Clone)]
pub struct ServerTlsArgs {
    /// Serve HTTPS only, with this certificate (PEM: the server's certificate first, then any
    /// intermediates). Plain HTTP on the port is refused. Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Whom `https://` URLs must be certified by, for every command that connects.
#[derive(Args, Debug, Clone, Default)]
pub struct ClientTlsArgs {
    /// Trust the CA certificates in this PEM file (one or several) for https:// URLs, besides
    /// the system's roots.
    #[arg(long, value_name = "FILE", env = "HUMMEL_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

/// How a master (`serve` or `master`) recompresses and collects its packs.
#[derive(Args, Debug, Clone, Copy)]
pub struct PackUpkeep {
    /// Recompress the current revision's packs at this zstd level (4-19) in the background
    /// after each build, and publish the same tree again from the smaller packs. 0 = off.
    /// The superseded packs are deleted --gc-grace later.
    #[arg(long, default_value_t = 0, value_parser = parse_repack_level)]
    pub repack_level: i32,
    /// Builds kept servable, each in its latest (repacked) form. Packs that neither these nor
    /// a revision superseded within --gc-grace reference are deleted, on the slaves too.
    #[arg(long, default_value_t = hummel_master::DEFAULT_KEEP_REVISIONS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_revisions: u32,
    /// How long a superseded revision (and the packs only it lists) stays stored. Make it
    /// longer than the longest sync (e.g. 30m, 1h, 1d).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub gc_grace: Duration,
}

/// `--watch`: rebuild when the repository folder changes.
#[derive(Args, Debug, Clone, Copy)]
pub struct RepoWatch {
    /// Build at start, then again whenever changes in the repository folder have settled.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: how long the folder must stay quiet after a change before the build
    /// starts (a copy in progress keeps it busy).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub watch_settle: Duration,
}

/// What players see of the repository (`serve` or `master`): published with each revision.
#[derive(Args, Debug, Clone)]
pub struct RepoInfoArgs {
    /// The repository's name, shown on the dashboard, the join page and the player page.
    #[arg(long, default_value = "")]
    pub name: String,
    /// What the repository is, shown with its name.
    #[arg(long, default_value = "")]
    pub description: String,
    /// The sets file (named sets of top-level folders, with optional server parameters),
    /// read at each build; default: sets.toml in the data folder when present.
    #[arg(long)]
    pub sets: Option<PathBuf>,
}

/// How a master (`serve` or `master`) signs its revisions.
#[derive(Args, Debug, Clone, Copy)]
pub struct SigningArgs {
    /// How long the signed statement of a revision holds (re-signed halfway while the master
    /// runs). A client refuses an expired one, so a master that stops signing, or whoever
    /// replays its old answers, holds clients back this long at most.
    #[arg(long, default_value = "30d", value_parser = parse_duration, env = "HUMMEL_SIGNATURE_EXPIRY")]
    pub signature_expiry: Duration,
    /// Replace the signing key (DATA/signing/key) at start: the old key signs the handover to
    /// a new one, clients that pinned the old key follow it, and the old key is deleted.
    #[arg(long)]
    pub rotate_key: bool,
}

/// `hummel serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The folder to distribute.
    pub repo_dir: PathBuf,
    /// Where metadata, packs and generated tokens live.
    #[arg(long, default_value = "hummel-data")]
    pub data: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// URL that clients reach this server at (default: http://LISTEN, or https://LISTEN with
    /// --tls-cert). Set it behind a reverse proxy, e.g. https://mods.example.
    #[arg(long)]
    pub advertise: Option<String>,
    /// HTTPS.
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// Publish what symlinks point to (files and folders) instead of skipping them; symlink
    /// loops are skipped with a warning.
    #[arg(long)]
    pub follow_symlinks: bool,
    /// Rebuilds on change.
    #[command(flatten)]
    pub watch: RepoWatch,
    /// Name, description and sets.
    #[command(flatten)]
    pub info: RepoInfoArgs,
    /// Repack and garbage collection.
    #[command(flatten)]
    pub packs: PackUpkeep,
    /// Signed revisions.
    #[command(flatten)]
    pub signing: SigningArgs,
    /// Limits per client.
    #[command(flatten)]
    pub clients: ClientLimits,
    /// Connections.
    #[command(flatten)]
    pub edge: EdgeLimits,
    /// Server tokens.
    #[command(flatten)]
    pub tokens: ServerTokens,
}

/// `hummel master`.
#[derive(Args, Debug)]
pub struct MasterArgs {
    /// The folder to distribute.
    #[arg(long)]
    pub repo: PathBuf,
    /// Where metadata (SQLite), packs and generated tokens live.
    #[arg(long)]
    pub data: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// URL that slaves and clients reach the master at (default: http://LISTEN, or
    /// https://LISTEN with --tls-cert). Set it behind a reverse proxy, e.g.
    /// https://master.example.
    #[arg(long)]
    pub advertise: Option<String>,
    /// HTTPS.
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// Copies of each pack kept on distinct slaves.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub replication: u32,
    /// How often slaves heartbeat (e.g. 500ms, 3s).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// A slave silent this long is stale: clients are not sent there.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub stale_after: Duration,
    /// A slave silent this long is dead: its packs are placed on other slaves.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub dead_after: Duration,
    /// Build the repository once at start.
    #[arg(long)]
    pub build_on_start: bool,
    /// Most pack downloads the master serves to clients at once as the source of last resort,
    /// for packs no live slave holds yet (right after a build); more are told to retry shortly
    /// (503). 0: never serve clients.
    #[arg(long, default_value_t = hummel_master::DEFAULT_FALLBACK_LIMIT)]
    pub fallback_limit: u32,
    /// Publish what symlinks point to (files and folders) instead of skipping them; symlink
    /// loops are skipped with a warning.
    #[arg(long)]
    pub follow_symlinks: bool,
    /// Rebuilds on change.
    #[command(flatten)]
    pub watch: RepoWatch,
    /// Name, description and sets.
    #[command(flatten)]
    pub info: RepoInfoArgs,
    /// Repack and garbage collection.
    #[command(flatten)]
    pub packs: PackUpkeep,
    /// Signed revisions.
    #[command(flatten)]
    pub signing: SigningArgs,
    /// Limits per client.
    #[command(flatten)]
    pub clients: ClientLimits,
    /// Connections.
    #[command(flatten)]
    pub edge: EdgeLimits,
    /// How often each slave is probed again at random: one of its packs is fetched and
    /// checked (jittered). New claims and slaves clients report are probed at once.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub probe_interval: Duration,
    /// Trust for https:// slaves, which the master probes.
    #[command(flatten)]
    pub trust: ClientTlsArgs,
    /// Stored bytes at which a build closes a pack (default 16 MiB). For load harnesses
    /// (`crates/hummel/examples/fleet_load.rs`), which want many packs of little data.
    #[arg(long, hide = true, value_parser = parse_size)]
    pub pack_target: Option<u64>,

    /// Server tokens.
    #[command(flatten)]
    pub tokens: ServerTokens,
}

/// `--repack-level`: 0 (off) or a zstd level in 4..=19.
fn parse_repack_level(s: &str) -> Result<i32, String> {
    let level: i32 = s.parse().map_err(|e| format!("{e}"))?;
    if level == 0 || hummel_master::REPACK_LEVELS.contains(&level) {
        Ok(level)
    } else {
        Err(format!("{level} is not 0 (off) or a zstd level in 4..=19"))
    }
}

/// `hummel slave`.
#[derive(Args, Debug)]
pub struct SlaveArgs {
    /// The master's URL, e.g. http://10.0.0.1:7070.
    #[arg(long)]
    pub master: String,
    /// Where packs and the slave's id live.
    #[arg(long)]
    pub data: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:7071")]
    pub listen: SocketAddr,
    /// URL that clients and other slaves reach this slave at (default: http://LISTEN, or
    /// https://LISTEN with --tls-cert). Set it behind a reverse proxy, e.g.
    /// https://mirror1.example.
    #[arg(long)]
    pub advertise: Option<String>,
    /// HTTPS.
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// Trust for an https:// master and other slaves.
    #[command(flatten)]
    pub trust: ClientTlsArgs,
    /// Most bytes to store (500M, 20G, or plain bytes). Unlimited by default.
    #[arg(long, value_parser = parse_size)]
    pub quota: Option<u64>,
    /// Re-verify every stored pack this often (e.g. 24h); off by default.
    #[arg(long, value_parser = parse_duration)]
    pub scrub_interval: Option<Duration>,
    /// Packs fetched at once during replication.
    #[arg(long, default_value_t = 4)]
    pub replication_concurrency: usize,
    /// Most bytes per second sent to clients and other slaves, all together (e.g. 10M).
    /// Unlimited by default.
    #[arg(long, value_parser = parse_size)]
    pub limit_rate: Option<u64>,
    /// The master's slave token.
    #[arg(long, env = "HUMMEL_SLAVE_TOKEN", hide_env_values = true)]
    pub slave_token: Option<String>,
    /// The master's read token, if it has one: clients must then present it to download, and
    /// the master refuses a slave without it.
    #[arg(long, env = "HUMMEL_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// Token accepted for /metrics (besides the read token). With neither, /metrics is public.
    #[arg(long, env = "HUMMEL_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Connections.
    #[command(flatten)]
    pub edge: EdgeLimits,
}

/// `hummel build`.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The master's URL.
    #[arg(long)]
    pub master: String,
    /// Return only when the build finished (exit 0) or failed (exit 1).
    #[arg(long)]
    pub wait: bool,
    /// Print the final build status as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Publish even if the repository folder is missing or empty, or the build removes more
    /// than half of the current revision's files or bytes (the master refuses otherwise).
    /// The revision records the confirmation.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// What the new revision brings, recorded with it (`hummel revisions`, the dashboard).
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,
    /// The master's write token.
    #[arg(long, env = "HUMMEL_WRITE_TOKEN", hide_env_values = true)]
    pub write_token: Option<String>,
    /// Trust for an https:// master.
    #[command(flatten)]
    pub trust: ClientTlsArgs,
}

/// `hummel revisions`.
#[derive(Args, Debug)]
pub struct RevisionsArgs {
    /// The master's URL.
    #[arg(long)]
    pub master: String,
    /// Most revisions to list (the master lists 200 at most).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Only revisions below this number (the next page).
    #[arg(long)]
    pub before: Option<u64>,
    /// Print the master's answer as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// The read token, if the master requires one.
    #[arg(long, env = "HUMMEL_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// Trust for an https:// master.
    #[command(flatten)]
    pub trust: ClientTlsArgs,
}

/// `hummel changes`.
#[derive(Args, Debug)]
pub struct ChangesArgs {
    /// The master's URL.
    #[arg(long)]
    pub master: String,
    /// The older revision (default: the one before --to).
    #[arg(long)]
    pub from: Option<u64>,
    /// The newer revision (default: the current one).
    #[arg(long)]
    pub to: Option<u64>,
    /// Print the master's answer as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// The read token, if the master requires one.
    #[arg(long, env = "HUMMEL_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// Trust for an https:// master.
    #[command(flatten)]
    pub trust: ClientTlsArgs,
}

/// `hummel rollback`.
#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The revision whose tree to publish again.
    pub revision: u64,
    /// The master's URL.
    #[arg(long)]
    pub master: String,
    /// The new revision's message (default: "rollback to N").
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,
    /// Publish even if it removes most of the current revision's files or bytes.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Print the master's answer as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// The master's write token.
    #[arg(long, env = "HUMMEL_WRITE_TOKEN", hide_env_values = true)]
    pub write_token: Option<String>,
    /// Trust for an https:// master.
    #[command(flatten)]
    pub trust: ClientTlsArgs,
}

/// `hummel push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// The folder to publish.
    pub local_dir: PathBuf,
    /// The master's URL.
    #[arg(long)]
    pub master: String,
    /// Where in the repository the folder goes (default: the whole repository).
    #[arg(long, value_name = "PREFIX")]
    pub path: Option<String>,
    /// The new revision's message (default: "push to PREFIX").
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,
    /// Report what would be uploaded and changed; upload and publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Publish even if it removes most of the current revision's files or bytes.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Print the outcome as JSON on stdout (revision, bytes_uploaded, chunks_uploaded,
    /// duration_ms, ...).
    #[arg(long)]
    pub json: bool,
    /// The master's write token.
    #[arg(long, env = "HUMMEL_WRITE_TOKEN", hide_env_values = true)]
    pub write_token: Option<String>,
    /// Trust for an https:// master.
    #[command(flatten)]
    pub trust: ClientTlsArgs,
}

/// `hummel sync`.
#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The master's URL.
    #[arg(required_unless_present = "profile")]
    pub master_url: Option<String>,
    /// The local folder to make identical.
    #[arg(required_unless_present = "profile")]
    pub dest: Option<PathBuf>,
    /// Sync only this subtree of the repository; DEST then mirrors its contents. Given two or
    /// more times, each folder goes to its repository path below DEST (DEST/@ace/...,
    /// DEST/@cba/...), and DEST's other entries are left alone.
    #[arg(long, conflicts_with = "profile")]
    pub path: Vec<String>,
    /// Sync the folders of the admin's set NAME (listed on the master's dashboard and join
    /// page), each to its repository path below DEST, as several --path do.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["profile", "path"])]
    pub set: Option<String>,
    /// Sync the mods a profile of the player page (`hummel ui`) ticked (or its picked set's),
    /// into the profile's mod folder in one sync, each at FOLDER/MOD, instead of MASTER_URL
    /// and DEST.
    #[arg(long, conflicts_with_all = ["master_url", "dest", "dry_run", "keep_extra"])]
    pub profile: Option<String>,
    /// Print the plan (what would be written, reused, downloaded, deleted) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object with the summary on stdout at the end.
    #[arg(long)]
    pub json: bool,
    /// Keep files and folders in DEST that the repository does not have. (Top-level entries
    /// of DEST that no revision synced here ever named, like your own mods, are never touched
    /// anyway.)
    #[arg(long)]
    pub keep_extra: bool,
    /// Apply a revision that deletes more than half of the files DEST holds, although the
    /// admin did not confirm a mass delete.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Apply a revision older than the one DEST holds (the master went back, e.g. restored
    /// from a backup).
    #[arg(long)]
    pub allow_rollback: bool,
    /// Sync revision N and pin DEST to it: later syncs (and --watch) stay on N, even when it
    /// is older than the one DEST holds, and the master keeps it while this client reports;
    /// `latest` unpins and follows the master again.
    #[arg(long, value_name = "N|latest", value_parser = parse_revision_choice, conflicts_with = "profile")]
    pub revision: Option<hummel_client::RevisionChoice>,
    /// Requests in flight at once, across all slaves.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Keep running: apply each new revision as the master announces it (until Ctrl-C).
    /// With --json, one JSON object per sync.
    #[arg(long, conflicts_with = "dry_run")]
    pub watch: bool,
    /// With --watch: after each sync that changed DEST, run this command (through `sh -c`,
    /// `cmd /C` on Windows; HUMMEL_REVISION and HUMMEL_DEST set), e.g. to restart a server.
    #[arg(long, value_name = "CMD", requires = "watch")]
    pub exec: Option<String>,
    /// The read token, if the master requires one.
    #[arg(long, env = "HUMMEL_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// Trust for an https:// master and slaves.
    #[command(flatten)]
    pub trust: ClientTlsArgs,
    /// The master's signing key fingerprint (64 hex digits, shown by `hummel status` and the
    /// master's dashboard). Without it the key is pinned on first contact; with it, only this
    /// key is accepted and pinned, replacing the one DEST pinned before.
    #[arg(long = "trust", value_name = "FINGERPRINT", env = "HUMMEL_TRUST", value_parser = parse_fingerprint)]
    pub trust_key: Option<hummel_core::statement::PublicKey>,
}

/// `hummel verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The master's URL.
    pub master_url: String,
    /// The local folder to check.
    pub dest: PathBuf,
    /// Check only this subtree of the repository (DEST mirrors its contents); two or more:
    /// the folders DEST holds at their repository paths (as `sync --path A --path B`).
    #[arg(long)]
    pub path: Vec<String>,
    /// Check the folders of the admin's set NAME (as `sync --set NAME`).
    #[arg(long, value_name = "NAME", conflicts_with = "path")]
    pub set: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// The read token, if the master requires one.
    #[arg(long, env = "HUMMEL_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// Trust for an https:// master.
    #[command(flatten)]
    pub trust: ClientTlsArgs,
    /// The master's signing key fingerprint; without it, the key DEST pinned, or (writing
    /// nothing) the master's own on first contact.
    #[arg(long = "trust", value_name = "FINGERPRINT", env = "HUMMEL_TRUST", value_parser = parse_fingerprint)]
    pub trust_key: Option<hummel_core::statement::PublicKey>,
}

/// `--revision N|latest`.
fn parse_revision_choice(s: &str) -> Result<hummel_client::RevisionChoice, String> {
    match s {
        "latest" => Ok(hummel_client::RevisionChoice::Latest),
        n => n
            .parse::<u64>()
            .map(hummel_client::RevisionChoice::Number)
            .map_err(|_| format!("{n:?} is not a revision number or `latest`")),
    }
}

/// `--trust FINGERPRINT`.
fn parse_fingerprint(s: &str) -> Result<hummel_core::statement::PublicKey, String> {
    s.parse()
}

/// `hummel status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The master's URL.
    #[arg(long)]
    pub master: String,
    /// Print the status as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// The read token, if the master requires one.
    #[arg(long, env = "HUMMEL_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// Trust for an https:// master.
    #[command(flatten)]
    pub trust: ClientTlsArgs,
}

/// `hummel drain-slave`.
#[derive(Args, Debug)]
pub struct DrainSlaveArgs {
    /// The slave's id (`hummel status --json`, `slaves[].id`).
    pub id: String,
    /// The master's URL.
    #[arg(long)]
    pub master: String,
    /// Call the drain off instead: the slave takes packs again.
    #[arg(long)]
    pub cancel: bool,
    /// The master's write token.
    #[arg(long, env = "HUMMEL_WRITE_TOKEN", hide_env_values = true)]
    pub write_token: Option<String>,
    /// Trust for an https:// master.
    #[command(flatten)]
    pub trust: ClientTlsArgs,
}

/// `hummel remove-slave`.
#[derive(Args, Debug)]
pub struct RemoveSlaveArgs {
    /// The slave's id (`hummel status --json`, `slaves[].id`).
    pub id: String,
    /// The master's URL.
    #[arg(long)]
    pub master: String,
    /// The master's write token.
    #[arg(long, env = "HUMMEL_WRITE_TOKEN", hide_env_values = true)]
    pub write_token: Option<String>,
    /// Trust for an https:// master.
    #[command(flatten)]
    pub trust: ClientTlsArgs,
}
