#!/usr/bin/python3
"""Bluetooth LE benchmark: two real fieldsyncd processes that reach each other only through the
fake BlueZ of the integration tests (tests/integration/fake_bluez.py: private D-Bus buses, a
link at 20 KB/s per direction and ATT MTU 185), bench/README.md "Bluetooth LE".

L1 latency: on an idle link in sync, the time from a write on A until the document is readable
on B (median and max of R writes).
L2 bulk: N observations (bench/workload, about 500 bytes each) written on A at once, time until
B holds the same version vector; bytes that crossed the link per document (both directions,
everything: GATT framing, TLS, sync frames, ACKs), from the fake's own count.
L3 a new write during a backlog: a third daemon C (no BLE) wrote N documents that A holds, B
gets them from A over BLE; meanwhile A writes one document: time until B has it, against the
time the backlog takes (live pushes go ahead of other authors' backlog on a slow link).
L4 no-op cost: bytes on the link per minute of an idle session in sync (keepalive PINGs), and a
no-op session: B restarts, the bytes and time until it is in sync again with nothing to send.

This measures fieldsync over a fake BlueZ on one machine, not a radio.

Usage: bench/ble_daemons.py [N] [--build DIR] [--bandwidth B] [--mtu M] [--idle-s S]
                            [--set KEY=VALUE ...]   (python3 stdlib + python3-dbus, like the tests)
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from fieldsync_harness import FAST, Daemon, FakeBle, wait_until  # noqa: E402

V = "/v1/projects"
AUTO = {"discovery": {"visible": True, "policy": "auto"}}
BLE = {"ble.enabled": "true", "discovery.enabled": "false", "ble.refresh_ms": 200,
       "ble.retry_ms": 500, "ble.ip_hint": "false"}


def observations(n, *extra):
    out = subprocess.run([sys.executable, os.path.join(HERE, "workload", "observations.py"), str(n)]
                         + list(extra), capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line]


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="fsb-ble-")
        self.ble = FakeBle(os.path.join(self.tmp, "fake_bluez.log"))
        self.daemons = []

    def close(self):
        for d in self.daemons:
            d.close()
        self.ble.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def fake_bluez(self, buses):
        self.fake = self.ble.start(buses, "--bandwidth", str(self.args.bandwidth),
                                   "--mtu", str(self.args.mtu))

    def link_bytes(self):
        return int(self.ble.ctl(self.fake, "bytes").split()[1])

    def daemon(self, name, env=None, **settings):
        s = dict(FAST)
        s["daemon.device_name"] = name
        s.update(settings)
        for kv in self.args.set:
            k, v = kv.split("=", 1)
            s[k] = v
        d = Daemon(name=name, settings=s, env=env)
        self.daemons.append(d)
        return d.start()

    def has(self, d, pid, coll, doc_id):
        return d.unix("GET", V + "/%s/docs/%s/%s" % (pid, coll, doc_id)).status == 200

    def vv(self, d, pid):
        r = d.unix("GET", V + "/%s" % pid).json()
        return r.get("version_vector") or r.get("vv") or {}

    def converged(self, a, b, pid):
        pa = self.peer(b, a)
        if not pa or not pa.get("connected") or pa.get("state") != "in_sync":
            return False
        pb = self.peer(a, b)
        return bool(pb and pb.get("state") == "in_sync")

    def peer(self, d, other):
        r = d.unix("GET", "/v1/peers/%s" % other.device_id)
        return r.json() if r.status == 200 else None

    def write(self, d, pid, docs, coll="observations"):
        for i in range(0, len(docs), 1000):
            writes = [{"collection": coll, "id": o["id"], "body": o} for o in docs[i:i + 1000]]
            r = d.unix("POST", V + "/%s/batch" % pid, {"writes": writes}, timeout=120)
            assert r.status in (200, 201), r

    def run(self):
        a_ = self.args
        buses = (self.ble.bus(), self.ble.bus())
        self.fake_bluez(buses)
        A = self.daemon("alpha", env={"DBUS_SYSTEM_BUS_ADDRESS": buses[0]}, **BLE)
        B = self.daemon("beta", env={"DBUS_SYSTEM_BUS_ADDRESS": buses[1]}, **BLE)
        pid = A.create_project("bench", settings=AUTO)
        r = B.unix("POST", V + "/import", A.unix("GET", V + "/%s/secret" % pid).json())
        assert r.status == 201, r
        assert B.unix("PATCH", V + "/%s" % pid, {"settings": AUTO}).status in (200, 204)
        first = {"id": "first", "note": "hello"}
        self.write(A, pid, [first], "notes")
        wait_until(lambda: self.has(B, pid, "notes", "first"), 120, what="a first sync over BLE")
        wait_until(lambda: self.converged(A, B, pid), 60, what="in sync")
        results = {}

        # L1: latency of one new document on an idle link.
        lat = []
        for i in range(a_.rounds):
            t0 = time.monotonic()
            self.write(A, pid, [{"id": "live%d" % i, "note": "n%d" % i}], "notes")
            wait_until(lambda i=i: self.has(B, pid, "notes", "live%d" % i), 60, interval_s=0.01,
                       what="live%d on B" % i)
            lat.append(time.monotonic() - t0)
            wait_until(lambda: self.converged(A, B, pid), 60, what="in sync")
        results["L1 new document, idle link: median s"] = round(statistics.median(lat), 3)
        results["L1 new document, idle link: max s"] = round(max(lat), 3)

        # L2: N documents at once.
        docs = observations(a_.n, "--device", "alpha")
        doc_bytes = sum(len(json.dumps(o)) for o in docs)
        b0 = self.link_bytes()
        t0 = time.monotonic()
        self.write(A, pid, docs)
        wait_until(lambda: self.has(B, pid, "observations", docs[-1]["id"]) and
                   self.converged(A, B, pid), 3600, interval_s=0.05, what="B to hold all N")
        dt = time.monotonic() - t0
        moved = self.link_bytes() - b0
        results["L2 %d documents (%d body bytes): s" % (a_.n, doc_bytes)] = round(dt, 1)
        results["L2 docs/s"] = round(a_.n / dt, 1)
        results["L2 link bytes per document"] = round(moved / a_.n)
        results["L2 body bytes per document"] = round(doc_bytes / a_.n)

        # L4a: idle session in sync.
        b0 = self.link_bytes()
        time.sleep(a_.idle_s)  # the measurement itself: what an idle link carries meanwhile
        idle = self.link_bytes() - b0
        results["L4 idle session: link bytes per minute"] = round(idle * 60 / a_.idle_s)

        # L4b: a no-op session (B restarts, nothing to send either way).
        B.stop()
        wait_until(lambda: not (self.peer(A, B) or {}).get("connected"), 30, what="A sees B go")
        b0 = self.link_bytes()
        t0 = time.monotonic()
        B.start()
        wait_until(lambda: self.converged(A, B, pid), 120, interval_s=0.05,
                   what="in sync again after B restarted")
        results["L4 no-op session (B restarts): s to in sync"] = round(time.monotonic() - t0, 2)
        results["L4 no-op session: link bytes"] = self.link_bytes() - b0

        # L3: a new write of A's while another author's backlog flows to B.
        C = self.daemon("gamma", **{"ble.enabled": "false", "discovery.enabled": "false"})
        r = C.unix("POST", V + "/import", A.unix("GET", V + "/%s/secret" % pid).json())
        assert r.status == 201, r
        backlog = observations(a_.n, "--device", "gamma", "--seed", "7")
        for o in backlog:
            o["id"] = "g-" + o["id"]
        self.write(C, pid, backlog)
        a_port = A.unix("GET", "/v1/status").json()["peers"]["listen_port"]
        r = C.unix("POST", "/v1/peers", {"address": "127.0.0.1:%d" % a_port,
                                         "device_id": A.device_id})
        assert r.status in (200, 201), r
        wait_until(lambda: self.has(A, pid, "observations", backlog[-1]["id"]), 600,
                   interval_s=0.05, what="A to hold C's documents (TCP)")
        t0 = time.monotonic()
        # Into the backlog's transfer to B, A writes one document of its own.
        wait_until(lambda: sum(x["applied"] for x in ((self.peer(B, A) or {}).get("session") or
                                                       {}).get("projects", [])) >= a_.n // 10,
                   600, interval_s=0.05, what="B to apply part of the backlog")
        t1 = time.monotonic()
        self.write(A, pid, [{"id": "urgent", "note": "written during the backlog"}], "notes")
        wait_until(lambda: self.has(B, pid, "notes", "urgent"), 3600, interval_s=0.01,
                   what="the new document on B")
        t2 = time.monotonic()
        held_then = self.has(B, pid, "observations", backlog[-1]["id"])
        wait_until(lambda: self.has(B, pid, "observations", backlog[-1]["id"]), 3600,
                   interval_s=0.05, what="B to hold C's backlog")
        t3 = time.monotonic()
        results["L3 new document during a %d-document backlog: s" % a_.n] = round(t2 - t1, 2)
        results["L3 backlog already complete when it arrived"] = held_then
        results["L3 backlog: s (from A holding it to B holding it)"] = round(t3 - t0, 1)
        return results


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("n", nargs="?", type=int, default=1000)
    p.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    p.add_argument("--bandwidth", type=int, default=20000)
    p.add_argument("--mtu", type=int, default=185)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--idle-s", type=float, default=30)
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args()
    os.environ.setdefault("FIELDSYNCD", os.path.join(args.build, "daemon", "fieldsyncd"))
    os.environ.setdefault("SYNCCTL", os.path.join(args.build, "cli", "syncctl"))
    b = Bench(args)
    try:
        for k, v in b.run().items():
            print("%-60s %s" % (k, v))
    finally:
        b.close()


if __name__ == "__main__":
    main()
