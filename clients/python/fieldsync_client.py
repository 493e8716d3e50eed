"""fieldsync client for Python 3.11+ (standard library only).

Speaks fieldsyncd's local API (docs/api.md) over the Unix socket (no token; the socket's file
permissions decide) or over HTTP on 127.0.0.1 with the bearer token:

    from fieldsync_client import Client, PreconditionFailed

    fs = Client()                                   # the Unix socket at the daemon's default path
    fs = Client(data_dir="/var/lib/fieldsync")      # <data_dir>/api.sock
    fs = Client.over_http(data_dir="/var/lib/fieldsync")   # api.port and api.token from there
    p = fs.project(fs.create_project("survey")["id"])
    w = p.create("obs", {"species": "heron"}, id="obs-1")
    p.put("obs", "obs-1", {"species": "grey heron"}, if_match=w["version"])
    for change in p.follow(since=0):                # Server-Sent Events, until interrupted
        print(change["seq"], change["id"])

Every failure raises FieldSyncError (status, code, body); a conditional write that does not
hold raises PreconditionFailed (412), its subclass.
"""
import http.client
import json
import os
import socket
import time
import urllib.parse

__all__ = ["Client", "Project", "FieldSyncError", "PreconditionFailed", "BlobDownload",
           "default_data_dir", "default_socket_path"]

# Where an error code maps to (docs/api.md "Errors"); for an SSE stream's `event: error`.
_STATUS_OF_CODE = {
    "invalid_argument": 400, "unauthenticated": 401, "permission_denied": 403, "not_found": 404,
    "unsupported": 405, "already_exists": 409, "failed_precondition": 409, "aborted": 412,
    "too_large": 413, "verification_failed": 422, "resource_exhausted": 503, "unavailable": 503,
    "data_loss": 500, "internal": 500,
}
_CHUNK = 64 * 1024


class FieldSyncError(Exception):
    """An error answer of fieldsyncd, or none at all (status 0: unreachable, timed out).

    status: the HTTP status; code: the API's error code ("not_found", "aborted", ...);
    body: the error JSON (e.g. with "conflicting_fields" for a failed merge)."""

    def __init__(self, status, body):
        if not isinstance(body, dict):
            body = {"error": "unknown", "message": str(body)}
        self.status = status
        self.code = body.get("error", "unknown")
        self.message = body.get("message", "")
        self.body = body
        super().__init__("%s: %s (HTTP %d)" % (self.code, self.message, status))


class PreconditionFailed(FieldSyncError):
    """A conditional write (if_match, create_only, a batch write's if_match) did not hold: 412,
    nothing was written. Read the document again, apply the change, retry."""


def _error(status, body):
    return (PreconditionFailed if status == 412 else FieldSyncError)(status, body)


def default_data_dir():
    """The daemon's default data directory for this user (as syncctl assumes it)."""
    if os.geteuid() == 0:
        return "/var/lib/fieldsync"
    if os.environ.get("XDG_DATA_HOME"):
        return os.path.join(os.environ["XDG_DATA_HOME"], "fieldsync")
    return os.path.join(os.path.expanduser("~"), ".local", "share", "fieldsync")


def default_socket_path(data_dir=None):
    """The daemon's default socket: /run/fieldsync/api.sock as root, else <data_dir>/api.sock."""
    if os.geteuid() == 0:
        return "/run/fieldsync/api.sock"
    return os.path.join(data_dir or default_data_dir(), "api.sock")


def _seg(value):
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string id, got %r" % (value,))
    return urllib.parse.quote(value, safe="")


def _query(params):
    parts = []
    for key, value in params.items():
        if value is None or value is False:
            continue
        for one in value if isinstance(value, (list, tuple)) else [value]:
            one = "1" if one is True else str(one)
            parts.append("%s=%s" % (urllib.parse.quote(key, safe=""),
                                    urllib.parse.quote(one, safe="")))
    return "?" + "&".join(parts) if parts else ""


def _where(where):
    """{field: value} as `where=FIELD=JSON` parameters (all must match)."""
    return ["%s=%s" % (k, json.dumps(v)) for k, v in (where or {}).items()]


