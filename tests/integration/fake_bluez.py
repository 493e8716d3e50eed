#!/usr/bin/python3
"""A fake BlueZ for fieldsync's Bluetooth LE tests: one process that is bluetoothd on several
private D-Bus buses at once (one adapter "hci0" per bus), plus the "radio" between them.

It implements the parts of BlueZ's D-Bus API fieldsync uses, and calls back into the daemon the
way bluetoothd does: RegisterApplication reads the application with GetManagedObjects and
RegisterAdvertisement reads the advertisement with GetAll before they reply. Between two
adapters it carries a central's GATT writes to the peripheral's WriteValue, and the
peripheral's notifications (PropertiesChanged of Value) to the central, at a configurable ATT
MTU and bandwidth, and can cut the link after a number of bytes (a device walking out of range).

This exercises fieldsync's use of BlueZ over D-Bus, not BlueZ itself and not a radio.

Usage: fake_bluez.py --bus ADDR [--bus ADDR ...] [--mtu 185] [--bandwidth 20000]
                     [--drop-after-bytes N] [--tamper-after-bytes N] [--powered-off I]
--tamper-after-bytes flips one bit in the last byte of the first notification that carries
data once N bytes have crossed the link (a chunk changed on the way).
Prints "ready" on stdout once it owns org.bluez on every bus.

Commands, one a line on stdin, each answered by a line on stdout ("ok <what>" once done, or
"error <why>"):
  bytes               "ok N": the bytes that crossed the link so far
  out-of-range        the devices walk apart: every GATT connection drops, and each adapter
                      forgets the other devices (Device1 removed with InterfacesRemoved)
  in-range            they are back: advertisements are seen again (new Device1 objects)
  remove-adapter I    adapter I (the I-th --bus) is unplugged: its connections drop, its
                      devices and then /org/bluez/hci0 are removed (InterfacesRemoved), and
                      what was registered on it is gone
  add-adapter I       adapter I is plugged in again (InterfacesAdded), powered, with nothing
                      registered
  power-off I         adapter I is powered off (rfkill, or a user): its connections drop and
                      discovery stops; what was registered on it stays registered, as in BlueZ
  power-on I          adapter I is powered on again
"""
import argparse
import os
import sys
import time

import dbus
import dbus.mainloop.glib
import dbus.service
from gi.repository import GLib

BLUEZ = 'org.bluez'
PROPS = 'org.freedesktop.DBus.Properties'
OM = 'org.freedesktop.DBus.ObjectManager'
ADAPTER = 'org.bluez.Adapter1'
DEVICE = 'org.bluez.Device1'
ADV_MGR = 'org.bluez.LEAdvertisingManager1'
ADV = 'org.bluez.LEAdvertisement1'
GATT_MGR = 'org.bluez.GattManager1'
SVC = 'org.bluez.GattService1'
CHR = 'org.bluez.GattCharacteristic1'
ERR = 'org.bluez.Error.'


def err(name, msg):
    return dbus.exceptions.DBusException(msg, name=ERR + name)


def log(*a):
    print(time.strftime('%H:%M:%S') + '.%03d' % (time.time() * 1000 % 1000), 'fake_bluez:', *a,
          file=sys.stderr, flush=True)


