"""Destinations and delivery receipts between real daemons: a coordinator names a hub; the hub's
signed receipts reach a phone through a laptop (the phone never meets the hub) and the phone's
delivery status says its writes arrived; only a coordinator names destinations; a hub without
durable storage writes no receipts; un-naming a hub takes its receipts out of the count.
Clean-up: two phones, a laptop relay and a hub; the first phone removes what the hub confirmed
(a photo's file included, once the hub holds it), its undelivered writes survive the hub being
away, nothing comes back after it syncs again, and the second phone still gets everything.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fieldsync_harness as h  # noqa: E402
from fieldsync_harness import V, wait_until  # noqa: E402

HUB = {"storage.durable": "true", "hub.receipt_interval_ms": 100}


def delivery(d, pid):
    r = d.unix("GET", V + "/%s/delivery" % pid)
    assert r.status == 200, r
    return r.json()


def write_some(d, pid, n, start=0):
    writes = [{"collection": "obs", "id": "o%d" % i, "body": {"i": i}}
              for i in range(start, start + n)]
    r = d.unix("POST", V + "/%s/batch" % pid, {"writes": writes})
    assert r.status == 200, r


class ReceiptsTest(h.DaemonTestCase):
    def test_receipts_reach_a_phone_through_a_relay(self):
        phone = self.daemon("phone")
        laptop = self.daemon("laptop")
        hub = self.daemon("hub", **HUB)
        pid = h.share(phone, laptop, hub)
        h.add_peer(phone, laptop)
        h.add_peer(laptop, hub)
        write_some(phone, pid, 20)
        before = delivery(phone, pid)
        self.assertEqual(before["delivered_seq"], 0)
        self.assertGreater(before["undelivered"], 0)
        self.assertIsNotNone(before["oldest_undelivered_ms"])
        self.assertEqual(before["destinations"], [])

        r = phone.unix("PUT", V + "/%s/destinations/%s" % (pid, hub.device_id),
                       {"name": "office"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["name"], "office")

        def delivered():
            d = delivery(phone, pid)
            return d if d["undelivered"] == 0 and d["destinations"] and \
                d["destinations"][0]["receipt"] else None
        d = wait_until(delivered, 60, what="the hub's receipt on the phone")
        self.assertEqual(d["delivered_seq"], d["written_seq"])
        self.assertIsNone(d["oldest_undelivered_ms"])
        dest = d["destinations"][0]
        self.assertEqual(dest["device_id"], hub.device_id)
        self.assertEqual(dest["name"], "office")
        self.assertEqual(dest["named_by"], phone.device_id)
        self.assertEqual(dest["receipt"]["holds_of_this_device"], d["written_seq"])
        # The phone never met the hub: the receipt came through the laptop.
        peers = phone.unix("GET", "/v1/peers").json()["peers"]
        self.assertNotIn(hub.device_id, [p["device_id"] for p in peers])

        # New writes are undelivered until the next receipt arrives.
        write_some(phone, pid, 5, start=100)
        self.assertGreater(delivery(phone, pid)["undelivered"], 0)
        wait_until(lambda: delivery(phone, pid)["undelivered"] == 0, 60, what="second receipt")

        # syncctl shows it.
        out = phone.syncctl("delivery", pid)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("all delivered", out.stdout)
        self.assertIn("office", out.stdout)

        # Un-named: its receipts no longer count.
        r = phone.unix("DELETE", V + "/%s/destinations/%s" % (pid, hub.device_id))
        self.assertEqual(r.status, 200, r)
        d = delivery(phone, pid)
        self.assertEqual(d["destinations"], [])
        self.assertEqual(d["delivered_seq"], 0)
        self.assertEqual(phone.unix("DELETE", V + "/%s/destinations/%s"
                                    % (pid, hub.device_id)).status, 404)

    def test_only_a_coordinator_names_destinations(self):
        boss = self.daemon("boss")
        member = self.daemon("member")
        pid = h.share(boss, member)
        r = member.unix("PUT", V + "/%s/destinations/%s" % (pid, member.device_id), {})
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.json()["error"], "permission_denied")
        self.assertEqual(member.unix("GET", V + "/%s/destinations" % pid).json(),
                         {"destinations": []})
        # Bad input: an unknown field, a device id that is not one, the reserved collection.
        self.assertEqual(boss.unix("PUT", V + "/%s/destinations/%s" % (pid, member.device_id),
                                   {"nam": "x"}).status, 400)
        self.assertEqual(boss.unix("PUT", V + "/%s/destinations/nope" % pid, {}).status, 400)
        r = member.unix("PUT", V + "/%s/docs/_receipts/%s" % (pid, boss.device_id),
                        {"held": {}, "at_ms": 1})
        self.assertEqual(r.status, 400, r)

    def test_no_receipt_without_durable_storage(self):
        phone = self.daemon("phone")
        hub = self.daemon("hub", **{"hub.receipt_interval_ms": 100})  # FAST: not durable
        pid = h.share(phone, hub)
        h.add_peer(phone, hub)
        self.assertEqual(phone.unix("PUT", V + "/%s/destinations/%s" % (pid, hub.device_id),
                                    {}).status, 200)
        write_some(phone, pid, 3)
        wait_until(lambda: "delivery receipts are not written: storage.durable = false"
                   in hub.log(), 30, what="the hub to say why it writes no receipt")
        d = delivery(phone, pid)
        self.assertEqual(d["delivered_seq"], 0)
        self.assertIsNone(d["destinations"][0]["receipt"])


    def test_clean_up_after_delivery(self):
        cleaning = {"hub.cleanup_projects": "all", "hub.cleanup_min_age_ms": 0,
                    "hub.receipt_interval_ms": 100, "blob.unreferenced_grace_ms": 0,
                    "blob.gc_interval_ms": 1000}
        phone = self.daemon("phone", **cleaning)
        laptop = self.daemon("laptop", **{"sync.listen_port": h.free_port()})
        hub = self.daemon("hub", **dict(HUB, **{"sync.listen_port": h.free_port()}))
        phone2 = self.daemon("phone2")
        pid = h.share(phone, laptop, hub, phone2)
        h.add_peer(phone, laptop)
        h.add_peer(laptop, hub)
        self.assertEqual(phone.unix("PUT", V + "/%s/destinations/%s" % (pid, hub.device_id),
                                    {}).status, 200)
        photo = h.distinct_bytes(100_000, seed=3)
        up = phone.unix("POST", V + "/%s/blobs" % pid, photo,
                        {"Content-Type": "application/octet-stream"})
        self.assertEqual(up.status, 201, up)
        self.assertEqual(phone.unix("PUT", V + "/%s/docs/obs/photo" % pid,
                                    {"photo": up.json()["ref"]}).status, 200)
        write_some(phone, pid, 30)

        def removed():
            c = delivery(phone, pid)["cleanup"]
            return c if c["documents_removed"] == 31 else None
        c = wait_until(removed, 60, what="the phone's clean-up")
        self.assertGreater(c["bytes_freed"], 30 * 7)
        self.assertIsNotNone(c["last_removed_ms"])
        self.assertEqual(phone.unix("GET", V + "/%s/docs/obs/o1" % pid).status, 404)
        listed = phone.unix("GET", V + "/%s/docs/obs" % pid).json()["docs"]
        self.assertEqual(listed, [])
        wait_until(lambda: phone.unix("GET", V + "/%s/blobs" % pid).json()["blobs"] == [], 60,
                   what="the photo released on the phone")
        # The hub and the laptop keep everything.
        self.assertIsNotNone(h.doc(hub, pid, "o29"))
        self.assertIsNotNone(h.doc(laptop, pid, "photo"))

        # The hub is away: new writes are not delivered and stay.
        hub.stop()
        write_some(phone, pid, 5, start=100)
        r = phone.syncctl("cleanup", pid)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("kept 5 not confirmed", r.stdout)
        for i in range(100, 105):
            self.assertIsNotNone(h.doc(phone, pid, "o%d" % i))
        # Back: delivered, then removed too; nothing removed comes back.
        hub.start()
        wait_until(lambda: delivery(phone, pid)["cleanup"]["documents_removed"] == 36, 60,
                   what="the late writes delivered and removed")
        # The laptop holds every version the phone removed; after a new session none is back.
        laptop.restart()
        write_some(laptop, pid, 1, start=500)
        # It arrives; the hub may confirm it and the phone remove it again between two polls.
        wait_until(lambda: h.doc(phone, pid, "o500") is not None
                   or delivery(phone, pid)["cleanup"]["documents_removed"] > 36, 60,
                   what="a new write")
        # The session's counts follow the commit that made it visible (they are kept on the
        # event loop once the writer is done): they settle at once, never stay behind.
        def settled():
            s = phone.unix("GET", V + "/%s/sync" % pid).json()
            return s if s["in_sync"] or s["to_receive"] == 0 else None
        wait_until(settled, 10, what="the phone's sync status to count it")
        # (o500 itself may be removed by now: the hub confirms it soon.)
        ids = [d["id"] for d in phone.unix("GET", V + "/%s/docs/obs" % pid).json()["docs"]]
        self.assertLessEqual(set(ids), {"o500"})
        for i in list(range(30)) + list(range(100, 105)):
            self.assertIsNone(h.doc(phone, pid, "o%d" % i))
        out = phone.syncctl("delivery", pid)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"clean-up: 3[67] delivered documents removed")
        # The second phone, which never met the first, gets everything through the laptop.
        h.add_peer(phone2, laptop)
        wait_until(lambda: h.doc(phone2, pid, "o104") is not None and
                   h.doc(phone2, pid, "o0") is not None and
                   h.doc(phone2, pid, "photo") is not None, 60, what="everything on phone2")
        # A destination keeps everything.
        self.assertEqual(hub.unix("POST", V + "/%s/cleanup" % pid, {}).status, 409)


if __name__ == "__main__":
    unittest.main()
