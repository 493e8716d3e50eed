#!/usr/bin/python3
"""What each device fetches, between real fieldsyncd processes over TCP+TLS: a device with the
`phone` policy ends with the thumbnails and previews of a project's photos and none of the
originals; asked for one (a download, or `syncctl blobs get`), it fetches it on demand from a
device two hops away through a middle device that lacks it too, and both let the originals
go again once `blob.keep_fetched_ms` passed (the hub keeps them); an original from a device that
makes no variants gets them on the hub that receives it, and the phone gets the hub's thumbnail;
photos held without variants get them at the next start; an original asked for before a kill -9
arrives after the restart without being asked again; the policy is set and shown through the API
and syncctl, and bad levels are refused. Run by ctest, or by hand (with
FIELDSYNC_MAKE_TEST_IMAGE set to build/tests/media/media_make_test_image):
/usr/bin/python3 tests/integration/test_blob_policy.py -v
"""
import hashlib
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import DaemonTestCase, V, add_peer, make_image, share, wait_until  # noqa: E402

NO_DISCOVERY = {"discovery.enabled": "false"}


def session_blobs(d, other):
    """d's blob progress with `other` (first project of the live session), or None."""
    r = d.unix("GET", "/v1/peers/%s" % other.device_id)
    if r.status != 200:
        return None
    session = r.json().get("session") or {}
    projects = session.get("projects") or []
    return projects[0].get("blobs") if projects else None


def held(d, pid):
    """{blob id: held} as d lists the project's blobs."""
    r = d.unix("GET", V + "/%s/blobs" % pid)
    assert r.status == 200, r
    return {b["id"]: b["held"] for b in r.json()["blobs"]}


def variants_doc(d, pid, oid):
    """d's `_variants` document of original `oid` once it names both variants, else None."""
    v = d.unix("GET", V + "/%s/docs/_variants/%s" % (pid, oid))
    if v.status != 200:
        return None
    body = v.json()["body"]
    if not body or "preview" not in body or "thumbnail" not in body:
        return None
    return v.json()


