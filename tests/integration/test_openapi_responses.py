#!/usr/bin/python3
"""Real answers of fieldsyncd against docs/openapi.yaml: every JSON body a running daemon (two,
syncing, for peers, joins and bundles) gives for the routes exercised here is validated against
the schema the spec declares for that route and status, with every $ref resolved. Each answer
is checked twice: against the spec as written (a member of the wrong type, a missing required
member or a status the operation does not declare fails), and against a strict reading of it
in which an object schema that does not say `additionalProperties` takes no other members (a
member the daemon sends that the spec does not describe fails: the spec must be complete, while
clients may still ignore members added later). The last test checks that every operation of
the spec was exercised. Run by ctest, or by hand:
/usr/bin/python3 tests/integration/test_openapi_responses.py -v
"""
import copy
import hashlib
import json
import os
import sys
import unittest
import urllib.parse

import jsonschema
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import DaemonTestCase, V, add_peer, distinct_bytes, wait_until  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SPEC_PATH = os.path.join(ROOT, "docs", "openapi.yaml")
with open(SPEC_PATH) as f:
    SPEC = yaml.safe_load(f)

METHODS = ("get", "put", "post", "patch", "delete")
# Keywords of OpenAPI 3.0 schemas that JSON Schema does not know (or that describe only).
OAS_ONLY = ("nullable", "example", "discriminator", "readOnly", "writeOnly", "xml",
            "externalDocs", "deprecated", "format")


