"""Build the network of :class:`topo.topology.ConstellationTopo` in bulk, fast and exactly.

Same names, ports and addresses as the topology class, without Mininet's
one-subprocess-per-object build (which, with its teardown, grows quadratically here):

* host shells are spawned all at once, then waited for (they start in parallel);
* every veth is created by one ``ip -batch`` (host ends directly inside the host's
  namespace) and tagged with a link *group* private to this run;
* all bridges, ports, controller targets and port numbers go straight into the OVS
  database, one transaction per OVS instance (:mod:`topo.bridges`);
* each host is configured over netlink from one thread that enters its namespace
  (pyroute2; no process per host).

The result is a real ``mininet.net.Mininet`` object with Mininet ``Host`` objects, so
``CLI(net)``, ``host.cmd()``, ``host.popen()`` work.  :class:`Network` holds what exists
so far, so a failed build is torn down exactly (:mod:`topo.teardown`).
"""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import os
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass, field

from mininet.link import Intf
from mininet.net import Mininet

from topo import bridges as ovs_bridges
from topo import loss, netns, ovs, shaping
from topo.addressing import (GATEWAY_IP, GATEWAY_MAC, HOST_PORT, dpid_of, ground_ip,
                             ground_name, ground_ports, host_name, isl_ports, mac_of,
                             sat_ip, station_ip, station_link, station_port, switch_name)
from topo.errors import TestbedError
from topo.mn_nodes import SatHost, SatSwitch, mininet_link
from topo.ovsdb_ops import BridgeRow
from topo.phases import PhaseTimer
from topo.procs import raise_open_file_limit

NUD_PERMANENT = 0x80
SIOCETHTOOL, ETHTOOL_STXCSUM = 0x8946, 0x17


@dataclass
class Network:
    """What one run has created: ``group`` tags its veths; ``datapath_type`` is OVS's
    ("netdev" userspace or "system" kernel); ``host_links`` are (host, ip, switch, port)."""

    group: int
    datapath_type: str | None = None
    net: Mininet | None = None
    sat_hosts: dict = field(default_factory=dict)
    ground_hosts: list = field(default_factory=list)
    switches: dict = field(default_factory=dict)
    bridges: list = field(default_factory=list)
    host_links: list = field(default_factory=list)
    station_links: list = field(default_factory=list)  # StationLink of placed stations
    ovs: ovs_bridges.OvsPlacement = field(default_factory=ovs_bridges.OvsPlacement)
    ovs_instances: int = 0  # private OVS instances to start (0: the system instance)

    @staticmethod
    def switch_intf(sw, port: int) -> str:
        """Name of the root-side veth end on ``sw``'s ``port``: ``<switch>-eth<port>``."""
        return f"{sw.name}-eth{port}"

    @property
    def hosts(self) -> list:
        return list(self.sat_hosts.values()) + list(self.ground_hosts)

    def ground_links(self) -> list[shaping.GroundLink]:
        """The pinned ground stations' links (switch end, host end, host namespace)."""
        return [shaping.GroundLink(self.switch_intf(sw, port), f"{h.name}-eth0", h.pid)
                for h, _ip, sw, port in self.host_links if h in self.ground_hosts]


@dataclass(frozen=True)
class StationLink:
    """One pre-created link of placed station ``k`` (host ``host``) to satellite ``sat``:
    ``switch_intf`` is port ``station_port(k)`` of the satellite's switch, ``host_intf``
    a port of the Linux bridge ``g<k>-eth0`` (holding the station's address) in the
    station's namespace.  Only the serving satellite's link is up."""

    k: int
    host: object
    sat: tuple
    switch_intf: str
    host_intf: str


