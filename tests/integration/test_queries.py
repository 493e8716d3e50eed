"""Queries over the local API against a real daemon: selector= (nested paths, ranges, all/any),
sort= with cursor pagination across writes and syncs, keys= bulk get, unknown parameters, and
the changes feed's include_docs= and collection= (normal, longpoll, SSE); declared indexes
answering the same as reads of the whole collection."""
import json
import os
import sys
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import (DaemonTestCase, SseReader, V, add_peer, share,  # noqa: E402
                               wait_until)


def q(**params):
    return "?" + urllib.parse.urlencode(params)


class QueryCase(DaemonTestCase):
    DEFAULTS = {"api.sse_heartbeat_ms": 200}

    def setUp(self):
        super().setUp()
        self.d = self.daemon("alpha")
        self.pid = self.d.create_project("survey")

    def put(self, coll, doc_id, body, d=None):
        r = (d or self.d).unix("PUT", V + "/%s/docs/%s/%s" % (self.pid, coll, doc_id), body)
        self.assertIn(r.status, (200, 201), r)
        return r.json()

    def get(self, path, status=200, d=None):
        r = (d or self.d).unix("GET", V + "/" + self.pid + path)
        self.assertEqual(r.status, status, r)
        return r.json()

    def ids(self, page):
        return [doc["id"] for doc in page["docs"]]

    def sites(self):
        """Eight wells with nested readings (and one without any)."""
        data = {
            "w1": {"water": {"ph": 6.1}, "site": {"district": 7}},
            "w2": {"water": {"ph": 7.4}, "site": {"district": 7}},
            "w3": {"water": {"ph": 8.0}, "site": {"district": 3}},
            "w4": {"water": {"ph": 6.6}, "site": {"district": 7}, "gps": {"lat": -4.5, "lon": -60.5}},
            "w5": {"water": {"ph": "unknown"}, "site": {"district": 7}},
            "w6": {"site": {"district": 7}},
            "w7": {"water": {"ph": 9.9}, "site": {"district": 2}, "gps": {"lat": 10, "lon": 10}},
            "w8": {"water": {"ph": 6.5}, "site": {"district": 7}},
        }
        for k, v in data.items():
            self.put("wells", k, v)
        return data



