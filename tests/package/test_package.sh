#!/usr/bin/env bash
# The Debian package, end to end, on this machine (root; changes the system, then undoes it):
#  1. builds it from a copy of this tree with `dpkg-buildpackage -us -uc -b`;
#  2. installs it with `apt-get install ./fieldsync_*.deb` (the postinst must not start the
#     service, and must not fail without systemd as PID 1);
#  3. checks the installed files, their modes and owners, the conffile, the fieldsync user and
#     its directories, and the unit with `systemd-analyze verify` (silent, with its man page);
#  4. runs the installed fieldsyncd as the fieldsync user on a temporary data directory with the
#     installed config, and the installed `syncctl status` against it;
#  5. purges the package and checks what is left.
# Needs dpkg-dev, debhelper and the build dependencies (scripts/install-deps.sh). Exits 77
# (skipped) when not root. Prints how long the build and the install took.
# Environment: FIELDSYNC_PACKAGE_WORKDIR (default /tmp/fieldsync-package-test): where the tree is
# copied and built. A fixed path lets ccache reuse the last build's objects (the package build
# maps the source path into the objects).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${FIELDSYNC_PACKAGE_WORKDIR:-/tmp/fieldsync-package-test}"
DEADLINE_S=60

fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok: $*"; }
[ "$(id -u)" -eq 0 ] || { echo "SKIP: installing a package needs root"; exit 77; }
for tool in dpkg-buildpackage dh apt-get systemd-analyze setpriv; do
  command -v "$tool" >/dev/null || fail "$tool is missing (bash scripts/install-deps.sh)"
done

# One run at a time on a machine: the package and its paths are machine-wide.
exec 9>/run/lock/fieldsync-package-test.lock
flock -w 1800 9 || fail "another package test holds /run/lock/fieldsync-package-test.lock"
pkg_state() { dpkg-query -W -f='${db:Status-Status}' fieldsync 2>/dev/null || true; }
if [ -n "$(pkg_state)" ] && [ "$(pkg_state)" != not-installed ]; then
  fail "a fieldsync package is already installed; this test installs and purges its own" \
       "(remove it first: apt-get purge fieldsync)"
fi

