#!/usr/bin/python3
"""Subscriptions between real fieldsyncd processes over TCP+TLS: a phone subscribed to 1% of a
project (one district) ends with exactly that district's documents whichever device it meets
first (the hub, or a laptop that holds everything or has not met the hub yet), its vector
equals the hub's (nothing is asked for again), a full device that meets only the phone never
believes it is complete, and widening through syncctl fetches the newly wanted documents.
Run by ctest, or by hand: /usr/bin/python3 tests/integration/test_subscriptions.py -v
"""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import DaemonTestCase, V, add_peer, share, wait_until  # noqa: E402

DISTRICTS = 100
DOCS = 2000
SUB_7 = {"where": {"eq": {"path": "district", "value": 7}}}


def write_docs(d, pid, start, n):
    writes = [{"collection": "obs", "id": "d%05d" % i,
               "body": {"district": i % DISTRICTS, "n": i, "notes": "x" * 200}}
              for i in range(start, start + n)]
    for k in range(0, len(writes), 500):
        r = d.unix("POST", V + "/%s/batch" % pid, {"writes": writes[k:k + 500]})
        assert r.status == 200, r


def doc_ids(d, pid):
    out, cursor = set(), None
    while True:
        q = "?limit=1000" + ("&after=" + cursor if cursor else "")
        r = d.unix("GET", V + "/%s/docs/obs%s" % (pid, q))
        assert r.status == 200, r
        out |= {x["id"] for x in r.json()["docs"]}
        cursor = r.json().get("next")
        if not cursor:
            return out


def expected(districts, upto=DOCS):
    return {"d%05d" % i for i in range(upto) if i % DISTRICTS in districts}


def remove_peer(d, other):
    r = d.unix("DELETE", "/v1/peers/%s" % other.device_id)
    assert r.status == 200, r


