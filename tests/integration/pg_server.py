"""A real PostgreSQL server for the mirror's tests and benchmark: Debian's postgresql package,
initdb in a temporary directory, a Unix socket there and a TCP port on 127.0.0.1. initdb and
postgres refuse to run as root, so as root they run as the `postgres` user the package
creates. Local (socket) connections are trusted; TCP ones need a password (scram-sha-256).
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time


def _pg_bin(name):
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/" + name))
    if not found:
        raise RuntimeError("PostgreSQL's %s not found (Debian package postgresql)" % name)
    return found[-1]


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class PostgresServer:
    SUPERUSER = "postgres"

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="fsi-pg-", dir="/tmp")
        self.data = os.path.join(self.dir, "data")
        self.socket_dir = self.dir
        self.port = _free_port()
        self.log_path = os.path.join(self.dir, "postgres.log")
        self.as_root = os.geteuid() == 0
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o755)
        self._run([_pg_bin("initdb"), "-D", self.data, "-U", self.SUPERUSER, "-E", "UTF8",
                   "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "-N"])

    def _run(self, argv, **kw):
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        return subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              **kw)

    def start(self):
        opts = ("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories=%s "
                "-c fsync=off -c full_page_writes=off -c max_connections=20"
                % (self.port, self.socket_dir))
        self._run([_pg_bin("pg_ctl"), "-D", self.data, "-l", self.log_path, "-o", opts,
                   "-w", "-t", "60", "start"])
        return self

    def stop(self, mode="fast"):
        self._run([_pg_bin("pg_ctl"), "-D", self.data, "-m", mode, "-w", "-t", "60", "stop"])

    def running(self):
        return os.path.exists(os.path.join(self.data, "postmaster.pid"))

    def close(self):
        if self.running():
            try:
                self.stop("immediate")
            except subprocess.CalledProcessError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def conninfo(self, dbname="postgres"):
        """A libpq connection string over the Unix socket, as the superuser (trusted)."""
        return "host=%s port=%d dbname=%s user=%s" % (self.socket_dir, self.port, dbname,
                                                     self.SUPERUSER)

    def tcp_conninfo(self, user, dbname="postgres"):
        """Over TCP on 127.0.0.1: needs the user's password."""
        return "host=127.0.0.1 port=%d dbname=%s user=%s" % (self.port, dbname, user)

    def sql(self, statement, dbname="postgres"):
        """Runs SQL through psql as the superuser; the rows as lists of strings."""
        out = subprocess.run(
            [_pg_bin("psql"), "-X", "-q", "-At", "-F", "\x1f", "-v", "ON_ERROR_STOP=1",
             "-h", self.socket_dir, "-p", str(self.port), "-U", self.SUPERUSER, "-d", dbname,
             "-c", statement],
            check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).stdout
        return [line.split("\x1f") for line in out.splitlines() if line != ""]

    def value(self, statement, dbname="postgres"):
        rows = self.sql(statement, dbname)
        return rows[0][0] if rows else None

    def wait_value(self, statement, want, deadline_s=30.0, dbname="postgres"):
        """Polls until the statement's single value equals `want` (strings compared)."""
        deadline = time.monotonic() + deadline_s
        got = None
        while time.monotonic() < deadline:
            try:
                got = self.value(statement, dbname)
            except subprocess.CalledProcessError:
                got = None  # the tables may not exist yet
            if got == str(want):
                return got
            time.sleep(0.05)
        raise AssertionError("%s: want %r, last got %r" % (statement, want, got))
