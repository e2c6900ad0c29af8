"""The configuration of :mod:`experiments.paper`: its schema, loading and checking
(every bad value one clear line before any work starts), the sensitivity variants and
the few words describing each.  Pure, no I/O beyond reading the YAML file."""

from __future__ import annotations

import copy
from pathlib import Path

from experiments import sweeps
from node_app.cost_model import CostModel
from node_app.planner import CENTER_PLACEMENTS, COSTS, EAGER_ORDERS, GeoBox, PlanError
from topo.constellation import Constellation
from topo import cli
from topo.cli import UsageError

DEFAULT_CONFIG = Path(__file__).with_name("paper.yaml")
DEFAULT_VARIANT = "paper_reading"
SIZINGS = ("square", "sats_per_plane", "total")
LOS_SOURCES = ("cities", "uniform")
SELECTIONS = ("shuffled", "ordered")

# Config schema: key -> type, a nested dict, or [element type] for a non-empty list.
_NUM = (int, float)
SCHEMA = {
    "seed": int, "runs": int, "workers": int, "results": str,
    "constellation": {"altitude_m": _NUM, "inclination_deg": _NUM, "phasing": _NUM},
    "routing": {"sizes": [int], "endpoints": int, "outage_lat_deg": _NUM},
    "jobs": {
        "planes": [int], "sizing": str, "sats_per_plane": int, "total_satellites": [int],
        "aoi": str, "ascending_only": bool, "grid_aoi": [int], "selection": str,
        "geo_box": {"ul_lat": _NUM, "ul_lon": _NUM, "lr_lat": _NUM, "lr_lon": _NUM},
        "collector_fraction": _NUM, "reduce_factors": [_NUM],
        "los": {"source": str, "min_population": int, "region": str, "ascending_only": bool},
        "center": str, "eager_order": str, "allocation_cost": str,
        "footprint_diameter_m": _NUM,
        "cost_model": {"data_volume_bytes": _NUM, "map_reduction_factor": _NUM,
                       "reduce_reduction_factor": _NUM, "map_processing_factor": _NUM,
                       "reduce_processing_factor": _NUM, "processing_unit_s": _NUM,
                       "hop_overhead_s": _NUM},
    },
    "sensitivity": {"runs": int, "variants": dict},
}


# --- config ------------------------------------------------------------------------------------
def _check(data, schema, where: str) -> None:
    if not isinstance(data, dict):
        raise UsageError(f"config {where or 'file'}: expected a mapping")
    cli.check_keys(data, schema, prefix=f"{where}." if where else "")
    for key, value in data.items():
        name = f"{where}.{key}" if where else str(key)
        kind = schema[key]
        if isinstance(kind, dict):
            _check(value, kind, name)
        elif isinstance(kind, list):
            if (not isinstance(value, list) or not value
                    or not all(_is(v, kind[0]) for v in value)):
                raise UsageError(f"config {name}: expected a non-empty list of {_name(kind[0])}")
        elif not _is(value, kind):
            raise UsageError(f"config {name}: expected {_name(kind)}, got {value!r}")


def _is(value, kind) -> bool:
    if isinstance(value, bool) and kind is not bool:  # YAML true is not a number
        return False
    return isinstance(value, kind)


def _name(kind) -> str:
    return "a number" if kind == _NUM else kind.__name__


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def load_config(path: str, quick: bool, overrides: dict) -> dict:
    """The config to run: the file, its ``quick`` overrides when asked, then the flags.

    Raises UsageError for an unreadable file, an unknown key or a bad value."""
    raw = cli.load_yaml_mapping(path, "config")
    quick_over = raw.pop("quick", {}) or {}
    _check(raw, SCHEMA, "")
    _check(quick_over, SCHEMA, "quick")
    for where, cfg in (("", raw), ("quick.", quick_over)):
        for name, over in ((cfg.get("sensitivity") or {}).get("variants") or {}).items():
            _check(over, SCHEMA["jobs"], f"{where}sensitivity.variants.{name}")
    missing = [k for k in SCHEMA if k not in raw and k != "sensitivity"]
    missing += [f"jobs.{k}" for k in SCHEMA["jobs"] if k not in raw.get("jobs", {})]
    missing += [f"jobs.los.{k}" for k in SCHEMA["jobs"]["los"]
                if k not in raw.get("jobs", {}).get("los", SCHEMA["jobs"]["los"])]
    if missing:
        raise UsageError(f"config {path}: missing {', '.join(missing)}")
    config = _merge(raw, quick_over) if quick else raw
    config = _merge(config, {k: v for k, v in overrides.items() if v is not None})
    _validate(config)
    return config


