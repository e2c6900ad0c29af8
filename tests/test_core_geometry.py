"""Constellation geometry and link physics (Friis/Shannon, the paper's Table II)."""

import math

import pytest

from topo.constellation import Constellation
from topo.link_model import LinkModel


def test_node_ids_round_trip_sat_first():
    c = Constellation(planes=12, sats_per_plane=8)
    assert c.node_id((1, 1)) == 1
    assert c.node_id((8, 1)) == 8
    assert c.node_id((1, 2)) == 9
    for n in range(1, c.size + 1):
        assert c.node_id(c.sat_of(n)) == n


@pytest.mark.parametrize("grid", [(3, 3), (5, 5), (12, 8)])
def test_torus_has_four_distinct_neighbours_and_2nm_links(grid):
    c = Constellation(*grid)
    for sat in c.satellites():
        nbs = c.neighbours(sat)
        assert len(set(nbs)) == 4 and sat not in nbs
        for n in nbs:
            assert sat in c.neighbours(n)
    links = c.isls()
    assert len(links) == 2 * c.size
    assert len({frozenset((a, b)) for a, b, _ in links}) == 2 * c.size


def test_seamless_walker_star_drops_the_seam_links():
    c = Constellation(5, 5, seam=False)
    assert len(c.isls()) == 2 * c.size - c.sats_per_plane
    assert (3, 1) not in c.neighbours((3, 5))


def test_period_at_530_km_is_about_5705_s():
    assert Constellation().period_s == pytest.approx(5705, abs=1)


def test_link_lengths_follow_the_spec_formulas():
    c = Constellation(planes=20, sats_per_plane=20)
    r = 6_371_000 + 530_000
    assert c.in_plane_length_m == pytest.approx(r * math.sqrt(2 * (1 - math.cos(2 * math.pi / 20))))
    chord = r * math.sqrt(2 * (1 - math.cos(2 * math.pi / 20)))
    # theta = 0 (sat M): the full chord; theta = 90 deg (sat M/4): chord * cos(i), the cross-over.
    assert c.cross_plane_length_m(20) == pytest.approx(chord)
    assert c.cross_plane_length_m(5) == pytest.approx(chord * math.cos(math.radians(87)))
    # Half a period later the geometry has moved by 180 degrees: the same length again.
    assert c.cross_plane_length_m(5, c.period_s / 2) == pytest.approx(c.cross_plane_length_m(5))
    assert c.cross_plane_length_m(5, c.period_s / 4) == pytest.approx(chord, rel=1e-9)


def test_latitude_ascending_and_longitude():
    c = Constellation(planes=4, sats_per_plane=8, inclination_deg=87)
    # sat 2 of 8: theta = 90 deg, the northernmost point, latitude = inclination.
    assert c.latitude_deg((2, 1)) == pytest.approx(87)
    assert c.latitude_deg((6, 1)) == pytest.approx(-87)
    assert c.latitude_deg((8, 1)) == pytest.approx(0, abs=1e-9)
    assert c.ascending((8, 1)) and c.ascending((1, 1))
    assert not c.ascending((4, 1))
    # On the equator at t=0 the longitude is the plane's right ascension.
    assert c.longitude_deg((8, 1)) == pytest.approx(0, abs=1e-9)
    assert c.longitude_deg((8, 2)) == pytest.approx(90, abs=1e-9)
    # A polar orbit does not move in longitude by itself: only the Earth turns under it.
    polar = Constellation(planes=4, sats_per_plane=8, inclination_deg=90)
    assert polar.longitude_deg((8, 2), 1000.0) == pytest.approx(90 - math.degrees(7.2921159e-5 * 1000))


def test_latitude_rises_while_ascending():
    c = Constellation(planes=6, sats_per_plane=25)  # odd M: nobody sits exactly at a pole turn
    for sat in c.satellites():
        later = c.latitude_deg(sat, 1.0)
        assert (later > c.latitude_deg(sat, 0.0)) == c.ascending(sat)


def test_crossover_outages_move_with_time():
    c = Constellation(planes=10, sats_per_plane=20, outage_lat_deg=70, lossy_band_deg=20)
    down0 = c.down_links(0.0)
    assert down0, "links near the poles must be down"
    for link in down0:
        a, b = tuple(link)
        assert a[1] != b[1], "only cross-plane links go down"
        assert max(abs(c.latitude_deg(a)), abs(c.latitude_deg(b))) > 70
    assert c.down_links(c.period_s / 8) != down0
    states = {c.cross_plane_state(a, b) for a, b, k in c.isls() if k == "cross"}
    assert states == {"up", "lossy", "down"}
    assert Constellation(planes=10, sats_per_plane=20).down_links() == set()


@pytest.mark.parametrize("kwargs", [dict(planes=2), dict(sats_per_plane=1), dict(altitude_m=-1),
                                    dict(inclination_deg=200), dict(outage_lat_deg=95)])
def test_impossible_constellations_are_refused(kwargs):
    with pytest.raises(ValueError):
        Constellation(**kwargs)


def test_snr_and_rate_at_1000_km():
    m = LinkModel()
    assert m.snr(1e6) == pytest.approx(0.0058, rel=0.01)
    assert m.shannon_rate_bps(1e6) == pytest.approx(83e6, rel=0.01)
    # Rate falls roughly as 1/d^2 at low SNR.
    assert m.shannon_rate_bps(2e6) == pytest.approx(m.shannon_rate_bps(1e6) / 4, rel=0.01)
    assert m.delay_s(299_792_458) == pytest.approx(1.0)


def test_link_model_parameters_are_used():
    base = LinkModel()
    assert LinkModel(tx_power_w=10).snr(1e6) == pytest.approx(2 * base.snr(1e6))
    assert LinkModel(tx_gain_dbi=65.5).snr(1e6) == pytest.approx(base.snr(1e6) * 10 ** 0.3)
    assert LinkModel(noise_temp_k=600).snr(1e6) == pytest.approx(base.snr(1e6) / 2)
    assert LinkModel(wavelength_m=3100e-9).snr(1e6) == pytest.approx(base.snr(1e6) * 4)
    with pytest.raises(ValueError):
        LinkModel(bandwidth_hz=0)
