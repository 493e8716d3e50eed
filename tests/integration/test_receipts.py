"""Destinations and delivery receipts between real daemons: a coordinator names a hub; the hub's
signed receipts reach a phone through a laptop (the phone never meets the hub) and the phone's
delivery status says its writes arrived; only a coordinator names destinations; a hub without
durable storage writes no receipts; un-naming a hub takes its receipts out of the count.
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


if __name__ == "__main__":
    unittest.main()