daemon_pid=""
installed=""
cleanup() {
  local rc=$?
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then kill -KILL "$daemon_pid"; fi
  if [ -n "$installed" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq -o DPkg::Lock::Timeout=300 fieldsync \
      >/dev/null 2>&1 || true
  fi
  if [ "$rc" -eq 0 ]; then rm -rf "$WORK"; else echo "(build and logs kept in $WORK)"; fi
  exit "$rc"
}
trap cleanup EXIT

# --- 1. build ---
rm -rf "$WORK"
mkdir -p "$WORK/fieldsync"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Tracked and new files, as they are in the work tree (not build directories).
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
     tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -C "$WORK/fieldsync" -xf -
else
  (cd "$ROOT" && tar --exclude='./build*' --exclude=./.git -cf - .) | tar -C "$WORK/fieldsync" -xf -
fi
# debhelper gives the build its own HOME: keep ccache's directory.
if command -v ccache >/dev/null; then export CCACHE_DIR="${CCACHE_DIR:-$(ccache -k cache_dir)}"; fi
start=$(date +%s)
(cd "$WORK/fieldsync" &&
   DEB_BUILD_OPTIONS="parallel=${JOBS:-2} ${DEB_BUILD_OPTIONS:-}" \
   dpkg-buildpackage -us -uc -b >"$WORK/build.log" 2>&1) ||
  { tail -50 "$WORK/build.log"; fail "dpkg-buildpackage failed (log above)"; }
build_s=$(( $(date +%s) - start ))
version="$(cd "$WORK/fieldsync" && dpkg-parsechangelog -SVersion)"
arch="$(dpkg --print-architecture)"
deb="$WORK/fieldsync_${version}_${arch}.deb"
[ -f "$deb" ] || fail "no $deb after the build: $(ls "$WORK")"
ok "dpkg-buildpackage built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB) in ${build_s} s"

# --- 2. install ---
start=$(date +%s)
installed=yes
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  -o DPkg::Lock::Timeout=300 "$deb" >"$WORK/install.log" 2>&1 ||
  { cat "$WORK/install.log"; fail "apt-get install $deb failed"; }
install_s=$(( $(date +%s) - start ))
dpkg-query -W -f='${Status}\n' fieldsync | grep -qx 'install ok installed' ||
  fail "fieldsync is not 'install ok installed' after apt-get install"
ok "apt-get install in ${install_s} s"

# --- 3. files, user, unit ---
check_file() {  # PATH MODE OWNER:GROUP
  [ -f "$1" ] || fail "$1 is not installed"
  local got; got="$(stat -c '%a %U:%G' "$1")"
  [ "$got" = "$2 $3" ] || fail "$1 is '$got', expected '$2 $3'"
}
unit=/lib/systemd/system/fieldsyncd.service
check_file /usr/bin/fieldsyncd 755 root:root
check_file /usr/bin/syncctl 755 root:root
check_file "$unit" 644 root:root
check_file /usr/lib/sysusers.d/fieldsync.conf 644 root:root
check_file /usr/lib/tmpfiles.d/fieldsync.conf 644 root:root
check_file /etc/fieldsync/fieldsyncd.conf 644 root:root
check_file /usr/share/man/man8/fieldsyncd.8.gz 644 root:root
check_file /usr/share/man/man1/syncctl.1.gz 644 root:root
check_file /usr/share/bash-completion/completions/syncctl 644 root:root
check_file /usr/share/doc/fieldsync/operations.md 644 root:root
check_file /usr/share/doc/fieldsync/copyright 644 root:root
dpkg-query -W -f='${Conffiles}\n' fieldsync | grep -q '^ /etc/fieldsync/fieldsyncd.conf ' ||
  fail "/etc/fieldsync/fieldsyncd.conf is not a conffile"
cmp -s /etc/fieldsync/fieldsyncd.conf "$ROOT/config/fieldsyncd.conf" ||
  fail "/etc/fieldsync/fieldsyncd.conf differs from config/fieldsyncd.conf"
grep -qx "ExecStart=/usr/bin/fieldsyncd --config /etc/fieldsync/fieldsyncd.conf" "$unit" ||
  fail "installed unit: $(grep '^ExecStart=' "$unit")"
for doc in $(sed -n 's#^Documentation=file://##p' "$unit"); do
  [ -f "$doc" ] || fail "the unit's Documentation=file://$doc is not installed"
done
[ "$(/usr/bin/fieldsyncd --version)" = "fieldsyncd ${version%%-*}" ] ||
  fail "fieldsyncd --version says '$(/usr/bin/fieldsyncd --version)', the package is $version"
ok "files, modes, owners, conffile; the unit runs /usr/bin/fieldsyncd"

IFS=: read -r _ _ uid gid _ home shell <<<"$(getent passwd fieldsync)" ||
  fail "no fieldsync user after install (sysusers)"
[ "$uid" -lt 1000 ] || fail "fieldsync is not a system user (uid $uid)"
[ "$(getent group fieldsync | cut -d: -f3)" = "$gid" ] || fail "fieldsync's group is not fieldsync"
[ "$home" = /var/lib/fieldsync ] || fail "fieldsync's home is $home"
case "$shell" in */nologin) ;; *) fail "fieldsync's shell is $shell" ;; esac
for d in "/var/lib/fieldsync 700" "/run/fieldsync 750"; do
  set -- $d
  [ -d "$1" ] || fail "$1 was not created (tmpfiles)"
  [ "$(stat -c '%a %U:%G' "$1")" = "$2 fieldsync:fieldsync" ] ||
    fail "$1 is $(stat -c '%a %U:%G' "$1"), expected $2 fieldsync:fieldsync"
done
ok "system user fieldsync (uid $uid, $shell), /var/lib/fieldsync 0700, /run/fieldsync 0750"

# Enabled like any Debian service (dh_installsystemd), never started here: no systemd as PID 1
# and policy-rc.d; nothing runs as fieldsync and no socket exists.
[ "$(readlink /etc/systemd/system/multi-user.target.wants/fieldsyncd.service)" = "$unit" ] ||
  fail "fieldsyncd.service is not enabled in multi-user.target.wants"
