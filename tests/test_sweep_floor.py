"""The sweep's in-kernel continuation floor against ``continuation_tan`` with a plain exit distance."""

import math

import numpy as np
import pytest

from sitesel.constants import MOON_RADIUS_M
from sitesel.horizon._common import continuation_tan
from sitesel.horizon.sweep import _floor_tan


def plain_exit_ground_m(x, y, bearing_rad, box):
    """Ground distance along the bearing to the edge of box (left, bottom, right, top), by bisection."""
    dx, dy = math.sin(bearing_rad), math.cos(bearing_rad)
    left, bottom, right, top = box

    def inside(s):
        return left <= x + s * dx <= right and bottom <= y + s * dy <= top

    lo, hi = 0.0, 4.0 * max(right - left, top - bottom)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if inside(mid) else (lo, mid)
    k = 1.0 + (x * x + y * y) / (4.0 * MOON_RADIUS_M**2)
    return lo / k


def test_floor_matches_continuation_tan():
    rng = np.random.default_rng(5)
    # boxes from 2 km (exit inside the tangent point) to 1200 km (series replaced by libm)
    for half_m in (1e3, 5e3, 40e3, 600e3):
        box = (-half_m + 3e3, -half_m - 7e3, half_m + 3e3, half_m - 7e3)
        for _ in range(200):
            x = rng.uniform(box[0], box[2])
            y = rng.uniform(box[1], box[3])
            bearing = rng.choice([0.0, 0.5 * math.pi, math.pi, rng.uniform(0.0, 2.0 * math.pi)])
            ground_m = rng.uniform(-3000.0, 3000.0)
            h_obs = rng.choice([0.0, 2.0, 100.0])
            tan_dip = float(continuation_tan(ground_m, h_obs, 0.0))
            got = _floor_tan(x, y, math.sin(bearing), math.cos(bearing), np.array(box), ground_m, h_obs, tan_dip)
            want = float(continuation_tan(ground_m, h_obs, plain_exit_ground_m(x, y, bearing, box)))
            assert got <= tan_dip + 1e-15
            assert abs(math.degrees(math.atan(got)) - math.degrees(math.atan(want))) < 1e-7


def test_fast_atan_in_degrees_matches_numpy():
    from sitesel.horizon.sweep import _atan_deg

    x = np.concatenate([np.linspace(-50.0, 50.0, 20001), np.tan(np.radians(np.linspace(-89.99, 89.99, 20001))),
                        [0.0, 1.0, -1.0, 1e300, -1e300]])
    got = np.array([_atan_deg(v) for v in x])
    np.testing.assert_allclose(got, np.degrees(np.arctan(x)), rtol=0, atol=3e-6)
    assert _atan_deg(-np.inf) == -90.0 and _atan_deg(np.inf) == 90.0


def test_series_sin_cos_matches_numpy():
    from sitesel._fastmath import sin_cos

    for x in np.concatenate([np.linspace(-0.7, 0.7, 4001), [1.0, -2.5, 3.0]]):
        s, c = sin_cos(x)
        assert s == pytest.approx(math.sin(x), rel=1e-15, abs=1e-17)
        assert c == pytest.approx(math.cos(x), rel=1e-15, abs=1e-17)


def test_branch_free_atan2_and_sin_match_numpy():
    from sitesel._fastmath import atan2, sin_small

    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(size=4000) * 10.0 ** rng.uniform(-8, 8, 4000), [0.0, 1.0, -1.0, 0.0, 2.0]])
    x = np.concatenate([rng.normal(size=4000) * 10.0 ** rng.uniform(-8, 8, 4000), [0.0, 0.0, 0.0, -3.0, -2.0]])
    got = np.array([atan2(a, b) for a, b in zip(y, x)])
    np.testing.assert_allclose(got, np.arctan2(y, x), rtol=0, atol=4e-8)
    angles = np.linspace(-np.pi / 2, np.pi / 2, 2001)
    np.testing.assert_allclose([sin_small(a) for a in angles], np.sin(angles), rtol=0, atol=1e-15)
