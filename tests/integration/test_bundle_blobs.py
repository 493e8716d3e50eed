#!/usr/bin/python3
"""Blobs in bundles between real fieldsyncd processes that never share a network: device A
uploads a JPEG photo (the daemon makes its thumbnail and preview) and a binary blob and writes
documents referring to them; its bundles (`--blobs variants`, the default `all`, and the
`bundle sync` default) bring them to devices of the project that never met A: thumbnails and
previews always, originals byte for byte only when asked for. Run by ctest, or by hand (with
FIELDSYNC_MAKE_TEST_IMAGE set to build/tests/media/media_make_test_image):
/usr/bin/python3 tests/integration/test_bundle_blobs.py -v
"""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import DaemonTestCase, V, make_image, share, wait_until  # noqa: E402

OFFLINE = {"sync.enabled": "false", "discovery.enabled": "false"}


def blob_get(d, pid, blob, variant=None):
    # wait=0: a blob not held here answers 202 at once (no peer could bring it: offline).
    q = "?wait=0" + ("&variant=%s" % variant if variant else "")
    return d.unix("GET", V + "/%s/blobs/%s%s" % (pid, blob, q))


class BundleBlobsTest(DaemonTestCase):
    DEFAULTS = OFFLINE

    def syncctl_ok(self, d, *args):
        r = d.syncctl(*args, timeout=120)
        self.assertEqual(r.returncode, 0, "syncctl %s: %s%s" % (args, r.stdout, r.stderr))
        return r

    def import_json(self, d, path):
        r = d.syncctl("--json", "bundle", "import", path, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return json.loads(r.stdout)

    def upload(self, d, pid, data, content_type):
        r = d.unix("POST", V + "/%s/blobs" % pid, data, {"Content-Type": content_type})
        self.assertEqual(r.status, 201, r)
        return r.json()

    def test_photos_and_files_travel_by_stick_originals_only_when_asked(self):
        a = self.daemon("alpha")
        c1, c2, c3 = self.daemon("charlie"), self.daemon("carol"), self.daemon("cyril")
        pid = share(a, c1, c2, c3)

        photo = make_image(self.path("photo.jpg"), 3000, 2000)
        binary = os.urandom(700 * 1024 + 5)  # three chunks of 256 KiB, the last short
        p = self.upload(a, pid, photo, "image/jpeg")
        b = self.upload(a, pid, binary, "application/octet-stream")
        r = a.unix("PUT", V + "/%s/docs/sites/north" % pid, {"photo": p["ref"], "log": b["ref"]})
        self.assertIn(r.status, (200, 201), r)
        got = {}

        def made(kind):
            r = blob_get(a, pid, p["id"], kind)
            if r.status == 200:
                got[kind] = r.body
            return r.status == 200
        wait_until(lambda: made("thumbnail"), 60, interval_s=0.1, what="the thumbnail")
        wait_until(lambda: made("preview"), 60, interval_s=0.1, what="the preview")
        thumb, preview = got["thumbnail"], got["preview"]
        self.assertLess(len(thumb) + len(preview), len(photo))

        small, full = self.path("variants.bundle"), self.path("full.bundle")
        self.syncctl_ok(a, "bundle", "export", pid, small, "--blobs", "variants")
        self.syncctl_ok(a, "bundle", "export", pid, full)
        small_size, full_size = os.path.getsize(small), os.path.getsize(full)
        self.assertGreater(full_size, len(photo) + len(binary))
        self.assertLess(small_size, len(binary))
        self.assertGreater(small_size, len(thumb) + len(preview))

        # Variants only: thumbnail and preview served, the originals not held (202: wanted).
        rep = self.import_json(c1, small)
        self.assertTrue(rep["complete"], rep)
        self.assertEqual(rep["blobs"], {"imported": 2, "held": 0, "skipped": 0,
                                        "bytes": len(thumb) + len(preview), "problem": None})
        self.assertEqual(blob_get(c1, pid, p["id"], "thumbnail").body, thumb)
        self.assertEqual(blob_get(c1, pid, p["id"], "preview").body, preview)
        for blob in (p["id"], b["id"]):
            r = blob_get(c1, pid, blob)
            self.assertEqual(r.status, 202, r)
            self.assertEqual(r.json()["state"], "waiting", r)
            self.assertIn("not on this device yet", r.json()["message"])

        # Everything: the originals byte for byte, and the variants.
        r = c2.syncctl("bundle", "import", full, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("blobs: 4 imported", r.stdout)
        self.assertTrue(blob_get(c2, pid, p["id"]).body == photo, "the original changed")
        self.assertTrue(blob_get(c2, pid, b["id"]).body == binary, "the binary blob changed")
        self.assertEqual(blob_get(c2, pid, p["id"], "thumbnail").body, thumb)
        self.assertEqual(blob_get(c2, pid, p["id"], "preview").body, preview)
        # The originals are held now, not wanted: nothing left to fetch.
        listing = c2.unix("GET", V + "/%s/blobs" % pid).json()
        self.assertEqual(listing["usage"]["wanted_count"], 0, listing)
        self.assertEqual(listing["usage"]["held_count"], 4, listing)

        # The full bundle on the device that has the variants: they are skipped, not written.
        rep = self.import_json(c1, full)
        self.assertEqual((rep["blobs"]["imported"], rep["blobs"]["held"]), (2, 2), rep)
        self.assertEqual(rep["blobs"]["bytes"], len(photo) + len(binary))
        self.assertTrue(blob_get(c1, pid, p["id"]).body == photo)

        # `bundle sync` carries thumbnails and previews only, unless --blobs all.
        stick = self.path("stick")
        os.mkdir(stick)
        self.syncctl_ok(a, "bundle", "sync", stick)
        out = self.syncctl_ok(c3, "bundle", "sync", stick).stdout
        self.assertIn("blobs: 2 imported", out)
        self.assertEqual(blob_get(c3, pid, p["id"], "thumbnail").body, thumb)
        self.assertEqual(blob_get(c3, pid, p["id"]).status, 202)
        # c3's own file on the stick told A which blobs c3 holds (the variants): A's file for
        # c3 carries only the originals, instead of the variants again.
        self.syncctl_ok(a, "bundle", "sync", stick, "--blobs", "all")
        out = self.syncctl_ok(c3, "bundle", "sync", stick).stdout
        self.assertIn("blobs: 2 imported", out)
        self.assertNotIn("already here", out)
        self.assertTrue(blob_get(c3, pid, p["id"]).body == photo)

        # A selection that is none of the three is refused by the API and by syncctl.
        r = a.unix("GET", V + "/%s/bundle?blobs=originals" % pid)
        self.assertEqual(r.status, 400, r)
        self.assertIn("'blobs' must be all, variants or none", r.json()["message"])
        r = a.syncctl("bundle", "export", pid, self.path("x.bundle"), "--blobs", "some")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertFalse(os.path.exists(self.path("x.bundle")))


if __name__ == "__main__":
    unittest.main()
