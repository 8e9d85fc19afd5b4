//! `hummel master --watch`: a build once changes in the repository folder settle.
//!
//! A recursive file-system watch (the `notify` crate: inotify, FSEvents/kqueue,
//! ReadDirectoryChangesW) on the repository folder raises one flag per burst of changes; reads
//! and changes under the master's own data folder are ignored. After a change, the watch waits
//! until the folder has been quiet for the settle time (a copy of a large mod keeps it busy),
//! then starts a build, waits for it to end, and listens again: changes made during a build
//! start another one once they settle. The build itself guards the rest: a file that changes
//! while it is read is read again, and a tree that lost most of its files (an unmounted disk)
//! is refused, not published.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::Master;
use crate::error::MasterError;

/// How often the watch looks whether the build it started has ended.
const BUILD_POLL: Duration = Duration::from_millis(200);

/// Whether an event is a change of the repository (not a read, not the master's own files).
fn is_change(event: &notify::Event, data: &Path) -> bool {
    !matches!(event.kind, EventKind::Access(_)) && event.paths.iter().any(|p| !p.starts_with(data))
}

/// Sets up a watch of `master`'s repository folder and returns the task that follows it until
/// `shutdown`: a build at start, then one after each burst of changes has been quiet for
/// `settle`. Fails if the folder cannot be watched (say, too few inotify watches).
pub fn watch_repository(
    master: Master,
    settle: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = ()> + Send + 'static, MasterError> {
    let repo = master.config().repo.clone();
    let data: PathBuf = std::fs::canonicalize(&master.config().data)
        .unwrap_or_else(|_| master.config().data.clone());
    let (changed, mut changes) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            // A full channel already holds the flag.
            Ok(e) if is_change(&e, &data) => {
                let _ = changed.try_send(());
            }
            Ok(_) => {}
            // Events were lost (a queue overflow): build anyway.
            Err(e) => {
                tracing::warn!(error = %e, "the repository watch lost events");
                let _ = changed.try_send(());
            }
        }
    })
    .map_err(|e| MasterError::Watch(e.to_string()))?;
    watcher
        .watch(&repo, RecursiveMode::Recursive)
        .map_err(|e| MasterError::Watch(format!("{}: {e}", repo.display())))?;
    tracing::info!(
        repo = %repo.display(),
        settle_ms = settle.as_millis() as u64,
        "watching the repository folder: a build once changes settle"
    );
    Ok(async move {
        // Dropped (and the watch removed) when the task ends.
        let _watcher = watcher;
        tokio::pin!(shutdown);
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    () = &mut shutdown => return,
                    got = changes.recv() => if got.is_none() { return },
                }
                // Quiet for `settle`: every further change starts the wait again.
                loop {
                    tokio::select! {
                        () = &mut shutdown => return,
                        got = changes.recv() => if got.is_none() { return },
                        () = tokio::time::sleep(settle) => break,
                    }
                }
                tracing::info!("the repository folder changed and settled: building");
            }
            first = false;
            tokio::select! {
                () = &mut shutdown => return,
                () = build_after_running(&master) => {}
            }
        }
    })
}

/// Waits for a running build to end (it may have read the folder before the change), then
/// runs one more and waits for it.
async fn build_after_running(master: &Master) {
    while master.build_running() {
        tokio::time::sleep(BUILD_POLL).await;
    }
    let m = master.clone();
    let id = match tokio::task::spawn_blocking(move || m.start_build()).await {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the watch could not start a build");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "the watch could not start a build");
            return;
        }
    };
    loop {
        tokio::time::sleep(BUILD_POLL).await;
        match master.build_status(id) {
            Some(s) if s.state == hummel_proto::api::BuildState::Running => continue,
            Some(s) => {
                match s.error {
                    Some(e) => tracing::error!(build = id, error = %e, "the watch's build failed"),
                    None => tracing::info!(
                        build = id,
                        revision = s.revision,
                        "the watch's build published"
                    ),
                }
                return;
            }
            None => return,
        }
    }
}
