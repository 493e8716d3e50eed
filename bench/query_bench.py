#!/usr/bin/python3
"""Indexes and a daemon under load: queries through an index against a read of the whole
collection, and GET /v1/status latency while queries, write batches and a large sync run.

Part 1 (one real fieldsyncd, N documents of bench/workload/observations.py in a collection):
each query below runs --repeat times without an index, then the indexes are declared (the time
to build them over the N documents is measured), then each runs again through its index:

  species   selector eq on tags.species (about 1 in 12 match), first page of 50
  lat+sort  selector range on lat (about 1 in 10), sorted by -tags.count, first page of 50
  recent    sort=-created_at, first page of 50

Part 2 (two real fieldsyncd on 127.0.0.1, storage.durable = true): the measured daemon holds
--local documents; the other holds --sync documents of the same project. With 4 clients looping
a heavy query (the lat+sort query, unindexed: a scan and sort of the collection) and 2 clients
writing batches of 100, the measured daemon is told of the other (it dials, TLS, and pulls the
--sync documents) while GET /v1/status is timed on one keep-alive connection until the sync is
done. Run once with api.max_group_writes = 0 (writes commit on the event loop) and once with the
default writer thread.

    bench/query_bench.py [--docs 100000] [--repeat 10] [--local 20000] [--sync 100000]
                         [--fieldsyncd build-rel/daemon/fieldsyncd]
"""
import argparse
import http.client
import json
import multiprocessing
import os
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from api_bench import (DEFAULT_WORKLOAD, load_batches, load_docs, percentile,  # noqa: E402
                       update_batch)
from fieldsync_harness import Daemon, add_peer, request, share  # noqa: E402

HEAVY = {"selector": json.dumps({"range": {"path": "lat", "gte": -4.2, "lt": -4.0}}),
         "sort": "-tags.count", "limit": 50}
QUERIES = [
    ("species", {"selector": json.dumps({"eq": {"path": "tags.species", "value": "harpy eagle"}}),
                 "limit": 50}),
    ("lat+sort", HEAVY),
    ("recent", {"sort": "-created_at", "limit": 50}),
]
INDEXES = {"by_species": ["tags.species"], "by_lat": ["lat"], "by_created": ["created_at"]}


def timed_query(conn, pid, coll, params):
    path = "/v1/projects/%s/docs/%s?%s" % (pid, coll, urllib.parse.urlencode(params))
    t = time.perf_counter()
    r = request(conn, "GET", path)
    elapsed = time.perf_counter() - t
    if r.status != 200:
        raise SystemExit("query failed: %r" % r)
    return elapsed, r.json()["plan"]


def part1(args, docs):
    settings = {"api.max_body_bytes": 64 << 20, "storage.durable": "false"}
    rows = {}
    with Daemon(args.fieldsyncd, name="indexes", settings=settings) as d:
        pid = d.create_project("bench")
        load_batches(d, pid, "obs", docs)
        conn = d.unix_connection(timeout=600)
        for name, params in QUERIES:
            times, plan = [], None
            for _ in range(args.repeat):
                t, plan = timed_query(conn, pid, "obs", params)
                times.append(t)
            rows[name] = {"scan ms": round(percentile(times, 50) * 1000, 2),
                          "scan examined": plan["examined"]}
        t0 = time.perf_counter()
        for name, fields in INDEXES.items():
            r = request(conn, "PUT", "/v1/projects/%s/indexes/%s" % (pid, name),
                        json.dumps({"collection": "obs", "fields": fields}))
            if r.status != 200:
                raise SystemExit("index failed: %r" % r)
        while not all(i["ready"] for i in request(
                conn, "GET", "/v1/projects/%s/indexes" % pid).json()["indexes"]):
            time.sleep(0.05)
        build_s = time.perf_counter() - t0
        for name, params in QUERIES:
            times, plan = [], None
            for _ in range(args.repeat):
                t, plan = timed_query(conn, pid, "obs", params)
                times.append(t)
            rows[name].update({"index ms": round(percentile(times, 50) * 1000, 2),
                               "index examined": plan["examined"], "index": plan["index"]})
        conn.close()
    print("Part 1: %d documents, median of %d runs per query; 3 indexes built in %.1f s" % (
        len(docs), args.repeat, build_s))
    cols = ["scan ms", "scan examined", "index ms", "index examined", "index"]
    print("%-10s" % "" + "".join("%16s" % c for c in cols))
    for name, row in rows.items():
        print("%-10s" % name + "".join("%16s" % row[c] for c in cols))


