#!/usr/bin/python3
"""Previews and thumbnails of photos on a real fieldsyncd: after an upload of a JPEG (3000x2000,
EXIF with a GPS position) or a PNG with alpha, the daemon makes the variants in the background;
`?variant=thumbnail|preview` serves them (sized, no EXIF/GPS), the original stays byte for
byte, a non-image gets none, an app-supplied thumbnail wins over the made one and is never
replaced, and the `_variants` document records them. Run by ctest, or by hand (with
FIELDSYNC_MAKE_TEST_IMAGE set to build/tests/media/media_make_test_image):
/usr/bin/python3 tests/integration/test_variants.py -v
"""
import hashlib
import os
import struct
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import DaemonTestCase, V, make_image, wait_until  # noqa: E402

OFFLINE = {"sync.enabled": "false", "discovery.enabled": "false"}


def image_size(data):
    """(type, width, height) from a JPEG's SOF or a PNG's IHDR header."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        assert data[12:16] == b"IHDR"
        w, h = struct.unpack(">II", data[16:24])
        return "png", w, h
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    i = 2
    while i + 4 <= len(data):
        assert data[i] == 0xFF, "bad JPEG marker at %d" % i
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                      0xCF):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return "jpeg", w, h
        i += 2 + length
    raise AssertionError("no SOF in the JPEG")


def jpeg_app_segments(data):
    """The APPn segments of a JPEG as (marker, payload) up to the first scan."""
    out = []
    i = 2
    while i + 4 <= len(data):
        marker = data[i + 1]
        if marker == 0xDA:
            break
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xE0 <= marker <= 0xEF or marker == 0xFE:
            out.append((marker, data[i + 4:i + 2 + length]))
        i += 2 + length
    return out


def gps_ifd(data):
    """True when the JPEG's EXIF has a GPS IFD (tag 0x8825, in either byte order)."""
    for _, p in jpeg_app_segments(data):
        if p.startswith(b"Exif\0\0"):
            tiff = p[6:]
            tag = b"\x25\x88" if tiff[:2] == b"II" else b"\x88\x25"
            return tag in tiff
    return False


def has_exif(data):
    if data[:2] == b"\xff\xd8":
        return any(p.startswith(b"Exif\0\0") for _, p in jpeg_app_segments(data))
    return b"eXIf" in data


