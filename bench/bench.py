#!/usr/bin/env python3
"""Hummel benchmark harness: Hummel and its peers on the same seeded data, in the same run.

    bench.py smoke|quick|full [--runs N] [--only limits,1,2,3,4,5,6] [--warm] [--extras] [--match RE]
    bench.py many [--files N] [--runs N] [--only build,sync,noop,change] [--warm] [--match RE]

Normally started by bench/run.sh (installs peers, copies the hummel binary, renders BENCHMARKS.md).
Environment: HB_ROOT (default /tmp/hummel-bench), HB_HUMMEL (the hummel binary to measure; run.sh
sets ROOT/bin/hummel, a copy taken at the start of the run), HB_NOWAIT=1 (no idle-wait, no retries),
HB_MAX_WAIT (s), HB_FOREIGN_MAX (cores).

Map of this file
  machine state ..... drop_caches, idle-wait (wait_quiet) and the foreign-CPU guard (guarded)
  wire accounting ... iptables chain HB_ACCT on lo, one rule pair per server port (ACCT_PORTS)
  servers ........... nginx (HTTP blobs, casync store, zsync), rsync daemon, process CPU/RSS helpers
  Hummel cluster .... HummelCluster: master + 2 slaves per data set, build --wait, replication wait,
                      variant switching of the master's working copy (base / mod / ins)
  measurement ....... Bench.measure: prepare (untimed) -> drop caches -> timed command + final sync,
                      wire bytes, client CPU + peak RSS (/usr/bin/time), server CPU + peak RSS (VmHWM)
  data set helpers .. b3sum manifests, verification of a synced tree
  preparation ....... prep_set: data set, per-file blobs, casync stores, variants, zsync files (cached)
  limits ............ disk, loopback TCP, BLAKE3, zstd/gzip speed on this machine
  scenarios ......... (1) full sync, (2) 1% modify, (3) 1 KiB insert, (4) no-op, (5) 8 clients,
                      (6) build / rebuild; (7) peak RSS is a column of every row
  many small files .. (7b), mode `many`: prep_many (set of gen_data.plan_many, one-file variant),
                      scen_many_files: build, fresh sync, no-op, one file changed; Hummel beside rsync
  main .............. argument parsing, order of sections, metadata

Everything (data, blobs, servers' state, client targets, results) lives under ROOT. Servers bind
127.0.0.1 only and are stopped by PID at exit. Wire bytes come from iptables counters on lo per
server port (if iptables works); app-level bytes from rsync --stats, the nginx access log and
`hummel sync --json`.
"""
import argparse
import atexit
import json
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_data  # noqa: E402

ROOT = os.environ.get("HB_ROOT", "/tmp/hummel-bench")
HUMMEL = os.environ.get("HB_HUMMEL") or f"{ROOT}/bin/hummel"
RUN = f"{ROOT}/run"
WWW = f"{ROOT}/www"
WORK = f"{ROOT}/work"
RES = f"{ROOT}/results"
RSYNC_PORT = 8873
HTTP_PORT = 8080
IPERF_PORT = 5201
HTTP = f"http://127.0.0.1:{HTTP_PORT}"
RSYNCD = f"rsync://127.0.0.1:{RSYNC_PORT}"
CHAIN = "HB_ACCT"
VARIANT_FILE_IDX = 1  # which large file gets modified (big_1)

STARTED = []  # (name, Popen)
LOG = []


def log(msg):
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    LOG.append(line)


def sh(cmd, check=True, capture=False, timeout=None):
    r = subprocess.run(cmd, shell=True, executable="/bin/bash", text=True,
                       stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.STDOUT if capture else None, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"command failed rc={r.returncode}: {cmd}\n{r.stdout or ''}")
    return r


def out(cmd):
    return sh(cmd, capture=True, check=False).stdout.strip()


# ---------------------------------------------------------------- machine state
CAN_DROP = None


def can_drop_caches():
    global CAN_DROP
    if CAN_DROP is None:
        try:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            CAN_DROP = True
        except OSError:
            CAN_DROP = False
    return CAN_DROP


def drop_caches():
    os.sync()
    if can_drop_caches():
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")


def cpu_busy(interval=1.0):
    def snap():
        with open("/proc/stat") as f:
            v = list(map(int, f.readline().split()[1:]))
        idle = v[3] + v[4]
        return sum(v), idle
    t0, i0 = snap()
    time.sleep(interval)
    t1, i1 = snap()
    return 0.0 if t1 == t0 else 100.0 * (1 - (i1 - i0) / (t1 - t0))


def wait_quiet(max_wait=None, threshold=30.0):
    """Wait until the machine (excluding us, which is idle now) is mostly idle."""
    if os.environ.get("HB_NOWAIT"):
        return None, 0
    max_wait = MAX_WAIT if max_wait is None else max_wait
    global WAITED
    t0 = time.time()
    busy = cpu_busy(0.5)
    last = 0
    while busy > threshold and time.time() - t0 < max_wait:
        if time.time() - last > 30:
            log(f"  machine busy ({busy:.0f}% CPU, load {os.getloadavg()[0]:.2f}); waiting")
            last = time.time()
        time.sleep(3)
        busy = cpu_busy(1.0)
    WAITED += time.time() - t0
    return round(busy, 1), round(time.time() - t0, 1)


MAX_WAIT = int(os.environ.get("HB_MAX_WAIT", "600"))
# CPU time not accounted to the harness (other users + kernel threads) per wall second above which a
# run is repeated; our own kernel-thread overhead (loopback softirq, writeback) is ~0.1-0.2.
FOREIGN_MAX = float(os.environ.get("HB_FOREIGN_MAX", "0.35"))
LABEL_FILTER = None
WAITED = 0.0
RETRIES = 0
USER_HZ = os.sysconf("SC_CLK_TCK")


def busy_cpu_s():
    with open("/proc/stat") as f:
        v = list(map(int, f.readline().split()[1:]))
    return (sum(v) - v[3] - v[4]) / USER_HZ


def own_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime + me.ru_utime + me.ru_stime + all_started_cpu()


def guarded(fn, what, tries=3):
    """Run fn() (after waiting for a quiet machine); retry when CPU not accounted to us
    (other processes, e.g. compilers) exceeded FOREIGN_MAX cores on average during the run."""
    for attempt in range(tries):
        wait_quiet()
        b0, o0, t0 = busy_cpu_s(), own_cpu_s(), time.perf_counter()
        res = fn()
        time.sleep(0.2)
        wall = time.perf_counter() - t0
        foreign = (busy_cpu_s() - b0) - (own_cpu_s() - o0)
        if foreign <= FOREIGN_MAX * wall + 1.0 or os.environ.get("HB_NOWAIT"):
            return res, round(foreign, 2), attempt
        log(f"  {what}: {foreign:.1f} CPU-s not ours during {wall:.1f}s run -> retry")
        global RETRIES
        RETRIES += 1
    return res, round(foreign, 2), tries


# ---------------------------------------------------------------- wire accounting
IPT_OK = None
# Hummel: one master + 2 slaves per data set on BASE, BASE+1, BASE+2; a separate master (no slaves)
# on BUILD_PORT for the build scenario.
HUMMEL_PORTS = {"smoke": 17270, "quick": 17070, "full": 17170, "many": 17370}
BUILD_PORT = 17099
ACCT_PORTS = [("rsync", RSYNC_PORT), ("http", HTTP_PORT), ("iperf", IPERF_PORT)]
for _base in HUMMEL_PORTS.values():
    ACCT_PORTS += [("hummel_master", _base), ("hummel_slaves", _base + 1), ("hummel_slaves", _base + 2)]


def acct_setup():
    global IPT_OK
    acct_teardown(quiet=True)
    try:
        sh(f"iptables -N {CHAIN}", capture=True)
        for _, p in ACCT_PORTS:
            sh(f"iptables -A {CHAIN} -p tcp --sport {p}", capture=True)
            sh(f"iptables -A {CHAIN} -p tcp --dport {p}", capture=True)
        sh(f"iptables -I OUTPUT 1 -o lo -j {CHAIN}", capture=True)
        IPT_OK = True
    except Exception as e:  # noqa: BLE001
        log(f"iptables accounting unavailable ({e}); wire bytes from /proc/net/dev lo only")
        IPT_OK = False


def acct_teardown(quiet=False):
    sh(f"iptables -D OUTPUT -o lo -j {CHAIN} 2>/dev/null; iptables -F {CHAIN} 2>/dev/null; "
       f"iptables -X {CHAIN} 2>/dev/null", check=False, capture=True)


def lo_bytes():
    with open("/proc/net/dev") as f:
        for line in f:
            if line.strip().startswith("lo:"):
                v = line.split(":", 1)[1].split()
                return int(v[8])  # tx bytes (== rx on lo)
    return 0


def acct_zero():
    if IPT_OK:
        sh(f"iptables -Z {CHAIN}", capture=True)
    return lo_bytes()


def acct_read(lo0):
    res = {"lo_bytes": lo_bytes() - lo0}
    if IPT_OK:
        txt = out(f"iptables -L {CHAIN} -n -v -x")
        rows = [l.split() for l in txt.splitlines()[2:] if l.strip()]
        vals = [int(r[1]) for r in rows]
        for i, (name, _) in enumerate(ACCT_PORTS):
            res[f"{name}_s2c"] = res.get(f"{name}_s2c", 0) + vals[2 * i]
            res[f"{name}_c2s"] = res.get(f"{name}_c2s", 0) + vals[2 * i + 1]
    return res


# ---------------------------------------------------------------- servers
def start_proc(name, argv, **kw):
    p = subprocess.Popen(argv, stdout=kw.pop("stdout", subprocess.DEVNULL),
                         stderr=kw.pop("stderr", subprocess.DEVNULL), **kw)
    STARTED.append((name, p))
    return p


def stop_proc(p, sig=signal.SIGTERM):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cleanup():
    for name, p in reversed(STARTED):
        try:
            stop_proc(p, signal.SIGQUIT if name == "nginx" else signal.SIGTERM)
        except Exception:  # noqa: BLE001
            pass
    STARTED.clear()
    acct_teardown()
    if CLUSTERS:  # packs of the fresh clusters: rebuilt by every invocation anyway
        sh(f"rm -rf {ROOT}/hummel", check=False)
        CLUSTERS.clear()


def wait_port(port, timeout=10):
    import socket
    t0 = time.time()
    while time.time() - t0 < timeout:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


