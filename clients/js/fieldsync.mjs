// fieldsync client for JavaScript: Node (>= 18) and browsers, no dependencies, no build step.
// It speaks fieldsyncd's local API (docs/api.md): HTTP with the bearer token, or (Node only)
// the Unix socket. Types: fieldsync.d.ts. Usage: README.md.

/** Where an error code of the API maps to (docs/api.md "Errors"); for `event: error` of SSE. */
const STATUS_OF_CODE = {
  invalid_argument: 400, unauthenticated: 401, permission_denied: 403, not_found: 404,
  unsupported: 405, already_exists: 409, failed_precondition: 409, aborted: 412,
  too_large: 413, verification_failed: 422, resource_exhausted: 503, unavailable: 503,
  data_loss: 500, internal: 500,
};

/** Every failure: `status` (HTTP, 0 when no answer came), `code` and `body` (the API's error JSON). */
export class FieldSyncError extends Error {
  constructor(status, body, message) {
    const b = body && typeof body === "object" ? body : { error: "unknown", message: String(body ?? "") };
    super(message ?? `${b.error}: ${b.message} (HTTP ${status})`);
    this.name = "FieldSyncError";
    this.status = status;
    this.code = b.error;
    this.body = b;
  }
}

/** A conditional write (If-Match / If-None-Match / batch if_match) that did not hold: 412. */
export class PreconditionFailedError extends FieldSyncError {
  constructor(status, body) {
    super(status, body);
    this.name = "PreconditionFailedError";
  }
}

function errorFor(status, body) {
  return status === 412 ? new PreconditionFailedError(status, body) : new FieldSyncError(status, body);
}

const seg = (s) => {
  if (typeof s !== "string" || s === "") throw new TypeError(`expected a non-empty string id, got ${s}`);
  return encodeURIComponent(s);
};

