#!/usr/bin/python3
"""SSE fan-out benchmark: the daemon's cost of slow subscribers on one project's changes feed.

For each fieldsyncd binary given (run one after the other, --rounds times, interleaved, so the
figures of old and new builds come from the same run), starts a real daemon on a temporary data
directory (the integration harness), opens --subscribers SSE streams (?since=now) over the Unix
socket that never read (receive buffer 4 KiB), then writes bursts of --burst changes, one
POST /v1/projects/{pid}/docs/obs?id=... each over one keep-alive connection, until every
subscriber has been disconnected at api.max_stream_buffer_bytes. Reports per daemon and round:
bursts needed, wall seconds from the first write until the last subscriber was dropped, and the
daemon's CPU seconds over that time (user + system, from /proc); then the medians per daemon.

    bench/sse_bench.py [--subscribers 50] [--burst 1000] [--rounds 2]
                       --fieldsyncd old=/path/fieldsyncd --fieldsyncd new=build/daemon/fieldsyncd
"""
import argparse
import json
import os
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from fieldsync_harness import Daemon, request, wait_until  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def streams(d):
    return d.unix("GET", "/v1/status").json()["api"]["streams"]


def run_one(binary, subscribers, burst, max_bursts):
    settings = {"api.max_streams": subscribers + 10,
                "api.max_unix_connections": subscribers + 20,
                "api.request_timeout_ms": 600000, "api.sse_heartbeat_ms": 600000,
                "storage.durable": "false"}
    with Daemon(binary=binary, name="sse", settings=settings) as d:
        pid = d.create_project("sse")
        base = "/v1/projects/" + pid
        subs = []
        for _ in range(subscribers):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(d.socket_path)
            s.sendall(("GET %s/changes?feed=sse&since=now HTTP/1.1\r\nHost: localhost\r\n\r\n"
                       % base).encode())
            subs.append(s)
        wait_until(lambda: streams(d) == subscribers, 30, what="open SSE streams")
        conn = d.unix_connection(timeout=120)
        body = json.dumps({"site": "plot-7", "species": "Quercus robur", "count": 3,
                           "notes": "x" * 300}).encode()
        cpu0 = cpu_seconds(d.proc.pid)
        t0 = time.monotonic()
        bursts = 0
        n = 0
        while bursts < max_bursts:
            for _ in range(burst):
                r = request(conn, "POST", "%s/docs/obs?id=o%d" % (base, n), body,
                            {"Content-Type": "application/json"})
                if r.status not in (200, 201):
                    raise AssertionError(r)
                n += 1
            bursts += 1
            if streams(d) == 0:
                break
        wait_until(lambda: streams(d) == 0, 120, interval_s=0.01, what="subscribers dropped")
        wall = time.monotonic() - t0
        cpu = cpu_seconds(d.proc.pid) - cpu0
        conn.close()
        for s in subs:
            s.close()
        return {"bursts": bursts, "changes": n, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fieldsyncd", action="append", required=True,
                    help="label=path of a fieldsyncd binary (repeat to compare)")
    ap.add_argument("--subscribers", type=int, default=50)
    ap.add_argument("--burst", type=int, default=1000)
    ap.add_argument("--max-bursts", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    daemons = [spec.split("=", 1) for spec in args.fieldsyncd]
    results = {label: [] for label, _ in daemons}
    for rnd in range(args.rounds):
        for label, path in daemons:
            res = run_one(path, args.subscribers, args.burst, args.max_bursts)
            res.update({"build": label, "round": rnd + 1})
            results[label].append(res)
            print(json.dumps(res), flush=True)
    for label, runs in results.items():
        print(json.dumps({"build": label, "rounds": len(runs),
                          "median_wall_s": statistics.median(r["wall_s"] for r in runs),
                          "median_cpu_s": statistics.median(r["cpu_s"] for r in runs)}),
              flush=True)


if __name__ == "__main__":
    main()