HTTP_KIND = None
NGINX = None


def start_http():
    global HTTP_KIND, NGINX
    os.makedirs(RUN, exist_ok=True)
    conf = f"""
user root;
worker_processes 2;
pid {RUN}/nginx.pid;
error_log {RUN}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  log_format hb '$request_method $status $bytes_sent $request_uri';
  access_log {RUN}/access.log hb;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000; keepalive_timeout 60;
  types {{ }} default_type application/octet-stream;
  client_body_temp_path {RUN}/ngx_body; proxy_temp_path {RUN}/ngx_proxy;
  fastcgi_temp_path {RUN}/ngx_fcgi; uwsgi_temp_path {RUN}/ngx_uwsgi; scgi_temp_path {RUN}/ngx_scgi;
  server {{ listen 127.0.0.1:{HTTP_PORT}; root {WWW}; }}
}}
"""
    with open(f"{RUN}/nginx.conf", "w") as f:
        f.write(conf)
    open(f"{RUN}/access.log", "w").close()
    if shutil.which("nginx"):
        NGINX = start_proc("nginx", ["nginx", "-c", f"{RUN}/nginx.conf", "-g", "daemon off;"])
        HTTP_KIND = "nginx"
    else:
        NGINX = start_proc("http.server", [sys.executable, "-m", "http.server", str(HTTP_PORT),
                                           "--bind", "127.0.0.1", "-d", WWW],
                           stderr=open(f"{RUN}/access.log", "w"))
        HTTP_KIND = "python-http.server"
    wait_port(HTTP_PORT)


def http_log_offset():
    return os.path.getsize(f"{RUN}/access.log")


def http_log_bytes(off):
    """Sum of $bytes_sent (headers+body) and request count since offset."""
    n = tot = 0
    with open(f"{RUN}/access.log", "rb") as f:
        f.seek(off)
        for line in f:
            parts = line.split()
            if HTTP_KIND == "nginx" and len(parts) >= 3:
                n += 1
                tot += int(parts[2])
            elif HTTP_KIND != "nginx" and b'"GET' in line:
                n += 1
    return {"http_requests": n, "http_bytes_sent": tot if HTTP_KIND == "nginx" else None}


RSYNC = None


def start_rsyncd(modules):
    global RSYNC
    os.makedirs(RUN, exist_ok=True)
    lines = ["use chroot = no", "uid = root", "gid = root", "max connections = 0",
             f"log file = {RUN}/rsyncd.log", "transfer logging = no", ""]
    for name, path in modules.items():
        lines += [f"[{name}]", f"  path = {path}", "  read only = yes", ""]
    with open(f"{RUN}/rsyncd.conf", "w") as f:
        f.write("\n".join(lines))
    if RSYNC is not None:
        stop_proc(RSYNC)
        STARTED.remove(("rsyncd", RSYNC))
    RSYNC = start_proc("rsyncd", ["rsync", "--daemon", "--no-detach", f"--config={RUN}/rsyncd.conf",
                                  f"--port={RSYNC_PORT}", "--address=127.0.0.1"])
    wait_port(RSYNC_PORT)


def proc_tree_cpu(pid):
    """utime+stime (+ reaped children) of pid and its live children, seconds."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    todo = [pid]
    seen = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                v = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in v[11:15])
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return total / tck


SERVER_NAMES = ("nginx", "http.server", "rsyncd")


def server_cpu():
    """CPU seconds so far of every server process we started (peers' servers and Hummel's)."""
    s = 0.0
    for name, p in STARTED:
        if (name in SERVER_NAMES or name.startswith("hummel")) and p.poll() is None:
            s += proc_tree_cpu(p.pid)
    return s


def reset_hwm():
    """Reset the peak RSS (VmHWM) of Hummel's server processes (Linux >= 4.0, clear_refs 5)."""
    for name, p in STARTED:
        if name.startswith("hummel") and p.poll() is None:
            try:
                with open(f"/proc/{p.pid}/clear_refs", "w") as f:
                    f.write("5\n")
            except OSError:
                pass


def read_hwm():
    """{'master_rss_mb': .., 'slave_rss_mb': max over slaves} for live Hummel servers (VmHWM, MiB)."""
    res = {}
    for name, p in STARTED:
        if not name.startswith("hummel") or p.poll() is not None:
            continue
        try:
            with open(f"/proc/{p.pid}/status") as f:
                kb = int(next(l for l in f if l.startswith("VmHWM:")).split()[1])
        except (OSError, StopIteration):
            continue
        key = ("slave_rss_mb" if "slave" in name else "build_master_rss_mb" if "build" in name
               else "master_rss_mb")
        res[key] = max(res.get(key, 0), round(kb / 1024, 1))
    return res


# ---------------------------------------------------------------- Hummel cluster
def hummel_env():
    env = dict(os.environ)
    env.update(HUMMEL_WRITE_TOKEN=TOKENS["write"], HUMMEL_SLAVE_TOKEN=TOKENS["slave"], NO_COLOR="1")
    env.pop("HUMMEL_READ_TOKEN", None)
    return env


TOKENS = {"write": secrets.token_hex(24), "slave": secrets.token_hex(24)}


class HummelCluster:
    """One master (--repo = a hardlink farm of the data set, its large file swappable) and two slaves,
    all on 127.0.0.1. Started fresh (empty data dirs) once per harness invocation and data set."""

    def __init__(self, name, ds):
        self.name = name
        self.ds = ds
        self.port = HUMMEL_PORTS["many" if name.startswith("many") else name]
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = f"{ROOT}/hummel/{name}"
        self.repo = f"{ROOT}/data/{name}/hummel_repo"
        self.rel = ds["variant_file"]
        self.variant = None
        self.procs = []
        self.setup = {}

    def start(self):
        base = f"{ROOT}/data/{self.name}"
        # packs at level 3 and at the repack level, on the master and both slaves
        need_free(int(3.5 * self.ds["total_bytes"]), f"hummel cluster {self.name}")
        sh(f"rm -rf {self.dir} {self.repo} && mkdir -p {self.dir} && cp -al {base}/src {self.repo}")
        env = hummel_env()
        os.makedirs(RUN, exist_ok=True)
        log(f"hummel {self.name}: master {self.url} + 2 slaves")
        repack = ["--repack-level", str(REPACK_LEVEL)] if REPACK_LEVEL else []
        self.procs.append(start_proc("hummel-master", [HUMMEL, "master", "--repo", self.repo, "--data",
                                                       f"{self.dir}/master", "--listen", f"127.0.0.1:{self.port}"]
                                     + repack,
                                     env=env, stderr=open(f"{RUN}/hummel-{self.name}-master.log", "w")))
        wait_port(self.port)
        for i in (1, 2):
            self.procs.append(start_proc(f"hummel-slave{i}", [
                HUMMEL, "slave", "--master", self.url, "--data", f"{self.dir}/s{i}",
                "--listen", f"127.0.0.1:{self.port + i}"], env=env,
                stderr=open(f"{RUN}/hummel-{self.name}-slave{i}.log", "w")))
            wait_port(self.port + i)
        self.variant = "base"
        self.setup["initial"] = self.build_and_replicate(cold=True)
        log(f"hummel {self.name}: initial build {self.setup['initial']['build_s']:.1f}s, replicated after "
            f"{self.setup['initial']['replicated_s']:.1f}s")

    def status(self):
        r = subprocess.run([HUMMEL, "status", "--master", self.url, "--json"], capture_output=True, text=True,
                           env=hummel_env(), timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"hummel status failed: {r.stderr[-500:]}")
        return json.loads(r.stdout)

    def build_and_replicate(self, cold=False, timeout=1800):
        """hummel build --wait, then wait until every pack is on 2 live slaves. Untimed setup step
        (durations recorded)."""
        if cold:
            drop_caches()
        t0 = time.perf_counter()
        r = subprocess.run([HUMMEL, "build", "--master", self.url, "--wait", "--json"], capture_output=True,
                           text=True, env=hummel_env(), timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"hummel build failed: {r.stdout[-500:]} {r.stderr[-500:]}")
        build = json.loads(r.stdout.strip().splitlines()[-1])
        t_build = time.perf_counter() - t0
        self.wait_replicated(build["revision"], timeout)
        return {"build_s": round(t_build, 2), "replicated_s": round(time.perf_counter() - t0, 2),
                "revision": build["revision"], "files_reused": build.get("files_reused"),
                "packs_written": build.get("packs_written"), "bytes_total": build.get("bytes_total")}

    def wait_replicated(self, revision, timeout=1800):
        """Until the build's revision, or the repack of it, is on both slaves and no repack runs.
        A repack pass publishes revision+1 with the same files; a build with nothing to repack
        publishes nothing more, which shows as the repack idle for REPACK_QUIET_S."""
        t0 = time.time()
        ok_streak = 0
        idle_since = None
        st = None
        while time.time() - t0 < timeout:
            st = self.status()
            rep = st.get("replication", {})
            slaves = st.get("slaves", [])
            current = st.get("revision", {}).get("revision")
            rp = st.get("repack")
            if rp is None or not REPACK_LEVEL:
                settled = current == revision
            elif rp.get("running"):
                settled, idle_since = False, None
            else:
                idle_since = idle_since or time.time()
                settled = current > revision or (current == revision and
                                                  time.time() - idle_since >= REPACK_QUIET_S)
            ok = (settled and rep.get("under_replicated") == 0
                  and rep.get("unavailable") == 0 and len(slaves) == 2
                  and all(x.get("state") == "live" and not x.get("pending") for x in slaves))
            ok_streak = ok_streak + 1 if ok else 0
            if ok_streak >= 2:  # two polls in a row: no assignment still in flight
                return st
            time.sleep(0.25)
        raise RuntimeError(f"hummel {self.name}: replication of revision {revision} not done in {timeout}s: {st}")

    def set_variant(self, v):
        """Swap the large file of the master's working copy (ln -f: never writes through a hardlink) to
        the base / mod / ins version, then build and wait for replication."""
        if v == self.variant:
            return None
        base = f"{ROOT}/data/{self.name}"
        srcf = f"{base}/src/{self.rel}" if v == "base" else f"{base}/srv_{v}/{self.rel}"
        sh(f"ln -f {srcf} {self.repo}/{self.rel}")
        self.variant = v
        r = self.build_and_replicate()
        log(f"hummel {self.name}: master now at '{v}' (revision {r['revision']}, build {r['build_s']:.1f}s, "
            f"replicated {r['replicated_s']:.1f}s)")
        self.setup.setdefault("switches", []).append(dict(r, variant=v))
        return r

    def sync_cmd(self, dest, extra=""):
        return f"{HUMMEL} sync {self.url} {dest} --json{extra}"

    def discard(self):
        """Stop master and slaves and delete their data (packs at two levels on three servers:
        about 3.3x the data set). Its setup record stays in the results."""
        for p in self.procs:
            stop_proc(p)
            for t in [t for t in STARTED if t[1] is p]:
                STARTED.remove(t)
        self.procs.clear()
        sh(f"rm -rf {self.dir} {self.repo}", check=False)
        log(f"hummel {self.name}: stopped, data deleted")