class BlobPolicy(DaemonTestCase):
    DEFAULTS = NO_DISCOVERY

    def upload_photo(self, d, pid, name, w, h):
        """Uploads a JPEG made here and refers to it from document sites/NAME; returns
        (original bytes, original id)."""
        data = make_image(os.path.join(self.tmp, name + ".jpg"), w, h)
        r = d.unix("POST", V + "/%s/blobs" % pid, data, {"Content-Type": "image/jpeg"})
        self.assertEqual(r.status, 201, r)
        info = r.json()
        r = d.unix("PUT", V + "/%s/docs/sites/%s" % (pid, name), {"photo": info["ref"]})
        self.assertIn(r.status, (200, 201), r)
        return data, info["id"]

    def photo(self, d, pid, name, w, h):
        """upload_photo, then waits for its variants; returns
        (original bytes, original id, {variant: id})."""
        data, oid = self.upload_photo(d, pid, name, w, h)
        made = wait_until(lambda: variants_doc(d, pid, oid), 120, interval_s=0.05,
                          what="the variants of " + name)
        return data, oid, {k: made["body"][k]["$blob"] for k in ("preview", "thumbnail")}

    def test_a_phone_holds_small_variants_then_fetches_an_original_two_hops_away(self):
        # The relay and the phone keep what they fetch beyond their level for a second only.
        short = {"blob.keep_fetched_ms": 1000}
        a, b, c = self.daemon("hub"), self.daemon("relay", **short), self.daemon("phone", **short)
        pid = share(a, b, c)
        for d in (b, c):
            out = d.syncctl("blobs", "policy", pid, "phone")
            self.assertIn("fetches by itself: phone", out.stdout)
        # (The test images are made from their size: two sizes, two photos.)
        photos = [self.photo(a, pid, "site%d" % i, 1600 - 100 * i, 1200) for i in range(2)]
        self.assertNotEqual(photos[0][1], photos[1][1])
        variants = {v for _, _, vs in photos for v in vs.values()}
        originals = {oid for _, oid, _ in photos}
        # hub - relay - phone: the phone never meets the hub.
        add_peer(b, a)
        add_peer(c, b)

        def small_ones_here():
            h = held(c, pid)
            return all(h.get(v) for v in variants) or None
        wait_until(small_ones_here, 120, interval_s=0.1, what="the variants on the phone")
        # Nothing more is coming by itself: the phone wants nothing more under its policy
        # and the relay is told so.
        wait_until(lambda: (session_blobs(c, b) or {}).get("to_receive") == 0 or None, 60,
                   what="the phone's blobs to receive to reach 0")
        wait_until(lambda: (session_blobs(b, c) or {}).get("to_send") == 0 or None, 60,
                   what="the relay's blobs to send to the phone to reach 0")
        self.assertEqual(session_blobs(c, b)["policy"], "phone")
        shown = c.syncctl("peers", "show", "relay")
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertIn("(this device fetches: phone): to receive 0 (0 B), to send 0", shown.stdout)
        for d in (b, c):
            h = held(d, pid)
            self.assertEqual({o: h.get(o) for o in originals}, {o: False for o in originals})
            self.assertTrue(all(h.get(v) for v in variants))
        r = c.unix("GET", V + "/%s/blobs/%s?variant=thumbnail" % (pid, photos[0][1]))
        self.assertEqual(r.status, 200, r)

        # The app on the phone opens one original: the request waits while the phone asks
        # the relay, which lacks it and asks the hub.
        data, oid, _ = photos[0]
        t0 = time.monotonic()
        got = {}

        def original_here():
            # Each request waits up to 10 s; 202 (with progress) until the bytes are here.
            r = c.unix("GET", V + "/%s/blobs/%s?wait=10000" % (pid, oid), timeout=60)
            self.assertIn(r.status, (200, 202), r)
            got["r"] = r
            return r.status == 200
        wait_until(original_here, 120, what="the original on the phone")
        took = time.monotonic() - t0
        r = got["r"]
        self.assertEqual(hashlib.sha256(r.body).hexdigest(), oid)
        self.assertEqual(r.body, data)
        sys.stderr.write("(original on demand over two hops in %.2f s) " % took)
        self.assertTrue(held(b, pid)[oid], "the relay keeps what it relayed, for a while")
        # Only that one: the other original stays where it is.
        other = photos[1][1]
        self.assertFalse(held(c, pid)[other])
        # syncctl follows a 202 until the bytes are here.
        out_file = os.path.join(self.tmp, "other.jpg")
        res = c.syncctl("blobs", "get", pid, other, out_file, timeout=180)
        self.assertEqual(res.returncode, 0, res.stderr)
        with open(out_file, "rb") as f:
            self.assertEqual(f.read(), photos[1][0])

        # Once blob.keep_fetched_ms passed, garbage collection on the relay and the phone lets
        # the originals go (the hub keeps them); the variants stay, and an original asked for
        # again is fetched again.
        def collected(d):
            r = d.unix("POST", V + "/%s/blobs/gc" % pid)
            self.assertEqual(r.status, 200, r)
            h = held(d, pid)
            return not any(h.get(o) for o in originals) or None
        for d in (b, c):
            wait_until(lambda: collected(d), 30, interval_s=0.2,
                       what="the originals released on the " + d.name)
            h = held(d, pid)
            self.assertEqual({o: h.get(o) for o in originals}, {o: False for o in originals})
            self.assertTrue(all(h.get(v) for v in variants))
        self.assertTrue(all(held(a, pid)[o] for o in originals))
        wait_until(original_here, 120, what="the original on the phone again")
        self.assertEqual(got["r"].body, data)

    def test_an_archive_device_makes_the_variants_of_an_original_from_a_peer(self):
        # The author's device makes no variants (blob.make_variants = false): the hub that
        # receives the original makes them, and a phone that never meets the author gets
        # the thumbnail and the preview from the hub, not the original.
        a = self.daemon("author", **{"blob.make_variants": "false"})
        b, c = self.daemon("hub"), self.daemon("phone")
        pid = share(a, b, c)
        self.assertIn("fetches by itself: phone",
                      c.syncctl("blobs", "policy", pid, "phone").stdout)
        data, oid = self.upload_photo(a, pid, "well", 1600, 1200)
        add_peer(b, a)
        made = wait_until(lambda: variants_doc(b, pid, oid), 120, interval_s=0.05,
                          what="the hub's variants of the author's original")
        self.assertEqual(made["author"], b.device_id)
        self.assertEqual(made["body"]["made_by"], "fieldsync")
        self.assertTrue(held(b, pid)[oid])
        small = {k: made["body"][k]["$blob"] for k in ("preview", "thumbnail")}
        # The author learns them from the hub; it made none itself.
        back = wait_until(lambda: variants_doc(a, pid, oid), 60,
                          what="the variants back on the author")
        self.assertEqual(back["version"], made["version"])
        self.assertNotIn("variants of blob %s made" % oid, a.log())
        self.assertIn("variants of blob %s made" % oid, b.log())
        add_peer(c, b)
        wait_until(lambda: all(held(c, pid).get(v) for v in small.values()) or None, 120,
                   interval_s=0.1, what="the thumbnail and preview on the phone")
        wait_until(lambda: (session_blobs(c, b) or {}).get("to_receive") == 0 or None, 60,
                   what="the phone's blobs to receive to reach 0")
        self.assertFalse(held(c, pid)[oid], "the phone fetched the original by itself")
        r = c.unix("GET", V + "/%s/blobs/%s?variant=thumbnail" % (pid, oid))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(hashlib.sha256(r.body).hexdigest(), small["thumbnail"])
        self.assertLess(len(r.body), len(data))

    def test_photos_held_without_variants_get_them_at_start(self):
        # Uploaded while the variant maker was off (as before it existed): none are made;
        # once it is on, the next start makes them.
        a = self.daemon("solo", **{"sync.enabled": "false", "blob.make_variants": "false"})
        pid = a.create_project("survey")
        _, oid = self.upload_photo(a, pid, "old", 900, 600)
        # An upload no document refers to is left alone (the app may never write one).
        r = a.unix("POST", V + "/%s/blobs" % pid, make_image(self.path("loose.jpg"), 300, 200),
                   {"Content-Type": "image/jpeg"})
        self.assertEqual(r.status, 201, r)
        loose = r.json()["id"]
        r = a.unix("GET", V + "/%s/blobs/%s?variant=thumbnail" % (pid, oid))
        self.assertEqual(r.status, 404, r)
        a.settings["blob.make_variants"] = "true"
        a.restart()

        def thumbnail():
            r = a.unix("GET", V + "/%s/blobs/%s?variant=thumbnail" % (pid, oid))
            return r if r.status == 200 else None
        r = wait_until(thumbnail, 120, interval_s=0.05, what="the thumbnail made at start")
        self.assertEqual(r.body[:2], b"\xff\xd8")
        self.assertIn("making the variants of 1 photos held without them", a.log())
        self.assertEqual(a.unix("GET", V + "/%s/docs/_variants/%s" % (pid, loose)).status, 404)

    def test_a_demand_outlives_a_kill_9(self):
        # The phone asks for an original while no peer holding it is connected, is killed,
        # starts again, and fetches the original when it meets the hub: nobody asked again.
        a, c = self.daemon("hub"), self.daemon("phone")
        pid = share(a, c)
        c.syncctl("blobs", "policy", pid, "phone")
        data, oid, small = self.photo(a, pid, "site", 1200, 900)
        add_peer(c, a)
        wait_until(lambda: all(held(c, pid).get(v) for v in small.values()) or None, 120,
                   interval_s=0.1, what="the variants on the phone")
        r = c.unix("DELETE", "/v1/peers/%s" % a.device_id)
        self.assertEqual(r.status, 200, r)
        wait_until(lambda: c.unix("GET", "/v1/peers/%s" % a.device_id).status == 404 or None,
                   30, what="the hub to be gone from the phone's peers")
        r = c.unix("GET", V + "/%s/blobs/%s?wait=0" % (pid, oid))
        self.assertEqual(r.status, 202, r)
        self.assertFalse(held(c, pid)[oid])
        c.kill()
        c.start()
        self.assertFalse(held(c, pid)[oid])
        add_peer(c, a)
        wait_until(lambda: held(c, pid)[oid] or None, 120, interval_s=0.1,
                   what="the original asked for before the kill")
        r = c.unix("GET", V + "/%s/blobs/%s" % (pid, oid))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, data)

    def test_policy_set_shown_and_refused(self):
        a = self.daemon("solo", **{"sync.enabled": "false"})
        pid = a.create_project("survey")
        url = V + "/%s/blob-policy" % pid
        r = a.unix("GET", url)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"policy": None, "effective": "archive", "default": "archive",
                                    "peers": {}})
        peer = "a" * 52
        r = a.unix("PUT", url, {"policy": "thumbnails", "peers": {peer: "none"}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(a.unix("GET", url).json(),
                         {"policy": "thumbnails", "effective": "thumbnails",
                          "default": "archive", "peers": {peer: "none"}})
        for bad, what in [({"policy": "none"}, "none"), ({"policy": "everything"}, "policy"),
                          ({"peers": {"not-a-device": "phone"}}, "device"),
                          ({"peers": {peer: 3}}, "peer"), ({"level": "phone"}, "level"),
                          ({"policy": "phone", "policy2": 1}, "policy2")]:
            r = a.unix("PUT", url, bad)
            self.assertEqual(r.status, 400, (bad, r))
            self.assertIn(what, r.json()["message"], bad)
        r = a.unix("PUT", url, body=b'{"policy":"phone","policy":"archive"}',
                   headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 400, r)
        # Unchanged by the refusals; syncctl shows it and puts it back to the default.
        self.assertEqual(a.unix("GET", url).json()["policy"], "thumbnails")
        out = a.syncctl("blobs", "policy", pid, "default", "--peer", peer + "=default")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("fetches by itself: archive (blob.policy)", out.stdout)
        self.assertEqual(a.unix("GET", url).json()["peers"], {})
        # After a restart it is still what was set.
        a.syncctl("blobs", "policy", pid, "on-demand")
        a.stop()
        a.start()
        self.assertEqual(a.unix("GET", url).json()["policy"], "on-demand")


if __name__ == "__main__":
    unittest.main()
