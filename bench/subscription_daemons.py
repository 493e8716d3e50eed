#!/usr/bin/python3
"""Subscription benchmark with real fieldsyncd processes on loopback (bench/README.md
"Subscriptions"), side by side in one run.

Daemon A holds N observations (written through the API). F, a full replica, and P, a phone
subscribed to about 1% of them (a lat/lon box of 0.2 x 0.2 degrees of the workload's 2 x 2),
each sync them from A: P1/F1 initial sync (time, bytes on the wire both ways including TLS, from
TCP_INFO, documents held, bytes the store holds on disk), P2/F2 incremental (1% updated + 1%
new, pushed live), P3/F3 no-op (the device restarts and runs one full session).

Usage: bench/subscription_daemons.py [N] [--build DIR] [--set KEY=VALUE ...]
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, HERE)
from fieldsync_harness import Daemon, wait_until  # noqa: E402
from sync_daemons import V, observations, peer, wire, write  # noqa: E402

BOX = {"south": -3.2, "north": -3.0, "west": -60.2, "east": -60.0}
SUBSCRIPTION = {"collections": ["observations"], "where": {"bbox": BOX}}


def in_box(o):
    return BOX["south"] <= o["lat"] <= BOX["north"] and BOX["west"] <= o["lon"] <= BOX["east"]


def store_bytes(d):
    """Bytes the device's LMDB file takes on disk (allocated blocks)."""
    st = os.stat(os.path.join(d.data_dir, "db", "data.mdb"))
    return st.st_blocks * 512


def held(d, pid):
    n, cursor = 0, None
    while True:
        q = "?limit=1000" + ("&after=" + cursor if cursor else "")
        r = d.unix("GET", V + "/%s/docs/observations%s" % (pid, q), timeout=120).json()
        n += len(r["docs"])
        cursor = r.get("next")
        if not cursor:
            return n


def in_sync(d, a):
    return peer(d, a).get("state") == "in_sync"


def report(name, secs, wire_bytes, docs_held, disk):
    print("%-26s time=%8.3f s  wire=%11d B  held=%7d docs  store=%8.1f MB"
          % (name, secs, wire_bytes, docs_held, disk / 1e6), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=100000)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build-release"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    binary = os.path.join(args.build, "daemon", "fieldsyncd")
    n = args.n
    base = observations(n)
    extra = observations(n + n // 100)[n:]
    updates = observations(n, "--update-fraction", "0.01")
    settings = {"sync.listen_address": "127.0.0.1", "daemon.log_level": "warn"}
    for kv in args.set:
        key, _, value = kv.partition("=")
        settings[key] = value
    print("N=%d, in the box: %d initially (%.2f%%), %d after the incremental step"
          % (n, sum(map(in_box, base)), 100.0 * sum(map(in_box, base)) / n,
             sum(map(in_box, {o["id"]: o for o in base + updates + extra}.values()))), flush=True)

    a = Daemon(binary, name="bench-a", settings=dict(settings)).start()
    devices = {"F": Daemon(binary, name="bench-f", settings=dict(settings)).start(),
               "P": Daemon(binary, name="bench-p", settings=dict(settings)).start()}
    try:
        pid = a.create_project("bench")
        sec = a.unix("GET", V + "/%s/secret" % pid).json()
        for d in devices.values():
            assert d.unix("POST", V + "/import", sec).status == 201
        r = devices["P"].unix("PUT", V + "/%s/subscription" % pid, SUBSCRIPTION)
        assert r.status == 200, r
        write(a, pid, base)
        a_sync = "127.0.0.1:%d" % a.unix("GET", "/v1/status").json()["peers"]["listen_port"]
        want_p = sum(map(in_box, base))

        for name, d in devices.items():
            t = time.monotonic()
            r = d.unix("POST", "/v1/peers", {"address": a_sync, "device_id": a.device_id})
            assert r.status == 201, r
            wait_until(lambda: in_sync(d, a), 900, interval_s=0.01, what=name + "1")
            secs = time.monotonic() - t
            docs = held(d, pid)
            assert docs == (want_p if name == "P" else n), (name, docs)
            report(name + "1 initial sync", secs, wire(d, a), docs, store_bytes(d))

        w0 = {name: wire(d, a) for name, d in devices.items()}
        t = time.monotonic()
        write(a, pid, updates)
        write(a, pid, extra)
        last = extra[-1]["id"]
        wait_until(lambda: all(in_sync(d, a) for d in devices.values()) and
                   devices["F"].unix("GET", V + "/%s/docs/observations/%s" % (pid, last)).status
                   == 200 and in_sync(devices["P"], a), 300, interval_s=0.01, what="2")
        secs = time.monotonic() - t
        for name, d in devices.items():
            report(name + "2 incremental (live)", secs, wire(d, a) - w0[name], held(d, pid),
                   store_bytes(d))

        for name, d in devices.items():
            d.stop()
            d.settings["peer.a.address"] = a_sync
            d.settings["peer.a.device"] = a.device_id
            t = time.monotonic()
            d.start()
            wait_until(lambda: in_sync(d, a), 60, interval_s=0.005, what=name + "3")
            secs = time.monotonic() - t
            time.sleep(0.3)  # the final segments are acknowledged
            report(name + "3 no-op sync", secs, wire(d, a), held(d, pid), store_bytes(d))
    finally:
        a.close()
        for d in devices.values():
            d.close()


if __name__ == "__main__":
    main()
