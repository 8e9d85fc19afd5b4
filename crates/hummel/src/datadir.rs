//! The data folder of a master (or `serve`) or slave: the lock that keeps a second process out,
//! and the files the binary writes there (generated tokens), written atomically.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The lock file in a data folder; it holds the pid of the process that holds the lock.
pub const LOCK_FILE: &str = "lock";

/// An exclusive lock on a data folder, held until dropped (the process's lifetime).
#[derive(Debug)]
pub struct DataLock {
    _file: File,
}

/// Creates `data` if needed and locks it for this process; refuses, naming the holder's pid,
/// when another process (a master, `serve` or a slave) holds it. Two processes on one data
/// folder would corrupt each other's database, store and tokens.
pub fn lock(data: &Path) -> Result<DataLock> {
    fs::create_dir_all(data)
        .with_context(|| format!("cannot create the data folder {}", data.display()))?;
    let path = data.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => format!(" (pid {pid})"),
                Err(_) => String::new(),
            };
            bail!(
                "the data folder {} is in use by another hummel process{holder}",
                data.display()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(DataLock { _file: file })
}

/// Writes `content` to `path` so that a crash leaves the old file or the new one, never a
/// partial or empty one: a temp file in the same folder (mode 0600), written, fsynced, renamed
/// over `path`, and the folder fsynced.
pub fn write_private_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    // Left by a crash: it never held anything anyone relies on.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_data_folder_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let held = lock(&data).unwrap();
        let err = lock(&data).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "the data folder {} is in use by another hummel process (pid {})",
                data.display(),
                std::process::id()
            )
        );
        drop(held);
        let _again = lock(&data).expect("free once the holder is gone");
    }

    #[test]
    fn an_atomic_write_replaces_the_file_whole_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("write.token");
        write_private_atomic(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        // A temp file left by a crash is not in the way.
        fs::write(dir.path().join(".write.token.tmp"), b"junk").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["write.token"], "no temp file is left");
        // A folder that does not exist: an error, no file.
        assert!(write_private_atomic(&dir.path().join("missing/x.token"), b"x").is_err());
    }
}
