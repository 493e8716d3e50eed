#!/usr/bin/python3
"""Sync by USB stick: bundles exported and imported through syncctl and the API, between real
fieldsyncd processes that never share a network (sync.enabled = false). Convergence both
ways with concurrent edits, a team of four through one folder, every kind of bad bundle and a
bundle from a revoked device. Run by ctest, or by hand:
/usr/bin/python3 tests/integration/test_bundles.py -v
"""
import json
import os
import random
import stat
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import DaemonTestCase, V, share  # noqa: E402
from workload import random_write, snapshot, Acked  # noqa: E402

OFFLINE = {"sync.enabled": "false", "discovery.enabled": "false"}


def put(d, pid, doc_id, body):
    r = d.unix("PUT", V + "/%s/docs/obs/%s" % (pid, doc_id), body)
    assert r.status in (200, 201), r
    return r.json()


def run(d, *args):
    r = d.syncctl(*args, timeout=120)
    return r


def ok(d, *args):
    r = run(d, *args)
    assert r.returncode == 0, "syncctl %s: rc %d\n%s%s" % (args, r.returncode, r.stdout, r.stderr)
    return r


def import_json(d, path):
    """Imports with --json; returns (returncode, parsed answer)."""
    r = run(d, "--json", "bundle", "import", path)
    try:
        return r.returncode, json.loads(r.stdout)
    except ValueError:
        raise AssertionError("no JSON from bundle import: %r %r" % (r.stdout, r.stderr))


