// Types of fieldsync.mjs: the client of fieldsyncd's local API (docs/api.md, docs/openapi.yaml).

/** A free-form JSON document body, stored byte for byte. */
export type Body = { [key: string]: unknown };
/** 64 lowercase hex characters: a version id (SHA-256 of the version). */
export type VersionId = string;
/** 52 base32 characters: a device's Ed25519 public key. */
export type DeviceId = string;

/** The API's error JSON. */
export interface ErrorBody {
  error: string;
  message: string;
  /** resolve with strategy merge: the fields the heads changed differently */
  conflicting_fields?: string[];
  [key: string]: unknown;
}

/** Every failure: `status` is the HTTP status (0 when no answer came: unreachable, timeout). */
export class FieldSyncError extends Error {
  readonly status: number;
  /** The API's error code, e.g. "not_found", "already_exists", "aborted"; "timeout", "unavailable" without an answer. */
  readonly code: string;
  readonly body: ErrorBody;
  constructor(status: number, body: ErrorBody, message?: string);
}

/** A conditional write whose If-Match / If-None-Match (or batch `ifMatch`) did not hold: 412, nothing written. */
export class PreconditionFailedError extends FieldSyncError {}

export interface ProjectInfo {
  id: string;
  name: string;
  created_hlc: number;
  settings: { [key: string]: unknown };
  /** Only in info(): what this device holds of it ({} = everything). */
  subscription?: { [key: string]: unknown };
}

/** A project record that cannot be read back (listed by projects() instead of failing it). */
export interface UnreadableProject {
  id: string;
  error: string;
}

/** The answer of create, put, remove, resolve and each batch write. */
export interface WriteResult {
  id: string;
  collection: string;
  version: VersionId;
  local_seq: number;
  /** The document now has concurrent versions (a stale base). */
  conflict: boolean;
  message?: string;
  heads: VersionId[];
}

export interface Document<B extends Body = Body> {
  id: string;
  collection: string;
  /** The winner's version: pass it as `ifMatch` to write only over it. */
  version: VersionId;
  author: DeviceId;
  hlc: number;
  schema: number;
  deleted: boolean;
  purged: boolean;
  local_seq: number;
  /** Winner first. */
  heads: VersionId[];
  /** Heads other than the winner. */
  conflicts: VersionId[];
  /** Only on get() of a document in conflict: the automatic merge's preview. */
  merge?: { clean: boolean; conflicting_fields: string[]; heads: VersionId[]; body: B | null };
  /** null for a deleted or purged winner. */
  body: B | null;
}

/** What a bulk get (getMany) gives for an id that is not on this device. */
export interface NotFoundEntry {
  collection: string;
  id: string;
  error: "not_found";
}

/**
 * One condition on a document's body (the language of subscriptions' `where`, docs/api.md).
 * Paths are dot-separated keys into the body, e.g. "water.ph"; ranges compare numbers with
 * numbers and strings with strings.
 */
export type Selector =
  | { eq: { path: string; value: unknown } }
  | { in: { path: string; values: unknown[] } }
  | { range: RangeCondition }
  | { bbox: { lat?: string; lon?: string; south: number; west: number; north: number; east: number } }
  | { all: Selector[] }
  | { any: Selector[] };

/** A range: at least one bound; `gt` or `gte` below, `lt` or `lte` above. */
export interface RangeCondition {
  path: string;
  gt?: number | string;
  gte?: number | string;
  lt?: number | string;
  lte?: number | string;
}

/** How a page of a list was found. */
export interface QueryPlan {
  /** The index that served it, or null: the collection was read. */
  index: string | null;
  /** How many documents were read to answer it. */
  examined: number;
}

export interface DocPage<B extends Body = Body> {
  docs: Document<B>[];
  /** Pass as `after` for the next page; null on the last. */
  next: string | null;
  plan: QueryPlan;
}

/** A declared index (createIndex, listIndexes). */
export interface Index {
  name: string;
  collection: string;
  /** Dot paths into the bodies, in the index's order. */
  fields: string[];
  /** False while the documents already here are indexed in the background: queries do not use it yet. */
  ready: boolean;
  /** Documents indexed (so far, while building). */
  entries: number;
}

