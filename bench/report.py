#!/usr/bin/env python3
"""Render ROOT/results/<mode>.json (written by bench.py) into BENCHMARKS.md.

    report.py [--out BENCHMARKS.md] [--results ROOT/results] [--modes full,quick,many]
    report.py --section many [--out BENCHMARKS.md]   # only section (7b), replaced in place / inserted

Map of this file
  helpers ........... number formatting, wire bytes of a row, ratios, noise marks
  scen_table ........ one table per scenario: every tool (Hummel first), ratio columns Hummel/peer,
                      wire bytes, CPU, peak RSS, all runs
  glance ............ the one-table summary at the top
  rss_table ......... (7) peak RSS of Hummel's client, master and slaves beside the peers' clients
  limits/datasets ... machine limits, data sets, preparation cost
  many small files .. section (7b) from results/many.json (mode many), spliced between markers
  render ............ the document: how to read, machine and method, commands, sections
ROOT is $HB_ROOT or /tmp/hummel-bench.
"""
import argparse
import json
import os
import statistics

ROOT = os.environ.get("HB_ROOT", "/tmp/hummel-bench")

SCEN_TITLES = {
    "1_full_sync": "(1) Fresh full sync into an empty folder",
    "2_modify_1pct": "(2) 1% of one large file overwritten in the middle",
    "3_insert_1KiB": "(3) 1 KiB inserted in the middle of one large file (rest shifted)",
    "4_noop": "(4) No-op sync (nothing changed), cold and warm cache",
    "5_many_clients": "(5) Eight clients at once",
    "6_build": "(6) Server-side build of the whole set, cold, and rebuild with nothing changed",
}
WIRE_KEYS = ("rsync", "http", "hummel_master", "hummel_slaves")
NOISE = 0.20  # (max - min) / median above which a row is marked noisy


# ---------------------------------------------------------------- helpers
def mb(x, nd=1):
    if x is None:
        return "-"
    v = x / 1e6
    if v < 0.1 and x > 0:
        return f"{x/1e3:.1f} kB"
    return f"{v:,.{nd}f}"


def mbu(x, nd=2):
    """Bytes with a unit: '47.3 kB' or '1.23 MB'."""
    if x is None:
        return "-"
    return f"{x/1e3:.1f} kB" if x < 1e5 else f"{x/1e6:,.{nd}f} MB"