class BundleTest(DaemonTestCase):
    DEFAULTS = OFFLINE

    def test_two_devices_converge_through_bundles_only_both_ways(self):
        a, b = self.daemon("alpha"), self.daemon("bravo")
        pid = share(a, b, name="village-survey")
        for i in range(40):
            put(a, pid, "a%d" % i, {"by": "alpha", "i": i, "note": "alpha-secret-%d" % i})
            put(b, pid, "b%d" % i, {"by": "bravo", "i": i})
        # Both edit one document while apart: a conflict both sides must resolve alike.
        put(a, pid, "shared", {"v": "from alpha"})
        put(b, pid, "shared", {"v": "from bravo"})

        ab = self.path("a-to-b.bundle")
        ok(a, "bundle", "export", pid, ab)
        self.assertEqual(stat.S_IMODE(os.stat(ab).st_mode), 0o600)
        # A lost stick reveals nothing: no project, device, name or content in clear text.
        with open(ab, "rb") as f:
            raw = f.read()
        for secret in (pid, a.device_id, b.device_id, "alpha", "village-survey",
                       "alpha-secret-1", "shared"):
            self.assertNotIn(secret.encode(), raw, secret)
        self.assertNotIn(bytes.fromhex(pid), raw)

        rc, rep = import_json(b, ab)
        self.assertEqual(rc, 0, rep)
        self.assertEqual(rep["producer"], a.device_id)
        self.assertEqual(rep["producer_name"], "alpha")
        self.assertTrue(rep["complete"])
        self.assertGreaterEqual(rep["applied"], 41)
        # Importing the same file again changes nothing and says so.
        again = run(b, "bundle", "import", ab)
        self.assertEqual(again.returncode, 1)
        self.assertIn("already imported", again.stderr)

        # Carried back: b learnt from the import what a holds, so its bundle for a holds only
        # b's own entries, not a's 41 coming back.
        ba = self.path("b-to-a.bundle")
        ok(b, "bundle", "export", pid, ba, "--for", a.device_id)
        rc, rep2 = import_json(a, ba)
        self.assertEqual(rc, 0, rep2)
        self.assertEqual(rep2["duplicates"], 0)
        self.assertEqual(rep2["entries"], rep2["applied"])
        self.assertLess(rep2["entries"], rep["entries"] + 41)

        sa, sb = snapshot(a, pid), snapshot(b, pid)
        self.assertEqual(sa, sb)
        self.assertEqual(len(sa["heads"]), 81)
        da = a.unix("GET", V + "/%s/docs/obs/shared" % pid).json()
        db = b.unix("GET", V + "/%s/docs/obs/shared" % pid).json()
        self.assertEqual(da["version"], db["version"])
        self.assertTrue(da.get("conflicts"), da)

        # Nothing new: the next bundle for the other side carries no entry.
        empty = self.path("empty.bundle")
        ok(a, "bundle", "export", pid, empty, "--for", b.device_id)
        rc, rep3 = import_json(b, empty)
        self.assertEqual((rc, rep3["entries"], rep3["applied"]), (0, 0, 0))

    def test_team_of_four_through_one_shared_folder(self):
        team = [self.daemon(n) for n in ("ana", "ben", "cai", "dee")]
        pid = share(team[0], *team[1:], name="clinic")
        stick = self.path("stick")
        os.mkdir(stick)
        rng = random.Random(4)
        acked = Acked()
        for rnd in range(3):
            for d in team:
                conn = d.unix_connection()
                try:
                    for _ in range(15):
                        random_write(conn, pid, rng, acked, d.name)
                finally:
                    conn.close()
                ok(d, "bundle", "sync", stick)
        # One more pass around: everyone has seen everyone's last bundle.
        for d in team:
            ok(d, "bundle", "sync", stick)
        snaps = [snapshot(d, pid) for d in team]
        for s in snaps[1:]:
            self.assertEqual(s, snaps[0])
        files = sorted(os.listdir(stick))
        self.assertEqual(len(files), 4, files)  # one per device, replaced each time
        for f in files:
            self.assertTrue(f.startswith("fieldsync-") and f.endswith(".bundle"), f)
            for d in team:
                self.assertNotIn(d.device_id[:10], f)
        # Each file stays incremental: everyone knows everyone holds everything, so the next
        # round's bundles carry no entries.
        out = run(team[0], "--json", "bundle", "sync", stick)
        self.assertEqual(out.returncode, 0, out.stderr)
        res = json.loads(out.stdout)
        self.assertEqual(len(res["imported"]), 3)
        for item in res["imported"]:
            self.assertIn(item["outcome"], ("imported", "already_imported"), item)
            if item["outcome"] == "imported":
                self.assertEqual(item["answer"]["applied"], 0, item)
        nxt = run(team[1], "--json", "bundle", "sync", stick)
        res = json.loads(nxt.stdout)
        fresh = [i for i in res["imported"] if i["outcome"] == "imported"]
        self.assertTrue(fresh)
        for item in fresh:
            self.assertEqual(item["answer"]["entries"], 0, item)

    def test_bad_bundles_give_clear_errors_and_apply_nothing_unverified(self):
        a, b = self.daemon("alpha", **{"bundle.chunk_bytes": "1k"}), self.daemon("bravo")
        pid = share(a, b)
        other = a.create_project("elsewhere")
        for i in range(60):
            put(a, pid, "d%d" % i, {"i": i, "pad": "p" * 200})
        good = self.path("good.bundle")
        ok(a, "bundle", "export", pid, good)
        with open(good, "rb") as f:
            raw = f.read()
        self.assertGreater(len(raw), 8 * 1024)  # several 1k chunks

        def attempt(name, data):
            p = self.path(name)
            with open(p, "wb") as f:
                f.write(data)
            return import_json(b, p)

        def held():
            return len(snapshot(b, pid)["versions"])

        cases = [
            ("empty", b"", "invalid_argument"),
            ("garbage", os.urandom(5000), "invalid_argument"),
            ("header-only", raw[:48], "verification_failed"),
            ("newer-format", raw[:8] + b"\x09" + raw[9:], "unsupported"),
            ("tag-flipped", raw[:40] + bytes([raw[40] ^ 1]) + raw[41:], "not_found"),
        ]
        for name, data, code in cases:
            rc, ans = attempt(name, data)
            self.assertEqual((rc, ans.get("error")), (1, code), (name, ans))
            self.assertEqual(held(), 0, name)
            self.assertTrue(ans.get("message"), name)

        # A bundle of a project b does not have.
        elsewhere = self.path("elsewhere.bundle")
        ok(a, "bundle", "export", other, elsewhere)
        rc, ans = import_json(b, elsewhere)
        self.assertEqual((rc, ans["error"]), (1, "not_found"), ans)

        # Tampered: one byte flipped near the end. What verified before it may stay, nothing
        # after it is applied, and the error says where.
        at = len(raw) - 600
        rc, ans = attempt("tampered", raw[:at] + bytes([raw[at] ^ 0x40]) + raw[at + 1:])
        self.assertEqual((rc, ans["error"]), (1, "verification_failed"), ans)
        self.assertIn("byte", ans["message"])
        partial = held()
        self.assertLess(partial, 60)
        self.assertEqual(partial, ans["applied"])

        # Truncated: a clear data_loss; the whole verified prefix is kept.
        rc, ans = attempt("truncated", raw[:len(raw) // 2])
        self.assertEqual((rc, ans["error"]), (1, "verification_failed"), ans)
        self.assertIn("truncated", ans["message"])
        self.assertGreaterEqual(held(), partial)

        # The whole file afterwards completes the set, and a replay is refused.
        rc, ans = import_json(b, good)
        self.assertEqual(rc, 0, ans)
        self.assertEqual(held(), len(snapshot(a, pid)["versions"]))
        before = snapshot(b, pid)
        rc, ans = import_json(b, good)
        self.assertEqual((rc, ans["error"]), (1, "already_exists"), ans)
        self.assertEqual(snapshot(b, pid), before)

        # Over api.max_stream_bytes: refused with 413 as it arrives.
        c = self.daemon("charlie", **{"api.max_stream_bytes": "4k"})
        share_sec = a.unix("GET", V + "/%s/secret" % pid).json()
        self.assertEqual(c.unix("POST", V + "/import", share_sec).status, 201)
        rc, ans = import_json(c, good)
        self.assertEqual((rc, ans["error"]), (1, "too_large"), ans)
        self.assertEqual(len(snapshot(c, pid)["versions"]), 0)

        # A directory, a missing file: syncctl says so without asking the daemon to guess.
        r = run(b, "bundle", "import", self.path("missing.bundle"))
        self.assertNotEqual(r.returncode, 0)
        self.assertTrue(r.stderr.strip())

    def test_a_revoked_device_is_refused_by_stick_as_by_network(self):
        a, b, c = self.daemon("alpha"), self.daemon("bravo"), self.daemon("charlie")
        pid = share(a, b, c)
        for d in (b, c):
            r = a.unix("PUT", V + "/%s/members/%s" % (pid, d.device_id),
                       {"role": "member", "name": d.name})
            self.assertEqual(r.status, 200, r)
        first = self.path("a1.bundle")
        ok(a, "bundle", "export", pid, first)
        for d in (b, c):
            ok(d, "bundle", "import", first)
        for i in range(5):
            put(c, pid, "early%d" % i, {"i": i})
        c1 = self.path("c1.bundle")
        ok(c, "bundle", "export", pid, c1)
        ok(a, "bundle", "import", c1)
        # a revokes c: c's later writes are refused wherever they come from.
        r = a.unix("DELETE", V + "/%s/members/%s" % (pid, c.device_id))
        self.assertEqual(r.status, 200, r)
        for i in range(3):
            put(c, pid, "late%d" % i, {"i": i})
        c2 = self.path("c2.bundle")
        ok(c, "bundle", "export", pid, c2)
        rc, ans = import_json(a, c2)
        self.assertEqual((rc, ans["error"]), (1, "permission_denied"), ans)
        self.assertIn("removed", ans["message"])
        self.assertEqual(a.unix("GET", V + "/%s/docs/obs/late0" % pid).status, 404)
        self.assertEqual(a.unix("GET", V + "/%s/docs/obs/early0" % pid).status, 200)
        # b learns of the removal by stick too, then refuses c's bundle as well.
        a2 = self.path("a2.bundle")
        ok(a, "bundle", "export", pid, a2)
        ok(b, "bundle", "import", a2)
        self.assertEqual(b.unix("GET", V + "/%s/docs/obs/early0" % pid).status, 200)
        rc, ans = import_json(b, c2)
        self.assertEqual((rc, ans["error"]), (1, "permission_denied"), ans)
        self.assertEqual(b.unix("GET", V + "/%s/docs/obs/late0" % pid).status, 404)

    def test_export_for_unknown_device_and_bad_for_are_refused(self):
        a = self.daemon("alpha")
        pid = a.create_project("p")
        r = run(a, "bundle", "export", pid, self.path("x.bundle"), "--for", "nobody")
        self.assertEqual(r.returncode, 2)
        self.assertIn("no member", r.stderr)
        self.assertFalse(os.path.exists(self.path("x.bundle")))
        r = a.unix("GET", V + "/%s/bundle?for=zzz" % pid)
        self.assertEqual(r.status, 400, r)
        r = a.unix("GET", V + "/%s/bundle" % ("0" * 32))
        self.assertEqual(r.status, 404, r)
        listing = a.unix("GET", "/v1/bundles").json()
        self.assertEqual([p["project"] for p in listing["projects"]], [pid])


if __name__ == "__main__":
    unittest.main()
