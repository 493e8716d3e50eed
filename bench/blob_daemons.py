#!/usr/bin/python3
"""Blob (attachment) benchmark with real fieldsyncd processes on loopback (bench/README.md
"Blobs"), each figure measured side by side in one run:

T0 the TLS loopback limit on this machine: 100 MB through one TLS 1.3 connection
   (AES-256-GCM, OpenSSL through Python's ssl) from a sender process to a receiver process.
B1 upload of a 100 MB blob to daemon A through the local API (Unix socket).
B2 the same blob from A to an empty daemon B: from the moment B has the (tiny) document that
   refers to it, which is when B starts fetching the blob (documents first), until its last
   byte arrived, as MB/s and as a ratio of T0 (whose time starts after its TLS handshake too);
   also the time from B dialing A (connection, TLS handshake, HELLO, the document), and until B
   holds the blob (fsynced, named, recorded).
T0 and B2 are measured --rounds times, alternately (a fresh B each round), and the median of
the rounds' ratios is given: on a machine shared with other work one pair says little.
B3 a project of 1,000 documents and 200 photos (500 KB each, 100 MB) from A to an empty daemon C:
   the time until all documents are on C (they must not wait for the photos) and until all
   photos are.
Peak RSS (VmHWM) of the daemons.

Usage: bench/blob_daemons.py [--build DIR] [--mb 100] [--rounds 5] [--set KEY=VALUE ...]
(python3 stdlib + the openssl CLI)
"""
import argparse
import hashlib
import multiprocessing
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from fieldsync_harness import Daemon, distinct_bytes, wait_until  # noqa: E402

V = "/v1/projects"
MiB = 1 << 20


def vm_hwm_mb(d):
    with open("/proc/%d/status" % d.proc.pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0




# --- T0: the TLS loopback limit ---------------------------------------------------------

def _tls_receiver(port_q, certfile, keyfile, total, done_q):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(certfile, keyfile)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port_q.put(srv.getsockname()[1])
    conn, _ = srv.accept()
    s = ctx.wrap_socket(conn, server_side=True)
    got = 0
    buf = bytearray(MiB)
    while got < total:
        n = s.recv_into(buf)
        if n == 0:
            break
        got += n
    done_q.put((got, time.monotonic()))
    s.close()


def tls_limit(total, tmp):
    cert, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days",
                    "1", "-subj", "/CN=bench"], check=True, capture_output=True)
    port_q, done_q = multiprocessing.Queue(), multiprocessing.Queue()
    p = multiprocessing.Process(target=_tls_receiver, args=(port_q, cert, key, total, done_q))
    p.start()
    port = port_q.get()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
    block = os.urandom(256 * 1024)
    t = time.monotonic()
    sent = 0
    while sent < total:
        s.sendall(block[:min(len(block), total - sent)])
        sent += min(len(block), total - sent)
    got, end = done_q.get()
    s.close()
    p.join()
    assert got == total
    return end - t


# --- the daemons -------------------------------------------------------------------------

def upload(d, pid, data, content_type="image/jpeg"):
    r = d.unix("POST", V + "/%s/blobs" % pid, data, {"Content-Type": content_type}, timeout=300)
    assert r.status == 201, r
    return r.json()


def held(d, pid):
    """Blob ids held by d in the project."""
    out, after = set(), None
    while True:
        q = "?limit=1000" + ("&after=%s" % after if after else "")
        j = d.unix("GET", V + "/%s/blobs%s" % (pid, q)).json()
        out |= {b["id"] for b in j["blobs"] if b["held"]}
        after = j.get("next")
        if not after:
            return out


def add_peer(d, other):
    port = other.unix("GET", "/v1/status").json()["peers"]["listen_port"]
    r = d.unix("POST", "/v1/peers", {"address": "127.0.0.1:%d" % port,
                                     "device_id": other.device_id, "name": other.name})
    assert r.status == 201, r


