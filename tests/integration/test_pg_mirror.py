"""The PostgreSQL mirror against a real PostgreSQL server started by the test (pg_server.py):
rows match the daemon's documents (bodies, deleted and conflict flags, heads); PostgreSQL
stopped mid-stream and restarted; the daemon killed (-9) mid-stream; documents from another
device through sync; a body PostgreSQL refuses; one device per project and database; the
password never logged or shown.
"""

import json
import os
import stat
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fieldsync_harness as h  # noqa: E402
from fieldsync_harness import V, wait_until  # noqa: E402
from pg_server import PostgresServer  # noqa: E402

ROWS = "SELECT count(*) FROM fieldsync.documents WHERE project = '%s'"


def row_count(pg, pid, dbname="postgres"):
    """Rows of the project in PostgreSQL; 0 before the mirror created its tables."""
    try:
        return int(pg.value(ROWS % pid, dbname=dbname) or 0)
    except subprocess.CalledProcessError:
        return 0


def mirror_status(d):
    return h.status(d)["mirror"]


def wait_mirrored(d, pid, deadline_s=60):
    """Until the daemon says project pid is in PostgreSQL up to its last change."""
    def done():
        m = mirror_status(d)
        for p in m.get("projects", []):
            if p["project"] == pid and p["behind"] == 0 and p["mirrored_seq"] > 0:
                return m
        return None
    return wait_until(done, deadline_s, what="the mirror to catch up")


def daemon_docs(d, pid, collections=("obs", "plots")):
    """{(collection, id): document JSON} of every document, deleted ones too."""
    out = {}
    for coll in collections:
        after = None
        while True:
            q = "?limit=1000&include_deleted=1" + ("&after=" + after if after else "")
            r = d.unix("GET", V + "/%s/docs/%s%s" % (pid, coll, q))
            assert r.status == 200, r
            page = r.json()
            for doc in page["docs"]:
                out[(coll, doc["id"])] = doc
            after = page.get("next")
            if not after:
                break
    return out


def mirror_rows(pg, pid):
    rows = pg.sql("SELECT collection, id, body::text, deleted, conflict, array_to_json(heads),"
                  " version, author FROM fieldsync.documents WHERE project = '%s'" % pid)
    return {(r[0], r[1]): {"body": json.loads(r[2]) if r[2] else None, "deleted": r[3] == "t",
                           "conflict": r[4] == "t", "heads": json.loads(r[5]), "version": r[6],
                           "author": r[7]}
            for r in rows}


