#!/usr/bin/python3
"""Starts the real fieldsyncd as systemd would for a Type=notify unit (NOTIFY_SOCKET,
WATCHDOG_USEC and WATCHDOG_PID set) and checks the notifications: READY=1 (with MAINPID and a
STATUS line) only once the API accepts connections, WATCHDOG=1 pings at half of WATCHDOG_USEC,
RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC, now) after SIGHUP and READY=1 once the reload
is done, STOPPING=1 after SIGTERM, then exit status 0. A WATCHDOG_PID naming another process
turns the pings off.

Usage: sd_notify_daemon_test.py PATH/TO/fieldsyncd
"""
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

DEADLINE_S = 30  # generous: sanitizer builds start slowly on a loaded machine


def fail(msg, proc=None):
    print("FAIL:", msg)
    if proc is not None:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=10)
        print("--- fieldsyncd stderr ---")
        print(err.decode(errors="replace"))
    sys.exit(1)


def receive_until(sock, wanted, proc, deadline_s=DEADLINE_S):
    """Collects datagrams until one contains the line `wanted`; returns all messages seen."""
    seen = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if ready:
            msg = sock.recv(4096).decode()
            seen.append(msg)
            if wanted in msg.splitlines():
                return seen
        elif proc.poll() is not None:
            fail("fieldsyncd exited with %s before sending %s (got %r)" % (proc.returncode, wanted, seen), proc)
    fail("no %s within %d s (got %r)" % (wanted, deadline_s, seen), proc)


def fields_of(msg):
    return dict(line.split("=", 1) for line in msg.splitlines() if "=" in line)


def start(daemon, tmp, notify_path, watchdog_pid):
    """Starts fieldsyncd as systemd would. systemd sets WATCHDOG_PID to the service's pid
    before exec: a shell exports its own pid ($$) and execs the daemon in its place, unless
    `watchdog_pid` names another process."""
    api_socket = os.path.join(tmp, "api.sock")
    data_dir = os.path.join(tmp, "data")
    config = os.path.join(tmp, "empty.conf")
    open(config, "w").close()
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="2000000", HOME=tmp)
    env.pop("WATCHDOG_PID", None)
    pid = str(watchdog_pid) if watchdog_pid else "$$"
    proc = subprocess.Popen(
        ["/bin/sh", "-c", 'WATCHDOG_PID=%s; export WATCHDOG_PID; exec "$0" "$@"' % pid, daemon,
         "--config", config,
         "--set", "daemon.data_dir=" + data_dir,
         "--set", "api.socket_path=" + api_socket,
         "--set", "api.http_port=0",
         "--set", "sync.listen_port=0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, api_socket, data_dir


def wrong_watchdog_pid(daemon):
    """WATCHDOG_PID naming another process: READY=1 but no WATCHDOG=1 pings."""
    tmp = tempfile.mkdtemp(prefix="fsn-", dir="/tmp")
    try:
        notify_path = os.path.join(tmp, "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        proc, _, _ = start(daemon, tmp, notify_path, watchdog_pid=1)
        receive_until(notify, "READY=1", proc)
        end = time.monotonic() + 3  # 3 watchdog periods of 1 s
        while time.monotonic() < end:
            ready, _, _ = select.select([notify], [], [], 0.2)
            if ready:
                msg = notify.recv(4096).decode()
                if "WATCHDOG=1" in msg.splitlines():
                    fail("WATCHDOG=1 sent although WATCHDOG_PID=1", proc)
        print("ok: no WATCHDOG=1 when WATCHDOG_PID names another process")
        proc.send_signal(signal.SIGTERM)
        receive_until(notify, "STOPPING=1", proc)
        if proc.wait(timeout=DEADLINE_S) != 0:
            fail("fieldsyncd exited with %d after SIGTERM" % proc.returncode, proc)
        proc.stderr.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    daemon = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="fsn-", dir="/tmp")  # short: Unix socket paths are <= 107 bytes
    try:
        notify_path = os.path.join(tmp, "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        proc, api_socket, data_dir = start(daemon, tmp, notify_path, watchdog_pid=None)

        msgs = receive_until(notify, "READY=1", proc)
        ready = [m for m in msgs if "READY=1" in m.splitlines()][0]
        fields = fields_of(ready)
        if fields.get("MAINPID") != str(proc.pid):
            fail("READY message %r lacks MAINPID=%d" % (ready, proc.pid), proc)
        if api_socket not in fields.get("STATUS", ""):
            fail("READY message %r has no STATUS naming %s" % (ready, api_socket), proc)
        print("ok: READY=1 with MAINPID; STATUS=%s" % fields.get("STATUS", ""))

        # READY promises that the API listens: both endpoints must accept right now.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(api_socket)
        except OSError as e:
            fail("READY=1 sent but %s refuses connections: %s" % (api_socket, e), proc)
        s.close()
        port_file = os.path.join(data_dir, "api.port")
        try:
            port = int(open(port_file).read().strip())
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except (OSError, ValueError) as e:
            fail("READY=1 sent but the HTTP API (port from %s) is not reachable: %s" % (port_file, e), proc)
        print("ok: API socket and 127.0.0.1:%d accept connections" % port)

        # Pings, not one ping: two more within 3 periods of 1 s (generous for a loaded machine).
        for _ in range(2):
            receive_until(notify, "WATCHDOG=1", proc, deadline_s=10)
        print("ok: WATCHDOG=1 pings with WATCHDOG_USEC=2000000 and WATCHDOG_PID=%d" % proc.pid)

        before_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        proc.send_signal(signal.SIGHUP)
        msgs = receive_until(notify, "RELOADING=1", proc)
        after_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        reloading = fields_of([m for m in msgs if "RELOADING=1" in m.splitlines()][0])
        try:
            stamp = int(reloading.get("MONOTONIC_USEC", ""))
        except ValueError:
            fail("RELOADING=1 without a numeric MONOTONIC_USEC: %r" % reloading, proc)
        if not before_us <= stamp <= after_us:
            fail("MONOTONIC_USEC=%d is not CLOCK_MONOTONIC at the reload (%d..%d)"
                 % (stamp, before_us, after_us), proc)
        msgs = receive_until(notify, "READY=1", proc)
        done = fields_of([m for m in msgs if "READY=1" in m.splitlines()][0])
        if "configuration reloaded" not in done.get("STATUS", ""):
            fail("READY=1 after the reload has no STATUS saying so: %r" % done, proc)
        print("ok: SIGHUP: RELOADING=1 MONOTONIC_USEC=%d, then READY=1 STATUS=%s"
              % (stamp, done["STATUS"]))

        proc.send_signal(signal.SIGTERM)
        receive_until(notify, "STOPPING=1", proc)
        print("ok: STOPPING=1 after SIGTERM")
        try:
            rc = proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            fail("fieldsyncd did not exit within %d s of SIGTERM" % DEADLINE_S, proc)
        if rc != 0:
            fail("fieldsyncd exited with %d after SIGTERM" % rc, proc)
        print("ok: exit status 0")
        proc.stderr.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    wrong_watchdog_pid(daemon)


if __name__ == "__main__":
    main()
