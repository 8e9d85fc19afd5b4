#!/usr/bin/env python3
"""Deterministic "mod repository" data set generator for the Hummel peer benchmarks.

Usage:
    gen_data.py --set smoke|quick|full [--root /tmp/hummel-bench] [--seed 1]
    gen_data.py --scale 0.25 --name custom        # any size: scale 1.0 = ~3 GiB
    gen_data.py --set many [--files 20000]        # many small files: 500,000 x ~8 KB = ~3.9 GB

Layout produced under ROOT/data/NAME/src/ (all mtimes fixed to MTIME):
    @big_N/addons/big_N.pbo           4 large files, 512 MiB * scale each
    @mod_XXX/addons/*.pbo, data/...   ~2000 * scale medium files (100 KiB - 5 MiB)
    @mod_XXX/<nested dirs>/*.cpp ...  ~20000 * scale small files (1 - 20 KiB)

Content is mixed per 1 MiB segment: random bytes (incompressible, like packed
textures), "text" (Zipf-ish words/phrases, zstd -3 ~3.7x) and "binary records"
(skewed bytes with record tags, zstd -3 ~2x). The whole set compresses ~1.8x
with per-file zstd -3. Every file has its own RNG stream derived from
(seed, role, index) so any single file can be regenerated identically.
The same module exposes helpers used by peers.py to build the modified and
insertion variants of a large file.

The "many" set (scenario 7b) is only small files: ROOT/data/many/src/ (or
many-<N> for another file count) holds N files (default 500,000) of ~8 KB
(log-normal sizes, median ~5.8 KiB, 64 B - 256 KiB, mean ~7.8 kB) in about N/150
folders nested 2-5 deep under ~N/10,000 @mod_NNN folders; the kinds of content
are those of the small files above. small_variant() rewrites one of them.
"""
import argparse
import array
import json
import operator
import os
import random
import sys
import time

SEG = 1 << 20
MTIME = 1700000000
KIB = 1024
MIB = 1 << 20

SETS = {"smoke": 0.005, "quick": 0.1, "full": 1.0}
MANY_FILES = 500000
MANY_MEAN = 7800  # bytes: 500,000 files ~ 3.9 GB
MANY_SIGMA = 0.75

_PHRASES = None
_SKEW = bytes(min(255, int((i / 256) ** 5 * 40)) for i in range(256))
_TAGS = [b"VERT", b"NORM", b"UV00", b"IDX0", b"BONE", b"MATL"]


def _phrases(seed):
    global _PHRASES
    if _PHRASES is None:
        r = random.Random(f"{seed}:vocab")
        letters = b"abcdefghijklmnopqrstuvwxyz_"
        vocab = [bytes(r.choice(letters) for _ in range(2 + min(13, int(r.expovariate(1 / 4)))))
                 for _ in range(8192)]
        seps = [b" ", b" ", b" ", b"\n", b" = ", b", ", b";\n", b"\t", b".", b"(", b") "]

        def zw():
            return vocab[min(8191, int(r.paretovariate(0.6)) - 1)]

        ph = []
        for _ in range(65536):
            p = zw() + r.choice(seps) + zw()
            if r.random() < 0.15:
                p += b" " + str(r.randrange(100000)).encode()
            ph.append(p + r.choice(seps))
        _PHRASES = (tuple(ph), sum(map(len, ph)) / len(ph))
    return _PHRASES


def text_bytes(rng, n, seed):
    ph, avg = _phrases(seed)
    k = max(16, int(n / avg * 1.03))
    s = b"".join(operator.itemgetter(*array.array("H", rng.randbytes(2 * k)))(ph))
    while len(s) < n:
        s += b"".join(operator.itemgetter(*array.array("H", rng.randbytes(2 * 4096)))(ph))
    return s[:n]


def bin_bytes(rng, n):
    raw = rng.randbytes(n).translate(_SKEW)
    parts = [raw[i:i + 28] for i in range(0, n, 28)]
    return _TAGS[rng.randrange(len(_TAGS))].join(parts)[:n]


def rand_bytes(rng, n):
    return rng.randbytes(n)


def mixed_stream(rng, n, p_random, p_text, seed):
    """Yield n bytes in <=1 MiB segments; segment type drawn per segment."""
    left = n
    while left > 0:
        m = min(SEG, left)
        u = rng.random()
        if u < p_random:
            yield rand_bytes(rng, m)
        elif u < p_random + p_text:
            yield text_bytes(rng, m, seed)
        else:
            yield bin_bytes(rng, m)
        left -= m


