//! The Windows client under Wine: `hummel.exe` (cross-built for `x86_64-pc-windows-gnu`) run by
//! Debian's `wine64` against the Linux master and slaves of a [`Cluster`].
//!
//! [`wine`] builds the exe once per test run (`cargo build --target x86_64-pc-windows-gnu`,
//! a no-op when CI built it before the tests), and beside it, with the mingw gcc, two small C
//! programs from `tests/wine/`: `bcryptprimitives.dll` (Rust's std imports `ProcessPrng`,
//! which Wine 8 lacks) and `holdopen.exe` (holds a file open the way a running game does).
//! Each test gets its own Wine prefix (a temp folder, `wineserver -k` on drop).
//!
//! Without wine64, the mingw gcc or the Rust target, a Windows test prints why and passes
//! (a developer machine); with `HUMMEL_WINE_REQUIRED` set (CI, which installs them), it fails.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use super::util::*;

/// Debian's 64-bit Wine loader.
pub const WINE64: &str = "/usr/lib/wine/wine64";
const WINESERVER: &str = "/usr/lib/wine/wineserver";
const TARGET: &str = "x86_64-pc-windows-gnu";
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";

/// Why the Windows tests cannot run here.
enum Unavailable {
    /// A tool is not installed: the tests are skipped (unless CI requires them).
    Missing(String),
    /// The build failed: a real failure.
    Failed(String),
}

static BUILT: OnceLock<Result<PathBuf, Unavailable>> = OnceLock::new();

/// The workspace's target folder (the one the tests' own binary is in).
fn target_dir() -> PathBuf {
    Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/hummel")
        .to_path_buf()
}

/// Output of a tool, or why it did not run.
fn tool(cmd: &mut Command) -> Result<std::process::Output, String> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))
}