/** An index whose declaration does not read back (listed by listIndexes() instead of failing it). */
export interface UnreadableIndex {
  name: string;
  error: string;
}

export interface Version {
  version: VersionId;
  parents: VersionId[];
  author: DeviceId;
  hlc: number;
  schema: number;
  deleted: boolean;
  body_size: number;
  body: Body | null;
}

/** One entry of the changes feed. */
export interface Change<B extends Body = Body> {
  seq: number;
  collection: string;
  id: string;
  version: VersionId;
  author: DeviceId;
  deleted: boolean;
  /** Written on this device (false: received from a peer). */
  local: boolean;
  /**
   * Only with `includeDocs`: the document as it is now (a later change may have superseded
   * this one), or null once it is no longer on this device.
   */
  doc?: Document<B> | null;
}

export interface ChangesPage<B extends Body = Body> {
  changes: Change<B>[];
  /** The cursor for the next call. */
  last_seq: number;
}

export interface BatchWrite {
  collection: string;
  /** Absent: create with a random id; present without base: upsert over the winner. */
  id?: string;
  body?: Body;
  base?: VersionId;
  /** The winner must be this version, else the batch fails with PreconditionFailedError. */
  ifMatch?: VersionId;
  delete?: boolean;
  schema?: number;
}

export type Resolution =
  | { strategy: "merge" }
  | { body: Body; parents?: VersionId[] }
  | { delete: true; parents?: VersionId[] };

/** Put into a document's body to refer to a blob (other members are the app's). */
export interface BlobRef {
  $blob: string;
  size: number;
  type: string;
  root: string;
  [key: string]: unknown;
}

export interface BlobInfo {
  id: string;
  size: number;
  type: string;
  root: string;
  ref: BlobRef;
}

export interface BlobListEntry {
  id: string;
  size: number;
  type: string;
  root: string;
  held: boolean;
  refs: number;
  added_ms: number;
}

export interface BlobPage {
  blobs: BlobListEntry[];
  usage: { held_bytes: number; held_count: number; wanted_count: number; quota_bytes: number };
  next: string | null;
}

/** A blob asked for on demand and not on this device yet (HTTP 202). */
export interface BlobFetch {
  blob: string;
  state: "fetching" | "waiting";
  size: number;
  received_bytes: number;
  demand_ms_left: number;
  message: string;
}

export interface BlobDownload {
  /** 200, 206 (a range), or 202 while it is fetched from a peer. */
  readonly status: number;
  /** The progress when status is 202 (then chunks() and bytes() throw); else null. */
  readonly fetching: BlobFetch | null;
  readonly type: string | null;
  /** Content-Length of this answer. */
  readonly size: number | null;
  readonly etag: string | null;
  readonly contentRange: string | null;
  /** The bytes as they arrive; throws when the body ends short of its Content-Length. */
  chunks(): AsyncIterableIterator<Uint8Array>;
  bytes(): Promise<Uint8Array>;
  /** Stop reading (closes the connection). */
  close(): void;
}

export interface PeerReason {
  code: "peer_shut_down" | "removed" | "awaiting_approval" | "approval_needed" | "wrong_device" | "failed";
  message: string;
  project: string | null;
}

export interface Peer {
  device_id: DeviceId;
  short_id: string;
  name: string;
  address: string;
  configured: boolean;
  connected: boolean;
  direction: "outgoing" | "incoming" | null;
  state: "idle" | "connecting" | "handshake" | "syncing" | "in_sync" | "backoff" | "pending" | "waiting" | "discovered";
  last_sync_ms: number;
  next_retry_ms: number;
  failures: number;
  last_error: { error: string; message: string } | null;
  reason: PeerReason | null;
  transport: string | null;
  remote: string | null;
  wire_bytes_sent: number;
  wire_bytes_received: number;
  approved: boolean;
  pending_projects: string[];
  verification_code: string | null;
  session: { [key: string]: unknown } | null;
  discovered: { [key: string]: unknown } | null;
  [key: string]: unknown;
}