def preflight(cfg, c, group: int, metadata: dict, echo) -> str:
    """Start OVS if needed, detect the datapath, netem and nftables loss; refuse to build
    over bridges or a link group that exist.  Returns the OVS datapath type."""
    need = 4 * c.size + 512  # host shells' ptys, the check's sockets, OVS clients
    fds = raise_open_file_limit(need)[0]
    if fds < need:
        raise TestbedError(f"open-file limit {fds} is below the {need} a {c.planes}x"
                           f"{c.sats_per_plane} grid needs: raise it (ulimit -n {need})")
    started = ovs.ensure_running()
    dp = ovs.datapath()
    netem = shaping.netem_available()
    metadata.update(datapath=dp, ovs_started_by_run=started, netem=netem,
                    delay_emulated=netem and cfg.shaping, controller=cfg.controller)
    if not netem:
        msg = ("WARNING: this kernel has no sch_netem: propagation delay (d/c) is NOT "
               "emulated (rates, outages and, via nftables, lossy-band loss are)")
        metadata["warnings"].append(msg)
        echo(msg)
    if netem:
        metadata["loss_emulated"] = "netem"
    elif c.lossy_band_deg > 0 and loss.nft_available():
        metadata["loss_emulated"] = "nftables"
    else:
        metadata["loss_emulated"] = None if c.lossy_band_deg > 0 else "not needed"
    names = {switch_name(s) for s in c.satellites()}
    clash = names & set(ovs.bridges())
    if clash:
        raise TestbedError(f"OVS bridge {sorted(clash)[0]} already exists (another testbed "
                           f"running, or a crashed one: remove its bridges first)")
    res = subprocess.run(["ip", "-o", "link", "show", "group", str(group)],
                         capture_output=True, text=True, timeout=10)
    if res.stdout.strip():
        raise TestbedError(f"link group {group} is in use")
    return "netdev" if dp == "user" else "system"


def build(nw: Network, c, ground: list, ctl_port: int | None, phase: PhaseTimer,
          placed: dict | None = None, cluster=None) -> None:
    """Create hosts, switches, veths, addresses and bridges of constellation ``c`` with
    ground stations at line-of-sight satellites ``ground``, every bridge controlled by
    ``tcp:127.0.0.1:ctl_port`` (None: no controller yet, :func:`topo.bridges.connect`
    later); fills ``nw`` as it goes.  placed: placed ground stations
    instead (``topo.ground_segment``), ``{k: (candidates, serving)}``: station k gets its
    own address on a Linux bridge and one link per candidate satellite (port
    ``station_port(k)`` of its switch), only the serving one's up (None: all down).
    cluster: a :class:`topo.cluster.Cluster` placing planes on several servers (None: all
    here), every bridge then controlled by ``tcp:<first server's address>:ctl_port``."""
    sats = c.satellites()
    grounds = ([(k, None, station_port(k)) for k in sorted(placed)]
               if placed else ground_ports(ground))
    # Mininet's own object, filled with our nodes (no build, no controller).
    nw.net = Mininet(topo=None, build=False, controller=None, autoSetMacs=False,
                     waitConnected=False)
    server_of = cluster.server_of if cluster else (lambda sat: 0)
    _hosts(nw, sats, grounds, server_of, cluster)
    phase("host_shells")
    for sat in sats:  # Mininet objects only; OVS gets them in bulk below
        nw.switches[sat] = SatSwitch(
            switch_name(sat), dpid=f"{dpid_of(c, sat):016x}",
            datapath="user" if nw.datapath_type == "netdev" else "kernel",
            failMode="secure", protocols="OpenFlow13", inNamespace=False)
    for sat in sats:
        nw.host_links.append((nw.sat_hosts[sat], sat_ip(sat), nw.switches[sat], HOST_PORT))
    for (k, los, port), h in zip(grounds, nw.ground_hosts):
        if placed:
            for sat in placed[k][0]:
                nw.station_links.append(StationLink(
                    k, h, tuple(sat), nw.switch_intf(nw.switches[tuple(sat)], port),
                    station_link(k, sat)))
        else:
            nw.host_links.append((h, ground_ip(k, los), nw.switches[los], port))
    _veths(nw, c, server_of, cluster)
    phase("veths")
    _intf_objects(nw, c)
    phase("intf_objects")
    _configure_hosts(nw, cluster)
    if placed:
        configure_stations(nw, {k: v[1] for k, v in placed.items()})
    phase("host_config")
    if cluster:  # bridges on several servers: ovs-vsctl on each (topo.cluster)
        _cluster_bridges(nw, c, sats, ctl_port, server_of, cluster)
    else:
        _bridges(nw, c, sats, ctl_port)
    phase("ovs_bridges")
    for sw in nw.switches.values():
        nw.net.switches.append(sw)
        nw.net.nameToNode[sw.name] = sw
    for h in nw.hosts:
        nw.net.hosts.append(h)
        nw.net.nameToNode[h.name] = h


