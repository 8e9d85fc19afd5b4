//! `hummel push LOCAL_DIR --master URL [--path PREFIX]`: publishes a local folder at a prefix
//! of a master's repository, uploading only the chunks the master lacks.
//!
//! 1. [`walk`]: every folder and regular file below LOCAL_DIR (a symlink or special file
//!    fails the push naming it; a top-level `.hummel` is skipped).
//! 2. The master's chunker and current revision (the push's base), then pass one: every file
//!    is chunked and hashed on worker threads (off the runtime), and the master is asked which
//!    chunks it lacks, in batches.
//! 3. Pass two: the files holding missing chunks are read again; those chunks are compressed
//!    (the master's zstd level) into packs of the usual format and uploaded, several at once.
//!    The master verifies and stages each; a push that stops here resumes where it stopped
//!    (the next missing query no longer lists staged chunks). A file that changed between the
//!    passes fails the push.
//! 4. The manifest (paths, modes, sizes, mtimes, file hashes, chunk lists) is published with
//!    the base revision; the master refuses it when someone else changed the prefix since.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use hummel_core::codec::ChunkCompressor;
use hummel_core::index::RESERVED_TOP_NAME;
use hummel_core::pack::PackWriter;
use hummel_core::{ChunkerConfig, Hash, RelPath, chunk_stream};
use hummel_proto::api::{MAX_PUSH_MISSING, PushDir, PushFile, PushPublishRequest};
use serde::Serialize;

use super::{master_error, write_api};
use crate::cli::PushArgs;
use crate::util::normalize_url;

/// Packs uploaded at once.
const UPLOADS_AT_ONCE: usize = 4;
/// Test hook: the push fails after uploading this many packs (an interrupted push).
const STOP_AFTER_PACKS_ENV: &str = "HUMMEL_PUSH_STOP_AFTER_PACKS";
/// Test hook: before publishing, the push creates `PATH.waiting.PID` and waits (a minute at
/// most) until `PATH` exists: two pushes made on the same base publish when the test says.
const BEFORE_PUBLISH_ENV: &str = "HUMMEL_PUSH_BEFORE_PUBLISH";