export interface ProjectSync {
  project: string;
  in_sync: boolean;
  to_send: number;
  to_receive: number;
  peers: Array<{ device_id: DeviceId; name: string; state: string; [key: string]: unknown }>;
}

export interface Status {
  device_id: DeviceId;
  device_id_short: string;
  device_name: string;
  version: string;
  uptime_s: number;
  projects: number;
  api: { socket: string; http: { enabled: boolean; address: string; port: number }; [key: string]: unknown };
  peers: { [key: string]: unknown };
  [key: string]: unknown;
}

export interface RequestOptions {
  query?: { [name: string]: string | number | boolean | undefined | null | Array<string | number> };
  headers?: { [name: string]: string };
  /** Sent as JSON (sets Content-Type). */
  json?: unknown;
  /** A raw body instead of json. */
  body?: string | Uint8Array | Blob | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** Only the head within timeoutMs (for bodies read as streams). */
  stream?: boolean;
}

export interface RawResponse {
  readonly status: number;
  header(name: string): string | null;
  /** From now on, fail the body's read when the daemon sends nothing for `ms`. */
  idle(ms: number): void;
  chunks(): AsyncIterableIterator<Uint8Array>;
  bytes(): Promise<Uint8Array>;
  text(): Promise<string>;
  json(): Promise<any>;
  close(): void;
}

export interface ClientOptions {
  /** HTTP: e.g. "http://127.0.0.1:7890" (needs `token`). */
  url?: string;
  /** The 64 hex characters of <data_dir>/api.token. */
  token?: string;
  /** Node only: the Unix socket (no token), e.g. "/run/fieldsync/api.sock". */
  socketPath?: string;
  /** Per request, until the whole answer is read (default 30000). */
  timeoutMs?: number;
  /** HTTP through this fetch (default: node:http in Node, globalThis.fetch in browsers). */
  fetch?: typeof fetch;
}

export class FieldSync {
  constructor(options: ClientOptions);
  /** Node: HTTP to the daemon of `dataDir`, with the api.port and api.token it wrote there. */
  static fromDataDir(dataDir: string, options?: Omit<ClientOptions, "url" | "token" | "socketPath">): Promise<FieldSync>;
  readonly url: string | null;
  readonly socketPath: string | null;
  readonly timeoutMs: number;

  /** Any route of docs/api.md; throws FieldSyncError for a status >= 400. */
  request(method: string, path: string, options?: RequestOptions): Promise<RawResponse>;
  /** request() and its JSON answer. */
  call<T = any>(method: string, path: string, options?: RequestOptions): Promise<T>;

  status(): Promise<Status>;
  health(): Promise<{ status: "ok"; uptime_s: number }>;

  projects(): Promise<Array<ProjectInfo | UnreadableProject>>;
  createProject(name: string, settings?: { [key: string]: unknown }): Promise<ProjectInfo>;
  /** A handle on one project (no request is made). */
  project(pid: string): Project;

  peers(): Promise<Peer[]>;
  addPeer(peer: { deviceId: DeviceId; address?: string; name?: string }): Promise<Peer>;
  peer(deviceId: DeviceId): Promise<Peer>;
  removePeer(deviceId: DeviceId): Promise<{ removed: DeviceId }>;
  syncPeer(deviceId: DeviceId): Promise<Peer>;
  approvePeer(deviceId: DeviceId): Promise<Peer>;

  /** A one-time stream ticket for a browser's EventSource (HTTP; api.ticket_ttl_ms, once). */
  ticket(): Promise<{ ticket: string; expires_ms: number }>;
}

export interface QueryOptions {
  /** Top-level field = JSON value; all must match (and the selector). */
  where?: { [field: string]: unknown };
  /** One condition on dot paths into the body, sent as JSON. A deleted document never matches. */
  selector?: Selector;
  /** A dot path ("visited_at") ascending, or "-visited_at" descending; ties by id. */
  sort?: string;
  limit?: number;
  /** The `next` of the previous page of the same query. */
  after?: string;
  includeDeleted?: boolean;
}

export interface ListOptions extends QueryOptions {
  /** Only documents with several heads. */
  conflicts?: boolean;
}