def one_b2(a, b, pid, up, total):
    """B2: (seconds from B having the document to the blob's last byte, from B dialing A to the
    last byte, from B dialing A to B holding it)."""
    import threading

    def arrived():
        r = b.unix("GET", "/v1/peers/%s" % a.device_id)
        projects = ((r.json().get("session") or {}).get("projects") or []) if r.status == 200 else []
        return projects and projects[0]["blob_bytes_received"] >= total
    # B is asked as little as possible while it receives (its API shares the event loop
    # with the session): "held" by one download that waits for the blob (one byte of it),
    # the last byte by a poll every 20 ms.
    held_at = {}

    def wait_held():
        r = b.unix("GET", V + "/%s/blobs/%s?wait=29000" % (pid, up["id"]),
                   headers={"Range": "bytes=0-0"}, timeout=60)
        held_at["t"] = time.monotonic()
        held_at["status"] = r.status
    t = time.monotonic()
    add_peer(b, a)
    # (The download may be asked only once B has the document that refers to the blob.)
    wait_until(lambda: b.unix("GET", V + "/%s/docs/video/big" % pid).status == 200, 60,
               interval_s=0.002, what="the document on B")
    t_doc = time.monotonic()
    waiter = threading.Thread(target=wait_held)
    waiter.start()
    wait_until(arrived, 600, interval_s=0.02, what="the blob's bytes on B")
    t_last = time.monotonic()
    waiter.join()
    assert held_at["status"] == 206, held_at
    return t_last - t_doc, t_last - t, held_at["t"] - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build-release"))
    ap.add_argument("--mb", type=int, default=100, help="size of the big blob (MB)")
    ap.add_argument("--rounds", type=int, default=5, help="T0 and B2 pairs, alternately")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for every daemon (repeatable)")
    args = ap.parse_args()
    binary = os.path.join(args.build, "daemon", "fieldsyncd")
    tmp = tempfile.mkdtemp(prefix="fs-bench-blobs-")
    total = args.mb * MiB

    settings = {"sync.listen_address": "127.0.0.1", "daemon.log_level": "warn",
                "discovery.enabled": "false", "blob.max_blob_bytes": "1G"}
    for kv in args.set:
        key, _, value = kv.partition("=")
        settings[key] = value
    def daemon(n):
        return Daemon(binary, name="bench-" + n,
                      settings=dict(settings, **{"daemon.device_name": "bench-" + n})).start()
    ds = {n: daemon(n) for n in ("a", "c")}
    a, c = ds["a"], ds["c"]
    try:
        pid = a.create_project("bench")
        sec = a.unix("GET", V + "/%s/secret" % pid).json()
        assert c.unix("POST", V + "/import", sec).status == 201

        big = distinct_bytes(total, 1)
        t = time.monotonic()
        up = upload(a, pid, big)
        secs = time.monotonic() - t
        print("B1 upload to A            %5d MB  %7.3f s  %7.1f MB/s  peak_rss A=%.0f MB"
              % (args.mb, secs, total / MiB / secs, vm_hwm_mb(a)), flush=True)
        assert up["id"] == hashlib.sha256(big).hexdigest()
        r = a.unix("PUT", V + "/%s/docs/video/big" % pid, {"video": up["ref"]})
        assert r.status in (200, 201), r
        del big

        ratios, dial_ratios = [], []
        for rnd in range(args.rounds):
            t0 = tls_limit(total, tmp)
            print("T0 TLS loopback limit     %5d MB  %7.3f s  %7.1f MB/s" % (args.mb, t0, total / MiB / t0),
                  flush=True)
            b = daemon("b%d" % rnd)
            try:
                assert b.unix("POST", V + "/import", sec).status == 201
                secs, dial_secs, held_secs = one_b2(a, b, pid, up, total)
                ratios.append(t0 / secs)
                dial_ratios.append(t0 / dial_secs)
                print("B2 A -> B one blob        %5d MB  %7.3f s  %7.1f MB/s  (%.2f of T0); from the dial %.3f s (%.2f of T0); held (fsynced, named) after %.3f s  peak_rss A=%.0f MB B=%.0f MB"
                      % (args.mb, secs, total / MiB / secs, t0 / secs, dial_secs, t0 / dial_secs,
                         held_secs, vm_hwm_mb(a), vm_hwm_mb(b)),
                      flush=True)
            finally:
                b.close()
        for name, rs in (("B2 / T0", ratios), ("from the dial", dial_ratios)):
            rs.sort()
            print("%s over %d rounds: median %.2f (%s)"
                  % (name, len(rs), rs[len(rs) // 2], ", ".join("%.2f" % r for r in rs)), flush=True)

        # B3: 1,000 documents, 200 of them with a 500 KB photo.
        photos = []
        for i in range(200):
            photos.append(upload(a, pid, distinct_bytes(500 * 1024, 100 + i))["ref"])
        writes = []
        for i in range(1000):
            body = {"site": "plot-%d" % (i % 37), "observer": "ana", "count": i % 13,
                    "notes": "x" * 300}
            if i % 5 == 0:
                body["photo"] = photos[i // 5]
            writes.append({"collection": "obs", "id": "d%04d" % i, "body": body})
        r = a.unix("POST", V + "/%s/batch" % pid, {"writes": writes}, timeout=120)
        assert r.status == 200, r
        photo_ids = {p["$blob"] for p in photos} | {up["id"]}

        def docs_on_c():
            return c.unix("GET", V + "/%s/docs/obs/d0999" % pid).status == 200 and \
                c.unix("GET", V + "/%s/docs/obs?limit=1000" % pid).json().get("docs") is not None
        t = time.monotonic()
        add_peer(c, a)
        docs_t = None
        while True:
            now = time.monotonic() - t
            if docs_t is None and docs_on_c():
                docs_t = now
                held_then = len(held(c, pid) & photo_ids)
            if held(c, pid) >= photo_ids:
                break
            if now > 900:
                raise TimeoutError("C did not get every blob")
            time.sleep(0.01)
        all_t = time.monotonic() - t
        print("B3 A -> C 1000 docs       docs after %.3f s (%d of %d blobs there then); all %d blobs (%d MB) after %.3f s  peak_rss C=%.0f MB"
              % (docs_t, held_then, len(photo_ids), len(photo_ids), (total + 200 * 500 * 1024) // MiB,
                 all_t, vm_hwm_mb(c)), flush=True)
    finally:
        for d in ds.values():
            d.close()


if __name__ == "__main__":
    main()
