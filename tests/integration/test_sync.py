#!/usr/bin/python3
"""Integration tests of peer-to-peer sync between real fieldsyncd processes on 127.0.0.1:
initial and incremental sync, concurrent edits, deletes, purge, live push, line and ring
topologies (relay), kill -9 mid-sync, a wrong key and a non-member. Run by ctest, or by hand:
/usr/bin/python3 tests/integration/test_sync.py -v
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import (  # noqa: E402
    V, add_peer, free_port, share, start_daemon as start, sync_address, wait_until)


def write_docs(d, pid, start_n, count, tag="v1", chunk=1000):
    for s in range(start_n, start_n + count, chunk):
        writes = [{"collection": "obs", "id": "d%d" % i,
                   "body": {"n": i, "tag": tag, "notes": "x" * 400}}
                  for i in range(s, min(s + chunk, start_n + count))]
        r = d.unix("POST", V + "/%s/batch" % pid, {"writes": writes})
        assert r.status == 200, r


def get_doc(d, pid, doc_id):
    r = d.unix("GET", V + "/%s/docs/obs/%s" % (pid, doc_id))
    return r.json() if r.status == 200 else None


def has_doc(d, pid, doc_id, tag=None):
    doc = get_doc(d, pid, doc_id)
    return doc is not None and (tag is None or (doc.get("body") or {}).get("tag") == tag)


def project_in_sync(d, pid):
    r = d.unix("GET", V + "/%s/sync" % pid).json()
    return r["in_sync"] and r["to_receive"] == 0 and r["to_send"] == 0


def peer_status(d, other):
    r = d.unix("GET", "/v1/peers/%s" % other.device_id)
    return r.json() if r.status == 200 else None


class TwoDaemons(unittest.TestCase):
    def setUp(self):
        self.a = start("alpha")
        self.b = start("beta")

    def tearDown(self):
        for d in (self.a, self.b):
            rc = d.stop() if d.proc else 0
            log = d.log()
            d.close()
            self.assertIn(rc, (0, None), log)

    def test_initial_incremental_conflicts_deletes_purge(self):
        a, b = self.a, self.b
        pid = share(a, b)
        write_docs(a, pid, 0, 10000)
        add_peer(b, a)
        wait_until(lambda: has_doc(b, pid, "d9999") and project_in_sync(b, pid), 60,
                   what="initial sync of 10k docs")
        self.assertEqual(get_doc(b, pid, "d1234")["body"], get_doc(a, pid, "d1234")["body"])
        peers = b.unix("GET", "/v1/peers").json()["peers"]
        self.assertEqual(len(peers), 1)
        self.assertEqual(peers[0]["state"], "in_sync")
        self.assertEqual(peers[0]["name"], "alpha")
        self.assertGreater(peers[0]["last_sync_ms"], 0)
        self.assertEqual(peers[0]["session"]["projects"][0]["applied"], 10000)
        st = a.unix("GET", "/v1/status").json()["peers"]
        self.assertEqual(st["connected"], 1)

        # syncctl: peers table and sync --wait.
        out = b.syncctl("peers")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("alpha", out.stdout)
        self.assertIn("in_sync", out.stdout)
        out = b.syncctl("sync", "alpha", "--wait", "--timeout", "30")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("in sync", out.stdout)

        # Incremental, both directions, over the live session.
        write_docs(a, pid, 0, 100, tag="v2")
        write_docs(b, pid, 20000, 50, tag="from-b")
        wait_until(lambda: has_doc(b, pid, "d99", "v2") and has_doc(a, pid, "d20049", "from-b"), 20,
                   what="live incremental sync")

        # Concurrent edits of one document from the same base converge to the same heads.
        base = get_doc(a, pid, "d7")["version"]
        wait_until(lambda: get_doc(b, pid, "d7")["version"] == base, 10)
        ra = a.unix("PUT", V + "/%s/docs/obs/d7?base=%s" % (pid, base), {"n": 7, "side": "a"})
        rb = b.unix("PUT", V + "/%s/docs/obs/d7?base=%s" % (pid, base), {"n": 7, "side": "b"})
        self.assertEqual(ra.status, 200, ra)
        self.assertEqual(rb.status, 200, rb)

        def converged_conflict():
            da, db = get_doc(a, pid, "d7"), get_doc(b, pid, "d7")
            return len(da["heads"]) == 2 and da["heads"] == db["heads"] and da["version"] == db["version"]
        wait_until(converged_conflict, 10, what="conflict convergence")
        self.assertEqual(get_doc(a, pid, "d7")["body"], get_doc(b, pid, "d7")["body"])

        # Delete on b reaches a.
        self.assertEqual(b.unix("DELETE", V + "/%s/docs/obs/d8" % pid).status, 200)
        wait_until(lambda: get_doc(a, pid, "d8")["deleted"], 10, what="delete to sync")

        # Purge on b is not undone by sync, even after a restart and a full new session.
        r = b.unix("POST", V + "/%s/docs/obs/d9/purge" % pid)
        self.assertEqual(r.status, 200, r)
        write_docs(a, pid, 30000, 5, tag="after-purge")
        wait_until(lambda: has_doc(b, pid, "d30004"), 10)
        b.restart()
        # The peer added through the API is remembered across the restart.
        self.assertTrue(peer_status(b, a)["configured"])
        wait_until(lambda: project_in_sync(b, pid), 20, what="sync after restart")
        self.assertIsNone(get_doc(b, pid, "d9")["body"])
        self.assertTrue(get_doc(b, pid, "d9")["purged"])
        self.assertIsNotNone(get_doc(a, pid, "d9")["body"])

    def test_what_a_peer_lacks_is_known_without_a_connection(self):
        a, b = self.a, self.b
        a.settings["sync.listen_port"] = free_port()  # b dials it again after a's restart
        a.restart()
        pid = share(a, b)
        write_docs(a, pid, 0, 50)
        add_peer(b, a)
        wait_until(lambda: has_doc(b, pid, "d49") and project_in_sync(b, pid), 20, what="sync")

        def lacks(d, other):
            p = peer_status(d, other)
            return {x["project"]: x for x in p["projects"]}.get(pid) if p else None
        wait_until(lambda: (lacks(a, b) or {}).get("lacks_entries") == 0, 10, what="b holds all")
        # beta goes away; alpha writes: alpha knows what beta lacks without a connection, and
        # still after a restart.
        b.stop()
        write_docs(a, pid, 100, 7, tag="while-away")
        wait_until(lambda: not peer_status(a, b)["connected"], 10, what="a to see b gone")
        got = lacks(a, b)
        self.assertEqual(got["lacks_entries"], 7, got)
        self.assertEqual(got["lacks_authors"], 1, got)
        self.assertGreater(got["lacks_bytes"], 0, got)
        a.restart()
        self.assertEqual(lacks(a, b)["lacks_entries"], 7)
        b.start()
        wait_until(lambda: (lacks(a, b) or {}).get("lacks_entries") == 0, 20,
                   what="b to catch up, and a to know it")

    def test_project_imported_during_live_session(self):
        a, b = self.a, self.b
        share(a, b, name="first")
        add_peer(b, a)
        wait_until(lambda: (peer_status(b, a) or {}).get("state") == "in_sync", 20)
        pid2 = share(a, name="second")
        write_docs(a, pid2, 0, 30)
        sec = a.unix("GET", V + "/%s/secret" % pid2).json()
        self.assertEqual(b.unix("POST", V + "/import", sec).status, 201)
        wait_until(lambda: has_doc(b, pid2, "d29") and project_in_sync(b, pid2), 20,
                   what="the imported project over the live session")
        self.assertEqual(peer_status(b, a)["failures"], 0)

    def test_wrong_key_and_non_member(self):
        a, b = self.a, self.b
        pid = share(a, name="private")
        write_docs(a, pid, 0, 10)
        # b expects a different device at a's address: refused at TLS level.
        c = start("gamma")
        try:
            r = b.unix("POST", "/v1/peers", {"address": sync_address(a), "device_id": c.device_id})
            self.assertEqual(r.status, 201, r)
            st = wait_until(lambda: (lambda s: s if s and s["failures"] >= 1 else None)(peer_status(b, c)),
                            10, what="wrong key refusal")
            self.assertFalse(st["connected"])
            self.assertEqual(st["last_error"]["error"], "unauthenticated")
            # c is not a member of a's project: it connects, learns nothing, and backs off.
            out = c.syncctl("peers", "add", sync_address(a), a.device_id, "--name", "alpha")
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("added peer", out.stdout)
            st = wait_until(lambda: (lambda s: s if s and s["failures"] >= 1 else None)(peer_status(c, a)),
                            10, what="non-member refusal")
            self.assertEqual(st["last_error"]["error"], "permission_denied")
            self.assertEqual(c.unix("GET", V).json()["projects"], [])
            self.assertEqual(c.unix("GET", V + "/%s" % pid).status, 404)
            self.assertIn("no common project", a.log())
            out = c.syncctl("sync", "alpha", "--wait", "--timeout", "1")
            self.assertEqual(out.returncode, 1, out.stdout)
            self.assertIn("permission_denied", out.stderr)
        finally:
            c.close()

    def test_kill9_mid_sync_then_converge(self):
        a, b = self.a, self.b
        pid = share(a, b)
        write_docs(a, pid, 0, 30000)
        # b knows a from its config, so it redials after the restart by itself.
        b.stop()
        b.settings["peer.alpha.address"] = sync_address(a)
        b.settings["peer.alpha.device"] = a.device_id
        b.settings["sync.batch_entries"] = 256
        b.start()

        def received_some():
            r = b.unix("GET", V + "/%s/sync" % pid).json()
            got = sum(p["received"] for p in r["peers"])
            return got if got > 0 else None
        got = wait_until(received_some, 30, interval_s=0.005, what="first batches")
        b.kill()
        sys.stderr.write("(killed after %d of 30000 versions) " % got)
        # The kill must land mid-sync, else this tests nothing: restarted without its peer,
        # b holds some of the versions and not all.
        self.assertLess(got, 30000, "b had everything before the kill")
        del b.settings["peer.alpha.address"]
        del b.settings["peer.alpha.device"]
        b.start()
        held = b.unix("GET", V + "/%s/changes?since=now" % pid).json()["last_seq"]
        sys.stderr.write("(%d held after the restart) " % held)
        self.assertGreater(held, 0)
        self.assertLess(held, 30000, "the kill did not land mid-sync")
        add_peer(b, a)
        wait_until(lambda: has_doc(b, pid, "d29999") and project_in_sync(b, pid), 60,
                   what="convergence after kill -9")
        self.assertEqual(get_doc(b, pid, "d15000")["body"], get_doc(a, pid, "d15000")["body"])


class Topologies(unittest.TestCase):
    def test_line_and_ring_relay(self):
        names = ["n0", "n1", "n2", "n3"]
        ds = [start(n) for n in names]
        try:
            pid = share(ds[0], *ds[1:])
            # Line: n1 dials n0, n2 dials n1, n3 dials n2. n0 and n3 never meet.
            for i in range(1, 4):
                add_peer(ds[i], ds[i - 1])
            write_docs(ds[0], pid, 0, 200, tag="from-n0")
            write_docs(ds[3], pid, 1000, 20, tag="from-n3")
            wait_until(lambda: has_doc(ds[3], pid, "d199", "from-n0"), 30, what="n0 -> n3 by relay")
            wait_until(lambda: has_doc(ds[0], pid, "d1019", "from-n3"), 30, what="n3 -> n0 by relay")
            for d in ds:
                self.assertEqual(len(d.unix("GET", "/v1/peers").json()["peers"]),
                                 1 if d in (ds[0], ds[3]) else 2)
            # Ring: n3 also dials n0; n0 and n2 never meet. A write at n2 reaches n0 (both ways
            # round) without being applied twice.
            add_peer(ds[3], ds[0])
            wait_until(lambda: all(project_in_sync(d, pid) for d in ds), 30, what="ring formed")
            before = {d.name: d.unix("GET", V + "/%s/changes?since=now" % pid).json()["last_seq"]
                      for d in ds}
            write_docs(ds[2], pid, 2000, 30, tag="from-n2")
            wait_until(lambda: all(has_doc(d, pid, "d2029", "from-n2") for d in ds), 30,
                       what="ring convergence")
            wait_until(lambda: all(project_in_sync(d, pid) for d in ds), 30, what="ring in sync")
            heads = {d.name: get_doc(d, pid, "d2010")["version"] for d in ds}
            self.assertEqual(len(set(heads.values())), 1, heads)
            # Each device applied each of the 30 versions exactly once: 30 new changes, 30
            # distinct versions, whichever way round they arrived first.
            for d in ds:
                r = d.unix("GET", V + "/%s/changes?since=%d&limit=1000" % (pid, before[d.name]))
                self.assertEqual(r.status, 200, r)
                got = r.json()["changes"]
                self.assertEqual(len(got), 30, (d.name, got))
                self.assertEqual(len({c["version"] for c in got}), 30, d.name)
                self.assertEqual({c["id"] for c in got}, {"d%d" % i for i in range(2000, 2030)})
                if d is not ds[2]:
                    self.assertFalse(any(c["local"] for c in got), d.name)
            for i in (2000, 2015, 2029):
                self.assertEqual(len(get_doc(ds[0], pid, "d%d" % i)["heads"]), 1)
        finally:
            for d in ds:
                d.close()


if __name__ == "__main__":
    unittest.main()
