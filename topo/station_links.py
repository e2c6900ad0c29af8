"""The pre-created links of placed ground stations, switched by link state at handovers.

A placed station ``g<k>`` (``topo.build.configure_stations``) holds its address on a Linux
bridge ``g<k>-eth0`` in its namespace; each satellite that can serve it has a veth whose
station end (``g<k>-<sat>_<orb>``) is a port of that bridge and whose other end is port
``station_port(k)`` of the satellite's switch.  Only the serving satellite's link is up.  A
handover is two netlink messages in the station's namespace: the new link up, the old one
down -- no OVS reconfiguration (``ovs-vsctl`` re-attaching one port made ovs-vswitchd
reconfigure every bridge: 67-254 ms on a 10x10).  The bridge, address, MAC, routes and
neighbour entry never change.

A gateway without a pre-created link (the run outlived the horizon the candidates were
computed for) gets one created at its handover (veth, bridge port, ``ovs-vsctl add-port``:
slower, and the handover says so with ``created``).

Ground-link rates (``set_rate``) are changed over netlink too: the switch end from the
root namespace, the station end from the station's.
"""

from __future__ import annotations

import queue
import threading

from topo import netns, ovs, shaping
from topo.addressing import station_link, station_port

HTB_ROOT, HTB_CLASS = 0x10000, 0x10001  # shaping.HTB_HANDLE "1:" and HTB_CLASS "1:1"


class NsWorker:
    """A thread living in one network namespace with its own netlink socket: ``call(fn)``
    runs ``fn(ipr)`` there (pyroute2 ``IPRoute``) and returns its result or raises."""

    def __init__(self, ns_path: str, name: str):
        self._q: queue.Queue = queue.Queue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(ns_path,), name=name,
                                        daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error

    def _run(self, ns_path: str):
        from pyroute2 import IPRoute
        try:
            netns.enter(ns_path)
            ipr = IPRoute()  # created after entering: its socket belongs to the namespace
        except BaseException as e:  # handed to the constructor
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                item = self._q.get()
                if item is None:
                    return
                fn, box, done = item
                try:
                    box["value"] = fn(ipr)
                except BaseException as e:  # handed to the caller
                    box["error"] = e
                done.set()
        finally:
            ipr.close()

    def call(self, fn, timeout_s: float = 30.0):
        box: dict = {}
        done = threading.Event()
        self._q.put((fn, box, done))
        if not done.wait(timeout_s):
            raise TimeoutError(f"{self._thread.name}: no answer in {timeout_s:.0f} s")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def close(self):
        self._q.put(None)
        self._thread.join(timeout=5)


def _rate(bps: float) -> str:
    return f"{max(int(round(bps)), 1000)}bit"


class StationLinks:
    """The links of placed station ``k``: ``host`` is its Mininet host, ``links``
    ``{sat: StationLink}`` the pre-created ones, ``nw`` the run's Network."""

    def __init__(self, nw, k: int, host, links: dict):
        self.nw, self.k, self.host = nw, k, host
        self.links = dict(links)
        self.worker = NsWorker(f"/proc/{host.pid}/ns/net", f"g{k}-netns")
        self.bridge = f"{host.name}-eth0"
        self._index = self.worker.call(
            lambda ipr: {sl.sat: ipr.link_lookup(ifname=sl.host_intf)[0]
                         for sl in self.links.values()})

    def switch(self, old, new, new_rate_bps: float | None = None) -> bool:
        """Bring the link to ``new`` up and the one to ``old`` down (either may be None);
        True when the link to ``new`` had to be created first (shaped at ``new_rate_bps``)."""
        created = new is not None and new not in self.links
        if created:
            self.create(new, new_rate_bps)
        up, down = self._index.get(new), self._index.get(old)

        def flip(ipr):
            if up is not None:
                ipr.link("set", index=up, state="up")
            if down is not None and down != up:
                ipr.link("set", index=down, state="down")
        self.worker.call(flip)
        return created

    def create(self, sat, rate_bps: float | None = None) -> None:
        """A link to ``sat`` made now (veth, bridge port, OVS port, an htb at ``rate_bps``
        on both ends unless None), left down."""
        from topo.build import StationLink, station_intfs, station_veth
        sw = self.nw.switches[sat]
        sl = StationLink(self.k, self.host, tuple(sat),
                         self.nw.switch_intf(sw, station_port(self.k)), station_link(self.k, sat))
        shaping.run_batch("ip", [station_veth(sl, self.nw.group),
                                 f"link set dev {sl.switch_intf} addrgenmode none",
                                 f"link set dev {sl.switch_intf} up"])

        def attach(ipr):
            from topo.build import _no_ipv6, _tx_checksum_off
            idx = ipr.link_lookup(ifname=sl.host_intf)[0]
            ipr.link("set", index=idx, master=ipr.link_lookup(ifname=self.bridge)[0])
            _no_ipv6(sl.host_intf)
            _tx_checksum_off(sl.host_intf)
            return idx
        self._index[sl.sat] = self.worker.call(attach)
        ovs.vsctl("--", "add-port", sw.name, sl.switch_intf, "--", "set", "interface",
                  sl.switch_intf, f"ofport_request={station_port(self.k)}")
        self.nw.station_links.append(sl)
        self.nw.net.links.append(station_intfs(self.nw, sl))
        self.links[sl.sat] = sl
        if rate_bps:
            self.shape_all({sl.sat: rate_bps}, only=[sl.sat])

    # --- shaping -------------------------------------------------------------------------
    def shape_all(self, rates_bps: dict, only=None) -> None:
        """Root htb on both ends of every link (or those to the satellites ``only``), at
        ``rates_bps[sat]``: one ``tc -batch`` in the root namespace, one in the station's."""
        links = [(sat, self.links[sat]) for sat in (only if only is not None else self.links)]
        shaping.run_batch("tc", [c for sat, sl in links
                                 for c in shaping.htb_add(sl.switch_intf, rates_bps[sat])])
        shaping.run_batch("tc", [c for sat, sl in links
                                 for c in shaping.htb_add(sl.host_intf, rates_bps[sat])],
                          netns_pid=self.host.pid)

    def set_rate(self, root_ipr, sat, rate_bps: float) -> None:
        """Change the htb rate of the link to ``sat`` (both ends) over netlink."""
        sl = self.links[sat]
        r = _rate(rate_bps)
        root_ipr.tc("change-class", "htb", root_ipr.link_lookup(ifname=sl.switch_intf)[0],
                    HTB_CLASS, parent=HTB_ROOT, rate=r, ceil=r)
        idx = self._index[sat]
        self.worker.call(lambda ipr: ipr.tc("change-class", "htb", idx, HTB_CLASS,
                                            parent=HTB_ROOT, rate=r, ceil=r))

    def close(self) -> None:
        self.worker.close()