export interface FeedOptions {
  /** A sequence number or "now" (default 0). */
  since?: number | "now";
  /** Each change carries `doc`, the document as it is now (or null). */
  includeDocs?: boolean;
  /** Only changes of these collections (non-empty); leave it out for all. */
  collections?: string[];
}

/** One project: documents, indexes, conflicts, the changes feed, blobs. */
export class Project {
  constructor(client: FieldSync, pid: string);
  readonly client: FieldSync;
  readonly id: string;
  /** The path of its routes, "/v1/projects/<pid>" (for request() and call()). */
  readonly base: string;

  info(): Promise<ProjectInfo>;
  update(change: { name?: string; settings?: { [key: string]: unknown } }): Promise<ProjectInfo>;
  collections(): Promise<string[]>;

  get<B extends Body = Body>(collection: string, id: string): Promise<Document<B>>;
  create(collection: string, body: Body, options?: { id?: string; schema?: number }): Promise<WriteResult>;
  put(collection: string, id: string, body: Body,
      options?: { ifMatch?: VersionId | "*"; ifNoneMatch?: "*"; base?: VersionId; schema?: number }): Promise<WriteResult>;
  remove(collection: string, id: string, options?: { ifMatch?: VersionId | "*"; base?: VersionId }): Promise<WriteResult>;
  list<B extends Body = Body>(collection: string, options?: ListOptions): Promise<DocPage<B>>;
  /** Several documents by id, in that order; an id that is not here gives a NotFoundEntry. */
  getMany<B extends Body = Body>(collection: string, ids: string[]): Promise<Array<Document<B> | NotFoundEntry>>;
  /** Every page of the query (each with its `plan`), following `next`. */
  pages<B extends Body = Body>(collection: string, options?: ListOptions): AsyncIterableIterator<DocPage<B>>;
  /** Every document of the query, following `next` across pages. */
  all<B extends Body = Body>(collection: string, options?: ListOptions): AsyncIterableIterator<Document<B>>;
  history(collection: string, id: string, options?: { limit?: number }): Promise<Version[]>;
  batch(writes: BatchWrite[]): Promise<WriteResult[]>;

  /**
   * Declares an index of `collection` on `fields` (1-8 dot paths). The same declaration again
   * changes nothing; another under a name in use is 409 already_exists, one over
   * storage.max_indexes 409 failed_precondition.
   */
  createIndex(name: string, collection: string, fields: string[]): Promise<Index>;
  listIndexes(): Promise<Array<Index | UnreadableIndex>>;
  /** 404 not_found for an unknown name. */
  dropIndex(name: string): Promise<{ name: string; dropped: true }>;
  /**
   * Polls until the index is ready (built over the documents already here) and returns it;
   * FieldSyncError "timeout" after timeoutMs (default 60000), 404 not_found without such an index.
   */
  waitForIndex(name: string, options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<Index>;

  conflicts<B extends Body = Body>(options?: QueryOptions): Promise<DocPage<B>>;
  resolve(collection: string, id: string, resolution: Resolution): Promise<WriteResult>;

  changes<B extends Body = Body>(options?: FeedOptions & { limit?: number }): Promise<ChangesPage<B>>;
  waitForChanges<B extends Body = Body>(options?: FeedOptions & { limit?: number; timeoutMs?: number; signal?: AbortSignal }): Promise<ChangesPage<B>>;
  follow<B extends Body = Body>(options?: FeedOptions & { signal?: AbortSignal; idleTimeoutMs?: number }): AsyncIterableIterator<Change<B>>;
  eventSourceUrl(options?: FeedOptions): Promise<string>;
  eventSource(options?: FeedOptions & { EventSource?: { new (url: string): EventSource } }): Promise<EventSource>;

  syncStatus(): Promise<ProjectSync>;

  putBlob(data: string | Uint8Array | Blob | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
          options?: { type?: string; timeoutMs?: number }): Promise<BlobInfo>;
  getBlob(id: string, options?: { variant?: "original" | "preview" | "thumbnail"; range?: [number, number?]; wait?: number; signal?: AbortSignal }): Promise<BlobDownload>;
  blobs(options?: { after?: string; limit?: number }): Promise<BlobPage>;
}
