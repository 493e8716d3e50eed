#!/usr/bin/python3
"""Blobs (attachments) through the API and syncctl, on real fieldsyncd processes: a 200 MB
upload that leaves the daemon's memory bounded and downloads byte for byte, Range / ETag /
If-None-Match, the project boundary, the quota (507, nothing left behind), a client that goes
away mid-upload, the API answering while an upload waits, gc, references from documents, and
strict query parameters. Run by ctest, or by hand:
/usr/bin/python3 tests/integration/test_blobs.py -v
"""
import hashlib
import json
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import DaemonTestCase, V, wait_until  # noqa: E402

MiB = 1 << 20
OFFLINE = {"sync.enabled": "false", "discovery.enabled": "false"}


def vm_hwm_kib(pid):
    """The process's peak resident set size (VmHWM) in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM for pid %d" % pid)


def write_random_file(path, size):
    """`size` pseudo-random bytes (1 MiB of randomness, each MiB made distinct); its sha256."""
    block = os.urandom(MiB)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left, i = size, 0
        while left > 0:
            piece = (i.to_bytes(8, "big") + block[8:])[:min(MiB, left)]
            f.write(piece)
            h.update(piece)
            left -= len(piece)
            i += 1
    return h.hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(MiB), b""):
            h.update(piece)
    return h.hexdigest()


class Raw:
    """A raw HTTP/1.1 client on the daemon's Unix socket: sends exactly what it is given."""

    def __init__(self, d, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(d.socket_path)

    def send(self, data):
        self.sock.sendall(data)

    def response(self):
        """Status, headers (lower-case) and body of one response (Content-Length framed)."""
        buf = b""
        while b"\r\n\r\n" not in buf:
            got = self.sock.recv(65536)
            if not got:
                raise EOFError("closed before a response: %r" % buf)
            buf += got
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(body) < n:
            got = self.sock.recv(65536)
            if not got:
                break
            body += got
        return status, headers, body

    def close(self):
        self.sock.close()


def upload_head(pid, size, content_type="application/octet-stream", query=""):
    h = "POST %s/%s/blobs%s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n" % (
        V, pid, query, size)
    if content_type is not None:
        h += "Content-Type: %s\r\n" % content_type
    return (h + "\r\n").encode()


class BlobTest(DaemonTestCase):
    DEFAULTS = OFFLINE

    def upload(self, d, pid, data, content_type="application/octet-stream"):
        r = d.unix("POST", V + "/%s/blobs" % pid, data, {"Content-Type": content_type})
        self.assertEqual(r.status, 201, r)
        return r.json()

    def blob_files(self, d):
        """Every regular file under <data>/blobs (incoming included)."""
        out = []
        for root, _, files in os.walk(os.path.join(d.data_dir, "blobs")):
            out += [os.path.join(root, f) for f in files]
        return out

    def incoming_files(self, d):
        return [f for f in self.blob_files(d) if "/incoming/" in f]

    # ------------------------------------------------------------------ large upload

    def test_200_mb_upload_keeps_memory_bounded_and_downloads_byte_for_byte(self):
        d = self.daemon()
        pid = d.create_project("survey")
        src = self.path("video.mp4")
        digest = write_random_file(src, 200 * MiB)
        before = vm_hwm_kib(d.proc.pid)
        r = d.syncctl("blobs", "put", "survey", src, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        after = vm_hwm_kib(d.proc.pid)
        ref = json.loads(r.stdout)
        self.assertEqual(ref["$blob"], digest)
        self.assertEqual(ref["size"], 200 * MiB)
        self.assertEqual(ref["type"], "video/mp4")  # guessed from the extension
        self.assertRegex(ref["root"], "^[0-9a-f]{64}$")
        growth_mib = (after - before) / 1024.0
        print("\n200 MiB upload: daemon VmHWM %d KiB -> %d KiB (+%.1f MiB)"
              % (before, after, growth_mib), file=sys.stderr)
        # Not under AddressSanitizer, whose quarantine holds freed memory (every piece the
        # upload passed through) on purpose.
        with open("/proc/%d/maps" % d.proc.pid) as f:
            sanitized = "libasan" in f.read()
        if sanitized:
            print("(ASan: the memory bound is not checked)", file=sys.stderr)
        else:
            self.assertLess(growth_mib, 64, "the daemon held the upload in memory")

        out = self.path("copy.mp4")
        r = d.syncctl("blobs", "get", "survey", digest, out, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(out + ".partial"))
        self.assertEqual(os.path.getsize(out), 200 * MiB)
        self.assertEqual(file_sha256(out), digest)
        print("after download: VmHWM %d KiB" % vm_hwm_kib(d.proc.pid), file=sys.stderr)

        r = d.syncctl("--json", "blobs", "ls", "survey")
        self.assertEqual(r.returncode, 0, r.stderr)
        listed = json.loads(r.stdout)
        self.assertEqual([b["id"] for b in listed["blobs"]], [digest])
        self.assertTrue(listed["blobs"][0]["held"])
        self.assertEqual(listed["usage"]["held_bytes"], 200 * MiB)
        r = d.syncctl("blobs", "ls", "survey")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(digest, r.stdout)

    def test_the_api_answers_while_an_upload_waits_midway(self):
        d = self.daemon()
        pid = d.create_project("survey")
        size = 8 * MiB
        data = os.urandom(size)
        up = Raw(d)
        up.send(upload_head(pid, size, "image/jpeg"))
        up.send(data[:3 * MiB])
        # The upload is in progress (its bytes are being stored) and the client pauses: other
        # requests are answered meanwhile, on the socket and over TCP.
        wait_until(lambda: self.incoming_files(d), 10, what="the upload's incoming file")
        r = d.unix("GET", "/v1/status")
        self.assertEqual(r.status, 200, r)
        r = d.http("GET", V + "/%s/blobs" % pid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["blobs"], [])  # nothing visible before it completes
        up.send(data[3 * MiB:])
        status, _, body = up.response()
        up.close()
        self.assertEqual(status, 201, body)
        info = json.loads(body)
        self.assertEqual(info["id"], hashlib.sha256(data).hexdigest())
        self.assertEqual(info["type"], "image/jpeg")
        self.assertEqual(info["ref"]["$blob"], info["id"])
        self.assertEqual(info["ref"]["root"], info["root"])
        self.assertEqual(self.incoming_files(d), [])

    # ------------------------------------------------------------------ download

    def test_range_etag_and_if_none_match(self):
        d = self.daemon()
        pid = d.create_project("survey")
        data = os.urandom(700 * 1024 + 123)  # three chunks of 256 KiB, the last one short
        size = len(data)
        info = self.upload(d, pid, data, "image/png")
        bid = info["id"]
        url = V + "/%s/blobs/%s" % (pid, bid)
        etag = '"%s"' % bid

        r = d.unix("GET", url)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, data)
        self.assertEqual(r.headers["content-type"], "image/png")
        self.assertEqual(r.headers["content-length"], str(size))
        self.assertEqual(r.headers["etag"], etag)
        self.assertEqual(r.headers["accept-ranges"], "bytes")
        self.assertIn("immutable", r.headers["cache-control"])
        self.assertEqual(r.headers["x-content-type-options"], "nosniff")
        self.assertNotIn("transfer-encoding", r.headers)

        for rng, first, last in [("bytes=0-99", 0, 99),
                                 ("bytes=262140-262150", 262140, 262150),  # across a chunk edge
                                 ("bytes=300000-", 300000, size - 1),
                                 ("bytes=-500", size - 500, size - 1),
                                 ("bytes=-%d" % (size * 2), 0, size - 1),
                                 ("bytes=10-%d" % (size * 5), 10, size - 1),
                                 ("bytes=%d-%d" % (size - 1, size - 1), size - 1, size - 1)]:
            r = d.unix("GET", url, headers={"Range": rng})
            self.assertEqual(r.status, 206, (rng, r))
            self.assertEqual(r.headers["content-range"], "bytes %d-%d/%d" % (first, last, size), rng)
            self.assertEqual(r.headers["content-length"], str(last - first + 1), rng)
            self.assertEqual(r.body, data[first:last + 1], rng)
            self.assertEqual(r.headers["etag"], etag)

        # Over TCP too.
        r = d.http("GET", url, headers={"Range": "bytes=5-9"})
        self.assertEqual((r.status, r.body), (206, data[5:10]))

        # Several ranges, another unit, malformed: ignored, the whole blob.
        for rng in ["bytes=0-1,5-6", "items=0-1", "bytes=abc", "bytes=9-3"]:
            r = d.unix("GET", url, headers={"Range": rng})
            self.assertEqual(r.status, 200, (rng, r))
            self.assertEqual(r.body, data, rng)

        # Unsatisfiable.
        for rng in ["bytes=%d-" % size, "bytes=%d-%d" % (size + 10, size + 20), "bytes=-0"]:
            r = d.unix("GET", url, headers={"Range": rng})
            self.assertEqual(r.status, 416, (rng, r))
            self.assertEqual(r.headers["content-range"], "bytes */%d" % size, rng)

        # If-Range: the range only with the right validator.
        r = d.unix("GET", url, headers={"Range": "bytes=0-9", "If-Range": etag})
        self.assertEqual((r.status, r.body), (206, data[:10]))
        r = d.unix("GET", url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
        self.assertEqual((r.status, r.body), (200, data))

        # Conditional GET.
        for inm in [etag, "*", '"x", ' + etag, 'W/' + etag]:
            r = d.unix("GET", url, headers={"If-None-Match": inm})
            self.assertEqual(r.status, 304, (inm, r))
            self.assertEqual(r.body, b"")
            self.assertEqual(r.headers["etag"], etag)
        r = d.unix("GET", url, headers={"If-None-Match": '"%s"' % ("0" * 64)})
        self.assertEqual((r.status, r.body), (200, data))

        # Variants: only the original exists.
        r = d.unix("GET", url + "?variant=original")
        self.assertEqual((r.status, r.body), (200, data))
        for v in ["preview", "thumbnail"]:
            r = d.unix("GET", url + "?variant=" + v)
            self.assertEqual(r.status, 404, r)
            self.assertIn("not made yet", r.json()["message"])
        r = d.unix("GET", url + "?variant=huge")
        self.assertEqual(r.status, 400, r)

    def test_a_blob_belongs_to_the_projects_that_hold_it(self):
        d = self.daemon()
        p1 = d.create_project("one")
        p2 = d.create_project("two")
        data = b"field notes " * 1000
        bid = self.upload(d, p1, data, "text/plain")["id"]
        self.assertEqual(d.unix("GET", V + "/%s/blobs/%s" % (p1, bid)).body, data)
        r = d.unix("GET", V + "/%s/blobs/%s" % (p2, bid))
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.json()["error"], "not_found")
        r = d.http("GET", V + "/%s/blobs/%s" % (p2, bid))
        self.assertEqual(r.status, 404, r)
        self.assertEqual(d.unix("GET", V + "/%s/blobs" % p2).json()["blobs"], [])
        # Unknown id, bad id, unknown project.
        self.assertEqual(d.unix("GET", V + "/%s/blobs/%s" % (p1, "a" * 64)).status, 404)
        self.assertEqual(d.unix("GET", V + "/%s/blobs/%s" % (p1, "A" * 64)).status, 400)
        self.assertEqual(d.unix("GET", V + "/%s/blobs/xyz" % p1).status, 400)
        self.assertEqual(d.unix("GET", V + "/%s/blobs/%s" % ("f" * 32, bid)).status, 404)
        # The same bytes uploaded into the second project: one file, two holders.
        self.assertEqual(self.upload(d, p2, data, "text/plain")["id"], bid)
        self.assertEqual(d.unix("GET", V + "/%s/blobs/%s" % (p2, bid)).body, data)
        self.assertEqual(len([f for f in self.blob_files(d) if "/incoming/" not in f]), 1)

    def test_a_document_referring_to_a_blob_not_held_here(self):
        d = self.daemon()
        pid = d.create_project("survey")
        missing = hashlib.sha256(b"a photo taken on another tablet").hexdigest()
        ref = {"$blob": missing, "size": 31, "type": "image/jpeg", "root": "0" * 64}
        r = d.unix("PUT", V + "/%s/docs/sites/north" % pid, {"photo": ref})
        self.assertIn(r.status, (200, 201), r)
        url = V + "/%s/blobs/%s" % (pid, missing)
        # Once the reference is indexed: referred to but not here: asked for from peers (202,
        # with where it stands), listed as not held.
        r = wait_until(lambda: (lambda x: x if x.status == 202 else None)(
            d.unix("GET", url + "?wait=0")), 10, what="the reference to be indexed")
        body = r.json()
        self.assertEqual((body["blob"], body["state"], body["size"], body["received_bytes"]),
                         (missing, "waiting", 31, 0))
        self.assertGreater(body["demand_ms_left"], 0)
        self.assertEqual(r.headers.get("retry-after"), "1")
        # A request that waits answers the same once its wait ends (no peer has it).
        t0 = time.monotonic()
        r = d.unix("GET", url + "?wait=300")
        self.assertEqual(r.status, 202, r)
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)
        # A wait beyond api.request_timeout_ms is refused, not cut short silently.
        r = d.unix("GET", url + "?wait=99999999")
        self.assertEqual(r.status, 400, r)
        self.assertIn("wait", r.json()["message"])
        listed = d.unix("GET", V + "/%s/blobs" % pid).json()
        self.assertEqual([(b["id"], b["held"], b["refs"]) for b in listed["blobs"]],
                         [(missing, False, 1)])
        self.assertEqual(listed["usage"]["wanted_count"], 1)

    # ------------------------------------------------------------------ limits

    def test_an_upload_over_the_quota_gets_507_and_leaves_nothing(self):
        d = self.daemon(**{"blob.project_quota_bytes": MiB})
        pid = d.create_project("survey")
        src = self.path("big.bin")
        write_random_file(src, 3 * MiB)
        r = d.syncctl("blobs", "put", "survey", src, timeout=120)
        self.assertEqual(r.returncode, 1, (r.stdout, r.stderr))
        self.assertIn("HTTP 507", r.stderr)
        self.assertIn("resource_exhausted", r.stderr)
        wait_until(lambda: not self.blob_files(d), 10, what="the refused upload to be removed")
        listed = d.unix("GET", V + "/%s/blobs" % pid).json()
        self.assertEqual(listed["blobs"], [])
        self.assertEqual(listed["usage"]["held_bytes"], 0)
        # A blob within the quota is fine.
        info = self.upload(d, pid, os.urandom(100 * 1024))
        self.assertEqual(d.unix("GET", V + "/%s/blobs/%s" % (pid, info["id"])).status, 200)

    def test_max_blob_bytes_is_checked_from_the_header(self):
        d = self.daemon(**{"blob.max_blob_bytes": 1000})
        pid = d.create_project("survey")
        c = Raw(d)
        c.send(upload_head(pid, 5000))  # no body sent: refused from the header
        status, _, body = c.response()
        c.close()
        self.assertEqual(status, 413, body)
        self.assertIn("blob.max_blob_bytes", json.loads(body)["message"])
        self.assertEqual(self.upload(d, pid, b"x" * 1000)["size"], 1000)

    def test_a_client_that_goes_away_mid_upload_leaves_no_incoming_file(self):
        d = self.daemon()
        pid = d.create_project("survey")
        c = Raw(d)
        c.send(upload_head(pid, 20 * MiB))
        c.send(os.urandom(2 * MiB))
        wait_until(lambda: self.incoming_files(d), 10, what="the upload's incoming file")
        c.close()
        wait_until(lambda: not self.blob_files(d), 10,
                   what="the cut upload's file to be removed")
        self.assertEqual(d.unix("GET", V + "/%s/blobs" % pid).json()["blobs"], [])
        self.assertIn("cut after", d.log())

    def test_media_types(self):
        d = self.daemon()
        pid = d.create_project("survey")
        c = Raw(d)
        c.send(upload_head(pid, 3, None) + b"abc")
        status, _, body = c.response()
        c.close()
        self.assertEqual(status, 201, body)
        self.assertEqual(json.loads(body)["type"], "application/octet-stream")
        for bad in ["jpeg", "image/", "a b/c", "x/" + "y" * 300]:
            c = Raw(d)
            c.send(upload_head(pid, 3, bad) + b"abc")
            status, _, body = c.response()
            c.close()
            self.assertEqual(status, 400, (bad, body))
        info = self.upload(d, pid, b"{}", "application/json; charset=utf-8")
        self.assertEqual(info["type"], "application/json; charset=utf-8")
        r = d.unix("GET", V + "/%s/blobs/%s" % (pid, info["id"]))
        self.assertEqual(r.headers["content-type"], "application/json; charset=utf-8")
        # syncctl --type.
        src = self.path("scan")
        with open(src, "wb") as f:
            f.write(b"%PDF-1.4")
        r = d.syncctl("blobs", "put", "survey", src, "--type", "application/pdf")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["type"], "application/pdf")

    def test_unknown_query_parameters_are_refused(self):
        d = self.daemon()
        pid = d.create_project("survey")
        bid = self.upload(d, pid, b"abc")["id"]
        for method, path, accepted in [
                ("GET", V + "/%s/blobs?limit=5&sort=size" % pid, "after, limit"),
                ("GET", V + "/%s/blobs/%s?varient=preview" % (pid, bid), "variant"),
                ("POST", V + "/%s/blobs/gc?force=1" % pid, "none")]:
            r = d.unix(method, path)
            self.assertEqual(r.status, 400, (path, r))
            self.assertIn("unknown query parameter", r.json()["message"])
            self.assertIn("accepted: " + accepted, r.json()["message"])
        c = Raw(d)
        c.send(upload_head(pid, 3, query="?name=x.jpg") + b"abc")
        status, _, body = c.response()
        c.close()
        self.assertEqual(status, 400, body)
        self.assertIn("unknown query parameter", json.loads(body)["message"])
        self.assertEqual(d.unix("GET", V + "/%s/blobs?after=zz" % pid).status, 400)

    # ------------------------------------------------------------------ list and gc

    def test_list_pages_and_gc_releases_only_unreferenced_blobs(self):
        d = self.daemon(**{"blob.unreferenced_grace_ms": 0})
        pid = d.create_project("survey")
        kept = self.upload(d, pid, b"kept photo", "image/jpeg")
        dropped = self.upload(d, pid, b"dropped photo", "image/jpeg")
        extra = self.upload(d, pid, b"third")
        r = d.unix("PUT", V + "/%s/docs/sites/a" % pid, {"photos": [kept["ref"]]})
        self.assertIn(r.status, (200, 201), r)
        # Pages in id order.
        ids = sorted([kept["id"], dropped["id"], extra["id"]])
        page = d.unix("GET", V + "/%s/blobs?limit=2" % pid).json()
        self.assertEqual([b["id"] for b in page["blobs"]], ids[:2])
        self.assertEqual(page["next"], ids[1])
        page = d.unix("GET", V + "/%s/blobs?limit=2&after=%s" % (pid, page["next"])).json()
        self.assertEqual([b["id"] for b in page["blobs"]], ids[2:])
        self.assertIsNone(page["next"])
        # gc (through syncctl and the API): the referenced blob stays.
        r = d.syncctl("--json", "blobs", "gc", "survey")
        self.assertEqual(r.returncode, 0, r.stderr)
        gc = json.loads(r.stdout)
        self.assertEqual(gc["released"], 2)
        self.assertEqual(gc["files_deleted"], 2)
        self.assertEqual(gc["bytes_freed"], len(b"dropped photo") + len(b"third"))
        self.assertEqual(d.unix("GET", V + "/%s/blobs/%s" % (pid, dropped["id"])).status, 404)
        self.assertEqual(d.unix("GET", V + "/%s/blobs/%s" % (pid, kept["id"])).body,
                         b"kept photo")
        listed = d.unix("GET", V + "/%s/blobs" % pid).json()["blobs"]
        self.assertEqual([(b["id"], b["refs"]) for b in listed], [(kept["id"], 1)])
        r = d.unix("POST", V + "/%s/blobs/gc" % pid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"released": 0, "files_deleted": 0, "bytes_freed": 0})
        self.assertEqual(d.unix("POST", V + "/%s/blobs/gc" % ("f" * 32)).status, 404)


if __name__ == "__main__":
    unittest.main()