class Obj(dbus.service.Object):
    """An exported object with properties per interface."""

    def __init__(self, adapter, path, props):
        dbus.service.Object.__init__(self, adapter.conn, path)
        self.adapter = adapter
        self.path = path
        self.props = props
        adapter.objects[path] = self

    @dbus.service.method(PROPS, in_signature='ss', out_signature='v')
    def Get(self, iface, name):
        try:
            return self.props[iface][name]
        except KeyError:
            raise err('InvalidArguments', 'no property %s.%s' % (iface, name))

    @dbus.service.method(PROPS, in_signature='s', out_signature='a{sv}')
    def GetAll(self, iface):
        return dbus.Dictionary(self.props.get(iface, {}), signature='sv')

    @dbus.service.method(PROPS, in_signature='ssv', out_signature='')
    def Set(self, iface, name, value):
        self.set(iface, name, value)
        if iface == ADAPTER and name == 'Powered':
            self.adapter.world.update()

    @dbus.service.signal(PROPS, signature='sa{sv}as')
    def PropertiesChanged(self, iface, changed, invalidated):
        pass

    def set(self, iface, name, value):
        self.props.setdefault(iface, {})[name] = value
        self.PropertiesChanged(iface, dbus.Dictionary({name: value}, signature='sv'),
                               dbus.Array([], signature='s'))

    def remove(self):
        self.adapter.objects.pop(self.path, None)
        self.adapter.root.InterfacesRemoved(self.path, dbus.Array(list(self.props), signature='s'))
        self.remove_from_connection()


class Root(dbus.service.Object):
    def __init__(self, adapter):
        dbus.service.Object.__init__(self, adapter.conn, '/')
        self.adapter = adapter

    @dbus.service.method(OM, in_signature='', out_signature='a{oa{sa{sv}}}')
    def GetManagedObjects(self):
        return dbus.Dictionary({p: dbus.Dictionary({i: dbus.Dictionary(v, signature='sv')
                                                    for i, v in o.props.items()}, signature='sa{sv}')
                                for p, o in self.adapter.objects.items()}, signature='oa{sa{sv}}')

    @dbus.service.signal(OM, signature='oa{sa{sv}}')
    def InterfacesAdded(self, path, interfaces):
        pass

    @dbus.service.signal(OM, signature='oas')
    def InterfacesRemoved(self, path, interfaces):
        pass

    def added(self, obj):
        self.InterfacesAdded(obj.path, dbus.Dictionary(
            {i: dbus.Dictionary(v, signature='sv') for i, v in obj.props.items()},
            signature='sa{sv}'))


class AdapterObj(Obj):
    @dbus.service.method(ADAPTER, in_signature='a{sv}', out_signature='')
    def SetDiscoveryFilter(self, filt):
        self.adapter.filter = dict(filt)

    @dbus.service.method(ADAPTER, in_signature='', out_signature='')
    def StartDiscovery(self):
        if not self.props[ADAPTER]['Powered']:
            raise err('NotReady', 'Resource Not Ready')
        self.set(ADAPTER, 'Discovering', dbus.Boolean(True))
        self.adapter.world.update()

    @dbus.service.method(ADAPTER, in_signature='', out_signature='')
    def StopDiscovery(self):
        self.set(ADAPTER, 'Discovering', dbus.Boolean(False))

    @dbus.service.method(ADV_MGR, in_signature='oa{sv}', out_signature='', sender_keyword='sender',
                         async_callbacks=('ok', 'fail'))
    def RegisterAdvertisement(self, path, options, sender=None, ok=None, fail=None):
        a = self.adapter
        if a.adv is not None:
            return fail(err('AlreadyExists', 'Already Exists'))

        def got(props):
            if props.get('Type') not in ('peripheral', 'broadcast'):
                return fail(err('InvalidArguments', 'bad Type'))
            md = {int(k): bytes(v) for k, v in props.get('ManufacturerData', {}).items()}
            size = 3 + sum(4 + len(v) for v in md.values())  # flags + each AD structure
            if size > 31:
                return fail(err('InvalidLength', 'advertisement of %d bytes' % size))
            a.adv = (str(sender), str(path), md)
            a.watch(sender)
            a.hci.set(ADV_MGR, 'ActiveInstances', dbus.Byte(1))
            ok()
            a.world.update()
        a.conn.call_async(sender, path, PROPS, 'GetAll', 's', (ADV,), got,
                          lambda e: fail(err('Failed', 'GetAll: %s' % e)), timeout=5)

    @dbus.service.method(ADV_MGR, in_signature='o', out_signature='')
    def UnregisterAdvertisement(self, path):
        a = self.adapter
        if not a.adv or a.adv[1] != path:
            raise err('DoesNotExist', 'Does Not Exist')
        a.adv = None
        a.hci.set(ADV_MGR, 'ActiveInstances', dbus.Byte(0))

    @dbus.service.method(GATT_MGR, in_signature='oa{sv}', out_signature='', sender_keyword='sender',
                         async_callbacks=('ok', 'fail'))
    def RegisterApplication(self, path, options, sender=None, ok=None, fail=None):
        a = self.adapter
        if a.app is not None:
            return fail(err('AlreadyExists', 'Already Exists'))

        def got(objs):
            services = [str(p) for p, ifs in objs.items() if SVC in ifs]
            if not services:
                return fail(err('InvalidArguments', 'no GattService1 under ' + path))
            chars = {}
            for p, ifs in objs.items():
                if CHR in ifs:
                    c = ifs[CHR]
                    if str(c.get('Service')) not in services:
                        return fail(err('InvalidArguments', '%s: bad Service' % p))
                    chars[str(c['UUID']).lower()] = (str(p), [str(f) for f in c.get('Flags', [])])
            svc_uuid = str(objs[dbus.ObjectPath(services[0])][SVC]['UUID']).lower()
            a.app = (str(sender), str(path), svc_uuid, chars)
            a.watch(sender)
            ok()
        a.conn.call_async(sender, path, OM, 'GetManagedObjects', '', (), got,
                          lambda e: fail(err('Failed', 'GetManagedObjects: %s' % e)), timeout=5)

    @dbus.service.method(GATT_MGR, in_signature='o', out_signature='')
    def UnregisterApplication(self, path):
        if not self.adapter.app or self.adapter.app[1] != path:
            raise err('DoesNotExist', 'Does Not Exist')
        self.adapter.app = None


