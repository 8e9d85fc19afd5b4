//! The data folder of a master (or `serve`) or slave: the lock that keeps a second process out,
//! and the files the binary writes there (generated tokens), written atomically.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Write};
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
}