class Subscriptions(DaemonTestCase):
    DEFAULTS = {"discovery.enabled": "false"}

    def subscribe(self, d, pid, sub):
        out = d.syncctl("subscription", pid, json.dumps(sub))
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout

    def wait_docs(self, d, pid, want, what):
        return wait_until(lambda: doc_ids(d, pid) == want or None, 60, interval_s=0.05,
                          what=what)

    def test_a_phone_gets_exactly_its_district_in_any_order_of_meeting(self):
        hub, laptop, phone = self.daemon("hub"), self.daemon("laptop"), self.daemon("phone")
        pid = share(hub, laptop, phone)
        write_docs(hub, pid, 0, DOCS)
        out = self.subscribe(phone, pid, SUB_7)
        self.assertIn('"district"', out)
        shown = phone.unix("GET", V + "/%s/subscription" % pid).json()
        self.assertEqual(shown["subscription"], SUB_7)
        self.assertFalse(shown["everything"])
        self.assertEqual(phone.unix("GET", V + "/%s" % pid).json()["subscription"], SUB_7)
        self.assertEqual(hub.unix("GET", V + "/%s" % pid).json()["subscription"], {})
        self.assertIn('holds: {"where"', phone.syncctl("projects", "show", pid).stdout)
        self.assertIn("holds: everything", hub.syncctl("projects", "show", pid).stdout)

        # 1. The phone meets the laptop first, which holds nothing yet; then the laptop meets
        #    the hub, and what it receives reaches the phone live.
        add_peer(phone, laptop)
        add_peer(laptop, hub)
        self.wait_docs(laptop, pid, expected(range(DISTRICTS)), "the laptop to hold everything")
        self.wait_docs(phone, pid, expected({7}), "the phone to hold district 7 via the laptop")

        # 2. A second phone meets only the first phone: it gets the same district, and
        #    nothing the first phone left out.
        phone2 = self.daemon("phone2")
        r = phone2.unix("POST", V + "/import", hub.unix("GET", V + "/%s/secret" % pid).json())
        self.assertEqual(r.status, 201, r)
        self.subscribe(phone2, pid, SUB_7)
        add_peer(phone2, phone)
        self.wait_docs(phone2, pid, expected({7}), "phone2 to hold district 7 via the phone")

        # 3. A full device that meets only the phone holds the district-7 documents it was
        #    given whole up to where the phone's copy of the hub's log stops being whole, and
        #    does not believe it has the rest: meeting the hub later completes it.
        full = self.daemon("full")
        r = full.unix("POST", V + "/import", hub.unix("GET", V + "/%s/secret" % pid).json())
        self.assertEqual(r.status, 201, r)
        add_peer(full, phone)
        wait_until(lambda: self.peer_in_sync(full, phone), 60, what="full in sync with phone")
        self.assertTrue(doc_ids(full, pid) < expected(range(DISTRICTS)))
        add_peer(full, hub)
        self.wait_docs(full, pid, expected(range(DISTRICTS)), "full to hold everything")

        # 4. Widening through syncctl: district 8 arrives too.
        out = self.subscribe(phone, pid, {"where": {"in": {"path": "district",
                                                            "values": [7, 8]}}})
        self.assertIn("asked for again", out)
        self.wait_docs(phone, pid, expected({7, 8}), "the phone to hold districts 7 and 8")

        # 5. Narrowing: district 8 leaves (a local purge: the hub keeps it).
        r = phone.unix("PUT", V + "/%s/subscription" % pid, SUB_7)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["documents_removed"], DOCS // DISTRICTS)
        self.assertEqual(doc_ids(phone, pid), expected({7}))
        self.assertEqual(doc_ids(hub, pid), expected(range(DISTRICTS)))
        # Everything again.
        out = phone.syncctl("subscription", pid, "everything")
        self.assertIn("wants: everything", out.stdout)
        self.wait_docs(phone, pid, expected(range(DISTRICTS)), "the phone to hold everything")
        # Its copy is whole again (the runs it held proven are chained again): a full device
        # that meets only the phone gets everything from it.
        full2 = self.daemon("full2")
        r = full2.unix("POST", V + "/import", hub.unix("GET", V + "/%s/secret" % pid).json())
        self.assertEqual(r.status, 201, r)
        add_peer(full2, phone)
        self.wait_docs(full2, pid, expected(range(DISTRICTS)), "full2 to hold everything")

    def peer_in_sync(self, d, other):
        r = d.unix("GET", "/v1/peers/%s" % other.device_id)
        if r.status != 200:
            return None
        session = r.json().get("session") or {}
        projects = session.get("projects") or []
        return (projects and all(p.get("in_sync") for p in projects)) or None

    def test_a_selection_limits_what_one_peer_is_given(self):
        hub, tablet, laptop = self.daemon("hub"), self.daemon("tablet"), self.daemon("laptop")
        pid = share(hub, tablet, laptop)
        write_docs(hub, pid, 0, DOCS)
        out = hub.syncctl("subscription", pid, json.dumps(SUB_7), "--for", tablet.device_id)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("gives " + tablet.device_id, out.stdout)
        sels = hub.unix("GET", V + "/%s/selections" % pid).json()["selections"]
        self.assertEqual(sels, {tablet.device_id: SUB_7})
        shown = hub.syncctl("subscription", pid)
        self.assertIn(tablet.device_id, shown.stdout)
        # The tablet wants everything; the hub gives it district 7 only.
        add_peer(tablet, hub)
        self.wait_docs(tablet, pid, expected({7}), "the tablet to hold district 7")
        wait_until(lambda: self.peer_in_sync(tablet, hub), 60, what="tablet in sync with hub")
        self.assertEqual(doc_ids(tablet, pid), expected({7}))
        # The laptop is given everything, and gives the tablet the rest.
        add_peer(laptop, hub)
        self.wait_docs(laptop, pid, expected(range(DISTRICTS)), "the laptop to hold everything")
        add_peer(tablet, laptop)
        self.wait_docs(tablet, pid, expected(range(DISTRICTS)), "the tablet to hold everything")
        r = hub.unix("DELETE", V + "/%s/selections/%s" % (pid, tablet.device_id))
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json()["everything"])
        r = hub.unix("PUT", V + "/%s/selections/%s" % (pid, hub.device_id), SUB_7)
        self.assertEqual(r.status, 400, r)
        r = hub.unix("PUT", V + "/%s/selections/nope" % pid, SUB_7)
        self.assertEqual(r.status, 400, r)

    def test_bad_subscriptions_are_refused_and_change_nothing(self):
        d = self.daemon("alpha")
        pid = d.create_project("p")
        for body, why in (('{"where":{"eq":{"path":"a"}}}', "eq.value"),
                          ('{"where":{"eq":{"path":"a","value":1},"x":1}}', "one of"),
                          ('{"collections":["a"],"collections":["b"]}', "duplicate"),
                          ('{"wher":{}}', "unknown field"),
                          ('[1]', "object")):
            r = d.unix("PUT", V + "/%s/subscription" % pid, body.encode(),
                       {"Content-Type": "application/json"})
            self.assertEqual(r.status, 400, (body, r))
            self.assertIn(why, r.json()["message"], body)
        self.assertTrue(d.unix("GET", V + "/%s/subscription" % pid).json()["everything"])
        r = d.unix("GET", V + "/%s/subscription" % ("0" * 32))
        self.assertEqual(r.status, 404, r)


if __name__ == "__main__":
    unittest.main()