/// Builds `hummel.exe` and the two helpers; returns the folder holding them.
fn build() -> Result<PathBuf, Unavailable> {
    use Unavailable::{Failed, Missing};
    if !Path::new(WINE64).exists() {
        return Err(Missing(format!(
            "{WINE64} not found (Debian: apt-get install wine64)"
        )));
    }
    if tool(Command::new(MINGW_GCC).arg("--version")).is_err() {
        return Err(Missing(format!(
            "{MINGW_GCC} not found (Debian: apt-get install gcc-mingw-w64-x86-64)"
        )));
    }
    let installed = tool(Command::new("rustup").args(["target", "list", "--installed"]))
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == TARGET)
        })
        .unwrap_or(false);
    if !installed {
        return Err(Missing(format!(
            "the Rust target {TARGET} is not installed (rustup target add {TARGET})"
        )));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&workspace)
        .args([
            "build", "--target", TARGET, "-p", "hummel", "--bin", "hummel",
        ])
        .env("CARGO_TARGET_DIR", &target);
    // What cargo set for this test process describes the test, not the build: ring's build
    // script, for one, reruns when CARGO_MANIFEST_DIR differs, and everything above it with it,
    // so the exe CI built before the tests would be built again.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_tests = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref());
        if set_for_tests {
            build.env_remove(name.as_ref());
        }
    }
    let out = tool(&mut build).map_err(Failed)?;
    if !out.status.success() {
        return Err(Failed(format!(
            "cargo build --target {TARGET} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let dir = target.join(TARGET).join("debug");
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wine");
    let compile = |args: &[&str], source: &str, output: &str| -> Result<(), Unavailable> {
        let out = tool(
            Command::new(MINGW_GCC)
                .args(args)
                .arg("-O2")
                .arg("-o")
                .arg(dir.join(output))
                .arg(sources.join(source))
                .args(if output.ends_with(".dll") {
                    &["-ladvapi32"][..]
                } else {
                    &[][..]
                }),
        )
        .map_err(Failed)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Failed(format!(
                "{MINGW_GCC} {source}: {}",
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    };
    compile(&["-shared"], "bcryptprimitives.c", "bcryptprimitives.dll")?;
    compile(&[], "holdopen.c", "holdopen.exe")?;
    Ok(dir)
}

/// The Windows client for one test, in its own Wine prefix; `None` (with a printed note) where
/// Wine or the cross toolchain is missing and CI does not require them.
pub fn wine() -> Option<Wine> {
    match BUILT.get_or_init(build) {
        Ok(dir) => Some(Wine::new(dir)),
        Err(Unavailable::Missing(why)) if std::env::var_os("HUMMEL_WINE_REQUIRED").is_none() => {
            // Once, and past the test harness's capture of eprintln!, so that it shows.
            static NOTED: std::sync::Once = std::sync::Once::new();
            NOTED.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "note: SKIPPING the Windows client tests: {why}. .ci/run installs what \
                     they need; set HUMMEL_WINE_REQUIRED=1 to make this a failure."
                );
            });
            None
        }
        Err(Unavailable::Missing(why) | Unavailable::Failed(why)) => {
            panic!("the Windows client tests cannot run: {why}")
        }
    }
}

/// `Z:\...`: how a Windows program under Wine names a Linux path.
pub fn win_path(p: &Path) -> String {
    format!("Z:{}", p.display().to_string().replace('/', "\\"))
}

/// A Wine prefix and the exe folder.
pub struct Wine {
    pub prefix: tempfile::TempDir,
    dir: PathBuf,
}

impl Wine {
    fn new(dir: &Path) -> Wine {
        let w = Wine {
            prefix: tempfile::tempdir().unwrap(),
            dir: dir.to_path_buf(),
        };
        // The first program run in a prefix creates it (~10 s): once, here, with the exe's
        // own check that it starts at all.
        let mut version = w.hummel();
        version.arg("--version");
        let out = ok(version);
        assert!(out.starts_with("hummel "), "{out}");
        w
    }

    /// A command run by Wine in this prefix, with its output as Windows programs give it.
    pub fn command(&self, exe: &str) -> Command {
        let mut c = Command::new(WINE64);
        c.arg(self.dir.join(exe))
            .env("WINEPREFIX", self.prefix.path())
            .env("WINEDEBUG", "-all")
            // No Mono or Gecko install dialogs in a new prefix.
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .stdin(Stdio::null());
        for v in [
            "HUMMEL_WRITE_TOKEN",
            "HUMMEL_SLAVE_TOKEN",
            "HUMMEL_READ_TOKEN",
            "HUMMEL_CA_CERT",
            "RUST_LOG",
        ] {
            c.env_remove(v);
        }
        c
    }

    /// `hummel.exe` under Wine, environment cleaned as [`hummel`] does.
    pub fn hummel(&self) -> Command {
        self.command("hummel.exe")
    }

    /// `hummel.exe sync MASTER Z:\DEST ARGS` (not run).
    pub fn sync_cmd(&self, c: &Cluster, dest: &Path, args: &[&str]) -> Command {
        let mut cmd = self.hummel();
        cmd.args(["sync", &c.master.url, &win_path(dest)])
            .args(args);
        cmd
    }

    /// `hummel.exe sync ... --json ARGS`, which must succeed; the summary.
    pub fn sync(&self, c: &Cluster, dest: &Path, args: &[&str]) -> Value {
        let mut cmd = self.sync_cmd(c, dest, args);
        cmd.arg("--json");
        let out = ok(cmd);
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("sync --json printed {out:?}: {e}"))
    }

    /// `hummel.exe verify MASTER Z:\DEST` (not run).
    pub fn verify_cmd(&self, c: &Cluster, dest: &Path) -> Command {
        let mut cmd = self.hummel();
        cmd.args(["verify", &c.master.url, &win_path(dest)]);
        cmd
    }

    /// Opens `file` from another Windows process in this prefix, as a running game holds its
    /// data (others may read, not write or delete), and returns once it is open.
    pub fn hold_open(&self, file: &Path) -> Held {
        let mut cmd = self.command("holdopen.exe");
        cmd.arg(win_path(file))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn holdopen.exe");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "open", "holdopen.exe {}", file.display());
        let stdin = child.stdin.take();
        Held { child, stdin }
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        // The prefix's wineserver lingers a few seconds after its last program otherwise.
        let _ = Command::new(WINESERVER)
            .arg("-k")
            .env("WINEPREFIX", self.prefix.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A file held open by `holdopen.exe`; released by [`Held::release`] or on drop.
pub struct Held {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Held {
    /// Closes the file (the holder's standard input ends, it closes the handle and exits).
    pub fn release(mut self) {
        self.close();
    }

    fn close(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.flush();
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "holdopen.exe: {status}");
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            self.stdin.take();
            let _ = self.child.wait();
        }
    }
}

/// Sorted map path → what a Windows copy keeps of it: kind, size, BLAKE3, read-only or not,
/// mtime in NTFS's 100 ns ticks. Without `.hummel`.
pub fn windows_digest(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    windows_walk(root, root, &mut out);
    out
}

fn windows_walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
        if rel == ".hummel" {
            continue;
        }
        let md = fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            out.insert(rel, "dir".into());
            windows_walk(root, &p, out);
        } else if md.is_file() {
            let h = blake3::hash(&fs::read(&p).unwrap());
            let ns = md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128;
            out.insert(
                rel,
                format!(
                    "file {} {} {} {}",
                    md.len(),
                    &h.to_hex()[..16],
                    if md.mode() & 0o200 == 0 { "ro" } else { "rw" },
                    ns.div_euclid(100)
                ),
            );
        } else {
            out.insert(rel, "other".into());
        }
    }
}

/// Asserts that `copy`, written by the Windows client, holds `repo` as Windows can: same
/// entries and contents, same writability, mtimes to 100 ns.
pub fn assert_same_windows_tree(repo: &Path, copy: &Path) {
    let (a, b) = (windows_digest(repo), windows_digest(copy));
    if a != b {
        let mut diff = String::new();
        for (k, v) in &a {
            match b.get(k) {
                None => diff.push_str(&format!("only in the repository: {k} ({v})\n")),
                Some(w) if w != v => diff.push_str(&format!("differs: {k}\n  {v}\n  {w}\n")),
                _ => {}
            }
        }
        for (k, v) in &b {
            if !a.contains_key(k) {
                diff.push_str(&format!("only in the copy: {k} ({v})\n"));
            }
        }
        panic!("trees differ:\n{diff}");
    }
}

/// Runs `cmd` with its stderr read line by line: `until` sees each line, and once it returns
/// true `then` runs (the event the test waits for); returns the output when the command ends.
pub fn run_until_stderr(
    mut cmd: Command,
    mut until: impl FnMut(&str) -> bool,
    then: impl FnOnce(),
) -> (std::process::ExitStatus, String, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut s);
        s
    });
    let mut err = String::new();
    let mut then = Some(then);
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        err.push_str(&line);
        err.push('\n');
        if then.is_some() && until(&line) {
            (then.take().unwrap())();
        }
    }
    let status = child.wait().unwrap();
    assert!(then.is_none(), "the awaited line never came:\n{err}");
    (status, out.join().unwrap(), err)
}