CLUSTERS = {}


# The cluster masters re-compress each build's packs in the background (`--repack-level`, off by
# default in Hummel); the harness waits for that pass before measuring. 0 turns it off here too.
REPACK_LEVEL = int(os.environ.get("HB_REPACK_LEVEL", "13"))
REPACK_QUIET_S = 15


def need_free(nbytes, what):
    """Stop with a clear message before a step that would fill the disk half-way through."""
    st = os.statvfs(ROOT)
    free = st.f_bavail * st.f_frsize
    if free < nbytes:
        raise SystemExit(f"{what} needs about {nbytes/1e9:.1f} GB free under {ROOT}, "
                         f"{free/1e9:.1f} GB are free")
    log(f"{what}: {free/1e9:.1f} GB free, about {nbytes/1e9:.1f} GB needed")


def discard_cluster(name):
    c = CLUSTERS.get(name)
    if c:
        c.discard()
        B_SETUP[name] = c.setup
        del CLUSTERS[name]


B_SETUP = {}


def cluster(name, ds):
    if name not in CLUSTERS:
        c = HummelCluster(name, ds)
        c.start()
        CLUSTERS[name] = c
    return CLUSTERS[name]


def parse_hummel_json(text):
    """Sum the `hummel sync --json` objects in a command's output (one per client)."""
    objs = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and '"bytes_downloaded"' in line:
            try:
                objs.append(json.loads(line))
            except ValueError:
                pass
    if not objs:
        return {}
    res = {"hummel_clients": len(objs)}
    for k in ("bytes_downloaded", "chunks_downloaded", "bytes_reused", "chunks_reused", "files_written",
              "files_hashed", "files_unchanged", "requests", "duration_ms"):
        res[f"hummel_{k}"] = sum(o.get(k) or 0 for o in objs)
    res["hummel_duration_ms"] = max(o.get("duration_ms") or 0 for o in objs)
    res["hummel_no_op"] = all(o.get("no_op") for o in objs)
    res["hummel_slaves_used"] = max(len(o.get("slaves_used") or []) for o in objs)
    return res


def all_started_cpu():
    return sum(proc_tree_cpu(p.pid) for _, p in STARTED if p.poll() is None)


# ---------------------------------------------------------------- measurement
RSYNC_STAT_RE = {
    "rsync_total_bytes_received": r"Total bytes received: ([\d,]+)",
    "rsync_total_bytes_sent": r"Total bytes sent: ([\d,]+)",
    "rsync_literal": r"Literal data: ([\d,]+)",
    "rsync_matched": r"Matched data: ([\d,]+)",
}


def parse_rsync_stats(text):
    res = {}
    for k, rx in RSYNC_STAT_RE.items():
        vals = [int(x.replace(",", "")) for x in re.findall(rx, text)]
        if vals:
            res[k] = sum(vals)
    return res


def run_with_rss(cmd):
    """Run a shell command under /usr/bin/time; return (CompletedProcess, peak RSS KiB of the largest
    process in its tree, or None without GNU time)."""
    tf = f"{RUN}/time.out"
    if os.path.exists("/usr/bin/time"):
        argv = ["/usr/bin/time", "-f", "%M", "-o", tf, "/bin/bash", "-c", cmd]
    else:
        argv = ["/bin/bash", "-c", cmd]
    r = subprocess.run(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=3600)
    kb = None
    if argv[0] == "/usr/bin/time":
        try:
            with open(tf) as f:
                kb = int(f.read().split()[-1])
        except (OSError, ValueError, IndexError):
            pass
    return r, kb


class Bench:
    def __init__(self, mode, runs, cold):
        self.mode = mode
        self.runs = runs
        self.cold = cold and can_drop_caches()
        self.results = {}
        self.path = f"{RES}/{mode}.json"
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.results = json.load(f)
        self.results.setdefault("scenarios", {})
        self.results.setdefault("limits", {})
        self.results.setdefault("prep", {})
        self.results.setdefault("datasets", {})

    def save(self):
        os.makedirs(RES, exist_ok=True)
        self.results["log_tail"] = LOG[-400:]
        with open(self.path, "w") as f:
            json.dump(self.results, f, indent=1)

    def _timed(self, cmd, steps, parse):
        lo0 = acct_zero()
        hoff = http_log_offset() if NGINX else 0
        reset_hwm()
        scpu0 = server_cpu()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        step_times = {}
        rss = []
        if steps:
            outs = []
            for sname, scmd in steps:
                ts = time.perf_counter()
                r, kb = run_with_rss(scmd)
                step_times[sname] = round(time.perf_counter() - ts, 3)
                outs.append(r.stdout)
                rss.append(kb)
                if r.returncode != 0:
                    break
            output = "\n".join(outs)
        else:
            r, kb = run_with_rss(cmd)
            rss.append(kb)
            output = r.stdout
        os.sync()
        dt = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        time.sleep(0.2)
        run = {"seconds": round(dt, 3), "rc": r.returncode,
               "client_cpu_s": round((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime), 2),
               "server_cpu_s": round(server_cpu() - scpu0, 2)}
        if any(x is not None for x in rss):
            run["client_rss_mb"] = round(max(x for x in rss if x is not None) / 1024, 1)
        run.update(read_hwm())
        if step_times:
            run["steps"] = step_times
        run.update(acct_read(lo0))
        if NGINX:
            run.update(http_log_bytes(hoff))
        run.update(parse_rsync_stats(output))
        run.update(parse_hummel_json(output))
        if parse:
            run.update(parse(output))
        return run, output

    def measure(self, scenario, label, cmd, prepare=None, logical_bytes=None, runs=None,
                cold=None, verify=None, parse=None, note=None, show_cmd=None, steps=None, show_prepare=None):
        """Run cmd `runs` times; prepare (untimed) before each; sync included in timing."""
        runs = runs or self.runs
        cold = self.cold if cold is None else cold
        if LABEL_FILTER and not re.search(LABEL_FILTER, label):
            return self.results["scenarios"].get(scenario, {}).get(label, {})
        rec = {"label": label, "cmd": show_cmd or cmd, "prepare": show_prepare or prepare, "cold_cache": cold,
               "logical_bytes": logical_bytes, "note": note, "runs": []}
        log(f"{scenario} / {label}: {runs} runs")
        for i in range(runs):
            def one():
                if callable(prepare):
                    prepare()
                elif prepare:
                    sh(prepare)
                if cold:
                    drop_caches()
                else:
                    os.sync()
                return self._timed(cmd, steps, parse)
            (run, output), foreign, retries = guarded(one, label)
            run["foreign_cpu_s"] = foreign
            run["retries"] = retries
            if run["rc"] != 0:
                run["error"] = output[-2000:]
                log(f"  run {i+1}: FAILED rc={run['rc']}: {output[-600:]}")
            if i == 0 and verify and run["rc"] == 0:
                ok, detail = verify()
                run["verified"] = ok
                if not ok:
                    log(f"  VERIFY FAILED: {detail}")
                    run["verify_detail"] = detail
            rec["runs"].append(run)
            wire = sum(run.get(k, 0) for k in ("rsync_s2c", "http_s2c", "hummel_master_s2c", "hummel_slaves_s2c"))
            log(f"  run {i+1}: {run['seconds']:.2f}s wire_s2c={wire/1e6:.1f}MB cpu c/s={run['client_cpu_s']}/{run['server_cpu_s']}"
                f" foreign={foreign} rss={run.get('client_rss_mb')}MB"
                + (f" steps={run.get('steps')}" if steps else "")
                + (f" hummel: down={run['hummel_bytes_downloaded']/1e6:.2f}MB chunks={run['hummel_chunks_downloaded']}"
                   f" hashed={run.get('hummel_files_hashed')} written={run.get('hummel_files_written')}"
                   if "hummel_bytes_downloaded" in run else ""))
        ok_runs = [x for x in rec["runs"] if x["rc"] == 0]
        if ok_runs:
            rec["median_s"] = statistics.median(x["seconds"] for x in ok_runs)
            for k in ("rsync_s2c", "rsync_c2s", "http_s2c", "http_c2s", "lo_bytes", "http_bytes_sent",
                      "http_requests", "rsync_total_bytes_received", "rsync_total_bytes_sent",
                      "rsync_literal", "rsync_matched", "client_cpu_s", "server_cpu_s",
                      "hummel_master_s2c", "hummel_master_c2s", "hummel_slaves_s2c", "hummel_slaves_c2s",
                      "client_rss_mb", "master_rss_mb", "slave_rss_mb", "build_master_rss_mb", "hummel_bytes_downloaded",
                      "hummel_chunks_downloaded", "hummel_bytes_reused", "hummel_files_written",
                      "hummel_files_hashed", "hummel_requests", "hummel_duration_ms"):
                vals = [x[k] for x in ok_runs if x.get(k) is not None]
                if vals:
                    rec[f"median_{k}"] = statistics.median(vals)
            if steps:
                rec["median_steps"] = {s: statistics.median(x["steps"].get(s, 0) for x in ok_runs) for s, _ in steps}
            if logical_bytes:
                rec["mb_per_s"] = round(logical_bytes / rec["median_s"] / 1e6, 1)
        self.results["scenarios"].setdefault(scenario, {})[label] = rec
        self.save()
        return rec


# ---------------------------------------------------------------- data set helpers
def tree_bytes(path):
    """(files, bytes) under path, not counting Hummel's client state folder .hummel/."""
    n = tot = 0
    for dp, dn, fn in os.walk(path):
        if ".hummel" in dn:
            dn.remove(".hummel")
        for f in fn:
            n += 1
            tot += os.lstat(os.path.join(dp, f)).st_size
    return n, tot


