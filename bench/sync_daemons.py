#!/usr/bin/python3
"""Sync benchmark with two real fieldsyncd processes on loopback (bench/README.md "Sync").

S1 write N observations to daemon A through the local API (batches of 1000 over the Unix
socket), S2 initial sync of all N to an empty daemon B, S3 incremental (1% updated + 1% new,
pushed live), S4 no-op sync (B restarts and runs one full session). For each: time, docs/s,
bytes on the wire per doc (TCP payload both ways including TLS, from the kernel's TCP_INFO of
the sync connection) and peak RSS (VmHWM) of both daemons.

The same data by USB stick, to a third daemon C without a network (sync.enabled = false), with
`syncctl bundle`: S5 export of the N documents of S1 from A, S6 its import into the empty C
(bytes = the bundle file), S7 the S3 changes as an incremental bundle round trip (C's bundle
for A tells A what C holds; A's bundle for C then holds only the changes; export + import).
Peak RSS: A's and C's VmHWM, and syncctl's maximum resident size.

Memory and disk: a thread reads each daemon's /proc/<pid>/status every 50 ms and keeps, per
scenario, the peak of RssAnon (private pages: heap, stacks) and of RssFile + RssShmem (resident
pages of mapped files: the executable, its libraries and the LMDB map), next to VmHWM, which
counts both; at the end of each scenario, the resident pages of the LMDB map alone (smaps).
After S1 and S2, the size of each daemon's <data_dir>/db/data.mdb (allocated blocks and file
size) per document it holds. CPU: each daemon's user + system time (all its threads, from
/proc/<pid>/stat) during the scenario, steadier than the wall time on a machine shared with
other jobs.

Usage: bench/sync_daemons.py [N | --sizes N1,N2,...] [--build DIR] [--set KEY=VALUE ...]
                             [--json PATH]   (python3 stdlib only)
--set applies a setting to every daemon, e.g. --set sync.compression_level=0 (no compression).
--sizes runs the whole set once per size (fresh daemons each) and prints one combined table.
--json writes every row (all sizes) to PATH.
"""
import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, os.path.join(HERE, "workload"))
from fieldsync_harness import Daemon, wait_until  # noqa: E402
from observations import observation  # noqa: E402

V = "/v1/projects"
SEED, DEVICE = 1, "device-a"  # workload/observations.py's defaults


def observations(n, *extra):
    out = subprocess.run([sys.executable, os.path.join(HERE, "workload", "observations.py"), str(n)]
                         + list(extra), capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line]


def generate(start, stop, version=0):
    """The documents start..stop-1 of observations(), version 1 as with --update-fraction, made
    when iterated (the same generator in this process): S1 makes its N documents batch by batch,
    so they are never all in memory (observations(N) holds N dicts, ~300 MB for 100k)."""
    return (observation(i, SEED, DEVICE, version) for i in range(start, stop))


def doc_id(i):
    return "obs-%08d" % i