def _hosts(nw: Network, sats, grounds, server_of, cluster) -> None:
    """Spawn every shell, then wait for them (they start in parallel); a host lives on
    the server of its satellite (a pinned ground station on that of its line-of-sight one)."""
    cls = cluster.host_class if cluster else (lambda k: SatHost)
    for sat in sats:
        nw.sat_hosts[sat] = cls(server_of(sat))(host_name(sat))
    for k, los, _port in grounds:
        nw.ground_hosts.append(cls(server_of(los) if los else 0)(ground_name(k)))
    for h in nw.hosts:
        h.finish_shell()
    for h in nw.hosts:
        h.waitOutput()
    if cluster:
        cluster.read_remote_pids([h for h in nw.hosts if type(h) is not SatHost])


def _veths(nw: Network, c, server_of, cluster) -> None:
    """Every veth in one ``ip -batch`` per server, host ends created inside their namespace;
    an ISL between two servers is a tunnel end on each (``cluster.tunnel_commands``)."""
    g = nw.group
    adds: dict[int, list[tuple[str, str | None]]] = {}  # server -> (root-side name, add line)
    sat_of = {sw.name: sat for sat, sw in nw.switches.items()}
    for h, ip, sw, port in nw.host_links:
        name = nw.switch_intf(sw, port)
        adds.setdefault(server_of(sat_of[sw.name]), []).append((name, (
            f"link add name {name} group {g} type veth peer name "
            f"{h.name}-eth0 address {mac_of(ip)} netns {h.pid}")))
    for sl in nw.station_links:  # placed stations: one server only (topo.config)
        adds.setdefault(0, []).append((sl.switch_intf, station_veth(sl, g)))
    for a, pa, b, pb, _kind in isl_ports(c):
        if server_of(a) == server_of(b):
            na, nb = f"{switch_name(a)}-eth{pa}", f"{switch_name(b)}-eth{pb}"
            adds.setdefault(server_of(a), []).append(
                (na, f"link add name {na} group {g} type veth peer name {nb} group {g}"))
            adds[server_of(a)].append((nb, None))
    if cluster:
        for k in range(len(cluster.specs)):
            adds.setdefault(k, []).extend(cluster.tunnel_commands(k))
    per_server = {}
    for k, items in adds.items():
        cmds = [line for _name, line in items if line]
        # No IPv6 link-local addresses on the root-side ends: addrconf/DAD on thousands
        # of new devices holds the RTNL lock for seconds and nothing here speaks IPv6.
        cmds += [f"link set dev {name} addrgenmode none" for name, _line in items]
        per_server[k] = cmds + [f"link set group {g} up"]
    if cluster:
        cluster.run_batches("ip", per_server)
    else:
        shaping.run_batch("ip", per_server.get(0, []))


def station_veth(sl: StationLink, group: int) -> str:
    """The ``ip`` command creating station link ``sl`` (host end in its namespace, with
    the station's MAC)."""
    return (f"link add name {sl.switch_intf} group {group} type veth peer name {sl.host_intf} "
            f"address {mac_of(station_ip(sl.k))} netns {sl.host.pid}")


def _intf_objects(nw: Network, c) -> None:
    """Mininet Intf/Link objects mirroring what exists."""
    bridges = {}
    for sl in nw.station_links:
        if sl.k not in bridges:  # the station's bridge, holding its address
            bridges[sl.k] = bi = Intf(f"{sl.host.name}-eth0", node=sl.host, port=0, up=None)
            bi.ip, bi.prefixLen, bi.mac = station_ip(sl.k), 32, mac_of(station_ip(sl.k))
        nw.net.links.append(station_intfs(nw, sl))
    for h, ip, sw, port in nw.host_links:
        hi = Intf(f"{h.name}-eth0", node=h, port=0, up=None)  # (mac=, up= run ifconfig)
        hi.ip, hi.prefixLen, hi.mac = ip, 32, mac_of(ip)
        si = Intf(nw.switch_intf(sw, port), node=sw, port=port, up=None)
        nw.net.links.append(mininet_link(hi, si))
    for a, pa, b, pb, _kind in isl_ports(c):
        ia = Intf(f"{switch_name(a)}-eth{pa}", node=nw.switches[a], port=pa, up=None)
        ib = Intf(f"{switch_name(b)}-eth{pb}", node=nw.switches[b], port=pb, up=None)
        nw.net.links.append(mininet_link(ia, ib))