def b3_manifest(src, dest_file):
    if not os.path.exists(dest_file) or os.path.getmtime(dest_file) < os.path.getmtime(src):
        sh(f"cd {src} && find . -type f -print0 | sort -z | xargs -0 b3sum > {dest_file}.tmp && mv {dest_file}.tmp {dest_file}")
    return dest_file


def make_verify(target, manifest, extra_check=None):
    def v():
        r = sh(f"cd {target} && b3sum --check --quiet {manifest}", check=False, capture=True)
        n_exp = sum(1 for _ in open(manifest))
        n_got, _ = tree_bytes(target)
        ok = r.returncode == 0 and n_got == n_exp
        return ok, (r.stdout[-500:] + f" files={n_got}/{n_exp}")
    return v


def variant_manifest(base_manifest, rel, new_file, dest):
    h = out(f"b3sum --no-names {new_file}")
    with open(base_manifest) as f, open(dest, "w") as g:
        for line in f:
            if line.rstrip("\n").endswith("  ./" + rel):
                line = f"{h}  ./{rel}\n"
            g.write(line)
    return dest


# ---------------------------------------------------------------- preparation
def prep_set(B, name, scale):
    """Generate data set + server-side artefacts (blobs, casync store, variants). Cached."""
    man = gen_data.generate(ROOT, name, scale, seed=1)
    base = f"{ROOT}/data/{name}"
    src = f"{base}/src"
    stamp = json.dumps(man["params"], sort_keys=True)
    marker = f"{base}/prep.json"
    prep = {}
    if os.path.exists(marker):
        with open(marker) as f:
            prep = json.load(f)
        if prep.get("stamp") != stamp:
            prep = {}
    big_rel = man["large_files"][VARIANT_FILE_IDX]
    w = f"{WWW}/{name}"

    def step(key, cmd, pre=None):
        if key in prep:
            return
        if pre:
            sh(pre)
        drop_caches()
        log(f"prep {name}: {key}")
        t0 = time.perf_counter()
        sh(cmd)
        os.sync()
        prep[key] = {"seconds": round(time.perf_counter() - t0, 2), "cmd": cmd}
        prep["stamp"] = stamp
        with open(marker, "w") as f:
            json.dump(prep, f, indent=1)

    b3_manifest(src, f"{base}/b3.manifest")
    # client-side copy of the original tree (seed/basis for incremental + no-op scenarios)
    step("client_base_copy", f"rm -rf {base}/cli_base && cp -a {src} {base}/cli_base")
    # per-file blobs ("Yoma way" gz, and zstd -3 like Hummel's blob store)
    step("blobs_gz6_pigz", f"rm -rf {w}/gz && mkdir -p {w} && cp -al {src} {w}/gz && "
         f"find {w}/gz -type f -print0 | xargs -0 -P2 -n500 pigz -f -6 -p1")
    step("blobs_zstd3", f"rm -rf {w}/zst && mkdir -p {w}/zst && cd {src} && "
         f"find . -type f -print0 | xargs -0 -P2 -n500 zstd -q -3 -T1 --output-dir-mirror {w}/zst")
    # casync store of the original tree (default: zstd chunks, 64 KiB avg chunk)
    step("casync_make_orig", f"rm -rf {w}/casync && mkdir -p {w}/casync && "
         f"casync make --store={w}/casync/store {w}/casync/orig.caidx {src}")
    # variants: server tree = hardlink farm of src with big_1 replaced
    for v in ("mod", "ins"):
        vt = f"{base}/srv_{v}"
        if f"variant_{v}" not in prep:
            log(f"prep {name}: variant {v}")
            sh(f"rm -rf {vt} && cp -al {src} {vt} && rm {vt}/{big_rel}")
            info = gen_data.large_variant(f"{src}/{big_rel}", f"{vt}/{big_rel}", v, seed=1)
            variant_manifest(f"{base}/b3.manifest", big_rel, f"{vt}/{big_rel}", f"{base}/b3.{v}.manifest")
            prep[f"variant_{v}"] = info
        step(f"casync_make_{v}", f"casync make --store={w}/casync/store {w}/casync/{v}.caidx {vt}")
        step(f"casync_make_{v}_blob", f"casync make --store={w}/casync/store {w}/casync/{v}-file.caibx {vt}/{big_rel}")
        step(f"zsyncmake_{v}", f"rm -rf {w}/zsync/{v} && mkdir -p {w}/zsync/{v} && "
             f"ln {vt}/{big_rel} {w}/zsync/{v}/big.pbo && cd {w}/zsync/{v} && zsyncmake -u big.pbo -o big.pbo.zsync big.pbo")
    # aria2c input lists
    os.makedirs(f"{WORK}/lists", exist_ok=True)
    with open(f"{base}/b3.manifest") as f:
        rels = [l.rstrip("\n").split("  ", 1)[1][2:] for l in f]
    for kind, ext in (("gz", ".gz"), ("zst", ".zst")):
        with open(f"{WORK}/lists/{name}-{kind}.txt", "w") as f:
            for rel in rels:
                f.write(f"{HTTP}/{name}/{kind}/{urllib.parse.quote(rel)}{ext}\n  out={rel}{ext}\n")
    with open(f"{WORK}/lists/{name}-zst.curl", "w") as f:
        for rel in rels:
            f.write(f'url = "{HTTP}/{name}/zst/{urllib.parse.quote(rel)}.zst"\noutput = "{rel}.zst"\n')
    n, tot = tree_bytes(src)
    ds = {"n_files": n, "total_bytes": tot, "kinds": man["kinds"], "large_file_bytes": man["kinds"]["large"]["bytes"] // 4,
          "gz6_blob_bytes": tree_bytes(f"{w}/gz")[1], "zstd3_blob_bytes": tree_bytes(f"{w}/zst")[1],
          "casync_store_bytes_all_variants": tree_bytes(f"{w}/casync/store")[1],
          "casync_chunks_all_variants": tree_bytes(f"{w}/casync/store")[0],
          "casync_orig_caidx_bytes": os.path.getsize(f"{w}/casync/orig.caidx"),
          "variant_mod": prep["variant_mod"], "variant_ins": prep["variant_ins"],
          "variant_file": big_rel, "prep_seconds": {k: v["seconds"] for k, v in prep.items() if isinstance(v, dict) and "seconds" in v},
          "prep_cmds": {k: v["cmd"] for k, v in prep.items() if isinstance(v, dict) and "cmd" in v},
          "gen_seconds": man.get("gen_seconds")}
    ds["ratio_zstd3_per_file"] = round(tot / ds["zstd3_blob_bytes"], 3)
    ds["ratio_gz6_per_file"] = round(tot / ds["gz6_blob_bytes"], 3)
    B.results["datasets"][name] = ds
    B.save()
    return ds


# ---------------------------------------------------------------- limits
def hyperfine(cmd, runs=3, warmup=1, prepare=None):
    j = f"{WORK}/hf.json"
    p = f"--prepare '{prepare}'" if prepare else ""
    sh(f"hyperfine -N --style none --runs {runs} --warmup {warmup} {p} --export-json {j} '{cmd}' >/dev/null 2>&1 || "
       f"hyperfine --style none --runs {runs} --warmup {warmup} {p} --export-json {j} '{cmd}' >/dev/null")
    with open(j) as f:
        r = json.load(f)["results"][0]
    return {"median_s": r["median"], "times": r["times"], "user": r.get("user"), "system": r.get("system")}


