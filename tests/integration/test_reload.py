#!/usr/bin/python3
"""Integration tests of what an operator sees and changes without a restart: `fieldsyncd
--check-config` checks a config file and the command line as a start would (and touches
nothing), a config file of the format before TOML still starts the daemon (with a warning
and a way to convert it, --print-config), and SIGHUP reloads the config file of a running daemon: the log level and the static
peers change at once, other changed keys are reported as needing a restart, and a file that no
longer parses leaves the running configuration in place. Run by ctest, or by hand:
/usr/bin/python3 tests/integration/test_reload.py -v
"""
import os
import re
import signal
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import (  # noqa: E402
    FAST, FIELDSYNCD, V, Daemon, DaemonTestCase, doc, free_port, share, sync_address,
    wait_until)

RELOADED = "configuration reloaded:"
NOT_RELOADED = "configuration not reloaded"
DEBUG_LINE = re.compile(r"^\S+ \S+ debug ", re.M)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def reload(d, marker=RELOADED):
    """Sends SIGHUP and waits until the daemon logged the outcome (`marker`) once more."""
    before = d.log().count(marker)
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: d.proc.poll() is None and d.log().count(marker) > before
               or d.proc.poll() is not None, 15, what="the reload of " + d.name)
    if d.proc.poll() is not None:
        raise AssertionError("fieldsyncd %s exited with %s on SIGHUP:\n%s"
                             % (d.name, d.proc.returncode, d.log()))
    return d.log()


def debug_lines(d):
    return DEBUG_LINE.findall(d.log())


def peer(d, other):
    r = d.unix("GET", "/v1/peers/%s" % other.device_id)
    return r.json() if r.status == 200 else None


class CheckConfig(DaemonTestCase):
    def check(self, *args):
        return subprocess.run([FIELDSYNCD, "--check-config", "--data-dir", self.path("data")]
                              + list(args), capture_output=True, text=True, timeout=30)

    def test_good_file_prints_ok_and_notices(self):
        conf = self.path("good.conf")
        write(conf, "[daemon]\nlog_level = \"debug\"\n[storage]\ndurable = false\n"
                    "[peer.hub]\naddress = \"127.0.0.1:7891\"\n"
                    "device = \"%s\"\n" % ("a" * 52))
        r = self.check("--config", conf, "--set", "api.http_port=0")
        self.assertEqual(r.returncode, 0, r)
        self.assertTrue(r.stdout.startswith("config OK (%s)\n" % conf), r.stdout)
        self.assertNotIn("warning", r.stdout)
        self.assertIn("notice: storage.durable = false", r.stdout)
        self.assertEqual(r.stderr, "")
        self.assertFalse(os.path.exists(self.path("data")), "the data directory was created")

    def test_bad_key_names_file_line_and_key(self):
        conf = self.path("bad.conf")
        write(conf, "[api]\n# comment\nhtp_port = 7890\n")
        r = self.check("--config", conf)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("%s:3: api.htp_port: unknown key (did you mean api.http_port?)" % conf,
                      r.stderr)
        self.assertNotIn("config OK", r.stdout)
        self.assertFalse(os.path.exists(self.path("data")))

    def test_bad_value_and_bad_override(self):
        conf = self.path("value.conf")
        write(conf, "[sync]\nmax_peers = 7\n\n[api]\nhttp_port = \"abc\"\n")
        r = self.check("--config", conf)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("%s:5: api.http_port: expected an integer 0..65535, got '\"abc\"'" % conf,
                      r.stderr)
        # Not TOML (and not the previous format either): the line, and the key where known.
        write(conf, "[sync]\nmax_peers = 7\n\n[api]\nhttp_port = abc\n")
        r = self.check("--config", conf)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("%s:5: not valid TOML" % conf, r.stderr)
        self.assertIn("%s:5: api.http_port: expected an integer 0..65535, got 'abc'" % conf,
                      r.stderr)
        # The command line and the checks across keys (finalize) are the same as at start.
        write(conf, "[sync]\nmax_peers = 7\n")
        r = self.check("--config", conf, "--set", "sync.retry_min_ms=5000",
                       "--set", "sync.retry_max_ms=1000")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("sync.retry_min_ms: 5000 is larger than sync.retry_max_ms (1000)", r.stderr)
        self.assertFalse(os.path.exists(self.path("data")))


