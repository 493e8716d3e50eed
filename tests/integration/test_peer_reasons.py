#!/usr/bin/python3
"""Integration tests of honest per-peer reasons between real fieldsyncd processes: a peer that
shuts down cleanly is no failure; a revoked device is told it was removed from the project; a
device waiting for the other side's approval says so; an address that answers as another
device says which. Each shows in GET /v1/peers (`state`, `reason`) and in syncctl. Run by
ctest, or by hand: /usr/bin/python3 tests/integration/test_peer_reasons.py -v
"""
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import (  # noqa: E402
    FAST as SYNC_FAST, V, Daemon, add_peer, doc, free_port, share, sync_address, wait_until)

FAST = dict(SYNC_FAST, **{"discovery.enabled": "false"})


def put(d, pid, doc_id, body):
    r = d.unix("POST", V + "/%s/docs/obs?id=%s" % (pid, doc_id), body)
    assert r.status == 201, r


def peer(d, other):
    r = d.unix("GET", "/v1/peers/%s" % other.device_id)
    return r.json() if r.status == 200 else None


def peer_by_id(d, device_id):
    r = d.unix("GET", "/v1/peers/%s" % device_id)
    return r.json() if r.status == 200 else None


def reason_code(p):
    return ((p or {}).get("reason") or {}).get("code")


def invite(d, pid):
    r = d.unix("POST", V + "/%s/invites" % pid, {})
    assert r.status == 201, r
    return r.json()["code"]


def warnings(log):
    """Sync log lines at warning level or above (spdlog's "%l": warning, error, critical)."""
    return [line for line in log.splitlines()
            if re.search(r"\d \x1b?\[?[0-9;]*m?(warning|error|critical)\b.* sync: ", line)]


