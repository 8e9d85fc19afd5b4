//! Every fuzz target, on stable Rust, as part of `cargo test`: the committed corpus
//! (`corpus/<target>/`) is replayed, then a short deterministic round of mutated inputs runs.
//! Each input runs under an allocation limit ([`hummel_fuzz::allowance`]); a panic, a failed
//! check, or an allocation beyond the limit fails the test.
//!
//! - `HUMMEL_FUZZ_ITERS=N`: mutated inputs per target (default: the target's own, ~2 s each).
//! - `HUMMEL_FUZZ_SEED=N`: another stream of inputs (default 1).
//! - `HUMMEL_FUZZ_TRACE=1`: write each input to `target/tmp/fuzz/<target>.input` before running
//!   it, to keep the one that aborted the process (an allocation beyond the limit aborts).
//! - `HUMMEL_BLESS=1`: write the seeds of every target into its corpus folder (and remove the
//!   `seed-*` files of seeds no longer made).
//!
//! A failing input is written to `target/tmp/fuzz/<target>-<hash>`: once fixed, add it to the
//! corpus as `regress-<what it broke>` (replayed every run, not mutated).

use std::alloc::System;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cap::Cap;

use hummel_fuzz::engine::Mutator;
use hummel_fuzz::{Target, allowance, target};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// One target at a time: the allocation limit is process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name)
}

fn failure_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz")
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// The corpus files of `name`, sorted by file name.
fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(name);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.map(|e| {
                let e = e.expect("corpus entry");
                let bytes = std::fs::read(e.path()).expect("corpus file");
                (e.file_name().to_string_lossy().into_owned(), bytes)
            })
            .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The name a seed has in the corpus: the start of its BLAKE3.
fn seed_name(bytes: &[u8]) -> String {
    format!("seed-{}", &hummel_core::Hash::of(bytes).to_hex()[..16])
}

/// Runs `input` under the allocation limit; `Err` with the message on a panic.
fn run_one(t: &Target, input: &[u8]) -> Result<bool, String> {
    let limit = allowance(t.name, input);
    let before = ALLOCATOR.allocated();
    ALLOCATOR
        .set_limit(before.saturating_add(limit))
        .expect("limit above what is allocated");
    let outcome = std::panic::catch_unwind(|| (t.run)(input));
    ALLOCATOR.set_limit(usize::MAX).expect("lifting the limit");
    outcome.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())
    })
}

fn fail(t: &Target, input: &[u8], what: &str, message: &str) -> ! {
    let dir = failure_dir();
    std::fs::create_dir_all(&dir).expect("failure folder");
    let path = dir.join(format!(
        "{}-{}",
        t.name,
        &hummel_core::Hash::of(input).to_hex()[..16]
    ));
    std::fs::write(&path, input).expect("failure file");
    let shown: String = input.iter().take(256).map(|b| format!("{b:02x}")).collect();
    panic!(
        "fuzz target {} failed on {what}: {message}\ninput ({} bytes, kept at {}): {shown}",
        t.name,
        input.len(),
        path.display()
    );
}