def run_limits(B, sample_set):
    L = B.results["limits"] = {}
    os.makedirs(WORK, exist_ok=True)
    ddsrc = f"{WORK}/dd-src.bin"
    GIB = 1 << 30
    if not os.path.exists(ddsrc) or os.path.getsize(ddsrc) != GIB:
        import random
        r = random.Random("dd")
        with open(ddsrc, "wb") as f:
            for _ in range(1024):
                f.write(r.randbytes(1 << 20))
    sh(f"cat {ddsrc} > /dev/null")
    log("limits: disk write/read")
    # disk sequential write (source in page cache) with fdatasync, and cold read
    rec = B.measure("limits", "disk_write_1GiB_fdatasync", f"dd if={ddsrc} of={WORK}/dd.bin bs=4M conv=fdatasync",
                    prepare=f"rm -f {WORK}/dd.bin; cat {ddsrc} >/dev/null", cold=False, logical_bytes=GIB)
    L["disk_write_MBps"] = {"value": rec["mb_per_s"], "cmd": rec["cmd"], "runs_s": [x["seconds"] for x in rec["runs"]]}
    rec = B.measure("limits", "disk_read_1GiB_cold", f"dd if={WORK}/dd.bin of=/dev/null bs=4M", cold=True,
                    logical_bytes=GIB)
    L["disk_read_cold_MBps"] = {"value": rec["mb_per_s"], "cmd": rec["cmd"] + " (after drop_caches)",
                                "runs_s": [x["seconds"] for x in rec["runs"]]}
    # iperf3 loopback
    log("limits: iperf3")
    ip = start_proc("iperf3", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(IPERF_PORT)])
    wait_port(IPERF_PORT)
    for streams in (1, 4):
        vals = []
        for _ in range(3):
            j, _, _ = guarded(lambda: json.loads(out(f"iperf3 -c 127.0.0.1 -p {IPERF_PORT} -t 4 -O 1 -P {streams} -J")),
                              f"iperf3 -P {streams}")
            vals.append(j["end"]["sum_received"]["bits_per_second"] / 8 / 1e6)
        L[f"loopback_tcp_{streams}stream_MBps"] = {"value": round(statistics.median(vals), 0),
                                                  "cmd": f"iperf3 -c 127.0.0.1 -t 4 -O 1 -P {streams}",
                                                  "runs": [round(v) for v in vals]}
    stop_proc(ip)
    STARTED.remove(("iperf3", ip))
    # hashing (1 GiB, page cache warm)
    log("limits: hashing")
    for label, cmd in (("blake3_1thread", f"b3sum --num-threads 1 {ddsrc}"),
                       ("blake3_all_threads", f"b3sum {ddsrc}"),
                       ("sha256_1thread", f"sha256sum {ddsrc}")):
        h, _, _ = guarded(lambda: hyperfine(cmd), label)
        L[f"{label}_MBps"] = {"value": round(GIB / h["median_s"] / 1e6), "cmd": cmd + "  (1 GiB, warm cache; hyperfine median)",
                              "runs_s": [round(t, 3) for t in h["times"]]}
    # compression: sample = 24 MiB from each large file + 32 MiB of medium/small files of the data set
    src = f"{ROOT}/data/{sample_set}/src"
    sample = f"{WORK}/sample-{sample_set}.bin"
    if not os.path.exists(sample):
        with open(f"{ROOT}/data/{sample_set}/manifest.json") as f:
            man = json.load(f)
        with open(sample, "wb") as g:
            for rel in man["large_files"]:
                with open(f"{src}/{rel}", "rb") as fh:
                    g.write(fh.read(24 << 20))
            left = 32 << 20
            for dp, dn, fn in sorted(os.walk(src)):
                if "@big_" in dp:
                    continue
                for fname in sorted(fn):
                    with open(os.path.join(dp, fname), "rb") as fh:
                        d = fh.read(left)
                    g.write(d)
                    left -= len(d)
                    if left <= 0:
                        break
                if left <= 0:
                    break
    ssize = os.path.getsize(sample)
    sh(f"cat {sample} > /dev/null")
    log("limits: zstd -b")
    for lvl, thr in ((1, 1), (3, 1), (9, 1), (3, 2)):
        o, _, _ = guarded(lambda: out(f"zstd -b{lvl} -e{lvl} -i3 -T{thr} {sample} 2>&1").replace("\r", "\n"),
                          f"zstd -b{lvl}")
        m = re.findall(r"->\s*(\d+)\s*\(x?([\d.]+)\),\s*([\d.]+)\s*MB/s\s*,\s*([\d.]+)\s*MB/s", o)
        if m:
            csize, ratio, cs, ds = m[-1]
            L[f"zstd_{lvl}_T{thr}"] = {"ratio": float(ratio), "compress_MBps": float(cs), "decompress_MBps": float(ds),
                                        "cmd": f"zstd -b{lvl} -e{lvl} -i3 -T{thr} sample ({ssize>>20} MiB)"}
    log("limits: gzip/pigz")
    sh(f"gzip -6 -c {sample} > {WORK}/sample.gz")
    gz_ratio = ssize / os.path.getsize(f"{WORK}/sample.gz")
    for label, cmd in (("gzip6_compress", f"gzip -6 -c {sample}"),
                       ("gzip_decompress", f"gzip -d -c {WORK}/sample.gz"),
                       ("pigz6_compress_2threads", f"pigz -6 -p 2 -c {sample}"),
                       ("pigz_decompress", f"pigz -d -c {WORK}/sample.gz")):
        h, _, _ = guarded(lambda: hyperfine(cmd, runs=3, warmup=0), label)
        L[f"{label}_MBps"] = {"value": round(ssize / h["median_s"] / 1e6, 1), "ratio": round(gz_ratio, 3),
                              "cmd": cmd + f"  (sample {ssize>>20} MiB, output to /dev/null; hyperfine median)",
                              "runs_s": [round(t, 3) for t in h["times"]]}
    # b3sum over the whole data set tree, cold cache (verification cost floor)
    n, tot = tree_bytes(src)
    rec = B.measure("limits", f"b3sum_tree_{sample_set}_cold",
                    f"cd {src} && find . -type f -print0 | xargs -0 b3sum > /dev/null", cold=True, logical_bytes=tot)
    L[f"b3sum_tree_{sample_set}_cold_MBps"] = {"value": rec["mb_per_s"], "cmd": rec["cmd"] + " (after drop_caches)",
                                               "runs_s": [x["seconds"] for x in rec["runs"]]}
    B.save()


# ---------------------------------------------------------------- scenarios
ARIA = ("aria2c -j 16 --console-log-level=error --summary-interval=0 --download-result=hide "
        "--auto-file-renaming=false --allow-overwrite=true --file-allocation=none --deferred-input=true")


def hummel_base_dest(C):
    """WORK/<set>-hbase: a client folder synced (untimed) to the master's base revision, so its stat
    cache is valid. Scenario (1) leaves its last DEST there; otherwise this syncs it."""
    C.set_variant("base")
    hb = f"{WORK}/{C.name}-hbase"
    r = sh(C.sync_cmd(hb), capture=True)
    info = parse_hummel_json(r.stdout)
    if info.get("hummel_files_written") or info.get("hummel_files_hashed"):
        log(f"  (untimed) base client folder synced: {info}")
    return hb


def scen_full_sync(B, name, ds, include_zlib):
    base = f"{ROOT}/data/{name}"
    src = f"{base}/src"
    dst = f"{WORK}/{name}-dst"
    man = f"{base}/b3.manifest"
    prep = f"rm -rf {dst}"
    tot = ds["total_bytes"]
    v = make_verify(dst, man)
    S = f"1_full_sync_{name}"
    C = cluster(name, ds)
    C.set_variant("base")
    hdst = f"{WORK}/{name}-hdst"
    B.measure(S, "hummel sync (master + 2 slaves)", C.sync_cmd(hdst), prepare=f"rm -rf {hdst}",
              logical_bytes=tot, verify=make_verify(hdst, man))
    if os.path.isdir(f"{hdst}/.hummel"):  # keep the last synced copy as the base client folder
        sh(f"rm -rf {WORK}/{name}-hbase && mv {hdst} {WORK}/{name}-hbase")
    B.measure(S, "cp -r (local floor)", f"cp -r {src} {dst}", prepare=prep, logical_bytes=tot, verify=v)
    B.measure(S, "rsync daemon", f"rsync -a --delete --stats {RSYNCD}/{name}/ {dst}/",
              prepare=prep, logical_bytes=tot, verify=v)
    B.measure(S, "rsync daemon -z (zstd negotiated)", f"rsync -a -z --delete --stats {RSYNCD}/{name}/ {dst}/",
              prepare=prep, logical_bytes=tot, verify=v)
    if include_zlib:
        B.measure(S, "rsync daemon -z --zc=zlib", f"rsync -a -z --zc=zlib --delete --stats {RSYNCD}/{name}/ {dst}/",
                  prepare=prep, logical_bytes=tot, verify=v)
    B.measure(S, "casync extract (HTTP store)",
              f"casync extract --store={HTTP}/{name}/casync/store {HTTP}/{name}/casync/orig.caidx {dst}",
              prepare=prep, logical_bytes=tot, verify=v)
    gz_steps = [("download", f"mkdir -p {dst} && {ARIA} -i {WORK}/lists/{name}-gz.txt --dir={dst}"),
                ("decompress", f"find {dst} -type f -name '*.gz' -print0 | xargs -0 -P2 -n500 pigz -d -p1")]
    B.measure(S, "aria2c per-file .gz blobs + pigz -d (Yoma way)", None, steps=gz_steps,
              show_cmd=" && ".join(c for _, c in gz_steps), prepare=prep, logical_bytes=tot, verify=v)
    zst_steps = [("download", f"mkdir -p {dst} && {ARIA} -i {WORK}/lists/{name}-zst.txt --dir={dst}"),
                 ("decompress", f"find {dst} -type f -name '*.zst' -print0 | xargs -0 -P2 -n500 zstd -q -d --rm")]
    if include_zlib:  # not in full: same as the .gz row with zstd blobs; the curl row below covers .zst
        B.measure(S, "aria2c per-file .zst blobs + zstd -d", None, steps=zst_steps,
                  show_cmd=" && ".join(c for _, c in zst_steps), prepare=prep, logical_bytes=tot, verify=v)
    curl_steps = [("download", f"mkdir -p {dst} && cd {dst} && curl -s --parallel --parallel-max 16 --create-dirs "
                               f"-K {WORK}/lists/{name}-zst.curl"),
                  ("decompress", f"find {dst} -type f -name '*.zst' -print0 | xargs -0 -P2 -n500 zstd -q -d --rm")]
    B.measure(S, "curl --parallel per-file .zst blobs + zstd -d", None, steps=curl_steps,
              show_cmd=" && ".join(c for _, c in curl_steps), prepare=prep, logical_bytes=tot, verify=v)