function queryString(query) {
  const parts = [];
  for (const [k, v] of Object.entries(query ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    for (const one of Array.isArray(v) ? v : [v])
      parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(one === true ? "1" : String(one))}`);
  }
  return parts.length ? "?" + parts.join("&") : "";
}

/** `{field: value}` as the list's `where=FIELD=JSON` parameters (all must match). */
function whereParams(where) {
  return Object.entries(where ?? {}).map(([field, value]) => `${field}=${JSON.stringify(value)}`);
}

/** The query of a list or of conflicts: where, selector (as JSON), sort, paging. */
function listParams({ where, selector, sort, limit, after, includeDeleted }) {
  if (sort !== undefined && (typeof sort !== "string" || sort === "" || sort === "-"))
    throw new TypeError(`sort must be a dot path, or "-" and one for descending, not ${JSON.stringify(sort)}`);
  return {
    where: whereParams(where), selector: selector === undefined ? undefined : JSON.stringify(selector),
    sort, limit, after, include_deleted: includeDeleted,
  };
}

/** The changes feed's filters: `include_docs=1`, and `collection=NAME` for each one named. */
function feedParams({ includeDocs, collections }) {
  if (collections !== undefined) {
    if (typeof collections === "string") collections = [collections];
    if (!Array.isArray(collections) || collections.length === 0 || !collections.every((c) => typeof c === "string" && c))
      throw new TypeError("collections must be a non-empty array of collection names (leave it out for all)");
  }
  return { include_docs: Boolean(includeDocs), collection: collections };
}

const isStreamBody = (b) =>
  b != null && typeof b === "object" && !(b instanceof Uint8Array) && !(b instanceof ArrayBuffer) &&
  !(typeof Blob !== "undefined" && b instanceof Blob) &&
  (typeof b[Symbol.asyncIterator] === "function" || typeof b.getReader === "function");

async function* readerChunks(stream) {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.releaseLock?.();
    stream.cancel?.().catch(() => {});
  }
}

/** An answer whose body has not been read yet: `chunks()` streams it, `bytes()`/`json()` read it. */
class RawResponse {
  constructor(status, getHeader, chunks, arm, done) {
    this.status = status;
    this.header = getHeader; // (lower-case name) => string | null
    this._chunks = chunks;
    this._arm = arm; // (ms) sets the request's timer (0: none)
    this._done = done; // clears the timer; aborts the request unless the body was read whole
    this._idleMs = 0;
  }
  /** From now on, fail the read when the daemon sends nothing for `ms` (for streams). */
  idle(ms) {
    this._idleMs = ms;
  }
  async *chunks() {
    try {
      for (;;) {
        if (this._idleMs) this._arm(this._idleMs); // only while waiting for the daemon
        const { done, value } = await this._chunks.next();
        if (this._idleMs) this._arm(0);
        if (done) return;
        yield value;
      }
    } finally {
      this._done();
    }
  }
  async bytes() {
    const parts = [];
    let n = 0;
    for await (const c of this.chunks()) {
      parts.push(c);
      n += c.length;
    }
    const out = new Uint8Array(n);
    let at = 0;
    for (const c of parts) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
  async text() {
    return new TextDecoder().decode(await this.bytes());
  }
  async json() {
    const t = await this.text();
    return t ? JSON.parse(t) : null;
  }
  close() {
    this._done();
  }
}

/** A blob download: `status` 200 / 206, or 202 while it is fetched from a peer (`fetching`). */
class BlobDownload {
  constructor(raw, fetching) {
    this.status = raw.status;
    this.fetching = fetching ?? null;
    this.type = raw.header("content-type");
    const len = raw.header("content-length");
    this.size = len == null ? null : Number(len);
    this.etag = raw.header("etag");
    this.contentRange = raw.header("content-range");
    this._raw = raw;
  }
  /** The bytes as they arrive; throws when the body ends before its Content-Length. */
  async *chunks() {
    if (this.fetching) throw new FieldSyncError(202, { error: "fetching", ...this.fetching });
    let n = 0;
    for await (const c of this._raw.chunks()) {
      n += c.length;
      yield c;
    }
    if (this.size != null && n !== this.size)
      throw new FieldSyncError(this.status, {
        error: "data_loss", message: `blob body ended after ${n} of ${this.size} bytes`,
      });
  }
  async bytes() {
    const parts = [];
    for await (const c of this.chunks()) parts.push(c);
    return new Uint8Array(await new Blob(parts).arrayBuffer());
  }
  close() {
    this._raw.close();
  }
}

/**
 * A connection to one fieldsyncd.
 *   new FieldSync({url: "http://127.0.0.1:7890", token})   HTTP (Node and browsers)
 *   new FieldSync({socketPath: "/run/fieldsync/api.sock"}) Unix socket (Node only; no token)
 *   await FieldSync.fromDataDir("/var/lib/fieldsync")      Node: HTTP with api.port and api.token
 */
export class FieldSync {
  constructor({ url, token, socketPath, timeoutMs = 30000, fetch: fetchImpl } = {}) {
    if (!url && !socketPath) throw new TypeError("FieldSync needs {url, token} or {socketPath}");
    this.url = url ? url.replace(/\/+$/, "") : null;
    this.socketPath = url ? null : socketPath;
    this.token = token ?? null;
    this.timeoutMs = timeoutMs;
    // Node speaks HTTP through node:http, which can wait for the daemon's "100 Continue"
    // before a blob's bytes (fetch cannot: a refusal such as 413 could be lost); browsers, and
    // anyone who passes `fetch`, use fetch.
    const isNode = typeof process === "object" && Boolean(process.versions?.node);
    this._fetch = fetchImpl ?? (isNode ? null : globalThis.fetch?.bind(globalThis));
    if (!this._fetch && !isNode) throw new TypeError("no fetch() here: pass options.fetch");
  }

  /** Node: HTTP to the daemon of `dataDir`, with the port and token it wrote there. */
  static async fromDataDir(dataDir, options = {}) {
    const { readFile } = await import("node:fs/promises");
    const read = async (f) => (await readFile(`${dataDir}/${f}`, "utf8")).trim();
    const url = `http://127.0.0.1:${await read("api.port")}`;
    return new FieldSync({ url, token: await read("api.token"), ...options });
  }

  // ---- transport

  /**
   * One request; resolves once the answer's head arrived (errors are thrown with their JSON).
   * The timer (timeoutMs) runs until the body is read, unless `stream` (then only the head).
   */
  async request(method, path, options = {}) {
    let { query, headers = {}, body, json, signal, timeoutMs = this.timeoutMs, stream = false } = options;
    const h = { ...headers };
    if (json !== undefined) {
      body = JSON.stringify(json);
      h["Content-Type"] = "application/json";
    }
    if (this.url && this.token) h.Authorization = `Bearer ${this.token}`;
    const ctrl = new AbortController();
    const onAbort = () => ctrl.abort(signal.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    let timer = null;
    let finished = false; // the body was read whole: nothing to abort
    // A timeout or the caller's abort reads as its reason; anything else as unreachable.
    const failure = (e) => (ctrl.signal.aborted ? ctrl.signal.reason : toError(e));
    const timeout = (ms) => new FieldSyncError(0, {
      error: "timeout", message: `no answer from fieldsyncd within ${ms} ms (${method} ${path})`,
    });
    const arm = (ms) => {
      clearTimeout(timer);
      timer = ms ? setTimeout(() => ctrl.abort(timeout(ms)), ms) : null;
      timer?.unref?.(); // Node: an open request keeps the process alive, not its timer
    };
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      if (!finished) ctrl.abort();
    };
    arm(timeoutMs);
    const target = path + queryString(query);
    let raw;
    try {
      raw = this._fetch
        ? await this._fetchRequest(method, target, h, body, ctrl.signal)
        : await this._nodeRequest(method, target, h, body, ctrl.signal);
    } catch (e) {
      const err = failure(e);
      done();
      throw err;
    }
    const inner = raw.chunks;
    raw.chunks = (async function* () {
      try {
        yield* inner;
      } catch (e) {
        throw failure(e);
      }
      if (ctrl.signal.aborted) throw failure();
      finished = true;
    })();
    const res = new RawResponse(raw.status, raw.header, raw.chunks, arm, done);
    if (raw.status >= 400) {
      const text = await res.text().catch(() => "");
      let parsed;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = { error: "unknown", message: text || `HTTP ${raw.status}` };
      }
      throw errorFor(raw.status, parsed);
    }
    if (stream) arm(0);
    return res;
  }

  async _fetchRequest(method, target, headers, body, signal) {
    const init = { method, headers, body, signal };
    if (isStreamBody(body)) init.duplex = "half";
    const r = await this._fetch(this.url + target, init);
    const chunks = r.body ? readerChunks(r.body) : (async function* () {})();
    return { status: r.status, header: (n) => r.headers.get(n), chunks };
  }

  async _nodeRequest(method, target, headers, body, signal) {
    const http = await import("node:http");
    let where = { socketPath: this.socketPath };
    if (this.url) {
      const u = new URL(this.url);
      if (u.protocol !== "http:") throw new TypeError(`url must be http://HOST:PORT, not ${this.url}`);
      where = { host: u.hostname.replace(/^\[|\]$/g, ""), port: u.port || 80 };
    }
    // A body other than JSON (a blob) is announced with its size when known, and waits for the
    // daemon's "100 Continue": a refusal (404, 413, ...) is answered before any of it is sent.
    const blob = body != null && typeof body !== "string";
    if (blob) {
      headers = { ...headers, Expect: "100-continue" };
      const size = body instanceof Uint8Array ? body.length : typeof Blob !== "undefined" && body instanceof Blob ? body.size : null;
      if (size !== null) headers["Content-Length"] = String(size);
    }
    const req = http.request({ ...where, path: target, method, headers, signal });
    const answer = new Promise((resolve, reject) => {
      req.once("response", resolve);
      req.once("error", reject);
    });
    const send = async () => {
      if (body instanceof Uint8Array) return req.end(body);
      const source = typeof Blob !== "undefined" && body instanceof Blob ? body.stream() : body;
      const iterable = source[Symbol.asyncIterator] ? source : readerChunks(source);
      for await (const c of iterable) if (!req.write(c)) await new Promise((r) => req.once("drain", r));
      req.end();
    };
    if (!blob) req.end(body ?? undefined);
    else req.once("continue", () => send().catch((e) => req.destroy(e)));
    const res = await answer;
    const header = (n) => {
      const v = res.headers[n.toLowerCase()];
      return v == null ? null : Array.isArray(v) ? v.join(", ") : v;
    };
    const chunks = (async function* () {
      for await (const c of res) yield new Uint8Array(c.buffer, c.byteOffset, c.length);
    })();
    return { status: res.statusCode, header, chunks };
  }

  async call(method, path, options = {}) {
    return (await this.request(method, path, options)).json();
  }

  // ---- device

  /** GET /v1/status: device id and name, API limits, sync and discovery summaries. */
  status() { return this.call("GET", "/v1/status"); }
  /** GET /v1/health: `{status: "ok"}`; a 503 FieldSyncError names what is wrong. */
  health() { return this.call("GET", "/v1/health"); }

  // ---- projects

  async projects() { return (await this.call("GET", "/v1/projects")).projects; }
  createProject(name, settings) {
    return this.call("POST", "/v1/projects", { json: settings === undefined ? { name } : { name, settings } });
  }
  /** A handle on one project (no request is made). */
  project(pid) { return new Project(this, pid); }

  // ---- peers

  async peers() { return (await this.call("GET", "/v1/peers")).peers; }
  /** POST /v1/peers: sync with a device; without `address`, where it was discovered. */
  addPeer({ deviceId, address, name }) {
    const json = { device_id: deviceId };
    if (address !== undefined) json.address = address;
    if (name !== undefined) json.name = name;
    return this.call("POST", "/v1/peers", { json });
  }
  peer(deviceId) { return this.call("GET", `/v1/peers/${seg(deviceId)}`); }
  removePeer(deviceId) { return this.call("DELETE", `/v1/peers/${seg(deviceId)}`); }
  syncPeer(deviceId) { return this.call("POST", `/v1/peers/${seg(deviceId)}/sync`); }
  approvePeer(deviceId) { return this.call("POST", `/v1/peers/${seg(deviceId)}/approve`); }

  // ---- browser streams

  /** POST /v1/tickets: a one-time ticket for an EventSource (HTTP only; 60 s, once). */
  ticket() { return this.call("POST", "/v1/tickets"); }
}