# A config file as the releases before TOML wrote it (bare values, ';' comments, yes/no).
PREVIOUS_FORMAT = """# written for the release before
[daemon]
log_level = debug ; while we look at it
[api]
max_body_bytes = 64k
socket_mode = 0600
[storage]
durable = no
[sync]
max_peers = 7
"""


class PreviousFormat(DaemonTestCase):
    def test_check_and_print_convert_the_file(self):
        conf = self.path("old.conf")
        write(conf, PREVIOUS_FORMAT)
        r = subprocess.run([FIELDSYNCD, "--check-config", "--config", conf, "--data-dir",
                            self.path("data")], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("warning: %s is in the config format of the releases before TOML" % conf,
                      r.stdout)
        self.assertIn("fieldsyncd --print-config --config %s" % conf, r.stdout)
        r = subprocess.run([FIELDSYNCD, "--print-config", "--config", conf],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("releases before TOML", r.stderr)
        self.assertIn('[daemon]\ndata_dir = ""\nlog_level = "debug"\n', r.stdout)
        self.assertIn('max_body_bytes = "64k"\n', r.stdout)
        self.assertIn('socket_mode = "0600"\n', r.stdout)
        self.assertIn("durable = false\n", r.stdout)
        self.assertIn("max_peers = 7\n", r.stdout)
        # The printed file is TOML: it checks without the warning, to the same settings.
        new = self.path("new.conf")
        write(new, r.stdout)
        r = subprocess.run([FIELDSYNCD, "--check-config", "--config", new, "--data-dir",
                            self.path("data")], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r)
        self.assertNotIn("warning", r.stdout)
        self.assertIn("notice: storage.durable = false", r.stdout)
        again = subprocess.run([FIELDSYNCD, "--print-config", "--config", new],
                               capture_output=True, text=True, timeout=30)
        with open(new) as f:
            self.assertEqual(again.stdout, f.read())
        self.assertEqual(again.stderr, "")
        self.assertFalse(os.path.exists(self.path("data")))

    def test_daemon_starts_with_a_file_of_the_previous_format(self):
        s = dict(FAST)
        s["discovery.enabled"] = "false"
        d = Daemon(name="old", settings=s)
        self.daemons.append(d)
        write(d.config_path, PREVIOUS_FORMAT)
        d.start()
        status = d.unix("GET", "/v1/status").json()
        self.assertEqual(status["api"]["max_body_bytes"], 64 * 1024)  # 64k from the file
        log = d.log()
        self.assertEqual(log.count("is in the config format of the releases before TOML"), 1, log)
        self.assertIn("fieldsyncd --print-config --config " + d.config_path, log)
        self.assertRegex(log, r"warning \S+ is in the config format of the releases before TOML")
        self.assertIn("(mode 600)", log)  # api.socket_mode = 0600 from the old file
        self.assertTrue(debug_lines(d), "daemon.log_level = debug from the old file")
        # A reload reads it the same way (nothing changed) and does not warn again.
        log = reload(d)
        self.assertIn("configuration reloaded: nothing changed", log)
        self.assertEqual(log.count("is in the config format of the releases before TOML"), 1)


class Reload(DaemonTestCase):
    DEFAULTS = {"discovery.enabled": "false"}

    def test_log_level(self):
        a = self.daemon("alpha")
        self.assertEqual(a.unix("GET", "/v1/status").status, 200)
        self.assertEqual(debug_lines(a), [])  # info: a request logs nothing at debug
        write(a.config_path, "[daemon]\nlog_level = \"debug\"\n")
        log = reload(a)
        self.assertIn("daemon.log_level info -> debug", log)
        self.assertNotIn("needs a restart", log)
        self.assertEqual(a.unix("GET", "/v1/status").status, 200)
        wait_until(lambda: any("api GET /v1/status -> 200" in line
                               for line in a.log().splitlines() if DEBUG_LINE.match(line)),
                   10, what="a debug line after the reload")
        # And back: nothing new at debug after the next reload to info.
        write(a.config_path, "[daemon]\nlog_level = \"info\"\n")
        reload(a)
        count = len(debug_lines(a))
        self.assertEqual(a.unix("GET", "/v1/status").status, 200)
        reload(a)  # (a line after the request: the request's would be logged by now)
        self.assertEqual(len(debug_lines(a)), count)

    def test_static_peer_added_then_removed(self):
        a = self.daemon("alpha")
        b = self.daemon("beta")
        pid = share(b, a)
        r = b.unix("POST", V + "/%s/docs/obs?id=x1" % pid, {"v": 1})
        self.assertEqual(r.status, 201, r)
        self.assertIsNone(peer(a, b))  # nobody dials anybody yet
        write(a.config_path, "[peer.beta]\naddress = \"%s\"\ndevice = \"%s\"\n"
                             % (sync_address(b), b.device_id))
        log = reload(a)
        self.assertRegex(log, r"static peer beta \([\w-]+\) added from the config: dialing")
        self.assertNotIn("needs a restart", log)
        wait_until(lambda: doc(a, pid, "x1"), 20, what="alpha to sync x1 from its new peer")
        self.assertTrue(peer(a, b)["configured"])
        # Removed from the file: no longer dialed, its connection closed.
        write(a.config_path, "")
        log = reload(a)
        self.assertIn("static peer beta", log)
        self.assertIn("removed from the config", log)
        wait_until(lambda: not (peer(a, b) or {}).get("connected"), 10,
                   what="alpha to drop beta")
        p = peer(a, b)
        self.assertFalse(p and p["configured"], p)

    def test_static_peer_moved(self):
        a = self.daemon("alpha")
        b = self.daemon("beta")
        pid = share(b, a)
        self.assertEqual(b.unix("POST", V + "/%s/docs/obs?id=x1" % pid, {"v": 1}).status, 201)
        nobody = "127.0.0.1:%d" % free_port()  # nothing listens there
        entry = "[peer.beta]\naddress = \"%s\"\ndevice = \"%s\"\n"
        write(a.config_path, entry % (nobody, b.device_id))
        reload(a)
        wait_until(lambda: (peer(a, b) or {}).get("failures", 0) >= 1, 10,
                   what="alpha to fail to reach beta at the wrong address")
        write(a.config_path, entry % (sync_address(b), b.device_id))
        log = reload(a)
        self.assertIn("static peer beta (", log)
        self.assertIn("now at " + sync_address(b), log)
        wait_until(lambda: doc(a, pid, "x1"), 20, what="alpha to sync x1 at beta's new address")

    def test_restart_only_key_is_reported(self):
        a = self.daemon("alpha")
        write(a.config_path, "[sync]\nmax_peers = 7\n[daemon]\nlog_level = \"debug\"\n"
                             "[api]\nmax_page_size = 10\n")
        log = reload(a)
        line = [x for x in log.splitlines() if "needs a restart" in x]
        self.assertEqual(len(line), 1, log)
        self.assertTrue(line[0].endswith("needs a restart: api.max_page_size, sync.max_peers"),
                        line[0])
        # The running daemon keeps its page size until a restart.
        self.assertEqual(a.unix("GET", "/v1/status").json()["api"]["max_page_size"], 1000)

    def test_broken_file_keeps_the_running_config(self):
        a = self.daemon("alpha")
        write(a.config_path, "[daemon]\nlog_level = \"debug\"\nthis is not a setting\n")
        log = reload(a, NOT_RELOADED)
        self.assertIn("%s:3: not valid TOML" % a.config_path, log)
        self.assertEqual(a.unix("GET", "/v1/status").status, 200)
        reload(a, NOT_RELOADED)  # the level stayed info: the request logged nothing
        self.assertEqual(debug_lines(a), [])
        # Fixed: the next SIGHUP applies it.
        write(a.config_path, "[daemon]\nlog_level = \"debug\"\n")
        log = reload(a)
        self.assertIn("daemon.log_level info -> debug", log)


if __name__ == "__main__":
    unittest.main()