def station_intfs(nw: Network, sl: StationLink):
    """Mininet Intf objects (and their Link) of station link ``sl``."""
    hi = Intf(sl.host_intf, node=sl.host, up=None)
    hi.mac = mac_of(station_ip(sl.k))
    si = Intf(sl.switch_intf, node=nw.switches[sl.sat], port=station_port(sl.k), up=None)
    return mininet_link(hi, si)


def configure_stations(nw: Network, serving: dict) -> None:
    """Each placed station's namespace: a Linux bridge ``g<k>-eth0`` (STP off, the
    station's MAC) with its /32, the virtual gateway route and permanent neighbour entry;
    every station link a port of it, up only toward ``serving[k]`` (None: all down)."""
    by_k: dict[int, list] = {k: [] for k in serving}  # a station may have no link yet
    for sl in nw.station_links:
        by_k[sl.k].append(sl)

    def station(ipr, k, links):
        ip, br = station_ip(k), f"{nw.ground_hosts[k - 1].name}-eth0"
        ipr.link("add", ifname=br, kind="bridge", br_stp_state=0, br_forward_delay=0,
                 address=mac_of(ip))
        bidx = ipr.link_lookup(ifname=br)[0]
        for sl in links:
            idx = ipr.link_lookup(ifname=sl.host_intf)[0]
            ipr.link("set", index=idx, master=bidx)
            _no_ipv6(sl.host_intf)  # no addrconf (RTNL-heavy) at each handover
            _tx_checksum_off(sl.host_intf)
            if sl.sat == serving.get(k):
                ipr.link("set", index=idx, state="up")
        _host_address(ipr, bidx, ip)
        _tx_checksum_off(br)
    _each_namespace([(f"station g{k}", nw.ground_hosts[k - 1].pid,
                      lambda ipr, k=k, links=links: station(ipr, k, links))
                     for k, links in by_k.items()], "station-config")


def _configure_hosts(nw: Network, cluster=None) -> None:
    """/32 + a virtual gateway with a permanent neighbour entry, so hosts never ARP
    across the torus; IPv6 off; tx checksum offload off (the userspace datapath does not
    complete partial checksums, TCP would hang).  No process per host: one thread enters
    each host's namespace in turn and speaks netlink (pyroute2) and one ethtool ioctl."""
    def host(ipr, h, ip):
        intf = f"{h.name}-eth0"
        _host_address(ipr, ipr.link_lookup(ifname=intf)[0], ip)
        _tx_checksum_off(intf)
    if cluster:  # other servers' hosts: a script per server over SSH
        cluster.configure_remote_hosts([(h, ip) for h, ip, _sw, _port in nw.host_links
                                        if type(h) is not SatHost])
    _each_namespace([(f"host {h.name}", h.pid, lambda ipr, h=h, ip=ip: host(ipr, h, ip))
                     for h, ip, _sw, _port in nw.host_links if type(h) is SatHost],
                    "host-config")


def _host_address(ipr, idx: int, ip: str) -> None:
    """``ip``/32 on interface ``idx`` (brought up), the route to the virtual gateway and its
    permanent neighbour entry: no ARP on the torus."""
    ipr.addr("add", index=idx, address=ip, prefixlen=32)
    ipr.link("set", index=idx, state="up")
    ipr.route("add", dst=f"{GATEWAY_IP}/32", oif=idx, scope="link")
    ipr.route("add", dst="10.0.0.0/8", gateway=GATEWAY_IP, oif=idx)
    ipr.neigh("replace", dst=GATEWAY_IP, lladdr=GATEWAY_MAC, ifindex=idx, state=NUD_PERMANENT)