/// The [`BEFORE_PUBLISH_ENV`] hook.
async fn before_publish_hook() -> Result<()> {
    let Some(gate) = std::env::var_os(BEFORE_PUBLISH_ENV).map(PathBuf::from) else {
        return Ok(());
    };
    let mut waiting = gate.clone().into_os_string();
    waiting.push(format!(".waiting.{}", std::process::id()));
    fs::write(&waiting, b"")?;
    let start = Instant::now();
    while !gate.exists() {
        if start.elapsed() > std::time::Duration::from_secs(60) {
            bail!("{BEFORE_PUBLISH_ENV}: {} never appeared", gate.display());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

/// What `--json` prints.
#[derive(Serialize)]
struct PushReport {
    revision: Option<u64>,
    base: Option<u64>,
    /// Chunks the master lacked when the push asked (what a dry run would upload).
    chunks_missing: u64,
    bytes_uploaded: u64,
    chunks_uploaded: u64,
    packs_uploaded: u64,
    duration_ms: u64,
    dry_run: bool,
    files_added: u64,
    files_updated: u64,
    files_removed: u64,
}

/// A file found below LOCAL_DIR.
struct LocalFile {
    rel: String,
    abs: PathBuf,
    mode: u32,
    mtime_ns: i64,
}

#[cfg(unix)]
fn mode_of(md: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    md.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_of(md: &fs::Metadata) -> u32 {
    if md.is_dir() { 0o755 } else { 0o644 }
}

fn mtime_ns_of(md: &fs::Metadata) -> i64 {
    md.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Every folder and regular file below `root`, by relative path.
fn walk(root: &Path) -> Result<(Vec<PushDir>, Vec<LocalFile>)> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let list = fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for e in list {
            let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| anyhow!("{}: not a UTF-8 name: {n:?}", dir.display()))?;
            if rel.is_empty() && name == RESERVED_TOP_NAME {
                continue;
            }
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            RelPath::new(&child).map_err(|err| anyhow!("{child}: {err}"))?;
            let abs = e.path();
            let md = fs::symlink_metadata(&abs)
                .with_context(|| format!("cannot stat {}", abs.display()))?;
            if md.is_dir() {
                dirs.push(PushDir {
                    path: child.clone(),
                    mode: mode_of(&md),
                });
                stack.push((abs, child));
            } else if md.is_file() {
                files.push(LocalFile {
                    rel: child,
                    abs,
                    mode: mode_of(&md),
                    mtime_ns: mtime_ns_of(&md),
                });
            } else {
                bail!(
                    "{} is a symlink or special file; a push holds folders and regular files only",
                    abs.display()
                );
            }
        }
    }
    dirs.sort_by(|a, b| a.path.cmp(&b.path));
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((dirs, files))
}

/// Runs `work` on every file, on as many threads as the machine has cores.
fn on_workers<T: Send>(
    files: &[LocalFile],
    work: impl Fn(&LocalFile) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(files.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<T>>>> =
        Mutex::new((0..files.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(f) = files.get(i) else { break };
                    let r = work(f);
                    let failed = r.is_err();
                    results.lock().expect("results")[i] = Some(r);
                    if failed {
                        next.store(files.len(), Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    let results = results.into_inner().expect("results");
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Some(r) => out.push(r?),
            None => bail!("the push stopped"),
        }
    }
    Ok(out)
}

/// Pass one: one file's size, hash and chunk ids.
fn hash_file(chunker: &ChunkerConfig, f: &LocalFile) -> Result<PushFile> {
    let file = File::open(&f.abs).with_context(|| format!("cannot read {}", f.abs.display()))?;
    let mut chunks = Vec::new();
    let digest = chunk_stream::<_, io::Error, _>(chunker, file, |c| {
        chunks.push(c.hash);
        Ok(())
    })
    .with_context(|| format!("cannot read {}", f.abs.display()))?;
    Ok(PushFile {
        path: f.rel.clone(),
        size: digest.size,
        mode: f.mode,
        mtime_ns: f.mtime_ns,
        hash: digest.hash,
        chunks,
    })
}

/// A compressed chunk on its way into a pack.
struct Stored {
    hash: Hash,
    codec: hummel_core::Codec,
    bytes: Vec<u8>,
    len: u32,
}

/// `hummel push`.
pub async fn push(args: PushArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let master = normalize_url(&args.master)?;
    let api = write_api(&master, args.write_token, &args.trust)?;
    let root = args.local_dir.clone();
    if !fs::metadata(&root).is_ok_and(|m| m.is_dir()) {
        bail!("{} is not a folder", root.display());
    }
    if let Some(p) = args.path.as_deref().filter(|p| !p.is_empty()) {
        RelPath::new(p.trim_matches('/')).map_err(|e| anyhow!("--path {p}: {e}"))?;
    }
    let params = api
        .push_missing(Vec::new())
        .await
        .map_err(|e| master_error(&master, e))?;
    let chunker = params.chunker;

    // Pass one: walk, chunk and hash off the runtime.
    let walked = root.clone();
    let (dirs, locals, manifest) = tokio::task::spawn_blocking(move || -> Result<_> {
        let (dirs, files) = walk(&walked)?;
        let manifest = on_workers(&files, |f| hash_file(&chunker, f))?;
        Ok((dirs, files, manifest))
    })
    .await??;

    // Which chunks the master lacks.
    let mut unique: Vec<Hash> = Vec::new();
    let mut seen = HashSet::new();
    for f in &manifest {
        for h in &f.chunks {
            if seen.insert(*h) {
                unique.push(*h);
            }
        }
    }
    let mut missing: HashSet<Hash> = HashSet::new();
    for batch in unique.chunks(MAX_PUSH_MISSING) {
        let answer = api
            .push_missing(batch.to_vec())
            .await
            .map_err(|e| master_error(&master, e))?;
        missing.extend(answer.missing);
    }

    let mut bytes_uploaded = 0u64;
    let mut chunks_uploaded = 0u64;
    let mut packs_uploaded = 0u64;
    if !missing.is_empty() && !args.dry_run {
        let stop_after: Option<u64> = std::env::var(STOP_AFTER_PACKS_ENV)
            .ok()
            .and_then(|v| v.parse().ok());
        let (pack_tx, mut pack_rx) = tokio::sync::mpsc::channel::<(Hash, Vec<u8>, u64)>(2);
        let level = params.zstd_level;
        let target = params.pack_target;
        let needed: Vec<usize> = manifest
            .iter()
            .enumerate()
            .filter(|(_, f)| f.chunks.iter().any(|h| missing.contains(h)))
            .map(|(i, _)| i)
            .collect();
        let expected: Vec<(Hash, u64)> = manifest.iter().map(|f| (f.hash, f.size)).collect();
        let missing_set = missing.clone();
        let producer = tokio::task::spawn_blocking(move || -> Result<()> {
            let files: Vec<&LocalFile> = needed.iter().map(|&i| &locals[i]).collect();
            let claimed = Mutex::new(HashSet::new());
            let (tx, rx) = sync_channel::<Stored>(64);
            std::thread::scope(|s| -> Result<()> {
                let packer = s.spawn(move || -> Result<()> {
                    let mut open: Option<PackWriter<Vec<u8>>> = None;
                    let mut count = 0u64;
                    let seal = |w: PackWriter<Vec<u8>>, count: u64| -> Result<()> {
                        let done = w.finish()?;
                        pack_tx
                            .blocking_send((done.hash, done.writer, count))
                            .map_err(|_| anyhow!("the upload stopped"))
                    };
                    for c in rx {
                        let w = match &mut open {
                            Some(w) => w,
                            empty => empty.insert(PackWriter::new(Vec::new())?),
                        };
                        w.add(c.hash, c.codec, &c.bytes, c.len)?;
                        count += 1;
                        if w.len() >= target
                            && let Some(full) = open.take()
                        {
                            seal(full, count)?;
                            count = 0;
                        }
                    }
                    if let Some(last) = open.take() {
                        seal(last, count)?;
                    }
                    Ok(())
                });
                let workers = on_workers_refs(&files, |i, f| {
                    let mut compressor = ChunkCompressor::new(level)?;
                    let file = File::open(&f.abs)
                        .with_context(|| format!("cannot read {}", f.abs.display()))?;
                    let digest = chunk_stream::<_, anyhow::Error, _>(&chunker, file, |c| {
                        if !missing_set.contains(&c.hash)
                            || !claimed.lock().expect("claimed").insert(c.hash)
                        {
                            return Ok(());
                        }
                        let (codec, bytes) = compressor.compress(&c.data);
                        tx.send(Stored {
                            hash: c.hash,
                            codec,
                            bytes,
                            len: c.data.len() as u32,
                        })
                        .map_err(|_| anyhow!("the pack writer stopped"))
                    })?;
                    let (hash, size) = expected[needed[i]];
                    if digest.hash != hash || digest.size != size {
                        bail!(
                            "{} changed while it was pushed; push again",
                            f.abs.display()
                        );
                    }
                    Ok(())
                });
                drop(tx);
                let packed = packer
                    .join()
                    .map_err(|_| anyhow!("the pack writer panicked"))?;
                workers?;
                packed
            })
        });
        let mut uploads = tokio::task::JoinSet::new();
        let mut failure: Option<anyhow::Error> = None;
        while let Some((hash, bytes, count)) = pack_rx.recv().await {
            while uploads.len() >= UPLOADS_AT_ONCE {
                if let Some(done) = uploads.join_next().await
                    && let Err(e) = done?
                {
                    failure.get_or_insert(e);
                }
            }
            if failure.is_some() || stop_after.is_some_and(|n| packs_uploaded >= n) {
                break;
            }
            bytes_uploaded += bytes.len() as u64;
            chunks_uploaded += count;
            packs_uploaded += 1;
            let api = api.clone();
            let master = master.clone();
            uploads.spawn(async move {
                api.push_pack(&hash, bytes)
                    .await
                    .map_err(|e| master_error(&master, e))
            });
        }
        drop(pack_rx);
        while let Some(done) = uploads.join_next().await {
            if let Err(e) = done? {
                failure.get_or_insert(e);
            }
        }
        if let Some(n) = stop_after.filter(|&n| packs_uploaded >= n) {
            bail!("stopped after uploading {n} packs ({STOP_AFTER_PACKS_ENV})");
        }
        if let Some(e) = failure {
            return Err(e);
        }
        producer.await??;
    }

    let request = PushPublishRequest {
        base: params.revision,
        prefix: args
            .path
            .as_deref()
            .map(|p| p.trim_matches('/').to_string())
            .filter(|p| !p.is_empty()),
        dirs,
        files: manifest,
        message: args.message,
        dry_run: args.dry_run,
        allow_mass_delete: args.allow_mass_delete,
        push: None,
    };
    before_publish_hook().await?;
    let done = api
        .push_publish(&request)
        .await
        .map_err(|e| master_error(&master, e))?;
    let report = PushReport {
        revision: done.revision,
        base: params.revision,
        chunks_missing: missing.len() as u64,
        bytes_uploaded,
        chunks_uploaded,
        packs_uploaded,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        dry_run: args.dry_run,
        files_added: done.changes.files_added,
        files_updated: done.changes.files_updated,
        files_removed: done.changes.files_removed,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else if args.dry_run {
        println!(
            "dry run: {} chunks to upload; {} files added, {} updated, {} removed; nothing \
             published",
            missing.len(),
            report.files_added,
            report.files_updated,
            report.files_removed
        );
    } else {
        match done.revision {
            Some(n) => println!(
                "revision {n} published: {} files added, {} updated, {} removed; {} bytes \
                 uploaded in {} packs",
                report.files_added,
                report.files_updated,
                report.files_removed,
                bytes_uploaded,
                packs_uploaded
            ),
            None => println!(
                "nothing changed; revision {} stays",
                done.current.map_or("none".into(), |n| n.to_string())
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// [`on_workers`] over borrowed files, with each file's position.
fn on_workers_refs(
    files: &[&LocalFile],
    work: impl Fn(usize, &LocalFile) -> Result<()> + Sync,
) -> Result<()> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(files.len().max(1));
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(f) = files.get(i) else { break };
                    if let Err(e) = work(i, f) {
                        failure.lock().expect("failure").get_or_insert(e);
                        next.store(files.len(), Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    match failure.into_inner().expect("failure") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
