"""Packet-capture tools for the SpaceCoMP protocol (node_app.protocol).

* :mod:`experiments.pcap.scapy_layer`: scapy layers for the frames and a per-connection
  TCP stream reassembler that turns a pcap into decoded frames;
* ``spacecomp.lua``: a Wireshark/tshark dissector
  (``tshark -X lua_script:experiments/pcap/spacecomp.lua -r FILE``);
* :mod:`experiments.pcap.report`: per-phase table and sequence plot of a capture.

The wire format itself lives in :mod:`node_app.protocol`; these tools import it.
"""

from pathlib import Path

LUA_DISSECTOR = Path(__file__).resolve().parent / "spacecomp.lua"
