"""Test harness for fieldsync integration tests: starts real fieldsyncd processes on temporary
data directories and talks to them over their real Unix socket and TCP port.

Python 3 standard library only. Typical use:

    with Daemon(FIELDSYNCD, name="a") as a, Daemon(FIELDSYNCD, name="b") as b:
        r = a.unix("POST", "/v1/projects", {"name": "demo"})
        assert r.status == 201, r.text
        pid = r.json()["id"]
        b.http("GET", "/v1/status")           # TCP with the bearer token

Every wait polls with a deadline (no sleeps as synchronisation). Paths are short (/tmp/fsi-*)
because a Unix socket path is limited to 107 bytes. Set FIELDSYNC_KEEP_TMP=1 to keep the
directories (and daemon logs) of a run.
"""
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

START_DEADLINE_S = float(os.environ.get("FIELDSYNC_START_DEADLINE_S", "30"))


def find_binary(env_name, build_rel):
    """A binary from the environment (set by ctest) or from ./build."""
    path = os.environ.get(env_name)
    if path:
        return path
    here = os.path.dirname(os.path.abspath(__file__))
    guess = os.path.normpath(os.path.join(here, "..", "..", "build", build_rel))
    return guess


FIELDSYNCD = find_binary("FIELDSYNCD", "daemon/fieldsyncd")
SYNCCTL = find_binary("SYNCCTL", "cli/syncctl")
MAKE_IMAGE = find_binary("FIELDSYNC_MAKE_TEST_IMAGE", "tests/media/media_make_test_image")


def make_image(path, w, h):
    """A test photo of w x h at `path` (JPEG with EXIF and a GPS position, or PNG with alpha,
    by the extension), made by media_make_test_image; returns its bytes."""
    subprocess.run([MAKE_IMAGE, path, str(w), str(h)], check=True, timeout=120)
    with open(path, "rb") as f:
        return f.read()


def distinct_bytes(size, seed):
    """`size` bytes that differ per seed (one block of randomness, each MiB made distinct):
    large test blobs without hashing a fresh random stream for each."""
    mib = 1 << 20
    block = os.urandom(mib)
    out = bytearray()
    i = 0
    while len(out) < size:
        out += (seed.to_bytes(4, "big") + i.to_bytes(4, "big") + block[8:])[:size - len(out)]
        i += 1
    return bytes(out)


def wait_until(predicate, deadline_s=10.0, interval_s=0.02, what="condition"):
    """Polls predicate() until it returns a truthy value; raises TimeoutError at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            raise TimeoutError("timed out after %.1f s waiting for %s" % (deadline_s, what))
        time.sleep(interval_s)


def read_line(stream, timeout_s=10.0, what="a line"):
    """stream.readline() bounded by a deadline (a pipe from a child process has no timeout of
    its own): a reader thread does the blocking read; raises TimeoutError at the deadline."""
    import queue
    import threading
    box = queue.Queue(maxsize=1)

    def reader():
        try:
            box.put(("line", stream.readline()))
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            box.put(("error", e))

    threading.Thread(target=reader, daemon=True).start()
    try:
        kind, value = box.get(timeout=timeout_s)
    except queue.Empty:
        raise TimeoutError("timed out after %.1f s waiting for %s" % (timeout_s, what)) from None
    if kind == "error":
        raise value
    return value


class FakeBle:
    """Private D-Bus buses (each one daemon's "system bus") and fake BlueZ processes on them
    (fake_bluez.py: adapters on those buses and a link between them); stop() ends them all."""

    SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_bluez.py")

    def __init__(self, log_path):
        self.log_path = log_path
        self.procs = []

    def bus(self):
        """Starts a private bus; returns its address."""
        p = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs.append(p)
        return read_line(p.stdout, what="the dbus-daemon address").strip()

    def start(self, buses, *extra):
        """A fake BlueZ with one adapter on each bus (fake_bluez.py lists the options)."""
        with open(self.log_path, "ab") as log:
            p = subprocess.Popen(["/usr/bin/python3", self.SCRIPT] +
                                 [a for b in buses for a in ("--bus", b)] + list(extra),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                 text=True)
        self.procs.append(p)
        ready = read_line(p.stdout, what="fake BlueZ to start").strip()
        if ready != "ready":
            raise AssertionError("fake BlueZ did not start: %r" % ready)
        return p

    def ctl(self, fake, command):
        """Sends a command to a fake BlueZ (fake_bluez.py lists them); returns its answer."""
        fake.stdin.write(command + "\n")
        fake.stdin.flush()
        answer = read_line(fake.stdout, what="fake BlueZ to do " + command).strip()
        if not answer.startswith("ok"):
            raise AssertionError(answer)
        return answer

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdin, p.stdout):
                if f:
                    f.close()
        self.procs = []


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body        # bytes

    @property
    def text(self):
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "Response(%d, %r)" % (self.status, self.text[:300])


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix stream socket (keep-alive works as with TCP)."""

    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s


def _encode(body):
    if body is None:
        return None
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def request(conn, method, path, body=None, headers=None):
    """One request on an http.client connection; returns a Response."""
    data = _encode(body)
    h = dict(headers or {})
    if data is not None:
        h.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    payload = r.read()
    return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, payload)