class Queries(QueryCase):
    def test_selector_on_nested_paths_ranges_and_combinations(self):
        self.sites()
        sel = {"range": {"path": "water.ph", "gt": 6.5}}
        self.assertEqual(self.ids(self.get("/docs/wells" + q(selector=json.dumps(sel)))),
                         ["w2", "w3", "w4", "w7"])
        sel = {"all": [{"range": {"path": "water.ph", "gte": 6.5, "lt": 8}},
                       {"eq": {"path": "site.district", "value": 7}}]}
        self.assertEqual(self.ids(self.get("/docs/wells" + q(selector=json.dumps(sel)))),
                         ["w2", "w4", "w8"])
        sel = {"any": [{"in": {"path": "site.district", "values": [2, 3]}},
                       {"bbox": {"lat": "gps.lat", "lon": "gps.lon", "south": -5, "west": -61,
                                 "north": -4, "east": -60}}]}
        self.assertEqual(self.ids(self.get("/docs/wells" + q(selector=json.dumps(sel)))),
                         ["w3", "w4", "w7"])
        # With where= (top-level equality) both must match; pagination keeps the filter.
        self.put("wells", "w9", {"kind": "bore", "water": {"ph": 7.0}})
        page = self.get("/docs/wells?where=kind%3D%22bore%22&" +
                        urllib.parse.urlencode({"selector": json.dumps(
                            {"range": {"path": "water.ph", "gt": 6.9}})}))
        self.assertEqual(self.ids(page), ["w9"])
        sel = json.dumps({"eq": {"path": "site.district", "value": 7}})
        p1 = self.get("/docs/wells" + q(selector=sel, limit=3))
        p2 = self.get("/docs/wells" + q(selector=sel, limit=3, after=p1["next"]))
        self.assertEqual(self.ids(p1) + self.ids(p2), ["w1", "w2", "w4", "w5", "w6", "w8"])
        # A deleted document never matches.
        self.assertEqual(self.d.unix("DELETE", V + "/%s/docs/wells/w2" % self.pid).status, 200)
        sel = {"range": {"path": "water.ph", "gt": 6.5}}
        self.assertEqual(self.ids(self.get("/docs/wells" + q(selector=json.dumps(sel),
                                                             include_deleted=1))),
                         ["w3", "w4", "w7", "w9"])
        # Bad selectors name what is wrong.
        for bad, words in (("{", "selector"), ('{"near": {}}', "near"),
                           ('{"range": {"path": "a..b", "gt": 1}}', "empty segment"),
                           ('{"eq": {"path": "a"}}', "value")):
            r = self.d.unix("GET", V + "/%s/docs/wells%s" % (self.pid, q(selector=bad)))
            self.assertEqual(r.status, 400, (bad, r))
            self.assertIn(words, r.json()["message"], bad)

    def test_sort_with_cursor_pagination_across_writes(self):
        self.sites()
        # Ascending: a missing value is null (first), numbers before strings.
        page = self.get("/docs/wells" + q(sort="water.ph"))
        self.assertEqual(self.ids(page), ["w6", "w1", "w8", "w4", "w2", "w3", "w7", "w5"])
        self.assertIsNone(page["next"])
        page = self.get("/docs/wells" + q(sort="-water.ph"))
        self.assertEqual(self.ids(page), ["w5", "w7", "w3", "w2", "w4", "w8", "w1", "w6"])
        # Equal values go by id, and descending reverses that too.
        self.assertEqual(self.ids(self.get("/docs/wells" + q(sort="site.district", limit=3))),
                         ["w7", "w3", "w1"])
        # Pages in order; a write between pages shows up where it sorts.
        p1 = self.get("/docs/wells" + q(sort="water.ph", limit=3))
        self.assertEqual(self.ids(p1), ["w6", "w1", "w8"])
        self.put("wells", "w0", {"water": {"ph": 7.0}})  # sorts after the first page
        self.put("wells", "wa", {"water": {"ph": 1.0}})  # sorts before it: not seen again
        p2 = self.get("/docs/wells" + q(sort="water.ph", limit=3, after=p1["next"]))
        self.assertEqual(self.ids(p2), ["w4", "w0", "w2"])
        p3 = self.get("/docs/wells" + q(sort="water.ph", limit=3, after=p2["next"]))
        self.assertEqual(self.ids(p3), ["w3", "w7", "w5"])
        self.assertIsNone(p3["next"])
        # With a selector: only the matches, in order.
        sel = json.dumps({"eq": {"path": "site.district", "value": 7}})
        self.assertEqual(self.ids(self.get("/docs/wells" + q(selector=sel, sort="-water.ph"))),
                         ["w5", "w2", "w4", "w8", "w1", "w6"])
        # A cursor that is not one, and a bad path.
        r = self.d.unix("GET", V + "/%s/docs/wells%s" % (self.pid, q(sort="water.ph",
                                                                      after="w3")))
        self.assertEqual(r.status, 400, r)
        self.assertIn("cursor", r.json()["message"])
        r = self.d.unix("GET", V + "/%s/docs/wells%s" % (self.pid, q(sort="-")))
        self.assertEqual(r.status, 400, r)
        self.assertIn("sort", r.json()["message"])
        # Sorted conflicts listing takes the same parameters.
        self.get("/conflicts" + q(sort="water.ph"))

    def test_sort_is_bounded_by_max_sort_docs(self):
        d = self.daemon("small", **{"api.max_sort_docs": 5})
        pid = d.create_project("p")
        for i in range(6):
            r = d.unix("PUT", V + "/%s/docs/c/d%d" % (pid, i), {"n": i, "even": i % 2 == 0})
            self.assertIn(r.status, (200, 201), r)
        r = d.unix("GET", V + "/%s/docs/c%s" % (pid, q(sort="n")))
        self.assertEqual(r.status, 400, r)
        self.assertIn("api.max_sort_docs", r.json()["message"])
        # Narrowed, it answers; unsorted, every page answers.
        sel = json.dumps({"eq": {"path": "even", "value": True}})
        r = d.unix("GET", V + "/%s/docs/c%s" % (pid, q(sort="-n", selector=sel)))
        self.assertEqual(r.status, 200, r)
        self.assertEqual([x["id"] for x in r.json()["docs"]], ["d4", "d2", "d0"])
        self.assertEqual(d.unix("GET", V + "/%s/docs/c?limit=2" % pid).status, 200)

    def test_keys_bulk_get(self):
        self.sites()
        self.assertEqual(self.d.unix("DELETE", V + "/%s/docs/wells/w3" % self.pid).status, 200)
        page = self.get("/docs/wells" + q(keys=json.dumps(["w4", "nope", "w1", "w3", "w4"])))
        docs = page["docs"]
        self.assertEqual([x["id"] for x in docs], ["w4", "nope", "w1", "w3", "w4"])
        self.assertEqual(docs[0]["body"]["water"]["ph"], 6.6)
        self.assertEqual(docs[1], {"collection": "wells", "id": "nope", "error": "not_found"})
        self.assertTrue(docs[3]["deleted"])
        self.assertIsNone(page["next"])
        self.assertEqual(self.get("/docs/wells" + q(keys="[]"))["docs"], [])
        for bad, words in (('"w1"', "array"), ("[1]", "keys[0]"), ("[", "keys"),
                           (json.dumps(["x"] * 1001), "api.max_page_size")):
            r = self.d.unix("GET", V + "/%s/docs/wells%s" % (self.pid, q(keys=bad)))
            self.assertEqual(r.status, 400, (bad, r))
            self.assertIn(words, r.json()["message"])
        r = self.d.unix("GET", V + "/%s/docs/wells%s" % (self.pid, q(keys='["w1"]', sort="x")))
        self.assertEqual(r.status, 400, r)

    def test_unknown_parameters_are_refused_with_the_accepted_ones(self):
        for path in ("/docs/wells?limt=5", "/conflicts?keys=%5B%5D", "/changes?include_doc=1"):
            r = self.d.unix("GET", V + "/" + self.pid + path)
            self.assertEqual(r.status, 400, (path, r))
            self.assertIn("unknown query parameter", r.json()["message"], path)
            self.assertIn("accepted:", r.json()["message"], path)

    def test_changes_with_docs_and_collections(self):
        w1 = self.put("wells", "w1", {"ph": 6})
        self.put("notes", "n1", {"text": "hello"})
        self.put("wells", "w2", {"ph": 7})
        self.put("wells", "w1", {"ph": 6.5})  # w1's first change now carries the new body
        r = self.get("/changes" + q(include_docs=1, collection="wells"))
        ch = r["changes"]
        self.assertEqual([c["id"] for c in ch], ["w1", "w2", "w1"])  # a change per version
        # Each carries the document as it is now: w1's first change too.
        self.assertEqual(ch[0]["doc"]["body"], {"ph": 6.5})
        self.assertNotEqual(ch[0]["doc"]["version"], ch[0]["version"])
        self.assertEqual(ch[2]["doc"]["version"], ch[2]["version"])
        self.assertEqual(ch[1]["doc"]["body"], {"ph": 7})
        self.assertEqual(r["last_seq"], self.get("/changes")["last_seq"])
        # Several collections; without include_docs no doc member.
        r = self.get("/changes?collection=wells&collection=notes")
        self.assertEqual(sorted(c["id"] for c in r["changes"]), ["n1", "w1", "w1", "w2"])
        self.assertNotIn("doc", r["changes"][0])
        # Paging with a filter: last_seq moves past what is left out.
        r = self.get("/changes" + q(collection="notes", limit=1, since=w1["local_seq"]))
        self.assertEqual([c["id"] for c in r["changes"]], ["n1"])
        r = self.get("/changes" + q(collection="notes", since=r["last_seq"]))
        self.assertEqual(r["changes"], [])
        self.assertEqual(r["last_seq"], self.get("/changes")["last_seq"])
        # A deleted document comes with its deleted state.
        self.assertEqual(self.d.unix("DELETE", V + "/%s/docs/wells/w2" % self.pid).status, 200)
        last = self.get("/changes" + q(include_docs=1, since="now"))["last_seq"]
        r = self.get("/changes" + q(include_docs=1, since=last - 1))
        self.assertTrue(r["changes"][0]["doc"]["deleted"])
        # Longpoll wakes only for its collection.
        import threading
        out = {}

        def poll():
            out["r"] = self.d.unix("GET", V + "/%s/changes%s" % (
                self.pid, q(feed="longpoll", since=last, collection="notes", include_docs=1,
                            timeout=20000)), timeout=30)
        t = threading.Thread(target=poll)
        t.start()
        self.put("wells", "w3", {"ph": 8})
        self.put("notes", "n2", {"text": "second"})
        t.join(30)
        self.assertFalse(t.is_alive())
        self.assertEqual(out["r"].status, 200, out["r"])
        got = out["r"].json()["changes"]
        self.assertEqual([c["id"] for c in got], ["n2"])
        self.assertEqual(got[0]["doc"]["body"], {"text": "second"})

    def test_sse_with_docs_and_a_collection(self):
        path = V + "/%s/changes%s" % (self.pid, q(feed="sse", since="now", include_docs=1,
                                                   collection="wells"))
        s = SseReader(sock_path=self.d.socket_path, path=path)
        try:
            self.assertEqual(s.status, 200)
            self.put("notes", "n1", {"text": "not this"})
            self.put("wells", "w1", {"ph": 6})
            e = s.next_event()
            self.assertEqual(e["json"]["id"], "w1")
            self.assertEqual(e["json"]["doc"]["body"], {"ph": 6})
        finally:
            s.close()

    def test_changes_with_a_selector(self):
        self.put("wells", "w1", {"water": {"ph": 8.2}})
        self.put("wells", "w2", {"water": {"ph": 6.0}})
        self.put("notes", "n1", {"water": {"ph": 9.0}})
        self.put("wells", "w2", {"water": {"ph": 7.9}})  # w2 matches now: both its changes show
        sel = json.dumps({"range": {"path": "water.ph", "gte": 7.5}})
        r = self.get("/changes" + q(selector=sel, collection="wells"))
        self.assertEqual([c["id"] for c in r["changes"]], ["w1", "w2", "w2"])
        self.assertEqual(r["last_seq"], self.get("/changes")["last_seq"])
        r = self.get("/changes" + q(selector=sel, include_docs=1))
        self.assertEqual([c["id"] for c in r["changes"]], ["w1", "w2", "n1", "w2"])
        self.assertEqual(r["changes"][1]["doc"]["body"], {"water": {"ph": 7.9}})
        # A deleted document no longer matches; a bad selector is a 400 naming it.
        self.assertEqual(self.d.unix("DELETE", V + "/%s/docs/wells/w1" % self.pid).status, 200)
        r = self.get("/changes" + q(selector=sel, collection="wells"))
        self.assertEqual([c["id"] for c in r["changes"]], ["w2", "w2"])
        r = self.d.unix("GET", V + "/%s/changes%s" % (self.pid, q(selector='{"near":1}')))
        self.assertEqual(r.status, 400, r)
        self.assertIn("selector", r.json()["message"])
        # Long-poll and SSE wake only for matching changes.
        last = self.get("/changes" + q(since="now"))["last_seq"]
        path = V + "/%s/changes%s" % (self.pid, q(feed="sse", since=last, selector=sel))
        s = SseReader(sock_path=self.d.socket_path, path=path)
        try:
            self.assertEqual(s.status, 200)
            self.put("wells", "w4", {"water": {"ph": 5.0}})
            self.put("wells", "w5", {"water": {"ph": 8.8}})
            e = s.next_event()
            self.assertEqual(e["json"]["id"], "w5")
        finally:
            s.close()
        r = self.d.unix("GET", V + "/%s/changes%s" % (self.pid, q(
            feed="longpoll", since=last, selector=sel, timeout=20000)), timeout=30)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([c["id"] for c in r.json()["changes"]], ["w5"])

    def test_queries_see_what_sync_brings_and_conflicts(self):
        beta = self.daemon("beta")
        pid = share(self.d, beta)
        for i, ph in enumerate([7.5, 6.0, 8.5]):
            r = beta.unix("PUT", V + "/%s/docs/wells/b%d" % (pid, i), {"water": {"ph": ph}})
            self.assertIn(r.status, (200, 201), r)
        r = self.d.unix("PUT", V + "/%s/docs/wells/a0" % pid, {"water": {"ph": 7.0}})
        self.assertIn(r.status, (200, 201), r)
        # Both write c0 before they meet: a conflict, whose winner is the same on both.
        for d, ph in ((self.d, 1.0), (beta, 9.0)):
            r = d.unix("PUT", V + "/%s/docs/wells/c0" % pid, {"water": {"ph": ph}})
            self.assertIn(r.status, (200, 201), r)
        add_peer(self.d, beta)

        def sorted_ids(d):
            r = d.unix("GET", V + "/%s/docs/wells%s" % (pid, q(sort="water.ph")))
            self.assertEqual(r.status, 200, r)
            return [x["id"] for x in r.json()["docs"]]

        def in_conflict(d):
            r = d.unix("GET", V + "/%s/docs/wells/c0" % pid)
            return r.status == 200 and len(r.json()["heads"]) == 2
        wait_until(lambda: in_conflict(self.d) and in_conflict(beta) and
                   len(sorted_ids(self.d)) == 5 and sorted_ids(self.d) == sorted_ids(beta), 30,
                   what="both devices to hold and sort the same documents")
        winner_ph = self.d.unix("GET", V + "/%s/docs/wells/c0" % pid).json()["body"]["water"]["ph"]
        self.assertIn(winner_ph, (1.0, 9.0))
        want = ["c0", "b1", "a0", "b0", "b2"] if winner_ph == 1.0 else ["b1", "a0", "b0", "b2", "c0"]
        self.assertEqual(sorted_ids(self.d), want)
        # The selector judges the winner's body, on both devices alike.
        sel = json.dumps({"range": {"path": "water.ph", "gte": 7}})
        for d in (self.d, beta):
            got = [x["id"] for x in d.unix(
                "GET", V + "/%s/docs/wells%s" % (pid, q(selector=sel))).json()["docs"]]
            self.assertEqual(got, ["a0", "b0", "b2"] + (["c0"] if winner_ph == 9.0 else []))
        # The sorted conflicts listing finds it too.
        r = self.d.unix("GET", V + "/%s/conflicts%s" % (pid, q(sort="-water.ph")))
        self.assertEqual([x["id"] for x in r.json()["docs"]], ["c0"])


