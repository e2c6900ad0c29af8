"""The paper's job cost model (Eq. 5-7), in seconds.  Pure, no I/O.

``S(d, V) = d/c + V / (B*log2(1+SNR(d)))`` with d the routed path length;
``C_m = sum(m_p*K + h*t_h + S(d_col->map, V))``;
``C_r = r_p*K + S(d_red->los, V/F_R) + sum S(d_map->red, V/F_M)``; ``C = C_m + C_r``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from topo.link_model import LinkModel


@dataclass(frozen=True)
class CostModel:
    """Parameters of the cost model (defaults: the paper's Table II).

    data_volume_bytes: V, bytes collected per collect task (10 GB).
    map_reduction_factor: F_M, map output = V / F_M.
    reduce_reduction_factor: F_R, reduce output = V / F_R.
    map_processing_factor / reduce_processing_factor: m_p, r_p.
    processing_unit_s: K, processing time per unit factor (seconds).
    hop_overhead_s: t_h, per-hop queuing/forwarding overhead.  Table II gives 3
        without a unit; we read it as seconds.  LeoDOS uses 100 us.
    link: the link model giving the Shannon rate of a path of length d.
    """

    data_volume_bytes: float = 10e9
    map_reduction_factor: float = 1.0
    reduce_reduction_factor: float = 5.0
    map_processing_factor: float = 1.0
    reduce_processing_factor: float = 1.0
    processing_unit_s: float = 1.0
    hop_overhead_s: float = 3.0
    link: LinkModel = field(default_factory=LinkModel)

    def __post_init__(self):
        for name in ("map_reduction_factor", "reduce_reduction_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} {getattr(self, name)}: must be > 0")
        for name in ("data_volume_bytes", "map_processing_factor", "reduce_processing_factor",
                     "processing_unit_s", "hop_overhead_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} {getattr(self, name)}: must be >= 0")

    def transfer_s(self, length_m, volume_bytes: float):
        """S(d, V) for scalar or array path lengths (a zero-length path costs nothing)."""
        return self.link.transfer_time_s(length_m, volume_bytes)

    def map_pair_cost(self, hops, length_m):
        """C(t, p) = m_p*K + h*t_h + S(d, V) per collector->mapper pair (Eq. 5)."""
        return (self.map_processing_factor * self.processing_unit_s
                + np.asarray(hops) * self.hop_overhead_s
                + self.transfer_s(length_m, self.data_volume_bytes))

    def map_cost(self, hops, length_m) -> float:
        """C_m over the chosen pairs."""
        return float(np.sum(self.map_pair_cost(hops, length_m)))

    def reduce_costs(self, map_to_reducers_m, reducers_to_los_m) -> np.ndarray:
        """C_r of each candidate reducer: ``map_to_reducers_m[i, j]`` the path length from
        mapper i to candidate j, ``reducers_to_los_m[j]`` from candidate j to the LOS."""
        v = self.data_volume_bytes
        to_reducer = np.asarray(self.transfer_s(np.asarray(map_to_reducers_m, dtype=float),
                                                v / self.map_reduction_factor))
        return (self.reduce_processing_factor * self.processing_unit_s
                + np.asarray(self.transfer_s(np.asarray(reducers_to_los_m, dtype=float),
                                             v / self.reduce_reduction_factor))
                + to_reducer.sum(axis=0))

    def reduce_cost(self, map_to_reducer_m, reducer_to_los_m: float) -> float:
        """C_r = r_p*K + S(d_red->los, V/F_R) + sum S(d_map->red, V/F_M)."""
        column = np.asarray(map_to_reducer_m, dtype=float).reshape(-1, 1)
        return float(self.reduce_costs(column, [reducer_to_los_m])[0])
