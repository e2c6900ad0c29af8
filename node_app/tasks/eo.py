"""Earth observation: thermal rasters -> per-tile anomaly masks -> merged mask + statistics.

"Large binary in, small result out" (the SpaceCoMP programming model): each collector generates
``job_data.tiles`` thermal rasters of ``tile x tile`` float32 brightness temperatures
(kelvin; 1 MiB each at 512 px) and ships them as files; each mapper thresholds its tiles
into bit-packed anomaly masks (1/32 of the raster); the reducer lays the masks out as a
mosaic, downsamples it by ``block`` (a block is hot if any pixel in it is) and returns the
statistics plus the small merged mask as ``anomaly_mask.npy``.

job_data keys (defaults): ``tile`` 512 px, ``tiles`` 2 per collector, ``seed`` 1,
``hotspots`` 3 fires per tile, ``threshold_k`` 330 K, ``block`` 8 px.
"""

from __future__ import annotations

import io
import math
import os


MAX_TILE_PX = 2048          # a 2048 px tile is 16 MiB of float32; the scene needs ~3x that
MAX_TILES = 64              # per collector
MAX_HOTSPOTS = 1000


def check_params(job_data: dict | None, data_volume_bytes: int = 0, data_dir: str = "") -> None:
    """Bounds (BadTaskInput): tile 16..2048 px, tiles 1..64, hotspots 0..1000, block
    1..tile, a finite threshold."""
    from node_app.tasks import BadTaskInput, _number
    jd = job_data or {}
    _number(jd, "tile", 16, MAX_TILE_PX, integer=True)
    _number(jd, "tiles", 1, MAX_TILES, integer=True)
    _number(jd, "hotspots", 0, MAX_HOTSPOTS, integer=True)
    _number(jd, "seed", 0, 2 ** 63 - 1, integer=True)
    _number(jd, "threshold_k", 0.0, 1e6)
    p = params(jd, checked=False)
    _number(jd, "block", 1, p["tile"], integer=True)
    if p["tile"] % p["block"]:
        raise BadTaskInput(f"job_data.block {p['block']} must divide the tile size {p['tile']}")


def params(job_data: dict | None, checked: bool = True) -> dict:
    """The job's parameters with defaults; bounded by :func:`check_params` (BadTaskInput)."""
    if checked:
        check_params(job_data)
    p = {"tile": 512, "tiles": 2, "seed": 1, "hotspots": 3, "threshold_k": 330.0, "block": 8}
    p.update({k: v for k, v in (job_data or {}).items() if k in p})
    return p


def thermal_tile(seed: int, data_id: int, k: int, size: int, hotspots: int):
    """A deterministic synthetic scene (K): a 285-300 K background with 1.5 K sensor
    noise and ``hotspots`` fires of 3-12 px radius at 360-700 K."""
    import numpy as np
    rng = np.random.default_rng([seed, data_id, k])
    y, x = np.ogrid[0:size, 0:size]
    y, x = y.astype(np.float32), x.astype(np.float32)
    scene = rng.normal(0.0, 1.5, (size, size)).astype(np.float32)
    scene += (285.0 + 15.0 * (x / size)).astype(np.float32)
    for _ in range(hotspots):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(3, 12)
        # only the fire's bounding box is computed (the same pixels, bounded memory)
        y0, y1 = max(0, int(cy - r) - 1), min(size, int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r) - 1), min(size, int(cx + r) + 2)
        fire = (y[y0:y1] - cy) ** 2 + (x[:, x0:x1] - cx) ** 2 <= r * r
        scene[y0:y1, x0:x1][fire] = rng.uniform(360.0, 700.0)
    return scene


def anomaly_mask(scene, threshold_k: float):
    return scene > threshold_k


def tile_id(data_id: int, k: int, tiles: int) -> int:
    """Global tile index, 0-based, collector-major."""
    return (data_id - 1) * tiles + k


class ThermalCollector:
    check_params = staticmethod(check_params)

    def collect(self, payload):
        import numpy as np
        md = payload["meta_data"]
        p = params(md.get("job_data"))
        for k in range(p["tiles"]):
            gid = tile_id(md["data_id"], k, p["tiles"])
            path = os.path.join(payload["scratch_dir"], f"thermal-{gid}.npy")
            np.save(path, thermal_tile(p["seed"], md["data_id"], k, p["tile"], p["hotspots"]))
            yield {"value": {"tile": gid, "size": p["tile"]},
                   "_COMP_FILE": {"name": f"thermal-{gid}.npy", "stream": open(path, "rb")}}


class AnomalyMapper:
    check_params = staticmethod(check_params)

    def run_map(self, payload):
        import numpy as np
        p = params(payload["meta_data"].get("job_data"))
        for record in payload["data"]:
            gid = record["tile"]
            scene = np.load(payload["files"][f"thermal-{gid}.npy"])
            hot = anomaly_mask(scene, p["threshold_k"])
            yield {"value": {"tile": gid, "shape": list(hot.shape),
                             "hot_pixels": int(hot.sum()), "max_k": float(scene.max()),
                             "mean_k": float(scene.mean())},
                   "_COMP_FILE": {"name": f"mask-{gid}.bin",
                                  "stream": io.BytesIO(np.packbits(hot).tobytes())}}


class MaskReducer:
    check_params = staticmethod(check_params)

    def reduce(self, payloads):
        import numpy as np
        md = payloads[0]["meta_data"] if payloads else {}
        p = params(md.get("job_data"))
        tiles = [pl for pl in payloads if isinstance(pl["data"], dict) and "tile" in pl["data"]]
        n = max((t["data"]["tile"] for t in tiles), default=-1) + 1
        cols = max(1, math.ceil(math.sqrt(n)))
        rows = max(1, math.ceil(n / cols))
        size, block = p["tile"], p["block"]
        small = size // block
        mosaic = np.zeros((rows * small, cols * small), dtype=bool)
        for t in tiles:
            d = t["data"]
            h, w = d["shape"]
            bits = np.frombuffer(t["files"][f"mask-{d['tile']}.bin"].read(), dtype=np.uint8)
            hot = np.unpackbits(bits)[:h * w].reshape(h, w)
            blocks = hot[:small * block, :small * block].reshape(small, block, small, block).any(axis=(1, 3))
            r, c = divmod(d["tile"], cols)
            mosaic[r * small:(r + 1) * small, c * small:(c + 1) * small] = blocks
        buf = io.BytesIO()
        np.save(buf, mosaic)
        buf.seek(0)
        stats = {"tiles": len(tiles), "hot_pixels": sum(t["data"]["hot_pixels"] for t in tiles),
                 "hot_tiles": sum(1 for t in tiles if t["data"]["hot_pixels"] > 0),
                 "max_k": max((t["data"]["max_k"] for t in tiles), default=None),
                 "pixels": sum(t["data"]["shape"][0] * t["data"]["shape"][1] for t in tiles),
                 "hot_blocks": int(mosaic.sum()), "mask_shape": list(mosaic.shape),
                 "block": block, "threshold_k": p["threshold_k"]}
        return {"value": stats, "_COMP_FILE": {"name": "anomaly_mask.npy", "stream": buf}}