function toError(e) {
  if (e instanceof FieldSyncError) return e;
  return new FieldSyncError(0, { error: "unavailable", message: `fieldsyncd unreachable: ${e?.cause?.message ?? e?.message ?? e}` });
}

/** One project: documents, indexes, conflicts, the changes feed, blobs. */
export class Project {
  constructor(client, pid) {
    this.client = client;
    this.id = pid;
    this.base = `/v1/projects/${seg(pid)}`;
  }
  _docs(collection, id) {
    return `${this.base}/docs/${seg(collection)}` + (id === undefined ? "" : `/${seg(id)}`);
  }

  info() { return this.client.call("GET", this.base); }
  update({ name, settings }) { return this.client.call("PATCH", this.base, { json: { name, settings } }); }
  async collections() { return (await this.client.call("GET", `${this.base}/collections`)).collections; }

  // ---- documents

  /** GET a document: the winner's `body`, `version` (use it for `ifMatch`), heads and conflicts. */
  get(collection, id) { return this.client.call("GET", this._docs(collection, id)); }

  /** POST: create; `id` is app-given or random. 409 already_exists for an existing id. */
  create(collection, body, { id, schema } = {}) {
    return this.client.call("POST", this._docs(collection), { query: { id, schema }, json: body });
  }

  /**
   * PUT: update (or create). `ifMatch: version` writes only over that winner
   * (PreconditionFailedError otherwise), `ifMatch: "*"` only if it exists, `ifNoneMatch: "*"`
   * only if it does not; `base: version` keeps a concurrent version on a stale base.
   */
  put(collection, id, body, { ifMatch, ifNoneMatch, base, schema } = {}) {
    return this.client.call("PUT", this._docs(collection, id), {
      query: { base, schema }, json: body, headers: preconditions(ifMatch, ifNoneMatch),
    });
  }