class VariantsTest(DaemonTestCase):
    DEFAULTS = OFFLINE

    def upload(self, d, pid, data, content_type):
        r = d.unix("POST", V + "/%s/blobs" % pid, data, {"Content-Type": content_type})
        self.assertEqual(r.status, 201, r)
        return r.json()

    def get_variant(self, d, pid, blob, variant):
        return d.unix("GET", V + "/%s/blobs/%s?variant=%s" % (pid, blob, variant))

    def wait_variant(self, d, pid, blob, variant, deadline_s=60):
        got = {}

        def ready():
            r = self.get_variant(d, pid, blob, variant)
            if r.status == 200:
                got["r"] = r
                return True
            self.assertEqual(r.status, 404, r)
            return False
        wait_until(ready, deadline_s, interval_s=0.1, what="the %s of %s" % (variant, blob))
        return got["r"]

    def test_a_jpeg_gets_a_stripped_thumbnail_and_preview_and_stays_byte_for_byte(self):
        d = self.daemon()
        pid = d.create_project("survey")
        photo = make_image(os.path.join(self.tmp, "photo.jpg"), 3000, 2000)
        self.assertTrue(has_exif(photo), "the test photo must carry EXIF")
        self.assertTrue(gps_ifd(photo), "the test photo must carry a GPS position")
        self.assertTrue(b"FieldCamMake" in photo)
        info = self.upload(d, pid, photo, "image/jpeg")
        blob = info["id"]
        r = d.unix("PUT", V + "/%s/docs/sites/north" % pid, {"photo": info["ref"]})
        self.assertIn(r.status, (200, 201), r)

        thumb = self.wait_variant(d, pid, blob, "thumbnail")
        self.assertEqual(thumb.headers["content-type"], "image/jpeg")
        kind, w, h = image_size(thumb.body)
        self.assertEqual((kind, w), ("jpeg", 200))
        self.assertIn(h, (133, 134))
        self.assertFalse(has_exif(thumb.body), "the thumbnail carries EXIF")
        self.assertFalse(gps_ifd(thumb.body) or b"FieldCamMake" in thumb.body)
        etag = thumb.headers["etag"]
        self.assertEqual(etag, '"%s"' % hashlib.sha256(thumb.body).hexdigest())
        preview = self.get_variant(d, pid, blob, "preview")
        self.assertEqual(preview.status, 200, preview)
        self.assertEqual(image_size(preview.body), ("jpeg", 1200, 800))
        self.assertFalse(has_exif(preview.body), "the preview carries EXIF")
        self.assertFalse(gps_ifd(preview.body) or b"FieldCamMake" in preview.body)
        # ETag and Range as for originals.
        r = d.unix("GET", V + "/%s/blobs/%s?variant=thumbnail" % (pid, blob),
                   headers={"If-None-Match": etag})
        self.assertEqual(r.status, 304, r)
        r = d.unix("GET", V + "/%s/blobs/%s?variant=preview" % (pid, blob),
                   headers={"Range": "bytes=0-9"})
        self.assertEqual(r.status, 206, r)
        self.assertEqual(r.body, preview.body[:10])

        # The original, byte for byte, EXIF and all.
        r = d.unix("GET", V + "/%s/blobs/%s" % (pid, blob))
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.body == photo, "the original changed")

        # Recorded in `_variants`, document id = the original's id.
        r = d.unix("GET", V + "/%s/docs/_variants/%s" % (pid, blob))
        self.assertEqual(r.status, 200, r)
        body = r.json()["body"]
        self.assertEqual(body["of"]["$blob"], blob)
        self.assertEqual(body["made_by"], "fieldsync")
        self.assertEqual(body["thumbnail"]["$blob"], hashlib.sha256(thumb.body).hexdigest())
        self.assertEqual(body["preview"]["$blob"], hashlib.sha256(preview.body).hexdigest())
        # Apps cannot write it themselves.
        r = d.unix("PUT", V + "/%s/docs/_variants/%s" % (pid, blob), body)
        self.assertEqual(r.status, 400, r)

    def test_a_png_with_alpha_gets_png_variants(self):
        d = self.daemon()
        pid = d.create_project("survey")
        drawing = make_image(os.path.join(self.tmp, "drawing.png"), 900, 1800)
        info = self.upload(d, pid, drawing, "image/png")
        thumb = self.wait_variant(d, pid, info["id"], "thumbnail")
        self.assertEqual(thumb.headers["content-type"], "image/png")
        self.assertEqual(image_size(thumb.body), ("png", 100, 200))
        preview = self.get_variant(d, pid, info["id"], "preview")
        self.assertEqual(image_size(preview.body), ("png", 600, 1200))  # never upscaled
        r = d.unix("GET", V + "/%s/blobs/%s" % (pid, info["id"]))
        self.assertEqual(r.body, drawing)

    def test_no_variants_of_a_non_image_or_a_broken_one(self):
        d = self.daemon()
        pid = d.create_project("survey")
        text = self.upload(d, pid, b"field notes\n" * 100, "text/plain")
        broken = self.upload(d, pid, b"\xff\xd8\xff\xe0" + os.urandom(5000), "image/jpeg")
        # A photo uploaded after both: once its thumbnail exists, the worker has been past them.
        photo = make_image(os.path.join(self.tmp, "p.jpg"), 640, 480)
        info = self.upload(d, pid, photo, "image/jpeg")
        self.wait_variant(d, pid, info["id"], "thumbnail")
        for blob in (text["id"], broken["id"]):
            r = self.get_variant(d, pid, blob, "thumbnail")
            self.assertEqual(r.status, 404, r)
            self.assertIn("not made yet", r.json()["message"])
        wait_until(lambda: "no variants of blob %s" % broken["id"] in d.log(), 10,
                   what="the log line about the broken image")
        # Three uploads, two variants: nothing else was stored.
        r = d.unix("GET", V + "/%s/blobs" % pid)
        self.assertEqual(len(r.json()["blobs"]), 5)

    def test_an_app_supplied_thumbnail_wins(self):
        d = self.daemon()
        pid = d.create_project("survey")
        # Supplied right after the upload, before or after the daemon made its own: it wins.
        photo = make_image(os.path.join(self.tmp, "early.jpg"), 2000, 1000)
        own = make_image(os.path.join(self.tmp, "own.png"), 64, 32)
        info = self.upload(d, pid, photo, "image/jpeg")
        blob = info["id"]
        r = d.unix("PUT", V + "/%s/blobs/%s/variants/thumbnail" % (pid, blob), own,
                   {"Content-Type": "image/png"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["id"], hashlib.sha256(own).hexdigest())
        self.assertEqual(r.json()["variants"]["made_by"], "app")
        r = self.get_variant(d, pid, blob, "thumbnail")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, own)
        # The daemon's own making does not replace it (it finds the document and stops).
        later = make_image(os.path.join(self.tmp, "later.jpg"), 800, 600)
        marker = self.upload(d, pid, later, "image/jpeg")
        self.wait_variant(d, pid, marker["id"], "thumbnail")
        self.assertEqual(self.get_variant(d, pid, blob, "thumbnail").body, own)

        # After the daemon made its own: the app's replaces the made thumbnail and keeps the
        # made preview.
        made = self.wait_variant(d, pid, marker["id"], "preview")
        r = d.unix("PUT", V + "/%s/blobs/%s/variants/thumbnail" % (pid, marker["id"]), own,
                   {"Content-Type": "image/png"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.get_variant(d, pid, marker["id"], "thumbnail").body, own)
        self.assertEqual(self.get_variant(d, pid, marker["id"], "preview").body, made.body)
        r = d.unix("GET", V + "/%s/docs/_variants/%s" % (pid, marker["id"]))
        self.assertEqual(r.json()["body"]["made_by"], "app")

        # Refusals: a kind that is not one, a non-image type, an unknown original.
        r = d.unix("PUT", V + "/%s/blobs/%s/variants/poster" % (pid, blob), own,
                   {"Content-Type": "image/png"})
        self.assertEqual(r.status, 400, r)
        r = d.unix("PUT", V + "/%s/blobs/%s/variants/preview" % (pid, blob), b"x",
                   {"Content-Type": "text/plain"})
        self.assertEqual(r.status, 400, r)
        r = d.unix("PUT", V + "/%s/blobs/%s/variants/preview" % (pid, "a" * 64), own,
                   {"Content-Type": "image/png"})
        self.assertEqual(r.status, 404, r)


if __name__ == "__main__":
    unittest.main()