def f2(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


def wire(rec):
    """(server→client, client→server) bytes on the row's own server ports: Hummel's master + slaves for
    Hummel rows, rsync daemon / nginx for peers (idle Hummel heartbeats don't leak into peer rows)."""
    if rec is None:
        return None, None
    label = rec.get("label", "")
    if label.startswith("cp -r"):
        return None, None
    keys = WIRE_KEYS[2:] if is_hummel(label) else WIRE_KEYS[:2]
    s = sum(rec.get(f"median_{k}_s2c") or 0 for k in keys)
    c = sum(rec.get(f"median_{k}_c2s") or 0 for k in keys)
    return (s or None), (c or None)


def app_bytes(rec):
    if rec.get("median_hummel_bytes_downloaded") is not None:
        return rec["median_hummel_bytes_downloaded"]
    if rec.get("median_rsync_total_bytes_received") is not None:
        return rec["median_rsync_total_bytes_received"]
    return rec.get("median_http_bytes_sent") or None


def ratio(a, b):
    if not a or not b:
        return "-"
    r = a / b
    return f"{r:.2f}" if r >= 0.01 else f"{r:.3f}"


def is_hummel(label):
    return label.lower().startswith(("hummel", "1 hummel")) or " hummel " in label.lower()


def ref_class(label):
    low = label.lower()
    if "nothing changed" in low:  # rebuilds: casync's "store kept" row runs cold
        return "nothing changed, warm" if "warm" in low else "nothing changed, cold"
    for k in ("cold", "warm"):
        if k in low:
            return k
    for k in ("1 ", "8 "):
        if low.startswith(k):
            return k
    return ""


def ref_for(recs, label):
    """The Hummel row a row is compared against: same class (cold/warm, 1/8 clients, rebuild),
    else the first Hummel row."""
    hum = [(lab, r) for lab, r in recs.items() if is_hummel(lab) and r.get("median_s")]
    if not hum:
        return None
    cls = ref_class(label)
    for lab, r in hum:
        if cls and ref_class(lab) == cls:
            return r
    return hum[0][1]


def noisy(r):
    ts = [x["seconds"] for x in r["runs"] if x["rc"] == 0]
    suspect = [x for x in r["runs"] if x.get("foreign_cpu_s") is not None
               and x["foreign_cpu_s"] > 0.35 * x["seconds"] + 1.0]
    marks = ""
    if len(ts) >= 2 and statistics.median(ts) > 0.05 and (max(ts) - min(ts)) / statistics.median(ts) > NOISE:
        marks += " ~"
    if len(suspect) * 2 > len(r["runs"]):
        marks += " †"
    if len(ts) < 3:
        marks += " ¹"
    return marks


def ordered(recs):
    return dict(sorted(recs.items(), key=lambda kv: (not is_hummel(kv[0]),)))


def peak(r, key):
    vals = [x.get(key) for x in r["runs"] if x.get(key) is not None]
    return max(vals) if vals else None


# ---------------------------------------------------------------- tables
def scen_table(recs, prefix):
    noop = prefix == "4_noop"
    build = prefix == "6_build"
    hdr = ["tool", "median s", "Hummel/peer time", "MB/s", "wire s→c MB", "Hummel/peer wire", "wire c→s MB",
           "app MB", "client CPU s", "server CPU s", "client peak RSS MB", "Hummel master / slave RSS MB",
           "runs (s)"]
    if build:
        hdr[4:8] = []
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for label, r in ordered(recs).items():
        if not r.get("runs"):
            continue
        ref = ref_for(recs, label)
        runs = ", ".join(f"{x['seconds']:.2f}" + ("" if x["rc"] == 0 else "✗") for x in r["runs"])
        ws, wc = wire(r)
        ver = [x.get("verified") for x in r["runs"] if "verified" in x]
        name = ("**" + label + "**" if is_hummel(label) else label) + ("" if not ver or all(ver) else
                                                                      " **(verify failed)**") + noisy(r)
        steps = r.get("median_steps")
        if steps:
            name += " <br>(" + ", ".join(f"{k} {v:.2f}s" for k, v in steps.items()) + ")"
        rs = None
        if is_hummel(label):
            if build:
                rs = f"{f2(peak(r, 'build_master_rss_mb'), 0)} (build master)"
            else:
                rs = f"{f2(peak(r, 'master_rss_mb'), 0)} / {f2(peak(r, 'slave_rss_mb'), 0)}"
        rw = ratio(wire(ref)[0], ws) if ref is not None else "-"
        cells = [name, f2(r.get("median_s")), ratio(ref.get("median_s"), r.get("median_s")) if ref else "-",
                 "-" if noop else f2(r.get("mb_per_s"), 1), mb(ws), rw, mb(wc), mb(app_bytes(r)),
                 f2(r.get("median_client_cpu_s"), 1), f2(r.get("median_server_cpu_s"), 1),
                 f2(peak(r, "client_rss_mb"), 0), rs or "-", runs]
        if build:
            cells[4:8] = []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def hummel_details(recs):
    out = []
    for label, r in recs.items():
        if not is_hummel(label) or "median_hummel_bytes_downloaded" not in r:
            continue
        run0 = next((x for x in r["runs"] if x["rc"] == 0), {})
        out.append(f"- **{label}** (`sync --json`, median): bytes_downloaded {mbu(r.get('median_hummel_bytes_downloaded'))}, "
                   f"chunks_downloaded {int(r.get('median_hummel_chunks_downloaded') or 0):,}, "
                   f"bytes_reused {mbu(r.get('median_hummel_bytes_reused'))}, "
                   f"files_written {int(r.get('median_hummel_files_written') or 0):,}, "
                   f"files_hashed {int(r.get('median_hummel_files_hashed') or 0):,}, "
                   f"HTTP requests {int(r.get('median_hummel_requests') or 0):,}, "
                   f"duration_ms {int(r.get('median_hummel_duration_ms') or 0):,} (max over clients); "
                   f"wire s→c from master {mbu(r.get('median_hummel_master_s2c'))}, from slaves "
                   f"{mbu(r.get('median_hummel_slaves_s2c'))}; slaves used {run0.get('hummel_slaves_used', '-')}"
                   + (f"; no-op: {run0.get('hummel_no_op')}" if "hummel_no_op" in run0 else "") + ".")
    return "\n".join(out)


def cmd_block(recs):
    out = []
    for label, r in ordered(recs).items():
        out.append(f"# {label}" + (f"  ({r['note']})" if r.get("note") else ""))
        if r.get("prepare"):
            out.append(f"#   prepare (untimed): {r['prepare']}")
        out.append(r["cmd"])
    return "```sh\n" + "\n".join(out) + "\n```"


def first_hummel(recs):
    for lab, r in recs.items():
        if is_hummel(lab) and r.get("median_s"):
            return lab, r
    return None, None


def glance(res, set_name, many_set):
    sc = res["scenarios"]
    rows = ["| scenario | Hummel s | Hummel wire MB | rsync s (Hummel/rsync) | rsync wire MB | casync s (Hummel/casync) | "
            "fastest peer: s (Hummel/peer) |", "|---|---|---|---|---|---|---|"]

    def pick(recs, pred):
        c = [(lab, r) for lab, r in recs.items() if pred(lab) and r.get("median_s")]
        return c[0] if c else (None, None)

    spec = [("1_full_sync", "(1) full sync", set_name, lambda lab: lab == "rsync daemon",
             lambda lab: lab.startswith("casync")),
            ("2_modify_1pct", "(2) 1% modify", set_name, lambda lab: lab == "rsync daemon (whole tree)",
             lambda lab: lab.startswith("casync extract (whole")),
            ("3_insert_1KiB", "(3) 1 KiB insert", set_name, lambda lab: lab == "rsync daemon (whole tree)",
             lambda lab: lab.startswith("casync extract (whole")),
            ("4_noop", "(4) no-op, cold", set_name, lambda lab: lab == "rsync daemon, cold cache", lambda lab: False),
            ("4_noop", "(4) no-op, warm", set_name, lambda lab: lab == "rsync daemon, warm cache", lambda lab: False),
            ("5_many_clients", "(5) 8 clients", many_set, lambda lab: lab.startswith("8 concurrent rsync"),
             lambda lab: False),
            ("6_build", "(6) build, cold", set_name, lambda lab: False, lambda lab: lab.startswith("casync make, cold")),
            ("6_build", "(6) rebuild, nothing changed, cold", set_name,
             lambda lab: lab == "rsync daemon, cold cache", lambda lab: lab.startswith("casync make, nothing")),
            ("6_build", "(6) rebuild, nothing changed, warm", set_name,
             lambda lab: lab == "rsync daemon, warm cache", lambda lab: False)]
    for prefix, title, sname, is_rsync, is_casync in spec:
        recs = sc.get(f"{prefix}_{sname}")
        if not recs:
            continue
        cls = {"(4) no-op, cold": "cold", "(4) no-op, warm": "warm", "(5) 8 clients": "8 ",
               "(6) build, cold": "cold", "(6) rebuild, nothing changed, cold": "nothing changed, cold",
               "(6) rebuild, nothing changed, warm": "nothing changed, warm"}.get(title, "")
        hl, hr = pick(recs, lambda lab: is_hummel(lab) and (not cls or ref_class(lab) == cls))
        if not hr:
            continue
        # The rebuild's rsync is the no-op sync of the same cache state, from scenario (4).
        rsync_recs = sc.get(f"4_noop_{sname}", {}) if title.startswith("(6) rebuild") else recs
        _, rr = pick(rsync_recs, is_rsync)
        _, cr = pick(recs, is_casync)
        peers = [(lab, r) for lab, r in recs.items() if not is_hummel(lab) and r.get("median_s")
                 and "single" not in lab and "cp -r" not in lab and (not cls or ref_class(lab) == cls
                                                                           or prefix == "6_build" and cls == "cold"
                                                                           and "zstd" in lab)]
        fp = min(peers, key=lambda kv: kv[1]["median_s"]) if peers else (None, None)
        hw = wire(hr)[0]
        cells = [f"{title} — {sname}", f2(hr["median_s"]) + noisy(hr), mb(hw, 2) if prefix != "6_build" else "-",
                 f"{f2(rr['median_s'])} ({ratio(hr['median_s'], rr['median_s'])})" if rr else "-",
                 mb(wire(rr)[0], 2) if rr else "-",
                 f"{f2(cr['median_s'])} ({ratio(hr['median_s'], cr['median_s'])})" if cr else "-",
                 f"{fp[0]}: {f2(fp[1]['median_s'])} ({ratio(hr['median_s'], fp[1]['median_s'])})" if fp[0] else "-"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


HUMMEL_ROWS = [("1_full_sync", "(1) full sync", ""), ("2_modify_1pct", "(2) 1% modify", ""),
               ("3_insert_1KiB", "(3) 1 KiB insert", ""), ("4_noop", "(4) no-op, cold", "cold"),
               ("4_noop", "(4) no-op, warm", "warm"), ("5_many_clients", "(5) 1 client", "1 "),
               ("5_many_clients", "(5) 8 clients", "8 "), ("6_build", "(6) build, cold", "cold"),
               ("6_build", "(6) rebuild, nothing changed, cold", "nothing changed, cold"),
               ("6_build", "(6) rebuild, nothing changed, warm", "nothing changed, warm")]


def compare_table(runs):
    """Hummel's medians across invocations (e.g. two binaries): [(title, results), ...]."""
    hdr = ["Hummel row"] + [f"{t}: s / wire MB / client RSS MB / client CPU s ((6): build master RSS, CPU)"
                            for t, _ in runs]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for prefix, title, cls in HUMMEL_ROWS:
        cells = [title]
        for _, res in runs:
            mode = res["meta"]["mode"]
            sname = f"{prefix}_{'quick' if prefix == '5_many_clients' and mode == 'full' else mode}"
            recs = res["scenarios"].get(sname, {})
            r = next((x for lab, x in recs.items() if is_hummel(lab) and x.get("median_s")
                      and (not cls or ref_class(lab) == cls)), None)
            build = prefix == "6_build"
            cpu = r.get("median_server_cpu_s" if build else "median_client_cpu_s") if r else None
            cells.append("-" if r is None else
                         f"{f2(r['median_s'])}{noisy(r)} / {'-' if build else mb(wire(r)[0], 2)} / "
                         f"{f2(peak(r, 'build_master_rss_mb' if build else 'client_rss_mb'), 0)} / "
                         f"{f2(cpu, 1)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rss_table(res):
    """Peak RSS per scenario: Hummel client, master, slaves; peers' clients."""
    rows = ["| scenario | Hummel row | Hummel client | Hummel master | Hummel slave (max of 2) | rsync client | "
            "casync client | curl/aria2c + decompress client |", "|---|---|---|---|---|---|---|---|"]
    for sname, recs in res["scenarios"].items():
        prefix = next((p for p in SCEN_TITLES if sname.startswith(p)), None)
        if not prefix:
            continue
        for lab, r in recs.items():
            if not is_hummel(lab):
                continue
            cls = ref_class(lab)

            def peer(pred):
                v = [peak(x, "client_rss_mb") for lb, x in recs.items() if pred(lb) and (not cls or ref_class(lb) == cls)
                     and peak(x, "client_rss_mb") is not None]
                return f2(max(v), 0) if v else "-"
            build = prefix == "6_build"
            rows.append("| " + " | ".join([
                SCEN_TITLES[prefix].split(" ", 1)[0] + " " + sname[len(prefix) + 1:], lab,
                f2(peak(r, "client_rss_mb"), 0),
                f2(peak(r, "build_master_rss_mb" if build else "master_rss_mb"), 0) + (" (build master)" if build else ""),
                "-" if build else f2(peak(r, "slave_rss_mb"), 0),
                peer(lambda lb: lb.startswith(("rsync", "1 rsync", "8 concurrent rsync"))),
                peer(lambda lb: lb.startswith("casync")),
                peer(lambda lb: "curl" in lb or "aria2c" in lb)]) + " |")
    return "\n".join(rows)


def limits_table(res):
    L = res.get("limits", {})
    rows = []

    def add(name, val, cmd):
        rows.append(f"| {name} | {val} | `{cmd}` |")
    for k, title in (("disk_write_MBps", "Disk sequential write, 1 GiB, fdatasync"),
                     ("disk_read_cold_MBps", "Disk sequential read, 1 GiB, cold cache")):
        if k in L:
            add(title, f"{L[k]['value']:.0f} MB/s (runs s: " + ", ".join(f"{x:.2f}" for x in L[k]["runs_s"]) + ")", L[k]["cmd"])
    for n in (1, 4):
        k = f"loopback_tcp_{n}stream_MBps"
        if k in L:
            add(f"Loopback TCP, {n} stream{'s' if n > 1 else ''} (iperf3)", f"{L[k]['value']:,.0f} MB/s "
                f"({L[k]['value']*8/1000:.1f} Gbit/s; runs {L[k]['runs']})", L[k]["cmd"])
    for k, title in (("blake3_1thread_MBps", "BLAKE3, 1 thread (b3sum)"),
                     ("blake3_all_threads_MBps", "BLAKE3, all threads (b3sum)"),
                     ("sha256_1thread_MBps", "SHA-256, 1 thread (sha256sum)")):
        if k in L:
            add(title, f"{L[k]['value']:,} MB/s", L[k]["cmd"])
    for k in sorted(x for x in L if x.startswith("b3sum_tree_")):
        add("BLAKE3 over the whole data set tree, cold cache", f"{L[k]['value']:,.0f} MB/s (runs s: "
            + ", ".join(f"{x:.2f}" for x in L[k]["runs_s"]) + ")", L[k]["cmd"])
    for lvl, thr in ((1, 1), (3, 1), (9, 1), (3, 2)):
        k = f"zstd_{lvl}_T{thr}"
        if k in L:
            add(f"zstd -{lvl} ({thr} thread{'s' if thr > 1 else ''})",
                f"compress {L[k]['compress_MBps']:,.0f} MB/s, decompress {L[k]['decompress_MBps']:,.0f} MB/s, "
                f"ratio {L[k]['ratio']:.2f}", L[k]["cmd"])
    for k, title in (("gzip6_compress_MBps", "gzip -6 compress (1 thread)"),
                     ("gzip_decompress_MBps", "gzip decompress (1 thread)"),
                     ("pigz6_compress_2threads_MBps", "pigz -6 compress (2 threads)"),
                     ("pigz_decompress_MBps", "pigz decompress")):
        if k in L:
            add(title, f"{L[k]['value']:,.0f} MB/s (ratio {L[k]['ratio']:.2f})", L[k]["cmd"])
    if not rows:
        return "(not measured in this run: `--only` without `limits`, or smoke mode)"
    return "| limit | value | command |\n|---|---|---|\n" + "\n".join(rows)


def datasets_table(dss):
    lines = ["| set | files | total MB | large files | medium files | small files | per-file zstd -3 | "
             "per-file gzip -6 | casync store (3 variants) | generate s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, d in dss.items():
        k = d["kinds"]
        lines.append(f"| {name} | {d['n_files']:,} | {mb(d['total_bytes'], 0)} | "
                     f"{k['large']['n']} × {mb(d['large_file_bytes'], 0)} MB | {k['medium']['n']:,} ({mb(k['medium']['bytes'], 0)} MB) | "
                     f"{k['small']['n']:,} ({mb(k['small']['bytes'], 0)} MB) | "
                     f"{mb(d['zstd3_blob_bytes'], 0)} MB (×{d['ratio_zstd3_per_file']:.2f}) | "
                     f"{mb(d['gz6_blob_bytes'], 0)} MB (×{d['ratio_gz6_per_file']:.2f}) | "
                     f"{mb(d['casync_store_bytes_all_variants'], 0)} MB, {d['casync_chunks_all_variants']:,} chunks | "
                     f"{d.get('gen_seconds') or '-'} |")
    return "\n".join(lines)


def prep_table(dss):
    lines = ["| set | step | seconds | command |", "|---|---|---|---|"]
    for name, d in dss.items():
        for k, s in d["prep_seconds"].items():
            lines.append(f"| {name} | {k} | {s:.1f} | `{d['prep_cmds'][k]}` |")
    return "\n".join(lines)


def setup_table(res):
    lines = ["| set | step | build --wait s | until replicated on 2 slaves s | files reused | packs written |",
             "|---|---|---|---|---|---|"]
    for name, st in res.get("hummel_setup", {}).items():
        items = [("initial build (base), cold cache", st.get("initial"))]
        items += [(f"switch to '{x['variant']}'", x) for x in st.get("switches", [])]
        for title, x in items:
            if x:
                lines.append(f"| {name} | {title} | {x['build_s']:.2f} | {x['replicated_s']:.2f} | "
                             f"{x.get('files_reused')} | {x.get('packs_written')} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- (7b) many small files
MANY_SCENS = [("7b1_build", "6_build", "Build of the whole set, cold (fresh master, empty data folder)"),
              ("7b2_full_sync", "1_full_sync", "Fresh sync into an empty folder"),
              ("7b3_noop", "4_noop", "No-op sync (nothing changed), cold and warm cache"),
              ("7b4_one_file", "2_modify_1pct", "One small file rewritten, whole-tree sync")]


def many_marks(name):
    return (f"<!-- (7b) {name}: begin; written by bench/report.py --section {name} -->",
            f"<!-- (7b) {name}: end -->")


def many_glance(sc, name):
    rows = ["| row | Hummel s | rsync s | Hummel/rsync time | Hummel wire MB | rsync wire MB | Hummel/rsync wire | "
            "Hummel client RSS MB | rsync client RSS MB | Hummel master / slave RSS MB |", "|" + "---|" * 10]
    spec = [("7b1_build", "build, cold", "cold"), ("7b2_full_sync", "fresh sync", ""),
            ("7b3_noop", "no-op, cold", "cold"), ("7b3_noop", "no-op, warm", "warm"),
            ("7b4_one_file", "one file changed", "")]
    for prefix, title, cls in spec:
        recs = sc.get(f"{prefix}_{name}", {})

        def pick(hum):
            return next((r for lab, r in recs.items() if is_hummel(lab) == hum and r.get("median_s")
                         and (not cls or ref_class(lab) == cls)), None)
        h, r = pick(True), pick(False)
        if not h and not r:
            continue
        build = prefix == "7b1_build"
        hw, rw = (wire(h)[0] if h else None), (wire(r)[0] if r else None)
        srv = ("-" if not h else f"{f2(peak(h, 'build_master_rss_mb'), 0)} (build master)" if build
               else f"{f2(peak(h, 'master_rss_mb'), 0)} / {f2(peak(h, 'slave_rss_mb'), 0)}")
        rows.append("| " + " | ".join([
            title, (f2(h["median_s"]) + noisy(h)) if h else "-", (f2(r["median_s"]) + noisy(r)) if r else "-",
            ratio(h and h["median_s"], r and r["median_s"]), "-" if build else mb(hw, 2), "-" if build else mb(rw, 2),
            "-" if build else ratio(hw, rw), f2(peak(h, "client_rss_mb"), 0) if h else "-",
            f2(peak(r, "client_rss_mb"), 0) if r else "-", srv]) + " |")
    return "\n".join(rows)


def many_section(res, name):
    """Section (7b) from ROOT/results/<name>.json (bench/run.sh many), between markers so that
    `report.py --section` can replace it in an existing BENCHMARKS.md."""
    meta, sc = res["meta"], res["scenarios"]
    d = res.get("datasets", {}).get(name, {})
    begin, end = many_marks(name)
    o = [begin, f"## (7b) Many small files — {name} set, {d.get('n_files', 0):,} files\n"]
    o.append(f"Generated by `{meta.get('command')}` on {meta['date_utc']} UTC ({meta['hummel']}); medians of "
             f"{meta['runs']} run(s), {'cold' if meta['cold_cache'] else 'WARM'} cache unless the row says warm; "
             f"wire accounting: {meta.get('wire_accounting')}. Harness "
             f"{(meta.get('harness_seconds') or 0)/60:.1f} min, of which {(meta.get('waited_for_idle_seconds') or 0)/60:.1f} "
             f"min waiting for an idle machine, {meta.get('busy_retries', 0)} runs repeated. Raw per-run numbers: "
             f"`{meta.get('root', ROOT)}/results/{name}.json`. Same machine, method and columns as the sections "
             "above; Hummel master on 127.0.0.1:17370 with slaves on 17371-17372, build master on 17099, rsync "
             "daemon on 8873.\n")
    for rr in res.get("reruns", []):
        o.append(f"- later partial re-run: `{rr.get('command')}` at {rr['date_utc']} UTC")
    if res.get("reruns"):
        o.append("")
    if d:
        o.append(f"Data set (`{d.get('generator', 'gen_data.py --set many')}`, seed 1, generated in "
                 f"{d.get('gen_seconds') or '-'} s): {d['n_files']:,} files in {d.get('n_dirs') or 0:,} folders "
                 f"(`@mod_NNN/<2-5 levels>/fNNNNNN.ext`, unevenly filled), {mb(d['total_bytes'], 0)} MB "
                 f"({mb(d.get('disk_bytes'), 0)} MB on disk); sizes log-normal, median {d['size_median']:,} B, "
                 f"10%-90% {d['size_p10']:,}-{d['size_p90']:,} B, max {d['size_max']:,} B; content as the small "
                 "files of the mod set (text, binary records, random). One-file change: "
                 f"`{d['variant_file']}` rewritten ({d['variant_chg']['bytes']:,} B, same size, new content, mtime "
                 f"+1 day); rsync serves it from module `{name}_chg`, a hardlink farm of the set with that file "
                 "replaced; Hummel's master gets it by `ln -f` into its repository and `hummel build --wait` "
                 "(untimed).\n")
    o.append("- Fresh sync: DEST does not exist before a run; the previous run's tree is moved aside and all of "
             "them are deleted after the scenario (ext4 skips, at a cost, inodes freed less than 60-360 s ago, "
             "see scenario (5)). Verified with `b3sum --check` on the first run.")
    o.append("- No-op and one-file change start from the trees the fresh-sync rows left (Hummel: valid stat cache). "
             "Before each one-file run the changed file (and Hummel's `.hummel/state`, `index`) is restored "
             "from a private copy, untimed.")
    o.append("- Build: `hummel build --wait` on a master restarted with an empty data folder before each run "
             "(untimed); master peak RSS = its VmHWM. rsync has no build step.\n")
    o.append("### At a glance\n")
    o.append(many_glance(sc, name) + "\n")
    o.append("Ratios: Hummel / rsync, **below 1 means Hummel needed less**. Wire = server→client bytes on the "
             "server's ports (Hummel: master + 2 slaves).\n")
    for prefix, as_prefix, title in MANY_SCENS:
        recs = sc.get(f"{prefix}_{name}")
        if not recs:
            continue
        o.append(f"### (7b) {title}\n")
        o.append(scen_table(recs, as_prefix) + "\n")
        det = hummel_details(recs)
        if det:
            o.append(det + "\n")
        o.append("<details><summary>exact commands</summary>\n\n" + cmd_block(recs) + "\n\n</details>\n")
    if res.get("hummel_setup"):
        o.append("### (7b) Hummel setup (untimed)\n")
        o.append(setup_table(res) + "\n")
    o.append(end)
    return "\n".join(o) + "\n"


def splice_section(text, section, name):
    """Put `section` into the document `text`: in place of the old one (markers), else before
    '## Hummel setup', else at the end."""
    begin, end = many_marks(name)
    if begin in text and end in text:
        i, j = text.index(begin), text.index(end) + len(end)
        return text[:i] + section.rstrip("\n") + text[j:]
    k = text.find("\n## Hummel setup")
    if k >= 0:
        return text[:k + 1] + section + "\n" + text[k + 1:]
    return text.rstrip("\n") + "\n\n" + section


# ---------------------------------------------------------------- document
def bars_table(res):
    """Each bar of issue 3 with the figures of the rows of `res`: met / not met, computed, not typed.
    Rows re-measured by later `--only` invocations replace those of the full run in `res`."""
    sc = res["scenarios"]

    def row(scen, label):
        r = sc.get(scen, {}).get(label)
        return r if isinstance(r, dict) and r.get("median_s") else None

    def t(r):
        return r["median_s"] if r else None

    def w(r):
        return wire(r)[0] if r else None

    def cpu(r, k="median_server_cpu_s"):
        return r.get(k) if r else None

    def verdict(ok):
        return "-" if ok is None else ("met" if ok else "**not met**")

    def cmp(a, b, bar):
        return None if a is None or not b else a / b <= bar

    out = ["| bar | measured | |", "|---|---|---|"]
    S1, S2, S3, S4 = "1_full_sync_full", "2_modify_1pct_full", "3_insert_1KiB_full", "4_noop_full"
    S5, S6 = "5_many_clients_quick", "6_build_full"
    h1, rs, cp, rz = (row(S1, "hummel sync (master + 2 slaves)"), row(S1, "rsync daemon"),
                      row(S1, "cp -r (local floor)"), row(S1, "rsync daemon -z (zstd negotiated)"))
    if h1:
        out.append(f"| (1) fresh sync ≤ 0.8x rsync daemon, ≤ 1.1x `cp -r` | {f2(t(h1))} s: {ratio(t(h1), t(rs))}x "
                   f"rsync ({f2(t(rs))} s), {ratio(t(h1), t(cp))}x `cp -r` ({f2(t(cp))} s) | "
                   f"{verdict(cmp(t(h1), t(rs), 0.8) and cmp(t(h1), t(cp), 1.1))} |")
        out.append(f"| (1) wire ≤ rsync -z | {mb(w(h1), 0)} MB vs {mb(w(rz), 0)} MB ({ratio(w(h1), w(rz))}x) | "
                   f"{verdict(cmp(w(h1), w(rz), 1.0))} |")
        out.append(f"| (1) no server CPU per client on compression (checked as ≤ 0.5x rsync daemon's) | server CPU {f2(cpu(h1), 1)} s for "
                   f"{mb(w(h1), 0)} MB (packs are served as stored; rsync daemon: {f2(cpu(rs), 1)} s) | "
                   f"{verdict(cmp(cpu(h1), cpu(rs), 0.5))} |")
    h2, r2, c2 = (row(S2, "hummel sync (whole tree)"), row(S2, "rsync daemon (whole tree)"),
                  row(S2, "casync extract (single-file .caibx, old file as seed)"))
    if h2:
        out.append(f"| (2) wire ≤ casync (single file), time ≤ 0.3x rsync whole tree | {mbu(w(h2))} vs "
                   f"{mbu(w(c2))}; {f2(t(h2))} s vs {f2(t(r2))} s: {ratio(t(h2), t(r2))}x | "
                   f"{verdict(cmp(w(h2), w(c2), 1.0) and cmp(t(h2), t(r2), 0.3))} |")
    h3, c3 = row(S3, "hummel sync (whole tree)"), row(S3, "casync extract (single-file .caibx, old file as seed)")
    if h3:
        chunks = h3.get("median_hummel_chunks_downloaded")
        out.append(f"| (3) ≤ 3 chunks for the file, bytes ≤ casync | {chunks} chunk(s), {mbu(w(h3))} vs {mbu(w(c3))} | "
                   f"{verdict(chunks is not None and chunks <= 3 and cmp(w(h3), w(c3), 1.0))} |")
    hc, hw = row(S4, "hummel sync, cold cache"), row(S4, "hummel sync, warm cache")
    rc, rw = row(S4, "rsync daemon, cold cache"), row(S4, "rsync daemon, warm cache")
    if hc and hw:
        blobs = max(hc.get("median_hummel_bytes_downloaded") or 0, hw.get("median_hummel_bytes_downloaded") or 0)
        out.append(f"| (4) no-op ≤ 0.5x rsync, cold and warm; no blob bytes | {ratio(t(hc), t(rc))}x cold "
                   f"({f2(t(hc))} s), {ratio(t(hw), t(rw))}x warm ({f2(t(hw))} s); {mbu(w(hc))} on the wire, "
                   f"{blobs} blob bytes | {verdict(cmp(t(hc), t(rc), 0.5) and cmp(t(hw), t(rw), 0.5) and blobs == 0)} |")
    h8, r8 = row(S5, "8 concurrent hummel clients (aggregate)"), row(S5, "8 concurrent rsync clients (aggregate)")
    if h8 and r8:
        out.append(f"| (5) 8 clients (quick set): throughput ≥ rsync's, ≤ half its server CPU | {f2(t(h8))} s vs "
                   f"{f2(t(r8))} s ({ratio(t(h8), t(r8))}x time); server CPU {f2(cpu(h8))} s vs {f2(cpu(r8))} s "
                   f"({ratio(cpu(h8), cpu(r8))}x) | {verdict(cmp(t(h8), t(r8), 1.0) and cmp(cpu(h8), cpu(r8), 0.5))} |")
    hb, ca, zs = (row(S6, "hummel build, cold (empty master data dir)"), row(S6, "casync make, cold (empty store)"),
                  row(S6, "per-file zstd -3, 2 processes"))
    hrw, hrc = (row(S6, "hummel build, nothing changed (rebuild), warm cache"),
                row(S6, "hummel build, nothing changed (rebuild), cold cache"))
    if hb:
        out.append(f"| (6) build ≤ 0.5x `casync make`, ≤ 1.2x per-file `zstd -3` | {f2(t(hb))} s: "
                   f"{ratio(t(hb), t(ca))}x casync ({f2(t(ca))} s), {ratio(t(hb), t(zs))}x zstd ({f2(t(zs))} s) | "
                   f"{verdict(cmp(t(hb), t(ca), 0.5) and cmp(t(hb), t(zs), 1.2))} |")
    if hrw and hrc:
        out.append(f"| (6) rebuild with nothing changed ≤ 0.5x rsync's no-op | warm {f2(t(hrw))} s vs {f2(t(rw))} s "
                   f"({ratio(t(hrw), t(rw))}x); cold {f2(t(hrc))} s vs {f2(t(rc))} s ({ratio(t(hrc), t(rc))}x) | "
                   f"{verdict(cmp(t(hrw), t(rw), 0.5) and cmp(t(hrc), t(rc), 0.5))} |")
    hum = [r for scen in (S1, S2, S3, S4, S5) for lab, r in sc.get(scen, {}).items()
           if isinstance(r, dict) and is_hummel(lab) and r.get("runs")]
    crss = max((peak(r, "client_rss_mb") or 0 for r in hum), default=None)
    mrss = max((peak(r, "master_rss_mb") or 0 for r in hum), default=None)
    brss = max((peak(r, "build_master_rss_mb") or 0 for r in (hb, hrw, hrc) if r), default=None)
    if hum:
        out.append(f"| (7) client peak RSS < 150 MB | ≤ {crss:.0f} MB over the Hummel rows of (1)–(5) | "
                   f"{verdict(crss < 150)} |")
        out.append(f"| (7) master RSS < 200 MB | ≤ {mrss:.0f} MB serving (1)–(5); build master of (6): "
                   f"{brss or 0:.0f} MB | {verdict(mrss < 200 and (brss or 0) < 200)} |")
    return "\n".join(out)



def render(results, also=()):
    o = []
    many = {m: results.pop(m) for m in list(results) if m.startswith("many")}
    main_mode = next(m for m in ("full", "quick", "smoke") if m in results)
    res = results[main_mode]
    meta = res["meta"]
    set_name = main_mode
    many_set = "smoke" if main_mode == "smoke" else "quick"
    o.append("# Hummel benchmarks: Hummel beside rsync, zsync, casync, per-file blobs and `cp -r`\n")
    o.append(f"Generated by `{meta.get('command', 'bench/run.sh ' + main_mode)}` on {meta['date_utc']} UTC "
             f"({meta['hummel']}). Every tool ran on the same seeded data, on the same machine, in the same "
             "invocation, against servers on 127.0.0.1. Raw per-run numbers: "
             f"`{meta.get('root', ROOT)}/results/{main_mode}.json`; the harness is in `bench/` "
             "(see `bench/README.md`)."
             + (" Rendered with `python3 bench/report.py --also <results of another invocation>` to list Hummel's "
                "rows of that invocation too." if also else "") + "\n")
    o.append(f"## At a glance ({main_mode} set, medians of {meta['runs']} run(s), "
             f"{'cold' if meta['cold_cache'] else 'warm'} cache)\n")
    o.append(glance(res, set_name, many_set) + "\n")
    o.append("Ratios are Hummel time / peer time: **below 1 means Hummel was faster**. Wire = server→client bytes "
             "on lo. (2)/(3) compare whole-tree syncs; single-file peer rows are in the sections below.\n")
    if main_mode == "full":
        o.append("### Against the bars of issue 3 (computed from the rows of this document)\n")
        o.append(bars_table(res) + "\n")
    if also:
        o.append("### The same Hummel rows in other invocations\n")
        o.append("Separate invocations of the same harness on the same data (possibly another Hummel binary, see "
                 "the sha256); differences include run-to-run noise of this shared VM.\n")
        runs = [(f"{meta['date_utc']} UTC, {meta['hummel'].split('sha256 ')[-1].rstrip(')')} (this document)", res)]
        runs += [(f"{r['meta']['date_utc']} UTC, {r['meta']['hummel'].split('sha256 ')[-1].rstrip(')')}", r)
                 for r in also]
        o.append(compare_table(runs) + "\n")
    o.append("## How to read this\n")
    o.append("- **Time** = wall clock of the client command(s) plus a final `sync` (written data flushed), page "
             "cache dropped before every run (both sides: one machine). **median s** is the median of the runs, "
             "all of which are listed in **runs (s)**.")
    o.append("- **Hummel/peer time** and **Hummel/peer wire**: the Hummel row of the same kind (cold/warm, 1/8 "
             "clients, build/rebuild; otherwise the first Hummel row of the table) divided by this row. Below 1: "
             "Hummel needed less. Hummel rows compare against the first Hummel row.")
    o.append("- **wire** = bytes counted by iptables on `lo` per server port, TCP/IP headers included: for Hummel "
             "the master port (index, locate, revision, client report) plus the two slave ports (packs); for peers "
             "the rsync daemon or nginx port. **app MB** = what the tool itself reports: Hummel `sync --json` "
             "`bytes_downloaded` (compressed bytes from slaves), rsync `--stats` bytes received, nginx `$bytes_sent`.")
    o.append("- **client CPU s** = user+sys of the client process tree; **server CPU s** = user+sys of the server "
             "processes (Hummel: master + both slaves, or the build master in (6); peers: rsync daemon or nginx). "
             "**client peak RSS** = largest process of the client tree (`/usr/bin/time %M`); for 8 clients it is "
             "the largest single client. **Hummel master / slave RSS** = VmHWM of the master and the larger "
             "slave during the run (peak reset before each run via `/proc/PID/clear_refs`).")
    o.append("- Marks: `~` runs spread more than 20% around the median (noisy); `†` most runs had more than "
             "0.35 core-seconds per second of CPU not belonging to the harness (another user was busy); "
             "`¹` fewer than 3 successful runs. Treat differences below ~20% on marked rows as noise.")
    o.append("- Server and clients share one small VM (2 cores, one virtio disk), so server CPU competes with the "
             "client; absolute MB/s are low and disk-bound. Ratios matter more than absolute numbers.\n")

    o.append("## Machine and method\n")
    v = meta["versions"]
    o.append(f"- Machine: {meta['cpu']}, nproc {meta['nproc']}, {meta['mem_gib']} GiB RAM, kernel {meta['kernel']}, "
             f"disk {meta.get('disk', '-')} ({meta['fs']}), inside a VM (disk numbers include the host's caching).")
    o.append(f"- Date: {meta['date_utc']} UTC; load average at start {', '.join(f'{x:.2f}' for x in meta['load_at_start'])}.")
    cache = ("`sync; echo 3 > /proc/sys/vm/drop_caches` before every timed run unless the row says warm"
             if meta["cold_cache"] else "WARM page cache (smoke mode, `--warm`, or drop_caches not permitted)")
    o.append(f"- Cache: {cache}.")
    o.append("- Load guard: before every run the harness waits until the machine is idle (<30% CPU); a run during "
             "which CPU not accounted to the harness exceeded 0.35 core-seconds per second (+1 s) is repeated "
             "(up to 3 times).")
    o.append(f"- Wire accounting: {meta.get('wire_accounting')}. Servers: rsync daemon `rsync://127.0.0.1:8873`, "
             f"{meta.get('http_server')} on `http://127.0.0.1:8080` (2 workers, sendfile; per-file blobs, casync "
             "store, zsync files), Hummel master `127.0.0.1:17070` (quick set; full 17170) with slaves on the next "
             "two ports, build master (6) on 17099.")
    o.append("- Hummel topology: `hummel master --repo <working copy> --data … --listen 127.0.0.1:PORT` and 2 × "
             "`hummel slave --master URL --data … --listen 127.0.0.1:PORT+i`, default settings (replication 2, "
             "heartbeat 3 s), tokens via `HUMMEL_WRITE_TOKEN` / `HUMMEL_SLAVE_TOKEN`, fresh data folders in each "
             "invocation. The master's repository is a hardlink farm of the data set whose large file is swapped "
             "(`ln -f`, never written through) to the modified / inserted variant, then `hummel build --wait` and a "
             "wait until `hummel status --json` shows `replication.under_replicated == 0`, no pending assignment "
             "and both slaves live (untimed; durations in the Hummel setup table below).")
    lvl = meta.get("hummel_repack_level")
    if lvl:
        o.append(f"- Hummel repack: the cluster masters run with `--repack-level {lvl}` (off by default in Hummel): "
                 "after each build a background pass re-compresses the new packs at that level and publishes the "
                 "same tree again with the new chunk locations; the harness waits for that pass and its "
                 "replication (included in the setup durations). The build master of (6) runs without it.")
    for mode, r in results.items():
        m = r["meta"]
        if m.get("harness_seconds"):
            o.append(f"- Harness duration ({mode}): {m['harness_seconds']/60:.1f} min, of which "
                     f"{m.get('waited_for_idle_seconds', 0)/60:.1f} min waiting for an idle machine, "
                     f"{m.get('busy_retries', 0)} runs repeated; extras {'on' if m.get('extras') else 'off'}.")
        for rr in r.get("reruns", []):
            o.append(f"  - later partial re-run: `{rr.get('command')}` at {rr['date_utc']} UTC")
    o.append(f"- Versions: Hummel {meta['hummel']}; " + "; ".join(f"{k}: {val}" for k, val in v.items()) + "\n")

    o.append("## Exact commands\n")
    o.append("```sh\nbench/run.sh quick                 # this document: ~316 MB set, 3 runs per row, all sections\n"
             "bench/run.sh full                  # ~3.2 GB set for (1)-(4) and (6); quick set for (5); ~1.5 h\n"
             "bench/run.sh quick --only 2,3 --runs 5   # some sections again (results merged into the same JSON)\n"
             "bench/run.sh smoke                 # tiny set, 1 run, warm, no iptables: < 1 min, checks the harness\n"
             "bench/run.sh many                  # (7b) 500,000 small files, Hummel beside rsync: only section (7b)\n"
             "bench/run.sh quick --root /data/hb # another root (default /tmp/hummel-bench or $HB_ROOT)\n```\n")
    o.append("`run.sh` installs missing peers (apt: rsync zsync casync aria2 nginx-light zstd hyperfine iperf3 pigz "
             "curl iptables time; cargo: b3sum), copies `target/release/hummel` to `ROOT/bin/hummel` (the binary "
             "measured), runs `bench/bench.py`, then `bench/report.py`. Every row's exact command and untimed "
             "preparation step are listed under each table.\n")

    dss = {}
    for r in results.values():
        dss.update(r.get("datasets", {}))
    o.append("## Data sets\n")
    o.append("Deterministic (seed 1) synthetic \"mod repository\" (`bench/gen_data.py`): 4 large `.pbo` files, medium "
             "files (100 KiB–5 MiB, heavy-tailed), small files (1–20 KiB) in nested `@mod_NNN/...` folders; content "
             "mixed per 1 MiB segment of random bytes, Zipf-ish text and skewed binary records.\n")
    o.append(datasets_table(dss) + "\n")
    for name, d in dss.items():
        o.append(f"- {name}: modified file `{d['variant_file']}`; (2) overwrites {d['variant_mod']['bytes']:,} bytes at "
                 f"offset {d['variant_mod']['offset']:,}; (3) inserts {d['variant_ins']['bytes']:,} bytes at offset "
                 f"{d['variant_ins']['offset']:,}.")
    o.append("")

    notes = {
        "1_full_sync": "DEST does not exist before each run (`rm -rf`, untimed).",
        "2_modify_1pct": "Every tool starts from the base revision. Hummel: the client folder is a synced base copy "
                         "whose stat cache is valid; before each run the changed file and `.hummel/{state,index}` are "
                         "restored from a private copy (untimed): the stat cache no longer vouches for that file (new "
                         "inode and ctime), but it keeps the base revision's size and mtime, so Hummel takes its chunks "
                         "as the base revision's and verifies each as it copies it, reading it once (peers read their "
                         "basis file too). The second Hummel row starts from a fresh `cp -a` of the synced base folder: "
                         "new inodes and ctimes, so Hummel re-hashes every file the new revision keeps. Peers: hardlink copy of "
                         "a client-side copy, the changed file restored before each run. \"single file\" rows sync "
                         "only the changed large file; MB/s is relative to the tree or that file.",
        "4_noop": "Client tree identical to the server tree. Hummel: the synced base folder (valid stat cache).",
        "5_many_clients": "All clients start at the same time into empty folders; MB/s = aggregate logical bytes "
                          "delivered / wall time. Hummel's server CPU = master + both slaves.",
        "6_build": "Server-side preparation of the whole tree from a cold cache. Hummel: a separate master with no "
                   "slaves and an empty data folder (started untimed), timed `hummel build --wait` (walk, FastCDC, "
                   "BLAKE3, zstd, packs, SQLite); the rebuild runs on the same master with nothing changed. CPU of "
                   "Hummel is in the server column (the build master). casync: `casync make` into an empty / kept "
                   "store. zstd: per-file `zstd -3` on both cores (no content addressing, no index).",
    }
    notes["3_insert_1KiB"] = notes["2_modify_1pct"]
    order = ["full", "quick", "smoke"]
    for prefix, title in SCEN_TITLES.items():
        for mode in order:
            r = results.get(mode)
            if not r:
                continue
            for sname, recs in r["scenarios"].items():
                if not sname.startswith(prefix):
                    continue
                sset = sname[len(prefix) + 1:]
                d = dss.get(sset, {})
                o.append(f"## {title} — {sset} set ({mode} run)\n")
                line = f"Tree: {d['n_files']:,} files, {mb(d['total_bytes'], 0)} MB. " if d else ""
                o.append(line + notes.get(prefix, "") + "\n")
                o.append(scen_table(recs, prefix) + "\n")
                det = hummel_details(recs)
                if det:
                    o.append(det + "\n")
                if prefix == "6_build":
                    L = r.get("limits", {})
                    z = [f"zstd -{k.split('_')[1]} ({k.split('_T')[1]} thr): compress {L[k]['compress_MBps']:,.0f} MB/s"
                         for k in ("zstd_1_T1", "zstd_3_T1", "zstd_3_T2") if k in L]
                    if z:
                        o.append("Compression limits measured in the same run: " + "; ".join(z) + ".\n")
                o.append("<details><summary>exact commands</summary>\n\n" + cmd_block(recs) + "\n\n</details>\n")
    o.append("## (7) Peak RSS (MB = MiB of VmHWM / maxrss, largest over the runs)\n")
    o.append(rss_table(res) + "\n")
    for name, r in many.items():
        o.append(many_section(r, name))
    o.append("## Hummel setup (untimed, once per invocation)\n")
    o.append(setup_table(res) + "\n")
    o.append("## Machine limits\n")
    o.append(limits_table(res) + "\n")
    o.append("## Server-side preparation of the peers (once per data set, cached, cold cache, no load guard)\n")
    o.append(prep_table(dss) + "\n")
    return "\n".join(o) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "BENCHMARKS.md"))
    ap.add_argument("--results", default=f"{ROOT}/results", help="folder with smoke/quick/full .json")
    ap.add_argument("--modes", default="full,quick,many",
                    help="which results to render, first found of full/quick/smoke is the main one; many = (7b)")
    ap.add_argument("--section", metavar="NAME",
                    help="only section (7b) from results/NAME.json (many, or many-N): replaces that section of "
                         "--out between its markers, else goes before '## Hummel setup' (a new file if none)")
    ap.add_argument("--also", action="append", default=[],
                    help="results JSON of another invocation (e.g. an older binary) whose Hummel rows are listed "
                         "beside this one's; repeatable")
    a = ap.parse_args()
    if a.section:
        with open(f"{a.results}/{a.section}.json") as f:
            sec = many_section(json.load(f), a.section)
        text = open(a.out).read() if os.path.exists(a.out) else "# Hummel benchmarks\n\n"
        with open(a.out, "w") as f:
            f.write(splice_section(text, sec, a.section))
        print(f"wrote section (7b) {a.section} into {os.path.normpath(a.out)}")
        return
    results = {}
    for mode in a.modes.split(","):
        p = f"{a.results}/{mode}.json"
        if os.path.exists(p):
            with open(p) as f:
                results[mode] = json.load(f)
    if not results:
        raise SystemExit(f"no results in {a.results} for {a.modes}; run bench/run.sh first")
    # The hand-written section of the master under a fleet's load (`fleet_load`) is kept.
    kept = ""
    if os.path.exists(a.out):
        text = open(a.out).read()
        b, e = "<!-- fleet load: begin", "<!-- fleet load: end -->"
        if b in text and e in text:
            kept = "\n" + text[text.index(b):text.index(e) + len(e)] + "\n"
    with open(a.out, "w") as f:
        also = []
        for p in a.also:
            with open(p) as g:
                also.append(json.load(g))
        f.write(render(results, also) + kept)
    print(f"wrote {os.path.normpath(a.out)}")


if __name__ == "__main__":
    main()