  /** DELETE (a tombstone that syncs); `ifMatch` and `base` as for put. */
  remove(collection, id, { ifMatch, base } = {}) {
    return this.client.call("DELETE", this._docs(collection, id), { query: { base }, headers: preconditions(ifMatch) });
  }

  /**
   * One page of a collection: `{docs, next, plan}` (`plan`: `{index, examined}`, the index that
   * served the page or null, and how many documents were read). `where: {field: value}` keeps documents whose
   * top-level field equals the JSON value; `selector` is one condition on dot paths into the
   * body (`{range: {path: "water.ph", gt: 6.5}}`, eq, in, bbox, all / any); all must match.
   * `sort: "visited_at"` (or `"-visited_at"`, descending) orders by that dot path, then the id.
   * `after: page.next` for the next page of the same query.
   */
  async list(collection, { conflicts, ...options } = {}) {
    return this.client.call("GET", this._docs(collection), { query: { ...listParams(options), conflicts } });
  }

  /**
   * Several documents by id (`keys=`), in the order asked (at most the daemon's
   * api.max_page_size): each a document, or `{collection, id, error: "not_found"}`.
   */
  async getMany(collection, ids) {
    if (!Array.isArray(ids) || !ids.every((id) => typeof id === "string" && id))
      throw new TypeError("getMany needs an array of non-empty string ids");
    return (await this.client.call("GET", this._docs(collection), { query: { keys: JSON.stringify(ids) } })).docs;
  }

