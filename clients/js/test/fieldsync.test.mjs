// The JavaScript client against real fieldsyncd processes (node --test).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, writeFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { FieldSync, FieldSyncError, PreconditionFailedError } from "../fieldsync.mjs";
import { Daemon, waitUntil } from "./daemon.mjs";

const SURVEY = new URL("../examples/survey.mjs", import.meta.url).pathname;

/** Expects `promise` to reject with a FieldSyncError of `status` and `code`; returns it. */
async function rejects(promise, status, code, cls = FieldSyncError) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e?.stack ?? e}`);
    assert.equal(e.status, status, e.message);
    if (code) assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected ${cls.name} ${status} ${code ?? ""}, it succeeded`);
}

/** The next change of an async iterator of changes, bounded by a deadline. */
async function next(iter, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 15000);
  });
  try {
    const r = await Promise.race([iter.next(), deadline]);
    assert.equal(r.done, false, `the stream ended before ${what}`);
    return r.value;
  } finally {
    clearTimeout(timer);
  }
}

describe("one daemon", () => {
  // http and unix go through node:http; viaFetch through fetch, as in a browser.
  let d, http, unix, viaFetch, p;

  before(async () => {
    d = await new Daemon("alpha", { "blob.max_blob_bytes": 1 << 20, "storage.max_indexes": 3 }).start();
    http = new FieldSync({ url: d.url, token: d.token, timeoutMs: 10000 });
    unix = new FieldSync({ socketPath: d.socketPath, timeoutMs: 10000 });
    viaFetch = new FieldSync({ url: d.url, token: d.token, timeoutMs: 10000, fetch });
    p = http.project((await http.createProject("survey", { unit: "m" })).id);
  });
  after(async () => d?.stop());

  test("status over HTTP, the Unix socket and fromDataDir; a wrong token is 401", async () => {
    const viaHttp = await http.status();
    assert.equal(viaHttp.device_id, d.deviceId);
    assert.equal((await unix.status()).device_id, d.deviceId);
    assert.equal((await viaFetch.status()).device_id, d.deviceId);
    assert.equal((await (await FieldSync.fromDataDir(d.dataDir)).health()).status, "ok");
    for (const f of [undefined, fetch]) {
      await rejects(new FieldSync({ url: d.url, token: "0".repeat(64), fetch: f }).status(), 401, "unauthenticated");
      await rejects(new FieldSync({ url: "http://127.0.0.1:1", token: d.token, fetch: f }).status(), 0, "unavailable");
    }
    const gone = new FieldSync({ socketPath: `${d.workdir}/nothing.sock` });
    await rejects(gone.status(), 0, "unavailable");
  });

  test("projects: create, list, info, collections", async () => {
    const created = await unix.createProject("second");
    assert.match(created.id, /^[0-9a-f]{32}$/);
    const names = (await http.projects()).map((x) => x.name).sort();
    assert.deepEqual(names, ["second", "survey"]);
    assert.deepEqual((await p.info()).settings, { unit: "m" });
    await rejects(http.project("0".repeat(32)).info(), 404, "not_found");
  });

  test("documents: create, get, put with If-Match, create only, remove, odd ids", async () => {
    const id = "site:7@north~a+b.c";
    const w = await p.create("obs", { species: "heron", n: 1 }, { id });
    assert.equal(w.id, id);
    await rejects(p.create("obs", { species: "x" }, { id }), 409, "already_exists");
    const got = await p.get("obs", id);
    assert.equal(got.version, w.version);
    assert.deepEqual(got.body, { species: "heron", n: 1 });

    const w2 = await p.put("obs", id, { species: "heron", n: 2 }, { ifMatch: w.version });
    const stale = await rejects(p.put("obs", id, { n: 3 }, { ifMatch: w.version }), 412, "aborted", PreconditionFailedError);
    assert.match(stale.body.message, /is at version/);
    assert.deepEqual((await p.get("obs", id)).body, { species: "heron", n: 2 });
    await rejects(p.put("obs", id, { n: 4 }, { ifNoneMatch: "*" }), 412, "aborted", PreconditionFailedError);
    await p.put("obs", "fresh", { n: 0 }, { ifNoneMatch: "*" });
    await rejects(p.put("obs", "never", { n: 0 }, { ifMatch: "*" }), 412, "aborted", PreconditionFailedError);

    await rejects(p.remove("obs", id, { ifMatch: w.version }), 412, "aborted", PreconditionFailedError);
    const del = await p.remove("obs", id, { ifMatch: w2.version });
    assert.equal((await p.get("obs", id)).deleted, true);
    const history = await p.history("obs", id);
    assert.deepEqual(history.map((v) => v.version), [del.version, w2.version, w.version]);
    await rejects(p.get("obs", "no-such-doc"), 404, "not_found");
    await rejects(p.create("obs", { n: 1 }, { id: "bad/id" }), 400, "invalid_argument");
  });

  test("list with where and pages; all() walks every page", async () => {
    for (let i = 0; i < 7; i++) await p.create("birds", { kind: i % 2 ? "owl" : "heron", i }, { id: `b${i}` });
    const owls = await p.list("birds", { where: { kind: "owl" } });
    assert.deepEqual(owls.docs.map((x) => x.body.i), [1, 3, 5]);
    assert.equal(owls.next, null);
    const one = await p.list("birds", { where: { kind: "heron", i: 4 } });
    assert.deepEqual(one.docs.map((x) => x.id), ["b4"]);
    const page = await p.list("birds", { limit: 3 });
    assert.equal(page.docs.length, 3);
    assert.ok(page.next);
    const ids = [];
    for await (const doc of p.all("birds", { limit: 2 })) ids.push(doc.id);
    assert.deepEqual(ids, ["b0", "b1", "b2", "b3", "b4", "b5", "b6"]);
    assert.ok((await p.collections()).includes("birds"));
  });

  test("batch: all writes in order; a failed ifMatch writes nothing", async () => {
    const [a, b] = await p.batch([
      { collection: "plots", id: "p1", body: { area: 10 } },
      { collection: "plots", body: { area: 20 } },
    ]);
    assert.equal(a.id, "p1");
    assert.match(b.id, /^[0-9a-f]{32}$/);
    await rejects(p.batch([
      { collection: "plots", id: "p2", body: { area: 30 } },
      { collection: "plots", id: "p1", body: { area: 11 }, ifMatch: "f".repeat(64) },
    ]), 412, "aborted", PreconditionFailedError);
    await rejects(p.get("plots", "p2"), 404, "not_found");
    const [c] = await p.batch([{ collection: "plots", id: "p1", body: { area: 12 }, ifMatch: a.version }]);
    assert.deepEqual((await p.get("plots", "p1")).body, { area: 12 });
    assert.deepEqual(c.heads, [c.version]);
  });

  test("conflicts: a stale base keeps both; resolve by merge, by body", async () => {
    const w = await p.create("wells", { depth: 5, note: "" }, { id: "w1" });
    await p.put("wells", "w1", { depth: 6, note: "" }, { base: w.version });
    const c = await p.put("wells", "w1", { depth: 5, note: "dry" }, { base: w.version });
    assert.equal(c.conflict, true);
    const listed = await p.conflicts();
    assert.deepEqual(listed.docs.map((x) => x.id), ["w1"]);
    const doc = await p.get("wells", "w1");
    assert.equal(doc.heads.length, 2);
    assert.equal(doc.merge.clean, true);
    const merged = await p.resolve("wells", "w1", { strategy: "merge" });
    assert.deepEqual(merged.heads, [merged.version]);
    assert.deepEqual((await p.get("wells", "w1")).body, { depth: 6, note: "dry" });

    const v = await p.create("wells", { depth: 1 }, { id: "w2" });
    await p.put("wells", "w2", { depth: 2 }, { base: v.version });
    await p.put("wells", "w2", { depth: 3 }, { base: v.version });
    const failed = await rejects(p.resolve("wells", "w2", { strategy: "merge" }), 409, "failed_precondition");
    assert.deepEqual(failed.body.conflicting_fields, ["depth"]);
    await p.resolve("wells", "w2", { body: { depth: 4 } });
    assert.deepEqual((await p.get("wells", "w2")).heads.length, 1);
    assert.deepEqual((await p.conflicts()).docs, []);
  });

  test("changes: a page, a long-poll woken by a write, SSE over the socket and HTTP", async () => {
    const start = (await p.changes({ since: "now" })).last_seq;
    const page = await p.changes({ since: 0, limit: 2 });
    assert.equal(page.changes.length, 2);
    assert.equal(page.last_seq, page.changes[1].seq);

    const empty = await p.waitForChanges({ since: start, timeoutMs: 50 });
    assert.deepEqual(empty, { changes: [], last_seq: start });
    const waiting = p.waitForChanges({ since: start, timeoutMs: 20000 });
    await p.create("feed", { n: 1 }, { id: "f1" });
    const woke = await waiting;
    assert.deepEqual(woke.changes.map((c) => [c.collection, c.id, c.local]), [["feed", "f1", true]]);

    for (const client of [unix, http, viaFetch]) {
      const before = (await p.changes({ since: "now" })).last_seq;
      const ctrl = new AbortController();
      const stream = client.project(p.id).follow({ since: before - 1, signal: ctrl.signal });
      const first = await next(stream, "the change already written");
      assert.deepEqual([first.seq, first.id], [before, "f1"]);
      const w = await p.put("feed", "f1", { n: 2 });
      const second = await next(stream, "the change written while streaming");
      assert.equal(second.version, w.version);
      ctrl.abort();
      await assert.rejects(stream.next());
    }
    // Leaving the loop closes the stream as well.
    for await (const c of p.follow({ since: start })) {
      assert.equal(c.id, "f1");
      break;
    }
    await rejects(p.changes({ since: 1e9 }), 400, "invalid_argument");

    // Leaving a project ends its stream with event: error (not_found).
    const gone = unix.project((await unix.createProject("short-lived")).id);
    await gone.create("obs", {}, { id: "x" });
    const stream = gone.follow({ since: 0 });
    assert.equal((await next(stream, "the short-lived project's change")).id, "x");
    await unix.call("POST", `${gone.base}/leave`);
    await rejects(stream.next(), 404, "not_found");
  });

  test("browser stream ticket: the URL works without the token, once", async () => {
    const since = (await p.changes({ since: "now" })).last_seq;
    await p.create("feed", { n: 1 }, { id: "ticketed" });
    const url = await p.eventSourceUrl({ since });
    assert.doesNotMatch(url, new RegExp(d.token));
    assert.match(url, /[?&]ticket=[0-9a-f]{64}(&|$)/);
    const ctrl = new AbortController();
    const res = await fetch(url, { signal: ctrl.signal });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type"), /text\/event-stream/);
    const reader = res.body.getReader();
    let text = "";
    while (!text.includes("event: change")) text += new TextDecoder().decode((await reader.read()).value);
    assert.match(text, /event: change\ndata: \{[^\n]*"id":"ticketed"/);
    ctrl.abort();
    const again = await fetch(url);
    assert.equal(again.status, 401);
    await again.body.cancel();
    await assert.rejects(unix.project(p.id).eventSourceUrl(), TypeError);
  });

  test("blobs: upload bytes and a stream, download whole, a range and in chunks", async () => {
    const data = new Uint8Array(300 * 1024).map((_, i) => (i * 7) % 251);
    const up = await p.putBlob(data, { type: "application/x-test" });
    assert.equal(up.id, createHash("sha256").update(data).digest("hex"));
    assert.equal(up.ref.$blob, up.id);
    await p.create("photos", { photo: up.ref }, { id: "ph1" });

    const down = await unix.project(p.id).getBlob(up.id);
    assert.equal(down.status, 200);
    assert.equal(down.size, data.length);
    assert.equal(down.type, "application/x-test");
    assert.deepEqual(await down.bytes(), data);

    assert.deepEqual(await (await viaFetch.project(p.id).getBlob(up.id)).bytes(), data);
    const part = await p.getBlob(up.id, { range: [10, 19] });
    assert.equal(part.status, 206);
    assert.equal(part.contentRange, `bytes 10-19/${data.length}`);
    assert.deepEqual(await part.bytes(), data.slice(10, 20));

    async function* pieces() {
      for (let i = 0; i < 4; i++) yield new TextEncoder().encode(`piece ${i};`);
    }
    for (const client of [http, unix, viaFetch]) {
      const streamed = await client.project(p.id).putBlob(pieces(), { type: "text/plain" });
      assert.equal(streamed.size, "piece 0;piece 1;piece 2;piece 3;".length);
      const chunks = [];
      for await (const c of (await p.getBlob(streamed.id)).chunks()) chunks.push(c);
      assert.equal(Buffer.concat(chunks).toString(), "piece 0;piece 1;piece 2;piece 3;");
    }
    const listed = await p.blobs();
    assert.ok(listed.blobs.some((b) => b.id === up.id && b.held));
    await rejects(p.getBlob("0".repeat(64)), 404, "not_found");
    // A refusal the daemon answers before the body is sent whole is the error thrown. Over the
    // 1 MiB limit by less than what the daemon reads and discards after refusing (1 MiB), so
    // the body is sent whole and the answer read: a larger one may meet a reset first.
    const size = (1 << 20) + (512 << 10);
    const big = `${d.workdir}/big.bin`;
    writeFileSync(big, new Uint8Array(size));
    for (const client of [http, unix]) {
      await rejects(client.project(p.id).putBlob(new Uint8Array(size)), 413, "too_large");
      await rejects(client.project(p.id).putBlob(createReadStream(big)), 413, "too_large");
    }
  });

  test("a request that outlives timeoutMs, and a silent stream, fail with code timeout", async () => {
    const since = (await p.changes({ since: "now" })).last_seq;
    for (const f of [undefined, fetch]) {
      const impatient = new FieldSync({ url: d.url, token: d.token, timeoutMs: 200, fetch: f });
      const query = { since, feed: "longpoll", timeout: 5000 };
      await rejects(impatient.call("GET", `/v1/projects/${p.id}/changes`, { query }), 0, "timeout");
    }
    // Nothing is written meanwhile and the heartbeat comes every 15 s.
    await rejects(unix.project(p.id).follow({ since, idleTimeoutMs: 200 }).next(), 0, "timeout");
  });

  test("queries: a selector on nested paths, a sort paged with cursors, getMany with a missing id", async () => {
    const wells = {
      q1: { water: { ph: 6.1 }, site: { district: 7 }, visited_at: "2026-03-02" },
      q2: { water: { ph: 7.4 }, site: { district: 7 }, visited_at: "2026-01-15" },
      q3: { water: { ph: 8.0 }, site: { district: 3 }, visited_at: "2026-02-20" },
      q4: { water: { ph: 6.6 }, site: { district: 7 }, visited_at: "2026-04-01" },
      q5: { site: { district: 7 }, visited_at: "2026-01-01" },
    };
    const written = await p.batch(Object.entries(wells).map(([id, body]) => ({ collection: "qwells", id, body })));
    const ids = (page) => page.docs.map((x) => x.id);
    assert.deepEqual(ids(await p.list("qwells", { selector: { range: { path: "water.ph", gt: 6.5 } } })), ["q2", "q3", "q4"]);
    const district7 = { eq: { path: "site.district", value: 7 } };
    const both = { all: [{ range: { path: "water.ph", gte: 6.1, lt: 8 } }, district7] };
    assert.deepEqual(ids(await p.list("qwells", { selector: both })), ["q1", "q2", "q4"]);
    assert.deepEqual(ids(await p.list("qwells", { selector: both, where: { visited_at: "2026-04-01" } })), ["q4"]);
    await rejects(p.list("qwells", { selector: { near: { path: "gps" } } }), 400, "invalid_argument");
    await assert.rejects(p.list("qwells", { sort: "" }), TypeError);

    // Sorted by a path, descending, two a page: the cursor keeps its place across a write.
    const first = await p.list("qwells", { sort: "-visited_at", limit: 2 });
    assert.deepEqual(ids(first), ["q4", "q1"]);
    await p.create("qwells", { water: { ph: 7 }, site: { district: 7 }, visited_at: "2026-02-01" }, { id: "q6" });
    const rest = [];
    for (let after = first.next; after;) {
      const page = await p.list("qwells", { sort: "-visited_at", limit: 2, after });
      rest.push(...ids(page));
      after = page.next;
    }
    assert.deepEqual(rest, ["q3", "q6", "q2", "q5"]);
    // all() follows the cursors of a sorted, filtered query (a missing value sorts first).
    const ascending = [];
    for await (const doc of p.all("qwells", { selector: district7, sort: "water.ph", limit: 2 })) ascending.push(doc.id);
    assert.deepEqual(ascending, ["q5", "q1", "q4", "q6", "q2"]);

    const many = await p.getMany("qwells", ["q4", "nope", "q1"]);
    assert.deepEqual(many.map((x) => x.id), ["q4", "nope", "q1"]);
    assert.equal(many[0].body.water.ph, 6.6);
    assert.equal(many[0].version, written[3].version);
    assert.deepEqual(many[1], { collection: "qwells", id: "nope", error: "not_found" });
    assert.deepEqual(await p.getMany("qwells", []), []);
    await assert.rejects(p.getMany("qwells", "q1"), TypeError);

    // conflicts() takes a selector and a sort as well.
    for (const i of [2, 3]) {
      const { id, version } = written[i];
      for (const note of ["a", "b"]) await p.put("qwells", id, { ...wells[id], note }, { base: version });
    }
    assert.deepEqual(ids(await p.conflicts({ selector: { eq: { path: "site.district", value: 3 } } })), ["q3"]);
    assert.deepEqual(ids(await p.conflicts({ selector: { range: { path: "water.ph", gt: 6 } }, sort: "water.ph" })), ["q4", "q3"]);
  });

  test("indexes: declare, wait until ready, query with a selector and a sort across pages, drop", async () => {
    // Written before the index is declared: they are indexed in the background.
    const regions = ["north", "south", "east"];
    const writes = [];
    for (let i = 0; i < 60; i++)
      writes.push({ collection: "samples", id: `s${String(i).padStart(2, "0")}`,
                    body: { site: { region: regions[i % 3] }, water: { ph: 5 + ((i * 37) % 41) / 10 } } });
    await p.batch(writes);
    const fields = ["site.region", "water.ph"];
    const declared = await p.createIndex("by_region_ph", "samples", fields);
    assert.deepEqual([declared.name, declared.collection, declared.fields], ["by_region_ph", "samples", fields]);
    assert.equal(typeof declared.ready, "boolean");
    const again = await p.createIndex("by_region_ph", "samples", fields);
    assert.deepEqual([again.name, again.fields], ["by_region_ph", fields]);
    await rejects(p.createIndex("by_region_ph", "samples", ["water.ph"]), 409, "already_exists");
    await rejects(p.createIndex("no_fields", "samples", []), 400, "invalid_argument");
    await rejects(p.createIndex("bad name!", "samples", ["x"]), 400, "invalid_argument");
    await assert.rejects(async () => p.createIndex("one", "samples", "water.ph"), TypeError);

    const ready = await p.waitForIndex("by_region_ph", { timeoutMs: 30000 });
    assert.deepEqual([ready.ready, ready.entries], [true, 60]);
    const listed = await p.listIndexes();
    assert.deepEqual(listed.map((i) => [i.name, i.collection, i.fields, i.ready]), [["by_region_ph", "samples", fields, true]]);
    await rejects(p.waitForIndex("no_such_index"), 404, "not_found");

    // North's samples by pH, 4 a page, straight from the index; the same as sorting them here.
    const north = { eq: { path: "site.region", value: "north" } };
    const expected = writes.filter((w) => w.body.site.region === "north")
      .sort((a, b) => a.body.water.ph - b.body.water.ph || (a.id < b.id ? -1 : 1)).map((w) => w.id);
    const query = { selector: north, sort: "water.ph", limit: 4 };
    const seen = [];
    let pages = 0;
    for await (const page of p.pages("samples", query)) {
      pages++;
      assert.equal(page.plan.index, "by_region_ph");
      assert.ok(page.plan.examined <= 5, `a page read ${page.plan.examined} documents`);
      seen.push(...page.docs.map((x) => x.id));
    }
    assert.deepEqual(seen, expected);
    assert.equal(pages, Math.ceil(expected.length / 4));
    // A range on the second field, descending, through list() and its cursor.
    const acid = { all: [north, { range: { path: "water.ph", lt: 6.5 } }] };
    const first = await p.list("samples", { selector: acid, sort: "-water.ph", limit: 2 });
    assert.equal(first.plan.index, "by_region_ph");
    const rest = await p.list("samples", { selector: acid, sort: "-water.ph", limit: 100, after: first.next });
    const acidIds = [...first.docs, ...rest.docs].map((x) => x.id);
    assert.deepEqual(acidIds, expected.filter((id) => writes.find((w) => w.id === id).body.water.ph < 6.5).reverse());
    // A write is in the index at once: the next query sees it.
    await p.create("samples", { site: { region: "north" }, water: { ph: 0.5 } }, { id: "s-first" });
    assert.equal((await p.list("samples", query)).docs[0].id, "s-first");

    // The limit of storage.max_indexes (3 here).
    await p.createIndex("by_ph", "samples", ["water.ph"]);
    await p.createIndex("by_region", "samples", ["site.region"]);
    await rejects(p.createIndex("one_too_many", "samples", ["n"]), 409, "failed_precondition");
    for (const name of ["by_ph", "by_region"]) assert.deepEqual(await p.dropIndex(name), { name, dropped: true });

    assert.deepEqual(await p.dropIndex("by_region_ph"), { name: "by_region_ph", dropped: true });
    await rejects(p.dropIndex("by_region_ph"), 404, "not_found");
    assert.deepEqual(await p.listIndexes(), []);
    // Without the index the same query reads the collection and answers the same.
    const scanned = [];
    for await (const page of p.pages("samples", query)) {
      assert.equal(page.plan.index, null);
      scanned.push(...page.docs.map((x) => x.id));
    }
    assert.deepEqual(scanned, ["s-first", ...expected]);
  });

  test("changes with includeDocs and a collection filter: a page, a long-poll, the live stream", async () => {
    const since = (await p.changes({ since: "now" })).last_seq;
    await p.create("tally", { n: 1 }, { id: "t1" });
    await p.create("noise", { n: 0 }, { id: "x1" });
    await p.put("tally", "t1", { n: 2 });
    const page = await p.changes({ since, includeDocs: true, collections: ["tally"] });
    assert.deepEqual(page.changes.map((c) => c.id), ["t1", "t1"]);
    // Each change carries the document as it is now.
    assert.deepEqual(page.changes.map((c) => c.doc.body), [{ n: 2 }, { n: 2 }]);
    assert.equal(page.changes[1].doc.version, page.changes[1].version);
    assert.equal(page.last_seq, (await p.changes({ since: "now" })).last_seq);
    const plain = await p.changes({ since, collections: ["tally", "noise"] });
    assert.deepEqual(plain.changes.map((c) => c.id), ["t1", "x1", "t1"]);
    assert.equal("doc" in plain.changes[0], false);
    await assert.rejects(p.changes({ collections: [] }), TypeError);

    // A filtered long-poll waits past another collection's change.
    const waiting = p.waitForChanges({ since: page.last_seq, includeDocs: true, collections: ["tally"], timeoutMs: 20000 });
    await p.create("noise", { n: 1 }, { id: "x2" });
    await p.remove("tally", "t1");
    const woke = await waiting;
    assert.deepEqual(woke.changes.map((c) => [c.id, c.deleted, c.doc.deleted]), [["t1", true, true]]);

    for (const [i, client] of [unix, viaFetch].entries()) {
      const ctrl = new AbortController();
      const stream = client.project(p.id).follow({ since, includeDocs: true, collections: ["tally"], signal: ctrl.signal });
      const backlog = [];
      for (let k = 0; k < 3 + i; k++) backlog.push(await next(stream, "the tally changes already written"));
      assert.deepEqual(backlog.map((c) => [c.id, c.deleted, c.doc.deleted]),
                       [["t1", false, true], ["t1", false, true], ["t1", true, true], ["t2-0", false, false]].slice(0, 3 + i));
      await p.create("noise", { n: 2 }, { id: `x-${i}` });
      const w = await p.put("tally", `t2-${i}`, { n: i });
      const live = await next(stream, "the tally change written while streaming");
      assert.deepEqual([live.id, live.version, live.doc.body], [`t2-${i}`, w.version, { n: i }]);
      ctrl.abort();
      await assert.rejects(stream.next());
    }

    // The browser's URL carries the filters.
    const t3 = (await p.changes({ since: "now" })).last_seq;
    await p.create("noise", { n: 3 }, { id: "x3" });
    await p.create("tally", { n: 5 }, { id: "t3" });
    const url = await p.eventSourceUrl({ since: t3, includeDocs: true, collections: ["tally"] });
    assert.match(url, /[?&]include_docs=1&collection=tally&/);
    const ctrl = new AbortController();
    const res = await fetch(url, { signal: ctrl.signal });
    assert.equal(res.status, 200);
    const reader = res.body.getReader();
    let text = "";
    while (!text.includes("event: change")) text += new TextDecoder().decode((await reader.read()).value);
    assert.match(text, /event: change\ndata: \{[^\n]*"id":"t3"[^\n]*"doc":\{/);
    ctrl.abort();
  });

  test("the survey example: new, add, count, list, follow", async () => {
    const survey = async (...args) => {
      const { stdout } = await promisify(execFile)(process.execPath, [SURVEY, "--socket", d.socketPath, ...args], { timeout: 30000 });
      return stdout;
    };
    const pid = (await survey("new", "wetlands")).trim();
    const follower = spawn(process.execPath, [SURVEY, "--data-dir", d.dataDir, "follow", pid, "0"], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      const lines = createInterface({ input: follower.stdout })[Symbol.asyncIterator]();
      const heron = (await survey("add", pid, "heron", "3", "by the reeds")).trim();
      await survey("add", pid, "kite", "1");
      await survey("count", pid, heron, "4");
      assert.equal(await survey("list", pid, "heron"), `${heron}  heron  4  by the reeds\n`);
      const species = async (sort) => (await survey("list", pid, `--sort=${sort}`)).trim().split("\n").map((l) => l.split("  ")[1]);
      assert.deepEqual(await species("-count"), ["heron", "kite"]);
      assert.deepEqual(await species("count"), ["kite", "heron"]);
      const seen = [];
      for (let i = 0; i < 3; i++) seen.push((await next(lines, "survey.mjs follow")).split(/\s+/));
      assert.deepEqual(seen.map((x) => [x[1], x[2], x.at(-1)]),
                       [[heron, "heron", "(here)"], [seen[1][1], "kite", "(here)"], [heron, "heron", "(here)"]]);
      assert.equal(seen[2][3], "4");
      const file = `${d.workdir}/photo.jpg`;
      writeFileSync(file, "not really a JPEG ".repeat(5000));
      const [blobId] = (await survey("photo", pid, heron, file)).split(" ");
      assert.equal((await http.project(pid).get("observations", heron)).body.photo.$blob, blobId);
      assert.equal((await (await http.project(pid).getBlob(blobId)).bytes()).length, 90000);
    } finally {
      follower.kill();
    }
  });
});

describe("two daemons", () => {
  let a, b;
  before(async () => {
    [a, b] = await Promise.all([new Daemon("alpha").start(), new Daemon("bravo").start()]);
  });
  after(async () => Promise.all([a?.stop(), b?.stop()]));

  test("a write on one daemon arrives in the other's SSE stream; peers and sync state", async () => {
    const ca = new FieldSync({ url: a.url, token: a.token });
    const cb = new FieldSync({ socketPath: b.socketPath });
    const pid = (await ca.createProject("shared")).id;
    const secret = await new FieldSync({ socketPath: a.socketPath }).call("GET", `/v1/projects/${pid}/secret`);
    await cb.call("POST", "/v1/projects/import", { json: secret });

    const peer = await ca.addPeer({ deviceId: b.deviceId, address: `127.0.0.1:${b.syncPort}`, name: "bravo" });
    assert.equal(peer.device_id, b.deviceId);
    await rejects(ca.addPeer({ deviceId: b.deviceId, address: `127.0.0.1:${b.syncPort}` }), 409);

    const pb = cb.project(pid);
    const stream = pb.follow({ since: (await pb.changes({ since: "now" })).last_seq });
    const w = await ca.project(pid).create("obs", { species: "kite" }, { id: "from-a" });
    let change;
    do change = await next(stream, "alpha's write on bravo's stream");
    while (change.collection !== "obs");
    assert.deepEqual([change.id, change.version, change.author, change.local], ["from-a", w.version, a.deviceId, false]);
    await stream.return();
    assert.deepEqual((await pb.get("obs", "from-a")).body, { species: "kite" });

    const inSync = await waitUntil(async () => {
      const s = await ca.project(pid).syncStatus();
      return s.in_sync && s.peers.length === 1 ? s : null;
    }, { what: "alpha to be in sync with bravo" });
    assert.equal(inSync.peers[0].device_id, b.deviceId);
    assert.ok((await ca.peers()).some((x) => x.device_id === b.deviceId && x.configured));
    assert.equal((await ca.peer(b.deviceId)).name, "bravo");
    assert.equal((await ca.removePeer(b.deviceId)).removed, b.deviceId);
  });
});