def _each_namespace(jobs: list, name: str) -> None:
    """``fn(ipr)`` for each ``(label, pid, fn)`` from one thread that enters process
    ``pid``'s namespace in turn (IPv6 off there, loopback up); TestbedError naming the
    first that failed."""
    from pyroute2 import IPRoute
    failed: list[str] = []

    def work():
        for label, pid, fn in jobs:
            try:
                netns.enter(f"/proc/{pid}/ns/net")
                for key in ("all", "default"):  # /proc/sys/net: the thread's namespace
                    with open(f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6", "w") as fh:
                        fh.write("1")
                with IPRoute() as ipr:
                    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                    fn(ipr)
            except Exception as exc:  # noqa: BLE001 - reported as one line below
                failed.append(f"{label}: configuration failed: {exc}")
                return
    t = threading.Thread(target=work, name=name)
    t.start()
    t.join()
    if failed:
        raise TestbedError(failed[0])


def _no_ipv6(intf: str) -> None:
    """IPv6 off on ``intf`` (in the calling thread's namespace): bringing it up then sets
    no link-local address and runs no duplicate address detection."""
    with open(f"/proc/sys/net/ipv6/conf/{intf}/disable_ipv6", "w") as fh:
        fh.write("1")


def _tx_checksum_off(intf: str) -> None:
    """``ethtool -K INTF tx off`` as one ioctl in the calling thread's namespace."""
    value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, 0))
    ifreq = struct.pack("16sP", intf.encode(), ctypes.addressof(value)).ljust(40, b"\0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)


def _bridges(nw: Network, c, sats, ctl_port: int | None) -> None:
    """All bridges, ports, port numbers and controller targets written straight into the
    OVS database, one transaction per OVS instance (``ovs-vsctl`` grows quadratically in
    the commands of one transaction); private instances are started first."""
    ctl = f"tcp:127.0.0.1:{ctl_port}" if ctl_port else None
    rows = []
    for sat in sats:
        br = switch_name(sat)
        nw.bridges.append(br)
        ports = tuple((port, nw.switches[sat].intfs[port].name)
                      for port in sorted(nw.switches[sat].intfs)
                      if port >= 1 and nw.switches[sat].intfs[port].name != "lo")
        rows.append(BridgeRow(br, dpid_of(c, sat), ports, ctl, nw.datapath_type))
    if nw.ovs_instances:
        ovs_bridges.start_private(nw.ovs, nw.ovs_instances, c.planes,
                              {switch_name(s): s[1] for s in sats}, parent="/run")
        rows = [dataclasses.replace(r, datapath_type="dummy") for r in rows]
    ovs_bridges.create(nw.ovs, rows)


def _cluster_bridges(nw: Network, c, sats, ctl_port: int, server_of, cluster) -> None:
    """All bridges, ports, port numbers and controller targets in as few ``ovs-vsctl``
    transactions as the kernel's argument limit allows (each one makes ovs-vswitchd
    reconfigure every bridge, so fewer is faster), per server."""
    ctl = f"tcp:{cluster.ctl_host if cluster else '127.0.0.1'}:{ctl_port}"
    per_server: dict[int, list] = {}
    for sat in sats:
        br = switch_name(sat)
        nw.bridges.append(br)
        args = ["--", "add-br", br, "--", "set", "bridge", br,
                f"datapath_type={nw.datapath_type}", "fail_mode=secure",
                "protocols=OpenFlow13", f"other-config:datapath-id={dpid_of(c, sat):016x}",
                "other-config:disable-in-band=true"]
        for port in sorted(nw.switches[sat].intfs):
            intf = nw.switches[sat].intfs[port].name
            if port < 1 or intf == "lo":  # Mininet's loopback placeholder
                continue
            args += ["--", "add-port", br, intf, "--", "set", "interface", intf,
                     f"ofport_request={port}"]
        per_server.setdefault(server_of(sat), []).append(
            args + ["--", "set-controller", br, ctl])
        if cluster:
            cluster.bridges[server_of(sat)].append(br)
    for k, per_bridge in per_server.items():
        for chunk in arg_batches(per_bridge):
            if cluster:
                cluster.vsctl(k, chunk)
            else:
                ovs.vsctl(*chunk, timeout_s=600)


def arg_batches(groups: list[list[str]], reserve_bytes: int = 256 * 1024) -> list[list[str]]:
    """Concatenate argument ``groups`` (kept whole) into command lines that each fit the
    kernel's ARG_MAX, less the environment and ``reserve_bytes``."""
    env_bytes = sum(len(k) + len(v) + 10 for k, v in os.environ.items())
    budget = os.sysconf("SC_ARG_MAX") - env_bytes - reserve_bytes
    batches, cur, used = [], [], 0
    for g in groups:
        size = sum(len(a.encode()) + 1 + 8 for a in g)  # string, NUL, argv pointer
        if cur and used + size > budget:
            batches.append(cur)
            cur, used = [], 0
        cur += g
        used += size
    if cur:
        batches.append(cur)
    return batches