  /**
   * Every page of a query (list()'s options), following `next`: each `{docs, next, plan}`,
   * where `plan` says which index served it (`plan.index`, null without one) and how many
   * documents were read (`plan.examined`).
   */
  async *pages(collection, options = {}) {
    let after = options.after;
    do {
      const page = await this.list(collection, { ...options, after });
      yield page;
      after = page.next;
    } while (after);
  }

  /** Every document of a query (list()'s options), following `next` across pages. */
  async *all(collection, options = {}) {
    for await (const page of this.pages(collection, options)) yield* page.docs;
  }

  async history(collection, id, { limit } = {}) {
    return (await this.client.call("GET", `${this._docs(collection, id)}/history`, { query: { limit } })).versions;
  }

  /**
   * Several writes, all or nothing: `[{collection, id?, body?, base?, ifMatch?, delete?, schema?}]`.
   * Returns the write results in order; a failed `ifMatch` throws PreconditionFailedError.
   */
  async batch(writes) {
    const json = {
      writes: writes.map(({ ifMatch, ...w }) => (ifMatch === undefined ? w : { ...w, if_match: ifMatch })),
    };
    return (await this.client.call("POST", `${this.base}/batch`, { json })).results;
  }

  // ---- indexes

  /**
   * PUT .../indexes/{name}: declares an index of `collection` on `fields` (1-8 dot paths, e.g.
   * ["site.region", "ph"]). Returns `{name, collection, fields, ready, entries}`; the documents
   * already here are indexed in the background (`ready` false until then: waitForIndex()).
   * The same declaration again changes nothing; another one under a name in use is 409
   * already_exists, one over storage.max_indexes 409 failed_precondition.
   */
  createIndex(name, collection, fields) {
    if (!Array.isArray(fields)) throw new TypeError("createIndex needs fields as an array of dot paths");
    return this.client.call("PUT", `${this.base}/indexes/${seg(name)}`, { json: { collection, fields } });
  }

  /** The project's indexes: `[{name, collection, fields, ready, entries}]` (or `{name, error}`). */
  async listIndexes() { return (await this.client.call("GET", `${this.base}/indexes`)).indexes; }

