"""The Python client (fieldsync_client.py) against real fieldsyncd processes, started by
tests/integration/fieldsync_harness.py on temporary data directories."""
import hashlib
import io
import os
import queue
import subprocess
import sys
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "tests", "integration"))

from fieldsync_client import (Client, FieldSyncError, PreconditionFailed,  # noqa: E402
                              default_socket_path)
from fieldsync_harness import Daemon, FAST, add_peer, read_line, share, wait_until  # noqa: E402

SURVEY = os.path.join(HERE, "..", "examples", "survey.py")


def in_thread(gen, count):
    """Reads `count` items of a generator on a thread; returns a queue of them (or the error)."""
    box = queue.Queue()

    def run():
        try:
            for _ in range(count):
                box.put(next(gen))
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box.put(e)
    threading.Thread(target=run, daemon=True).start()
    return box


def take(box, what):
    try:
        item = box.get(timeout=15)
    except queue.Empty:
        raise AssertionError("timed out waiting for " + what) from None
    if isinstance(item, BaseException):
        raise item
    return item


class ClientTestCase(unittest.TestCase):
    def assertFails(self, status, code, fn, *args, cls=FieldSyncError, **kwargs):
        with self.assertRaises(cls) as cm:
            fn(*args, **kwargs)
        self.assertEqual((cm.exception.status, cm.exception.code), (status, code),
                         str(cm.exception))
        return cm.exception


