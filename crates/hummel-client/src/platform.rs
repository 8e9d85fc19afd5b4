//! The platform layer: every file-system call whose meaning differs between Unix and Windows,
//! behind one set of functions, so that the rest of the client reads the same on both.
//!
//! | concern | Unix | Windows |
//! | --- | --- | --- |
//! | stat cache fields | size, mtime, ctime, inode | size, last write time, creation time (no inode on stable std) |
//! | mode | permission bits, compared exactly | the read-only attribute: `mode & 0o200 == 0`; folders have none |
//! | mtime | nanoseconds | 100 ns ticks: compared at that precision |
//! | positional I/O | `pread`/`pwrite` | `seek_read`/`seek_write` loops |
//! | durability | one `syncfs` (Linux; `fsync` per file and folder elsewhere) | `FlushFileBuffers` (`File::sync_all`) per file, and per folder renamed into (best effort: NTFS journals renames itself) |
//! | replacing, deleting | `rename`, `unlink` | the read-only attribute cleared first; a file another program holds open (a running game) is retried for ~5 s, then [`is_in_use`] says so |
//! | long paths | — | DEST made absolute with the `\\?\` prefix ([`long_path`]); repository paths joined component by component ([`under`]) |
//! | free space | `statvfs` | `GetDiskFreeSpaceExW` (through `fs4`) |
//! | names | any [`hummel_core::RelPath`] | Windows' rules ([`WINDOWS_NAMES`], `crate::names`) |
//!
//! No `unsafe` (the workspace forbids it): std's Windows extensions (`OpenOptionsExt`,
//! `MetadataExt`, `FileExt`) and `fs4` do the Win32 calls.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

pub(crate) use imp::*;

use crate::scan::FileStat;

/// `dir` joined with the `/`-separated relative path `rel`, one component at a time: right on
/// every platform, also below a `\\?\` path, where `/` is no separator.
pub(crate) fn under(dir: &Path, rel: &Path) -> PathBuf {
    let mut p = dir.to_path_buf();
    for c in rel.components() {
        p.push(c);
    }
    p
}

/// The relative path `rel_dir/name` with `/` as separator on every platform (the walk's paths
/// are compared with index paths as text).
pub(crate) fn rel_join(rel_dir: &Path, name: &std::ffi::OsStr) -> PathBuf {
    if rel_dir.as_os_str().is_empty() {
        return PathBuf::from(name);
    }
    let mut s = rel_dir.as_os_str().to_os_string();
    s.push("/");
    s.push(name);
    PathBuf::from(s)
}

/// `path` as a person would write it: without the `\\?\` prefix [`long_path`] adds on Windows.
pub(crate) fn shown(path: &Path) -> String {
    let s = path.display().to_string();
    if let Some(unc) = s.strip_prefix(r"\\?\UNC\") {
        return format!(r"\\{unc}");
    }
    match s.strip_prefix(r"\\?\") {
        Some(rest) => rest.to_string(),
        None => s,
    }
}

/// How long a file another program holds open is retried before the sync gives up on it, as
/// the waits between attempts (~5 s in all): an antivirus scanner or the search indexer lets
/// go in that time, a running game does not.
#[cfg_attr(not(windows), allow(dead_code))]
const IN_USE_WAITS_MS: [u64; 8] = [50, 100, 200, 400, 600, 800, 1000, 2000];

/// Runs `op` until it does not fail with [`is_in_use`], waiting [`IN_USE_WAITS_MS`] between
/// attempts; the last error is returned.
#[cfg_attr(not(windows), allow(dead_code))]
fn retry_in_use<T>(path: &Path, mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    for (attempt, wait) in IN_USE_WAITS_MS.iter().enumerate() {
        match op() {
            Err(e) if is_in_use(&e) => {
                if attempt == 0 {
                    tracing::warn!(path = %path.display(), "in use by another program, retrying: {e}");
                }
                std::thread::sleep(std::time::Duration::from_millis(*wait));
            }
            other => return other,
        }
    }
    op()
}