if pgrep -u fieldsync >/dev/null; then fail "a process runs as fieldsync after install"; fi
[ ! -e /run/fieldsync/api.sock ] || fail "/run/fieldsync/api.sock exists: the service was started"
ok "enabled, not started"

# `systemd-analyze verify` of the installed unit: ExecStart= exists now, and with man-db
# installed the Documentation=man:fieldsyncd(8) check runs too (it needs `man`; without it,
# pass --man=no). Unknown keys are only warnings with status 0: any output fails.
man_opt=--man=yes
command -v man >/dev/null || man_opt=--man=no
if ! out="$(SYSTEMD_LOG_COLOR=0 systemd-analyze verify "$man_opt" "$unit" 2>&1)" || [ -n "$out" ]; then
  fail "systemd-analyze verify $man_opt $unit reported: $out"
fi
ok "systemd-analyze verify $man_opt $unit is silent"

# --- 4. the installed programs, as the fieldsync user ---
run="$(mktemp -d /tmp/fieldsync-pkg-run.XXXXXX)"
chown fieldsync:fieldsync "$run"
as_fieldsync=(setpriv --reuid=fieldsync --regid=fieldsync --init-groups --)
sock="$run/api.sock"
# setpriv execs fieldsyncd: $! is the daemon's pid.
"${as_fieldsync[@]}" /usr/bin/fieldsyncd --config /etc/fieldsync/fieldsyncd.conf --data-dir "$run/data" \
  --set api.socket_path="$sock" --set api.http_port=0 --set sync.listen_address=127.0.0.1 \
  --set sync.listen_port=0 --set discovery.enabled=false 2>"$run/fieldsyncd.log" &
daemon_pid=$!
status=""
for (( end = SECONDS + DEADLINE_S; SECONDS < end; )); do
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$run/fieldsyncd.log"; fail "fieldsyncd exited at start"; }
  if status="$("${as_fieldsync[@]}" /usr/bin/syncctl --socket "$sock" status 2>&1)"; then break; fi
  status=""
  sleep 0.2
done
[ -n "$status" ] || { cat "$run/fieldsyncd.log"; fail "syncctl status did not answer in ${DEADLINE_S} s"; }
echo "$status" | grep -Eq "^version +${version%%-*}$" || fail "syncctl status: $status"
echo "$status" | grep -Eq "^api socket +$sock$" || fail "syncctl status: $status"
[ "$(stat -c '%a %U' "$run/data" "$run/data/device.key" | tr '\n' ' ')" = "700 fieldsync 600 fieldsync " ] ||
  fail "data directory: $(stat -c '%n %a %U' "$run/data" "$run/data/device.key")"
kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
daemon_pid=""
[ "$rc" -eq 0 ] || { cat "$run/fieldsyncd.log"; fail "fieldsyncd exited with $rc after SIGTERM"; }
rm -rf "$run"
ok "installed fieldsyncd ran as fieldsync with the installed config; syncctl status answered; clean stop"

# --- 5. purge ---
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq -o DPkg::Lock::Timeout=300 fieldsync \
  >"$WORK/purge.log" 2>&1 || { cat "$WORK/purge.log"; fail "apt-get purge fieldsync failed"; }
installed=""
for p in /usr/bin/fieldsyncd /usr/bin/syncctl "$unit" /etc/fieldsync /usr/lib/sysusers.d/fieldsync.conf \
         /etc/systemd/system/multi-user.target.wants/fieldsyncd.service /var/lib/fieldsync /run/fieldsync; do
  [ ! -e "$p" ] && [ ! -L "$p" ] || fail "$p is still there after purge"
done
case "$(pkg_state)" in "" | not-installed) ;; *) fail "fieldsync is '$(pkg_state)' after purge" ;; esac
ok "purged: programs, unit, config, enablement and the empty data directory are gone (the user stays)"
echo "package test passed: build ${build_s} s, install ${install_s} s"
