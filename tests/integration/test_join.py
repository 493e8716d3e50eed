#!/usr/bin/python3
"""Integration tests of joining a project with an invite code between real fieldsyncd
processes: invite -> syncctl join -> sync both ways; used, expired and damaged codes; a device
that never joined learns nothing; revocation refuses a device at connection level and travels
by sync; trust_policy = ask holds unknown devices until approved. Run by ctest, or by hand:
/usr/bin/python3 tests/integration/test_join.py -v
"""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import (  # noqa: E402
    FAST as SYNC_FAST, V, Daemon, add_peer, doc, roles, sync_address, wait_until)

FAST = dict(SYNC_FAST, **{"discovery.enabled": "false"})


def invite(d, pid, **body):
    r = d.unix("POST", V + "/%s/invites" % pid, body)
    assert r.status == 201, r
    return r.json()


def put(d, pid, doc_id, body):
    r = d.unix("POST", V + "/%s/docs/obs?id=%s" % (pid, doc_id), body)
    assert r.status == 201, r


def project_ids(d):
    return [p["id"] for p in d.unix("GET", V).json()["projects"]]


def peer(d, other):
    r = d.unix("GET", "/v1/peers/%s" % other.device_id)
    return r.json() if r.status == 200 else None


def peer_error(d, other):
    p = peer(d, other)
    return (p or {}).get("last_error") or {}


