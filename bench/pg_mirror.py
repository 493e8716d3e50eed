#!/usr/bin/python3
"""PostgreSQL mirror benchmark (bench/README.md "PostgreSQL mirror"): real fieldsyncd
processes on loopback and a real PostgreSQL started in a temporary directory
(tests/integration/pg_server.py), in one run:

M1  mirror throughput: a hub holds N workload observations (written through the API with the
    mirror off), then the mirror is switched on (restart with mirror.postgres) and mirrors them
    all: documents per second into PostgreSQL, until its status says it is current.
M2  the same N written through the API with the mirror on: how far behind the mirror falls and
    how long after the last write PostgreSQL has every row.
M3  delay from a write on a phone to its row in PostgreSQL through one relay: phone -> laptop ->
    hub -> PostgreSQL, K single writes one after the other (median and worst).

Usage: bench/pg_mirror.py [N] [--build DIR] [--delays K] [--set KEY=VALUE ...]
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, HERE)
from fieldsync_harness import Daemon, wait_until  # noqa: E402
from pg_server import PostgresServer  # noqa: E402
from sync_daemons import V, observations, write  # noqa: E402

FAST = {"storage.durable": "false", "discovery.enabled": "false", "sync.retry_min_ms": "100",
        "sync.retry_max_ms": "1000", "mirror.retry_min_ms": "100", "mirror.retry_max_ms": "1000"}


def mirror_done(d, pid):
    m = d.unix("GET", "/v1/status").json()["mirror"]
    for p in m.get("projects", []):
        if p["project"] == pid and p["behind"] == 0 and p["mirrored_seq"] > 0:
            return m
    return None


def rows(pg, pid):
    return int(pg.value("SELECT count(*) FROM fieldsync.documents WHERE project = '%s'" % pid)
               or 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=100000)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build-rel"))
    ap.add_argument("--delays", type=int, default=50)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    binary = os.path.join(args.build, "daemon", "fieldsyncd")
    extra = dict(kv.split("=", 1) for kv in args.set)
    docs = observations(args.n)
    pg = PostgresServer().start()
    daemons = []

    def daemon(name, **settings):
        s = dict(FAST)
        s["daemon.device_name"] = name
        s.update(extra)
        s.update(settings)
        d = Daemon(binary=binary, name=name, settings=s).start()
        daemons.append(d)
        return d

    try:
        # M1: catch up from nothing.
        hub = daemon("hub")
        pid = hub.create_project("bench")
        write(hub, pid, docs)
        hub.stop()
        hub.settings["mirror.postgres"] = pg.conninfo()
        t0 = time.monotonic()
        hub.start()
        wait_until(lambda: mirror_done(hub, pid), 3600, interval_s=0.05, what="M1")
        secs = time.monotonic() - t0
        n = rows(pg, pid)
        assert n == args.n, n
        print("M1 catch-up of %d documents: %.2f s, %.0f docs/s into PostgreSQL "
              "(daemon start included)" % (n, secs, n / secs), flush=True)

        # M2: live, while the API writes.
        pid2 = hub.create_project("bench-live")
        t0 = time.monotonic()
        write(hub, pid2, docs)
        t_written = time.monotonic()
        wait_until(lambda: mirror_done(hub, pid2), 3600, interval_s=0.05, what="M2")
        t_done = time.monotonic()
        assert rows(pg, pid2) == args.n
        print("M2 %d documents written through the API in %.2f s (%.0f docs/s); PostgreSQL had "
              "every row %.2f s after the last write" % (args.n, t_written - t0,
                                                          args.n / (t_written - t0),
                                                          t_done - t_written), flush=True)

        # M3: phone -> laptop -> hub -> PostgreSQL.
        phone = daemon("phone")
        laptop = daemon("laptop")
        pid3 = hub.create_project("bench-delay")
        sec = hub.unix("GET", V + "/%s/secret" % pid3).json()
        for d in (phone, laptop):
            assert d.unix("POST", V + "/import", sec).status == 201
        for d, other in ((phone, laptop), (laptop, hub)):
            st = other.unix("GET", "/v1/status").json()
            r = d.unix("POST", "/v1/peers", {"address": "127.0.0.1:%d" % st["peers"]["listen_port"],
                                            "device_id": other.device_id, "name": other.name})
            assert r.status == 201, r
        delays = []
        for i in range(args.delays):
            doc_id = "delay-%d" % i
            t0 = time.monotonic()
            r = phone.unix("PUT", V + "/%s/docs/obs/%s" % (pid3, doc_id), {"i": i})
            assert r.status in (200, 201), r
            wait_until(lambda: pg.value("SELECT 1 FROM fieldsync.documents WHERE id = '%s'"
                                        % doc_id) == "1", 60, interval_s=0.002, what="row")
            delays.append(time.monotonic() - t0)
        delays.sort()
        print("M3 phone -> laptop -> hub -> PostgreSQL, %d writes: median %.1f ms, p90 %.1f ms, "
              "worst %.1f ms" % (len(delays), statistics.median(delays) * 1000,
                                 delays[int(len(delays) * 0.9) - 1] * 1000, delays[-1] * 1000),
              flush=True)
    finally:
        for d in daemons:
            d.close()
        pg.close()


if __name__ == "__main__":
    main()
