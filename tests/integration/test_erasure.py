"""Erasure between real daemons and a real PostgreSQL (pg_server.py): the office hub (the
project's coordinator, mirroring into PostgreSQL) erases a document while the phone that wrote
it is offline and edits it; when the phone comes back through the laptop, the document stays
gone on every device and in PostgreSQL, its photo's files (and the thumbnail and
preview made of it) are deleted, a device that joins
later never sees it, and the same id written again lives on everywhere. Only a coordinator
erases; bad requests are refused.
"""

import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fieldsync_harness as h  # noqa: E402
from fieldsync_harness import V, wait_until  # noqa: E402
from pg_server import PostgresServer  # noqa: E402

SECRET = "Amina Okafor, born 1987"


def row(pg, pid, doc_id):
    """The mirror row's body text for obs/doc_id: "" without a row, None before the mirror
    made its tables."""
    try:
        rows = pg.sql("SELECT coalesce(body::text, 'null') FROM fieldsync.documents WHERE "
                      "project = '%s' AND collection = 'obs' AND id = '%s'" % (pid, doc_id))
    except subprocess.CalledProcessError:
        return None
    return rows[0][0] if rows else ""


def blob_files(d):
    out = []
    for root, _, files in os.walk(os.path.join(d.data_dir, "blobs")):
        out += [os.path.join(root, f) for f in files if "/incoming" not in root]
    return out


