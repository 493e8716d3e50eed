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

Usage: bench/sync_daemons.py [N] [--build DIR] [--set KEY=VALUE ...]   (python3 stdlib only)
--set applies a setting to every daemon, e.g. --set sync.compression_level=0 (no compression).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from fieldsync_harness import Daemon, wait_until  # noqa: E402

V = "/v1/projects"


def observations(n, *extra):
    out = subprocess.run([sys.executable, os.path.join(HERE, "workload", "observations.py"), str(n)]
                         + list(extra), capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line]


def vm_hwm_mb(d):
    with open("/proc/%d/status" % d.proc.pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0


def write(d, pid, docs):
    for i in range(0, len(docs), 1000):
        writes = [{"collection": "observations", "id": o["id"], "body": o} for o in docs[i:i + 1000]]
        r = d.unix("POST", V + "/%s/batch" % pid, {"writes": writes}, timeout=120)
        assert r.status == 200, r


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


def report(name, docs, secs, wire_bytes, a, b):
    print("%-24s docs=%-7d time=%8.3f s  docs/s=%9.0f  wire=%11d B (%6.1f B/doc)  peak_rss A=%.0f MB B=%.0f MB"
          % (name, docs, secs, docs / max(secs, 1e-9), wire_bytes,
             wire_bytes / docs if docs else 0.0, vm_hwm_mb(a), vm_hwm_mb(b)), flush=True)


def syncctl(bin_, d, *args):
    """Runs syncctl against d; returns (seconds, its peak RSS in MB). The peak is its VmHWM read
    every 2 ms until it exits (rusage would count the benchmark's own pages, forked with it)."""
    t = time.monotonic()
    p = subprocess.Popen([bin_, "--socket", d.socket_path] + list(args),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while p.poll() is None:
        try:
            with open("/proc/%d/status" % p.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.002)
    secs = time.monotonic() - t
    if p.returncode != 0:
        raise AssertionError("syncctl %s: %s" % (args, p.stderr.read().decode()))
    return secs, peak / 1024


def report_bundle(name, docs, secs, file_bytes, a, c, cli_mb):
    print("%-24s docs=%-7d time=%8.3f s  docs/s=%9.0f  file=%11d B (%6.1f B/doc)  peak_rss A=%.0f MB C=%.0f MB syncctl=%.0f MB"
          % (name, docs, secs, docs / max(secs, 1e-9), file_bytes,
             file_bytes / docs if docs else 0.0, vm_hwm_mb(a), vm_hwm_mb(c), cli_mb), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=100000)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build-release"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for every daemon (repeatable)")
    args = ap.parse_args()
    binary = os.path.join(args.build, "daemon", "fieldsyncd")
    cli = os.path.join(args.build, "cli", "syncctl")
    tmp = tempfile.mkdtemp(prefix="fs-bench-bundles-")
    n = args.n
    base = observations(n)
    extra = observations(n + n // 100)[n:]
    updates = observations(n, "--update-fraction", "0.01")
    settings = {"sync.listen_address": "127.0.0.1", "daemon.log_level": "warn"}
    for kv in args.set:
        key, _, value = kv.partition("=")
        settings[key] = value

    a = Daemon(binary, name="bench-a", settings=dict(settings, **{"daemon.device_name": "bench-a"})).start()
    b = Daemon(binary, name="bench-b", settings=dict(settings, **{"daemon.device_name": "bench-b"})).start()
    c = Daemon(binary, name="bench-c", settings=dict(settings, **{"daemon.device_name": "bench-c",
                                                                  "sync.enabled": "false"})).start()
    try:
        pid = a.create_project("bench")
        sec = a.unix("GET", V + "/%s/secret" % pid).json()
        assert b.unix("POST", V + "/import", sec).status == 201
        assert c.unix("POST", V + "/import", sec).status == 201
        a_sync = "127.0.0.1:%d" % a.unix("GET", "/v1/status").json()["peers"]["listen_port"]

        t = time.monotonic()
        write(a, pid, base)
        report("S1 write via API", n, time.monotonic() - t, 0, a, b)

        full = os.path.join(tmp, "full.bundle")
        secs, mb = syncctl(cli, a, "bundle", "export", pid, full)
        report_bundle("S5 bundle export", n, secs, os.path.getsize(full), a, c, mb)
        secs, mb = syncctl(cli, c, "bundle", "import", full)
        assert c.unix("GET", V + "/%s/docs/observations/%s" % (pid, base[-1]["id"])).status == 200
        report_bundle("S6 bundle import", n, secs, os.path.getsize(full), a, c, mb)

        t = time.monotonic()
        r = b.unix("POST", "/v1/peers", {"address": a_sync, "device_id": a.device_id})
        assert r.status == 201, r
        wait_until(lambda: in_sync(b, a, pid, base[-1]["id"]), 600, interval_s=0.005, what="S2")
        report("S2 initial sync", n, time.monotonic() - t, wire(b, a), a, b)

        w0 = wire(b, a)
        t = time.monotonic()
        write(a, pid, updates)
        write(a, pid, extra)
        wait_until(lambda: in_sync(b, a, pid, extra[-1]["id"]) if extra else True, 120,
                   interval_s=0.005, what="S3")
        report("S3 incremental (live)", len(updates) + len(extra), time.monotonic() - t, wire(b, a) - w0, a, b)

        back, inc = os.path.join(tmp, "back.bundle"), os.path.join(tmp, "inc.bundle")
        t = time.monotonic()
        syncctl(cli, c, "bundle", "export", pid, back, "--for", a.device_id)
        syncctl(cli, a, "bundle", "import", back)
        _, mb1 = syncctl(cli, a, "bundle", "export", pid, inc, "--for", c.device_id)
        _, mb2 = syncctl(cli, c, "bundle", "import", inc)
        assert c.unix("GET", V + "/%s/docs/observations/%s" % (pid, extra[-1]["id"])).status == 200
        report_bundle("S7 bundle incremental", len(updates) + len(extra), time.monotonic() - t,
                      os.path.getsize(inc) + os.path.getsize(back), a, c, max(mb1, mb2))

        # S4: b restarts with a as a static peer and runs one complete session.
        b.stop()
        b.settings["peer.a.address"] = a_sync
        b.settings["peer.a.device"] = a.device_id
        t = time.monotonic()
        b.start()
        wait_until(lambda: peer(b, a).get("state") == "in_sync", 60, interval_s=0.005, what="S4")
        secs = time.monotonic() - t
        time.sleep(0.3)  # the final ACK/DONE segments are acknowledged
        report("S4 no-op sync", 0, secs, wire(b, a), a, b)
    finally:
        a.close()
        b.close()
        c.close()
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