def _validate(config: dict) -> None:
    """Values the sweeps cannot run with, reported before any work starts."""
    if config["runs"] < 1:
        raise UsageError(f"runs {config['runs']}: must be >= 1")
    if config["workers"] < 0:
        raise UsageError(f"workers {config['workers']}: must be >= 0 (0 = all cores)")
    r, j = config["routing"], config["jobs"]
    if r["endpoints"] < 2:
        raise UsageError(f"routing.endpoints {r['endpoints']}: must be >= 2")
    try:
        for n in r["sizes"]:
            if n * n < r["endpoints"]:
                raise UsageError(f"routing.sizes {n}: fewer satellites than endpoints")
            Constellation(n, n, outage_lat_deg=r["outage_lat_deg"], **config["constellation"])
    except ValueError as e:
        raise UsageError(f"config: {e}") from None
    _validate_jobs(j, "jobs", config["constellation"])
    sens = config.get("sensitivity") or {}
    if sens.get("runs", 1) < 1:
        raise UsageError(f"sensitivity.runs {sens['runs']}: must be >= 1")
    for name, over in (sens.get("variants") or {}).items():
        if name == DEFAULT_VARIANT:
            raise UsageError(f"sensitivity.variants.{name}: the name is taken by the default")
        _validate_jobs(_merge(j, over), f"sensitivity.variants.{name}", config["constellation"])


def _choice(value, known, key: str) -> None:
    if value not in known:
        raise UsageError(f"{key} {value!r}: choose from {', '.join(known)}")


def _validate_jobs(j: dict, where: str, orbit: dict) -> None:
    """A job sweep's options; ``where`` names the section in the message."""
    _choice(j["aoi"], ("geo", "grid"), f"{where}.aoi")
    _choice(j["sizing"], SIZINGS, f"{where}.sizing")
    _choice(j["selection"], SELECTIONS, f"{where}.selection")
    _choice(j["center"], CENTER_PLACEMENTS, f"{where}.center")
    _choice(j["eager_order"], EAGER_ORDERS, f"{where}.eager_order")
    _choice(j["allocation_cost"], COSTS, f"{where}.allocation_cost")
    if not 0 <= j["footprint_diameter_m"] <= 2e7:
        raise UsageError(f"{where}.footprint_diameter_m {j['footprint_diameter_m']}: "
                         f"must be in [0, 2e7] (0: the sub-satellite point must lie in the box)")
    _choice(j["los"]["source"], LOS_SOURCES, f"{where}.los.source")
    if not 0 < j["collector_fraction"] <= 0.5:
        raise UsageError(f"{where}.collector_fraction {j['collector_fraction']}: must be in (0, 0.5]")
    if len(j["grid_aoi"]) != 2:
        raise UsageError(f"{where}.grid_aoi: expected [minsat, maxsat]")
    lo_hi = j["total_satellites"]
    if len(lo_hi) != 2 or not 9 <= lo_hi[0] <= lo_hi[1]:
        raise UsageError(f"{where}.total_satellites {lo_hi}: expected [first, last], 9 <= first <= last")
    try:
        for n in j["planes"]:
            Constellation(*sweeps.job_grid(n, j), **orbit)
        CostModel(**j["cost_model"])
        for f_r in j["reduce_factors"]:
            if not f_r > 0:
                raise UsageError(f"{where}.reduce_factors {f_r}: must be > 0")
        box = GeoBox(**j["geo_box"])
    except (ValueError, PlanError) as e:
        raise UsageError(f"config {where}: {e}") from None
    los = j["los"]
    if los["source"] == "cities":
        region = los["region"]
        if region not in ("world", "aoi") and not all(
                len(c.strip()) == 2 and c.strip().isalpha() for c in region.split(",")):
            raise UsageError(f"{where}.los.region {region!r}: world, aoi or ISO country codes "
                             f"(e.g. US or US,CA)")
        if not sweeps.los_cities(los["min_population"], region, box):
            raise UsageError(f"{where}.los: no city above {los['min_population']} people "
                             f"in region {region!r}")


def variants(config: dict) -> dict[str, dict]:
    """The job sweeps to run: the paper's reading (``jobs``) first, then each
    sensitivity variant (``jobs`` with the variant's overrides)."""
    out = {DEFAULT_VARIANT: config["jobs"]}
    for name, over in ((config.get("sensitivity") or {}).get("variants") or {}).items():
        out[name] = _merge(config["jobs"], over)
    return out


def describe(jobs: dict) -> str:
    """A variant's setup in a few words (for the sensitivity table)."""
    los = jobs["los"]
    los_text = ("LOS uniform" if los["source"] == "uniform" else
                f"LOS over cities > {los['min_population']:,} in {los['region']}"
                f"{', ascending' if los['ascending_only'] else ', either direction'}")
    sizing = {"square": "N x N", "sats_per_plane": f"N x {jobs['sats_per_plane']}",
              "total": f"{jobs['total_satellites'][0]}..{jobs['total_satellites'][1]} sats"}
    extra = "".join([
        f"; allocated on {jobs['allocation_cost']}" if jobs["allocation_cost"] != "physical" else "",
        f"; AOI = footprints of {jobs['footprint_diameter_m'] / 1e3:g} km over the box"
        if jobs["footprint_diameter_m"] > 0 else ""])
    return (f"{sizing[jobs['sizing']]}; {los_text}; center {jobs['center']}; "
            f"eager {jobs['eager_order']}; {jobs['selection']}{extra}")
