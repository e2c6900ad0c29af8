"""Link physics: Friis free-space path loss and Shannon capacity (paper Table II).

Pure model, no I/O.  ``SNR = P*Gt*Gr / (kB*T_N*B*(4*pi*d/lambda)^2)`` and
``C = B*log2(1+SNR)``; the propagation delay is ``d/c``.
"""

from __future__ import annotations

import numpy as np
from dataclasses import dataclass

SPEED_OF_LIGHT_M_S = 299_792_458.0
BOLTZMANN_J_K = 1.380649e-23


@dataclass(frozen=True)
class LinkModel:
    """Parameters of one optical ISL (defaults: the paper's Table II).

    bandwidth_hz: B, channel bandwidth.
    tx_power_w: P, transmit power.
    tx_gain_dbi / rx_gain_dbi: antenna gains Gt, Gr.
    noise_temp_k: T_N, system noise temperature.
    wavelength_m: lambda.
    """

    bandwidth_hz: float = 10e9
    tx_power_w: float = 5.0
    tx_gain_dbi: float = 62.5
    rx_gain_dbi: float = 62.5
    noise_temp_k: float = 300.0
    wavelength_m: float = 1550e-9

    def __post_init__(self):
        for name in ("bandwidth_hz", "tx_power_w", "noise_temp_k", "wavelength_m"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} {getattr(self, name)}: must be > 0")

    def snr(self, distance_m):
        """Linear signal-to-noise ratio at ``distance_m`` (scalar or array; Friis, free space)."""
        d = np.asarray(distance_m, dtype=float)
        gain = 10 ** ((self.tx_gain_dbi + self.rx_gain_dbi) / 10)
        noise_w = BOLTZMANN_J_K * self.noise_temp_k * self.bandwidth_hz
        with np.errstate(divide="ignore"):
            snr = self.tx_power_w * gain / (noise_w * (4 * np.pi * d / self.wavelength_m) ** 2)
        return _scalar(snr)

    def shannon_rate_bps(self, distance_m):
        """Shannon capacity B*log2(1+SNR) in bit/s (scalar or array)."""
        return _scalar(self.bandwidth_hz * np.log2(1 + np.asarray(self.snr(distance_m))))

    @staticmethod
    def delay_s(distance_m):
        """Propagation delay d/c in seconds."""
        return _scalar(np.asarray(distance_m, dtype=float) / SPEED_OF_LIGHT_M_S)

    def transfer_time_s(self, distance_m, volume_bytes: float):
        """Paper's S(d, V) = d/c + V / (B*log2(1+SNR(d))), seconds (scalar or array).

        A zero-length path (same satellite) costs nothing."""
        d = np.asarray(distance_m, dtype=float)
        rate = np.asarray(self.shannon_rate_bps(d))
        with np.errstate(divide="ignore", invalid="ignore"):
            transfer = np.where(d > 0, 8 * volume_bytes / rate, 0.0)
        return _scalar(d / SPEED_OF_LIGHT_M_S + transfer)


def _scalar(x):
    """Plain float for 0-d results, the array otherwise."""
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x