class MirrorTest(h.DaemonTestCase):
    # One server for the class (initdb takes most of a second or two); each test starts from
    # an empty database: no mirror tables, no test role or database.
    @classmethod
    def setUpClass(cls):
        cls.pg = PostgresServer().start()

    @classmethod
    def tearDownClass(cls):
        cls.pg.close()

    def setUp(self):
        super().setUp()
        if not self.pg.running():
            self.pg.start()
        self.pg.sql("DROP SCHEMA IF EXISTS fieldsync CASCADE")
        self.pg.sql("DROP DATABASE IF EXISTS field")
        self.pg.sql("DROP ROLE IF EXISTS mirror")

    def hub(self, name="hub", **settings):
        s = {"mirror.postgres": self.pg.conninfo(), "mirror.retry_min_ms": 50,
             "mirror.retry_max_ms": 200}
        s.update(settings)
        return self.daemon(name, **s)

    def assert_same(self, d, pid):
        docs = daemon_docs(d, pid)
        rows = mirror_rows(self.pg, pid)
        self.assertEqual(set(docs), set(rows))
        for key, doc in docs.items():
            row = rows[key]
            self.assertEqual(row["deleted"], doc.get("deleted", False), key)
            self.assertEqual(row["conflict"], len(doc["heads"]) > 1, key)
            self.assertEqual(row["heads"], doc["heads"], key)
            self.assertEqual(row["version"], doc["version"], key)
            self.assertEqual(row["body"], None if doc.get("deleted") else doc["body"], key)
        return len(docs)

    def write_batch(self, d, pid, start, count, collection="obs"):
        writes = [{"collection": collection, "id": "d%05d" % i,
                   "body": {"n": i, "site": "s%d" % (i % 7), "lat": -1.25 + i * 1e-4,
                            "text": "caf\u00e9 %d" % i}}
                  for i in range(start, start + count)]
        r = d.unix("POST", V + "/%s/batch" % pid, {"writes": writes})
        self.assertEqual(r.status, 200, r)

    def test_rows_match_documents(self):
        d = self.hub()
        pid = d.create_project("survey")
        self.write_batch(d, pid, 0, 300)
        self.write_batch(d, pid, 0, 20)  # updates
        # A conflict: a write on a stale base keeps both versions.
        first = d.unix("GET", V + "/%s/docs/obs/d00030" % pid).json()["version"]
        d.unix("PUT", V + "/%s/docs/obs/d00030" % pid, {"n": "newer"})
        r = d.unix("PUT", V + "/%s/docs/obs/d00030?base=%s" % (pid, first), {"n": "concurrent"})
        self.assertTrue(r.json()["conflict"], r)
        for i in range(5):
            self.assertEqual(d.unix("DELETE", V + "/%s/docs/obs/d%05d" % (pid, 100 + i)).status,
                             200)
        d.unix("PUT", V + "/%s/docs/plots/p1" % pid, {"geometry": {"type": "Point"},
                                                       "big": 123456789012345678901234567890})
        m = wait_mirrored(d, pid)
        self.assertEqual(m["state"], "current", m)
        self.assertIsNone(m["last_error"])
        self.assertEqual(self.assert_same(d, pid), 301)
        # Exact numbers and the reserved collections stay out.
        self.assertEqual(self.pg.value("SELECT body->>'big' FROM fieldsync.documents "
                                       "WHERE collection = 'plots'"),
                         "123456789012345678901234567890")
        self.assertEqual(self.pg.value("SELECT count(*) FROM fieldsync.documents "
                                       "WHERE collection LIKE '\\_%'"), "0")
        self.assertEqual(self.pg.value("SELECT count(*) FROM fieldsync.current_documents "
                                       "WHERE project_name = 'survey'"), "296")
        self.assertEqual(self.pg.value("SELECT count(*) FROM fieldsync.documents WHERE conflict"),
                         "1")
        # The position is stored with the rows.
        self.assertEqual(self.pg.value("SELECT seq FROM fieldsync.projects WHERE project = '%s'"
                                       % pid), str(m["projects"][0]["mirrored_seq"]))
        metrics = d.http("GET", "/metrics").text
        self.assertIn('fieldsync_mirror_behind{project="%s"} 0' % pid, metrics)
        self.assertIn("fieldsync_mirror_up 1", metrics)

    def test_postgres_stopped_and_restarted_mid_stream(self):
        d = self.hub(**{"mirror.batch_changes": 50})
        pid = d.create_project("survey")
        self.write_batch(d, pid, 0, 500)
        wait_until(lambda: row_count(self.pg, pid) > 0, 30, what="first rows")
        self.pg.stop("fast")
        self.write_batch(d, pid, 500, 500)
        wait_until(lambda: mirror_status(d)["state"] == "retrying", 30, what="retrying")
        m = mirror_status(d)
        self.assertIsNotNone(m["last_error"])
        self.assertGreater(m["failures"], 0)
        self.assertGreater(m["projects"][0]["behind"], 0)
        out = d.syncctl("status").stdout
        self.assertIn("mirror       retrying", out)
        self.assertIn("last error: ", out)
        self.assertIn("changes not yet in PostgreSQL", out)
        self.pg.start()
        wait_mirrored(d, pid)
        self.assertEqual(self.assert_same(d, pid), 1000)
        self.assertEqual(mirror_status(d)["state"], "current")

    def test_daemon_killed_mid_stream(self):
        d = self.hub(**{"mirror.batch_changes": 20})
        pid = d.create_project("survey")
        for start in range(0, 2000, 500):
            self.write_batch(d, pid, start, 500)
        wait_until(lambda: row_count(self.pg, pid) > 0, 30, what="first rows")
        d.kill()
        partial = int(self.pg.value(ROWS % pid))
        d.start()
        self.write_batch(d, pid, 0, 10)  # and it goes on with new writes
        wait_mirrored(d, pid)
        self.assertEqual(self.assert_same(d, pid), 2000)
        # Every committed position matches rows already there: rows seq never exceed it.
        self.assertEqual(self.pg.value(
            "SELECT count(*) FROM fieldsync.documents d JOIN fieldsync.projects p"
            " USING (project) WHERE d.seq > p.seq"), "0")
        self.assertLessEqual(partial, 2000)

    def test_documents_from_another_device(self):
        phone = self.daemon("phone")
        relay = self.daemon("laptop")
        hub = self.hub()
        pid = h.share(phone, relay, hub)
        h.add_peer(phone, relay)
        h.add_peer(relay, hub)
        self.write_batch(phone, pid, 0, 50)
        wait_until(lambda: row_count(self.pg, pid) == 50, 60, what="50 rows from the phone")
        authors = self.pg.sql("SELECT DISTINCT author FROM fieldsync.documents WHERE project = "
                              "'%s'" % pid)
        self.assertEqual(authors, [[phone.device_id]])
        wait_mirrored(hub, pid)
        self.assert_same(hub, pid)

    def test_body_postgres_refuses(self):
        d = self.hub()
        pid = d.create_project("survey")
        self.write_batch(d, pid, 0, 10)
        # JSON allows \u0000 in a string; PostgreSQL's jsonb does not.
        r = d.unix("PUT", V + "/%s/docs/obs/nul" % pid,
                   b'{"note": "a\\u0000b"}', headers={"Content-Type": "application/json"})
        self.assertIn(r.status, (200, 201), r)
        self.write_batch(d, pid, 10, 10)
        wait_mirrored(d, pid)
        self.assertEqual(self.pg.value(ROWS % pid), "21")
        row = self.pg.sql("SELECT body IS NULL, body_error FROM fieldsync.documents "
                          "WHERE id = 'nul'")[0]
        self.assertEqual(row[0], "t")
        self.assertIn("\\u0000", row[1])
        m = mirror_status(d)
        self.assertEqual(m["bodies_refused"], 1)
        self.assertEqual(m["state"], "current")

    def test_one_device_mirrors_a_project(self):
        a = self.hub("hub-a")
        pid = a.create_project("survey")
        self.write_batch(a, pid, 0, 30)
        wait_mirrored(a, pid)
        b = self.hub("hub-b")
        sec = a.unix("GET", V + "/%s/secret" % pid).json()
        self.assertEqual(b.unix("POST", V + "/import", sec).status, 201)
        h.add_peer(b, a)
        self.write_batch(a, pid, 30, 10)
        wait_until(lambda: any(p["problem"] for p in mirror_status(b)["projects"]), 30,
                   what="the second hub to see the project is taken")
        problem = [p for p in mirror_status(b)["projects"] if p["problem"]][0]["problem"]
        self.assertIn(a.device_id, problem)
        self.assertIn("not mirrored", b.syncctl("status").stdout)
        self.assertEqual(self.pg.value("SELECT device FROM fieldsync.projects"), a.device_id)
        wait_mirrored(a, pid)
        self.assertEqual(row_count(self.pg, pid), 40)
        self.assertEqual(self.pg.value("SELECT count(DISTINCT author) FROM fieldsync.documents"),
                         "1")

    def test_password_never_logged_or_shown(self):
        secret = "Tr0ub4dor-and-3-horses"
        self.pg.sql("CREATE ROLE mirror LOGIN PASSWORD '%s'" % secret)
        self.pg.sql("CREATE DATABASE field OWNER mirror")
        pw = self.path("pgpass")
        os.makedirs(self.tmp, exist_ok=True)
        with open(pw, "w") as f:
            f.write(secret + "\n")
        os.chmod(pw, stat.S_IRUSR | stat.S_IWUSR)
        d = self.hub(**{"mirror.postgres": self.pg.tcp_conninfo("mirror", "field"),
                        "mirror.password_file": pw})
        pid = d.create_project("survey")
        self.write_batch(d, pid, 0, 5)
        wait_mirrored(d, pid)
        self.assertEqual(self.pg.value(ROWS % pid, dbname="field"), "5")
        shown = json.dumps(mirror_status(d)) + d.http("GET", "/metrics").text + d.log()
        self.assertNotIn(secret, shown)
        # A wrong password: an error that names the cause, still without the password.
        with open(pw, "w") as f:
            f.write("not-" + secret + "\n")
        d.restart()
        wait_until(lambda: mirror_status(d)["state"] == "retrying", 30, what="retrying")
        m = mirror_status(d)
        self.assertIn("password authentication failed", m["last_error"]["message"])
        self.assertNotIn(secret, json.dumps(m) + d.log())
        # A password in the connection string is taken out of everything shown.
        d.stop()
        d.settings["mirror.postgres"] = self.pg.tcp_conninfo("mirror", "field") + \
            " password=" + secret
        del d.settings["mirror.password_file"]
        d.start()
        wait_until(lambda: mirror_status(d)["state"] == "current", 30, what="current")
        self.assertNotIn(secret, json.dumps(mirror_status(d)) + d.log())
        self.assertIn("mirror.postgres holds a password", d.log())

    def test_bad_settings_are_refused_at_start(self):
        bad = h.Daemon(name="bad", settings={"mirror.postgres": "host='unterminated"})
        self.addCleanup(bad.close)
        with self.assertRaises(RuntimeError) as ctx:
            bad.start(deadline_s=20)
        self.assertIn("mirror.postgres", str(ctx.exception))
        off = self.daemon("plain")
        self.assertEqual(mirror_status(off), {"enabled": False, "state": "off",
                                              "message": "mirror.postgres is not set"})


if __name__ == "__main__":
    unittest.main()