def _list_params(where, selector, sort, limit, after, include_deleted):
    """The query of a list or of conflicts."""
    if sort is not None and (not isinstance(sort, str) or sort in ("", "-")):
        raise ValueError('sort must be a dot path, or "-" and one for descending, got %r'
                         % (sort,))
    return {"where": _where(where),
            "selector": None if selector is None else json.dumps(selector, separators=(",", ":")),
            "sort": sort, "limit": limit, "after": after, "include_deleted": include_deleted}


def _feed_params(include_docs, collections):
    """The changes feed's filters: include_docs=1 and collection=NAME for each one named."""
    if collections is not None:
        collections = [collections] if isinstance(collections, str) else list(collections)
        if not collections or not all(isinstance(c, str) and c for c in collections):
            raise ValueError("collections must name at least one collection (leave it out "
                             "for all), got %r" % (collections,))
    return {"include_docs": bool(include_docs), "collection": collections}


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


class Client:
    """A connection to one fieldsyncd.

    Client(socket_path=None, data_dir=None)      the Unix socket: socket_path, else
                                                 $FIELDSYNC_SOCKET (without data_dir), else
                                                 the daemon's default for data_dir
    Client(url="http://127.0.0.1:7890", token=None, data_dir=None)
                                                 HTTP; the token, else <data_dir>/api.token
    Client.over_http(data_dir)                   HTTP to the port the daemon wrote there

    timeout: seconds for a request to connect and for each read (long-polls add their wait).
    Each request uses its own connection, so a Client may be shared by threads.
    """

    def __init__(self, socket_path=None, url=None, token=None, data_dir=None, timeout=30.0):
        self.timeout = timeout
        if url:
            u = urllib.parse.urlsplit(url)
            if u.scheme != "http" or not u.hostname:
                raise ValueError("url must be http://HOST:PORT, got %r" % url)
            self.host, self.port = u.hostname, u.port or 80
            if token is None:
                with open(os.path.join(data_dir or default_data_dir(), "api.token")) as f:
                    token = f.read().strip()
            self.token = token
            self.socket_path = None
        else:
            if not socket_path:
                env = os.environ.get("FIELDSYNC_SOCKET")
                socket_path = env if env and not data_dir else default_socket_path(data_dir)
            self.socket_path = socket_path
            self.token = None

    @classmethod
    def over_http(cls, data_dir=None, timeout=30.0):
        """HTTP to the daemon of data_dir (its api.port and api.token)."""
        data_dir = data_dir or default_data_dir()
        with open(os.path.join(data_dir, "api.port")) as f:
            port = int(f.read().strip())
        return cls(url="http://127.0.0.1:%d" % port, data_dir=data_dir, timeout=timeout)

    # ---- transport

    def _connection(self, timeout):
        if self.socket_path:
            return _UnixConnection(self.socket_path, timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def open(self, method, path, query=None, json_body=None, body=None, headers=None,
             timeout=None):
        """Sends one request; returns the http.client response with its body unread (when
        done, close its connection: resp.connection.close()). Raises FieldSyncError for a
        status >= 400. `body` may be bytes, a binary file (sent with
        its size) or an iterable of bytes (sent chunked)."""
        h = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            h["Content-Type"] = "application/json"
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        conn = self._connection(self.timeout if timeout is None else timeout)
        target = path + _query(query or {})
        try:
            if hasattr(body, "read"):  # a file: its size; an iterable of bytes goes chunked
                h.setdefault("Content-Length", str(_remaining(body)))
            try:
                conn.request(method, target, body=body, headers=h)
            except OSError:
                if conn.sock is None:
                    raise
                # The daemon may have answered before the whole body was sent (e.g. 413) and
                # closed the connection: that answer is the one to report.
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            what = "timed out" if isinstance(e, TimeoutError) else "unreachable"
            raise FieldSyncError(0, {"error": "timeout" if what == "timed out" else "unavailable",
                                     "message": "fieldsyncd %s (%s %s): %s"
                                                % (what, method, path, e)}) from e
        resp.connection = conn
        if resp.status >= 400:
            try:
                text = resp.read()
            finally:
                conn.close()
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = {"error": "unknown",
                          "message": text.decode(errors="replace") or "HTTP %d" % resp.status}
            raise _error(resp.status, parsed)
        return resp

    def call(self, method, path, query=None, json_body=None, body=None, headers=None,
             timeout=None):
        """One request; returns its JSON answer (None for an empty body)."""
        resp = self.open(method, path, query, json_body, body, headers, timeout)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise FieldSyncError(0, {"error": "unavailable",
                                     "message": "reading the answer failed: %s" % e}) from e
        finally:
            resp.connection.close()
        return json.loads(data) if data else None

    # ---- device

    def status(self):
        """GET /v1/status: device id and name, API limits, sync and discovery summaries."""
        return self.call("GET", "/v1/status")

    def health(self):
        """GET /v1/health: {"status": "ok"}; FieldSyncError (503) names what is wrong."""
        return self.call("GET", "/v1/health")

    # ---- projects

    def projects(self):
        return self.call("GET", "/v1/projects")["projects"]

    def create_project(self, name, settings=None):
        body = {"name": name}
        if settings is not None:
            body["settings"] = settings
        return self.call("POST", "/v1/projects", json_body=body)

    def project(self, pid):
        """A handle on one project (no request is made)."""
        return Project(self, pid)

    # ---- peers

    def peers(self):
        return self.call("GET", "/v1/peers")["peers"]

    def add_peer(self, device_id, address=None, name=None):
        """Sync with a device at address ("host:port"); without it, where it was discovered."""
        body = {"device_id": device_id}
        if address is not None:
            body["address"] = address
        if name is not None:
            body["name"] = name
        return self.call("POST", "/v1/peers", json_body=body)

    def peer(self, device_id):
        return self.call("GET", "/v1/peers/" + _seg(device_id))

    def remove_peer(self, device_id):
        return self.call("DELETE", "/v1/peers/" + _seg(device_id))

    def sync_peer(self, device_id):
        return self.call("POST", "/v1/peers/%s/sync" % _seg(device_id))

    def approve_peer(self, device_id):
        return self.call("POST", "/v1/peers/%s/approve" % _seg(device_id))

    def ticket(self):
        """POST /v1/tickets: a one-time stream ticket (for a browser's EventSource)."""
        return self.call("POST", "/v1/tickets")


def _remaining(f):
    """Bytes left in a binary file from its position (for Content-Length)."""
    try:
        return os.fstat(f.fileno()).st_size - f.tell()
    except (AttributeError, OSError, ValueError):
        pos = f.tell()
        end = f.seek(0, os.SEEK_END)
        f.seek(pos)
        return end - pos


class Project:
    """One project: documents, indexes, conflicts, the changes feed, blobs, sync state."""

    def __init__(self, client, pid):
        self.client = client
        self.id = pid
        self.base = "/v1/projects/" + _seg(pid)

    def _docs(self, collection, doc_id=None):
        path = "%s/docs/%s" % (self.base, _seg(collection))
        return path if doc_id is None else path + "/" + _seg(doc_id)

    def info(self):
        return self.client.call("GET", self.base)

    def update(self, name=None, settings=None):
        body = {k: v for k, v in (("name", name), ("settings", settings)) if v is not None}
        return self.client.call("PATCH", self.base, json_body=body)

    def collections(self):
        return self.client.call("GET", self.base + "/collections")["collections"]

    # ---- documents

    def get(self, collection, doc_id):
        """The document: its winner's `body` and `version` (for if_match), heads, conflicts."""
        return self.client.call("GET", self._docs(collection, doc_id))

    def create(self, collection, body, id=None, schema=None):  # noqa: A002 - the API's name
        """Creates a document (a random id without `id`); 409 already_exists for an existing id."""
        return self.client.call("POST", self._docs(collection), {"id": id, "schema": schema},
                                json_body=body)

    def put(self, collection, doc_id, body, if_match=None, create_only=False, base=None,
            schema=None):
        """Updates (or creates) a document. if_match=version writes only over that winner and
        if_match="*" only if it exists, create_only=True only if it does not (else
        PreconditionFailed); base=version keeps a concurrent version on a stale base."""
        return self.client.call("PUT", self._docs(collection, doc_id),
                                {"base": base, "schema": schema}, json_body=body,
                                headers=_preconditions(if_match, create_only))

    def delete(self, collection, doc_id, if_match=None, base=None):
        """Deletes a document (a tombstone that syncs); if_match and base as for put."""
        return self.client.call("DELETE", self._docs(collection, doc_id), {"base": base},
                                headers=_preconditions(if_match, False))

    def list(self, collection, where=None, limit=None, after=None, include_deleted=False,
             conflicts=False, *, selector=None, sort=None):
        """One page {"docs", "next", "plan"} of a query; all its conditions must match.

        where={field: value}: top-level fields equal to the JSON value.
        selector: one condition on dot paths into the body, as a dict (sent as JSON), e.g.
            {"all": [{"range": {"path": "water.ph", "gt": 6.5}},
                     {"eq": {"path": "site.district", "value": 7}}]}
            (eq, in, range, bbox, all / any: docs/api.md "Subscriptions"); a deleted document
            never matches.
        sort="visited_at" (or "-visited_at", descending): in the order of that dot path, then
            of the id.
        after=page["next"] for the next page of the same query.
        "plan": {"index": the index that served the page (None: the collection was read),
            "examined": how many documents were read}."""
        query = _list_params(where, selector, sort, limit, after, include_deleted)
        query["conflicts"] = conflicts
        return self.client.call("GET", self._docs(collection), query)

    def get_many(self, collection, ids):
        """Several documents by id (keys=), in the order given (at most the daemon's
        api.max_page_size): a list of documents, with {"collection", "id", "error":
        "not_found"} for an id that is not on this device."""
        if isinstance(ids, str):
            raise TypeError("get_many takes a list of ids, not one string")
        ids = list(ids)
        if not all(isinstance(i, str) and i for i in ids):
            raise ValueError("get_many needs non-empty string ids, got %r" % (ids,))
        return self.client.call("GET", self._docs(collection),
                                {"keys": json.dumps(ids, separators=(",", ":"))})["docs"]

    def pages(self, collection, **options):
        """Every page {"docs", "next", "plan"} of a query: list()'s options (selector, sort,
        ...), following each page's "next"."""
        after = options.pop("after", None)
        while True:
            page = self.list(collection, after=after, **options)
            yield page
            after = page["next"]
            if not after:
                return

    def iter(self, collection, **options):
        """Every document of a query, across pages: list()'s options (selector, sort, ...),
        following each page's "next"."""
        for page in self.pages(collection, **options):
            yield from page["docs"]

    def history(self, collection, doc_id, limit=None):
        return self.client.call("GET", self._docs(collection, doc_id) + "/history",
                                {"limit": limit})["versions"]

    def batch(self, writes):
        """Several writes, all or nothing: [{"collection", "id"?, "body"?, "base"?, "if_match"?,
        "delete"?, "schema"?}]. Returns the write results in order."""
        return self.client.call("POST", self.base + "/batch",
                                json_body={"writes": list(writes)})["results"]

    # ---- indexes

    def create_index(self, name, collection, fields):
        """Declares the index `name` of `collection` on `fields` (1-8 dot paths, e.g.
        ["site.region", "ph"]). Returns {"name", "collection", "fields", "ready", "entries"};
        the documents already here are indexed in the background ("ready" is False until
        then: wait_for_index()). The same declaration again changes nothing; another one under
        a name in use is 409 already_exists, one over storage.max_indexes 409
        failed_precondition."""
        if isinstance(fields, str):
            raise TypeError("create_index takes a list of dot paths, not one string")
        return self.client.call("PUT", "%s/indexes/%s" % (self.base, _seg(name)),
                                json_body={"collection": collection, "fields": list(fields)})

    def list_indexes(self):
        """The project's indexes: [{"name", "collection", "fields", "ready", "entries"}], or
        {"name", "error"} for one whose declaration does not read back."""
        return self.client.call("GET", self.base + "/indexes")["indexes"]

    def drop_index(self, name):
        """Drops an index and its entries: {"name", "dropped": True}; 404 if unknown."""
        return self.client.call("DELETE", "%s/indexes/%s" % (self.base, _seg(name)))

    def wait_for_index(self, name, timeout=60.0):
        """Polls list_indexes() until the index `name` is ready and returns it. Raises
        FieldSyncError "timeout" (status 0) after `timeout` seconds, 404 not_found if there is
        no such index (e.g. dropped meanwhile), data_loss (500) if its declaration does not
        read back."""
        deadline = time.monotonic() + timeout
        pause = 0.01
        while True:
            index = next((i for i in self.list_indexes() if i.get("name") == name), None)
            if index is None:
                raise FieldSyncError(404, {"error": "not_found",
                                           "message": "no index named %r" % name})
            if "error" in index:
                raise FieldSyncError(500, {"error": "data_loss",
                                           "message": "index %r is not kept (%s): drop it and "
                                                      "declare it again" % (name, index["error"])})
            if index["ready"]:
                return index
            left = deadline - time.monotonic()
            if left <= 0:
                raise FieldSyncError(0, {"error": "timeout",
                                         "message": "index %r not ready within %g s (%d entries "
                                                    "so far)" % (name, timeout, index["entries"])})
            time.sleep(min(pause, left))  # the interval between polls, bounded by the deadline
            pause = min(pause * 2, 0.5)

    # ---- conflicts

    def conflicts(self, where=None, limit=None, after=None, include_deleted=False, *,
                  selector=None, sort=None):
        """Documents with several heads, in every collection: a page {"docs", "next", "plan"}.
        where, selector and sort as for list()."""
        return self.client.call("GET", self.base + "/conflicts",
                                _list_params(where, selector, sort, limit, after,
                                             include_deleted))

    def resolve(self, collection, doc_id, strategy=None, body=None, parents=None, delete=False):
        """strategy="merge" (409 with body["conflicting_fields"] when a field differs), or
        body={...} written over `parents` (default: every head), or delete=True."""
        if strategy is not None:
            req = {"strategy": strategy}
        else:
            req = {"delete": True} if delete else {"body": body}
            if parents is not None:
                req["parents"] = list(parents)
        return self.client.call("POST", self._docs(collection, doc_id) + "/resolve",
                                json_body=req)

    # ---- changes feed

    def changes(self, since=0, limit=None, *, include_docs=False, collections=None):
        """One page of changes after `since` (a seq or "now"): {"changes", "last_seq"}.

        include_docs=True: each change carries "doc", the document as it is now (a later
            change may have superseded it), or None once it is no longer on this device.
        collections=["obs", ...]: only changes of those collections; "last_seq" still moves
            past the others, so a page may be short or empty before the end of the feed."""
        query = {"since": since, "limit": limit}
        query.update(_feed_params(include_docs, collections))
        return self.client.call("GET", self.base + "/changes", query)

    def wait_for_changes(self, since=0, timeout_ms=30000, limit=None, *, include_docs=False,
                         collections=None):
        """Long-poll: answers at once if something is new after `since`, else waits up to
        timeout_ms for the next change (then with no changes). include_docs and collections
        as for changes() (it waits past other collections' changes)."""
        query = {"since": since, "limit": limit, "feed": "longpoll", "timeout": timeout_ms}
        query.update(_feed_params(include_docs, collections))
        return self.client.call("GET", self.base + "/changes", query,
                                timeout=self.client.timeout + timeout_ms / 1000.0)

    def follow(self, since=0, idle_timeout=60.0, *, include_docs=False, collections=None):
        """The live feed (Server-Sent Events): a generator of changes after `since`. It ends
        when the daemon closes the stream (close() the generator to stop earlier); a stream
        that brings nothing, not even a heartbeat, for idle_timeout seconds raises
        FieldSyncError. Resume with since=<the last change's seq>. include_docs and
        collections as for changes()."""
        query = {"since": since, "feed": "sse"}
        query.update(_feed_params(include_docs, collections))
        resp = self.client.open("GET", self.base + "/changes", query,
                                headers={"Accept": "text/event-stream"}, timeout=idle_timeout)
        try:
            for event, data in _sse_events(resp):
                if event == "change":
                    yield json.loads(data)
                elif event == "error":
                    body = json.loads(data)
                    raise _error(_STATUS_OF_CODE.get(body.get("error"), 500), body)
        except (OSError, http.client.HTTPException) as e:
            what = "timeout" if isinstance(e, TimeoutError) else "unavailable"
            raise FieldSyncError(0, {"error": what, "message": "changes stream: %s" % e}) from e
        finally:
            resp.connection.close()

    # ---- sync

    def sync_status(self):
        """Whether the project is in sync with the connected peers."""
        return self.client.call("GET", self.base + "/sync")

    # ---- blobs

    def put_blob(self, data, content_type="application/octet-stream", timeout=600.0):
        """Uploads a blob: bytes, a binary file object (streamed from its position) or an
        iterable of bytes (streamed, chunked). Returns
        {"id", "size", "type", "root", "ref"}: put "ref" into a document's body."""
        return self.client.call("POST", self.base + "/blobs", body=data,
                                headers={"Content-Type": content_type},
                                timeout=max(timeout, self.client.timeout))

    def get_blob(self, blob_id, variant=None, range=None, wait=None):  # noqa: A002
        """Downloads a blob (or its variant, "preview" / "thumbnail"): a BlobDownload to read
        (read(), chunks(), save()) and close (or use `with`). range=(start, end) asks for part
        of it (end inclusive, optional). A blob still coming from a peer answers 202: then
        `fetching` holds its progress; ask again."""
        headers = {}
        if range:
            headers["Range"] = "bytes=%d-%s" % (range[0], "" if len(range) < 2 or range[1] is None
                                                else range[1])
        resp = self.client.open("GET", "%s/blobs/%s" % (self.base, _seg(blob_id)),
                                {"variant": variant, "wait": wait}, headers=headers)
        return BlobDownload(resp)

    def blobs(self, after=None, limit=None):
        """One page of the project's blobs with its usage: {"blobs", "usage", "next"}."""
        return self.client.call("GET", self.base + "/blobs", {"after": after, "limit": limit})


def _preconditions(if_match, create_only):
    h = {}
    if if_match is not None:
        h["If-Match"] = "*" if if_match == "*" else '"%s"' % if_match
    if create_only:
        h["If-None-Match"] = "*"
    return h


def _sse_events(resp):
    """(event, data) of a text/event-stream; comments (heartbeats) are skipped."""
    event, data = "message", []
    while True:
        raw = resp.readline()
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "event":
                event = value


class BlobDownload:
    """A blob's answer: status 200 / 206, or 202 with `fetching` (progress) while a peer sends
    it. `type`, `size` (Content-Length), `etag`, `content_range` from its headers."""

    def __init__(self, resp):
        self._resp = resp
        self.status = resp.status
        self.type = resp.getheader("Content-Type")
        length = resp.getheader("Content-Length")
        self.size = int(length) if length is not None else None
        self.etag = resp.getheader("ETag")
        self.content_range = resp.getheader("Content-Range")
        self.fetching = None
        if resp.status == 202:
            try:
                self.fetching = json.loads(resp.read())
            finally:
                self.close()

    def chunks(self, size=_CHUNK):
        """The bytes as they arrive; raises FieldSyncError if the body ends short."""
        if self.fetching is not None:
            raise FieldSyncError(202, dict(self.fetching, error="fetching"))
        got = 0
        try:
            while True:
                c = self._resp.read(size)
                if not c:
                    break
                got += len(c)
                yield c
        except http.client.IncompleteRead as e:
            got += len(e.partial)
        except OSError as e:
            raise FieldSyncError(0, {"error": "unavailable", "message": str(e)}) from e
        finally:
            self.close()
        if self.size is not None and got != self.size:
            raise FieldSyncError(self.status, {
                "error": "data_loss",
                "message": "blob body ended after %d of %d bytes" % (got, self.size)})

    def read(self):
        return b"".join(self.chunks())

    def save(self, path):
        """Writes the bytes to path (via path.partial, renamed once complete)."""
        tmp = path + ".partial"
        try:
            with open(tmp, "wb") as f:
                for c in self.chunks():
                    f.write(c)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def close(self):
        self._resp.close()
        self._resp.connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