def proc_status(pid):
    """VmHWM, RssAnon, RssFile and RssShmem of a process in kB ({} once it has exited)."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(value.split()[0])
    except OSError:
        return {}
    return out


def map_rss_mb(d):
    """Resident pages of the daemon's LMDB map (the data.mdb mapping in /proc/<pid>/smaps). Read
    once at the end of a scenario, not sampled: smaps lists every mapping of every library
    (~30 ms to read), and the map's resident pages only grow while nothing reclaims them."""
    if d.proc is None:
        return 0
    path = os.path.realpath(os.path.join(d.data_dir, "db", "data.mdb"))
    kb, inside = 0, False
    try:
        with open("/proc/%d/smaps" % d.proc.pid) as f:
            for line in f:
                parts = line.split()
                if not parts[0].endswith(":"):  # a mapping's header: address perms offset dev inode [path]
                    inside = len(parts) > 5 and parts[5] == path
                elif inside and parts[0] == "Rss:":
                    kb += int(parts[1])
    except OSError:
        return 0
    return kb / 1024


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(d):
    """utime + stime of the daemon's process (every thread), from /proc/<pid>/stat."""
    if d.proc is None:
        return 0.0
    try:
        with open("/proc/%d/stat" % d.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


def vm_hwm_mb(d):
    return proc_status(d.proc.pid).get("VmHWM", 0) / 1024 if d.proc else 0


class MemSampler(threading.Thread):
    """Reads each daemon's /proc/<pid>/status every interval_s and keeps the peaks of RssAnon
    and RssFile + RssShmem since the last window(). It follows d.proc, so a restarted daemon is
    sampled under its new pid."""

    def __init__(self, daemons, interval_s=0.05):
        super().__init__(daemon=True)
        self.daemons = daemons
        self.interval_s = interval_s
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.anon = {}
        self.file = {}
        self.cpu0 = {}

    def sample(self):
        for name, d in self.daemons.items():
            proc = d.proc
            s = proc_status(proc.pid) if proc is not None else {}
            if not s:
                continue
            with self.lock:
                self.anon[name] = max(self.anon.get(name, 0), s.get("RssAnon", 0))
                self.file[name] = max(self.file.get(name, 0), s.get("RssFile", 0) + s.get("RssShmem", 0))

    def run(self):
        while not self.done.wait(self.interval_s):
            self.sample()

    def window(self):
        """Starts a scenario: forgets the peaks, notes each daemon's CPU time so far and takes a
        first sample."""
        with self.lock:
            self.anon, self.file = {}, {}
            self.cpu0 = {name: cpu_seconds(d) for name, d in self.daemons.items()}
        self.sample()

    def cpu(self, name):
        """CPU seconds (user + system, all threads) the daemon used since window()."""
        with self.lock:
            return max(cpu_seconds(self.daemons[name]) - self.cpu0.get(name, 0.0), 0.0)

    def peaks(self, name):
        """(RssAnon peak, RssFile + RssShmem peak) of one daemon in MB since window(), with a
        last sample taken now (a scenario shorter than the interval still has two)."""
        self.sample()
        with self.lock:
            return self.anon.get(name, 0) / 1024, self.file.get(name, 0) / 1024

    def stop(self):
        self.done.set()
        self.join()


def disk(d, docs):
    """LMDB file of a daemon: allocated bytes (st_blocks * 512), file size (the pages LMDB has
    written so far: it grows the file page by page, the map is not preallocated) and both per
    document held."""
    st = os.stat(os.path.join(d.data_dir, "db", "data.mdb"))
    alloc = st.st_blocks * 512
    return {"docs": docs, "allocated_bytes": alloc, "file_bytes": st.st_size,
            "b_per_doc": alloc / docs if docs else None,
            "file_b_per_doc": st.st_size / docs if docs else None}


def report_disk(after, rows):
    print("%-24s %s" % ("disk after " + after, "  ".join(
        "%s=%.1f MB allocated, %.1f MB file (%s)" % (
            name, v["allocated_bytes"] / 1e6, v["file_bytes"] / 1e6,
            "%.0f B/doc" % v["b_per_doc"] if v["docs"] else "no docs")
        for name, v in rows.items())), flush=True)


def write(d, pid, docs):
    """Writes docs in batches of 1000; returns the seconds spent in the batches (building and
    sending each request and the daemon's answer), not in generating the documents."""
    docs, secs = iter(docs), 0.0
    while True:
        chunk = list(itertools.islice(docs, 1000))
        if not chunk:
            return secs
        t = time.monotonic()
        writes = [{"collection": "observations", "id": o["id"], "body": o} for o in chunk]
        r = d.unix("POST", V + "/%s/batch" % pid, {"writes": writes}, timeout=120)
        assert r.status == 200, r
        secs += time.monotonic() - t


def peer(d, other):
    return d.unix("GET", "/v1/peers/%s" % other.device_id).json()


def wire(d, other):
    p = peer(d, other)
    return p["wire_bytes_sent"] + p["wire_bytes_received"]


def in_sync(b, a, pid, last_doc):
    p = peer(b, a)
    if p.get("state") != "in_sync":
        return False
    return b.unix("GET", V + "/%s/docs/observations/%s" % (pid, last_doc)).status == 200


def mem(d, name, sampler):
    anon, file_ = sampler.peaks(name)
    return {"vmhwm_mb": vm_hwm_mb(d), "anon_peak_mb": anon, "file_peak_mb": file_, "map_mb": map_rss_mb(d),
            "cpu_s": sampler.cpu(name)}


def row(n, name, docs, secs, kind, nbytes, a, other, sampler, cli_mb=None):
    """One scenario's result; other is B (network) or C (bundles)."""
    r = {"size": n, "scenario": name, "docs": docs, "seconds": secs,
         "docs_per_s": docs / max(secs, 1e-9), "bytes_kind": kind, "bytes": nbytes,
         "bytes_per_doc": nbytes / docs if docs else None,
         "a": mem(a, "A", sampler), other.bench_name.lower(): mem(other, other.bench_name, sampler)}
    if cli_mb is not None:
        r["syncctl_mb"] = cli_mb
    return r


def mem_text(r, other):
    a, o = r["a"], r[other.lower()]
    return ("anon A=%.0f MB %s=%.0f MB  file A=%.0f MB %s=%.0f MB  map A=%.0f MB %s=%.0f MB  "
            "cpu A=%.2f s %s=%.2f s") % (
        a["anon_peak_mb"], other, o["anon_peak_mb"], a["file_peak_mb"], other, o["file_peak_mb"],
        a["map_mb"], other, o["map_mb"], a["cpu_s"], other, o["cpu_s"])


def report(r):
    print("%-24s docs=%-7d time=%8.3f s  docs/s=%9.0f  wire=%11d B (%6.1f B/doc)  peak_rss A=%.0f MB B=%.0f MB  %s"
          % (r["scenario"], r["docs"], r["seconds"], r["docs_per_s"], r["bytes"], r["bytes_per_doc"] or 0.0,
             r["a"]["vmhwm_mb"], r["b"]["vmhwm_mb"], mem_text(r, "B")), flush=True)
    return r


def syncctl(bin_, d, *args):
    """Runs syncctl against d; returns (seconds, its peak RSS in MB). The peak is its VmHWM read
    every 2 ms until it exits (rusage would count the benchmark's own pages, forked with it)."""
    t = time.monotonic()
    p = subprocess.Popen([bin_, "--socket", d.socket_path] + list(args),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while p.poll() is None:
        peak = max(peak, proc_status(p.pid).get("VmHWM", 0))
        time.sleep(0.002)
    secs = time.monotonic() - t
    if p.returncode != 0:
        raise AssertionError("syncctl %s: %s" % (args, p.stderr.read().decode()))
    return secs, peak / 1024


def report_bundle(r):
    print("%-24s docs=%-7d time=%8.3f s  docs/s=%9.0f  file=%11d B (%6.1f B/doc)  peak_rss A=%.0f MB C=%.0f MB syncctl=%.0f MB  %s"
          % (r["scenario"], r["docs"], r["seconds"], r["docs_per_s"], r["bytes"], r["bytes_per_doc"] or 0.0,
             r["a"]["vmhwm_mb"], r["c"]["vmhwm_mb"], r["syncctl_mb"], mem_text(r, "C")), flush=True)
    return r


def run(n, binary, cli, settings):
    """S1..S7 for n documents on three fresh daemons; returns the rows in the order run."""
    tmp = tempfile.mkdtemp(prefix="fs-bench-bundles-")
    n_upd, n_new = int(n * 0.01), n // 100  # as observations.py --update-fraction 0.01, N + N/100
    last, last_new = doc_id(n - 1), doc_id(n + n_new - 1)
    a = Daemon(binary, name="bench-a", settings=dict(settings, **{"daemon.device_name": "bench-a"})).start()
    b = Daemon(binary, name="bench-b", settings=dict(settings, **{"daemon.device_name": "bench-b"})).start()
    c = Daemon(binary, name="bench-c", settings=dict(settings, **{"daemon.device_name": "bench-c",
                                                                  "sync.enabled": "false"})).start()
    a.bench_name, b.bench_name, c.bench_name = "A", "B", "C"
    sampler = MemSampler({"A": a, "B": b, "C": c})
    sampler.start()
    rows = []
    try:
        pid = a.create_project("bench")
        sec = a.unix("GET", V + "/%s/secret" % pid).json()
        assert b.unix("POST", V + "/import", sec).status == 201
        assert c.unix("POST", V + "/import", sec).status == 201
        a_sync = "127.0.0.1:%d" % a.unix("GET", "/v1/status").json()["peers"]["listen_port"]

        sampler.window()
        secs = write(a, pid, generate(0, n))  # generated batch by batch, outside the time
        rows.append(report(row(n, "S1 write via API", n, secs, "wire", 0, a, b, sampler)))
        rows[-1]["disk"] = {"A": disk(a, n), "B": disk(b, 0), "C": disk(c, 0)}
        report_disk("S1", rows[-1]["disk"])

        full = os.path.join(tmp, "full.bundle")
        sampler.window()
        secs, mb = syncctl(cli, a, "bundle", "export", pid, full)
        rows.append(report_bundle(row(n, "S5 bundle export", n, secs, "file", os.path.getsize(full), a, c,
                                      sampler, mb)))
        sampler.window()
        secs, mb = syncctl(cli, c, "bundle", "import", full)
        assert c.unix("GET", V + "/%s/docs/observations/%s" % (pid, last)).status == 200
        rows.append(report_bundle(row(n, "S6 bundle import", n, secs, "file", os.path.getsize(full), a, c,
                                      sampler, mb)))

        sampler.window()
        t = time.monotonic()
        r = b.unix("POST", "/v1/peers", {"address": a_sync, "device_id": a.device_id})
        assert r.status == 201, r
        wait_until(lambda: in_sync(b, a, pid, last), 600, interval_s=0.005, what="S2")
        rows.append(report(row(n, "S2 initial sync", n, time.monotonic() - t, "wire", wire(b, a), a, b, sampler)))
        rows[-1]["disk"] = {"A": disk(a, n), "B": disk(b, n), "C": disk(c, n)}
        report_disk("S2", rows[-1]["disk"])

        updates, extra = list(generate(0, n_upd, version=1)), list(generate(n, n + n_new))
        w0 = wire(b, a)
        sampler.window()
        t = time.monotonic()
        write(a, pid, updates)
        write(a, pid, extra)
        wait_until(lambda: in_sync(b, a, pid, last_new) if n_new else True, 120,
                   interval_s=0.005, what="S3")
        rows.append(report(row(n, "S3 incremental (live)", n_upd + n_new, time.monotonic() - t, "wire",
                               wire(b, a) - w0, a, b, sampler)))

        back, inc = os.path.join(tmp, "back.bundle"), os.path.join(tmp, "inc.bundle")
        sampler.window()
        t = time.monotonic()
        syncctl(cli, c, "bundle", "export", pid, back, "--for", a.device_id)
        syncctl(cli, a, "bundle", "import", back)
        _, mb1 = syncctl(cli, a, "bundle", "export", pid, inc, "--for", c.device_id)
        _, mb2 = syncctl(cli, c, "bundle", "import", inc)
        assert c.unix("GET", V + "/%s/docs/observations/%s" % (pid, last_new)).status == 200
        rows.append(report_bundle(row(n, "S7 bundle incremental", n_upd + n_new, time.monotonic() - t, "file",
                                      os.path.getsize(inc) + os.path.getsize(back), a, c, sampler,
                                      max(mb1, mb2))))

        # S4: b restarts with a as a static peer and runs one complete session.
        b.stop()
        b.settings["peer.a.address"] = a_sync
        b.settings["peer.a.device"] = a.device_id
        sampler.window()
        t = time.monotonic()
        b.start()
        wait_until(lambda: peer(b, a).get("state") == "in_sync", 60, interval_s=0.005, what="S4")
        secs = time.monotonic() - t
        time.sleep(0.3)  # the final ACK/DONE segments are acknowledged
        rows.append(report(row(n, "S4 no-op sync", 0, secs, "wire", wire(b, a), a, b, sampler)))
    finally:
        sampler.stop()
        a.close()
        b.close()
        c.close()
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)
    return rows


ORDER = ["S1", "S2", "S3", "S4", "S5", "S6", "S7"]


def table(rows):
    """One Markdown table, size x scenario (A / the other daemon: B for S1-S4, C for S5-S7)."""
    def pair(r, get, fmt="%.0f"):
        other = r.get("b") or r.get("c")
        return "%s / %s" % (fmt % get(r["a"]), fmt % get(other))

    def per_doc(r):
        if r["bytes_per_doc"]:
            return "%.1f (%s)" % (r["bytes_per_doc"], r["bytes_kind"])
        return "{:,} B total".format(r["bytes"]).replace(",", " ") if r["bytes"] else "–"

    def disk_cell(r):
        if "disk" not in r:
            return "–"
        other = r["disk"]["B"]
        return "%.0f / %s" % (r["disk"]["A"]["b_per_doc"],
                              "%.0f" % other["b_per_doc"] if other["docs"] else "–")

    lines = ["| docs | scenario | time | docs/s | wire or file B/doc | disk B/doc A / B | "
             "anon peak MB A / B or C | file peak MB A / B or C | of which LMDB map MB | "
             "VmHWM MB A / B or C | CPU s A / B or C |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["size"], ORDER.index(r["scenario"][:2]))):
        lines.append("| %s | %s | %.2f s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            "{:,}".format(r["size"]).replace(",", " "), r["scenario"], r["seconds"],
            "{:,.0f}".format(r["docs_per_s"]).replace(",", " ") if r["docs"] else "–", per_doc(r), disk_cell(r),
            pair(r, lambda m: m["anon_peak_mb"]), pair(r, lambda m: m["file_peak_mb"]),
            pair(r, lambda m: m["map_mb"]), pair(r, lambda m: m["vmhwm_mb"]),
            pair(r, lambda m: m["cpu_s"], "%.2f")))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int)
    ap.add_argument("--sizes", metavar="N1,N2,...",
                    help="run the whole set once per size (fresh daemons each), one combined table")
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build-release"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for every daemon (repeatable)")
    ap.add_argument("--json", metavar="PATH", help="write every row (all sizes) to PATH")
    args = ap.parse_args()
    if args.n is not None and args.sizes:
        ap.error("give N or --sizes, not both")
    try:
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.n or 100000]
    except ValueError:
        ap.error("--sizes: a comma-separated list of document counts, e.g. 10000,100000")
    if any(s < 1 for s in sizes):
        ap.error("a document count must be at least 1")
    binary = os.path.join(args.build, "daemon", "fieldsyncd")
    cli = os.path.join(args.build, "cli", "syncctl")
    settings = {"sync.listen_address": "127.0.0.1", "daemon.log_level": "warn"}
    for kv in args.set:
        key, _, value = kv.partition("=")
        settings[key] = value

    rows = []
    for n in sizes:
        if len(sizes) > 1:
            print("--- %d documents" % n, flush=True)
        rows += run(n, binary, cli, settings)
        if args.json:  # after each size, so a later failure keeps the earlier rows
            with open(args.json, "w") as f:
                json.dump({"settings": settings, "rows": rows}, f, indent=1)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