def plan(scale, seed):
    """Return list of (relpath, size, kind, p_random, p_text) - deterministic."""
    r = random.Random(f"{seed}:plan:{scale}")
    files = []
    large_size = max(1, int(512 * scale)) * MIB
    large_prand = [0.45, 0.25, 0.35, 0.15]
    for i in range(4):
        files.append((f"@big_{i}/addons/big_{i}.pbo", large_size, "large", large_prand[i], 0.55 * (1 - large_prand[i])))
    n_medium = max(4, round(2000 * scale))
    n_small = max(10, round(20000 * scale))
    n_mods = max(4, round(40 * scale))
    medium_budget = int(800 * MIB * scale)
    # heavy-tailed sizes: 100 KiB * exp(Exp(4/3)), capped at 5 MiB, rescaled to budget
    raw = [min(51.2, pow(2.718281828, r.expovariate(4 / 3))) for _ in range(n_medium)]
    f = medium_budget / (sum(raw) * 100 * KIB)
    sizes = [int(min(5 * MIB, max(100 * KIB, x * f * 100 * KIB))) for x in raw]
    exts_m = [".pbo", ".paa", ".p3d", ".ogg", ".wrp"]
    for i, sz in enumerate(sizes):
        mod = f"@mod_{r.randrange(n_mods):03d}"
        ext = r.choice(exts_m)
        if ext == ".pbo":
            rel = f"{mod}/addons/m{i:05d}{ext}"
        else:
            rel = f"{mod}/data/d{r.randrange(8)}/s{r.randrange(4)}/m{i:05d}{ext}"
        prand = 0.9 if ext in (".paa", ".ogg") else r.uniform(0.0, 0.5)
        files.append((rel, sz, "medium", prand, 0.5 * (1 - prand)))
    exts_s = SMALL_EXTS
    for i in range(n_small):
        mod = f"@mod_{r.randrange(n_mods):03d}"
        depth = r.randrange(1, 5)
        d = "/".join(f"{'abcdefgh'[r.randrange(8)]}{r.randrange(6)}" for _ in range(depth))
        ext, kind = exts_s[min(len(exts_s) - 1, int(r.expovariate(0.45)))]
        sz = r.randint(1 * KIB, 20 * KIB)
        pr, pt = SMALL_MIX[kind]
        files.append((f"{mod}/{d}/s{i:05d}{ext}", sz, "small", pr, pt))
    return files


SMALL_EXTS = [(".cpp", "text"), (".hpp", "text"), (".sqf", "text"), (".xml", "text"),
              (".rvmat", "text"), (".bin", "bin"), (".bikb", "bin"), (".jpg", "random")]
SMALL_MIX = {"text": (0.0, 1.0), "bin": (0.0, 0.0), "random": (1.0, 0.0)}


def plan_many(n_files, seed):
    """Many small files: list of (relpath, size, "small", p_random, p_text) - deterministic.
    About n/150 folders (2-5 levels under @mod_NNN), unevenly filled (folder weights 1/rank-ish)."""
    import math
    r = random.Random(f"{seed}:many:{n_files}")
    n_mods = max(2, round(n_files / 10000))
    n_dirs = max(4, round(n_files / 150))
    dirs, seen = [], set()
    while len(dirs) < n_dirs:
        mod = f"@mod_{r.randrange(n_mods):03d}"
        depth = r.randrange(1, 5)
        d = mod + "/" + "/".join(f"{r.choice(('data', 'scripts', 'config', 'textures', 'sounds', 'ui', 'models'))}"
                                 if i == 0 else f"{'abcdefgh'[r.randrange(8)]}{r.randrange(10)}"
                                 for i in range(depth))
        if d not in seen:
            seen.add(d)
            dirs.append(d)
    # uneven folders: weight ~ 1/(1 + rank/20), shuffled
    w = [1 / (1 + i / 20) for i in range(n_dirs)]
    r.shuffle(w)
    cum, acc = [], 0.0
    for x in w:
        acc += x
        cum.append(acc)
    import bisect
    mu = math.log(MANY_MEAN) - MANY_SIGMA ** 2 / 2
    files = []
    for i in range(n_files):
        d = dirs[min(n_dirs - 1, bisect.bisect(cum, r.random() * acc))]
        ext, kind = SMALL_EXTS[min(len(SMALL_EXTS) - 1, int(r.expovariate(0.45)))]
        sz = int(min(256 * KIB, max(64, r.lognormvariate(mu, MANY_SIGMA))))
        pr, pt = SMALL_MIX[kind]
        files.append((f"{d}/f{i:06d}{ext}", sz, "small", pr, pt))
    return files


def many_name(n_files):
    return "many" if n_files == MANY_FILES else f"many-{n_files}"


def file_rng(seed, rel):
    return random.Random(f"{seed}:file:{rel}")


def write_file(path, rel, size, prand, ptext, seed):
    rng = file_rng(seed, rel)
    with open(path, "wb") as fh:
        for chunk in mixed_stream(rng, size, prand, ptext, seed):
            fh.write(chunk)
    os.utime(path, (MTIME, MTIME))


