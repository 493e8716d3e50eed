#!/usr/bin/python3
"""Browser tests: Debian's chromium, headless, driven by puppeteer-core (pinned, installed once
from the npm registry into a cache; it never downloads a browser) against real fieldsyncd
processes.

- The status page: opened with the login link `syncctl ui` prints, it shows this device, both
  peers in their states with the reason, a conflict, and creates an invite whose QR code, cut
  from a screenshot and decoded by zbarimg, is the invite code; the screenshot is the
  viewport's size, not blank, and dark at the QR's finder pattern.
- A web app (docs/api.md "Web apps"): a page served from an origin in api.cors_origins reads
  the API with its token and opens an EventSource with a stream ticket, which delivers a change
  written afterwards; a page from another origin is blocked by the browser.

Needs chromium, zbarimg (zbar-tools), node and npm (scripts/install-deps.sh).
FIELDSYNC_BROWSER_TEST=0 skips it (no network for the one npm install). Run by ctest, or by hand:
/usr/bin/python3 tests/integration/test_browser.py -v
"""
import fcntl
import http.server
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import (  # noqa: E402
    FAST, V, Daemon, add_peer, share, wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))
PUPPETEER_CORE = "24.43.1"  # supports Node.js 18 (Debian 12) and later
CHROMIUM = os.environ.get("FIELDSYNC_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = (1000, 1000)


def puppeteer_dir():
    """puppeteer-core, installed once into a cache shared by the runs (like npx's ~/.npm for
    scripts/lint-api.sh); a lock keeps two parallel runs from installing at once."""
    cache = os.environ.get("FIELDSYNC_NODE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "fieldsync-tests")
    d = os.path.join(cache, "puppeteer-core-" + PUPPETEER_CORE)
    os.makedirs(cache, exist_ok=True)
    with open(d + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isfile(os.path.join(d, "node_modules", "puppeteer-core", "package.json")):
            os.makedirs(d, exist_ok=True)
            env = dict(os.environ, PUPPETEER_SKIP_DOWNLOAD="1", NO_UPDATE_NOTIFIER="1")
            p = subprocess.run(["npm", "install", "--prefix", d, "--no-save", "--no-audit",
                                "--no-fund", "--no-package-lock", "--loglevel=error",
                                "puppeteer-core@" + PUPPETEER_CORE],
                               capture_output=True, text=True, timeout=600, env=env)
            if p.returncode != 0:
                raise RuntimeError("npm install puppeteer-core@%s failed (no network? "
                                   "FIELDSYNC_BROWSER_TEST=0 skips this test):\n%s"
                                   % (PUPPETEER_CORE, p.stdout + p.stderr))
    return d


def read_png(path):
    """(width, height, rows of (r, g, b)) of an 8-bit RGB or RGBA, non-interlaced PNG (what
    chromium's screenshots are)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(w)])
        prev = line
    return w, h, rows


def dark(px):
    return sum(px) < 200


def light(px):
    return sum(px) > 600


class WebServer:
    """A static web app's origin: one page on 127.0.0.1, port 0."""

    def __init__(self):
        class Page(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"<!doctype html><title>app</title><p>a web app</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@unittest.skipIf(os.environ.get("FIELDSYNC_BROWSER_TEST") == "0", "FIELDSYNC_BROWSER_TEST=0")
class BrowserTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for tool in (CHROMIUM, "node", "npm", "zbarimg"):
            if not shutil.which(tool):
                raise unittest.SkipTest("%s is not installed (scripts/install-deps.sh)" % tool)
        cls.puppeteer = puppeteer_dir()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fsi-browser-")
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def spawn(self, name, **settings):
        s = dict(FAST, **{"discovery.enabled": "false", "api.http_port": 0,
                          "daemon.device_name": name})
        s.update(settings)
        d = Daemon(name=name, settings=s).start()
        self.daemons.append(d)
        return d

    def browse(self, mode, **cfg):
        cfg.update(mode=mode, chromium=CHROMIUM, profile=os.path.join(self.tmp, "profile-" + mode))
        p = subprocess.run(["node", os.path.join(HERE, "browser_driver.js"), json.dumps(cfg)],
                           capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, PUPPETEER_DIR=self.puppeteer))
        self.assertEqual(p.returncode, 0, "browser_driver.js %s failed:\n%s" % (mode, p.stderr))
        return json.loads(p.stdout)

    def test_status_page_peers_conflict_and_invite_qr(self):
        a = self.spawn("alpha")
        b = self.spawn("beta")
        c = self.spawn("gamma")
        pid = share(a, b, c, name="survey")
        add_peer(a, b)
        add_peer(a, c)
        self.assertEqual(c.stop(), 0)  # gamma went home: alpha retries it, and says why
        # A conflict on alpha: two writes on the same base.
        r = a.unix("POST", V + "/%s/docs/obs?id=well-4" % pid, {"ph": 7})
        self.assertEqual(r.status, 201, r)
        base = r.json()["version"]
        for ph in (7.1, 7.2):
            r = a.unix("PUT", V + "/%s/docs/obs/well-4?base=%s" % (pid, base), {"ph": ph})
            self.assertEqual(r.status, 200, r)

        def state(of):
            return a.unix("GET", "/v1/peers/" + of.device_id).json().get("state")
        wait_until(lambda: state(b) == "in_sync", 20, what="alpha in sync with beta")
        wait_until(lambda: state(c) == "backoff", 20, what="alpha backing off from gamma")

        link = a.syncctl("--json", "ui")
        self.assertEqual(link.returncode, 0, link.stderr)
        url = json.loads(link.stdout)["url"]
        self.assertTrue(url.startswith("http://127.0.0.1:%d/ui/#login=" % a.port), url)
        shot, qr_shot = os.path.join(self.tmp, "page.png"), os.path.join(self.tmp, "qr.png")
        out = self.browse("status_page", url=url, pid=pid, screenshot=shot, qr_screenshot=qr_shot,
                          peer_states={b.device_id: "in_sync", c.device_id: "backoff"})

        self.assertEqual(out["console"], [])  # no script error, no CSP violation
        self.assertIn("script-src 'self'", out["csp"])
        self.assertNotIn("login", out["location"])  # the ticket left the address bar
        self.assertIn("alpha", out["device"])
        rows = {p["device"]: p for p in out["peers"]}
        self.assertEqual(rows[b.device_id]["state"], "in_sync")
        self.assertIn("in sync", rows[b.device_id]["progress"])
        self.assertEqual(rows[c.device_id]["state"], "backoff")
        self.assertNotEqual(rows[c.device_id]["reason"], "", rows[c.device_id])
        self.assertEqual(len(out["conflicts"]), 1, out["conflicts"])
        self.assertIn("obs/well-4: 2 versions", out["conflicts"][0])
        code = out["invite_code"]
        self.assertTrue(code.startswith("FS1:"), code)
        invites = a.unix("GET", V + "/%s/invites" % pid).json()["invites"]
        self.assertEqual([i["state"] for i in invites], ["open"])
        self.assertEqual(out["session_may_not"], 403)
        self.assertTrue(out["reloaded"])

        # The QR in the screenshot decodes to the invite code.
        for png in (qr_shot, shot):
            z = subprocess.run(["zbarimg", "--raw", "-q", png], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(z.returncode, 0, "zbarimg found no QR code in %s: %s" % (png, z.stderr))
            self.assertEqual(z.stdout.strip(), code)
        # The screenshot: the viewport's size, not blank, the QR's finder pattern where the
        # page put it (dark centre, light quiet zone).
        w, h, rows_px = read_png(shot)
        self.assertEqual((w, h), VIEWPORT)
        colours = {px for row in rows_px[::10] for px in row[::10]}
        self.assertGreater(len(colours), 3)
        qr = out["qr"]
        unit = qr["width"] / qr["modules"]

        def at(mx, my):
            return rows_px[int(qr["y"] + my * unit)][int(qr["x"] + mx * unit)]
        self.assertTrue(dark(at(7.5, 7.5)), at(7.5, 7.5))     # centre of the top-left finder
        self.assertTrue(light(at(5.5, 5.5)), at(5.5, 5.5))    # its white ring
        self.assertTrue(dark(at(4.5, 4.5)), at(4.5, 4.5))     # its dark border
        self.assertTrue(light(at(2, 2)), at(2, 2))            # the quiet zone
        self.assertTrue(dark(at(qr["modules"] - 7.5, 7.5)))   # the top-right finder

    def test_web_app_cors_and_stream_ticket(self):
        web = WebServer()
        self.addCleanup(web.close)
        allowed = "http://127.0.0.1:%d" % web.port
        a = self.spawn("web", **{"api.cors_origins": allowed})
        pid = a.create_project("web")
        api = "http://127.0.0.1:%d" % a.port
        out = self.browse("web_app", api=api, token=a.token, pid=pid,
                          allowed_page=allowed + "/",
                          blocked_page="http://localhost:%d/" % web.port)
        self.assertEqual(out["allowed"], {"device_id": a.device_id, "origin": allowed})
        self.assertEqual(out["write_status"], 201)
        self.assertEqual([(c["collection"], c["id"]) for c in out["received"]], [("obs", "after")])
        blocked = out["blocked"]
        self.assertEqual(blocked["origin"], "http://localhost:%d" % web.port)
        for name in ("with_token", "simple"):
            self.assertTrue(blocked[name].startswith("TypeError"), blocked)


if __name__ == "__main__":
    unittest.main()