class OneDaemon(ClientTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(name="py", settings=dict(FAST, **{"blob.max_blob_bytes": 1 << 20,
                                                          "storage.max_indexes": 3})).start()
        cls.unix = Client(socket_path=cls.d.socket_path, timeout=10)
        cls.http = Client(url="http://127.0.0.1:%d" % cls.d.port, data_dir=cls.d.data_dir,
                          timeout=10)
        cls.p = cls.http.project(cls.http.create_project("survey", {"unit": "m"})["id"])

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def test_connect_over_socket_http_and_data_dir(self):
        self.assertEqual(self.unix.status()["device_id"], self.d.device_id)
        self.assertEqual(self.http.status()["device_id"], self.d.device_id)
        self.assertEqual(self.http.token, self.d.token)  # read from <data_dir>/api.token
        self.assertEqual(Client.over_http(self.d.data_dir).health()["status"], "ok")
        self.assertEqual(Client(data_dir=self.d.data_dir).socket_path,
                         default_socket_path(self.d.data_dir))
        bad = Client(url="http://127.0.0.1:%d" % self.d.port, token="0" * 64)
        self.assertFails(401, "unauthenticated", bad.status)
        gone = Client(socket_path=self.d.socket_path + ".none")
        self.assertFails(0, "unavailable", gone.status)

    def test_projects(self):
        self.unix.create_project("second")
        names = sorted(p["name"] for p in self.http.projects())
        self.assertIn("second", names)
        self.assertEqual(self.p.info()["settings"], {"unit": "m"})
        self.assertFails(404, "not_found", self.http.project("0" * 32).info)

    def test_documents_and_conditional_writes(self):
        p = self.p
        doc_id = "site:7@north~a+b.c"
        w = p.create("obs", {"species": "heron", "n": 1}, id=doc_id)
        self.assertEqual(w["id"], doc_id)
        self.assertFails(409, "already_exists", p.create, "obs", {}, id=doc_id)
        got = p.get("obs", doc_id)
        self.assertEqual((got["version"], got["body"]), (w["version"], {"species": "heron", "n": 1}))
        w2 = p.put("obs", doc_id, {"species": "heron", "n": 2}, if_match=w["version"])
        e = self.assertFails(412, "aborted", p.put, "obs", doc_id, {"n": 3},
                             if_match=w["version"], cls=PreconditionFailed)
        self.assertIn("is at version", e.message)
        self.assertEqual(p.get("obs", doc_id)["body"], {"species": "heron", "n": 2})
        self.assertFails(412, "aborted", p.put, "obs", doc_id, {}, create_only=True,
                         cls=PreconditionFailed)
        p.put("obs", "fresh", {"n": 0}, create_only=True)
        self.assertFails(412, "aborted", p.put, "obs", "never", {}, if_match="*",
                         cls=PreconditionFailed)
        self.assertFails(412, "aborted", p.delete, "obs", doc_id, if_match=w["version"],
                         cls=PreconditionFailed)
        d = p.delete("obs", doc_id, if_match=w2["version"])
        self.assertTrue(p.get("obs", doc_id)["deleted"])
        self.assertEqual([v["version"] for v in p.history("obs", doc_id)],
                         [d["version"], w2["version"], w["version"]])
        self.assertFails(404, "not_found", p.get, "obs", "no-such-doc")
        self.assertFails(400, "invalid_argument", p.create, "obs", {}, id="bad/id")

    def test_list_where_and_pages(self):
        p = self.p
        for i in range(7):
            p.create("birds", {"kind": "owl" if i % 2 else "heron", "i": i}, id="b%d" % i)
        owls = p.list("birds", where={"kind": "owl"})
        self.assertEqual([x["body"]["i"] for x in owls["docs"]], [1, 3, 5])
        self.assertIsNone(owls["next"])
        one = p.list("birds", where={"kind": "heron", "i": 4})
        self.assertEqual([x["id"] for x in one["docs"]], ["b4"])
        page = p.list("birds", limit=3)
        self.assertEqual(len(page["docs"]), 3)
        self.assertTrue(page["next"])
        self.assertEqual([x["id"] for x in p.iter("birds", limit=2)],
                         ["b%d" % i for i in range(7)])
        self.assertIn("birds", p.collections())

    def test_batch(self):
        p = self.p
        a, b = p.batch([{"collection": "plots", "id": "p1", "body": {"area": 10}},
                        {"collection": "plots", "body": {"area": 20}}])
        self.assertEqual(a["id"], "p1")
        self.assertRegex(b["id"], "^[0-9a-f]{32}$")
        self.assertFails(412, "aborted", p.batch, [
            {"collection": "plots", "id": "p2", "body": {"area": 30}},
            {"collection": "plots", "id": "p1", "body": {}, "if_match": "f" * 64}],
            cls=PreconditionFailed)
        self.assertFails(404, "not_found", p.get, "plots", "p2")
        p.batch([{"collection": "plots", "id": "p1", "body": {"area": 12},
                  "if_match": a["version"]}])
        self.assertEqual(p.get("plots", "p1")["body"], {"area": 12})

    def test_conflicts_and_resolve(self):
        p = self.p
        w = p.create("wells", {"depth": 5, "note": ""}, id="w1")
        p.put("wells", "w1", {"depth": 6, "note": ""}, base=w["version"])
        c = p.put("wells", "w1", {"depth": 5, "note": "dry"}, base=w["version"])
        self.assertTrue(c["conflict"])
        self.assertEqual([x["id"] for x in p.conflicts()["docs"]], ["w1"])
        self.assertTrue(p.get("wells", "w1")["merge"]["clean"])
        merged = p.resolve("wells", "w1", strategy="merge")
        self.assertEqual(merged["heads"], [merged["version"]])
        self.assertEqual(p.get("wells", "w1")["body"], {"depth": 6, "note": "dry"})

        v = p.create("wells", {"depth": 1}, id="w2")
        p.put("wells", "w2", {"depth": 2}, base=v["version"])
        p.put("wells", "w2", {"depth": 3}, base=v["version"])
        e = self.assertFails(409, "failed_precondition", p.resolve, "wells", "w2",
                             strategy="merge")
        self.assertEqual(e.body["conflicting_fields"], ["depth"])
        p.resolve("wells", "w2", body={"depth": 4})
        self.assertEqual(len(p.get("wells", "w2")["heads"]), 1)
        self.assertEqual(p.conflicts()["docs"], [])

    def test_changes_poll_longpoll_and_stream(self):
        p = self.p
        start = p.changes(since="now")["last_seq"]
        self.assertEqual(p.wait_for_changes(since=start, timeout_ms=50),
                         {"changes": [], "last_seq": start})
        box = queue.Queue()
        threading.Thread(target=lambda: box.put(
            p.wait_for_changes(since=start, timeout_ms=20000)), daemon=True).start()
        p.create("feed", {"n": 1}, id="f1")
        woke = take(box, "the long-poll to answer")
        self.assertEqual([(c["collection"], c["id"], c["local"]) for c in woke["changes"]],
                         [("feed", "f1", True)])
        page = p.changes(since=0, limit=2)
        self.assertEqual(page["last_seq"], page["changes"][1]["seq"])

        for client in (self.unix, self.http):
            before = p.changes(since="now")["last_seq"]
            stream = client.project(p.id).follow(since=before - 1)
            items = in_thread(stream, 2)
            first = take(items, "the change already written")
            self.assertEqual((first["seq"], first["id"]), (before, "f1"))
            w = p.put("feed", "f1", {"n": 2})
            self.assertEqual(take(items, "the change written while streaming")["version"],
                             w["version"])
            stream.close()
        self.assertFails(400, "invalid_argument", p.changes, since=10 ** 9)

        # Leaving a project ends its stream with event: error (not_found).
        gone = self.unix.project(self.unix.create_project("short-lived")["id"])
        gone.create("obs", {}, id="x")
        items = in_thread(gone.follow(since=0), 2)
        self.assertEqual(take(items, "the short-lived project's change")["id"], "x")
        self.unix.call("POST", gone.base + "/leave")
        with self.assertRaises(FieldSyncError) as cm:
            take(items, "the stream's end")
        self.assertEqual((cm.exception.status, cm.exception.code), (404, "not_found"))

    def test_queries_selector_sort_and_get_many(self):
        p = self.p
        wells = {
            "q1": {"water": {"ph": 6.1}, "site": {"district": 7}, "visited_at": "2026-03-02"},
            "q2": {"water": {"ph": 7.4}, "site": {"district": 7}, "visited_at": "2026-01-15"},
            "q3": {"water": {"ph": 8.0}, "site": {"district": 3}, "visited_at": "2026-02-20"},
            "q4": {"water": {"ph": 6.6}, "site": {"district": 7}, "visited_at": "2026-04-01"},
            "q5": {"site": {"district": 7}, "visited_at": "2026-01-01"},
        }
        written = p.batch([{"collection": "qwells", "id": k, "body": v} for k, v in wells.items()])

        def ids(page):
            return [x["id"] for x in page["docs"]]
        self.assertEqual(ids(p.list("qwells", selector={"range": {"path": "water.ph", "gt": 6.5}})),
                         ["q2", "q3", "q4"])
        district7 = {"eq": {"path": "site.district", "value": 7}}
        both = {"all": [{"range": {"path": "water.ph", "gte": 6.1, "lt": 8}}, district7]}
        self.assertEqual(ids(p.list("qwells", selector=both)), ["q1", "q2", "q4"])
        self.assertEqual(ids(p.list("qwells", where={"visited_at": "2026-04-01"}, selector=both)),
                         ["q4"])
        self.assertFails(400, "invalid_argument", p.list, "qwells", selector={"near": {}})
        self.assertRaises(ValueError, p.list, "qwells", sort="-")

        # Sorted by a path, descending, two a page: the cursor keeps its place across a write.
        first = p.list("qwells", sort="-visited_at", limit=2)
        self.assertEqual(ids(first), ["q4", "q1"])
        p.create("qwells", {"water": {"ph": 7}, "site": {"district": 7},
                            "visited_at": "2026-02-01"}, id="q6")
        rest, after = [], first["next"]
        while after:
            page = p.list("qwells", sort="-visited_at", limit=2, after=after)
            rest += ids(page)
            after = page["next"]
        self.assertEqual(rest, ["q3", "q6", "q2", "q5"])
        # iter() follows the cursors of a sorted, filtered query (a missing value sorts first).
        self.assertEqual([d["id"] for d in p.iter("qwells", selector=district7, sort="water.ph",
                                                  limit=2)],
                         ["q5", "q1", "q4", "q6", "q2"])

        many = p.get_many("qwells", ["q4", "nope", "q1"])
        self.assertEqual([x["id"] for x in many], ["q4", "nope", "q1"])
        self.assertEqual((many[0]["body"]["water"]["ph"], many[0]["version"]),
                         (6.6, written[3]["version"]))
        self.assertEqual(many[1], {"collection": "qwells", "id": "nope", "error": "not_found"})
        self.assertEqual(p.get_many("qwells", []), [])
        self.assertRaises(TypeError, p.get_many, "qwells", "q1")

        # conflicts() takes a selector and a sort as well.
        for i in (2, 3):
            doc_id, version = written[i]["id"], written[i]["version"]
            for note in ("a", "b"):
                p.put("qwells", doc_id, dict(wells[doc_id], note=note), base=version)
        self.assertEqual(ids(p.conflicts(selector={"eq": {"path": "site.district", "value": 3}})),
                         ["q3"])
        self.assertEqual(ids(p.conflicts(selector={"range": {"path": "water.ph", "gt": 6}},
                                         sort="water.ph")), ["q4", "q3"])
        for doc_id in ("q3", "q4"):
            p.resolve("qwells", doc_id, body=wells[doc_id])
        self.assertEqual(p.conflicts()["docs"], [])

    def test_indexes_declared_waited_for_queried_and_dropped(self):
        p = self.p
        # Written before the index is declared: they are indexed in the background.
        regions = ["north", "south", "east"]
        writes = [{"collection": "samples", "id": "s%02d" % i,
                   "body": {"site": {"region": regions[i % 3]},
                            "water": {"ph": 5 + (i * 37) % 41 / 10}}}
                  for i in range(60)]
        p.batch(writes)
        fields = ["site.region", "water.ph"]
        declared = p.create_index("by_region_ph", "samples", fields)
        self.assertEqual((declared["name"], declared["collection"], declared["fields"]),
                         ("by_region_ph", "samples", fields))
        self.assertIsInstance(declared["ready"], bool)
        self.assertEqual(p.create_index("by_region_ph", "samples", fields)["fields"], fields)
        self.assertFails(409, "already_exists", p.create_index, "by_region_ph", "samples",
                         ["water.ph"])
        self.assertFails(400, "invalid_argument", p.create_index, "no_fields", "samples", [])
        self.assertFails(400, "invalid_argument", p.create_index, "bad name!", "samples", ["x"])
        self.assertRaises(TypeError, p.create_index, "one", "samples", "water.ph")

        ready = p.wait_for_index("by_region_ph", timeout=30)
        self.assertEqual((ready["ready"], ready["entries"]), (True, 60))
        self.assertEqual([(i["name"], i["collection"], i["fields"], i["ready"])
                          for i in p.list_indexes()],
                         [("by_region_ph", "samples", fields, True)])
        self.assertFails(404, "not_found", p.wait_for_index, "no_such_index")

        # North's samples by pH, 4 a page, straight from the index; the same as sorting here.
        north = {"eq": {"path": "site.region", "value": "north"}}
        ph = {w["id"]: w["body"]["water"]["ph"] for w in writes}
        expected = sorted((w["id"] for w in writes if w["body"]["site"]["region"] == "north"),
                          key=lambda i: (ph[i], i))
        query = dict(selector=north, sort="water.ph", limit=4)
        pages = list(p.pages("samples", **query))
        self.assertEqual([x["id"] for page in pages for x in page["docs"]], expected)
        self.assertEqual(len(pages), -(-len(expected) // 4))
        for page in pages:
            self.assertEqual(page["plan"]["index"], "by_region_ph")
            self.assertLessEqual(page["plan"]["examined"], 5)
        # A range on the second field, descending, through list() and its cursor.
        acid = {"all": [north, {"range": {"path": "water.ph", "lt": 6.5}}]}
        first = p.list("samples", selector=acid, sort="-water.ph", limit=2)
        self.assertEqual(first["plan"]["index"], "by_region_ph")
        rest = p.list("samples", selector=acid, sort="-water.ph", limit=100, after=first["next"])
        self.assertEqual([x["id"] for x in first["docs"] + rest["docs"]],
                         [i for i in reversed(expected) if ph[i] < 6.5])
        # A write is in the index at once: the next query sees it.
        p.create("samples", {"site": {"region": "north"}, "water": {"ph": 0.5}}, id="s-first")
        self.assertEqual(p.list("samples", **query)["docs"][0]["id"], "s-first")

        # The limit of storage.max_indexes (3 here).
        p.create_index("by_ph", "samples", ["water.ph"])
        p.create_index("by_region", "samples", ["site.region"])
        self.assertFails(409, "failed_precondition", p.create_index, "one_too_many", "samples",
                         ["n"])
        for name in ("by_ph", "by_region"):
            self.assertEqual(p.drop_index(name), {"name": name, "dropped": True})

        self.assertEqual(p.drop_index("by_region_ph"), {"name": "by_region_ph", "dropped": True})
        self.assertFails(404, "not_found", p.drop_index, "by_region_ph")
        self.assertEqual(p.list_indexes(), [])
        # Without the index the same query reads the collection and answers the same.
        pages = list(p.pages("samples", **query))
        self.assertEqual([page["plan"]["index"] for page in pages], [None] * len(pages))
        self.assertEqual([x["id"] for page in pages for x in page["docs"]],
                         ["s-first"] + expected)

    def test_changes_with_docs_and_collections(self):
        p = self.p
        since = p.changes(since="now")["last_seq"]
        p.create("tally", {"n": 1}, id="t1")
        p.create("noise", {"n": 0}, id="x1")
        p.put("tally", "t1", {"n": 2})
        page = p.changes(since=since, include_docs=True, collections=["tally"])
        self.assertEqual([c["id"] for c in page["changes"]], ["t1", "t1"])
        # Each change carries the document as it is now.
        self.assertEqual([c["doc"]["body"] for c in page["changes"]], [{"n": 2}, {"n": 2}])
        self.assertEqual(page["changes"][1]["doc"]["version"], page["changes"][1]["version"])
        self.assertEqual(page["last_seq"], p.changes(since="now")["last_seq"])
        plain = p.changes(since=since, collections=("tally", "noise"))
        self.assertEqual([c["id"] for c in plain["changes"]], ["t1", "x1", "t1"])
        self.assertNotIn("doc", plain["changes"][0])
        self.assertEqual([c["id"] for c in p.changes(since=since, collections="noise")["changes"]],
                         ["x1"])
        self.assertRaises(ValueError, p.changes, collections=[])

        # A filtered long-poll waits past another collection's change.
        box = queue.Queue()
        threading.Thread(target=lambda: box.put(p.wait_for_changes(
            since=page["last_seq"], timeout_ms=20000, include_docs=True,
            collections=["tally"])), daemon=True).start()
        p.create("noise", {"n": 1}, id="x2")
        p.delete("tally", "t1")
        woke = take(box, "the filtered long-poll to answer")
        self.assertEqual([(c["id"], c["deleted"], c["doc"]["deleted"]) for c in woke["changes"]],
                         [("t1", True, True)])

        expected = [("t1", False, True), ("t1", False, True), ("t1", True, True),
                    ("t2-0", False, False)]
        for i, client in enumerate((self.unix, self.http)):
            stream = client.project(p.id).follow(since=since, include_docs=True,
                                                 collections=["tally"])
            items = in_thread(stream, 4 + i)
            backlog = [take(items, "the tally changes already written") for _ in range(3 + i)]
            self.assertEqual([(c["id"], c["deleted"], c["doc"]["deleted"]) for c in backlog],
                             expected[:3 + i])
            p.create("noise", {"n": 2}, id="x-%d" % i)
            w = p.put("tally", "t2-%d" % i, {"n": i})
            live = take(items, "the tally change written while streaming")
            self.assertEqual((live["id"], live["version"], live["doc"]["body"]),
                             ("t2-%d" % i, w["version"], {"n": i}))
            stream.close()

    def test_stream_ticket(self):
        t = self.http.ticket()
        self.assertRegex(t["ticket"], "^[0-9a-f]{64}$")
        since = self.p.changes(since="now")["last_seq"]
        self.p.create("feed", {}, id="ticketed")
        path = "%s/changes?feed=sse&since=%d&ticket=%s" % (self.p.base, since, t["ticket"])
        anonymous = Client(url="http://127.0.0.1:%d" % self.d.port, token="")
        resp = anonymous.open("GET", path)
        try:
            self.assertEqual(resp.getheader("Content-Type").split(";")[0], "text/event-stream")
            text = b""
            while b"event: change" not in text:
                text += resp.readline()
            self.assertIn(b'"id":"ticketed"', resp.readline())
        finally:
            resp.connection.close()
        self.assertFails(401, "unauthenticated", anonymous.open, "GET", path)

    def test_blobs(self):
        p = self.p
        data = bytes((i * 7) % 251 for i in range(300 * 1024))
        up = p.put_blob(data, content_type="application/x-test")
        self.assertEqual(up["id"], hashlib.sha256(data).hexdigest())
        self.assertEqual(up["ref"]["$blob"], up["id"])
        p.create("photos", {"photo": up["ref"]}, id="ph1")
        with self.unix.project(p.id).get_blob(up["id"]) as down:
            self.assertEqual((down.status, down.size, down.type),
                             (200, len(data), "application/x-test"))
            self.assertEqual(down.read(), data)
        with p.get_blob(up["id"], range=(10, 19)) as part:
            self.assertEqual((part.status, part.content_range),
                             (206, "bytes 10-19/%d" % len(data)))
            self.assertEqual(part.read(), data[10:20])
        for client in (self.http, self.unix):
            f = io.BytesIO(b"skip" + b"streamed from a file " * 1000)
            f.seek(4)
            up2 = client.project(p.id).put_blob(f, content_type="text/plain")
            self.assertEqual(up2["size"], 21 * 1000)
            target = os.path.join(self.d.workdir, "out.txt")
            p.get_blob(up2["id"]).save(target)
            with open(target, "rb") as out:
                self.assertEqual(out.read(), b"streamed from a file " * 1000)
            chunks = list(p.get_blob(up2["id"]).chunks(size=4096))
            self.assertEqual([len(c) for c in chunks[:-1]], [4096] * (len(chunks) - 1))
        pieces = (b"piece %d;" % i for i in range(4))
        up3 = self.unix.project(p.id).put_blob(pieces, content_type="text/plain")
        self.assertEqual(p.get_blob(up3["id"]).read(), b"piece 0;piece 1;piece 2;piece 3;")
        self.assertTrue(any(b["id"] == up["id"] and b["held"] for b in p.blobs()["blobs"]))
        self.assertFails(404, "not_found", p.get_blob, "0" * 64)
        # A refusal the daemon answers before the body is sent whole is the error raised.
        big = os.path.join(self.d.workdir, "big.bin")
        with open(big, "wb") as f:
            f.truncate(4 << 20)
        for client in (self.http, self.unix):
            with open(big, "rb") as f:
                self.assertFails(413, "too_large", client.project(p.id).put_blob, f)
            self.assertFails(413, "too_large", client.project(p.id).put_blob, bytes(4 << 20))

    def test_timeout(self):
        impatient = Client(socket_path=self.d.socket_path, timeout=0.2)
        since = self.p.changes(since="now")["last_seq"]
        self.assertFails(0, "timeout", impatient.call, "GET", self.p.base + "/changes",
                         {"since": since, "feed": "longpoll", "timeout": 5000})
        # Nothing is written meanwhile and the heartbeat comes every 15 s.
        self.assertFails(0, "timeout", next, self.p.follow(since=since, idle_timeout=0.2))

    def test_survey_example(self):
        def survey(*args):
            r = subprocess.run([sys.executable, SURVEY, "--socket", self.d.socket_path] +
                               list(args), capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            return r.stdout
        pid = survey("new", "wetlands").strip()
        follower = subprocess.Popen([sys.executable, SURVEY, "--http", self.d.data_dir, "follow",
                                     pid, "0"], stdout=subprocess.PIPE, text=True)
        self.addCleanup(follower.stdout.close)
        self.addCleanup(follower.wait)
        self.addCleanup(follower.kill)
        heron = survey("add", pid, "heron", "3", "by the reeds").strip()
        survey("add", pid, "kite", "1")
        survey("count", pid, heron, "4")
        self.assertEqual(survey("list", pid, "heron"), "%s  heron  4  by the reeds\n" % heron)
        for sort, order in (("-count", ["heron", "kite"]), ("count", ["kite", "heron"])):
            listed = survey("list", pid, "--sort=" + sort).splitlines()
            self.assertEqual([line.split()[1] for line in listed], order)
        lines = [read_line(follower.stdout, what="survey.py follow").split() for _ in range(3)]
        self.assertEqual([(x[1], x[2], x[-1]) for x in lines],
                         [(heron, "heron", "(here)"), (lines[1][1], "kite", "(here)"),
                          (heron, "heron", "(here)")])
        self.assertEqual(lines[2][3], "4")
        photo = os.path.join(self.d.workdir, "photo.jpg")
        with open(photo, "wb") as f:
            f.write(b"not really a JPEG " * 5000)
        blob_id = survey("photo", pid, heron, photo).split()[0]
        p = self.http.project(pid)
        self.assertEqual(p.get("observations", heron)["body"]["photo"]["$blob"], blob_id)
        self.assertEqual(len(p.get_blob(blob_id).read()), 90000)


class TwoDaemons(ClientTestCase):
    def setUp(self):
        self.a = Daemon(name="alpha", settings=dict(FAST, **{"daemon.device_name": "alpha"}))
        self.b = Daemon(name="bravo", settings=dict(FAST, **{"daemon.device_name": "bravo"}))
        self.addCleanup(self.a.close)
        self.addCleanup(self.b.close)
        self.a.start()
        self.b.start()

    def test_a_write_on_one_daemon_arrives_in_the_others_stream(self):
        pid = share(self.a, self.b)
        ca = Client(url="http://127.0.0.1:%d" % self.a.port, token=self.a.token)
        cb = Client(socket_path=self.b.socket_path)
        pb = cb.project(pid)
        stream = pb.follow(since=pb.changes(since="now")["last_seq"])
        items = in_thread((c for c in stream if c["collection"] == "obs"), 1)
        add_peer(self.a, self.b)
        self.assertFails(409, "already_exists", ca.add_peer, self.b.device_id,
                         address="127.0.0.1:1")
        w = ca.project(pid).create("obs", {"species": "kite"}, id="from-a")
        change = take(items, "alpha's write on bravo's stream")
        self.assertEqual((change["id"], change["version"], change["author"], change["local"]),
                         ("from-a", w["version"], self.a.device_id, False))
        stream.close()
        self.assertEqual(pb.get("obs", "from-a")["body"], {"species": "kite"})
        state = wait_until(lambda: (lambda s: s if s["in_sync"] and s["peers"] else None)(
            ca.project(pid).sync_status()), what="alpha in sync with bravo")
        self.assertEqual(state["peers"][0]["device_id"], self.b.device_id)
        self.assertTrue(any(x["device_id"] == self.b.device_id for x in ca.peers()))
        self.assertEqual(ca.peer(self.b.device_id)["name"], "bravo")
        self.assertEqual(ca.remove_peer(self.b.device_id)["removed"], self.b.device_id)


if __name__ == "__main__":
    unittest.main()