class PeerReasons(unittest.TestCase):
    def setUp(self):
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.close()

    def spawn(self, name, **settings):
        s = dict(FAST)
        s["daemon.device_name"] = name
        s.update(settings)
        d = Daemon(name=name, settings=s).start()
        self.daemons.append(d)
        return d

    def test_a_clean_shutdown_of_the_peer_is_no_failure(self):
        port = free_port()
        a = self.spawn("alpha", **{"sync.listen_port": port})
        b = self.spawn("beta")
        pid = share(a, b)
        add_peer(b, a)
        put(a, pid, "one", {"n": 1})
        wait_until(lambda: doc(b, pid, "one") is not None, 20, what="beta got alpha's write")
        wait_until(lambda: (peer(b, a) or {}).get("state") == "in_sync", 20, what="in sync")
        self.assertIsNone(peer(b, a)["reason"])
        log_before = len(b.log())
        self.assertEqual(a.stop(), 0)
        # alpha said it shuts down: beta shows that, not "connection lost".
        wait_until(lambda: reason_code(peer(b, a)) == "peer_shut_down", 20,
                   what="beta shows that alpha shut down")
        p = peer(b, a)
        self.assertFalse(p["connected"])
        self.assertIsNone(p["last_error"], p)
        self.assertIn(p["state"], ("backoff", "connecting"))
        self.assertIn("alpha", p["reason"]["message"])
        self.assertIn("shutting down", p["reason"]["message"])
        self.assertEqual(p["session"]["state"], "closed")
        self.assertIsNone(p["session"]["error"])
        # beta keeps redialing the address that refuses now: still the shutdown, no error.
        wait_until(lambda: (peer(b, a) or {}).get("failures", 0) >= 2, 20, what="redials")
        p = peer(b, a)
        self.assertEqual(reason_code(p), "peer_shut_down")
        self.assertIsNone(p["last_error"], p)
        self.assertEqual(warnings(b.log()[log_before:]), [])
        self.assertNotIn("connection lost", b.log()[log_before:])
        out = b.syncctl("peers")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("shutting down", out.stdout)
        # alpha comes back: the reason goes with the new session.
        a.start()
        put(a, pid, "two", {"n": 2})
        wait_until(lambda: doc(b, pid, "two") is not None, 30, what="sync after the restart")
        wait_until(lambda: (peer(b, a) or {}).get("state") == "in_sync", 20, what="in sync again")
        self.assertIsNone(peer(b, a)["reason"])
        self.assertIsNone(peer(b, a)["last_error"])

    def test_a_revoked_device_is_told_it_was_removed(self):
        c, a = self.spawn("gamma"), self.spawn("alpha")
        pid = c.create_project("clinic")
        out = a.syncctl("join", invite(c, pid), "--wait", "--timeout", "30")
        self.assertEqual(out.returncode, 0, out.stderr)
        put(c, pid, "one", {"n": 1})
        wait_until(lambda: doc(a, pid, "one") is not None, 20, what="alpha got gamma's write")
        r = c.unix("DELETE", V + "/%s/members/%s" % (pid, a.device_id))
        self.assertEqual(r.status, 200, r)
        # The live session ends and every redial is refused: alpha is told why.
        wait_until(lambda: reason_code(peer(a, c)) == "removed", 20, what="alpha told it was removed")
        # Once it redialed, the refusal at PROJECTS says the same (not "no common project").
        wait_until(lambda: (peer(a, c) or {}).get("failures", 0) >= 2, 20, what="alpha redials")
        p = peer(a, c)
        self.assertEqual(reason_code(p), "removed", p)
        self.assertEqual(p["reason"]["project"], pid)
        self.assertIn("removed from project 'clinic'", p["reason"]["message"])
        self.assertIn("gamma", p["reason"]["message"])
        self.assertEqual(p["last_error"]["error"], "permission_denied")
        self.assertNotIn("no common project", p["last_error"]["message"])
        self.assertIn("removed", p["last_error"]["message"])
        self.assertIn("refuses this device", a.log())
        out = a.syncctl("peers", "show", c.device_id)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("removed from project 'clinic'", out.stdout)

    def test_waiting_for_approval_is_no_failure(self):
        a = self.spawn("alpha", **{"sync.trust_policy": "ask"})
        b = self.spawn("beta")
        pid = share(a, b, name="clinic")  # a project transfer: beta is no listed member
        put(a, pid, "first", {"n": 1})
        add_peer(b, a)
        wait_until(lambda: (peer(b, a) or {}).get("state") == "waiting", 20,
                   what="beta waiting for alpha's approval")
        p = peer(b, a)
        self.assertTrue(p["connected"])
        self.assertEqual(reason_code(p), "awaiting_approval")
        self.assertIn("waiting for approval by alpha", p["reason"]["message"])
        self.assertIn(a.device_id[:4], p["reason"]["message"].replace("-", ""))
        self.assertEqual(p["reason"]["project"], pid)
        self.assertEqual(p["failures"], 0)
        self.assertIsNone(p["last_error"])
        # alpha's own view: it holds beta for the user.
        q = peer(a, b)
        self.assertEqual(q["state"], "pending")
        self.assertEqual(reason_code(q), "approval_needed")
        out = b.syncctl("status")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("waiting for approval by alpha", out.stdout)
        out = b.syncctl("peers")
        self.assertIn("waiting", out.stdout)
        out = b.syncctl("sync", "alpha", "--wait", "--timeout", "0.5")
        self.assertEqual(out.returncode, 1, out.stdout)
        self.assertIn("state waiting: waiting for approval by alpha", out.stderr)
        self.assertEqual(warnings(b.log()), [])
        self.assertIsNone(doc(b, pid, "first"))
        out = a.syncctl("peers", "approve", b.device_id)
        self.assertEqual(out.returncode, 0, out.stderr)
        wait_until(lambda: doc(b, pid, "first") is not None, 20, what="sync after approval")
        wait_until(lambda: (peer(b, a) or {}).get("state") == "in_sync", 20, what="in sync")
        self.assertIsNone(peer(b, a)["reason"])
        self.assertEqual(peer(b, a)["failures"], 0)

    def test_an_address_that_answers_as_another_device_says_so(self):
        a, b, c = self.spawn("alpha"), self.spawn("beta"), self.spawn("gamma")
        address = sync_address(a)
        # beta's record says gamma is at alpha's address.
        r = b.unix("POST", "/v1/peers", {"address": address, "device_id": c.device_id,
                                         "name": "gamma"})
        self.assertEqual(r.status, 201, r)
        wait_until(lambda: reason_code(peer(b, c)) == "wrong_device", 20,
                   what="beta says who answered")
        p = peer(b, c)
        self.assertEqual(p["reason"]["message"],
                         "address tcp://%s answered as device %s, expected %s"
                         % (address, a.device_id, c.device_id))
        self.assertEqual(p["last_error"]["error"], "unauthenticated")
        self.assertFalse(p["connected"])
        out = b.syncctl("peers")
        self.assertIn("answered as device", out.stdout)
        self.assertIsNone(peer_by_id(a, b.device_id))  # nothing of beta stays on alpha


if __name__ == "__main__":
    unittest.main()