class DeviceObj(Obj):
    """A remote device as one adapter sees it."""

    @dbus.service.method(DEVICE, in_signature='', out_signature='', async_callbacks=('ok', 'fail'))
    def Connect(self, ok=None, fail=None):
        self.adapter.world.connect(self.adapter, self.remote, ok, fail)

    @dbus.service.method(DEVICE, in_signature='', out_signature='')
    def Disconnect(self):
        self.adapter.world.disconnect(self.adapter, self.remote, 'local disconnect')


class ServiceObj(Obj):
    pass


class CharObj(Obj):
    """A characteristic of a remote device's GATT service, on the central's bus."""

    @dbus.service.method(CHR, in_signature='a{sv}', out_signature='ay',
                         async_callbacks=('ok', 'fail'))
    def ReadValue(self, options, ok=None, fail=None):
        self.conn_.read(self, ok, fail)

    @dbus.service.method(CHR, in_signature='aya{sv}', out_signature='',
                         async_callbacks=('ok', 'fail'))
    def WriteValue(self, value, options, ok=None, fail=None):
        self.conn_.write(self, bytes(value), ok, fail)

    @dbus.service.method(CHR, in_signature='', out_signature='', async_callbacks=('ok', 'fail'))
    def StartNotify(self, ok=None, fail=None):
        self.conn_.start_notify(self, ok, fail)

    @dbus.service.method(CHR, in_signature='', out_signature='')
    def StopNotify(self):
        pass


class Pipe:
    """One direction of a link: packets leave in order at the link's bandwidth."""

    def __init__(self, world):
        self.world = world
        self.free_at = 0.0
        self.queue = []
        self.timer = None

    def send(self, nbytes, deliver):
        now = time.monotonic()
        start = max(now, self.free_at)
        self.free_at = start + (nbytes + 3) / float(self.world.bandwidth)  # + ATT header
        self.queue.append((self.free_at, deliver))
        self.arm()

    def arm(self):
        if self.timer is None and self.queue:
            delay = max(0, int((self.queue[0][0] - time.monotonic()) * 1000))
            self.timer = GLib.timeout_add(delay, self.fire)

    def fire(self):
        self.timer = None
        now = time.monotonic()
        while self.queue and self.queue[0][0] <= now + 0.0005:
            _, deliver = self.queue.pop(0)
            deliver()
        self.arm()
        return False

    def clear(self):
        self.queue = []
        if self.timer is not None:
            GLib.source_remove(self.timer)
            self.timer = None