  /** DELETE .../indexes/{name}: `{name, dropped: true}`; 404 not_found for an unknown name. */
  dropIndex(name) { return this.client.call("DELETE", `${this.base}/indexes/${seg(name)}`); }

  /**
   * Polls listIndexes() until the index `name` is ready and returns it. Throws FieldSyncError
   * with code "timeout" (status 0) after `timeoutMs`, 404 not_found if there is no such index
   * (e.g. dropped meanwhile), and data_loss (500) if its declaration does not read back.
   */
  async waitForIndex(name, { timeoutMs = 60000, signal } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (let pause = 10; ; pause = Math.min(pause * 2, 500)) {
      const index = (await this.listIndexes()).find((i) => i.name === name);
      if (!index) throw new FieldSyncError(404, { error: "not_found", message: `no index named '${name}'` });
      if (index.error)
        throw new FieldSyncError(500, {
          error: "data_loss", message: `index '${name}' is not kept (${index.error}): drop it and declare it again`,
        });
      if (index.ready) return index;
      const left = deadline - Date.now();
      if (left <= 0)
        throw new FieldSyncError(0, {
          error: "timeout", message: `index '${name}' not ready within ${timeoutMs} ms (${index.entries} entries so far)`,
        });
      signal?.throwIfAborted();
      await new Promise((r) => setTimeout(r, Math.min(pause, left)));
    }
  }

  // ---- conflicts

  /**
   * Documents with several heads, in every collection: a page `{docs, next, plan}`. Takes list()'s
   * `where`, `selector`, `sort`, `limit`, `after` and `includeDeleted`.
   */
  async conflicts(options = {}) {
    return this.client.call("GET", `${this.base}/conflicts`, { query: listParams(options) });
  }

  /**
   * Resolve a conflict: `{strategy: "merge"}` (409 with `body.conflicting_fields` when the same
   * field differs), `{body, parents?}` to write a body over the heads, or `{delete: true}`.
   */
  resolve(collection, id, resolution) {
    return this.client.call("POST", `${this._docs(collection, id)}/resolve`, { json: resolution });
  }

  // ---- changes feed

  /**
   * One page of changes after `since` (a seq or "now"): `{changes, last_seq}`. `includeDocs`:
   * each change carries `doc`, the document as it is now (null once it is gone from here).
   * `collections: ["obs"]`: only their changes (last_seq still moves past the others, so a
   * page may be short or empty before the end of the feed).
   */
  async changes({ since = 0, limit, ...filters } = {}) {
    return this.client.call("GET", `${this.base}/changes`, { query: { since, limit, ...feedParams(filters) } });
  }

  /**
   * Long-poll: answers at once if something is new after `since`, else waits up to `timeoutMs`.
   * `includeDocs` and `collections` as for changes() (it waits past other collections' changes).
   */
  async waitForChanges({ since = 0, limit, timeoutMs = 30000, signal, ...filters } = {}) {
    return this.client.call("GET", `${this.base}/changes`, {
      query: { since, limit, feed: "longpoll", timeout: timeoutMs, ...feedParams(filters) },
      timeoutMs: timeoutMs + this.client.timeoutMs, signal,
    });
  }

  /**
   * The live feed (Server-Sent Events) as an async iterator of changes after `since`. Ends when
   * the daemon closes the stream; stop it with `signal` or by leaving the loop. A stream that
   * brings nothing (not even a heartbeat) for `idleTimeoutMs` fails; resume with the last `seq`.
   * `includeDocs` and `collections` as for changes().
   */
  async *follow({ since = 0, signal, idleTimeoutMs = 60000, ...filters } = {}) {
    const res = await this.client.request("GET", `${this.base}/changes`, {
      query: { since, feed: "sse", ...feedParams(filters) }, headers: { Accept: "text/event-stream" }, signal, stream: true,
    });
    res.idle(idleTimeoutMs);
    for await (const ev of sseEvents(res.chunks())) {
      if (ev.event === "change") yield JSON.parse(ev.data);
      else if (ev.event === "error") {
        const body = JSON.parse(ev.data);
        throw errorFor(STATUS_OF_CODE[body.error] ?? 500, body);
      }
    }
  }

