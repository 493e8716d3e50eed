#!/usr/bin/python3
"""API write benchmark: documents/s and latency of writes through fieldsyncd's Unix socket.

Starts a real fieldsyncd on a temporary data directory (the integration harness), creates a
project, and writes the field-observation workload (bench/workload/observations.py, or
--workload) over ONE keep-alive connection:

  single   one POST /v1/projects/{pid}/docs/obs?id=<id> per document
  batched  POST /v1/projects/{pid}/batch with --batch documents per request

Prints docs/s, p50/p99 latency per request and the daemon's CPU time per document (utime +
stime from /proc) for each mode (and --json for machines).

    bench/api_bench.py [--docs 2000] [--batched-docs 20000] [--batch 500] [--no-durable]
                       [--prebuild] [--fieldsyncd build/daemon/fieldsyncd]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from fieldsync_harness import Daemon, request  # noqa: E402

DEFAULT_WORKLOAD = os.path.join(HERE, "workload", "observations.py")


def percentile(values, p):
    s = sorted(values)
    if not s:
        return 0.0
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


def load_docs(workload, n, seed):
    out = subprocess.run([sys.executable, workload, str(n), "--seed", str(seed)],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def load_batches(d, pid, coll, docs, per_request=1000):
    """Writes workload documents (JSON lines) into `coll` under their own ids, in batches."""
    conn = d.unix_connection(timeout=600)
    for i in range(0, len(docs), per_request):
        body = '{"writes":[' + ",".join(
            '{"collection":"%s","id":%s,"body":%s}' % (coll, json.dumps(json.loads(t)["id"]), t)
            for t in docs[i:i + per_request]) + "]}"
        r = request(conn, "POST", "/v1/projects/%s/batch" % pid, body)
        if r.status != 200:
            raise SystemExit("load failed: %r" % r)
    conn.close()


def update_batch(pid, docs, writer, i, n=100):
    """The i-th batch of writer `writer`: n workload documents under new ids in "updates"."""
    part = docs[(i * n) % len(docs):(i * n) % len(docs) + n]
    body = '{"writes":[' + ",".join(
        '{"collection":"updates","id":"w%d-%d-%d","body":%s}' % (writer, i, j, t)
        for j, t in enumerate(part)) + "]}"
    return "POST", "/v1/projects/%s/batch" % pid, body


def daemon_cpu_s(d):
    """utime + stime of the daemon process so far, in seconds (/proc/<pid>/stat)."""
    with open("/proc/%d/stat" % d.proc.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(name, n_docs, elapsed, latencies_s, requests, cpu_s):
    return {
        "daemon_cpu_us_per_doc": round(cpu_s * 1e6 / n_docs, 2),
        "mode": name,
        "docs": n_docs,
        "requests": requests,
        "seconds": round(elapsed, 3),
        "docs_per_s": round(n_docs / elapsed, 1),
        "p50_ms": round(percentile(latencies_s, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies_s, 99) * 1000, 3),
        "mean_ms": round(statistics.mean(latencies_s) * 1000, 3),
    }


def bench_single(d, pid, docs):
    conn = d.unix_connection()
    lat = []
    c0 = daemon_cpu_s(d)
    t0 = time.perf_counter()
    for text in docs:
        doc_id = json.loads(text)["id"]
        s = time.perf_counter()
        r = request(conn, "POST", "/v1/projects/%s/docs/obs?id=%s" % (pid, doc_id), text)
        lat.append(time.perf_counter() - s)
        if r.status != 201:
            raise SystemExit("write failed: %r" % r)
    elapsed = time.perf_counter() - t0
    conn.close()
    return report("single", len(docs), elapsed, lat, len(docs), daemon_cpu_s(d) - c0)


def batch_body(part):
    # Bodies are spliced as text so the daemon stores them byte for byte.
    return '{"writes":[' + ",".join(
        '{"collection":"obs_b","id":%s,"body":%s}' % (json.dumps(json.loads(t)["id"]), t) for t in part) + "]}"


def bench_batched(d, pid, docs, batch, prebuild):
    conn = d.unix_connection()
    lat = []
    requests = 0
    built = [batch_body(docs[i:i + batch]) for i in range(0, len(docs), batch)] if prebuild else None
    c0 = daemon_cpu_s(d)
    t0 = time.perf_counter()
    for i in range(0, len(docs), batch):
        body = built[i // batch] if prebuild else batch_body(docs[i:i + batch])
        s = time.perf_counter()
        r = request(conn, "POST", "/v1/projects/%s/batch" % pid, body)
        lat.append(time.perf_counter() - s)
        requests += 1
        if r.status != 200:
            raise SystemExit("batch failed: %r" % r)
    elapsed = time.perf_counter() - t0
    conn.close()
    return report("batched(%d)" % batch, len(docs), elapsed, lat, requests, daemon_cpu_s(d) - c0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000, help="documents for the single-write run")
    ap.add_argument("--batched-docs", type=int, default=20000, help="documents for the batched run")
    ap.add_argument("--batch", type=int, default=500, help="documents per batch request")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-durable", action="store_true", help="storage.durable=false (no fsync per commit)")
    ap.add_argument("--workload", default=DEFAULT_WORKLOAD)
    ap.add_argument("--fieldsyncd", default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--prebuild", action="store_true",
                    help="build every batch request before the timed run (the client then only sends)")
    a = ap.parse_args()

    docs = load_docs(a.workload, max(a.docs, a.batched_docs), a.seed)
    avg = sum(len(x) for x in docs) / len(docs)
    settings = {"storage.durable": "false" if a.no_durable else "true", "api.max_body_bytes": 64 << 20,
                "storage.max_batch_docs": max(a.batch, 10000)}
    with Daemon(a.fieldsyncd, name="bench", settings=settings) as d:
        pid = d.create_project("bench")
        results = [bench_single(d, pid, docs[:a.docs]),
                   bench_batched(d, pid, docs[:a.batched_docs], a.batch, a.prebuild)]
    meta = {"avg_doc_bytes": round(avg), "durable": not a.no_durable, "transport": "unix socket, keep-alive"}
    if a.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
        return
    print("workload: %d-byte observations, durable=%s, %s" % (meta["avg_doc_bytes"], meta["durable"], meta["transport"]))
    print("%-14s %8s %9s %10s %9s %9s %14s" % ("mode", "docs", "seconds", "docs/s", "p50 ms", "p99 ms",
                                              "daemon us/doc"))
    for r in results:
        print("%-14s %8d %9.3f %10.1f %9.3f %9.3f %14.2f" % (r["mode"], r["docs"], r["seconds"], r["docs_per_s"],
                                                           r["p50_ms"], r["p99_ms"], r["daemon_cpu_us_per_doc"]))


if __name__ == "__main__":
    main()