#[cfg(unix)]
mod imp {
    use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};

    use super::*;

    /// Unix holds every valid repository name.
    pub(crate) const WINDOWS_NAMES: bool = false;

    /// True where [`sync_filesystem`] does nothing and each file and folder is flushed instead.
    pub(crate) const FLUSH_PER_FILE: bool = cfg!(not(target_os = "linux"));

    /// DEST as given: Unix paths have no length limit below `PATH_MAX` per call.
    pub(crate) fn long_path(dest: &Path) -> PathBuf {
        dest.to_path_buf()
    }

    /// The stat fields of `lstat`/`fstat` metadata.
    pub(crate) fn file_stat(m: &fs::Metadata) -> FileStat {
        FileStat {
            size: m.len(),
            mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
            ctime_ns: m.ctime().saturating_mul(1_000_000_000) + m.ctime_nsec(),
            ino: m.ino(),
            mode: m.permissions().mode() & 0o7777,
        }
    }

    /// A folder's permission bits.
    pub(crate) fn dir_mode(m: &fs::Metadata) -> u32 {
        m.permissions().mode() & 0o7777
    }

    /// A file found with `local` permission bits has the index's `wanted` ones.
    pub(crate) fn mode_matches(local: u32, wanted: u32) -> bool {
        local & 0o7777 == wanted & 0o7777
    }

    /// A folder found with `local` permission bits has the index's `wanted` ones.
    pub(crate) fn dir_mode_matches(local: u32, wanted: u32) -> bool {
        local & 0o7777 == wanted & 0o7777
    }

    /// A file found with mtime `local` has the index's `wanted` one.
    pub(crate) fn mtime_matches(local: i64, wanted: i64) -> bool {
        local == wanted
    }

    pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
        file.read_exact_at(buf, offset)
    }

    pub(crate) fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(buf, offset)
    }

    /// Sets a folder's permission bits.
    pub(crate) fn set_dir_mode(path: &Path, mode: u32) -> io::Result<()> {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
    }

    /// Makes a folder Hummel is about to write into writable for it (its mode is set at the
    /// end); `mode` is its current one.
    pub(crate) fn make_dir_writable(path: &Path, mode: u32) -> io::Result<()> {
        if mode & 0o700 != 0o700 {
            set_dir_mode(path, mode | 0o700)?;
        }
        Ok(())
    }

    /// Makes a kept temp file (`m`: its metadata) writable again.
    pub(crate) fn make_temp_writable(path: &Path, m: &fs::Metadata) -> io::Result<()> {
        if m.permissions().mode() & 0o600 != 0o600 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }

    /// Sets mtime and mode of a file by path (two calls, no open), and with `flush` makes it
    /// durable.
    pub(crate) fn set_file_meta(
        path: &Path,
        mtime_ns: i64,
        mode: u32,
        flush: bool,
    ) -> io::Result<()> {
        use rustix::fs::{AtFlags, Mode, Timespec, Timestamps};
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            last_modification: Timespec {
                tv_sec: mtime_ns.div_euclid(1_000_000_000),
                tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
            },
        };
        rustix::fs::utimensat(rustix::fs::CWD, path, &times, AtFlags::empty())?;
        rustix::fs::chmod(path, Mode::from_raw_mode(mode & 0o7777))?;
        if flush {
            File::open(path)?.sync_all()?;
        }
        Ok(())
    }

    /// Makes a folder's entries durable (`fsync` of the folder).
    pub(crate) fn flush_dir(path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    /// Makes everything written on the file system holding `dir` durable, where one call can;
    /// `false` where it cannot (then [`FLUSH_PER_FILE`]).
    ///
    /// On Linux this is one `syncfs`: the kernel flushes every dirty page and inode in one
    /// batch, where thousands of small files would otherwise cost one fsync each (measured:
    /// 4,000 fsyncs took 1.6 s of a 2.4 s sync of 2,204 files).
    pub(crate) fn sync_filesystem(dir: &Path) -> io::Result<bool> {
        #[cfg(target_os = "linux")]
        {
            rustix::fs::syncfs(File::open(dir)?)?;
            Ok(true)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = dir;
            Ok(false)
        }
    }

    /// Renames `from` over `to` (whatever the mode of `to`).
    pub(crate) fn replace(from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    /// Deletes a file or symlink.
    pub(crate) fn remove_file(path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    /// Deletes a folder and everything below it, following no symlink.
    pub(crate) fn remove_dir_all(path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    /// Removes a symlink `m` describes (a file or folder symlink alike on Unix).
    pub(crate) fn remove_symlink(path: &Path, _m: &fs::Metadata) -> io::Result<()> {
        fs::remove_file(path)
    }

    /// Unix lets a file be replaced or deleted while it is open.
    pub(crate) fn is_in_use(_e: &io::Error) -> bool {
        false
    }

    /// Bytes an unprivileged writer may still use on the file system holding `dir`.
    pub(crate) fn available_space(dir: &Path) -> io::Result<u64> {
        let s = rustix::fs::statvfs(dir)?;
        Ok(s.f_bavail.saturating_mul(s.f_frsize))
    }
}

#[cfg(windows)]
mod imp {
    use std::os::windows::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};

    use super::*;

    /// Windows refuses some names every Unix holds (`hummel_core::portable`).
    pub(crate) const WINDOWS_NAMES: bool = true;

    /// Windows has no `syncfs`: each file and folder is flushed.
    pub(crate) const FLUSH_PER_FILE: bool = true;

    /// `CreateFileW` flag that opens a folder (to flush it).
    const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;
    /// The access right to change a file's times, which a read-only file still grants.
    const FILE_WRITE_ATTRIBUTES: u32 = 0x0100;
    /// 1970-01-01 in `FILETIME` ticks (100 ns since 1601-01-01).
    const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;
    /// Win32 errors of a file another process holds open or locked: access denied (replacing
    /// or deleting a file open without `FILE_SHARE_DELETE`, a running program), sharing
    /// violation, lock violation, a file with a mapped view (games map their data files).
    const IN_USE_ERRORS: [i32; 4] = [5, 32, 33, 1224];

    /// DEST as an absolute `\\?\` path (`\\?\UNC\server\share\...` for a share), so that no
    /// path below it is cut at 260 characters, whatever the system's long-path setting.
    /// Repository paths are then joined with [`under`], never as text with `/`.
    pub(crate) fn long_path(dest: &Path) -> PathBuf {
        let Ok(abs) = std::path::absolute(dest) else {
            return dest.to_path_buf();
        };
        let s = abs.as_os_str().to_string_lossy();
        if s.starts_with(r"\\?\") || s.starts_with(r"\\.\") {
            return abs;
        }
        match s.strip_prefix(r"\\") {
            Some(unc) => PathBuf::from(format!(r"\\?\UNC\{unc}")),
            None => PathBuf::from(format!(r"\\?\{s}")),
        }
    }

    fn ticks_to_ns(ticks: u64) -> i64 {
        i64::try_from(ticks)
            .unwrap_or(i64::MAX)
            .saturating_sub(UNIX_EPOCH_TICKS)
            .saturating_mul(100)
    }

    /// Size, last write time, creation time (in the place of ctime: a file deleted and
    /// created again gets a new one), no inode, and the read-only attribute as a mode.
    pub(crate) fn file_stat(m: &fs::Metadata) -> FileStat {
        FileStat {
            size: m.len(),
            mtime_ns: ticks_to_ns(m.last_write_time()),
            ctime_ns: ticks_to_ns(m.creation_time()),
            ino: 0,
            mode: if m.permissions().readonly() {
                0o444
            } else {
                0o644
            },
        }
    }

    /// Folders have no mode here.
    pub(crate) fn dir_mode(_m: &fs::Metadata) -> u32 {
        0o755
    }

    /// Only writability is a file's mode on Windows.
    pub(crate) fn mode_matches(local: u32, wanted: u32) -> bool {
        (local & 0o200 == 0) == (wanted & 0o200 == 0)
    }

    /// A folder's read-only attribute means something else on Windows: never compared.
    pub(crate) fn dir_mode_matches(_local: u32, _wanted: u32) -> bool {
        true
    }

    /// NTFS keeps 100 ns ticks.
    pub(crate) fn mtime_matches(local: i64, wanted: i64) -> bool {
        local.div_euclid(100) == wanted.div_euclid(100)
    }

    pub(crate) fn read_exact_at(
        file: &File,
        mut buf: &mut [u8],
        mut offset: u64,
    ) -> io::Result<()> {
        while !buf.is_empty() {
            match file.seek_read(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(crate) fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match file.seek_write(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sets or clears the read-only attribute of a file (not following a symlink).
    fn set_readonly(path: &Path, readonly: bool) -> io::Result<()> {
        let mut p = fs::symlink_metadata(path)?.permissions();
        if p.readonly() != readonly {
            p.set_readonly(readonly);
            fs::set_permissions(path, p)?;
        }
        Ok(())
    }

    /// Clears the read-only attribute of a file that is there; `true` when it was set.
    fn clear_readonly(path: &Path) -> io::Result<bool> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_file() && m.permissions().readonly() => {
                set_readonly(path, false)?;
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn set_dir_mode(_path: &Path, _mode: u32) -> io::Result<()> {
        Ok(())
    }

    pub(crate) fn make_dir_writable(_path: &Path, _mode: u32) -> io::Result<()> {
        Ok(())
    }

    pub(crate) fn make_temp_writable(path: &Path, m: &fs::Metadata) -> io::Result<()> {
        if m.permissions().readonly() {
            set_readonly(path, false)?;
        }
        Ok(())
    }

    /// Sets mtime (through a handle that may only write attributes, which a read-only file
    /// grants), with `flush` makes the file durable (a handle that may write: before the
    /// read-only attribute is set), then the attribute.
    pub(crate) fn set_file_meta(
        path: &Path,
        mtime_ns: i64,
        mode: u32,
        flush: bool,
    ) -> io::Result<()> {
        let mtime = fs::FileTimes::new().set_modified(crate::assemble::system_time(mtime_ns));
        let file = if flush {
            clear_readonly(path)?;
            File::options().write(true).open(path)?
        } else {
            File::options()
                .access_mode(FILE_WRITE_ATTRIBUTES)
                .open(path)?
        };
        file.set_times(mtime)?;
        if flush {
            file.sync_all()?;
        }
        drop(file);
        set_readonly(path, mode & 0o200 == 0)
    }

    /// `FlushFileBuffers` on a folder handle. Best effort: Windows may refuse folder handles
    /// that (access denied, invalid function); NTFS journals the renames of its entries itself.
    pub(crate) fn flush_dir(path: &Path) -> io::Result<()> {
        let flushed = File::options()
            .write(true)
            .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
            .open(path)
            .and_then(|d| d.sync_all());
        match flushed {
            Err(e) if matches!(e.raw_os_error(), Some(1 | 5 | 50)) => {
                tracing::debug!(path = %path.display(), "folder not flushed: {e}");
                Ok(())
            }
            other => other,
        }
    }

    pub(crate) fn sync_filesystem(_dir: &Path) -> io::Result<bool> {
        Ok(false)
    }

    /// Renames `from` over `to`: clears the read-only attribute of `to` first (Windows refuses
    /// to replace a read-only file; its new mode comes with `from`), and retries while another
    /// program holds `to` open. A failure sets the attribute back.
    pub(crate) fn replace(from: &Path, to: &Path) -> io::Result<()> {
        let was_readonly = clear_readonly(to)?;
        let result = retry_in_use(to, || fs::rename(from, to));
        if result.is_err() && was_readonly {
            let _ = set_readonly(to, true);
        }
        result
    }

    /// Deletes a file, read-only or not, retrying while another program holds it open.
    pub(crate) fn remove_file(path: &Path) -> io::Result<()> {
        clear_readonly(path)?;
        retry_in_use(path, || fs::remove_file(path))
    }

    /// Deletes a folder and everything below it, read-only files too, following no symlink
    /// or junction (those are removed as links).
    pub(crate) fn remove_dir_all(path: &Path) -> io::Result<()> {
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            let p = entry.path();
            let t = entry.file_type()?;
            if t.is_symlink_dir() {
                fs::remove_dir(&p)?;
            } else if t.is_dir() {
                remove_dir_all(&p)?;
            } else {
                remove_file(&p)?;
            }
        }
        retry_in_use(path, || fs::remove_dir(path))
    }

    /// Removes a symlink or junction `m` describes: a folder link with `remove_dir`.
    pub(crate) fn remove_symlink(path: &Path, m: &fs::Metadata) -> io::Result<()> {
        if m.file_type().is_symlink_dir() {
            fs::remove_dir(path)
        } else {
            fs::remove_file(path)
        }
    }

    /// True for the errors of a file another program holds open or locked.
    pub(crate) fn is_in_use(e: &io::Error) -> bool {
        e.raw_os_error().is_some_and(|c| IN_USE_ERRORS.contains(&c))
    }

    pub(crate) fn available_space(dir: &Path) -> io::Result<u64> {
        fs4::available_space(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_paths_join_component_by_component() {
        let d = Path::new("dest");
        assert_eq!(
            under(d, Path::new("a/b c/d")),
            d.join("a").join("b c").join("d")
        );
        let rel = rel_join(&rel_join(Path::new(""), "a".as_ref()), "b".as_ref());
        assert_eq!(rel.to_str(), Some("a/b"));
        assert_eq!(shown(Path::new(r"\\?\C:\mods\x")), r"C:\mods\x");
        assert_eq!(shown(Path::new(r"\\?\UNC\srv\share")), r"\\srv\share");
        assert_eq!(shown(Path::new("/tmp/x")), "/tmp/x");
    }
}
