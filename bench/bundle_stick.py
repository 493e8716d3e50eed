#!/usr/bin/python3
"""Photos on a USB stick shared by a team (bench/README.md "Blobs by USB stick"): two real
fieldsyncd daemons, A with N photos (200 KB each) referred to by N documents, and B, which
has joined and holds nothing. Each runs `syncctl bundle sync STICK --blobs all` in turn:
A, B, A. Printed: the size of A's file after its first turn (everything), and of both files
after the third turn, when each device's own file has told the other what it holds.

Usage: bench/bundle_stick.py [--build DIR] [--photos 50]   (python3 stdlib)
"""
import argparse
import glob
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from fieldsync_harness import Daemon, distinct_bytes  # noqa: E402

V = "/v1/projects"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build-release"))
    ap.add_argument("--photos", type=int, default=50)
    args = ap.parse_args()
    os.environ["SYNCCTL"] = os.path.join(args.build, "cli", "syncctl")
    binary = os.path.join(args.build, "daemon", "fieldsyncd")
    settings = {"discovery.enabled": "false", "daemon.log_level": "warn"}
    a = Daemon(binary, name="stick-a", settings=settings).start()
    b = Daemon(binary, name="stick-b", settings=settings).start()
    stick = tempfile.mkdtemp(prefix="fs-bench-stick-")
    try:
        pid = a.create_project("survey")
        assert b.unix("POST", V + "/import", a.unix("GET", V + "/%s/secret" % pid).json()).status == 201
        writes = []
        for i in range(args.photos):
            r = a.unix("POST", V + "/%s/blobs" % pid, distinct_bytes(200 * 1024, 10 + i),
                       {"Content-Type": "application/octet-stream"})
            assert r.status == 201, r
            writes.append({"collection": "obs", "id": "d%03d" % i, "body": {"n": i, "photo": r.json()["ref"]}})
        assert a.unix("POST", V + "/%s/batch" % pid, {"writes": writes}).status == 200

        def turn(d):
            r = d.syncctl("bundle", "sync", stick, "--blobs", "all", timeout=300)
            assert r.returncode == 0, r.stdout + r.stderr

        def sizes():
            return sorted(os.path.getsize(f) for f in glob.glob(os.path.join(stick, "*.bundle")))
        turn(a)
        first = sizes()
        turn(b)
        turn(a)
        print("%d photos of 200 KB: A's file after its first turn %d bytes; after A, B, A both files: %s bytes"
              % (args.photos, first[0], ", ".join(str(s) for s in sizes())))
    finally:
        a.close()
        b.close()
        shutil.rmtree(stick, ignore_errors=True)


if __name__ == "__main__":
    main()
