#!/usr/bin/python3
"""Blobs between real fieldsyncd processes over TCP+TLS: a photo referred to by a document
reaches a device two hops away (relayed by the middle one), and a transfer cut by kill -9
resumes after the restart without sending again what had arrived. Run by ctest, or by hand:
/usr/bin/python3 tests/integration/test_blob_sync.py -v
"""
import hashlib
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import (  # noqa: E402
    DaemonTestCase, V, add_peer, distinct_bytes, free_port, share, wait_until)

MiB = 1 << 20
NO_DISCOVERY = {"discovery.enabled": "false"}



def upload(d, pid, data, content_type="image/jpeg"):
    r = d.unix("POST", V + "/%s/blobs" % pid, data, {"Content-Type": content_type})
    assert r.status == 201, r
    return r.json()


def download(d, pid, blob_id):
    r = d.unix("GET", V + "/%s/blobs/%s" % (pid, blob_id), timeout=60)
    return r.body if r.status == 200 else None


def session_project(d, other):
    """The per-project progress of d's session with `other` (first project), or None."""
    r = d.unix("GET", "/v1/peers/%s" % other.device_id)
    if r.status != 200:
        return None
    session = r.json().get("session") or {}
    projects = session.get("projects") or []
    return projects[0] if projects else None


class BlobSync(DaemonTestCase):
    DEFAULTS = NO_DISCOVERY

    def test_photo_reaches_a_device_two_hops_away(self):
        a, b, c = self.daemon("alpha"), self.daemon("beta"), self.daemon("gamma")
        pid = share(a, b, c)
        data = distinct_bytes(3 * MiB + 4321, 1)
        up = upload(a, pid, data)
        self.assertEqual(up["id"], hashlib.sha256(data).hexdigest())
        r = a.unix("PUT", V + "/%s/docs/sites/river" % pid, {"title": "river", "photo": up["ref"]})
        self.assertIn(r.status, (200, 201), r)
        # a - b - c: c never meets a; b fetches the photo and serves it on.
        add_peer(b, a)
        add_peer(c, b)
        wait_until(lambda: download(c, pid, up["id"]) == data, 60, interval_s=0.1,
                   what="the photo on gamma")
        self.assertEqual(download(b, pid, up["id"]), data)
        got = c.unix("GET", V + "/%s/docs/sites/river" % pid).json()
        self.assertEqual(got["body"]["photo"]["$blob"], up["id"])
        listed = c.unix("GET", V + "/%s/blobs" % pid).json()["blobs"]
        self.assertEqual([(x["id"], x["held"]) for x in listed], [(up["id"], True)])

    def test_kill_9_mid_transfer_resumes(self):
        a = self.daemon("alpha")
        b = self.daemon("beta", **{"sync.listen_port": free_port()})
        pid = share(a, b)
        size = 48 * MiB
        data = distinct_bytes(size, 2)
        up = upload(a, pid, data)
        r = a.unix("PUT", V + "/%s/docs/sites/dam" % pid, {"photo": up["ref"]})
        self.assertIn(r.status, (200, 201), r)
        add_peer(b, a)

        def some_arrived():
            p = session_project(b, a)
            n = p["blob_bytes_received"] if p else 0
            return n if n >= 4 * MiB else None
        got = wait_until(some_arrived, 60, interval_s=0.005, what="the first chunks")
        b.kill()
        sys.stderr.write("(killed after %d of %d blob bytes) " % (got, size))
        self.assertLess(got, size, "the whole blob arrived before the kill")
        b.start()
        wait_until(lambda: download(b, pid, up["id"]) == data, 90, interval_s=0.1,
                   what="the blob after the restart")
        # The session after the restart fetched only what was missing.
        after = session_project(b, a)
        self.assertIsNotNone(after)
        self.assertLess(after["blob_bytes_received"], size)
        self.assertGreater(after["blob_bytes_received"], 0)


if __name__ == "__main__":
    unittest.main()