class Join(unittest.TestCase):
    def setUp(self):
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            rc = d.stop() if d.proc else 0
            log = d.log()
            d.close()
            self.assertIn(rc, (0, None), log)

    def spawn(self, name, **settings):
        s = dict(FAST)
        s["daemon.device_name"] = name
        s.update(settings)
        d = Daemon(name=name, settings=s).start()
        self.daemons.append(d)
        return d

    def test_invite_join_and_sync_both_ways(self):
        a, b, c = self.spawn("alpha"), self.spawn("beta"), self.spawn("gamma")
        pid = a.create_project("clinic")
        put(a, pid, "before", {"by": "alpha"})
        out = a.syncctl("invite", pid, "--expires", "1h")
        self.assertEqual(out.returncode, 0, out.stderr)
        code = out.stdout.strip()
        joined = b.syncctl("join", code, "--wait", "--timeout", "30")
        self.assertEqual(joined.returncode, 0, joined.stderr + a.log())
        short_a = a.unix("GET", "/v1/status").json()["device_id_short"]
        self.assertIn("joined clinic (%s) via %s" % (pid, short_a), joined.stdout)
        self.assertIn("in sync", joined.stdout)
        self.assertEqual(doc(b, pid, "before")["body"], {"by": "alpha"})
        # Both ways, live on the same session.
        put(b, pid, "from-beta", {"by": "beta"})
        wait_until(lambda: doc(a, pid, "from-beta") is not None, what="beta's write reached alpha")
        put(a, pid, "after", {"by": "alpha"})
        wait_until(lambda: doc(b, pid, "after") is not None, what="alpha's later write reached beta")
        # alpha lists beta as a member; beta learnt that too by sync.
        self.assertEqual(roles(a, pid).get(b.device_id), "member")
        wait_until(lambda: roles(b, pid).get(b.device_id) == "member", what="membership synced to beta")
        # beta remembers alpha as a peer at the address that worked, and stays connected.
        p = peer(b, a)
        self.assertTrue(p["configured"], p)
        self.assertEqual(p["address"], "tcp://" + sync_address(a))
        invites = a.unix("GET", V + "/%s/invites" % pid).json()["invites"]
        self.assertEqual([(i["state"], i["used_by"]) for i in invites], [("used", b.device_id)])
        # The same code again, from another device: refused, verbatim reason, nothing learnt.
        again = c.syncctl("join", code)
        self.assertEqual(again.returncode, 1, again.stdout)
        self.assertIn("invite already used", again.stderr)
        r = c.unix("POST", "/v1/join", {"code": code})
        self.assertEqual(r.status, 409, r)
        self.assertIn("invite already used", r.json()["message"])
        self.assertEqual(project_ids(c), [])
        # Joining twice on the same device is refused before bothering the inviter.
        self.assertEqual(b.unix("POST", "/v1/join", {"code": code}).status, 409)
        # beta's membership survives a restart of both: they reconnect by themselves.
        b.restart()
        put(a, pid, "after-restart", {"by": "alpha"})
        wait_until(lambda: doc(b, pid, "after-restart") is not None, 20, what="sync after beta restarted")

    def test_expired_damaged_and_malformed_codes(self):
        a, b = self.spawn("alpha"), self.spawn("beta")
        pid = a.create_project("clinic")
        inv = invite(a, pid, expires_in_s=1)
        # A bounded wait on the clock itself: the code's expiry must pass.
        wait_until(lambda: time.time() * 1000 > inv["expires_ms"] + 50, 5, what="invite expiry")
        r = b.unix("POST", "/v1/join", {"code": inv["code"]})
        self.assertEqual(r.status, 400, r)
        self.assertIn("invite expired", r.json()["message"])
        out = b.syncctl("join", inv["code"])
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn("invite expired", out.stderr)
        # One character changed: the checksum catches it.
        code = invite(a, pid)["code"]
        i = len(code) // 2
        damaged = code[:i] + ("A" if code[i] != "A" else "B") + code[i + 1:]
        r = b.unix("POST", "/v1/join", {"code": damaged})
        self.assertEqual(r.status, 400, r)
        self.assertIn("checksum", r.json()["message"])
        out = b.syncctl("join", damaged)
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn("checksum", out.stderr)
        for bad in ({}, {"code": 5}, {"code": "hello"}, {"code": code, "extra": 1}):
            self.assertEqual(b.unix("POST", "/v1/join", bad).status, 400, bad)
        # Joining is a Unix-socket-only operation.
        self.assertEqual(b.http("POST", "/v1/join", {"code": code}).status, 403)
        # Copy-and-paste forgiveness: lower case and line breaks still work.
        r = b.unix("POST", "/v1/join", {"code": code[:20].lower() + "\n" + code[20:]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["project"]["id"], pid)
        self.assertEqual(r.json()["inviter"]["device_id"], a.device_id)

    def test_unreachable_inviter(self):
        a, b = self.spawn("alpha"), self.spawn("beta")
        pid = a.create_project("clinic")
        code = invite(a, pid)["code"]
        a.stop()
        r = b.unix("POST", "/v1/join", {"code": code})
        self.assertEqual(r.status, 503, r)
        self.assertIn("cannot reach the inviter", r.json()["message"])
        self.assertEqual(project_ids(b), [])

    def test_a_device_that_never_joined_learns_nothing(self):
        a, b, d = self.spawn("alpha"), self.spawn("beta"), self.spawn("delta")
        pid = a.create_project("clinic")
        put(a, pid, "secret-doc", {"n": 1})
        self.assertEqual(b.syncctl("join", invite(a, pid)["code"]).returncode, 0)
        # delta knows alpha's address and key, but holds no invite and no project.
        add_peer(d, a)
        wait_until(lambda: peer_error(d, a).get("error") == "permission_denied", 20,
                   what="delta refused by alpha")
        self.assertEqual(project_ids(d), [])
        self.assertIn("no common project", peer_error(d, a)["message"])
        self.assertNotIn(pid, peer_error(d, a)["message"])
        self.assertIn("no common project", a.log())

    def test_join_over_a_live_session(self):
        a, b = self.spawn("alpha"), self.spawn("beta")
        first = a.create_project("first")
        sec = a.unix("GET", V + "/%s/secret" % first).json()
        self.assertEqual(b.unix("POST", V + "/import", sec).status, 201)
        add_peer(b, a)
        wait_until(lambda: (peer(b, a) or {}).get("state") == "in_sync", 20, what="first project in sync")
        second = a.create_project("second")
        put(a, second, "x", {"n": 2})
        r = b.unix("POST", "/v1/join", {"code": invite(a, second)["code"]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["inviter"]["address"], "tcp://" + sync_address(a))
        wait_until(lambda: doc(b, second, "x") is not None, 20, what="second project synced")
        self.assertIn("over the live session", b.log())
        self.assertEqual(len(b.unix("GET", "/v1/peers").json()["peers"]), 1)  # still one connection

    def test_revocation_travels_and_refuses_the_device(self):
        # c creates the project; a and b join it with c's codes. a and b then sync directly.
        c, a, b = self.spawn("gamma"), self.spawn("alpha"), self.spawn("beta")
        pid = c.create_project("clinic")
        for d in (a, b):
            out = d.syncctl("join", invite(c, pid)["code"], "--wait", "--timeout", "30")
            self.assertEqual(out.returncode, 0, out.stderr)
        add_peer(a, b)
        put(a, pid, "early", {"by": "alpha"})
        wait_until(lambda: doc(b, pid, "early") is not None, 20, what="alpha's write reached beta directly")
        # The removal keeps what its coordinator held of a's log: c must hold "early" first.
        wait_until(lambda: doc(c, pid, "early") is not None, 20, what="alpha's write reached gamma")
        # Revoke a on c; b learns it by syncing with c (never from a), and then refuses a.
        r = c.unix("DELETE", V + "/%s/members/%s" % (pid, a.device_id))
        self.assertEqual(r.status, 200, r)
        wait_until(lambda: roles(b, pid).get(a.device_id) == "removed", 20, what="removal reached beta")
        # a keeps redialing b; each new session is refused at PROJECTS: a shares nothing with b,
        # and is told it was removed.
        wait_until(lambda: "device removed from the project" in peer_error(a, b).get("message", ""),
                   20, what="alpha refused by beta")
        self.assertEqual(peer_error(a, b)["error"], "permission_denied")
        self.assertEqual(peer(a, b)["reason"]["code"], "removed")
        wait_until(lambda: "device removed from the project" in peer_error(a, c).get("message", ""),
                   20, what="alpha refused by gamma")
        # (the live session ended when the removal arrived; beta's refusal of a redial says so)
        wait_until(lambda: "was removed from project" in b.log(), 20, what="beta refused a redial")
        self.assertFalse((peer(a, b) or {}).get("connected") and peer(a, b)["state"] == "in_sync")
        # a still has the project secret, but its later writes reach nobody.
        put(a, pid, "late", {"by": "alpha"})
        put(b, pid, "marker", {"by": "beta"})
        wait_until(lambda: doc(c, pid, "marker") is not None, 20, what="beta and gamma still sync")
        self.assertIsNone(doc(b, pid, "late"))
        self.assertIsNone(doc(c, pid, "late"))
        self.assertIsNone(doc(a, pid, "marker"))
        self.assertIsNotNone(doc(b, pid, "early"))  # what a wrote before stays

    def test_trust_policy_ask_holds_unknown_devices_until_approved(self):
        a, b, c = self.spawn("alpha", **{"sync.trust_policy": "ask"}), self.spawn("beta"), self.spawn("gamma")
        pid = a.create_project("clinic")
        put(a, pid, "first", {"n": 1})
        # b gets the project secret without an invite: it proves membership but is not listed.
        sec = a.unix("GET", V + "/%s/secret" % pid).json()
        self.assertEqual(b.unix("POST", V + "/import", sec).status, 201)
        add_peer(b, a)
        wait_until(lambda: (peer(a, b) or {}).get("state") == "pending", 20, what="beta pending on alpha")
        p = peer(a, b)
        self.assertEqual(p["pending_projects"], [pid])
        self.assertFalse(p["approved"])
        # The code to compare is the one beta shows for alpha.
        self.assertEqual(p["verification_code"],
                         b.unix("GET", "/v1/verification/%s" % a.device_id).json()["code"])
        shown = a.syncctl("peers", "show", b.device_id)
        self.assertIn(p["verification_code"], shown.stdout)
        self.assertIn("pending", shown.stdout)
        self.assertIsNone(doc(b, pid, "first"))  # nothing flows while pending
        self.assertIn("held until approved", a.log())
        out = a.syncctl("peers", "approve", p["short_id"])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("approved", out.stdout)
        wait_until(lambda: doc(b, pid, "first") is not None, 20, what="sync after approval")
        self.assertTrue(peer(a, b)["approved"])
        self.assertEqual(a.unix("POST", "/v1/peers/not-a-device/approve").status, 400)
        self.assertEqual(a.unix("POST", "/v1/peers/%s/approve" % c.device_id).status, 404)
        # The approval is remembered across a restart of alpha (which now dials beta: its own
        # sync port changed with the restart).
        a.restart()
        self.assertTrue(peer(a, b)["approved"])
        add_peer(a, b)
        put(a, pid, "after-restart", {"n": 2})
        wait_until(lambda: doc(b, pid, "after-restart") is not None, 20, what="sync after alpha restarted")
        self.assertTrue(peer(a, b)["approved"])
        # A device that joins with an invite needs no approval: it is a listed member.
        out = c.syncctl("join", invite(a, pid)["code"], "--wait", "--timeout", "30")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(doc(c, pid, "after-restart")["body"], {"n": 2})


if __name__ == "__main__":
    unittest.main()