  /**
   * Browsers: the URL of this project's SSE feed with a fresh one-time ticket in it, for
   * `new EventSource(url)` (which cannot send the token). Reconnect with a new URL and `since`.
   * `includeDocs` and `collections` as for changes().
   */
  async eventSourceUrl({ since = 0, includeDocs, collections } = {}) {
    if (!this.client.url) throw new TypeError("eventSourceUrl needs an HTTP client ({url, token})");
    const filters = feedParams({ includeDocs, collections });
    const { ticket } = await this.client.ticket();
    return `${this.client.url}${this.base}/changes${queryString({ feed: "sse", since, ...filters, ticket })}`;
  }

  /** Browsers: an EventSource on the feed ("change" events carry a change as JSON in `data`). */
  async eventSource(options = {}) {
    const ES = options.EventSource ?? globalThis.EventSource;
    return new ES(await this.eventSourceUrl(options));
  }

  // ---- sync

  /** GET .../sync: whether the project is in sync with the connected peers. */
  syncStatus() { return this.client.call("GET", `${this.base}/sync`); }

  // ---- blobs

  /**
   * Upload a blob: `data` is a Uint8Array, string, Blob/File, or (streamed) a ReadableStream or
   * async iterable of Uint8Array (Node: fs.createReadStream). Returns `{id, size, type, root, ref}`;
   * put `ref` into a document's body. Browsers over HTTP/1.1 need a Blob, not a stream.
   */
  putBlob(data, { type = "application/octet-stream", timeoutMs } = {}) {
    return this.client.call("POST", `${this.base}/blobs`, {
      body: data, headers: { "Content-Type": type }, timeoutMs: timeoutMs ?? Math.max(this.client.timeoutMs, 600000),
    });
  }

  /**
   * Download a blob (or its `variant`: "preview", "thumbnail"). `range: [start, end]` (end
   * inclusive, optional) asks for part of it (206). A blob still coming from a peer answers 202
   * with `fetching` (its progress); ask again. Read it with `bytes()` or stream `chunks()`; a
   * body that stalls for the client's timeoutMs fails.
   */
  async getBlob(id, { variant, range, wait, signal } = {}) {
    const headers = {};
    if (range) headers.Range = `bytes=${range[0]}-${range[1] ?? ""}`;
    const raw = await this.client.request("GET", `${this.base}/blobs/${seg(id)}`, {
      query: { variant, wait }, headers, signal, stream: true,
      timeoutMs: this.client.timeoutMs + (wait ?? 15000), // the daemon may wait for a peer first
    });
    raw.idle(this.client.timeoutMs);
    return new BlobDownload(raw, raw.status === 202 ? await raw.json() : null);
  }

  /** One page of the project's blobs with its usage: `{blobs, usage, next}`. */
  blobs({ after, limit } = {}) { return this.client.call("GET", `${this.base}/blobs`, { query: { after, limit } }); }
}

function preconditions(ifMatch, ifNoneMatch) {
  const h = {};
  if (ifMatch !== undefined) h["If-Match"] = ifMatch === "*" ? "*" : `"${ifMatch}"`;
  if (ifNoneMatch !== undefined) h["If-None-Match"] = ifNoneMatch;
  return h;
}

/** Parses a text/event-stream into `{id, event, data}` (comments, e.g. heartbeats, are skipped). */
async function* sseEvents(chunks) {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const c of chunks) {
    buf += decoder.decode(c, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const ev = { id: null, event: "message", data: null };
      for (const line of block.split("\n")) {
        if (line === "" || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") ev.data = ev.data === null ? value : ev.data + "\n" + value;
        else if (field === "id" || field === "event") ev[field] = value;
      }
      if (ev.data !== null) yield ev;
    }
  }
}
