#!/usr/bin/python3
"""Integration tests of project membership between real fieldsyncd processes: members list,
invites (code format, single use bookkeeping), verification codes, revocation that travels by
sync and is enforced on relayed data, and leaving a project. Run by ctest, or by hand:
/usr/bin/python3 tests/integration/test_members.py -v
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import (  # noqa: E402
    V, add_peer as connect, doc, roles, share, start_daemon as start, wait_until)


class Members(unittest.TestCase):
    def setUp(self):
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            rc = d.stop() if d.proc else 0
            log = d.log()
            d.close()
            self.assertIn(rc, (0, None), log)

    def spawn(self, name, **extra):
        d = start(name, **extra)
        self.daemons.append(d)
        return d

    def test_invites_advertise_what_the_listener_reports(self):
        # Listening on one address: the invite names that address only, not every interface.
        a = self.spawn("alpha", **{"sync.listen_address": "127.0.0.1"})
        peers = a.unix("GET", "/v1/status").json()["peers"]
        port = peers["listen_port"]
        self.assertEqual(peers["listen_addresses"], ["tcp://127.0.0.1:%d" % port])
        pid = a.create_project("one-address")
        r = a.unix("POST", V + "/%s/invites" % pid, {"role": "member"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["addresses"], ["127.0.0.1:%d" % port])

    def test_members_invites_and_verification(self):
        a, b = self.spawn("alpha"), self.spawn("beta")
        pid = share(a, b)
        self.assertEqual(roles(a, pid), {a.device_id: "coordinator"})
        # Only a coordinator may invite or change roles.
        r = b.unix("POST", V + "/%s/invites" % pid, {"role": "member"})
        self.assertEqual(r.status, 403, r)
        r = a.unix("POST", V + "/%s/invites" % pid, {"role": "member", "expires_in_s": 3600})
        self.assertEqual(r.status, 201, r)
        code = r.json()["code"]
        self.assertTrue(code.startswith("FS1:"))
        self.assertRegex(code[4:], r"^[A-Z2-7]+$")  # QR alphanumeric
        self.assertTrue(any(x.startswith("127.0.0.1:") for x in r.json()["addresses"]))
        invites = a.unix("GET", V + "/%s/invites" % pid).json()["invites"]
        self.assertEqual([i["state"] for i in invites], ["open"])
        self.assertNotIn("secret", invites[0])
        for bad in ({"role": "removed"}, {"expires_in_s": 0}, {"color": "red"}):
            self.assertEqual(a.unix("POST", V + "/%s/invites" % pid, bad).status, 400, bad)
        # Verification codes: the same digits on both devices, different for another key.
        ca = a.unix("GET", "/v1/verification/%s" % b.device_id).json()["code"]
        cb = b.unix("GET", "/v1/verification/%s" % a.device_id).json()["code"]
        self.assertEqual(ca, cb)
        self.assertRegex(ca, r"^\d{5}( \d{5}){5}$")
        self.assertNotEqual(ca, a.unix("GET", "/v1/verification/%s" % a.device_id).json()["code"])
        # Roles set by the coordinator reach the other device by sync.
        r = a.unix("PUT", V + "/%s/members/%s" % (pid, b.device_id), {"role": "member", "name": "beta"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(a.unix("PUT", V + "/%s/members/%s" % (pid, b.device_id), {"role": "boss"}).status, 400)
        connect(a, b)
        wait_until(lambda: roles(b, pid).get(b.device_id) == "member", what="membership synced to beta")
        # The membership change is an event on beta's changes feed.
        changes = b.unix("GET", V + "/%s/changes?since=0" % pid).json()
        self.assertTrue(any(c["collection"] == "_members" for c in changes["changes"]), changes)

    def test_revocation_travels_and_relayed_writes_are_ignored(self):
        a, b, c = self.spawn("alpha"), self.spawn("beta"), self.spawn("gamma")
        pid = share(a, b, c)
        for d in (b, c):
            self.assertEqual(a.unix("PUT", V + "/%s/members/%s" % (pid, d.device_id), {"role": "member"}).status, 200)
        # Line topology c - a - b: c never meets b.
        connect(a, b)
        connect(c, a)
        r = b.unix("POST", V + "/%s/docs/obs?id=early" % pid, {"by": "beta"})
        self.assertEqual(r.status, 201, r)
        wait_until(lambda: doc(c, pid, "early") is not None, what="beta's early write relayed to gamma")
        # a revokes b; the removal reaches c by sync.
        r = a.unix("DELETE", V + "/%s/members/%s" % (pid, b.device_id))
        self.assertEqual(r.status, 200, r)
        wait_until(lambda: roles(c, pid).get(b.device_id) == "removed", what="removal reached gamma")
        # b's writes after the removal are not accepted, also when relayed through a.
        self.assertEqual(b.unix("POST", V + "/%s/docs/obs?id=late" % pid, {"by": "beta"}).status, 201)
        self.assertEqual(c.unix("POST", V + "/%s/docs/obs?id=marker" % pid, {"by": "gamma"}).status, 201)
        wait_until(lambda: doc(b, pid, "marker") is not None or doc(a, pid, "marker") is not None,
                   what="gamma's marker travelling")
        wait_until(lambda: doc(a, pid, "marker") is not None, what="marker reached alpha")
        self.assertIsNone(doc(a, pid, "late"))
        self.assertIsNone(doc(c, pid, "late"))
        self.assertIsNotNone(doc(c, pid, "early"))  # data written before the removal stays

    def test_syncctl_membership_commands(self):
        a, b = self.spawn("alpha"), self.spawn("beta")
        pid = a.create_project("cli")
        out = a.syncctl("invite", pid, "--expires", "2h")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(out.stdout.strip().startswith("FS1:"), out.stdout)
        self.assertIn("syncctl join", out.stderr)
        self.assertEqual(a.syncctl("invite", pid, "--expires", "soon").returncode, 2)
        members = a.syncctl("--json", "members", pid)
        self.assertEqual(members.returncode, 0, members.stderr)
        self.assertIn('"role":"coordinator"', members.stdout.replace(" ", ""))
        table = a.syncctl("members", pid)
        self.assertIn("coordinator", table.stdout)
        va = a.syncctl("verify", b.device_id).stdout.splitlines()[0]
        vb = b.syncctl("verify", a.device_id).stdout.splitlines()[0]
        self.assertEqual(va, vb)
        revoke = a.syncctl("revoke", pid, b.device_id)
        self.assertEqual(revoke.returncode, 0, revoke.stderr)
        self.assertEqual(roles(a, pid)[b.device_id], "removed")
        denied = b.syncctl("invite", pid)
        self.assertEqual(denied.returncode, 1)  # b does not even have the project
        self.assertEqual(a.syncctl("leave", pid).returncode, 2)  # needs --yes
        self.assertEqual(a.syncctl("leave", pid, "--yes").returncode, 0)
        self.assertEqual(a.unix("GET", V + "/%s" % pid).status, 404)

    def test_leave_project(self):
        a = self.spawn("alpha")
        pid = a.create_project("to-leave")
        self.assertEqual(a.unix("POST", V + "/%s/docs/obs?id=x" % pid, {"n": 1}).status, 201)
        r = a.unix("POST", V + "/%s/leave" % pid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(a.unix("GET", V + "/%s" % pid).status, 404)
        self.assertEqual(a.unix("GET", V + "/%s/docs/obs/x" % pid).status, 404)


if __name__ == "__main__":
    unittest.main()