class Indexes(QueryCase):
    """The queries above through declared indexes: the same answers, read from the index."""

    def declare(self, name, coll, fields, d=None, pid=None):
        d, pid = d or self.d, pid or self.pid
        r = d.unix("PUT", V + "/%s/indexes/%s" % (pid, name),
                   {"collection": coll, "fields": fields})
        self.assertEqual(r.status, 200, r)
        wait_until(lambda: all(i["ready"] for i in d.unix(
            "GET", V + "/%s/indexes" % pid).json()["indexes"]), 30, what="indexes ready")

    def test_indexed_queries_answer_as_scans(self):
        self.sites()
        self.declare("by_ph", "wells", ["water.ph"])
        self.declare("by_district_ph", "wells", ["site.district", "water.ph"])
        listed = self.get("/indexes")["indexes"]
        self.assertEqual([(i["name"], i["entries"]) for i in listed],
                         [("by_district_ph", 8), ("by_ph", 8)])
        sel = json.dumps({"range": {"path": "water.ph", "gt": 6.5}})
        page = self.get("/docs/wells" + q(selector=sel))
        self.assertEqual(self.ids(page), ["w2", "w3", "w4", "w7"])
        self.assertEqual(page["plan"], {"index": "by_ph", "examined": 4})
        sel = json.dumps({"all": [{"range": {"path": "water.ph", "gte": 6.5, "lt": 8}},
                                  {"eq": {"path": "site.district", "value": 7}}]})
        page = self.get("/docs/wells" + q(selector=sel))
        self.assertEqual(self.ids(page), ["w2", "w4", "w8"])
        self.assertEqual(page["plan"]["index"], "by_district_ph")
        # Sorted pages straight from the index, across writes.
        page = self.get("/docs/wells" + q(sort="water.ph"))
        self.assertEqual(self.ids(page), ["w6", "w1", "w8", "w4", "w2", "w3", "w7", "w5"])
        self.assertEqual(page["plan"]["index"], "by_ph")
        page = self.get("/docs/wells" + q(sort="-water.ph"))
        self.assertEqual(self.ids(page), ["w5", "w7", "w3", "w2", "w4", "w8", "w1", "w6"])
        p1 = self.get("/docs/wells" + q(sort="water.ph", limit=3))
        self.assertEqual(self.ids(p1), ["w6", "w1", "w8"])
        self.put("wells", "w0", {"water": {"ph": 7.0}})
        self.put("wells", "wa", {"water": {"ph": 1.0}})
        p2 = self.get("/docs/wells" + q(sort="water.ph", limit=3, after=p1["next"]))
        self.assertEqual(self.ids(p2), ["w4", "w0", "w2"])
        p3 = self.get("/docs/wells" + q(sort="water.ph", limit=3, after=p2["next"]))
        self.assertEqual(self.ids(p3), ["w3", "w7", "w5"])
        self.assertIsNone(p3["next"])
        sel = json.dumps({"eq": {"path": "site.district", "value": 7}})
        page = self.get("/docs/wells" + q(selector=sel, sort="-water.ph"))
        self.assertEqual(self.ids(page), ["w5", "w2", "w4", "w8", "w1", "w6"])
        self.assertEqual(page["plan"], {"index": "by_district_ph", "examined": 6})
        # An update moves a document, a delete takes it out.
        self.put("wells", "w7", {"water": {"ph": 0.5}, "site": {"district": 2}})
        self.assertEqual(self.d.unix("DELETE", V + "/%s/docs/wells/w3" % self.pid).status, 200)
        page = self.get("/docs/wells" + q(sort="water.ph", limit=3))
        self.assertEqual(self.ids(page), ["w6", "w7", "wa"])
        sel = json.dumps({"range": {"path": "water.ph", "gte": 8}})
        self.assertEqual(self.ids(self.get("/docs/wells" + q(selector=sel))), [])
        # Dropped: the same query reads the collection again.
        r = self.d.unix("DELETE", V + "/%s/indexes/by_ph" % self.pid)
        self.assertEqual(r.status, 200, r)
        page = self.get("/docs/wells" + q(sort="water.ph", limit=3))
        self.assertEqual(self.ids(page), ["w6", "w7", "wa"])
        self.assertIsNone(page["plan"]["index"])

    def test_an_index_lifts_the_sort_bound_and_follows_sync(self):
        d = self.daemon("small", **{"api.max_sort_docs": 5})
        beta = self.daemon("beta2")
        pid = share(d, beta)
        self.declare("by_n", "c", ["n"], d=d, pid=pid)
        for i in range(6):
            r = beta.unix("PUT", V + "/%s/docs/c/d%d" % (pid, i), {"n": i})
            self.assertIn(r.status, (200, 201), r)
        add_peer(d, beta)

        def sorted_page():
            r = d.unix("GET", V + "/%s/docs/c%s" % (pid, q(sort="-n", limit=4)))
            self.assertEqual(r.status, 200, r)
            return r.json()
        wait_until(lambda: len(d.unix("GET", V + "/%s/docs/c" % pid).json()["docs"]) == 6, 30,
                   what="the synced documents")
        page = sorted_page()
        self.assertEqual([x["id"] for x in page["docs"]], ["d5", "d4", "d3", "d2"])
        self.assertEqual(page["plan"]["index"], "by_n")
        r = d.unix("GET", V + "/%s/docs/c%s" % (pid, q(sort="-n", after=page["next"])))
        self.assertEqual([x["id"] for x in r.json()["docs"]], ["d1", "d0"])

    def test_index_declarations_are_checked(self):
        path = V + "/%s/indexes/" % self.pid
        for body, words in (({"collection": "wells"}, "fields"),
                            ({"collection": "wells", "fields": []}, "fields"),
                            ({"collection": "_members", "fields": ["a"]}, "app collection"),
                            ({"collection": "wells", "fields": ["a", "a"]}, "twice"),
                            ({"collection": "wells", "fields": ["a"], "x": 1}, "x"),
                            ({"collection": "wells", "fields": ["a..b"]}, "segment")):
            r = self.d.unix("PUT", path + "i", body)
            self.assertEqual(r.status, 400, (body, r))
            self.assertIn(words, r.json()["message"], body)
        r = self.d.unix("PUT", path + "bad%20name", {"collection": "wells", "fields": ["a"]})
        self.assertEqual(r.status, 400, r)
        self.declare("i", "wells", ["a"])
        r = self.d.unix("PUT", path + "i", {"collection": "wells", "fields": ["a"]})
        self.assertEqual(r.status, 200, r)
        r = self.d.unix("PUT", path + "i", {"collection": "wells", "fields": ["b"]})
        self.assertEqual(r.status, 409, r)
        self.assertEqual(self.d.unix("DELETE", path + "nope").status, 404)
        r = self.d.unix("GET", V + "/%s/indexes?x=1" % self.pid)
        self.assertEqual(r.status, 400, r)
        self.assertIn("unknown query parameter", r.json()["message"])


if __name__ == "__main__":
    unittest.main()