fn fuzz(name: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A panic must be able to report itself: lift the limit before the default hook runs.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = ALLOCATOR.set_limit(usize::MAX);
            default_hook(info);
        }));
    });
    let t = target(name).expect("a target of that name");
    let trace = std::env::var_os("HUMMEL_FUZZ_TRACE").is_some_and(|v| v == "1");
    let trace_path = failure_dir().join(format!("{name}.input"));
    if trace {
        std::fs::create_dir_all(failure_dir()).expect("trace folder");
    }

    let seeds = (t.seeds)();
    if std::env::var_os("HUMMEL_BLESS").is_some_and(|v| v == "1") {
        // The seeds as they are now; seeds no longer made go (regressions stay).
        std::fs::create_dir_all(corpus_dir(name)).expect("corpus folder");
        let current: Vec<String> = seeds.iter().map(|s| seed_name(s)).collect();
        for (file, _) in corpus(name) {
            if file.starts_with("seed-") && !current.contains(&file) {
                std::fs::remove_file(corpus_dir(name).join(file)).expect("stale seed");
            }
        }
        for s in &seeds {
            std::fs::write(corpus_dir(name).join(seed_name(s)), s).expect("corpus file");
        }
    }
    let files = corpus(name);
    for s in &seeds {
        assert!(
            files.iter().any(|(n, _)| *n == seed_name(s)),
            "the corpus of {name} lacks seed {} (seeds changed?): regenerate it with \
             HUMMEL_BLESS=1 cargo test -p hummel-fuzz --test fuzz, and commit it",
            seed_name(s)
        );
    }

    // The corpus: nothing may fail.
    let mut pool = Vec::new();
    for (file, bytes) in files {
        if trace {
            std::fs::write(&trace_path, &bytes).expect("trace file");
        }
        if let Err(message) = run_one(t, &bytes) {
            fail(t, &bytes, &format!("corpus file {file}"), &message);
        }
        // Regressions are replayed, not mutated: some are large on purpose, and slow.
        if !file.starts_with("regress-") {
            pool.push(bytes);
        }
    }

    let iterations = env_number("HUMMEL_FUZZ_ITERS").unwrap_or(t.iterations);
    let seed = env_number("HUMMEL_FUZZ_SEED").unwrap_or(1);
    let mut mutator = Mutator::new(seed, pool, t.max_len);
    let mut accepted = 0u64;
    for i in 0..iterations {
        let input = mutator.next_input();
        if trace {
            std::fs::write(&trace_path, &input).expect("trace file");
        }
        match run_one(t, &input) {
            Ok(true) => {
                accepted += 1;
                mutator.accepted(input);
            }
            Ok(false) => {}
            Err(message) => fail(
                t,
                &input,
                &format!("mutated input {i} (HUMMEL_FUZZ_SEED={seed})"),
                &message,
            ),
        }
    }
    println!("{name}: {iterations} mutated inputs, {accepted} accepted (seed {seed})");
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                fuzz(stringify!($name));
            }
        )*

        /// Every target of the library has a test here, and a libFuzzer binary in `fuzz/`.
        #[test]
        fn every_target_is_run() {
            let here = [$(stringify!($name)),*];
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
            for t in hummel_fuzz::TARGETS {
                assert!(here.contains(&t.name), "no test runs target {}", t.name);
                let bin = root.join(format!("fuzz/fuzz_targets/{}.rs", t.name));
                let source = std::fs::read_to_string(&bin)
                    .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
                assert!(source.contains(&format!("hummel_fuzz::{}(data)", t.name)));
                assert!(manifest.contains(&format!("name = \"{}\"", t.name)));
            }
        }
    };
}

targets!(
    index,
    index_body,
    delta,
    delta_body,
    pack,
    chunk,
    chunker,
    client_state,
    range,
    relpath,
    hash_text,
    wire_json,
    statement,
    proof,
    profiles,
    slave_proof,
);

/// An envelope (format 1, no signature) around an already compressed `body`.
fn envelope(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// `prefix` followed by zeros up to just over `MAX_INDEX_PLAIN`, as one small zstd frame.
fn bomb(prefix: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    enc.write_all(prefix).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..=hummel_core::index::MAX_INDEX_PLAIN >> 20 {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap()
}

/// A small index or delta that decompresses to over a gigabyte is refused without holding it
/// (A3): the decoders stream, also when they explain a failure. Both used to decompress the
/// whole body first (the index only to name the bad path), a gigabyte or two from 40 kB.
#[test]
fn a_decompression_bomb_is_refused_in_bounded_memory() {
    use hummel_core::index::{DirEntry, EntryKind, INDEX_MAGIC};
    #[derive(serde::Serialize)]
    struct Evil {
        revision: u64,
        created_unix: i64,
        chunker: hummel_core::ChunkerConfig,
        root: Option<String>,
        entries: Vec<(String, EntryKind)>,
    }
    let evil = postcard::to_stdvec(&Evil {
        revision: 1,
        created_unix: 0,
        chunker: hummel_core::ChunkerConfig::default(),
        root: None,
        entries: vec![
            ("ok".into(), EntryKind::Dir(DirEntry { mode: 0o755 })),
            ("../escape".into(), EntryKind::Dir(DirEntry { mode: 0o755 })),
        ],
    })
    .unwrap();
    let index_bomb = envelope(INDEX_MAGIC, &bomb(&evil));
    let delta_bomb = envelope(hummel_core::delta::DELTA_MAGIC, &bomb(&[]));
    assert!(index_bomb.len() < 100_000 && delta_bomb.len() < 100_000);

    // No limit here (a decoder may fail gracefully when an allocation does, read_to_end does):
    // the highest point the process's allocations ever reached must not move.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bound = ALLOCATOR
        .max_allocated()
        .max(ALLOCATOR.allocated() + (64 << 20));
    let index = hummel_core::index::decode(&index_bomb).map(|_| ());
    let delta = hummel_core::delta::decode_delta(&delta_bomb).map(|_| ());
    let peak = ALLOCATOR.max_allocated();
    assert!(
        peak <= bound,
        "decoding the bombs allocated up to {peak} bytes"
    );
    let err = index.unwrap_err().to_string();
    assert!(err.contains("../escape"), "{err}");
    assert!(delta.is_err());
}