class Daemon:
    """One fieldsyncd process on its own temporary data directory.

    settings: extra --set key=value pairs (dict). The API listens on <tmp>/api.sock and on an
    ephemeral 127.0.0.1 port; sync listens on an ephemeral port (sync.listen_port=0).
    """

    def __init__(self, binary=None, name="d", settings=None, workdir=None, env=None, prefix=()):
        self.binary = binary or FIELDSYNCD
        self.prefix = list(prefix)  # a command the daemon runs under (ip netns exec NS)
        self.name = name
        self.settings = dict(settings or {})
        self.own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="fsi-%s-" % name, dir="/tmp")
        self.data_dir = os.path.join(self.workdir, "data")
        self.socket_path = os.path.join(self.workdir, "api.sock")
        self.config_path = os.path.join(self.workdir, "empty.conf")
        self.log_path = os.path.join(self.workdir, "daemon.log")
        self.env = env
        self.proc = None
        self.port = None
        self.token = None
        self.device_id = None
        with open(self.config_path, "a"):
            pass

    # ---- lifecycle
    def args(self):
        a = self.prefix + [self.binary, "--config", self.config_path, "--data-dir", self.data_dir,
             "--set", "api.socket_path=" + self.socket_path,
             "--set", "api.http_port=0",
             "--set", "sync.listen_port=0"]
        for k, v in self.settings.items():
            a += ["--set", "%s=%s" % (k, v)]
        return a

    def start(self, deadline_s=START_DEADLINE_S):
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env.pop("JOURNAL_STREAM", None)
        if self.env:
            env.update(self.env)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=self._log, stderr=self._log, env=env)
        try:
            self.wait_ready(deadline_s)
        except BaseException:
            # Never leave a daemon behind when its start fails (setUpClass has no cleanup).
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self._log.close()
            self.proc = None
            raise
        return self

    def wait_ready(self, deadline_s=START_DEADLINE_S):
        """Polls the Unix socket until GET /v1/status answers 200; then reads port and token."""
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("fieldsyncd %s exited with %s during start:\n%s"
                                   % (self.name, self.proc.returncode, self.log()))
            try:
                r = self.unix("GET", "/v1/status", timeout=2)
            except OSError:
                return None
            return r if r.status == 200 else None
        status = wait_until(ready, deadline_s, what="fieldsyncd %s to answer" % self.name).json()
        self.device_id = status["device_id"]
        if status["api"]["http"]["enabled"]:
            try:
                with open(os.path.join(self.data_dir, "api.port")) as f:
                    self.port = int(f.read().strip())
            except FileNotFoundError:
                # api.port could not be written (e.g. a full disk): the status has the port.
                self.port = status["api"]["http"]["port"]
            with open(os.path.join(self.data_dir, "api.token")) as f:
                self.token = f.read().strip()
        return status

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signals the daemon and waits for it; returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._log.close()
        self.proc = None
        return rc

    def kill(self):
        return self.stop(signal.SIGKILL)

    def restart(self):
        rc = self.stop()
        self.start()
        return rc

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop(timeout=10)
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass
        if self.own_workdir and not os.environ.get("FIELDSYNC_KEEP_TMP"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # ---- HTTP
    def unix_connection(self, timeout=30):
        return UnixHTTPConnection(self.socket_path, timeout=timeout)

    def tcp_connection(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def unix(self, method, path, body=None, headers=None, timeout=30):
        """One request over the Unix socket (new connection)."""
        conn = self.unix_connection(timeout)
        try:
            return request(conn, method, path, body, headers)
        finally:
            conn.close()

    def http(self, method, path, body=None, headers=None, token=True, timeout=30):
        """One request over TCP. token=True sends the daemon's token, a string sends that,
        None/False sends no Authorization header."""
        h = dict(headers or {})
        if token is True:
            h["Authorization"] = "Bearer " + self.token
        elif token:
            h["Authorization"] = "Bearer " + token
        conn = self.tcp_connection(timeout)
        try:
            return request(conn, method, path, body, h)
        finally:
            conn.close()

    def syncctl(self, *args, binary=None, input_text=None, timeout=30):
        """Runs syncctl against this daemon; returns CompletedProcess (text)."""
        cmd = [binary or SYNCCTL, "--socket", self.socket_path] + list(args)
        return subprocess.run(cmd, input=input_text, capture_output=True, text=True, timeout=timeout)

    # ---- conveniences
    def create_project(self, name="demo", settings=None):
        body = {"name": name}
        if settings is not None:
            body["settings"] = settings
        r = self.unix("POST", "/v1/projects", body)
        if r.status != 201:
            raise AssertionError("create project failed: %r" % r)
        return r.json()["id"]


class SseReader:
    """Reads a Server-Sent Events stream from a raw socket; events() yields parsed events."""

    def __init__(self, sock_path=None, tcp=None, path="/", headers=None, timeout=10):
        if sock_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(sock_path)
        else:
            self.sock = socket.create_connection(tcp, timeout=timeout)
        lines = ["GET %s HTTP/1.1" % path, "Host: localhost", "Accept: text/event-stream"]
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        head = self._read_until(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].decode()
        self.status = int(status_line.split()[1])
        self.head = head.decode(errors="replace")

    def _read_until(self, marker):
        while marker not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("stream closed")
            self.buf += chunk
        part, self.buf = self.buf.split(marker, 1)
        return part

    def next_block(self):
        """The next event block (text between blank lines), including comment-only blocks."""
        return self._read_until(b"\n\n").decode()

    def next_event(self, skip_comments=True):
        """Returns a dict with id/event/data (data parsed as JSON when possible)."""
        while True:
            block = self.next_block()
            ev = {"comments": []}
            for line in block.split("\n"):
                if line.startswith(":"):
                    ev["comments"].append(line[1:].strip())
                elif ":" in line:
                    k, v = line.split(":", 1)
                    ev[k] = v[1:] if v.startswith(" ") else v
            if "data" in ev:
                try:
                    ev["json"] = json.loads(ev["data"])
                except ValueError:
                    pass
            if skip_comments and "data" not in ev:
                continue  # heartbeat comments, "retry:" hints
            return ev

    def close(self):
        self.sock.close()


# --- helpers shared by the multi-daemon suites ---------------------------------------------

V = "/v1/projects"
# Daemons that sync with each other on 127.0.0.1: quick redials, no fsync per commit.
FAST = {"storage.durable": "false", "sync.retry_min_ms": 100, "sync.retry_max_ms": 1000,
        "sync.listen_address": "127.0.0.1"}


def free_port():
    """A port for sync.listen_port that stays the same across restarts of a daemon (its peers
    keep dialing the address they were given). It is taken below the kernel's ephemeral range
    (ip_local_port_range): a port from that range can be handed to any outgoing connection or
    port-0 bind on the machine while the daemon is down, and its restart would then fail."""
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10000, max(low, 10001))
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_daemon(name, **settings):
    """A started daemon named `name` with FAST settings, overridden by `settings`."""
    s = dict(FAST)
    s["daemon.device_name"] = name
    s.update(settings)
    return Daemon(name=name, settings=s).start()


def status(d):
    return d.unix("GET", "/v1/status").json()


def sync_address(d):
    """Where `d` listens for sync on loopback, as host:port."""
    return "127.0.0.1:%d" % status(d)["peers"]["listen_port"]


def add_peer(d, other):
    """Makes `d` dial `other` (and remember it); returns the peer JSON."""
    r = d.unix("POST", "/v1/peers", {"address": sync_address(other), "device_id": other.device_id,
                                     "name": other.name})
    assert r.status == 201, r
    return r.json()


def share(src, *others, name="survey"):
    """Creates a project on src and imports it on the others; returns its id."""
    pid = src.create_project(name)
    sec = src.unix("GET", V + "/%s/secret" % pid)
    assert sec.status == 200, sec
    for o in others:
        r = o.unix("POST", V + "/import", sec.json())
        assert r.status == 201, r
    return pid


def roles(d, pid):
    """{device id: role} from d's membership records of pid."""
    r = d.unix("GET", V + "/%s/members" % pid)
    assert r.status == 200, r
    return {m["device_id"]: m["role"] for m in r.json()["members"]}


def doc(d, pid, doc_id, collection="obs"):
    """The document's JSON on d, or None when d does not have it."""
    r = d.unix("GET", V + "/%s/docs/%s/%s" % (pid, collection, doc_id))
    return r.json() if r.status == 200 else None


class DaemonTestCase(unittest.TestCase):
    """A test that starts daemons (`self.daemon(name, **settings)`: FAST settings, then the
    class's DEFAULTS, then `settings`) and a scratch directory (`self.path(name)`); both are
    closed and removed after each test."""
    DEFAULTS = {}

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fsi-%s-" % type(self).__name__.lower())
        self.daemons = []

    def tearDown(self):
        if self._failed():
            # What each daemon said last: a failure that does not repeat can still be read.
            for d in self.daemons:
                lines = d.log().splitlines()[-80:]
                sys.stderr.write("---- last %d lines of %s's log\n" % (len(lines), d.name))
                sys.stderr.write("\n".join(lines) + "\n")
        for d in self.daemons:
            d.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _failed(self):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        if result is None:
            return False
        return any(t is self for t, _ in list(result.errors) + list(result.failures))

    def daemon(self, name="alpha", **settings):
        s = dict(self.DEFAULTS)
        s.update(settings)
        d = start_daemon(name, **s)
        self.daemons.append(d)
        return d

    def path(self, name):
        return os.path.join(self.tmp, name)