def scen_delta(B, name, ds, v, extras=True):
    """v = 'mod' (overwrite 1% in the middle) or 'ins' (insert 1 KiB in the middle)."""
    base = f"{ROOT}/data/{name}"
    dst = f"{WORK}/{name}-dst"
    rel = ds["variant_file"]
    man = f"{base}/b3.{v}.manifest"
    S = f"{'2_modify_1pct' if v == 'mod' else '3_insert_1KiB'}_{name}"
    fsize = os.path.getsize(f"{base}/srv_{v}/{rel}")
    tot = ds["total_bytes"]
    exp_hash = out(f"b3sum --no-names {base}/srv_{v}/{rel}")
    base_hash = out(f"b3sum --no-names {base}/src/{rel}")

    # --- Hummel. The client folder holds the base revision with a valid stat cache: a cp -a of the
    # synced base folder, re-synced untimed (new inodes -> every file re-hashed once, state saved).
    # Before every run only what a sync changes is restored from a private copy (not hardlinks): the
    # large file and .hummel/{state,index}. The stat cache no longer vouches for the restored file (new
    # inode and ctime); it keeps the base revision's size and mtime, so Hummel takes its chunks as the
    # base revision's and verifies each as it copies it: the file is read once per run (as
    # rsync/zsync/casync read their basis file).
    C = cluster(name, ds)
    hb = hummel_base_dest(C)
    hd, hd2, save = f"{WORK}/{name}-hdelta", f"{WORK}/{name}-hdelta2", f"{WORK}/{name}-hsave"
    sh(f"rm -rf {hd} {hd2} {save} && cp -a {hb} {hd} && mkdir -p {save}")
    sh(C.sync_cmd(hd), capture=True)
    sh(f"cp -a {hd}/{rel} {save}/big && cp -a {hd}/.hummel/state {hd}/.hummel/index {save}/")
    C.set_variant(v)
    restore = (f"rm -f {hd}/{rel} && cp -a {save}/big {hd}/{rel} && "
               f"cp -a {save}/state {save}/index {hd}/.hummel/")
    B.measure(S, "hummel sync (whole tree)", C.sync_cmd(hd), prepare=restore, logical_bytes=tot,
              verify=make_verify(hd, man),
              note="client folder = synced base revision; before each run the large file and "
                   ".hummel/{state,index} are restored from a private copy (untimed)")
    B.measure(S, "hummel sync (whole tree, DEST = fresh cp -a: every file re-hashed)", C.sync_cmd(hd2),
              prepare=f"rm -rf {hd2} && cp -a {hb} {hd2}", logical_bytes=tot, verify=make_verify(hd2, man),
              note="cp -a gives every file a new inode and ctime, so the stat cache matches nothing")
    if out(f"b3sum --no-names {save}/big") != base_hash:
        raise RuntimeError(f"Hummel's saved base copy of {rel} changed; results of {S} invalid")
    sh(f"rm -rf {hd2}")

    # --- peers. Client's old tree: hardlink copy of the client's own copy, made once per scenario;
    # before every run only the changed file is restored (every tool below changes nothing else).
    sh(f"rm -rf {dst} && cp -al {base}/cli_base {dst}")
    prep = f"rm -f {dst}/{rel} {dst}/{rel}.new && ln {base}/cli_base/{rel} {dst}/{rel}"
    vt = make_verify(dst, man)

    def vfile(path):
        def f():
            h = out(f"b3sum --no-names {path}")
            return h == exp_hash, f"{h} vs {exp_hash}"
        return f
    B.measure(S, "rsync daemon (whole tree)", f"rsync -a --delete --stats {RSYNCD}/{name}_{v}/ {dst}/",
              prepare=prep, logical_bytes=tot, verify=vt)
    if extras:
        B.measure(S, "rsync daemon -z (whole tree)", f"rsync -a -z --delete --stats {RSYNCD}/{name}_{v}/ {dst}/",
                  prepare=prep, logical_bytes=tot, verify=vt)
    B.measure(S, "casync extract (whole tree, in place: old tree is seed)",
              f"casync extract --store={HTTP}/{name}/casync/store {HTTP}/{name}/casync/{v}.caidx {dst}",
              prepare=prep, logical_bytes=tot, verify=vt)
    B.measure(S, "rsync daemon (single file)", f"rsync -a --stats {RSYNCD}/{name}_{v}/{rel} {dst}/{rel}",
              prepare=prep, logical_bytes=fsize, verify=vfile(f"{dst}/{rel}"))
    B.measure(S, "zsync (single file, old file as seed)",
              f"cd {dst}/{os.path.dirname(rel)} && zsync -q -i {os.path.basename(rel)} -o {os.path.basename(rel)}.new "
              f"{HTTP}/{name}/zsync/{v}/big.pbo.zsync && mv {os.path.basename(rel)}.new {os.path.basename(rel)}",
              prepare=prep, logical_bytes=fsize, verify=vfile(f"{dst}/{rel}"))
    B.measure(S, "casync extract (single-file .caibx, old file as seed)",
              f"casync extract --store={HTTP}/{name}/casync/store --seed={dst}/{rel} {HTTP}/{name}/casync/{v}-file.caibx "
              f"{dst}/{rel}.new && mv {dst}/{rel}.new {dst}/{rel}",
              prepare=prep, logical_bytes=fsize, verify=vfile(f"{dst}/{rel}"))
    # the client's pristine copy must not have been modified through the hardlinks
    if out(f"b3sum --no-names {base}/cli_base/{rel}") != base_hash:
        raise RuntimeError(f"client base copy of {rel} was modified in place; results of {S} invalid")


def scen_noop(B, name, ds, extras=True):
    base = f"{ROOT}/data/{name}"
    dst = f"{WORK}/{name}-dst"
    prep = f"rm -rf {dst} && cp -al {base}/cli_base {dst}"
    S = f"4_noop_{name}"
    C = cluster(name, ds)
    hb = hummel_base_dest(C)
    B.measure(S, "hummel sync, cold cache", C.sync_cmd(hb), logical_bytes=ds["total_bytes"], cold=True)
    B.measure(S, "hummel sync, warm cache", C.sync_cmd(hb), logical_bytes=ds["total_bytes"], cold=False)
    sh(prep)
    B.measure(S, "rsync daemon, cold cache", f"rsync -a --delete --stats {RSYNCD}/{name}/ {dst}/",
              logical_bytes=ds["total_bytes"], cold=True)
    B.measure(S, "rsync daemon, warm cache", f"rsync -a --delete --stats {RSYNCD}/{name}/ {dst}/",
              logical_bytes=ds["total_bytes"], cold=False)
    if extras:
        B.measure(S, "rsync daemon -c (full checksum), cold cache", f"rsync -a -c --delete --stats {RSYNCD}/{name}/ {dst}/",
                  logical_bytes=ds["total_bytes"], cold=True)


def parallel_cmd(cmds):
    """Shell command running cmds at once; fails if any of them fails."""
    return " ".join(f"{c} &" for c in cmds) + " rc=0; for j in $(jobs -p); do wait $j || rc=1; done; exit $rc"


def scen_many(B, name, ds, n=8, extras=True):
    dst = f"{WORK}/{name}-mc"
    man = f"{ROOT}/data/{name}/b3.manifest"
    S = f"5_many_clients_{name}"
    C = cluster(name, ds)
    C.set_variant("base")

    # Without a journal (as on the benchmark machine), ext4 will not reuse an inode freed less
    # than 60 s ago, or 360 s while its inode table block is dirty (fs/ext4/ialloc.c
    # recently_deleted), and scans past each one when it allocates. With the previous run's
    # trees just deleted, that scan was ~21% of all CPU samples (perf record -a) even after
    # waiting 61 s. So no tree is deleted while these rows run: each run's trees are moved
    # aside and deleted after the scenario.
    trash = f"{WORK}/{name}-mc-trash"
    rows = 2 + 2 * n + (n if extras else 0)  # client trees kept until the end, per run
    need_free(int(1.1 * B.runs * rows * ds["total_bytes"]), f"scenario 5 on the {name} set")
    prep = f"mkdir -p {trash} && if [ -e {dst} ]; then mv {dst} {trash}/$(date +%s%N); fi && mkdir -p {dst}"
    settle_note = "prepare moves the previous trees aside (deleted after the scenario), so no inode freed during the rows is skipped by ext4"

    def verify_all():
        res = [make_verify(f"{dst}/c{i}", man)() for i in range(n)]
        return all(ok for ok, _ in res), "; ".join(d for ok, d in res if not ok)
    B.measure(S, "1 hummel client", C.sync_cmd(f"{dst}/c0"), prepare=prep, logical_bytes=ds["total_bytes"],
              verify=make_verify(f"{dst}/c0", man))
    B.measure(S, f"{n} concurrent hummel clients (aggregate)", parallel_cmd(C.sync_cmd(f"{dst}/c{i}") for i in range(n)),
              prepare=prep, logical_bytes=n * ds["total_bytes"], verify=verify_all, note=settle_note,
              show_cmd=f"for i in $(seq 0 {n-1}); do {C.sync_cmd(dst + '/c$i')} & done; wait")
    B.measure(S, "1 rsync client", f"rsync -a --stats {RSYNCD}/{name}/ {dst}/c0/", prepare=prep,
              logical_bytes=ds["total_bytes"])
    B.measure(S, f"{n} concurrent rsync clients (aggregate)",
              parallel_cmd(f"rsync -a {RSYNCD}/{name}/ {dst}/c{i}/" for i in range(n)),
              prepare=prep, logical_bytes=n * ds["total_bytes"], note=settle_note,
              show_cmd=f"for i in $(seq 0 {n-1}); do rsync -a {RSYNCD}/{name}/ {dst}/c$i/ & done; wait")
    if extras:
        B.measure(S, f"{n} concurrent curl .zst blob clients + zstd -d (aggregate)",
                  parallel_cmd(f"(mkdir -p {dst}/z{i} && cd {dst}/z{i} && curl -s --parallel --parallel-max 4 --create-dirs "
                               f"-K {WORK}/lists/{name}-zst.curl && find . -name '*.zst' -print0 | xargs -0 -n500 zstd -q -d --rm)"
                               for i in range(n)),
                  prepare=prep, logical_bytes=n * ds["total_bytes"],
                  show_cmd=f"for i in $(seq 0 {n-1}); do (cd {dst}/z$i && curl -s --parallel --parallel-max 4 --create-dirs "
                           f"-K <list> && find . -name '*.zst' | xargs zstd -d --rm) & done; wait")
    sh(f"rm -rf {trash}")


BUILD_MASTER = []


def restart_build_master(name):
    """Fresh master (no slaves) with an empty data folder on BUILD_PORT, repo = the data set."""
    for p in BUILD_MASTER:
        stop_proc(p)
        STARTED.remove(("hummel-build-master", p))
    BUILD_MASTER.clear()
    d = f"{WORK}/{name}-hbuild"
    sh(f"rm -rf {d} && mkdir -p {d}")
    p = start_proc("hummel-build-master", [HUMMEL, "master", "--repo", f"{ROOT}/data/{name}/src", "--data",
                                           f"{d}/data", "--listen", f"127.0.0.1:{BUILD_PORT}"],
                   env=hummel_env(), stderr=open(f"{RUN}/hummel-build-master.log", "w"))
    BUILD_MASTER.append(p)
    wait_port(BUILD_PORT)


def scen_build(B, name, ds):
    src = f"{ROOT}/data/{name}/src"
    tot = ds["total_bytes"]
    S = f"6_build_{name}"
    burl = f"http://127.0.0.1:{BUILD_PORT}"
    bcmd = f"{HUMMEL} build --master {burl} --wait --json"
    show = f"HUMMEL_WRITE_TOKEN=$TOKEN {bcmd}"
    B.measure(S, "hummel build, cold (empty master data dir)", bcmd, prepare=lambda: restart_build_master(name),
              show_prepare=f"(re)start `{HUMMEL} master --repo {src} --data {WORK}/{name}-hbuild/data "
                           f"--listen 127.0.0.1:{BUILD_PORT}` with an empty data dir",
              logical_bytes=tot, show_cmd=show)
    # The bar compares the rebuild with rsync's no-op of the same cache state (scenario 4): cold
    # after drop_caches, and warm, as a master that runs all the time usually finds the tree.
    B.measure(S, "hummel build, nothing changed (rebuild), cold cache", bcmd, logical_bytes=tot, show_cmd=show)
    B.measure(S, "hummel build, nothing changed (rebuild), warm cache", bcmd, logical_bytes=tot, show_cmd=show,
              cold=False, prepare=f"{bcmd} >/dev/null")
    cs = f"{WORK}/{name}-casync-build"
    ccmd = f"casync make --store={cs}/store {cs}/tree.caidx {src}"
    B.measure(S, "casync make, cold (empty store)", ccmd, prepare=f"rm -rf {cs} && mkdir -p {cs}", logical_bytes=tot)
    B.measure(S, "casync make, nothing changed (store kept)", ccmd, logical_bytes=tot)
    zo = f"{WORK}/{name}-zstd-build"
    B.measure(S, "per-file zstd -3, 2 processes", f"cd {src} && find . -type f -print0 | xargs -0 -P2 -n500 "
              f"zstd -q -3 -T1 --output-dir-mirror {zo}", prepare=f"rm -rf {zo}", logical_bytes=tot)
    for p in BUILD_MASTER:
        stop_proc(p)
        STARTED.remove(("hummel-build-master", p))
    BUILD_MASTER.clear()
    B.results.setdefault("hummel_setup", {}).update(B_SETUP)
    B.results["hummel_setup"].update({k: c.setup for k, c in CLUSTERS.items()})
    sh(f"rm -rf {cs} {zo} {WORK}/{name}-hbuild", check=False)