class ErasureTest(h.DaemonTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = PostgresServer().start()

    @classmethod
    def tearDownClass(cls):
        cls.pg.close()

    def setUp(self):
        super().setUp()
        self.pg.sql("DROP SCHEMA IF EXISTS fieldsync CASCADE")

    def test_erased_while_a_device_is_offline_stays_gone_everywhere(self):
        hub = self.daemon("hub", **{"mirror.postgres": self.pg.conninfo(),
                                    "mirror.retry_min_ms": 50, "mirror.retry_max_ms": 200})
        # The laptop keeps its sync port across its restart (the phone dials that address).
        laptop = self.daemon("laptop", **{"sync.listen_port": h.free_port()})
        phone = self.daemon("phone")
        pid = h.share(hub, laptop, phone, name="clinic")
        h.add_peer(phone, laptop)
        h.add_peer(laptop, hub)

        # The phone records a visit with a photo (it makes the photo's thumbnail and preview,
        # which show the patient too), and another visit.
        photo = h.make_image(os.path.join(phone.workdir, "visit.jpg"), 1200, 900)
        up = phone.unix("POST", V + "/%s/blobs" % pid, photo, {"Content-Type": "image/jpeg"})
        self.assertEqual(up.status, 201, up)
        ref = up.json()["ref"]
        r = phone.unix("PUT", V + "/%s/docs/obs/v1" % pid, {"patient": SECRET, "photo": ref})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(phone.unix("PUT", V + "/%s/docs/obs/v2" % pid,
                                    {"patient": "Kept Person"}).status, 200)
        wait_until(lambda: row(self.pg, pid, "v1") not in (None, ""), 60,
                   what="the visit in PostgreSQL")
        self.assertIn(SECRET, row(self.pg, pid, "v1"))
        # The photo and its variants held whole on the hub (a part of a transfer under way
        # is a file too).
        blob_url = V + "/%s/blobs/%s" % (pid, up.json()["id"])
        for variant in ("", "?variant=thumbnail", "?variant=preview"):
            wait_until(lambda v=variant: hub.unix("GET", blob_url + v).status == 200, 60,
                       what="the photo%s on the hub" % variant)
        wait_until(lambda: len(blob_files(hub)) == 3, 60, what="three files on the hub")

        # The phone goes offline (its only link, the laptop, stops) and edits the visit.
        laptop.stop()
        r = phone.unix("PUT", V + "/%s/docs/obs/v1" % pid,
                       {"patient": SECRET + ", 2 children", "photo": ref})
        self.assertEqual(r.status, 200, r)
        # Written after the edit: once the hub holds it, it holds the edit too (a log is
        # applied in order).
        self.assertEqual(phone.unix("PUT", V + "/%s/docs/obs/marker" % pid, {}).status, 200)

        # Only a coordinator erases; bad requests are refused.
        denied = phone.unix("POST", V + "/%s/docs/obs/v1/erase" % pid, {})
        self.assertEqual(denied.status, 403, denied)
        self.assertEqual(hub.unix("POST", V + "/%s/docs/obs/v1/erase" % pid,
                                  {"reasons": "x"}).status, 400)
        self.assertEqual(hub.unix("POST", V + "/%s/docs/obs/v1/erase" % pid,
                                  {"reason": 5}).status, 400)
        self.assertEqual(hub.unix("POST", V + "/%s/docs/_members/%s/erase"
                                  % (pid, hub.device_id), {}).status, 400)

        # The office erases it.
        out = hub.syncctl("erase", "clinic", "obs", "v1", "--reason", "consent withdrawn")
        self.assertNotEqual(out.returncode, 0)  # without --yes
        out = hub.syncctl("erase", "clinic", "obs", "v1", "--yes", "--reason",
                          "consent withdrawn")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(hub.unix("GET", V + "/%s/docs/obs/v1" % pid).status, 404)
        wait_until(lambda: row(self.pg, pid, "v1") == "", 60, what="the row deleted")
        self.assertIn("Kept Person", row(self.pg, pid, "v2"))
        wait_until(lambda: blob_files(hub) == [], 60,
                   what="the photo's files (and its variants') deleted on the hub")
        listed = hub.unix("GET", V + "/%s/erasures" % pid).json()["erasures"]
        self.assertEqual([(e["collection"], e["id"], e["reason"], e["by"]) for e in listed],
                         [("obs", "v1", "consent withdrawn", hub.device_id)])

        # Much later the laptop comes back: the phone's offline edit travels to the hub, the
        # erasure to the phone. Nothing of the visit survives anywhere.
        laptop.start()
        for d in (phone, laptop):
            wait_until(lambda d=d: d.unix("GET", V + "/%s/erasures" % pid).json()["erasures"],
                       60, what="the erasure on " + d.name)
            wait_until(lambda d=d: d.unix("GET", V + "/%s/docs/obs/v1" % pid).status == 404, 60,
                       what="the visit gone on " + d.name)
        wait_until(lambda: blob_files(phone) == [], 60,
                   what="the photo's files (and its variants') gone on the phone")
        # The hub has received the phone's offline edit (its log) and kept none of it.
        wait_until(lambda: h.doc(hub, pid, "marker") is not None, 60,
                   what="the phone's offline writes on the hub")
        self.assertEqual(hub.unix("GET", V + "/%s/docs/obs/v1" % pid).status, 404)
        self.assertEqual(row(self.pg, pid, "v1"), "")
        for d in (hub, laptop, phone):
            self.assertEqual(d.unix("GET", V + "/%s/docs/obs/v2" % pid).status, 200)
            text = d.unix("GET", V + "/%s/docs/obs?include_deleted=1" % pid).text
            self.assertNotIn(SECRET, text)

        # A device that joins later, from the phone only, never sees it.
        late = self.daemon("late")
        sec = hub.unix("GET", V + "/%s/secret" % pid).json()
        self.assertEqual(late.unix("POST", V + "/import", sec).status, 201)
        h.add_peer(late, phone)
        wait_until(lambda: h.doc(late, pid, "v2") is not None, 60, what="the late device's sync")
        self.assertIsNone(h.doc(late, pid, "v1"))
        self.assertEqual(len(late.unix("GET", V + "/%s/erasures" % pid).json()["erasures"]), 1)

        # Written again after the erasure: a new document, which lives on everywhere.
        r = phone.unix("PUT", V + "/%s/docs/obs/v1" % pid, {"patient": "New Entry"})
        self.assertEqual(r.status, 200, r)
        wait_until(lambda: row(self.pg, pid, "v1") not in (None, ""), 60,
                   what="the new document in PostgreSQL")
        self.assertIn("New Entry", row(self.pg, pid, "v1"))
        self.assertEqual(h.doc(hub, pid, "v1")["body"], {"patient": "New Entry"})
        out = phone.syncctl("erasures", "clinic")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("obs/v1", out.stdout)
        self.assertIn("consent withdrawn", out.stdout)


if __name__ == "__main__":
    unittest.main()
