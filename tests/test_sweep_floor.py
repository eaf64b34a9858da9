"""The sweep's in-kernel continuation floor against ``continuation_tan`` at a plain 3-D exit angle."""

import math

import numpy as np
import pytest

from sitesel.constants import MOON_RADIUS_M
from sitesel.horizon._common import continuation_tan, exit_lines
from sitesel.horizon.sweep import _floor_tan


def plain_exit_ground_m(x, y, bearing_rad, box):
    """R times the central angle between (x, y) and where the bearing leaves the box (left, bottom,
    right, top): the exit by bisection, the angle between the two points in 3-D (the projection
    inverted from its formula)."""
    dx, dy = math.sin(bearing_rad), math.cos(bearing_rad)
    left, bottom, right, top = box

    def inside(s):
        return left <= x + s * dx <= right and bottom <= y + s * dy <= top

    lo, hi = 0.0, 4.0 * max(right - left, top - bottom)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if inside(mid) else (lo, mid)

    def unit(px, py):
        lat = 2.0 * math.atan(math.hypot(px, py) / (2.0 * MOON_RADIUS_M)) - math.pi / 2.0
        lon = math.atan2(px, py)
        return np.array([math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)])

    a, b = unit(x, y), unit(x + lo * dx, y + lo * dy)
    # atan2 of the cross and dot products: accurate at small angles too
    return MOON_RADIUS_M * math.atan2(np.linalg.norm(np.cross(a, b)), a @ b)


def test_floor_matches_continuation_tan():
    rng = np.random.default_rng(5)
    # boxes from 2 km (exit inside the tangent point) to 1200 km (central angles up to ~1 rad)
    for half_m in (1e3, 5e3, 40e3, 600e3):
        box = (-half_m + 3e3, -half_m - 7e3, half_m + 3e3, half_m - 7e3)
        for _ in range(200):
            x = rng.uniform(box[0], box[2])
            y = rng.uniform(box[1], box[3])
            bearing = rng.choice([0.0, 0.5 * math.pi, math.pi, rng.uniform(0.0, 2.0 * math.pi)])
            ground_m = rng.uniform(-3000.0, 3000.0)
            h_obs = rng.choice([0.0, 2.0, 100.0])
            tan_dip = float(continuation_tan(ground_m, h_obs, 0.0))
            lines = exit_lines(math.sin(bearing), math.cos(bearing), box)
            got = _floor_tan(x, y, lines, ground_m, h_obs, tan_dip)
            want = float(continuation_tan(ground_m, h_obs, plain_exit_ground_m(x, y, bearing, box)))
            # float32: within a millionth of the value (1e-6 deg at a 1 deg floor)
            assert got <= tan_dip + 1e-6 * abs(tan_dip) + 1e-12
            assert abs(got - want) <= 1e-6 * abs(want) + 1e-12


def test_fast_atan_in_degrees_matches_numpy():
    from sitesel.horizon.sweep import _atan_deg

    x = np.concatenate([np.linspace(-50.0, 50.0, 20001), np.tan(np.radians(np.linspace(-89.99, 89.99, 20001))),
                        [0.0, 1.0, -1.0, 1e300, -1e300]])
    got = np.array([_atan_deg(v) for v in x])
    np.testing.assert_allclose(got, np.degrees(np.arctan(x)), rtol=0, atol=3e-6)
    assert _atan_deg(-np.inf) == -90.0 and _atan_deg(np.inf) == 90.0


def test_branch_free_atan2_and_sin_match_numpy():
    from sitesel._fastmath import atan2, sin_small

    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(size=4000) * 10.0 ** rng.uniform(-8, 8, 4000), [0.0, 1.0, -1.0, 0.0, 2.0]])
    x = np.concatenate([rng.normal(size=4000) * 10.0 ** rng.uniform(-8, 8, 4000), [0.0, 0.0, 0.0, -3.0, -2.0]])
    got = np.array([atan2(a, b) for a, b in zip(y, x)])
    np.testing.assert_allclose(got, np.arctan2(y, x), rtol=0, atol=4e-8)
    angles = np.linspace(-np.pi / 2, np.pi / 2, 2001)
    np.testing.assert_allclose([sin_small(a) for a in angles], np.sin(angles), rtol=0, atol=1e-15)


def test_refined_far_field_keeps_its_bilinear_surface():
    """The far field is swept on a finer copy of its grid: the same surface, sampled closer."""
    from sitesel.horizon._common import bilinear
    from sitesel.horizon.sweep import _refined
    from sitesel.terrain.grid import Grid
    from sitesel.terrain.model import Terrain

    rng = np.random.default_rng(2)
    coarse = Terrain(rng.normal(0.0, 300.0, (9, 7)).astype(np.float32), Grid(-1400.0, -59000.0, 400.0, (9, 7)))
    fine = _refined(coarse, 2)
    assert fine.shape == (17, 13) and fine.grid.resolution_m == 200.0
    zc, zf = coarse.height_m.astype(np.float64), fine.height_m.astype(np.float64)
    np.testing.assert_allclose(zf[::2, ::2], zc, rtol=0, atol=1e-3)  # the original pixel centres are kept
    x = rng.uniform(coarse.grid.x0_m + 200.0, coarse.grid.x0_m + 2600.0, 200)
    y = rng.uniform(coarse.grid.y0_m - 3400.0, coarse.grid.y0_m - 200.0, 200)
    rc, cc = coarse.grid.rowcol(x, y)
    rf, cf = fine.grid.rowcol(x, y)
    got = [bilinear(zf, r, c) for r, c in zip(rf, cf)]
    want = [bilinear(zc, r, c) for r, c in zip(rc, cc)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
    assert _refined(coarse, 1) is coarse


@pytest.mark.parametrize("n", [1, 2, 7, 64, 1000, 1024])
def test_spread_stride_visits_every_row_once_and_spreads_runs(n):
    from sitesel.horizon.sweep import _spread_stride

    stride = _spread_stride(n)
    rows = (np.arange(n) * stride) % n
    assert np.array_equal(np.sort(rows), np.arange(n))
    if n >= 64:
        # the first half of the sequence (one of two threads) holds about half of any band of rows
        first = rows[: n // 2]
        assert abs(np.sum(first < n // 16) - n // 32) <= max(2, n // 128)
