#!/usr/bin/python3
"""Starts the real fieldsyncd as systemd would for a Type=notify unit and checks the
notifications: READY=1 (with MAINPID) only once the API accepts connections, WATCHDOG=1 at
half of WATCHDOG_USEC, STOPPING=1 after SIGTERM, then exit status 0.

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


def main():
    daemon = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="fsn-", dir="/tmp")  # short: Unix socket paths are <= 107 bytes
    try:
        notify_path = os.path.join(tmp, "notify.sock")
        api_socket = os.path.join(tmp, "api.sock")
        data_dir = os.path.join(tmp, "data")
        config = os.path.join(tmp, "empty.conf")
        open(config, "w").close()

        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="2000000", HOME=tmp)
        env.pop("WATCHDOG_PID", None)
        proc = subprocess.Popen(
            [daemon, "--config", config,
             "--set", "daemon.data_dir=" + data_dir,
             "--set", "api.socket_path=" + api_socket,
             "--set", "api.http_port=0",
             "--set", "sync.listen_port=0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        msgs = receive_until(notify, "READY=1", proc)
        ready = [m for m in msgs if "READY=1" in m.splitlines()][0]
        fields = dict(line.split("=", 1) for line in ready.splitlines() if "=" in line)
        if fields.get("MAINPID") != str(proc.pid):
            fail("READY message %r lacks MAINPID=%d" % (ready, proc.pid), proc)
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

        receive_until(notify, "WATCHDOG=1", proc, deadline_s=10)
        print("ok: WATCHDOG=1 pings with WATCHDOG_USEC=2000000")

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
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