def large_variant(src_path, dst_path, mode, seed, mod_bytes=None):
    """mode 'mod': overwrite mod_bytes (default 1% of size, 5 MiB for 512 MiB) in
    the middle with fresh mixed content (same size file).
    mode 'ins': insert 1 KiB in the middle (everything after shifts by 1024)."""
    size = os.path.getsize(src_path)
    mid = (size // 2) & ~4095
    with open(src_path, "rb") as f:
        data = f.read()
    if mode == "mod":
        if mod_bytes is None:
            mod_bytes = size // 100
            if mod_bytes >= MIB:
                mod_bytes = (mod_bytes // MIB) * MIB
        rng = random.Random(f"{seed}:variant:mod")
        new = b"".join(mixed_stream(rng, mod_bytes, 0.3, 0.4, seed))
        data = data[:mid] + new + data[mid + mod_bytes:]
        info = {"offset": mid, "bytes": mod_bytes}
    elif mode == "ins":
        rng = random.Random(f"{seed}:variant:ins")
        new = text_bytes(rng, 1024, seed)
        data = data[:mid] + new + data[mid:]
        info = {"offset": mid, "bytes": 1024}
    else:
        raise ValueError(mode)
    with open(dst_path, "wb") as f:
        f.write(data)
    os.utime(dst_path, (MTIME + 86400, MTIME + 86400))
    return info


def small_variant(src_path, dst_path, seed):
    """The same small file rewritten: same size, new content of the same kind, mtime one day later."""
    size = os.path.getsize(src_path)
    rng = random.Random(f"{seed}:variant:small")
    with open(dst_path, "wb") as f:
        f.write(text_bytes(rng, size, seed))
    os.utime(dst_path, (MTIME + 86400, MTIME + 86400))
    return {"bytes": size}


def _write_slice(args):
    src, files, seed = args
    for rel, size, kind, pr, pt in files:
        write_file(os.path.join(src, rel), rel, size, pr, pt, seed)
    return sum(f[1] for f in files)


def generate(root, name, scale, seed, force=False, n_many=None, jobs=None):
    """Data set NAME: the mod repository at `scale`, or with n_many the many-small-files set (written by
    `jobs` processes, default one per core, at most 8)."""
    base = os.path.join(root, "data", name)
    src = os.path.join(base, "src")
    man_path = os.path.join(base, "manifest.json")
    if n_many:
        files = plan_many(n_many, seed)
        params = {"name": name, "many_files": n_many, "seed": seed, "generator": 1}
    else:
        files = plan(scale, seed)
        params = {"name": name, "scale": scale, "seed": seed, "generator": 1}
    if not force and os.path.exists(man_path):
        with open(man_path) as f:
            man = json.load(f)
        if man.get("params") == params and man.get("complete"):
            print(f"[gen] {name}: up to date ({man['total_bytes']/MIB:.0f} MiB, {man['n_files']} files)")
            return man
    if os.path.exists(src):
        import shutil
        shutil.rmtree(src)
    t0 = time.time()
    total = 0
    made = set()
    for rel, *_ in files:
        d = os.path.dirname(os.path.join(src, rel))
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
    jobs = min(jobs or os.cpu_count() or 1, 8) if n_many else 1
    if jobs > 1:  # every file has its own RNG stream: same bytes whatever the number of workers
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            step = 10000
            for done, n in enumerate(pool.imap_unordered(
                    _write_slice, [(src, files[i:i + step], seed) for i in range(0, len(files), step)])):
                total += n
                if done % 5 == 0:
                    print(f"[gen] {name}: {total/MIB:.0f} MiB written, {time.time()-t0:.0f}s", flush=True)
    for idx, (rel, size, kind, pr, pt) in enumerate(files if jobs <= 1 else ()):
        write_file(os.path.join(src, rel), rel, size, pr, pt, seed)
        total += size
        if idx % 2000 == 0:
            print(f"[gen] {name}: {idx}/{len(files)} files, {total/MIB:.0f} MiB, {time.time()-t0:.0f}s", flush=True)
    for dp, dn, fn in os.walk(src, topdown=False):
        os.utime(dp, (MTIME, MTIME))
    kinds = {}
    for rel, size, kind, pr, pt in files:
        k = kinds.setdefault(kind, {"n": 0, "bytes": 0})
        k["n"] += 1
        k["bytes"] += size
    man = {"params": params, "complete": True, "n_files": len(files), "total_bytes": total,
           "kinds": kinds, "n_dirs": len({os.path.dirname(f[0]) for f in files}), "large_files": [f[0] for f in files if f[2] == "large"],
           "gen_seconds": round(time.time() - t0, 1)}
    with open(man_path, "w") as f:
        json.dump(man, f, indent=1)
    print(f"[gen] {name}: done {total/MIB:.0f} MiB in {time.time()-t0:.0f}s")
    return man


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", choices=sorted(SETS) + ["many"])
    ap.add_argument("--files", type=int, default=MANY_FILES, help="--set many: number of files (default 500,000)")
    ap.add_argument("--scale", type=float)
    ap.add_argument("--name")
    ap.add_argument("--root", default=os.environ.get("HB_ROOT", "/tmp/hummel-bench"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, help="--set many: writer processes (default: one per core)")
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    if a.set == "many":
        generate(a.root, a.name or many_name(a.files), None, a.seed, a.force, n_many=a.files, jobs=a.jobs)
        return
    if a.set:
        scale, name = SETS[a.set], a.name or a.set
    elif a.scale:
        scale, name = a.scale, a.name or f"scale{a.scale}"
    else:
        ap.error("--set or --scale required")
    generate(a.root, name, scale, a.seed, a.force)


if __name__ == "__main__":
    sys.exit(main())