class Connection:
    """A GATT connection: `central` uses the service `peripheral` registered."""

    def __init__(self, world, central, peripheral):
        self.world = world
        self.central = central
        self.peripheral = peripheral
        self.up = True
        self.to_peripheral = Pipe(world)
        self.to_central = Pipe(world)
        self.objs = []
        self.notify_match = None
        dev = central.devices[peripheral.address]
        self.dev = dev
        # The central as the peripheral's BlueZ sees it.
        self.central_dev = peripheral.device_for(central)
        sender, app, svc_uuid, chars = peripheral.app
        svc = ServiceObj(central, dev.path + '/service0001',
                         {SVC: {'UUID': svc_uuid, 'Primary': dbus.Boolean(True),
                                'Device': dbus.ObjectPath(dev.path)}})
        self.objs.append(svc)
        for n, (uuid, (path, flags)) in enumerate(sorted(chars.items())):
            c = CharObj(central, '%s/char%04x' % (svc.path, n + 2),
                        {CHR: {'UUID': uuid, 'Service': dbus.ObjectPath(svc.path),
                               'Flags': dbus.Array(flags, signature='s'),
                               'Value': dbus.Array([], signature='y'),
                               'Notifying': dbus.Boolean(False),
                               'MTU': dbus.UInt16(world.mtu)}})
            c.conn_ = self
            c.remote_path = path
            c.flags = flags
            self.objs.append(c)

    def options(self, **extra):
        o = {'device': dbus.ObjectPath(self.central_dev.path), 'mtu': dbus.UInt16(self.world.mtu),
             'link': 'LE'}
        o.update(extra)
        return dbus.Dictionary(o, signature='sv')

    def count(self, n):
        self.world.bytes += n
        if self.world.drop_after and self.world.bytes >= self.world.drop_after:
            log('drop point reached after %d bytes: cutting the link' % self.world.bytes)
            self.world.cut()
            return False
        return True

    def read(self, c, ok, fail):
        if 'read' not in c.flags:
            return fail(err('NotPermitted', 'Read not permitted'))
        sender = self.peripheral.app[0]
        self.peripheral.conn.call_async(
            sender, c.remote_path, CHR, 'ReadValue', 'a{sv}',
            (self.options(offset=dbus.UInt16(0)),),
            lambda v: ok(dbus.Array(bytes(v), signature='y')),
            lambda e: fail(err('Failed', str(e))), timeout=10, byte_arrays=True)

    def write(self, c, value, ok, fail):
        if not self.up:
            return fail(err('NotConnected', 'Not Connected'))
        if 'write' not in c.flags and 'write-without-response' not in c.flags:
            return fail(err('NotPermitted', 'Write not permitted'))
        if len(value) > self.world.mtu - 3:
            return fail(err('InvalidValueLength', 'value of %d bytes, MTU %d' % (len(value),
                                                                             self.world.mtu)))

        def deliver():
            if not self.up:
                return fail(err('NotConnected', 'Not Connected'))
            if not self.count(len(value)):
                return fail(err('NotConnected', 'Not Connected'))
            self.peripheral.conn.call_async(
                self.peripheral.app[0], c.remote_path, CHR, 'WriteValue', 'aya{sv}',
                (dbus.Array(value, signature='y'), self.options(type='request')),
                lambda: ok(), lambda e: fail(err('Failed', str(e))), timeout=10)
        self.to_peripheral.send(len(value), deliver)

    def start_notify(self, c, ok, fail):
        if 'notify' not in c.flags:
            return fail(err('NotSupported', 'Notify not supported'))
        if self.notify_match is not None:
            return ok()
        sender = self.peripheral.app[0]

        def changed(iface, props, invalidated, path=None):
            if iface != CHR or 'Value' not in props or not self.up:
                return
            value = bytes(props['Value'])
            if len(value) > self.world.mtu - 3:
                log('notification of %d bytes dropped (MTU %d)' % (len(value), self.world.mtu))
                return

            def deliver():
                if self.up and self.count(len(value)):
                    c.set(CHR, 'Value', dbus.Array(self.world.tamper(value), signature='y'))
            self.to_central.send(len(value), deliver)
        self.notify_match = self.peripheral.conn.add_signal_receiver(
            changed, 'PropertiesChanged', PROPS, sender, c.remote_path, path_keyword='path',
            byte_arrays=True)

        def started(*_):
            c.set(CHR, 'Notifying', dbus.Boolean(True))
            ok()
        self.peripheral.conn.call_async(sender, c.remote_path, CHR, 'StartNotify', '', (),
                                        started, lambda e: fail(err('Failed', str(e))), timeout=10)

    def close(self, why):
        if not self.up:
            return
        self.up = False
        log('%s -> %s disconnected: %s' % (self.central.address, self.peripheral.address, why))
        self.to_central.clear()
        self.to_peripheral.clear()
        if self.notify_match is not None:
            self.notify_match.remove()
        for o in reversed(self.objs):
            o.remove()
        self.dev.set(DEVICE, 'ServicesResolved', dbus.Boolean(False))
        self.dev.set(DEVICE, 'Connected', dbus.Boolean(False))
        self.central_dev.set(DEVICE, 'Connected', dbus.Boolean(False))


