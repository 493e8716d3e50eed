"""Random document writes through the API with a record of what was acknowledged, and a
snapshot of what a daemon holds (versions, version vector, heads), shared by the durability
and soak tests. Python 3 standard library only.
"""
import collections
import threading

from fieldsync_harness import request

V = "/v1/projects"
COLLECTIONS = ("obs", "sites")


class Acked:
    """The writes a daemon acknowledged (a 2xx answer with a version): thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.writes = []  # (daemon name, collection, id, version)

    def add(self, who, coll, doc_id, version):
        with self.lock:
            self.writes.append((who, coll, doc_id, version))

    def __len__(self):
        with self.lock:
            return len(self.writes)

    def versions(self):
        with self.lock:
            return {w[3] for w in self.writes}

    def snapshot(self):
        with self.lock:
            return list(self.writes)

    def forget(self, versions):
        """Drops the writes of these versions (acknowledged, then lost as documented, e.g. by
        restoring an older backup of the device that wrote them)."""
        with self.lock:
            self.writes = [w for w in self.writes if w[3] not in versions]


def random_write(conn, pid, rng, acked, who, id_space=60):
    """One random write on an open API connection: a put (update over the winner or create),
    a delete, a create with a server-chosen id, or a batch of several. Records what was
    acknowledged; returns the HTTP status. Connection errors propagate (the daemon died)."""
    coll = rng.choice(COLLECTIONS)
    doc_id = "d%d" % rng.randrange(id_space)
    body = {"n": rng.randrange(1 << 30), "by": who, "pad": "x" * rng.randrange(0, 300)}
    op = rng.random()
    if op < 0.50:
        r = request(conn, "PUT", "%s/%s/docs/%s/%s" % (V, pid, coll, doc_id), body)
    elif op < 0.65:
        r = request(conn, "DELETE", "%s/%s/docs/%s/%s" % (V, pid, coll, doc_id))
    elif op < 0.75:
        r = request(conn, "POST", "%s/%s/docs/%s" % (V, pid, coll), body)
    else:
        writes = []
        for _ in range(rng.randrange(2, 8)):
            c = rng.choice(COLLECTIONS)
            w = {"collection": c, "id": "d%d" % rng.randrange(id_space)}
            w["body"] = {"n": rng.randrange(1 << 30), "by": who, "batch": True}
            writes.append(w)
        r = request(conn, "POST", "%s/%s/batch" % (V, pid), {"writes": writes})
        if r.status == 200:
            for res in r.json()["results"]:
                acked.add(who, res["collection"], res["id"], res["version"])
        return r.status
    if r.status in (200, 201):
        res = r.json()
        acked.add(who, res["collection"], res["id"], res["version"])
    return r.status


def changes(d, pid, page=1000):
    """Every change in d's feed of pid ([] when d does not hold the project)."""
    out, since = [], 0
    while True:
        r = d.unix("GET", "%s/%s/changes?since=%d&limit=%d" % (V, pid, since, page))
        if r.status == 404:
            return out
        assert r.status == 200, r
        j = r.json()
        out += j["changes"]
        if not j["changes"] or j["last_seq"] == since:
            return out
        since = j["last_seq"]


def heads(d, pid):
    """{(collection, id): sorted heads} over every document, deleted ones included."""
    out = {}
    for coll in COLLECTIONS:
        after = None
        while True:
            path = "%s/%s/docs/%s?include_deleted=1&limit=1000" % (V, pid, coll)
            if after:
                path += "&after=" + after
            r = d.unix("GET", path)
            if r.status == 404:
                break
            assert r.status == 200, r
            j = r.json()
            for doc in j["docs"]:
                out[(coll, doc["id"])] = tuple(sorted(doc["heads"]))
            after = j.get("next")
            if not after:
                break
    return out


def snapshot(d, pid):
    """What d holds of pid: the set of versions, the version vector (versions per author; each
    author's log is gapless, so this is its head sequence) and every document's heads."""
    ch = changes(d, pid)
    return {"versions": {c["version"] for c in ch},
            "vv": dict(collections.Counter(c["author"] for c in ch)),
            "heads": heads(d, pid)}
