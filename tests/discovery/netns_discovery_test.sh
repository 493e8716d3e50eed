#!/bin/bash
# Discovery between real fieldsyncd processes over real mDNS: two network namespaces joined by
# a veth pair on link-local addresses, each with its own dbus-daemon and avahi-daemon
# (recipe: private /run via `unshare -m` + tmpfs, DBUS_SYSTEM_BUS_ADDRESS to find the bus).
# This script builds and tears down the namespaces; netns_discovery_test.py runs the daemons
# and the assertions.
# usage (as root): netns_discovery_test.sh [path/to/fieldsyncd]   (or FIELDSYNCD=...)
# env: NETNS_PREFIX (default fsdis$$), KEEP=1 keeps the work dir (daemon and avahi logs).
# exit: 0 pass, 1 fail, 77 cannot run here (not root, no ip netns, no avahi-daemon/dbus-daemon).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
FIELDSYNCD=${1:-${FIELDSYNCD:-}}
[ -n "$FIELDSYNCD" ] || { echo "usage: $0 path/to/fieldsyncd"; exit 2; }
P=${NETNS_PREFIX:-fsdis$$}   # unique: other runs may share the machine (names <= 15 chars)
NSA=${P}a NSB=${P}b VA=${P}va VB=${P}vb
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespaces)"; exit 77; }
for c in ip unshare avahi-daemon dbus-daemon; do
  command -v "$c" >/dev/null || { echo "SKIP: $c missing"; exit 77; }
done
W=$(mktemp -d /tmp/${P}.XXXXXX)
chmod 755 "$W"

cleanup() {
  set +e
  for ns in "$NSA" "$NSB"; do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] && kill $pids 2>/dev/null
  done
  for ns in "$NSA" "$NSB"; do
    for i in $(seq 50); do [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break; sleep 0.1; done
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null
    ip netns del "$ns" 2>/dev/null   # also deletes the veth end inside it
  done
  if [ -n "${KEEP:-}" ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$NSA" 2>/dev/null || { echo "SKIP: ip netns add failed"; exit 77; }
ip netns add "$NSB"
ip link add "$VA" type veth peer name "$VB"
ip link set "$VA" netns "$NSA"
ip link set "$VB" netns "$NSB"
ip -n "$NSA" addr add 169.254.77.1/24 dev "$VA"
ip -n "$NSB" addr add 169.254.77.2/24 dev "$VB"
for n in "$NSA" "$NSB"; do ip -n "$n" link set lo up; done
ip -n "$NSA" link set "$VA" up multicast on
ip -n "$NSB" link set "$VB" up multicast on

setup_node() {   # $1=tag $2=netns $3=ifname: bus config, avahi config, start scripts
  local t=$1 ns=$2 ifc=$3 d="$W/$1"
  mkdir -p "$d"
  cat > "$d/bus.conf" <<XML
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$d/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/><allow receive_type="method_return"/>
    <allow receive_type="error"/><allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
  <includedir>/etc/dbus-1/system.d</includedir>
</busconfig>
XML
  cat > "$d/avahi-daemon.conf" <<CONF
[server]
host-name=${P}-$t
domain-name=local
use-ipv4=yes
use-ipv6=no
allow-interfaces=$ifc
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
[reflector]
[rlimits]
CONF
  # The test restarts avahi-daemon with this same script (Avahi restarted mid-run).
  cat > "$d/start-avahi.sh" <<SH
#!/bin/sh
exec ip netns exec $ns unshare --mount --propagation private sh -c \\
  "mount -t tmpfs -o mode=755 tmpfs /run && exec env DBUS_SYSTEM_BUS_ADDRESS=unix:path=$d/system_bus_socket \\
   avahi-daemon -f $d/avahi-daemon.conf --no-drop-root --no-chroot --no-rlimits --no-proc-title"
SH
  chmod +x "$d/start-avahi.sh"
  ip netns exec "$ns" dbus-daemon --config-file="$d/bus.conf" --nofork --nopidfile >"$d/dbus.log" 2>&1 &
  for i in $(seq 50); do [ -S "$d/system_bus_socket" ] && break; sleep 0.1; done
  [ -S "$d/system_bus_socket" ] || { echo "FAIL: dbus-daemon $t did not start"; cat "$d/dbus.log"; exit 1; }
}
setup_node A "$NSA" "$VA"
setup_node B "$NSB" "$VB"

/usr/bin/python3 "$HERE/netns_discovery_test.py" --fieldsyncd "$FIELDSYNCD" --work "$W" \
  --netns-a "$NSA" --netns-b "$NSB"