class Adapter:
    def __init__(self, world, index, bus):
        self.world = world
        self.address = 'C0:FF:EE:00:00:%02X' % (index + 1)
        self.conn = dbus.bus.BusConnection(bus)
        self.objects = {}
        self.root = Root(self)
        self.path = '/org/bluez/hci0'
        self.index = index
        self.hci = self.make_hci(index, index not in world.powered_off)
        self.adv = None
        self.app = None
        self.filter = {}
        self.devices = {}  # remote address -> DeviceObj
        self.watched = set()
        self.name = dbus.service.BusName(BLUEZ, self.conn)

    def make_hci(self, index, powered):
        return AdapterObj(self, self.path, {
            ADAPTER: {'Address': self.address, 'AddressType': 'public', 'Name': 'fake%d' % index,
                      'Alias': 'fake%d' % index, 'Powered': dbus.Boolean(powered),
                      'Discovering': dbus.Boolean(False), 'Discoverable': dbus.Boolean(False),
                      'UUIDs': dbus.Array([], signature='s')},
            ADV_MGR: {'ActiveInstances': dbus.Byte(0), 'SupportedInstances': dbus.Byte(5),
                      'SupportedIncludes': dbus.Array(['tx-power'], signature='s')},
            GATT_MGR: {}})

    def powered(self):
        return self.hci is not None and bool(self.hci.props[ADAPTER]['Powered'])

    def forget_devices(self):
        """Removes every Device1 (and what is under it) of this adapter."""
        for d in list(self.devices.values()):
            for p in sorted([p for p in self.objects if p.startswith(d.path + '/')],
                            reverse=True):
                self.objects[p].remove()
            d.remove()
        self.devices = {}

    def unplug(self):
        self.world.disconnect_adapter(self, 'adapter removed')
        self.forget_devices()
        self.adv = None
        self.app = None
        self.filter = {}
        self.hci.remove()
        self.hci = None
        log('adapter %s removed' % self.address)

    def plug(self):
        self.hci = self.make_hci(self.index, True)
        self.root.added(self.hci)
        log('adapter %s added' % self.address)
        self.world.update()

    def discovering(self):
        return self.hci is not None and bool(self.hci.props[ADAPTER]['Discovering'])

    def device_for(self, other):
        d = self.devices.get(other.address)
        if d is None:
            path = '%s/dev_%s' % (self.path, other.address.replace(':', '_'))
            d = DeviceObj(self, path, {DEVICE: {
                'Address': other.address, 'AddressType': 'random', 'Alias': other.address,
                'Adapter': dbus.ObjectPath(self.path), 'Connected': dbus.Boolean(False),
                'ServicesResolved': dbus.Boolean(False), 'Paired': dbus.Boolean(False),
                'RSSI': dbus.Int16(-60), 'UUIDs': dbus.Array([], signature='s')}})
            d.remote = other
            self.devices[other.address] = d
            self.root.added(d)
        return d

    def watch(self, sender):
        if sender in self.watched:
            return
        self.watched.add(sender)

        def owner(name):
            if name:
                return
            # The client left the bus: BlueZ drops what it registered.
            if self.adv and self.adv[0] == sender:
                self.adv = None
            if self.app and self.app[0] == sender:
                self.app = None
                self.world.disconnect_peripheral(self)
        self.conn.watch_name_owner(sender, owner)