def status_under_load(args, local_docs, sync_docs, group_writes):
    settings = {"api.max_body_bytes": 64 << 20, "api.max_group_writes": group_writes}
    # The other daemon stands for another device: at nice 10 it does not take from the measured
    # one the cores it would not share with a device across the room.
    far_prefix = ["nice", "-n", str(args.far_nice)] if args.far_nice else []
    with Daemon(args.fieldsyncd, name="hub%d" % group_writes, settings=settings) as hub, \
            Daemon(args.fieldsyncd, name="far%d" % group_writes, settings=settings,
                   prefix=far_prefix) as far:
        pid = share(hub, far)
        load_batches(hub, pid, "obs", local_docs)
        load_batches(far, pid, "field", sync_docs)
        last = json.loads(sync_docs[-1])["id"]
        query = "/v1/projects/%s/docs/obs?%s" % (pid, urllib.parse.urlencode(HEAVY))
        # The load runs in processes of its own: the timed status requests share no interpreter
        # lock with it, only the machine.
        stop = multiprocessing.Event()
        done = {k: multiprocessing.Value("l", 0) for k in ("queries", "writes", "failed")}

        def loop(make_request, counter):
            conn = hub.unix_connection(timeout=600)
            i = 0
            while not stop.is_set():
                try:
                    method, path, body = make_request(i)
                    ok = request(conn, method, path, body).status == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                    conn.close()
                    conn = hub.unix_connection(timeout=600)
                with done[counter if ok else "failed"].get_lock():
                    done[counter if ok else "failed"].value += 1
                i += 1
            conn.close()

        ctx = multiprocessing.get_context("fork")
        threads = [ctx.Process(target=loop, args=(lambda i: ("GET", query, None), "queries"))
                   for _ in range(4)]
        threads += [ctx.Process(target=loop, args=(lambda i, k=k: update_batch(pid, local_docs, k, i), "writes"))
                    for k in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        add_peer(hub, far)
        conn = hub.unix_connection()
        check = hub.unix_connection()
        lat = []
        t0 = time.perf_counter()
        synced_at = None
        while synced_at is None or len(lat) < args.min_requests:
            t = time.perf_counter()
            r = request(conn, "GET", "/v1/status")
            lat.append(time.perf_counter() - t)
            if r.status != 200:
                raise SystemExit("status failed: %r" % r)
            if synced_at is None and len(lat) % 20 == 0:
                got = request(check, "GET", "/v1/projects/%s/docs/field?%s" % (
                    pid, urllib.parse.urlencode({"keys": json.dumps([last])})))
                if "error" not in got.json()["docs"][0]:
                    synced_at = time.perf_counter() - t0
            if time.perf_counter() - t0 > 600:
                raise SystemExit("the sync did not finish in 10 minutes")
        elapsed = time.perf_counter() - t0
        stop.set()
        for t in threads:
            t.join()
        conn.close()
        check.close()
        ms = lambda v: round(v * 1000, 2)  # noqa: E731
        return {"status requests": len(lat), "status p50 ms": ms(percentile(lat, 50)),
                "status p99 ms": ms(percentile(lat, 99)), "status max ms": ms(max(lat)),
                "sync of %d s" % len(sync_docs): round(synced_at, 1),
                "heavy queries/s": round(done["queries"].value / elapsed, 1),
                "write batches/s": round(done["writes"].value / elapsed, 1),
                "failed requests": done["failed"].value}


def part2(args):
    local_docs = load_docs(DEFAULT_WORKLOAD, args.local, 1)
    sync_docs = load_docs(DEFAULT_WORKLOAD, args.sync, 2)
    results = {}
    for group in (0, 64):
        results["api.max_group_writes = %d" % group] = status_under_load(
            args, local_docs, sync_docs, group)
    keys = list(next(iter(results.values())).keys())
    print("Part 2: %d local documents, a sync of %d, 4 heavy query clients, 2 batch writers" % (
        args.local, args.sync))
    print("%-22s" % "" + "".join("%28s" % k for k in results))
    for k in keys:
        print("%-22s" % k + "".join("%28s" % results[r][k] for r in results))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=100000)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--local", type=int, default=20000)
    ap.add_argument("--sync", type=int, default=100000)
    ap.add_argument("--min-requests", type=int, default=1000)
    ap.add_argument("--far-nice", type=int, default=10)
    ap.add_argument("--fieldsyncd", default=None)
    ap.add_argument("--part", choices=["1", "2", "both"], default="both")
    args = ap.parse_args()
    if args.part in ("1", "both"):
        part1(args, load_docs(DEFAULT_WORKLOAD, args.docs, 1))
    if args.part in ("2", "both"):
        part2(args)


if __name__ == "__main__":
    main()
