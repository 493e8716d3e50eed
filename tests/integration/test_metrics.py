#!/usr/bin/python3
"""GET /metrics and GET /v1/health of real daemons: two daemons sync a project while /metrics
of both is scraped, and the numbers are checked against what happened (versions written and
received, bytes moving and never going back, also after the connection ended, peers in sync,
the request counter rising, the store's commit and fsync histograms counting every write);
every scrape is parsed strictly (the Prometheus text format 0.0.4:
HELP and TYPE for every family, label syntax, cumulative histogram buckets with _sum and
_count). Health answers 200 on both listeners; both routes keep the API's access rules. Run by
ctest, or by hand: /usr/bin/python3 tests/integration/test_metrics.py -v
"""
import math
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import DaemonTestCase, V, add_peer, share, wait_until  # noqa: E402

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(r"^(%s)(\{(.*)\})? (\S+)$" % NAME)
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\["\\n])*)"\s*(,|$)')
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def parse_labels(text, line):
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        if not m:
            raise AssertionError("bad labels in %r" % line)
        name = m.group(1)
        if name in labels:
            raise AssertionError("label %s twice in %r" % (name, line))
        labels[name] = (m.group(2).replace("\\n", "\n").replace('\\"', '"')
                        .replace("\\\\", "\\"))
        pos = m.end()
        if m.group(3) == "" and pos < len(text):
            raise AssertionError("bad labels in %r" % line)
    return labels


def parse_value(text, line):
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    try:
        return float(text)
    except ValueError:
        raise AssertionError("bad value in %r" % line)


def parse_exposition(text):
    """The families of a Prometheus text exposition (format 0.0.4), checked strictly: every
    family has one HELP and one TYPE line before its samples, its samples are together, a
    sample belongs to the family it follows (a family may have none; histograms: name_bucket with le, name_sum,
    name_count), counters end in _total, histogram buckets are cumulative and end with
    le="+Inf" equal to _count. Returns {family: {"type", "help", "samples": [(name, labels,
    value)]}}."""
    if not text.endswith("\n"):
        raise AssertionError("the exposition must end with a newline")
    families, current = {}, None
    for line in text[:-1].split("\n"):
        if line == "":
            raise AssertionError("empty line in the exposition")
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            parts = line.split(" ", 3)
            if len(parts) < 4 or not re.fullmatch(NAME, parts[2]):
                raise AssertionError("bad comment line %r" % line)
            name = parts[2]
            fam = families.setdefault(name, {"samples": []})
            if fam["samples"]:
                raise AssertionError("%s: HELP/TYPE after its samples" % name)
            key = "help" if parts[1] == "HELP" else "type"
            if key in fam:
                raise AssertionError("%s: two %s lines" % (name, parts[1]))
            fam[key] = parts[3]
            if key == "type" and parts[3] not in TYPES:
                raise AssertionError("%s: unknown type %r" % (name, parts[3]))
            current = name
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise AssertionError("bad sample line %r" % line)
        name, labels, value = m.group(1), parse_labels(m.group(3) or "", line), \
            parse_value(m.group(4), line)
        if current is None:
            raise AssertionError("sample %r before any HELP/TYPE" % line)
        fam = families[current]
        if "help" not in fam or "type" not in fam:
            raise AssertionError("%s: sample without HELP and TYPE" % current)
        allowed = {current}
        if fam["type"] == "histogram":
            allowed = {current + "_bucket", current + "_sum", current + "_count"}
        if name not in allowed:
            raise AssertionError("sample %r does not belong to family %s" % (line, current))
        if name.endswith("_bucket") and "le" not in labels:
            raise AssertionError("bucket without le: %r" % line)
        fam["samples"].append((name, labels, value))
    for name, fam in families.items():
        if "help" not in fam or "type" not in fam:
            raise AssertionError("%s: HELP or TYPE missing" % name)
        if not name.startswith("fieldsync_"):
            raise AssertionError("%s: no fieldsync_ prefix" % name)
        if fam["type"] == "counter" and not name.endswith("_total"):
            raise AssertionError("counter %s does not end in _total" % name)
        for _, _, v in fam["samples"]:
            if fam["type"] == "counter" and (math.isnan(v) or v < 0):
                raise AssertionError("counter %s has %r" % (name, v))
        if fam["type"] == "histogram":
            check_histogram(name, fam["samples"])
    return families


def check_histogram(name, samples):
    series = {}
    for sname, labels, v in samples:
        key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        s = series.setdefault(key, {"buckets": [], "sum": None, "count": None})
        if sname.endswith("_bucket"):
            s["buckets"].append((parse_value(labels["le"], labels["le"]), v))
        elif sname.endswith("_sum"):
            s["sum"] = v
        else:
            s["count"] = v
    if not series:
        raise AssertionError("histogram %s has no series" % name)
    for key, s in series.items():
        if s["sum"] is None or s["count"] is None:
            raise AssertionError("%s%r: _sum or _count missing" % (name, key))
        bounds = [b for b, _ in s["buckets"]]
        if not bounds or bounds[-1] != float("inf") or bounds != sorted(set(bounds)):
            raise AssertionError("%s%r: buckets %r not increasing up to +Inf" % (name, key,
                                                                                 bounds))
        counts = [c for _, c in s["buckets"]]
        if counts != sorted(counts):
            raise AssertionError("%s%r: buckets not cumulative: %r" % (name, key, counts))
        if counts[-1] != s["count"]:
            raise AssertionError("%s%r: +Inf bucket %r != _count %r" % (name, key, counts[-1],
                                                                         s["count"]))
        if s["sum"] < 0:
            raise AssertionError("%s%r: negative _sum" % (name, key))


class Scrape:
    def __init__(self, families):
        self.families = families

    def value(self, name, **labels):
        """The value of the sample `name` with exactly these labels (among others of its
        family); fails when there is none."""
        fam = self.families.get(name)
        for suffix in ("_count", "_sum", "_bucket"):
            if fam is None and name.endswith(suffix):
                fam = self.families.get(name[:-len(suffix)])
        if fam is None:
            raise AssertionError("no family %s" % name)
        for n, l, v in fam["samples"]:
            if n == name and l == labels:
                return v
        raise AssertionError("no sample %s%r in %r" % (name, labels, fam["samples"]))

    def total(self, name):
        return sum(v for _, _, v in self.families[name]["samples"])


def scrape(d, tcp=False):
    r = d.http("GET", "/metrics") if tcp else d.unix("GET", "/metrics")
    assert r.status == 200, r
    ctype = r.headers.get("content-type", "")
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    return Scrape(parse_exposition(r.body.decode("utf-8")))


# Counters that must never go back, per transport.
SYNC_COUNTERS = ("fieldsync_sync_bytes_sent_total", "fieldsync_sync_bytes_received_total",
                 "fieldsync_sync_wire_bytes_sent_total", "fieldsync_sync_wire_bytes_received_total",
                 "fieldsync_sync_versions_sent_total", "fieldsync_sync_versions_received_total",
                 "fieldsync_sync_connections_closed_total")


def counters(s):
    out = {n: s.value(n, transport="tcp") for n in SYNC_COUNTERS}
    out["requests"] = s.total("fieldsync_api_requests_total")
    return out


class Metrics(DaemonTestCase):
    DEFAULTS = {"discovery.enabled": "false"}

    def assert_monotonic(self, before, after, what):
        for k, v in before.items():
            self.assertGreaterEqual(after[k], v, "%s: %s went back (%r -> %r)" % (
                what, k, v, after[k]))

    def test_parser_refuses_what_it_must(self):
        good = ("# HELP fieldsync_x_total x.\n# TYPE fieldsync_x_total counter\n"
                'fieldsync_x_total{a="1"} 3\n'
                "# HELP fieldsync_h h.\n# TYPE fieldsync_h histogram\n"
                'fieldsync_h_bucket{le="1"} 1\nfieldsync_h_bucket{le="+Inf"} 2\n'
                "fieldsync_h_sum 3.5\nfieldsync_h_count 2\n")
        self.assertEqual(len(parse_exposition(good)), 2)
        bad = [good.replace("# HELP fieldsync_x_total x.\n", ""),      # no HELP
               good.replace("# TYPE fieldsync_h histogram\n", ""),    # no TYPE
               good.replace('le="1"} 1', 'le="1"} 3'),                # not cumulative
               good.replace("fieldsync_h_count 2\n", ""),              # no _count
               good.replace("fieldsync_h_sum 3.5\n", ""),              # no _sum
               good.replace('{le="+Inf"} 2', '{le="+Inf"} 5'),        # +Inf != _count
               good.replace('{a="1"}', '{a=1}'),                      # label syntax
               good.replace("counter", "countr"),                     # type
               good + "fieldsync_other 1\n",                          # foreign sample
               good[:-1]]                                             # no final newline
        for text in bad:
            with self.assertRaises(AssertionError, msg=text):
                parse_exposition(text)

    def test_health_and_access_rules(self):
        a = self.daemon("alpha")
        for r in (a.unix("GET", "/v1/health"), a.http("GET", "/v1/health")):
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["status"], "ok")
            self.assertTrue(r.headers["content-type"].startswith("application/json"))
        for path in ("/v1/health", "/metrics"):
            r = a.http("GET", path, token=None)
            self.assertEqual(r.status, 401, r)
            r = a.http("GET", path, token="0" * 64)
            self.assertEqual(r.status, 401, r)
            r = a.http("GET", path, headers={"Host": "evil.example"})
            self.assertEqual(r.status, 403, r)
            r = a.unix("GET", path + "?x=1")
            self.assertEqual(r.status, 400, r)
        s = scrape(a, tcp=True)
        # The refusals above were counted: 4xx.
        self.assertGreaterEqual(s.value("fieldsync_api_requests_total", code="4xx"), 8)
        self.assertEqual(s.value("fieldsync_api_requests_total", code="5xx"), 0)
        # Every answer observed once in the histogram (the scrape itself is counted after).
        self.assertEqual(s.total("fieldsync_api_requests_total"),
                         s.value("fieldsync_api_request_duration_seconds_count"))

    def test_storage_commit_and_fsync_latency(self):
        # Durable, as a real device runs: each commit includes its fsync.
        a = self.daemon("alpha", **{"storage.durable": "true"})
        pid = a.create_project()
        s0 = scrape(a)
        for name in ("fieldsync_storage_commit_seconds", "fieldsync_storage_fsync_seconds"):
            self.assertEqual(s0.families[name]["type"], "histogram")
            les = [l["le"] for n, l, _ in s0.families[name]["samples"] if n.endswith("_bucket")]
            self.assertEqual(les[0], "0.0001")
            self.assertEqual(les[-2:], ["10", "+Inf"])
        commits0 = s0.value("fieldsync_storage_commit_seconds_count")
        self.assertGreater(commits0, 0)  # creating the project committed
        # Each PUT of a document is one write transaction; a batch is one more.
        n_puts = 20
        for i in range(n_puts):
            r = a.unix("PUT", V + "/%s/docs/obs/d%d" % (pid, i), {"n": i})
            self.assertIn(r.status, (200, 201), r)
        r = a.unix("POST", V + "/%s/batch" % pid,
                   {"writes": [{"collection": "obs", "id": "b%d" % i, "body": {"n": i}}
                               for i in range(50)]})
        self.assertEqual(r.status, 200, r)
        fsyncs0 = scrape(a).value("fieldsync_storage_fsync_seconds_count")
        r = a.unix("POST", V + "/%s/blobs" % pid, b"some bytes of a photo",
                   {"Content-Type": "image/jpeg"})
        self.assertEqual(r.status, 201, r)
        s1 = scrape(a)
        commits1 = s1.value("fieldsync_storage_commit_seconds_count")
        self.assertGreaterEqual(commits1 - commits0, n_puts + 1)
        self.assertGreater(s1.value("fieldsync_storage_commit_seconds_sum"),
                           s0.value("fieldsync_storage_commit_seconds_sum"))
        # The uploaded blob's file and its directory were fsynced.
        self.assertGreaterEqual(s1.value("fieldsync_storage_fsync_seconds_count") - fsyncs0, 2)
        # Buckets: cumulative, +Inf == _count (parse_exposition checked), and none went back.
        for name in ("fieldsync_storage_commit_seconds", "fieldsync_storage_fsync_seconds"):
            before = {l["le"]: v for n, l, v in s0.families[name]["samples"]
                      if n.endswith("_bucket")}
            after = {l["le"]: v for n, l, v in s1.families[name]["samples"]
                     if n.endswith("_bucket")}
            self.assertEqual(before.keys(), after.keys())
            for le, v in before.items():
                self.assertGreaterEqual(after[le], v, "%s le=%s went back" % (name, le))
            self.assertEqual(after["+Inf"], s1.value(name + "_count"))

    def test_scraped_during_and_after_a_sync(self):
        a = self.daemon("alpha")
        b = self.daemon("beta")
        pid = share(a, b)
        a0, b0 = scrape(a), scrape(b)
        for s in (a0, b0):
            self.assertEqual(s.value("fieldsync_projects"), 1)
            self.assertEqual(s.total("fieldsync_peers"), 0)
            for n in SYNC_COUNTERS:
                self.assertEqual(s.value(n, transport="tcp"), 0, n)
            self.assertEqual(s.value("fieldsync_build_info", version=s.families[
                "fieldsync_build_info"]["samples"][0][1]["version"]), 1)
        versions0 = {d.name: s.value("fieldsync_project_versions", project=pid)
                     for d, s in ((a, a0), (b, b0))}
        changes0 = {d.name: s.value("fieldsync_project_changes", project=pid)
                    for d, s in ((a, a0), (b, b0))}
        self.assertEqual(versions0["alpha"], versions0["beta"])

        # Documents written on a: enough that the sync takes a while.
        n_docs = 3000
        for start in range(0, n_docs, 500):
            writes = [{"collection": "obs", "id": "d%d" % i,
                       "body": {"n": i, "notes": "x" * 300}}
                      for i in range(start, start + 500)]
            r = a.unix("POST", V + "/%s/batch" % pid, {"writes": writes})
            self.assertEqual(r.status, 200, r)
        a1 = scrape(a)
        self.assertEqual(a1.value("fieldsync_project_versions", project=pid),
                         versions0["alpha"] + n_docs)
        self.assertEqual(a1.value("fieldsync_project_changes", project=pid),
                         changes0["alpha"] + n_docs)

        add_peer(a, b)
        # Scraped while the sync runs: every counter only grows.
        last = {"alpha": counters(a1), "beta": counters(b0)}
        scrapes = 0

        def synced():
            nonlocal scrapes
            for d in (a, b):
                c = counters(scrape(d))
                self.assert_monotonic(last[d.name], c, d.name + " during the sync")
                self.assertGreater(c["requests"], last[d.name]["requests"], d.name)
                last[d.name] = c
            scrapes += 1
            r = a.unix("GET", V + "/%s/sync" % pid).json()
            return r["in_sync"] and r["to_send"] == 0 and r["to_receive"] == 0
        wait_until(synced, 60, interval_s=0.05, what="a and b in sync")
        self.assertGreater(scrapes, 1)

        def settled():  # both sides say in sync (b learns it from a's DONE)
            sa, sb = scrape(a), scrape(b)
            ok = all(s.value("fieldsync_peers", state="in_sync") == 1 for s in (sa, sb))
            return (sa, sb) if ok else None
        sa, sb = wait_until(settled, 30, what="both peers in_sync in /metrics")
        for s in (sa, sb):
            self.assertEqual(s.total("fieldsync_peers"), 1)
            self.assertEqual(s.value("fieldsync_project_versions", project=pid),
                             versions0["alpha"] + n_docs)
        self.assertEqual(sb.value("fieldsync_project_changes", project=pid),
                         changes0["beta"] + n_docs)
        # What b received is what a sent: the versions written, in frames of some bytes.
        self.assertEqual(sb.value("fieldsync_sync_versions_received_total", transport="tcp"),
                         n_docs)
        self.assertEqual(sa.value("fieldsync_sync_versions_sent_total", transport="tcp"), n_docs)
        self.assertEqual(sa.value("fieldsync_sync_versions_received_total", transport="tcp"), 0)
        # (Batches are compressed: the repetitive bodies take far less than they hold.)
        self.assertGreater(sb.value("fieldsync_sync_bytes_received_total", transport="tcp"),
                           n_docs)
        self.assertGreater(sa.value("fieldsync_sync_bytes_sent_total", transport="tcp"),
                           n_docs)
        for s in (sa, sb):
            for n in ("fieldsync_sync_wire_bytes_sent_total",
                      "fieldsync_sync_wire_bytes_received_total"):
                self.assertGreater(s.value(n, transport="tcp"), 0, n)
        self.assertGreaterEqual(sb.value("fieldsync_sync_wire_bytes_received_total",
                                         transport="tcp"),
                                sb.value("fieldsync_sync_bytes_received_total",
                                         transport="tcp"))

        # The connection ends: its totals stay in the counters.
        before = {"alpha": counters(sa), "beta": counters(sb)}
        r = a.unix("DELETE", "/v1/peers/%s" % b.device_id)
        self.assertEqual(r.status, 200, r)

        def closed():
            s = scrape(b)
            return s if s.value("fieldsync_sync_connections_closed_total",
                                transport="tcp") >= 1 else None
        sb2 = wait_until(closed, 30, what="b sees the connection end")
        sa2 = scrape(a)
        self.assertGreaterEqual(sa2.value("fieldsync_sync_connections_closed_total",
                                          transport="tcp"), 1)
        self.assert_monotonic(before["alpha"], counters(sa2), "alpha after the close")
        self.assert_monotonic(before["beta"], counters(sb2), "beta after the close")
        self.assertEqual(sb2.value("fieldsync_sync_versions_received_total", transport="tcp"),
                         n_docs)
        self.assertEqual(sa2.value("fieldsync_peers", state="in_sync"), 0)
        self.assertEqual(sa2.total("fieldsync_api_requests_total"),
                         sa2.value("fieldsync_api_request_duration_seconds_count"))
        for d in (a, b):
            r = d.unix("GET", "/v1/health")
            self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    unittest.main()