# ---------------------------------------------------------------- (7b) many small files
def prep_many(B, n_files):
    """The many-small-files set (gen_data.plan_many), its b3sum manifest and the server tree of the
    one-file change: a hardlink farm of the set with one small file rewritten (same size, new content,
    mtime one day later). Cached under ROOT/data/<name> like prep_set."""
    name = gen_data.many_name(n_files)
    need_free(int(1.6 * n_files * gen_data.MANY_MEAN), f"data set {name}")
    man = gen_data.generate(ROOT, name, None, seed=1, n_many=n_files)
    base = f"{ROOT}/data/{name}"
    src = f"{base}/src"
    stamp = json.dumps(man["params"], sort_keys=True)
    marker = f"{base}/prep.json"
    prep = {}
    if os.path.exists(marker):
        with open(marker) as f:
            prep = json.load(f)
        if prep.get("stamp") != stamp:
            prep = {}
    files = gen_data.plan_many(n_files, 1)
    rel = sorted(f[0] for f in files)[len(files) // 2]  # the file that changes: the middle one in sorted order

    def step(key, fn, cmd):
        if key in prep:
            return
        drop_caches()
        log(f"prep {name}: {key}")
        t0 = time.perf_counter()
        info = fn()
        os.sync()
        prep[key] = dict(info or {}, seconds=round(time.perf_counter() - t0, 2), cmd=cmd)
        prep["stamp"] = stamp
        with open(marker, "w") as f:
            json.dump(prep, f, indent=1)

    mcmd = f"cd {src} && find . -type f -print0 | sort -z | xargs -0 b3sum > {base}/b3.manifest"
    step("b3_manifest", lambda: sh(f"{mcmd}.tmp && mv {base}/b3.manifest.tmp {base}/b3.manifest") and None, mcmd)
    vt = f"{base}/srv_chg"

    def variant():
        sh(f"rm -rf {vt} && cp -al {src} {vt} && rm {vt}/{rel}")
        info = gen_data.small_variant(f"{src}/{rel}", f"{vt}/{rel}", seed=1)
        d = os.path.dirname(f"{vt}/{rel}")
        os.utime(d, (gen_data.MTIME, gen_data.MTIME))  # only the file differs from src, not its folder
        variant_manifest(f"{base}/b3.manifest", rel, f"{vt}/{rel}", f"{base}/b3.chg.manifest")
        return dict(info, file=rel)
    step("variant_chg", variant, f"cp -al {src} {vt}, then {rel} rewritten (same size, new content, mtime +1 day)")
    step("disk_usage", lambda: {"bytes": int(out(f"du -s --block-size=1 {src} | cut -f1"))}, f"du -s {src}")
    sizes = sorted(f[1] for f in files)
    ds = {"n_files": man["n_files"], "total_bytes": man["total_bytes"], "n_dirs": man.get("n_dirs"),
          "kinds": man["kinds"], "disk_bytes": prep["disk_usage"]["bytes"],
          "size_median": sizes[len(sizes) // 2], "size_p10": sizes[len(sizes) // 10],
          "size_p90": sizes[len(sizes) * 9 // 10], "size_max": sizes[-1],
          "variant_file": rel, "variant_chg": {k: v for k, v in prep["variant_chg"].items() if k not in ("seconds", "cmd")},
          "prep_seconds": {k: v["seconds"] for k, v in prep.items() if isinstance(v, dict) and "seconds" in v},
          "prep_cmds": {k: v["cmd"] for k, v in prep.items() if isinstance(v, dict) and "cmd" in v},
          "gen_seconds": man.get("gen_seconds"), "generator": "gen_data.py --set many"
                                                               + ("" if name == "many" else f" --files {n_files}")}
    B.results["datasets"][name] = ds
    B.save()
    return name, ds


MANY_SECTIONS = ["build", "sync", "noop", "change"]


def scen_many_files(B, name, ds, only):
    """(7b) Many small files, Hummel beside rsync: build (cold, fresh master), fresh sync into an empty
    folder, no-op sync (cold, warm), one small file changed. Bases for the later rows are the trees the
    fresh-sync rows leave (synced untimed if those rows did not run)."""
    base = f"{ROOT}/data/{name}"
    man, man_chg = f"{base}/b3.manifest", f"{base}/b3.chg.manifest"
    tot, rel = ds["total_bytes"], ds["variant_file"]
    hdst, dst = f"{WORK}/{name}-hdst", f"{WORK}/{name}-dst"
    hb, rb = f"{WORK}/{name}-hbase", f"{WORK}/{name}-rbase"
    hsave, rsave = f"{WORK}/{name}-hsave", f"{WORK}/{name}-rsave"
    # Same ext4 effect as in scen_many: an inode freed less than 60 s (or 360 s) ago is skipped, at a
    # cost, when the next one is allocated; with 500,000 files per tree that would tax every row that
    # runs after a deletion. So no tree is deleted during the scenario: each is moved aside into
    # `trash` and the trash is deleted at the end.
    trash = f"{WORK}/{name}-trash"

    def aside(d):
        return f"mkdir -p {trash} && if [ -e {d} ]; then mv {d} {trash}/$(date +%s%N); fi"
    note = ("prepare moves the previous DEST aside (deleted after the scenario), so ext4 skips no "
            "recently freed inode during the rows")
    disk = ds["disk_bytes"]
    # cluster (3 servers, two pack levels) 3.5x + build master's packs 1x; the client trees kept until
    # the end: 2 per run of the fresh-sync rows (the last two become the bases of the later rows)
    trees = 2 * B.runs if "sync" in only else 2
    need_free(int(4.5 * tot + 1.1 * disk * trees), f"scenario 7b on the {name} set")
    sh(" && ".join(aside(d) for d in (hdst, dst, hb, rb)) + f" && rm -rf {hsave} {rsave}")

    if "build" in only:
        S = f"7b1_build_{name}"
        burl = f"http://127.0.0.1:{BUILD_PORT}"
        bcmd = f"{HUMMEL} build --master {burl} --wait --json"
        B.measure(S, "hummel build, cold (empty master data dir)", bcmd, prepare=lambda: restart_build_master(name),
                  show_prepare=f"(re)start `{HUMMEL} master --repo {base}/src --data {WORK}/{name}-hbuild/data "
                               f"--listen 127.0.0.1:{BUILD_PORT}` with an empty data dir",
                  logical_bytes=tot, show_cmd=f"HUMMEL_WRITE_TOKEN=$TOKEN {bcmd}")
        for p in BUILD_MASTER:
            stop_proc(p)
            STARTED.remove(("hummel-build-master", p))
        BUILD_MASTER.clear()
        sh(f"rm -rf {WORK}/{name}-hbuild")

    if not {"sync", "noop", "change"} & only:
        return
    C = cluster(name, ds)
    C.set_variant("base")
    if "sync" in only:
        S = f"7b2_full_sync_{name}"
        r = B.measure(S, "hummel sync (master + 2 slaves)", C.sync_cmd(hdst), prepare=aside(hdst),
                      logical_bytes=tot, verify=make_verify(hdst, man), note=note)
        if r.get("runs") and r["runs"][-1]["rc"] == 0 and os.path.isdir(hdst):
            sh(f"mv {hdst} {hb}")
        r = B.measure(S, "rsync daemon", f"rsync -a --delete --stats {RSYNCD}/{name}/ {dst}/", prepare=aside(dst),
                      logical_bytes=tot, verify=make_verify(dst, man), note=note)
        if r.get("runs") and r["runs"][-1]["rc"] == 0 and os.path.isdir(dst):
            sh(f"mv {dst} {rb}")
    if not {"noop", "change"} & only:
        return
    # Bases: the synced trees of the rows above, brought (untimed) to the base revision.
    C.set_variant("base")
    r = sh(C.sync_cmd(hb), capture=True, check=False)
    if r.returncode != 0:
        log(f"  (untimed) hummel sync of the base client folder failed rc={r.returncode}: {r.stdout[-600:]}")
    sh(f"rsync -a --delete {RSYNCD}/{name}/ {rb}/")

    if "noop" in only:
        S = f"7b3_noop_{name}"
        B.measure(S, "hummel sync, cold cache", C.sync_cmd(hb), logical_bytes=tot, cold=True)
        B.measure(S, "hummel sync, warm cache", C.sync_cmd(hb), logical_bytes=tot, cold=False)
        rcmd = f"rsync -a --delete --stats {RSYNCD}/{name}/ {rb}/"
        B.measure(S, "rsync daemon, cold cache", rcmd, logical_bytes=tot, cold=True)
        B.measure(S, "rsync daemon, warm cache", rcmd, logical_bytes=tot, cold=False)

    if "change" in only:
        S = f"7b4_one_file_{name}"
        # Both clients hold the base revision. Before each run the changed file (and Hummel's
        # .hummel/state and index) are restored from a private copy, untimed.
        sh(f"mkdir -p {hsave}/st {rsave} && cp -a {hb}/{rel} {hsave}/file && cp -a {rb}/{rel} {rsave}/file && "
           f"for f in state index; do if [ -e {hb}/.hummel/$f ]; then cp -a {hb}/.hummel/$f {hsave}/st/; fi; done")
        C.set_variant("chg")
        hrestore = (f"rm -f {hb}/{rel} {hb}/.hummel/index && cp -a {hsave}/file {hb}/{rel} && "
                    f"cp -a {hsave}/st/. {hb}/.hummel/")
        B.measure(S, "hummel sync (whole tree, one file changed)", C.sync_cmd(hb), prepare=hrestore,
                  logical_bytes=tot, verify=make_verify(hb, man_chg),
                  note="client folder = synced base revision; before each run the changed file and "
                       ".hummel/{state,index} are restored from a private copy (untimed)")
        B.measure(S, "rsync daemon (whole tree, one file changed)",
                  f"rsync -a --delete --stats {RSYNCD}/{name}_chg/ {rb}/",
                  prepare=f"rm -f {rb}/{rel} && cp -a {rsave}/file {rb}/{rel}", logical_bytes=tot,
                  verify=make_verify(rb, man_chg),
                  note="client folder = synced base tree; before each run the changed file is restored (untimed)")
    B.results.setdefault("hummel_setup", {}).update({k: c.setup for k, c in CLUSTERS.items()})
    B.save()


def many_cleanup(name):
    discard_cluster(name)
    sh("rm -rf " + " ".join(f"{WORK}/{name}-{x}" for x in
                            ("trash", "hdst", "dst", "hbase", "rbase", "hsave", "rsave", "hbuild")), check=False)


# ---------------------------------------------------------------- main
def versions():
    v = {}
    for name, cmd in (("rsync", "rsync --version | head -1"), ("zsync", "zsync -V 2>&1 | head -1"),
                      ("casync", "casync --version 2>&1 | head -1"), ("aria2c", "aria2c --version | head -1"),
                      ("nginx", "nginx -v 2>&1"), ("zstd", "zstd --version"), ("hyperfine", "hyperfine --version"),
                      ("iperf3", "iperf3 --version | head -1"), ("pigz", "pigz --version 2>&1"),
                      ("gzip", "gzip --version | head -1"), ("b3sum", "b3sum --version"),
                      ("curl", "curl --version | head -1"), ("coreutils", "sha256sum --version | head -1")):
        v[name] = out(cmd)
    return v


ALL_SECTIONS = ["limits", "1", "2", "3", "4", "5", "6"]
ALIASES = {"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "build": "6", "prep": None}


def disk_info(dev):
    """'vda 256G, rotational 0, virtio' style description of the block device holding ROOT."""
    parent = out(f"lsblk -no PKNAME {dev} 2>/dev/null | head -1") or os.path.basename(dev)
    info = out(f"lsblk -dno NAME,SIZE,ROTA,MODEL /dev/{parent} 2>/dev/null").split(None, 3)
    if len(info) < 3:
        return dev
    drv = out(f"basename $(readlink -f /sys/block/{parent}/device/driver) 2>/dev/null")
    return (f"{info[0]} {info[1]}, {'rotational' if info[2] == '1' else 'non-rotational'}"
            + (f", {info[3]}" if len(info) > 3 else "") + (f", driver {drv}" if drv else ""))


def hummel_version():
    v = out(f"{HUMMEL} --version")
    h = out(f"sha256sum {HUMMEL} | cut -c1-16")
    return f"{v} (binary sha256 {h}…)"


def finish(B, meta, t_start):
    B.results.setdefault("hummel_setup", {}).update(B_SETUP)
    B.results["hummel_setup"].update({k: c.setup for k, c in CLUSTERS.items()})
    meta["harness_seconds"] = round(time.time() - t_start)
    meta["waited_for_idle_seconds"] = round(WAITED)
    meta["busy_retries"] = RETRIES
    meta["harness_seconds_excluding_waits"] = round(time.time() - t_start - WAITED)
    B.save()


def main_many(B, a, only, meta, t_start):
    """Mode many: the (7b) rows only, on the many-small-files set; results in ROOT/results/many[-N].json."""
    name, ds = prep_many(B, a.files)
    start_rsyncd({name: f"{ROOT}/data/{name}/src", f"{name}_chg": f"{ROOT}/data/{name}/srv_chg"})
    B.save()
    try:
        scen_many_files(B, name, ds, only)
    finally:
        finish(B, meta, t_start)
        many_cleanup(name)
    log(f"done in {time.time()-t_start:.0f}s; results in {B.path}")


def main():
    global LABEL_FILTER, IPT_OK
    ap = argparse.ArgumentParser(description="Hummel and peer benchmarks; see bench/README.md")
    ap.add_argument("mode", choices=["smoke", "quick", "full", "many"])
    ap.add_argument("--runs", type=int, default=None, help="runs per row (default 3; smoke 1)")
    ap.add_argument("--only", default=None,
                    help="sections: limits,1,2,3,4,5,6 (a-e also accepted for 1-5); default all "
                         "(smoke: all but limits); mode many: build,sync,noop,change")
    ap.add_argument("--files", type=int, default=gen_data.MANY_FILES,
                    help="mode many: number of files (default 500,000; another count is its own data set "
                         "many-N with results in ROOT/results/many-N.json)")
    ap.add_argument("--warm", action="store_true", help="do not drop caches between runs")
    ap.add_argument("--extras", action=argparse.BooleanOptionalAction, default=None,
                    help="extra peer rows: rsync -z whole tree in (2)/(3), rsync -c no-op, 8 curl clients in (5) "
                         "(default: on for quick, off for full, where they add ~2.5 min)")
    ap.add_argument("--match", help="only rows whose label matches this regex (others keep old results)")
    a = ap.parse_args()
    many = a.mode == "many"
    all_sections = MANY_SECTIONS if many else ALL_SECTIONS
    if a.only is None:
        a.only = ",".join(all_sections)
    smoke = a.mode == "smoke"
    if smoke:  # tiny data, 1 run, no idle-wait, warm cache, no iptables
        os.environ["HB_NOWAIT"] = "1"
        a.warm = True
        if a.only == ",".join(ALL_SECTIONS):
            a.only = ",".join(ALL_SECTIONS[1:])
    runs = a.runs or (1 if smoke else 3)
    only = {ALIASES.get(x, x) for x in a.only.split(",")} - {None}
    if many:
        only = {x if x in MANY_SECTIONS else MANY_SECTIONS[int(x) - 1] for x in a.only.split(",")}
    LABEL_FILTER = a.match
    if a.match:
        only.discard("limits")
    if not os.access(HUMMEL, os.X_OK):
        raise SystemExit(f"hummel binary not found at {HUMMEL} (set HB_HUMMEL or use bench/run.sh)")
    for d in (RUN, WWW, WORK, RES):
        os.makedirs(d, exist_ok=True)
    os.environ.update(HUMMEL_WRITE_TOKEN=TOKENS["write"], HUMMEL_SLAVE_TOKEN=TOKENS["slave"])
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *x: sys.exit(1))
    extras = (a.mode == "quick") if a.extras is None else a.extras
    many_name = gen_data.many_name(a.files)
    B = Bench(many_name if many else a.mode, runs, not a.warm)
    t_start = time.time()
    mem = out("awk '/MemTotal/ {print $2}' /proc/meminfo")
    disk_dev = out(f"df {ROOT} | tail -1 | awk '{{print $1}}'")
    meta = {
        "mode": a.mode, "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "kernel": platform.release(),
        "cpu": out("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(), "nproc": os.cpu_count(),
        "mem_gib": round(int(mem) / 1048576, 1) if mem else None, "runs": runs,
        "cold_cache": B.cold, "drop_caches_permitted": can_drop_caches(), "versions": versions(),
        "fs": out(f"df -T {ROOT} | tail -1 | awk '{{print $2}}'"),
        "disk": disk_info(disk_dev),
        "load_at_start": os.getloadavg(), "only": a.only, "match": a.match, "root": ROOT,
        "hummel": hummel_version(), "extras": extras,
        "command": "bench/run.sh " + " ".join(shlex.quote(x) for x in sys.argv[1:])}
    if many:
        meta["files"] = a.files
    partial = bool(a.match) or only != set(all_sections if not smoke else ALL_SECTIONS[1:])
    if partial and "meta" in B.results:
        B.results.setdefault("reruns", []).append(meta)
    else:  # a complete run starts from empty results (no stale rows from older runs)
        B.results = {"meta": meta, "scenarios": {}, "limits": {}, "prep": {}, "datasets": {}}
    sets = {"smoke": 0.005} if smoke else {"quick": 0.1} if a.mode == "quick" else {"full": 1.0, "quick": 0.1}
    main_set = a.mode
    many_set = "smoke" if smoke else "quick"
    if smoke:
        IPT_OK = False
    else:
        acct_setup()
    meta["wire_accounting"] = "iptables OUTPUT -o lo per port" if IPT_OK else "/proc/net/dev lo (total only)"
    meta["hummel_repack_level"] = REPACK_LEVEL
    if many:
        return main_many(B, a, only, meta, t_start)
    dss = {}
    for name, scale in sets.items():
        dss[name] = prep_set(B, name, scale)
    modules = {}
    for name in sets:
        modules[name] = f"{ROOT}/data/{name}/src"
        modules[f"{name}_mod"] = f"{ROOT}/data/{name}/srv_mod"
        modules[f"{name}_ins"] = f"{ROOT}/data/{name}/srv_ins"
    start_rsyncd(modules)
    start_http()
    meta["http_server"] = HTTP_KIND
    B.save()
    try:
        if "limits" in only:
            run_limits(B, main_set)
        if "1" in only:
            scen_full_sync(B, main_set, dss[main_set], include_zlib=(main_set == "quick"))
        if "2" in only:
            scen_delta(B, main_set, dss[main_set], "mod", extras)
        if "3" in only:
            scen_delta(B, main_set, dss[main_set], "ins", extras)
        if "4" in only:
            scen_noop(B, main_set, dss[main_set], extras)
        if "5" in only and many_set != main_set:
            # (5) runs on the quick set and writes ~25 GB of client trees; (1)-(4)'s cluster and
            # client folders of the main set are not needed any more (6 uses its own master).
            discard_cluster(main_set)
            sh("rm -rf " + " ".join(f"{WORK}/{main_set}-{x}" for x in
                                    ("dst", "hdst", "hbase", "hdelta", "hdelta2", "hsave")), check=False)
        if "5" in only:
            scen_many(B, many_set, dss[many_set], extras=extras)
        if "6" in only:
            scen_build(B, main_set, dss[main_set])
    finally:
        finish(B, meta, t_start)
    sh(" ".join(["rm -rf", f"{WORK}/dd.bin", f"{WORK}/{many_set}-mc", f"{WORK}/{many_set}-hbase"]
                + [f"{WORK}/{main_set}-{x}" for x in ("dst", "hdst", "hbase", "hdelta", "hdelta2", "hsave")]),
       check=False)
    log(f"done in {time.time()-t_start:.0f}s; results in {B.path}")


if __name__ == "__main__":
    main()