def lookup(ref):
    if not ref.startswith("#/"):
        raise AssertionError("only local $refs are expected, got %r" % ref)
    node = SPEC
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def deref(node):
    """`node` with a top-level $ref (to anything in the spec) followed."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        node = lookup(node["$ref"])
        seen += 1
        if seen > 50:
            raise AssertionError("$ref cycle at %r" % node)
    return node


def merge_all_of(schema):
    """An object schema with its allOf branches folded in (properties and required united), so
    that `additionalProperties: false` can be added to the whole."""
    branches = schema.pop("allOf")
    if not all(isinstance(b, dict) and (b.get("type") == "object" or "properties" in b)
               for b in branches):
        schema["allOf"] = branches
        return schema
    merged = dict(schema)
    merged["type"] = "object"
    props = dict(schema.get("properties", {}))
    required = list(schema.get("required", []))
    extra = schema.get("additionalProperties")
    for b in branches:
        for k, v in b.get("properties", {}).items():
            props[k] = {"allOf": [props[k], v]} if k in props else v
        required += [r for r in b.get("required", []) if r not in required]
        if "additionalProperties" in b and b["additionalProperties"] is not False:
            extra = b["additionalProperties"]
    merged["properties"] = props
    if required:
        merged["required"] = required
    if extra is not None:
        merged["additionalProperties"] = extra
    return merged


def definition_name(ref):
    return ref[2:].replace("/", ".")


def to_json_schema(node, strict, stack=(), recursive=None):
    """An OpenAPI 3.0 schema as plain JSON Schema (draft 7): $refs inlined (a $ref within its
    own expansion, e.g. SubscriptionCondition, becomes a reference into `definitions`, and its
    name is added to `recursive`), `nullable: true` as "this or null", OpenAPI-only keywords
    dropped. strict: allOf merged and object schemas that do not say `additionalProperties`
    closed."""
    if isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if ref in stack:
            if recursive is not None:
                recursive.add(ref)
            return {"$ref": "#/definitions/" + definition_name(ref)}
        return to_json_schema(lookup(ref), strict, stack + (ref,), recursive)
    if isinstance(node, list):
        return [to_json_schema(n, strict, stack, recursive) for n in node]
    if not isinstance(node, dict):
        return node

    def sub(v):
        return to_json_schema(v, strict, stack, recursive)
    nullable = node.get("nullable") is True
    out = {}
    for k, v in node.items():
        if k in OAS_ONLY:
            continue
        if k == "properties":
            out[k] = {name: sub(s) for name, s in v.items()}
        elif k in ("items", "not", "additionalProperties") and isinstance(v, dict):
            out[k] = sub(v)
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = [sub(s) for s in v]
        else:
            out[k] = copy.deepcopy(v)
    if strict and "allOf" in out:
        out = merge_all_of({k: v for k, v in out.items()})
    if strict and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if nullable:
        return {"anyOf": [{"type": "null"}, out]}
    return out


def operation(method, template):
    path = SPEC["paths"].get(template)
    if path is None or method.lower() not in path:
        raise AssertionError("%s %s is not in docs/openapi.yaml" % (method, template))
    return path[method.lower()]


def response_schema(method, template, status):
    """The JSON schema of the answer, or None when that answer has no JSON body. The status
    must be declared by the operation itself (not only as `default`)."""
    responses = operation(method, template)["responses"]
    if str(status) not in responses:
        raise AssertionError("%s %s answered %d, which docs/openapi.yaml does not declare "
                             "(declared: %s)" % (method, template, status,
                                                 ", ".join(sorted(responses))))
    content = deref(responses[str(status)]).get("content", {})
    media = content.get("application/json")
    return None if media is None else media["schema"]


def declared_media(method, template, status):
    """The media types the operation declares for that answer (e.g. text/plain, */*)."""
    responses = operation(method, template)["responses"]
    return list(deref(responses[str(status)]).get("content", {}))


def root_schema(schema, strict):
    """to_json_schema() of `schema`, with the `definitions` its recursive $refs point to."""
    recursive = set()
    root = to_json_schema(schema, strict, (), recursive)
    definitions, done = {}, set()
    while recursive - done:
        ref = sorted(recursive - done)[0]
        done.add(ref)
        definitions[definition_name(ref)] = to_json_schema(lookup(ref), strict, (ref,),
                                                           recursive)
    if definitions:
        root = {"allOf": [root], "definitions": definitions}
    return root


def problems(schema, instance, strict):
    validator = jsonschema.Draft7Validator(root_schema(schema, strict))
    return ["%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(top)", e.message)
            for e in validator.iter_errors(instance)]


class OpenApiResponses(DaemonTestCase):
    DEFAULTS = {"discovery.enabled": "false"}
    exercised = set()  # (METHOD, template) answered and checked, over every test of the class
    completed = set()  # the tests that exercise routes and passed
    ROUTE_TESTS = {"test_blobs", "test_documents_projects_changes_status",
                   "test_peers_members_bundles_join", "test_sync_disabled"}

    def done(self):
        type(self).completed.add(self._testMethodName)

    def call(self, d, method, template, params=None, query="", body=None, headers=None,
             expect=200, tcp=False, token=True):
        """One request to `d` for the spec operation (method, template); checks the status
        and validates a JSON body. Returns the Response."""
        path = template
        for k, v in (params or {}).items():
            path = path.replace("{%s}" % k, urllib.parse.quote(str(v), safe=""))
        if query:
            path += "?" + query
        if tcp:
            r = d.http(method, path, body, headers, token=token)
        else:
            r = d.unix(method, path, body, headers)
        self.assertEqual(r.status, expect, "%s %s: %r" % (method, path, r))
        self.check(method, template, r)
        return r

    def check(self, method, template, r):
        schema = response_schema(method, template, r.status)
        type(self).exercised.add((method.upper(), template))
        if schema is None:
            # Not JSON (text/plain metrics, bundles, blobs): the body is not validated, but its
            # Content-Type must be one the spec declares (any, where it says */*).
            media = declared_media(method, template, r.status)
            got = r.headers.get("content-type", "").split(";")[0].strip()
            if media and "*/*" not in media:
                self.assertIn(got, media, "%s %s %d: Content-Type %r, docs/openapi.yaml "
                              "declares %s" % (method, template, r.status, got, media))
            return
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"),
                        "%s %s: %r" % (method, template, r.headers))
        value = r.json()
        found = problems(schema, value, strict=False)
        self.assertEqual(found, [], "%s %s %d does not match docs/openapi.yaml:\n%s\n%s" % (
            method, template, r.status, "\n".join(found), json.dumps(value)[:2000]))
        found = problems(schema, value, strict=True)
        self.assertEqual(found, [], "%s %s %d has members docs/openapi.yaml does not describe:"
                         "\n%s\n%s" % (method, template, r.status, "\n".join(found),
                                       json.dumps(value)[:2000]))

    # ------------------------------------------------------------------ one daemon

    def test_documents_projects_changes_status(self):
        a = self.daemon("alpha")
        self.call(a, "GET", "/v1/status")
        self.call(a, "GET", "/v1/projects")
        pid = self.call(a, "POST", "/v1/projects", body={"name": "survey", "settings": {"k": 1}},
                        expect=201).json()["id"]
        p = {"pid": pid}
        self.call(a, "GET", V + "/{pid}", p)
        self.call(a, "PATCH", V + "/{pid}", p, body={"name": "survey 2"})
        self.call(a, "GET", "/v1/projects")

        docs = V + "/{pid}/docs/{coll}"
        doc = docs + "/{id}"
        w = self.call(a, "POST", docs, {"pid": pid, "coll": "obs"}, "id=o1&schema=2",
                      body={"depth": 1, "who": "x"}, expect=201).json()
        other = self.call(a, "POST", docs, {"pid": pid, "coll": "obs"}, body={"depth": 5},
                          expect=201).json()["id"]
        q = {"pid": pid, "coll": "obs", "id": "o1"}
        r = self.call(a, "GET", doc, q)
        self.assertEqual(r.headers["etag"], '"%s"' % w["version"])
        # Two writes over the same base: a conflict, with its merge preview.
        self.call(a, "PUT", doc, q, "base=" + w["version"], body={"depth": 2, "who": "x"})
        c = self.call(a, "PUT", doc, q, "base=" + w["version"], body={"depth": 3, "who": "y"})
        self.assertTrue(c.json()["conflict"])
        # A conditional write whose version is stale: 412.
        self.call(a, "PUT", doc, q, body={"depth": 4}, headers={"If-Match": '"%s"' % w["version"]},
                  expect=412)
        got = self.call(a, "GET", doc, q).json()
        self.assertIn("merge", got)
        self.call(a, "GET", docs, {"pid": pid, "coll": "obs"},
                  "limit=1&where=" + urllib.parse.quote('who="x"'))
        self.call(a, "GET", docs, {"pid": pid, "coll": "obs"}, "conflicts=1&include_deleted=1")
        self.call(a, "GET", V + "/{pid}/conflicts", p)
        self.call(a, "GET", V + "/{pid}/conflicts", p, "sort=-depth&selector=" +
                  urllib.parse.quote('{"range": {"path": "depth", "gte": 0}}'))
        self.call(a, "GET", docs, {"pid": pid, "coll": "obs"}, "sort=depth&limit=1")
        self.call(a, "GET", docs, {"pid": pid, "coll": "obs"},
                  "keys=" + urllib.parse.quote('["o1", "missing"]'))
        self.call(a, "GET", docs, {"pid": pid, "coll": "obs"}, "colour=red", expect=400)
        r = self.call(a, "POST", doc + "/resolve", q, body={"strategy": "merge"}, expect=409)
        self.assertEqual(r.json()["conflicting_fields"], ["depth"])
        self.call(a, "POST", doc + "/resolve", q, body={"body": {"depth": 4}})
        self.call(a, "GET", doc + "/history", q, "limit=10")
        self.call(a, "POST", V + "/{pid}/batch", p, body={"writes": [
            {"collection": "obs", "id": "o2", "body": {"depth": 7}},
            {"collection": "obs", "body": {"depth": 8}, "schema": 3},
            {"collection": "obs", "id": "o1", "delete": True}]})
        self.call(a, "GET", doc, q)  # a deleted winner: body null
        self.call(a, "POST", doc + "/purge", q)
        self.call(a, "GET", doc + "/history", q)  # purged bodies: null
        self.call(a, "POST", doc + "/erase", q, body={"reason": "a wrong entry"})
        self.call(a, "POST", doc + "/erase", q, body={"why": 1}, expect=400)
        self.call(a, "GET", V + "/{pid}/erasures", p)
        self.call(a, "DELETE", doc, {"pid": pid, "coll": "obs", "id": "o2"})
        self.call(a, "GET", V + "/{pid}/collections", p)
        self.call(a, "GET", V + "/{pid}/changes", p, "since=0&limit=3")
        self.call(a, "GET", V + "/{pid}/changes", p, "include_docs=1&collection=obs")
        self.call(a, "GET", V + "/{pid}/changes", p, "feed=longpoll&since=now&timeout=0")
        r = self.call(a, "GET", "/v1/backup")
        self.assertTrue(r.body.startswith(b"FSBACKUP\x01"), r.body[:16])

        # Errors: every status declared, every body an Error.
        self.call(a, "GET", V + "/{pid}", {"pid": "nothex"}, expect=400)
        self.call(a, "GET", V + "/{pid}", {"pid": "0" * 32}, expect=404)
        self.call(a, "GET", doc, {"pid": pid, "coll": "obs", "id": "nope"}, expect=404)
        self.call(a, "POST", docs, {"pid": pid, "coll": "obs"}, "id=" + other, body={},
                  expect=409)
        self.call(a, "POST", docs, {"pid": pid, "coll": "obs"}, body="[1]", expect=400)
        self.call(a, "PUT", doc, q, "base=" + "0" * 64, body={}, expect=409)
        self.call(a, "GET", V + "/{pid}/changes", p, "since=99999", expect=400)
        self.call(a, "GET", V + "/{pid}/changes", p, "feed=carrier", expect=400)
        self.call(a, "POST", V + "/{pid}/batch", p, body={"writes": 1}, expect=400)
        self.call(a, "POST", V + "/{pid}/docs/{coll}", {"pid": pid, "coll": "obs"},
                  body={"big": "x" * (1 << 20)}, expect=413)
        self.call(a, "GET", "/v1/backup", query="x=1", expect=400)
        self.call(a, "GET", "/v1/backup", tcp=True, expect=403)  # it holds the device keys
        self.call(a, "GET", "/v1/backup", tcp=True, token=None, expect=401)
        self.call(a, "GET", "/v1/status", tcp=True)
        self.call(a, "GET", "/v1/status", tcp=True, token=None, expect=401)
        self.call(a, "POST", "/v1/tickets", body={}, tcp=True, expect=201)
        self.call(a, "POST", "/v1/tickets", body={}, query="x=1", expect=400)
        self.call(a, "POST", "/v1/tickets", body={}, tcp=True, token=None, expect=401)
        # The status page: its files, a login ticket and the session it becomes.
        for path in ("/ui", "/ui/app.js", "/ui/app.css"):
            self.call(a, "GET", path, tcp=True, token=None)
            self.call(a, "GET", path, tcp=True, token=None, headers={"Host": "evil.test"},
                      expect=403)
        login = self.call(a, "POST", "/v1/ui/login", expect=201).json()
        self.call(a, "POST", "/v1/ui/login", query="x=1", expect=400)
        self.call(a, "POST", "/v1/ui/login", tcp=True, token=None, expect=401)
        own = {"Origin": "http://127.0.0.1:%d" % a.port}
        self.call(a, "POST", "/ui/session", body={"login": login["login"]}, tcp=True, token=None,
                  headers={"Origin": "http://evil.test"}, expect=403)
        self.call(a, "POST", "/ui/session", body={"login": login["login"]}, tcp=True, token=None,
                  headers=own, expect=201)
        self.call(a, "POST", "/ui/session", body={"login": login["login"]}, tcp=True, token=None,
                  headers=own, expect=401)
        self.call(a, "POST", "/ui/session", body={"ticket": "x"}, tcp=True, token=None,
                  headers=own, expect=400)
        # Health and metrics (text/plain: its Content-Type is checked, not its body).
        self.call(a, "GET", "/v1/health")
        self.call(a, "GET", "/v1/health", tcp=True)
        self.call(a, "GET", "/v1/health", query="x=1", expect=400)
        self.call(a, "GET", "/v1/health", tcp=True, token=None, expect=401)
        r = self.call(a, "GET", "/metrics")
        self.assertIn(b"# TYPE fieldsync_api_requests_total counter\n", r.body)
        self.call(a, "GET", "/metrics", tcp=True)
        self.call(a, "GET", "/metrics", query="x=1", expect=400)
        self.call(a, "GET", "/metrics", tcp=True, token=None, expect=401)
        # Answers of no route: an unknown path, a method a path does not take.
        r = a.unix("GET", "/v1/nothing")
        self.assertEqual(r.status, 404, r)
        self.assertEqual(problems(SPEC["components"]["schemas"]["Error"], r.json(), True), [])
        r = a.unix("DELETE", "/v1/status")
        self.assertEqual(r.status, 405, r)
        self.assertEqual(problems(SPEC["components"]["schemas"]["Error"], r.json(), True), [])
        # Subscriptions: the answer echoes the (recursive) condition in its canonical form.
        sub = V + "/{pid}/subscription"
        self.call(a, "GET", sub, p)
        got = self.call(a, "PUT", sub, p, body={"collections": ["obs"], "where": {"all": [
            {"eq": {"path": "who", "value": "x"}},
            {"any": [{"range": {"path": "depth", "gte": 1, "lt": 9}},
                     {"in": {"path": "tag", "values": ["a", None]}},
                     {"bbox": {"south": -5, "west": -61, "north": -4, "east": -60}}]}]}}).json()
        self.assertFalse(got["everything"], got)
        self.call(a, "GET", sub, p)
        self.call(a, "PUT", sub, p, body={"where": {"near": {}}}, expect=400)
        self.call(a, "GET", sub, p, "x=1", expect=400)
        self.call(a, "DELETE", sub, p)
        self.call(a, "GET", sub, {"pid": "0" * 32}, expect=404)
        # Indexes: declared, listed, used by a list (its plan), dropped.
        ixs, ix = V + "/{pid}/indexes", V + "/{pid}/indexes/{name}"
        named = {"pid": p["pid"], "name": "by_who"}
        self.call(a, "PUT", ix, named, body={"collection": "obs", "fields": ["who", "at.x"]})
        self.call(a, "PUT", ix, named, body={"collection": "obs", "fields": ["other"]},
                  expect=409)
        self.call(a, "PUT", ix, named, body={"collection": "obs"}, expect=400)
        self.call(a, "GET", ixs, p)
        self.call(a, "GET", ixs, p, "x=1", expect=400)
        self.call(a, "GET", ixs, {"pid": "0" * 32}, expect=404)
        self.call(a, "DELETE", ix, named)
        self.call(a, "DELETE", ix, named, expect=404)
        # Selections: what this device gives one peer.
        sels, sel = V + "/{pid}/selections", V + "/{pid}/selections/{device}"
        other = {"pid": p["pid"], "device": "a" * 52}
        self.call(a, "GET", sels, p)
        self.call(a, "PUT", sel, other, body={"where": {"eq": {"path": "who", "value": 7}}})
        self.assertEqual(len(self.call(a, "GET", sels, p).json()["selections"]), 1)
        self.call(a, "PUT", sel, dict(other, device="nope"), body={}, expect=400)
        self.call(a, "DELETE", sel, other)
        self.call(a, "DELETE", sel, dict(other, pid="0" * 32), expect=404)
        self.call(a, "GET", sels, {"pid": "0" * 32}, expect=404)
        self.call(a, "POST", V + "/{pid}/leave", p)
        self.done()

    def test_blobs(self):
        a = self.daemon("alpha")
        pid = a.create_project("photos")
        p = {"pid": pid}
        data = distinct_bytes(300 * 1024, 7)
        up = self.call(a, "POST", V + "/{pid}/blobs", p, body=data,
                       headers={"Content-Type": "image/jpeg"}, expect=201).json()
        self.assertEqual(up["id"], hashlib.sha256(data).hexdigest())
        b = {"pid": pid, "id": up["id"]}
        blob = V + "/{pid}/blobs/{id}"
        r = self.call(a, "GET", blob, b)
        self.assertEqual(r.body, data)
        self.call(a, "GET", blob, b, headers={"Range": "bytes=0-9"}, expect=206)
        self.call(a, "GET", blob, b, headers={"If-None-Match": '"%s"' % up["id"]}, expect=304)
        self.call(a, "GET", blob, b, headers={"Range": "bytes=%d-" % len(data)}, expect=416)
        self.call(a, "GET", blob, b, "variant=poster", expect=400)
        self.call(a, "PUT", blob + "/variants/{kind}", dict(b, kind="thumbnail"),
                  body=distinct_bytes(2000, 8), headers={"Content-Type": "image/png"}, expect=201)
        self.call(a, "GET", blob, b, "variant=thumbnail")
        self.call(a, "GET", blob, b, "variant=preview", expect=404)
        self.call(a, "GET", blob, {"pid": pid, "id": "f" * 64}, expect=404)
        self.call(a, "GET", blob, {"pid": pid, "id": "F" * 64}, expect=400)
        self.call(a, "PUT", blob + "/variants/{kind}", {"pid": pid, "id": "e" * 64,
                                                        "kind": "preview"},
                  body=b"x", headers={"Content-Type": "image/png"}, expect=404)
        # A reference to a blob no device here holds: 202 while it is asked for.
        missing = {"$blob": "d" * 64, "size": 10, "type": "image/jpeg", "root": "c" * 64}
        self.call(a, "PUT", V + "/{pid}/docs/{coll}/{id}", {"pid": pid, "coll": "sites",
                                                           "id": "gate"},
                  body={"photo": up["ref"], "other": missing})

        def pending():
            r = a.unix("GET", V + "/%s/blobs/%s?wait=0" % (pid, "d" * 64))
            return r if r.status == 202 else None
        self.check("GET", blob, wait_until(pending, 10, what="a 202 for a referred blob"))
        self.call(a, "GET", V + "/{pid}/blobs", p)
        self.call(a, "GET", V + "/{pid}/blobs", p, "limit=1")
        self.call(a, "GET", V + "/{pid}/blobs", p, "after=zz", expect=400)
        self.call(a, "GET", V + "/{pid}/blob-policy", p)
        self.call(a, "PUT", V + "/{pid}/blob-policy", p,
                  body={"policy": "phone", "peers": {a.device_id: "none"}})
        self.call(a, "PUT", V + "/{pid}/blob-policy", p, body={"policy": None})
        self.call(a, "PUT", V + "/{pid}/blob-policy", p, body={"policy": "all"}, expect=400)
        self.call(a, "GET", V + "/{pid}/blob-policy", p, "x=1", expect=400)
        self.call(a, "POST", V + "/{pid}/blobs/gc", p)
        self.call(a, "POST", V + "/{pid}/blobs/gc", {"pid": "0" * 32}, expect=404)
        self.call(a, "POST", V + "/{pid}/blobs", {"pid": "0" * 32}, body=b"x", expect=404)
        self.done()

    # ------------------------------------------------------------------ two daemons

    def test_peers_members_bundles_join(self):
        a = self.daemon("alpha")
        b = self.daemon("beta")
        pid = a.create_project("survey")
        p = {"pid": pid}
        self.call(a, "POST", V + "/{pid}/docs/{coll}", {"pid": pid, "coll": "obs"}, "id=o1",
                  body={"n": 1}, expect=201)
        sec = self.call(a, "GET", V + "/{pid}/secret", p).json()
        self.call(a, "GET", V + "/{pid}/secret", p, tcp=True, expect=403)
        self.call(b, "POST", V + "/import", body=sec, expect=201)
        self.call(b, "POST", V + "/import", body=sec, expect=409)

        # A bundle carried from a to b before they ever connect.
        self.call(a, "GET", "/v1/bundles")
        r = self.call(a, "GET", V + "/{pid}/bundle", p, "blobs=variants")
        self.assertTrue(r.headers["content-disposition"].startswith("attachment"), r.headers)
        self.call(b, "POST", "/v1/bundles", body=r.body,
                  headers={"Content-Type": "application/octet-stream"})
        self.call(b, "POST", "/v1/bundles", body=r.body,
                  headers={"Content-Type": "application/octet-stream"}, expect=409)
        self.call(b, "POST", "/v1/bundles", body=b"not a bundle at all",
                  headers={"Content-Type": "application/octet-stream"}, expect=400)
        self.call(a, "GET", V + "/{pid}/bundle", p, "for=nobody", expect=400)

        # Live sync: a dials b; the peer answers carry a session with per-project progress.
        self.call(a, "GET", "/v1/peers")
        status = self.call(b, "GET", "/v1/status").json()
        self.call(a, "POST", "/v1/peers", body={"address": "127.0.0.1:%d"
                                                % status["peers"]["listen_port"],
                                                "device_id": b.device_id, "name": "beta"},
                  expect=201)
        self.call(a, "POST", "/v1/peers", body={"device_id": b.device_id,
                                                "address": "127.0.0.1:1"}, expect=409)

        def synced():
            r = a.unix("GET", V + "/%s/sync" % pid)
            return r if r.status == 200 and r.json()["in_sync"] else None
        self.check("GET", V + "/{pid}/sync", wait_until(synced, 30, what="a and b in sync"))
        peer = {"id": b.device_id}
        got = self.call(a, "GET", "/v1/peers/{id}", peer).json()
        self.assertIsNotNone(got["session"], got)
        self.call(a, "GET", "/v1/peers")
        self.call(b, "GET", "/v1/peers")
        self.call(a, "POST", "/v1/peers/{id}/sync", peer, expect=202)
        self.call(a, "POST", "/v1/peers/{id}/approve", peer)
        self.call(a, "GET", "/v1/peers/{id}", {"id": "a" * 52}, expect=404)
        self.call(a, "POST", "/v1/peers/{id}/approve", {"id": "a" * 52}, expect=404)
        self.call(a, "GET", "/v1/peers/{id}", {"id": "short"}, expect=400)
        self.call(a, "GET", "/v1/verification/{device}", {"device": b.device_id})
        self.call(a, "GET", "/v1/status")

        # Members, invites and a join of another project.
        self.call(a, "GET", V + "/{pid}/members", p)
        m = {"pid": pid, "device": b.device_id}
        self.call(a, "PUT", V + "/{pid}/members/{device}", m, body={"role": "member",
                                                                    "name": "beta"})
        self.call(a, "PUT", V + "/{pid}/members/{device}", m, body={"role": "boss"}, expect=400)
        second = a.create_project("clinic")
        inv = self.call(a, "POST", V + "/{pid}/invites", {"pid": second},
                        body={"role": "member", "expires_in_s": 600}, expect=201).json()
        self.call(a, "POST", V + "/{pid}/invites", {"pid": second}, expect=201)
        qr = self.call(a, "POST", V + "/{pid}/invites", {"pid": second}, "qr=svg", expect=201)
        self.assertTrue(qr.json()["qr_svg"].startswith("<svg"))
        self.call(a, "POST", V + "/{pid}/invites", {"pid": second}, "qr=png", expect=400)
        self.call(a, "POST", V + "/{pid}/invites", {"pid": second},
                  body={"expires_in_s": 0}, expect=400)
        self.call(b, "POST", "/v1/join", body={"code": inv["code"]})
        self.call(b, "POST", "/v1/join", body={"code": inv["code"]}, expect=409)
        self.call(b, "POST", "/v1/join", body={"code": "FS1:AAAA"}, expect=400)
        self.call(b, "POST", "/v1/join", body={"code": inv["code"]}, tcp=True, expect=403)
        self.call(a, "GET", V + "/{pid}/invites", {"pid": second})
        self.call(a, "GET", V + "/{pid}/members", {"pid": second})
        # Destinations and delivery.
        self.call(a, "GET", V + "/{pid}/delivery", p)
        self.call(a, "PUT", V + "/{pid}/destinations/{device}", m, body={"name": "office"})
        self.call(a, "PUT", V + "/{pid}/destinations/{device}", m, body={"nam": "x"},
                  expect=400)
        self.call(a, "GET", V + "/{pid}/destinations", p)
        self.call(a, "GET", V + "/{pid}/delivery", p)
        self.call(a, "POST", V + "/{pid}/cleanup", p, body={"min_age_ms": 0})
        self.call(a, "POST", V + "/{pid}/cleanup", p, body={"min_age_ms": -1}, expect=400)
        self.call(a, "DELETE", V + "/{pid}/destinations/{device}", m)
        self.call(a, "DELETE", V + "/{pid}/destinations/{device}", m, expect=404)
        self.call(b, "PUT", V + "/{pid}/destinations/{device}", m, body={}, expect=403)
        self.call(a, "DELETE", V + "/{pid}/members/{device}", m)
        self.call(a, "GET", V + "/{pid}/members", p)
        self.call(b, "PUT", V + "/{pid}/members/{device}", {"pid": second,
                                                            "device": a.device_id},
                  body={"role": "member"}, expect=403)
        self.call(a, "DELETE", "/v1/peers/{id}", peer)
        self.call(a, "DELETE", "/v1/peers/{id}", peer, expect=404)
        self.done()

    def test_sync_disabled(self):
        a = self.daemon("alpha", **{"sync.enabled": "false"})
        self.call(a, "GET", "/v1/status")
        self.call(a, "GET", "/v1/peers", expect=503)
        self.call(a, "POST", V + "/{pid}/invites", {"pid": a.create_project()}, expect=503)
        self.done()

    # ------------------------------------------------------------------ the checker itself

    def test_checker_catches_wrong_missing_and_undeclared_members(self):
        """The validation used above refuses what it must: a required member missing, a
        member of the wrong type (also deep down, through $refs and nullable), and (strict) a
        member the spec does not describe; and it accepts the API's free-form objects."""
        status = SPEC["paths"]["/v1/status"]["get"]["responses"]["200"]["content"][
            "application/json"]["schema"]
        a = self.daemon("alpha")
        good = a.unix("GET", "/v1/status").json()
        self.assertEqual(problems(status, good, strict=True), [])
        for mutate in (lambda s: s.pop("device_id"),
                       lambda s: s.update(uptime_s="42"),
                       lambda s: s["api"]["http"].update(port=None),
                       lambda s: s["peers"].pop("known"),
                       lambda s: s["identity"]["previous"].append(7)):
            bad = copy.deepcopy(good)
            mutate(bad)
            self.assertNotEqual(problems(status, bad, strict=False), [], bad)
        bad = copy.deepcopy(good)
        bad["api"]["surprise"] = 1
        self.assertEqual(problems(status, bad, strict=False), [])
        self.assertNotEqual(problems(status, bad, strict=True), [])

        document = {"$ref": "#/components/schemas/Document"}
        pid = a.create_project()
        a.unix("PUT", V + "/%s/docs/obs/o1" % pid, {"any": {"thing": [1, None]}})
        doc = a.unix("GET", V + "/%s/docs/obs/o1" % pid).json()
        self.assertEqual(problems(document, doc, strict=True), [])  # a free-form body
        for k, v in (("body", 3), ("heads", ["nothex"]), ("deleted", "no")):
            self.assertNotEqual(problems(document, dict(doc, **{k: v}), strict=False), [], k)
        self.assertEqual(problems(document, dict(doc, body=None), strict=True), [])
        peer = {"$ref": "#/components/schemas/Peer"}
        self.assertNotEqual(problems(peer, {"device_id": a.device_id}, strict=False), [])
        # A recursive schema ($ref within itself) is checked all the way down.
        state = {"$ref": "#/components/schemas/SubscriptionState"}

        def nested(eq):
            return {"everything": False, "subscription": {"where": {"all": [{"any": [
                {"all": [{"eq": eq}]}]}]}}}
        self.assertEqual(problems(state, nested({"path": "a", "value": 1}), strict=True), [])
        self.assertNotEqual(problems(state, nested({"path": 5, "value": 1}), strict=False), [])
        self.assertNotEqual(problems(state, nested({"path": "a"}), strict=False), [])

    # ------------------------------------------------------------------ completeness

    def test_zz_every_operation_exercised(self):
        """Runs last (unittest sorts the names): the tests above answered every operation the
        spec describes (so each is served by a route, too; that every route of ipc/ is in the
        spec is checked by tests/ipc/api_service_test.cpp)."""
        declared = {(m.upper(), path) for path, item in SPEC["paths"].items()
                    for m in item if m in METHODS}
        if type(self).completed >= self.ROUTE_TESTS:  # not when only some tests were run
            self.assertEqual(sorted(declared - type(self).exercised), [],
                             "operations of docs/openapi.yaml no test answered")


if __name__ == "__main__":
    unittest.main()
