"""The constellation as a Mininet topology, and the addressing plan of the testbed.

Every satellite ``[sat, orb]`` is one OpenFlow switch (the satellite's router)
plus one host (the satellite computer).  Switches form the ISL torus of
:class:`topo.constellation.Constellation`; ground-station hosts attach by a
ground link to their line-of-sight satellite (default ``[1, 1]``).

Addressing plan (all derived, nothing to look up):

=====================  ==========================================================
switch name            ``s<sat>_<orb>``, datapath id = node id ``(orb-1)*M + sat``
host name              ``h<sat>_<orb>``
host address           ``10.<orb>.<sat>.1``; the whole ``10.<orb>.<sat>.0/24`` belongs
                       to satellite ``[sat, orb]``
ground station k       ``g<k>`` (1-based), ``10.<orb>.<sat>.<100+k>`` inside the /24 of
                       its line-of-sight satellite
MAC of an address      ``02:00:`` + the four address bytes (``10.2.3.1`` ->
                       ``02:00:0a:02:03:01``)
gateway                every host routes ``10.0.0.0/8`` via ``169.254.0.1``, a virtual
                       gateway whose MAC (``02:00:a9:fe:00:01``) is a permanent
                       neighbour entry, so hosts never ARP on the torus
switch ports           1 host, 2 EAST (sat+1), 3 WEST (sat-1), 4 SOUTH (orb+1),
                       5 NORTH (orb-1), 6.. ground stations in config order
=====================  ==========================================================

Usable from the command line, e.g.
``mn --custom topo/topology.py --topo constellation,3,3 --switch ovs,datapath=user
--controller remote``; with plain Mininet hosts get ``/8`` addresses and the
controller answers their ARP requests (see ``controller/app.py``).
"""

from __future__ import annotations

import os
import sys

if globals().get("__package__") in (None, ""):
    # Loaded by ``mn --custom FILE`` (exec'd, no __file__): make ``topo`` importable.
    _file = globals().get("__file__") or next(
        (a for a in sys.argv for a in a.split(",") if a.endswith("topology.py")), "")
    if _file:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(_file))))

from mininet.topo import Topo  # noqa: E402

from topo.addressing import *  # noqa: E402,F401,F403  (re-exported: the plan lives there)
from topo.addressing import (HOST_PORT, dpid_of, ground_ip, ground_name, ground_ports,  # noqa: E402
                             host_name, isl_ports, mac_of, sat_ip, switch_name)
from topo.constellation import Constellation  # noqa: E402

class ConstellationTopo(Topo):
    """Mininet topology of an ``planes x sats_per_plane`` constellation.

    constellation: a :class:`Constellation` (or pass ``planes``/``sats_per_plane``).
    ground: line-of-sight satellites of the ground stations, default ``[(1, 1)]``.
    host_prefix_len: prefix length of host addresses; 8 for plain Mininet (the
        controller answers ARP), the fast builder uses /32 plus a gateway.
    """

    def build(self, planes: int = 3, sats_per_plane: int | None = None,
              constellation: Constellation | None = None, ground=((1, 1),),
              host_prefix_len: int = 8):
        c = constellation or Constellation(planes=int(planes),
                                           sats_per_plane=int(sats_per_plane or planes))
        self.constellation = c
        self.ground = [tuple(g) for g in ground]
        for sat in c.satellites():
            self.addSwitch(switch_name(sat), dpid=f"{dpid_of(c, sat):016x}",
                           protocols="OpenFlow13")
            self.addHost(host_name(sat), ip=f"{sat_ip(sat)}/{host_prefix_len}",
                         mac=mac_of(sat_ip(sat)))
            self.addLink(host_name(sat), switch_name(sat), port1=0, port2=HOST_PORT)
        for a, pa, b, pb, _kind in isl_ports(c):
            self.addLink(switch_name(a), switch_name(b), port1=pa, port2=pb)
        for k, los, port in ground_ports(self.ground):
            if not c.contains(los):
                raise ValueError(f"ground station {k}: satellite {list(los)} outside the grid")
            ip = ground_ip(k, los)
            self.addHost(ground_name(k), ip=f"{ip}/{host_prefix_len}", mac=mac_of(ip))
            self.addLink(ground_name(k), switch_name(los), port1=0, port2=port)


# ``mn --custom topo/topology.py --topo constellation,N[,M]``
topos = {"constellation": ConstellationTopo}
