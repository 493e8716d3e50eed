#!/usr/bin/python3
"""Does a heavy query stall the daemon? GET /v1/status latency while clients run queries.

Starts two real fieldsyncd processes side by side on temporary data directories (the
integration harness), one with api.reader_threads = 0 (every request on the event loop, as
before reader threads) and one with the default (2), loads the same N observations
(bench/workload/observations.py) into each, then for each daemon in turn:

  idle      GET /v1/status over one keep-alive connection, R times, nothing else running
  queries   the same, while Q clients each loop a heavy query over the collection (a selector
            that matches about a tenth of the documents, sorted by a nested field, limit 50)
            and W clients write batches of 100 documents

and prints p50/p99/max of the status requests, the queries and write batches completed per
second, and the requests that failed (a connection the daemon dropped), per daemon.

    bench/read_stall_bench.py [--docs 20000] [--requests 400] [--queries 4] [--writers 2]
                              [--fieldsyncd build/daemon/fieldsyncd]
"""
import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from api_bench import (DEFAULT_WORKLOAD, load_batches, load_docs, percentile,  # noqa: E402
                       update_batch)
from fieldsync_harness import Daemon, request  # noqa: E402


def status_latencies(d, n):
    conn = d.unix_connection()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = request(conn, "GET", "/v1/status")
        out.append(time.perf_counter() - t)
        if r.status != 200:
            raise SystemExit("status failed: %r" % r)
    conn.close()
    return out


def run(d, pid, args, docs):
    sel = json.dumps({"range": {"path": "lat", "gte": -4.2, "lt": -4.0}})
    query = "/v1/projects/%s/docs/observations?%s" % (pid, urllib.parse.urlencode(
        {"selector": sel, "sort": "-tags.count", "limit": 50}))
    idle = status_latencies(d, args.requests)
    stop = threading.Event()
    done = {"queries": 0, "writes": 0, "failed": 0}
    lock = threading.Lock()

    def loop(make_request, counter):
        """Sends requests until stopped; a refused or dropped one is counted and the
        connection opened again (a stalled daemon times out a request it cannot read)."""
        conn = d.unix_connection(timeout=600)
        i = 0
        while not stop.is_set():
            try:
                method, path, body = make_request(i)
                r = request(conn, method, path, body)
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = d.unix_connection(timeout=600)
            with lock:
                done[counter if ok else "failed"] += 1
            i += 1
        conn.close()

    def querier():
        loop(lambda i: ("GET", query, None), "queries")

    def writer(k):
        loop(lambda i: update_batch(pid, docs, k, i), "writes")

    threads = [threading.Thread(target=querier) for _ in range(args.queries)]
    threads += [threading.Thread(target=writer, args=(k,)) for k in range(args.writers)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the load is running before the measured requests
    t0 = time.perf_counter()
    busy = status_latencies(d, args.requests)
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join()
    ms = lambda v: round(v * 1000, 2)  # noqa: E731
    return {"idle p50 ms": ms(percentile(idle, 50)), "idle p99 ms": ms(percentile(idle, 99)),
            "busy p50 ms": ms(percentile(busy, 50)), "busy p99 ms": ms(percentile(busy, 99)),
            "busy max ms": ms(max(busy)),
            "queries/s": round(done["queries"] / (elapsed + 0.5), 1),
            "write batches/s": round(done["writes"] / (elapsed + 0.5), 1),
            "failed requests": done["failed"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--queries", type=int, default=4)
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--fieldsyncd", default=None)
    args = ap.parse_args()
    docs = load_docs(DEFAULT_WORKLOAD, args.docs, 1)
    results = {}
    for threads in (0, 2):
        settings = {"storage.durable": "false", "api.max_body_bytes": 64 << 20,
                    "api.reader_threads": threads}
        with Daemon(args.fieldsyncd, name="readers%d" % threads, settings=settings) as d:
            pid = d.create_project("bench")
            load_batches(d, pid, "observations", docs)
            results["api.reader_threads = %d" % threads] = run(d, pid, args, docs)
    keys = list(next(iter(results.values())).keys())
    print("%d documents; %d status requests each; %d query clients, %d writers" % (
        args.docs, args.requests, args.queries, args.writers))
    print("%-22s" % "" + "".join("%24s" % k for k in results))
    for k in keys:
        print("%-22s" % k + "".join("%24s" % results[r][k] for r in results))


if __name__ == "__main__":
    main()