class World:
    def __init__(self, args):
        self.mtu = args.mtu
        self.bandwidth = args.bandwidth
        self.drop_after = args.drop_after_bytes
        self.tamper_after = args.tamper_after_bytes
        self.powered_off = set(args.powered_off)
        self.bytes = 0
        self.linked = True
        self.adapters = [Adapter(self, i, b) for i, b in enumerate(args.bus)]
        self.conns = {}
        self.pending = b''
        GLib.timeout_add(1000, self.tick)

    def update(self):
        """Every discovering adapter sees every other powered, advertising adapter."""
        if not self.linked:
            return
        for a in self.adapters:
            if not (a.powered() and a.discovering()):
                continue
            for b in self.adapters:
                if b is a or not b.powered() or not b.adv:
                    continue
                d = a.device_for(b)
                md = dbus.Dictionary({dbus.UInt16(k): dbus.ByteArray(v) for k, v in
                                      b.adv[2].items()}, signature='qv')
                d.set(DEVICE, 'ManufacturerData', md)

    def tamper(self, value):
        # Only a frame with data (longer than the 5-byte header) is worth changing.
        if self.tamper_after and self.bytes >= self.tamper_after and len(value) > 5:
            self.tamper_after = 0
            log('tampering with a %d-byte notification' % len(value))
            return value[:-1] + bytes([value[-1] ^ 0x01])
        return value

    def tick(self):
        self.update()  # advertisements repeat
        return True

    def connect(self, central, peripheral, ok, fail):
        """Two devices share one LE link, whoever connected first, and BlueZ resolves the
        other device's GATT services at both ends of it: the other device's Connect while we
        are connected to it succeeds at once, as in BlueZ, and either side's Disconnect ends
        the link, both ways."""
        if not self.linked or not peripheral.powered() or not central.powered():
            return fail(err('Failed', 'le-connection-abort-by-local'))
        if self.gatt(central, peripheral) is None:
            return fail(err('Failed', 'no GATT service (connection refused)'))
        self.gatt(peripheral, central)
        for a, b in ((central, peripheral), (peripheral, central)):
            d = a.devices[b.address]
            if not d.props[DEVICE]['Connected']:
                d.set(DEVICE, 'Connected', dbus.Boolean(True))
            if b.app and not d.props[DEVICE]['ServicesResolved']:
                d.set(DEVICE, 'ServicesResolved', dbus.Boolean(True))
        ok()

    def gatt(self, central, peripheral):
        """central's GATT client of peripheral's service on their link (made once); None when
        peripheral has no service registered."""
        key = (central.address, peripheral.address)
        c = self.conns.get(key)
        if c is not None and c.up:
            return c
        if not peripheral.app:
            return None
        c = Connection(self, central, peripheral)
        self.conns[key] = c
        for o in c.objs:
            central.root.added(o)
        log('%s -> %s connected (MTU %d, %d B/s)' % (central.address, peripheral.address,
                                                       self.mtu, self.bandwidth))
        return c

    def disconnect(self, central, peripheral, why):
        # The LE link ends: the GATT connections both ways over it end with it.
        for key in ((central.address, peripheral.address), (peripheral.address, central.address)):
            c = self.conns.pop(key, None)
            if c:
                c.close(why)

    def disconnect_peripheral(self, peripheral):
        # Its daemon left the bus: the link to it ends (both ways).
        for key in [k for k in self.conns if peripheral.address in k]:
            self.conns.pop(key).close('the peripheral left')

    def disconnect_adapter(self, adapter, why):
        for key in [k for k in self.conns if adapter.address in k]:
            self.conns.pop(key).close(why)

    def cut(self):
        self.linked = False
        for key in list(self.conns):
            self.conns.pop(key).close('out of range')

    def command(self, line):
        words = line.split()
        if not words:
            return 'error empty command'
        cmd, args = words[0], words[1:]
        if cmd == 'bytes':
            return 'ok %d' % self.bytes
        if cmd == 'out-of-range':
            self.cut()
            for a in self.adapters:
                a.forget_devices()
            log('out of range')
            return 'ok out-of-range'
        if cmd == 'in-range':
            self.linked = True
            self.update()
            log('in range')
            return 'ok in-range'
        if cmd in ('power-off', 'power-on') and len(args) == 1:
            a = self.adapters[int(args[0])]
            if a.hci is None:
                return 'error adapter %s removed' % args[0]
            on = cmd == 'power-on'
            if not on:
                self.disconnect_adapter(a, 'adapter powered off')
                a.hci.set(ADAPTER, 'Discovering', dbus.Boolean(False))
            a.hci.set(ADAPTER, 'Powered', dbus.Boolean(on))
            a.hci.set(ADV_MGR, 'ActiveInstances', dbus.Byte(1 if on and a.adv else 0))
            self.update()
            log('adapter %s powered %s' % (a.address, 'on' if on else 'off'))
            return 'ok ' + line.strip()
        if cmd in ('remove-adapter', 'add-adapter') and len(args) == 1:
            a = self.adapters[int(args[0])]
            if cmd == 'remove-adapter':
                if a.hci is None:
                    return 'error adapter %s already removed' % args[0]
                a.unplug()
            else:
                if a.hci is not None:
                    return 'error adapter %s is there' % args[0]
                a.plug()
            return 'ok ' + line.strip()
        return 'error unknown command %r' % line.strip()

    def on_stdin(self, fd, condition):
        data = os.read(fd, 4096)
        if not data:
            return False  # stdin closed: no more commands
        self.pending += data
        while b'\n' in self.pending:
            line, self.pending = self.pending.split(b'\n', 1)
            try:
                answer = self.command(line.decode())
            except Exception as e:  # a bad command must not stop the fake
                answer = 'error %s' % e
            print(answer, flush=True)
        return True


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--bus', action='append', required=True)
    p.add_argument('--mtu', type=int, default=185)
    p.add_argument('--bandwidth', type=int, default=20000, help='bytes per second per direction')
    p.add_argument('--drop-after-bytes', type=int, default=0)
    p.add_argument('--tamper-after-bytes', type=int, default=0)
    p.add_argument('--powered-off', type=int, action='append', default=[])
    args = p.parse_args()
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    world = World(args)
    GLib.io_add_watch(sys.stdin.fileno(), GLib.IO_IN | GLib.IO_HUP, world.on_stdin)
    print('ready', flush=True)
    GLib.MainLoop().run()


if __name__ == '__main__':
    main()
