#!/usr/bin/python3
"""Integration tests of fieldsyncd's local API and syncctl, against the real daemon binary over
its real Unix socket and TCP port. Run by ctest (FIELDSYNCD and SYNCCTL point at the build), or
by hand: /usr/bin/python3 tests/integration/test_api.py -v
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import (  # noqa: E402
    SYNCCTL, Daemon, SseReader, read_line, request, wait_until)

V = "/v1/projects"


def q(s):
    return urllib.parse.quote(s, safe="")


class ApiTest(unittest.TestCase):
    """Most tests share one daemon; each uses its own project so they stay independent."""

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(name="api", settings={"api.sse_heartbeat_ms": 200,
                                             "api.longpoll_timeout_ms": 5000,
                                             "api.max_page_size": 50,
                                             "storage.durable": "false"}).start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        log = cls.d.log()
        cls.d.close()
        if rc != 0:
            raise AssertionError("fieldsyncd exited with %s:\n%s" % (rc, log))

    def project(self, name=None):
        return self.d.create_project(name or self.id().split(".")[-1])

    def ok(self, r, status=200):
        self.assertEqual(r.status, status, r)
        return r.json()

    def error(self, r, status, code):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.headers.get("content-type"), "application/json")
        body = r.json()
        self.assertEqual(body["error"], code, body)
        self.assertTrue(body["message"], body)
        return body

    # ------------------------------------------------------------ status, routing
    def test_status_on_both_sockets(self):
        s1 = self.ok(self.d.unix("GET", "/v1/status"))
        s2 = self.ok(self.d.http("GET", "/v1/status"))
        self.assertEqual(s1["device_id"], s2["device_id"])
        self.assertEqual(len(s1["device_id"]), 52)
        self.assertEqual(s1["device_id_short"].replace("-", ""), s1["device_id"][:16])
        self.assertEqual(s1["api"]["socket"], self.d.socket_path)
        self.assertEqual(s1["api"]["http"]["port"], self.d.port)
        self.assertEqual(s1["peers"]["known"], 0)  # filled by the sync engine
        self.assertIn("version", s1)
        self.assertGreaterEqual(s1["uptime_s"], 0)

    def test_unknown_route_and_method(self):
        self.error(self.d.unix("GET", "/v1/nope"), 404, "not_found")
        r = self.d.unix("DELETE", "/v1/status")
        self.error(r, 405, "unsupported")
        self.assertEqual(r.headers.get("allow"), "GET")

    def test_keep_alive_serves_many_requests_on_one_connection(self):
        conn = self.d.unix_connection()
        try:
            for _ in range(20):
                self.assertEqual(request(conn, "GET", "/v1/status").status, 200)
        finally:
            conn.close()

    # ------------------------------------------------------------ access control
    def test_tcp_requires_bearer_token(self):
        r = self.d.http("GET", "/v1/status", token=None)
        self.error(r, 401, "unauthenticated")
        self.assertEqual(r.headers.get("www-authenticate"), "Bearer")
        self.error(self.d.http("GET", "/v1/status", token="0" * 64), 401, "unauthenticated")
        self.error(self.d.http("GET", "/v1/status", token=self.d.token[:-1]), 401, "unauthenticated")
        self.error(self.d.http("GET", V, headers={"Authorization": "Basic " + self.d.token}, token=None),
                   401, "unauthenticated")
        self.ok(self.d.http("GET", V))

    def test_token_file_is_private(self):
        mode = os.stat(os.path.join(self.d.data_dir, "api.token")).st_mode & 0o777
        self.assertEqual(mode, 0o600)
        self.assertEqual(len(self.d.token), 64)
        mode = os.stat(os.path.join(self.d.data_dir, "api.port")).st_mode & 0o777
        self.assertEqual(mode, 0o600)
        self.assertEqual(os.stat(self.d.socket_path).st_mode & 0o777, 0o660)

    def test_tcp_rejects_foreign_host_header(self):
        for host in ["evil.example", "evil.example:%d" % self.d.port, "127.0.0.1.evil.example",
                     "localhost.evil", "192.168.1.2"]:
            self.error(self.d.http("GET", "/v1/status", headers={"Host": host}), 403, "permission_denied")
        for host in ["localhost", "localhost:%d" % self.d.port, "127.0.0.1:%d" % self.d.port,
                     "[::1]:%d" % self.d.port, "LOCALHOST"]:
            self.ok(self.d.http("GET", "/v1/status", headers={"Host": host}))

    def test_unix_socket_needs_no_token(self):
        self.ok(self.d.unix("GET", V))

    # ------------------------------------------------------------ projects
    def test_projects_crud(self):
        r = self.d.unix("POST", V, {"name": "field team", "settings": {"retention": 30, "x": 1.50}})
        p = self.ok(r, 201)
        self.assertEqual(len(p["id"]), 32)
        self.assertIn(b'"settings":{"retention": 30, "x": 1.5}', r.body)  # stored as sent
        ids = [x["id"] for x in self.ok(self.d.unix("GET", V))["projects"]]
        self.assertIn(p["id"], ids)
        self.assertEqual(self.ok(self.d.unix("GET", V + "/" + p["id"]))["name"], "field team")
        u = self.ok(self.d.unix("PATCH", V + "/" + p["id"], {"name": "renamed"}))
        self.assertEqual(u["name"], "renamed")
        self.assertEqual(u["settings"], {"retention": 30, "x": 1.5})
        u = self.ok(self.d.unix("PATCH", V + "/" + p["id"], {"settings": {"a": True}}))
        self.assertEqual((u["name"], u["settings"]), ("renamed", {"a": True}))
        self.assertEqual(self.ok(self.d.unix("GET", V + "/" + p["id"] + "/collections"))["collections"], [])

    def test_project_errors(self):
        self.error(self.d.unix("GET", V + "/xyz"), 400, "invalid_argument")
        self.error(self.d.unix("GET", V + "/" + "ab" * 16), 404, "not_found")
        b = self.error(self.d.unix("POST", V, {"name": "x", "colour": "red"}), 400, "invalid_argument")
        self.assertIn("colour", b["message"])
        self.error(self.d.unix("POST", V, "{not json"), 400, "invalid_argument")
        self.error(self.d.unix("POST", V, "[1,2]"), 400, "invalid_argument")
        self.error(self.d.unix("POST", V, {}), 400, "invalid_argument")
        self.error(self.d.unix("POST", V, {"name": "x", "settings": [1]}), 400, "invalid_argument")

    # ------------------------------------------------------------ documents
    def test_document_lifecycle(self):
        pid = self.project()
        docs = V + "/" + pid + "/docs/obs"
        raw = b'{"z": 1, "a": 1.50, "nested": {"unknown_field": [1e3, null]}, "s": "\\u00e9"}'
        c = self.ok(self.d.unix("POST", docs + "?id=obs-1", raw), 201)
        self.assertEqual((c["id"], c["collection"], c["conflict"]), ("obs-1", "obs", False))
        self.assertEqual(len(c["version"]), 64)
        self.assertGreater(c["local_seq"], 0)
        r = self.d.unix("GET", docs + "/obs-1")
        g = self.ok(r)
        self.assertTrue(r.body.endswith(b'"body":' + raw + b"}"), r.body)  # byte-exact body
        self.assertEqual(r.headers.get("etag"), '"%s"' % c["version"])
        self.assertEqual((g["version"], g["heads"], g["conflicts"], g["deleted"]),
                         (c["version"], [c["version"]], [], False))
        self.assertEqual(g["author"], self.d.device_id)
        self.assertNotIn("merge", g)

        # Random id; duplicate app id refused.
        c2 = self.ok(self.d.unix("POST", docs, {"k": 2}), 201)
        self.assertEqual(len(c2["id"]), 32)
        self.error(self.d.unix("POST", docs + "?id=obs-1", {"k": 3}), 409, "already_exists")

        # Update over the current version (query base and If-Match both work).
        u = self.ok(self.d.unix("PUT", docs + "/obs-1?base=" + c["version"], {"v": 2}))
        self.assertFalse(u["conflict"])
        u2 = self.ok(self.d.unix("PUT", docs + "/obs-1", {"v": 3}, headers={"If-Match": '"%s"' % u["version"]}))
        self.assertFalse(u2["conflict"])
        self.assertEqual(u2["heads"], [u2["version"]])
        # No base: over the winner.
        u3 = self.ok(self.d.unix("PUT", docs + "/obs-1", {"v": 4}))
        self.assertEqual(u3["heads"], [u3["version"]])

        h = self.ok(self.d.unix("GET", docs + "/obs-1/history"))["versions"]
        self.assertEqual([x["version"] for x in h][:4], [u3["version"], u2["version"], u["version"], c["version"]])
        self.assertEqual(h[0]["parents"], [u2["version"]])
        self.assertEqual(h[0]["body"], {"v": 4})

        # Delete: tombstone, hidden from lists unless include_deleted.
        dl = self.ok(self.d.unix("DELETE", docs + "/obs-1"))
        self.assertEqual(dl["heads"], [dl["version"]])
        g = self.ok(self.d.unix("GET", docs + "/obs-1"))
        self.assertTrue(g["deleted"])
        self.assertIsNone(g["body"])
        ids = [x["id"] for x in self.ok(self.d.unix("GET", docs))["docs"]]
        self.assertNotIn("obs-1", ids)
        ids = [x["id"] for x in self.ok(self.d.unix("GET", docs + "?include_deleted=1"))["docs"]]
        self.assertIn("obs-1", ids)
        self.assertEqual(self.ok(self.d.unix("GET", V + "/" + pid + "/collections"))["collections"], ["obs"])

        # Purge removes bodies locally.
        p = self.ok(self.d.unix("POST", docs + "/" + c2["id"] + "/purge"))
        self.assertGreaterEqual(p["purged"], 1)
        g = self.ok(self.d.unix("GET", docs + "/" + c2["id"]))
        self.assertTrue(g["purged"])

    def test_document_errors(self):
        pid = self.project()
        docs = V + "/" + pid + "/docs/obs"
        self.error(self.d.unix("POST", docs, "{oops"), 400, "invalid_argument")
        self.error(self.d.unix("POST", docs, "[1]"), 400, "invalid_argument")
        self.error(self.d.unix("POST", docs, '"text"'), 400, "invalid_argument")
        self.error(self.d.unix("GET", docs + "/missing"), 404, "not_found")
        self.error(self.d.unix("PUT", docs + "/x?base=nothex", {"a": 1}), 400, "invalid_argument")
        self.error(self.d.unix("PUT", docs + "/x?base=" + "0" * 64, {"a": 1}), 409, "failed_precondition")
        self.error(self.d.unix("DELETE", docs + "/missing"), 404, "not_found")
        self.error(self.d.unix("GET", docs + "?limit=abc"), 400, "invalid_argument")
        self.error(self.d.unix("GET", docs + "?limit=0"), 400, "invalid_argument")
        self.error(self.d.unix("GET", docs + "?where=novalue"), 400, "invalid_argument")
        self.error(self.d.unix("GET", docs + "?where=" + q("a=unquoted")), 400, "invalid_argument")
        self.error(self.d.unix("POST", V + "/" + "cd" * 16 + "/docs/obs", {"a": 1}), 404, "not_found")

    def test_numbers_and_key_order_stay_as_written_in_merges_and_syncctl(self):
        pid = self.project()
        doc = V + "/" + pid + "/docs/obs/n1"
        raw = b'{"z":1,"big":12345678901234567890123,"ph":7.10,"a":"x"}'
        hdr = {"Content-Type": "application/json"}
        base = self.ok(self.d.unix("PUT", doc, raw, hdr))["version"]
        self.ok(self.d.unix("PUT", doc + "?base=" + base,
                            b'{"z":2,"big":12345678901234567890123,"ph":7.10,"a":"x"}', hdr))
        self.ok(self.d.unix("PUT", doc + "?base=" + base,
                            b'{"z":1,"big":12345678901234567890124,"ph":7.10,"a":"x"}', hdr))
        text = self.d.unix("GET", doc).text
        # The merge preview is the heads' own text, member by member, in the winner's order.
        merge = text[text.index('"merge":'):]
        self.assertIn('"body":{"z":2,"big":12345678901234567890124,"ph":7.10,"a":"x"}', merge)
        out = self.d.syncctl("docs", "get", pid, "obs", "n1").stdout
        self.assertIn('"ph":7.10', out)
        self.assertIn("1234567890123456789012", out)
        self.assertNotIn("E0", out)
        out = self.d.syncctl("--json", "docs", "get", pid, "obs", "n1").stdout
        self.assertIn('"ph":7.10', out)

    def test_conditional_writes_refuse_instead_of_keeping_both(self):
        pid = self.project()
        docs = V + "/" + pid + "/docs/sites"
        doc = docs + "/well-9"
        # If-None-Match: * creates only.
        c = self.ok(self.d.unix("PUT", doc, {"depth": 1}, headers={"If-None-Match": "*"}))
        e = self.error(self.d.unix("PUT", doc, {"depth": 2}, headers={"If-None-Match": "*"}),
                       412, "aborted")
        self.assertIn("exists", e["message"])
        # If-Match with the current winner (the GET's ETag) writes over it.
        etag = self.d.unix("GET", doc).headers.get("etag")
        self.assertEqual(etag, '"%s"' % c["version"])
        a = self.ok(self.d.unix("PUT", doc, {"depth": 3}, headers={"If-Match": etag}))
        self.assertFalse(a["conflict"])
        # The same stale tag again: refused, nothing written, the message names both versions.
        e = self.error(self.d.unix("PUT", doc, {"depth": 4}, headers={"If-Match": etag}),
                       412, "aborted")
        self.assertIn(a["version"], e["message"])
        self.assertIn(c["version"], e["message"])
        g = self.ok(self.d.unix("GET", doc))
        self.assertEqual((g["heads"], g["body"]), ([a["version"]], {"depth": 3}))
        # The same stale base as ?base= keeps both (the default).
        b = self.ok(self.d.unix("PUT", doc + "?base=" + c["version"], {"depth": 5}))
        self.assertTrue(b["conflict"])
        # In conflict: If-Match must name the winner; a losing head is refused.
        g = self.ok(self.d.unix("GET", doc))
        loser = g["conflicts"][0]
        self.error(self.d.unix("PUT", doc, {"depth": 6}, headers={"If-Match": '"%s"' % loser}),
                   412, "aborted")
        w = self.ok(self.d.unix("PUT", doc, {"depth": 6}, headers={"If-Match": 'W/"%s"' % g["version"]}))
        self.assertIn(loser, w["heads"])  # the other side stays a conflict, as with ?base=
        # If-Match: * needs a live document; a missing or deleted one is refused.
        self.error(self.d.unix("PUT", docs + "/nope", {"x": 1}, headers={"If-Match": "*"}),
                   412, "aborted")
        self.error(self.d.unix("PUT", docs + "/nope", {"x": 1},
                               headers={"If-Match": '"%s"' % c["version"]}), 412, "aborted")
        self.assertEqual(self.d.unix("GET", docs + "/nope").status, 404)
        # DELETE with a stale tag is refused; with the winner it deletes.
        cur = self.ok(self.d.unix("GET", doc))["version"]
        self.error(self.d.unix("DELETE", doc, headers={"If-Match": '"%s"' % c["version"]}),
                   412, "aborted")
        self.ok(self.d.unix("DELETE", doc, headers={"If-Match": '"%s"' % cur}))
        self.assertTrue(self.ok(self.d.unix("GET", doc))["deleted"])
        self.error(self.d.unix("DELETE", doc, headers={"If-Match": "*"}), 412, "aborted")
        # A deleted document can be created again with If-None-Match: *.
        self.ok(self.d.unix("PUT", doc, {"depth": 7}, headers={"If-None-Match": "*"}))
        # Bad combinations and values.
        self.error(self.d.unix("PUT", doc + "?base=" + cur, {"x": 1}, headers={"If-Match": '"%s"' % cur}),
                   400, "invalid_argument")
        self.error(self.d.unix("PUT", doc, {"x": 1}, headers={"If-Match": '"%s", "%s"' % (cur, cur)}),
                   400, "invalid_argument")
        self.error(self.d.unix("PUT", doc, {"x": 1}, headers={"If-None-Match": '"%s"' % cur}),
                   400, "invalid_argument")
        # A batch: one stale if_match fails all of it.
        now = self.ok(self.d.unix("GET", doc))["version"]
        r = self.d.unix("POST", V + "/" + pid + "/batch", {"writes": [
            {"collection": "sites", "id": "new-1", "body": {"n": 1}},
            {"collection": "sites", "id": "well-9", "body": {"depth": 8}, "if_match": c["version"]}]})
        self.error(r, 412, "aborted")
        self.assertEqual(self.d.unix("GET", docs + "/new-1").status, 404)
        ok = self.ok(self.d.unix("POST", V + "/" + pid + "/batch", {"writes": [
            {"collection": "sites", "id": "well-9", "body": {"depth": 8}, "if_match": now}]}))
        self.assertEqual(ok["results"][0]["heads"], [ok["results"][0]["version"]])
        self.error(self.d.unix("POST", V + "/" + pid + "/batch", {"writes": [
            {"collection": "sites", "id": "well-9", "body": {}, "if_match": now, "base": now}]}),
            400, "invalid_argument")

    def test_stale_base_keeps_both_and_resolve(self):
        pid = self.project()
        doc = V + "/" + pid + "/docs/sites/well-7"
        base = self.ok(self.d.unix("PUT", doc, {"depth": 10, "status": "ok", "note": "a"}))["version"]
        a = self.ok(self.d.unix("PUT", doc + "?base=" + base, {"depth": 12, "status": "ok", "note": "a"}))
        self.assertFalse(a["conflict"])
        b = self.ok(self.d.unix("PUT", doc + "?base=" + base, {"depth": 10, "status": "dry", "note": "a"}))
        self.assertTrue(b["conflict"])
        self.assertIn("concurrent version was kept", b["message"])
        self.assertEqual(sorted(b["heads"]), sorted([a["version"], b["version"]]))

        g = self.ok(self.d.unix("GET", doc))
        self.assertEqual(len(g["heads"]), 2)
        self.assertEqual(g["conflicts"], [h for h in g["heads"] if h != g["version"]])
        self.assertTrue(g["merge"]["clean"])
        self.assertEqual(g["merge"]["body"], {"depth": 12, "status": "dry", "note": "a"})

        confl = self.ok(self.d.unix("GET", V + "/" + pid + "/conflicts"))["docs"]
        self.assertEqual([(x["collection"], x["id"]) for x in confl], [("sites", "well-7")])
        listed = self.ok(self.d.unix("GET", V + "/" + pid + "/docs/sites?conflicts=1"))["docs"]
        self.assertEqual(len(listed), 1)

        m = self.ok(self.d.unix("POST", doc + "/resolve", {"strategy": "merge"}))
        self.assertEqual(m["heads"], [m["version"]])
        self.assertEqual(self.ok(self.d.unix("GET", doc))["body"], {"depth": 12, "status": "dry", "note": "a"})
        self.assertEqual(self.ok(self.d.unix("GET", V + "/" + pid + "/conflicts"))["docs"], [])

        # Same field changed on both sides: merge refused with the field named.
        base = m["version"]
        x = self.ok(self.d.unix("PUT", doc + "?base=" + base, {"depth": 1, "status": "dry", "note": "a"}))
        y = self.ok(self.d.unix("PUT", doc + "?base=" + base, {"depth": 2, "status": "dry", "note": "a"}))
        self.assertTrue(y["conflict"])
        e = self.error(self.d.unix("POST", doc + "/resolve", {"strategy": "merge"}), 409, "failed_precondition")
        self.assertEqual(e["conflicting_fields"], ["depth"])
        g = self.ok(self.d.unix("GET", doc))
        self.assertFalse(g["merge"]["clean"])
        self.assertEqual(g["merge"]["conflicting_fields"], ["depth"])
        self.error(self.d.unix("POST", doc + "/resolve", {"strategy": "coin"}), 400, "invalid_argument")
        e = self.error(self.d.unix("POST", doc + "/resolve", {"body": {}, "why": 1}), 400, "invalid_argument")
        self.assertIn("why", e["message"])
        r = self.ok(self.d.unix("POST", doc + "/resolve",
                                {"parents": [x["version"], y["version"]], "body": {"depth": 1.5}}))
        self.assertEqual(r["heads"], [r["version"]])
        self.assertFalse(r["conflict"])
        self.assertEqual(self.ok(self.d.unix("GET", doc))["body"], {"depth": 1.5})

    def test_list_filters_and_pagination(self):
        pid = self.project()
        docs = V + "/" + pid + "/docs/obs"
        for i in range(7):
            self.ok(self.d.unix("POST", docs + "?id=o%d" % i,
                                {"category": "wildlife" if i % 2 else "water", "n": i}), 201)
        r = self.ok(self.d.unix("GET", docs + "?where=" + q('category="wildlife"')))
        self.assertEqual(sorted(x["id"] for x in r["docs"]), ["o1", "o3", "o5"])
        r = self.ok(self.d.unix("GET", docs + "?where=" + q('category="wildlife"') + "&where=" + q("n=3")))
        self.assertEqual([x["id"] for x in r["docs"]], ["o3"])
        seen, after = [], None
        while True:
            r = self.ok(self.d.unix("GET", docs + "?limit=3" + ("&after=" + q(after) if after else "")))
            self.assertLessEqual(len(r["docs"]), 3)
            seen += [x["id"] for x in r["docs"]]
            after = r["next"]
            if after is None:
                break
        self.assertEqual(sorted(seen), ["o%d" % i for i in range(7)])
        # limit is clamped to api.max_page_size (50 here)
        self.assertEqual(len(self.ok(self.d.unix("GET", docs + "?limit=100000"))["docs"]), 7)

    def test_batch_all_or_nothing(self):
        pid = self.project()
        b = V + "/" + pid + "/batch"
        raw = (b'{"writes":[{"collection":"a","id":"1","body":{"x": 1.50, "u":{"keep":true}}},'
               b'{"collection":"a","body":{"y":2}},{"collection":"b","id":"z","body":{}}]}')
        res = self.ok(self.d.unix("POST", b, raw))["results"]
        self.assertEqual(len(res), 3)
        self.assertEqual(res[0]["id"], "1")
        r = self.d.unix("GET", V + "/" + pid + "/docs/a/1")
        self.assertTrue(r.body.endswith(b'"body":{"x": 1.50, "u":{"keep":true}}}'), r.body)
        # Update + delete in one batch.
        res = self.ok(self.d.unix("POST", b, {"writes": [
            {"collection": "a", "id": "1", "base": res[0]["version"], "body": {"x": 2}},
            {"collection": "b", "id": "z", "delete": True}]}))["results"]
        self.assertFalse(res[0]["conflict"])
        self.assertTrue(self.ok(self.d.unix("GET", V + "/" + pid + "/docs/b/z"))["deleted"])
        # One bad write: nothing is written.
        before = self.ok(self.d.unix("GET", V + "/" + pid + "/changes"))["last_seq"]
        self.error(self.d.unix("POST", b, {"writes": [
            {"collection": "a", "id": "new1", "body": {"ok": 1}},
            {"collection": "a", "id": "missing", "delete": True}]}), 404, "not_found")
        self.error(self.d.unix("GET", V + "/" + pid + "/docs/a/new1"), 404, "not_found")
        self.assertEqual(self.ok(self.d.unix("GET", V + "/" + pid + "/changes"))["last_seq"], before)
        e = self.error(self.d.unix("POST", b, {"writes": [{"collection": "a", "body": {}, "colour": 1}]}),
                       400, "invalid_argument")
        self.assertIn("colour", e["message"])
        self.error(self.d.unix("POST", b, {"writes": [{"collection": "a", "body": [1]}]}), 400, "invalid_argument")
        self.error(self.d.unix("POST", b, {"write": []}), 400, "invalid_argument")

    # ------------------------------------------------------------ changes feed
    def test_changes_normal(self):
        pid = self.project()
        for i in range(5):
            self.ok(self.d.unix("PUT", V + "/" + pid + "/docs/c/d%d" % i, {"i": i}))
        r = self.ok(self.d.unix("GET", V + "/" + pid + "/changes?since=0&limit=3"))
        self.assertEqual([c["id"] for c in r["changes"]], ["d0", "d1", "d2"])
        self.assertEqual(r["last_seq"], r["changes"][-1]["seq"])
        self.assertTrue(all(c["local"] for c in r["changes"]))
        r2 = self.ok(self.d.unix("GET", V + "/" + pid + "/changes?since=%d" % r["last_seq"]))
        self.assertEqual([c["id"] for c in r2["changes"]], ["d3", "d4"])
        self.error(self.d.unix("GET", V + "/" + pid + "/changes?feed=carrier-pigeon"), 400, "invalid_argument")
        self.error(self.d.unix("GET", V + "/" + pid + "/changes?since=-1"), 400, "invalid_argument")

    def test_longpoll_wakes_on_write(self):
        pid = self.project()
        last = self.ok(self.d.unix("GET", V + "/" + pid + "/changes"))["last_seq"]
        result = {}

        def poll():
            result["r"] = self.d.unix("GET", V + "/" + pid + "/changes?feed=longpoll&timeout=20000&since=%d" % last)

        t = threading.Thread(target=poll)
        t.start()
        wait_until(lambda: self.d.unix("GET", "/v1/status").json()["api"]["streams"] >= 1, 10,
                   what="the long-poll to be parked")
        w = self.ok(self.d.unix("PUT", V + "/" + pid + "/docs/c/live", {"hello": 1}))
        t.join(10)
        self.assertFalse(t.is_alive(), "long-poll did not return after a write")
        r = self.ok(result["r"])
        self.assertEqual([c["version"] for c in r["changes"]], [w["version"]])

    def test_longpoll_times_out_empty(self):
        pid = self.project()
        r = self.ok(self.d.unix("GET", V + "/" + pid + "/changes?feed=longpoll&timeout=100&since=now"))
        self.assertEqual(r["changes"], [])

    def test_longpoll_timeout_is_bounded(self):
        pid = self.project()
        # timeout above api.longpoll_timeout_ms (5000 here) is clamped, not an error.
        self.ok(self.d.unix("PUT", V + "/" + pid + "/docs/c/x", {"a": 1}))
        r = self.ok(self.d.unix("GET", V + "/" + pid + "/changes?feed=longpoll&timeout=99999999"))
        self.assertEqual(len(r["changes"]), 1)

    def test_sse_delivers_live_changes_and_resumes(self):
        pid = self.project()
        path = V + "/" + pid + "/changes?feed=sse&since=now"
        s = SseReader(sock_path=self.d.socket_path, path=path)
        try:
            self.assertEqual(s.status, 200)
            self.assertIn("text/event-stream", s.head)
            w1 = self.ok(self.d.unix("PUT", V + "/" + pid + "/docs/c/one", {"n": 1}))
            w2 = self.ok(self.d.unix("PUT", V + "/" + pid + "/docs/c/two", {"n": 2}))
            e1 = s.next_event()
            e2 = s.next_event()
            self.assertEqual((e1["event"], e1["json"]["version"]), ("change", w1["version"]))
            self.assertEqual((e2["event"], e2["json"]["version"]), ("change", w2["version"]))
            self.assertEqual(int(e1["id"]), w1["local_seq"])
            self.assertEqual(int(e2["id"]), w2["local_seq"])
            # Heartbeat comments every api.sse_heartbeat_ms (200 ms here).
            block = s.next_block()
            self.assertIn(": heartbeat", block)
        finally:
            s.close()
        # Reconnect with Last-Event-ID: only what came after it.
        s = SseReader(sock_path=self.d.socket_path, path=V + "/" + pid + "/changes?feed=sse&since=0",
                      headers={"Last-Event-ID": e1["id"]})
        try:
            e = s.next_event()
            self.assertEqual(e["json"]["id"], "two")
        finally:
            s.close()

    def test_sse_over_tcp_needs_token(self):
        pid = self.project()
        s = SseReader(tcp=("127.0.0.1", self.d.port), path=V + "/" + pid + "/changes?feed=sse")
        self.assertEqual(s.status, 401)
        s.close()
        s = SseReader(tcp=("127.0.0.1", self.d.port), path=V + "/" + pid + "/changes?feed=sse",
                      headers={"Authorization": "Bearer " + self.d.token})
        try:
            self.assertEqual(s.status, 200)
            w = self.ok(self.d.http("PUT", V + "/" + pid + "/docs/c/t", {"n": 1}))
            self.assertEqual(s.next_event()["json"]["version"], w["version"])
        finally:
            s.close()

    # ------------------------------------------------------------ concurrency
    def test_50_concurrent_clients_without_loss(self):
        pid = self.project()
        clients, per_client = 50, 10
        errors = []

        def writer(c):
            conn = self.d.unix_connection() if c % 2 == 0 else self.d.tcp_connection()
            h = {} if c % 2 == 0 else {"Authorization": "Bearer " + self.d.token}
            try:
                for i in range(per_client):
                    r = request(conn, "POST", V + "/" + pid + "/docs/load?id=c%02d-%02d" % (c, i),
                                {"client": c, "i": i}, h)
                    if r.status != 201:
                        errors.append(r)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
            finally:
                conn.close()

        threads = [threading.Thread(target=writer, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        seen, after = set(), None
        while True:
            r = self.ok(self.d.unix("GET", V + "/" + pid + "/docs/load?limit=50" + ("&after=" + q(after) if after else "")))
            seen |= {x["id"] for x in r["docs"]}
            after = r["next"]
            if after is None:
                break
        self.assertEqual(len(seen), clients * per_client)
        changes, since = [], 0
        while True:
            r = self.ok(self.d.unix("GET", V + "/" + pid + "/changes?limit=50&since=%d" % since))
            if not r["changes"]:
                break
            changes += r["changes"]
            since = r["last_seq"]
        self.assertEqual(len(changes), clients * per_client)
        self.assertEqual(len({c["seq"] for c in changes}), clients * per_client)


class LimitsTest(unittest.TestCase):
    """A daemon with small limits: body size, connections, request timeout."""

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(name="lim", settings={"api.max_body_bytes": 2048, "api.max_connections": 3,
                                             "api.max_unix_connections": 3,
                                             "api.request_timeout_ms": 1000}).start()

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def test_oversized_body_413(self):
        pid = self.d.create_project()
        big = json.dumps({"blob": "x" * 5000})
        r = self.d.unix("POST", V + "/" + pid + "/docs/a", big)
        self.assertEqual(r.status, 413, r)
        self.assertEqual(r.json()["error"], "too_large")
        self.assertIn("api.max_body_bytes", r.json()["message"])
        # Chunked body (no Content-Length) over the limit: also 413.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.d.socket_path)
        chunk = b"x" * 3000
        s.sendall(b"POST /v1/projects/" + pid.encode() + b"/docs/a HTTP/1.1\r\nHost: localhost\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            part = s.recv(4096)
            if not part:
                break
            data += part
        s.close()
        self.assertTrue(data.startswith(b"HTTP/1.1 413"), data[:100])
        self.assertEqual(self.d.unix("POST", V + "/" + pid + "/docs/a", {"small": 1}).status, 201)

    def test_connection_limit_503(self):
        held = []
        try:
            # Idle keep-alive connections make room for a new one.
            for _ in range(3):
                c = self.d.unix_connection()
                self.assertEqual(request(c, "GET", "/v1/status").status, 200)
                held.append(c)
            self.assertEqual(self.d.unix("GET", "/v1/status").status, 200)
        finally:
            for c in held:
                c.close()
        # Connections busy with long-polls do not: a new one gets 503.
        pid = self.d.create_project("connlimit")
        results = []

        def poll():
            results.append(self.d.unix("GET", V + "/" + pid + "/changes?feed=longpoll&since=now&timeout=30000",
                                       timeout=60).status)
        threads = [threading.Thread(target=poll) for _ in range(3)]
        # One at a time (a connection still sending its header may be dropped to make room),
        # watched over TCP, which has its own budget.
        for i, t in enumerate(threads):
            t.start()
            wait_until(lambda: self.d.http("GET", "/v1/status").json()["api"]["streams"] == i + 1, 10,
                       what="long-poll %d to park" % (i + 1))
        r = self.d.unix("GET", "/v1/status")
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.json()["error"], "resource_exhausted")
        self.assertIn("api.max_unix_connections", r.json()["message"])
        # TCP has its own budget: a write there wakes the long-polls.
        self.assertIn(self.d.http("PUT", V + "/" + pid + "/docs/c/wake", {"a": 1}).status, (200, 201))
        for t in threads:
            t.join(30)
        self.assertEqual(results, [200, 200, 200])
        wait_until(lambda: self.d.unix("GET", "/v1/status").status == 200, 10, what="slots to free up")

    def test_idle_connection_closed_after_request_timeout(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.d.socket_path)
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: local")  # never finished
        self.assertEqual(s.recv(100), b"")  # closed by the daemon after api.request_timeout_ms
        s.close()

    def test_expect_100_continue(self):
        pid = self.d.create_project("expect")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.d.socket_path)
        body = b'{"a": 1}'
        s.sendall(b"POST /v1/projects/" + pid.encode() + b"/docs/c?id=e HTTP/1.1\r\nHost: localhost\r\n"
                  b"Expect: 100-continue\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        interim = s.recv(4096)
        self.assertTrue(interim.startswith(b"HTTP/1.1 100"), interim)
        s.sendall(body)
        data = b""
        while True:
            part = s.recv(4096)
            if not part:
                break
            data += part
        s.close()
        self.assertTrue(data.startswith(b"HTTP/1.1 201"), data[:200])

    def test_malformed_http_400(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.d.socket_path)
        s.sendall(b"GET /v1/status HTTP/1.1\r\nBad Header Line\r\n\r\n")
        data = s.recv(4096)
        s.close()
        self.assertTrue(data.startswith(b"HTTP/1.1 400"), data[:100])


class GarbageTest(unittest.TestCase):
    """Random bytes and broken requests on both sockets never take the daemon down."""

    def test_random_bytes_on_both_sockets(self):
        import random
        rng = random.Random(7)
        prefixes = [b"", b"GET ", b"POST /v1/projects HTTP/1.1\r\n", b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n",
                    b"PUT /v1/projects/%s/docs/c/x HTTP/1.1\r\nContent-Length: 5\r\n\r\n"]
        with Daemon(name="junk", settings={"api.request_timeout_ms": 300}) as d:
            for i in range(120):
                if i % 2:
                    s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
                else:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.settimeout(5)
                    s.connect(d.socket_path)
                junk = rng.choice(prefixes) + bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
                try:
                    s.sendall(junk)
                    s.shutdown(socket.SHUT_WR)
                    while s.recv(4096):
                        pass
                except OSError:
                    pass  # a reset is an acceptable answer to garbage
                finally:
                    s.close()
            self.assertEqual(d.unix("GET", "/v1/status").status, 200)
            self.assertEqual(d.http("GET", "/v1/status").status, 200)
            self.assertEqual(d.stop(), 0, d.log())


class LifecycleTest(unittest.TestCase):
    def test_restart_keeps_data_and_identity(self):
        with Daemon(name="rs") as d:
            pid = d.create_project("keep")
            w = d.unix("PUT", V + "/" + pid + "/docs/c/k", {"v": 1}).json()
            device, token = d.device_id, d.token
            self.assertEqual(d.stop(), 0)
            self.assertFalse(os.path.exists(d.socket_path), "socket file left behind")
            d.start()
            self.assertEqual(d.device_id, device)
            self.assertEqual(d.token, token)
            g = d.unix("GET", V + "/" + pid + "/docs/c/k").json()
            self.assertEqual((g["version"], g["body"]), (w["version"], {"v": 1}))

    def test_stale_socket_file_is_replaced_and_second_daemon_refused(self):
        with Daemon(name="st") as d:
            d.kill()  # leaves the socket file behind
            self.assertTrue(os.path.exists(d.socket_path))
            d.start()
            second = Daemon(name="st2", workdir=None)
            second.socket_path = d.socket_path
            second.settings["api.http_enabled"] = "false"
            try:
                p = subprocess.run(second.args(), capture_output=True, text=True, timeout=30)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn("already listening", p.stderr)
            finally:
                second.close()
            self.assertEqual(d.unix("GET", "/v1/status").status, 200)

    def test_sigterm_ends_sse_streams_and_exits_zero(self):
        d = Daemon(name="sig").start()
        try:
            pid = d.create_project()
            s = SseReader(sock_path=d.socket_path, path=V + "/" + pid + "/changes?feed=sse")
            self.assertEqual(s.status, 200)
            self.assertEqual(d.stop(), 0)
            with self.assertRaises((EOFError, ConnectionResetError)):
                while True:
                    s.next_block()
            s.close()
        finally:
            d.close()

    def test_journal_format_and_no_token_in_logs(self):
        with Daemon(name="jl", env={"JOURNAL_STREAM": "0:0"}) as d:
            d.unix("GET", "/v1/status")
            self.assertEqual(d.stop(), 0)
            log = d.log()
        self.assertIn("<6>device id " + d.device_id, log)
        for line in log.splitlines():
            self.assertRegex(line, r"^<[0-7]>")  # priority prefix, no timestamp of our own
        self.assertNotIn(d.token, log)
        self.assertIn("api.token", log)  # says where the token is

    def test_socket_mode_group_and_parent_dir(self):
        import grp
        group = next((g for g in grp.getgrall() if g.gr_gid != os.getgid()), None)
        if group is None:
            self.skipTest("no second group on this machine")
        d = Daemon(name="grp", settings={"api.socket_mode": "0640", "api.socket_group": group.gr_name})
        d.socket_path = os.path.join(d.workdir, "run", "api.sock")
        try:
            d.start()
            st = os.stat(d.socket_path)
            self.assertEqual(st.st_mode & 0o777, 0o640)
            self.assertEqual(st.st_gid, group.gr_gid)
            self.assertEqual(os.stat(os.path.dirname(d.socket_path)).st_mode & 0o777, 0o750)
        finally:
            d.close()

    def test_sigterm_answers_parked_longpoll_then_exits_zero(self):
        d = Daemon(name="lp").start()
        try:
            pid = d.create_project()
            result = {}

            def poll():
                result["r"] = d.unix("GET", V + "/" + pid + "/changes?feed=longpoll&since=now&timeout=60000")

            t = threading.Thread(target=poll)
            t.start()
            wait_until(lambda: d.unix("GET", "/v1/status").json()["api"]["streams"] == 1, 10,
                       what="the long-poll to be parked")
            self.assertEqual(d.stop(), 0)
            t.join(30)
            self.assertFalse(t.is_alive())
            r = result["r"]
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["changes"], [])
            self.assertEqual(r.headers.get("connection"), "close")
        finally:
            d.close()

    def test_bad_config_exits_2_naming_the_key(self):
        d = Daemon(name="bad", settings={"api.http_port": "seventy"})
        try:
            p = subprocess.run(d.args(), capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 2)
            self.assertIn("api.http_port", p.stderr)
        finally:
            d.close()


class DataDirTest(unittest.TestCase):
    """One daemon per data directory; the directory and its secrets are private."""

    def test_second_daemon_on_one_data_dir_is_refused(self):
        with Daemon(name="dd") as d:
            with open(os.path.join(d.data_dir, "api.port")) as f:
                port_before = f.read()
            # Both spellings of the data directory: --data-dir and --set daemon.data_dir=.
            for via_set in (False, True):
                second = Daemon(name="dd2")
                try:
                    if via_set:
                        second.settings["daemon.data_dir"] = d.data_dir
                    else:
                        second.data_dir = d.data_dir
                    p = subprocess.run(second.args(), capture_output=True, text=True, timeout=30)
                    out = p.stdout + p.stderr
                    self.assertNotEqual(p.returncode, 0, out)
                    self.assertIn("in use by another fieldsyncd", out)
                    self.assertIn("pid %d" % d.proc.pid, out)
                    self.assertFalse(os.path.exists(second.socket_path), out)
                finally:
                    second.close()
            with open(os.path.join(d.data_dir, "api.port")) as f:
                self.assertEqual(f.read(), port_before)
            with open(os.path.join(d.data_dir, "fieldsyncd.lock")) as f:
                self.assertEqual(f.read().strip(), str(d.proc.pid))
            self.assertEqual(d.unix("GET", "/v1/status").status, 200)
            self.assertEqual(d.http("GET", "/v1/status").status, 200)
            # The lock goes with the process, even on SIGKILL: a new daemon starts.
            d.kill()
            d.start()
            self.assertEqual(d.unix("GET", "/v1/status").status, 200)

    def test_umask_000_creates_private_dirs_and_loose_key_is_tightened(self):
        d = Daemon(name="um")
        d.data_dir = os.path.join(d.workdir, "x", "y", "data")
        old = os.umask(0)
        try:
            d.start()
        finally:
            os.umask(old)
        try:
            for p in (os.path.join(d.workdir, "x"), os.path.join(d.workdir, "x", "y"),
                      d.data_dir, os.path.join(d.data_dir, "db")):
                self.assertEqual(os.stat(p).st_mode & 0o7777, 0o700, p)
            for name in ("device.key", "api.token", "api.port", "fieldsyncd.lock",
                         "db/data.mdb"):
                p = os.path.join(d.data_dir, name)
                self.assertEqual(os.stat(p).st_mode & 0o7777, 0o600, p)
            self.assertEqual(d.stop(), 0)
            key = os.path.join(d.data_dir, "device.key")
            os.chmod(key, 0o644)
            d.start()
            self.assertEqual(os.stat(key).st_mode & 0o7777, 0o600)
            self.assertIn("device.key had mode 0644; tightened to 0600", d.log())
        finally:
            d.close()


    def test_token_group_reads_the_token_and_nothing_else(self):
        """api.token_group: the token (and api.port) 0640 with the group, the data directory
        0710 (traverse, no listing); a user of the group reads the token and uses it, one
        outside it cannot; without the key everything is private again."""
        import grp
        if os.geteuid() == 0:
            group = next((g for g in grp.getgrall() if g.gr_gid not in (0, os.getgid())), None)
        else:
            others = [g for g in os.getgroups() if g != os.getgid()]
            group = grp.getgrgid(others[0] if others else os.getgid())
        if group is None:
            self.skipTest("no group other than root's on this machine")
        gid = group.gr_gid
        d = Daemon(name="tg", settings={"api.token_group": group.gr_name})
        try:
            d.start()
            token = os.path.join(d.data_dir, "api.token")
            for path, mode in ((d.data_dir, 0o710), (token, 0o640),
                               (os.path.join(d.data_dir, "api.port"), 0o640)):
                st = os.stat(path)
                self.assertEqual(st.st_mode & 0o7777, mode, path)
                self.assertEqual(st.st_gid, gid, path)
            for name in ("device.key", "fieldsyncd.lock"):
                self.assertEqual(os.stat(os.path.join(d.data_dir, name)).st_mode & 0o7777, 0o600)
            self.assertEqual(os.stat(os.path.join(d.data_dir, "db")).st_mode & 0o7777, 0o700)
            if os.geteuid() == 0 and shutil.which("setpriv"):
                # Another user: in the group it reads the token (and the API takes it); outside
                # it, or for the key or a listing, it is refused.
                os.chmod(d.workdir, 0o711)
                nobody = ["setpriv", "--reuid=65534", "--regid=65534"]
                member = nobody + ["--groups=%d" % gid]
                outsider = nobody + ["--clear-groups"]
                p = subprocess.run(member + ["cat", token], capture_output=True, text=True)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(p.stdout.strip(), d.token)
                self.assertEqual(d.http("GET", "/v1/status", token=p.stdout.strip()).status, 200)
                for argv in (member + ["cat", os.path.join(d.data_dir, "device.key")],
                             member + ["ls", d.data_dir], outsider + ["cat", token]):
                    p = subprocess.run(argv, capture_output=True, text=True)
                    self.assertNotEqual(p.returncode, 0, argv)
                    self.assertIn("Permission denied", p.stderr)
            self.assertEqual(d.stop(), 0)
            # Without the key the token is the user's alone again, as is the directory.
            del d.settings["api.token_group"]
            d.start()
            self.assertEqual(os.stat(d.data_dir).st_mode & 0o7777, 0o700)
            self.assertEqual(os.stat(token).st_mode & 0o7777, 0o600)
            self.assertEqual(os.stat(os.path.join(d.data_dir, "api.port")).st_mode & 0o7777, 0o600)
            self.assertIn("api.token had mode 0640; tightened to 0600", d.log())
            self.assertEqual(d.stop(), 0)
            # A group that does not exist stops the start, naming the key.
            d.settings["api.token_group"] = "no-such-group-fs"
            p = subprocess.run(d.args(), capture_output=True, text=True, timeout=30)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("api.token_group: no group named 'no-such-group-fs'", p.stdout + p.stderr)
        finally:
            d.close()


class SyncctlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(name="cli", settings={"storage.durable": "false"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def run_ok(self, *args, **kw):
        p = self.d.syncctl(*args, **kw)
        self.assertEqual(p.returncode, 0, p.stderr + p.stdout)
        return p.stdout

    def test_status_human_and_json(self):
        out = self.run_ok("status")
        self.assertIn(self.d.device_id, out)
        self.assertIn("api socket", out)
        # Bluetooth LE is off by default, and says so.
        self.assertRegex(out, r"(?m)^bluetooth +off: ble\.enabled = false$")
        st = json.loads(self.run_ok("--json", "status"))
        self.assertEqual(st["device_id"], self.d.device_id)
        self.assertEqual(st["ble"]["state"], "off")

    def test_projects_docs_changes_conflicts(self):
        out = self.run_ok("projects", "create", "survey")
        self.assertIn("created project survey", out)
        pid = out.split()[-1]
        listing = self.run_ok("projects")
        self.assertIn("survey", listing)
        self.assertIn("NAME", listing)
        projects = json.loads(self.run_ok("--json", "projects"))["projects"]
        self.assertIn(pid, [p["id"] for p in projects])

        w = json.loads(self.run_ok("--json", "docs", "put", "survey", "trees", "t1", '{"species":"oak","n":3}'))
        self.assertEqual(w["id"], "t1")
        self.assertIn("created trees/", self.run_ok("docs", "put", "survey", "trees", "-", input_text='{"n":1}'))
        out = self.run_ok("docs", "get", "survey", "trees", "t1")
        self.assertIn('"species":"oak"', out)
        g = json.loads(self.run_ok("--json", "docs", "get", pid, "trees", "t1"))
        self.assertEqual(g["body"], {"species": "oak", "n": 3})
        out = self.run_ok("docs", "list", "survey", "trees", "--where", 'species="oak"')
        self.assertIn("t1", out)
        self.assertEqual(len(out.strip().splitlines()), 2)  # header + t1

        # A conflict, shown and resolved through syncctl.
        self.run_ok("docs", "put", "survey", "trees", "t1", '{"species":"oak","n":4}', "--base", w["version"])
        out = self.run_ok("docs", "put", "survey", "trees", "t1", '{"species":"elm","n":3}', "--base", w["version"])
        self.assertIn("conflict", out)
        self.assertIn("t1", self.run_ok("conflicts", "survey"))
        self.assertIn("CONFLICT", self.run_ok("docs", "get", "survey", "trees", "t1"))
        self.assertIn("resolved", self.run_ok("resolve", "survey", "trees", "t1", "--merge"))
        self.assertEqual(json.loads(self.run_ok("--json", "conflicts", "survey"))["docs"], [])
        g = json.loads(self.run_ok("--json", "docs", "get", "survey", "trees", "t1"))
        self.assertEqual(g["body"], {"species": "elm", "n": 4})

        # Short version ids, as syncctl prints them, work wherever a version is given.
        hist = self.run_ok("docs", "history", "survey", "trees", "t1")
        short = g["version"][:12]
        self.assertIn(short, hist)
        out = self.run_ok("docs", "put", "survey", "trees", "t1", '{"species":"elm","n":5}', "--base", short)
        self.assertNotIn("conflict", out)
        cur = json.loads(self.run_ok("--json", "docs", "get", "survey", "trees", "t1"))["version"]
        self.run_ok("docs", "put", "survey", "trees", "t1", '{"species":"ash","n":5}', "--base", g["version"][:8])
        heads = json.loads(self.run_ok("--json", "docs", "get", "survey", "trees", "t1"))["heads"]
        self.assertEqual(len(heads), 2)  # the stale short base kept both
        other = [h for h in heads if h != cur][0]
        out = self.run_ok("resolve", "survey", "trees", "t1", "--body", '{"n":6}',
                          "--parents", "%s,%s" % (cur[:6], other[:10]))
        self.assertIn("(1 head)", out)
        versions = [h["version"] for h in json.loads(self.run_ok("--json", "docs", "history", "survey", "trees", "t1"))["versions"]]
        absent = next("%04x" % i for i in range(1 << 16) if not any(v.startswith("%04x" % i) for v in versions))
        p = self.d.syncctl("docs", "put", "survey", "trees", "t1", '{"n":7}', "--base", absent)
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("no version of this document starts with '%s'" % absent, p.stderr)
        p = self.d.syncctl("docs", "put", "survey", "trees", "t1", '{"n":7}', "--base", "zz")
        self.assertEqual(p.returncode, 2, p)
        self.assertIn("is not a version id", p.stderr)

        self.assertIn("deleted", self.run_ok("docs", "delete", "survey", "trees", "t1"))
        ch = json.loads(self.run_ok("--json", "changes", "survey"))
        self.assertGreaterEqual(len(ch["changes"]), 5)
        self.assertIn("SEQ", self.run_ok("changes", "survey", "--since", "2"))

    def test_indexes_list_create_wait_drop(self):
        self.run_ok("projects", "create", "wells")
        self.assertEqual(self.run_ok("indexes", "wells"),
                         "no indexes (declare one: syncctl indexes wells create NAME COLLECTION "
                         "FIELD [FIELD...])\n")
        docs = [{"collection": "obs", "id": "w%02d" % i,
                 "body": {"water": {"ph": 5 + i % 7 / 2}, "site": {"region": "n%d" % (i % 2)}}}
                for i in range(40)]
        pid = json.loads(self.run_ok("--json", "projects", "show", "wells"))["id"]
        r = self.d.unix("POST", "/v1/projects/%s/batch" % pid, {"writes": docs})
        self.assertEqual(r.status, 200, r)

        # Declared over documents already held: --wait polls until it is built.
        self.assertEqual(self.run_ok("indexes", "wells", "create", "by_ph", "obs", "water.ph",
                                     "--wait", "--timeout", "60"),
                         "by_ph  obs  [water.ph]  ready  40 entries\n")
        two = json.loads(self.run_ok("--json", "indexes", "wells", "create", "by_region_ph", "obs",
                                     "site.region", "water.ph", "--wait"))
        self.assertEqual((two["name"], two["collection"], two["fields"], two["ready"],
                          two["entries"]),
                         ("by_region_ph", "obs", ["site.region", "water.ph"], True, 40))
        # The same declaration again changes nothing; another one under the name is refused.
        self.assertIn("by_ph  obs  [water.ph]", self.run_ok("indexes", "wells", "create", "by_ph",
                                                            "obs", "water.ph"))
        p = self.d.syncctl("indexes", "wells", "create", "by_ph", "obs", "site.region")
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("already_exists", p.stderr)

        self.assertEqual(self.run_ok("indexes", "wells"),
                         "by_ph         obs  [water.ph]               ready  40 entries\n"
                         "by_region_ph  obs  [site.region, water.ph]  ready  40 entries\n")
        listed = json.loads(self.run_ok("--json", "indexes", pid))["indexes"]
        self.assertEqual([(i["name"], i["fields"], i["ready"]) for i in listed],
                         [("by_ph", ["water.ph"], True),
                          ("by_region_ph", ["site.region", "water.ph"], True)])
        # Queries use it.
        r = self.d.unix("GET", "/v1/projects/%s/docs/obs?sort=water.ph&limit=3" % pid)
        self.assertEqual((r.status, r.json()["plan"]["index"]), (200, "by_ph"), r)

        self.assertEqual(self.run_ok("indexes", "wells", "drop", "by_ph"), "dropped index by_ph\n")
        self.assertEqual(json.loads(self.run_ok("--json", "indexes", "wells", "drop",
                                                "by_region_ph")),
                         {"name": "by_region_ph", "dropped": True})
        p = self.d.syncctl("indexes", "wells", "drop", "by_ph")
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("not_found", p.stderr)
        self.assertEqual(json.loads(self.run_ok("--json", "indexes", "wells")), {"indexes": []})
        r = self.d.unix("GET", "/v1/projects/%s/docs/obs?sort=water.ph&limit=3" % pid)
        self.assertEqual((r.status, r.json()["plan"]["index"]), (200, None), r)

        # Usage errors (2) and the daemon's refusals (1).
        for args, message in [
                ((), "indexes needs a PROJECT"),
                (("wells", "create", "x", "obs"), "create takes NAME COLLECTION FIELD"),
                (("wells", "drop"), "expected PROJECT, PROJECT create"),
                (("wells", "rename", "x"), "expected PROJECT, PROJECT create"),
                (("wells", "--wait"), "--wait and --timeout go with create"),
                (("wells", "create", "x", "obs", "a", "--timeout", "5"),
                 "--timeout goes with --wait"),
                (("wells", "create", "x", "obs", "a", "--wait", "--timeout", "soon"),
                 "--timeout needs seconds"),
                (("wells", "--frobnicate"), "frobnicate")]:
            p = self.d.syncctl("indexes", *args)
            self.assertEqual(p.returncode, 2, (args, p))
            self.assertIn(message, p.stderr)
            self.assertIn("usage: syncctl indexes PROJECT", p.stderr)
        for args, message in [(("nosuchproject",), "no project named"),
                              (("wells", "create", "bad name", "obs", "a"), "invalid_argument"),
                              (("wells", "create", "x", "obs", *"abcdefghi"), "invalid_argument")]:
            p = self.d.syncctl("indexes", *args)
            self.assertEqual(p.returncode, 1, (args, p))
            self.assertIn(message, p.stderr)

    def test_timeouts_are_whole_numbers_of_seconds_or_refused(self):
        # The same check for every --timeout: a number of seconds and nothing after it.
        for args in (("sync", "somepeer", "--wait", "--timeout", "5x"),
                     ("join", "CODE", "--timeout", "1e99"),
                     ("join", "CODE", "--timeout", "-1"),
                     ("sync", "somepeer", "--timeout", "nan")):
            p = self.d.syncctl(*args)
            self.assertEqual(p.returncode, 2, (args, p))
            self.assertIn("--timeout needs seconds, not '%s'" % args[-1], p.stderr)

    def test_destination_device_is_one_path_segment(self):
        self.run_ok("projects", "create", "dest")
        # A device argument with a slash is sent as one segment: the daemon refuses the id,
        # never another route.
        p = self.d.syncctl("destinations", "dest", "add", "a/../../x", "hub")
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("invalid_argument", p.stderr)

    def test_changes_follow(self):
        self.run_ok("projects", "create", "follow")
        p = subprocess.Popen([SYNCCTL, "--socket", self.d.socket_path, "--json", "changes", "follow", "--follow"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            w = json.loads(self.run_ok("--json", "docs", "put", "follow", "c", "x", '{"a":1}'))
            line = read_line(p.stdout, 10, "the followed change")
            self.assertEqual(json.loads(line)["version"], w["version"])
        finally:
            p.terminate()
            p.communicate(timeout=10)

    def test_exit_codes_and_errors(self):
        p = self.d.syncctl("docs", "get", "nosuchproject", "c", "x")
        self.assertEqual(p.returncode, 1)
        self.assertIn("no project named", p.stderr)
        pid = json.loads(self.run_ok("--json", "projects", "create", "codes"))["id"]
        p = self.d.syncctl("docs", "get", pid, "c", "missing")
        self.assertEqual(p.returncode, 1)
        self.assertIn("not_found", p.stderr)
        p = self.d.syncctl("docs", "frobnicate", pid, "c")
        self.assertEqual(p.returncode, 2)
        p = self.d.syncctl("nonsense")
        self.assertEqual(p.returncode, 2)
        p = self.d.syncctl("docs", "put", pid, "c", "x", "{bad json")
        self.assertEqual(p.returncode, 2)
        p = subprocess.run([SYNCCTL, "--socket", "/tmp/fsi-none/api.sock", "status"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 3)
        self.assertIn("fieldsyncd is not running (no socket at /tmp/fsi-none/api.sock)", p.stderr)
        env = dict(os.environ, FIELDSYNC_SOCKET=self.d.socket_path)
        p = subprocess.run([SYNCCTL, "status"], capture_output=True,
                           text=True, timeout=30, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = self.d.syncctl("--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("exit codes", p.stdout)


if __name__ == "__main__":
    unittest.main()
