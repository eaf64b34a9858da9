"""The built-in synthetic south pole (sitesel.terrain.synthetic)."""

import numpy as np
import pytest

from sitesel.constants import MOON_RADIUS_M
from sitesel.surface import slope_roughness
from sitesel.terrain.grid import latlon_to_xy
from sitesel.terrain.synthetic import (
    WORLD_HALF_WIDTH_M,
    WORLD_PARTS,
    _noise_kernel,
    _noise_octaves,
    _random_craters,
    _stamp_random_craters,
    synthetic_south_pole,
)

SHACKLETON = (-89.67, 129.8)
MALAPERT = (-86.0, 0.0)


@pytest.fixture(scope="module")
def shackleton_area():
    """40 km square around the pole at 200 m: Shackleton and the start of the ridge."""
    return synthetic_south_pole(size=200, resolution_m=200.0, seed=0)


def _pixel(grid, lat, lon):
    x, y = latlon_to_xy(lat, lon)
    row, col = grid.rowcol(x, y)
    return int(np.rint(row)), int(np.rint(col))


def _horizon_deg(terrain, row, col, n_azimuths=36, step_m=100.0, max_m=19_000.0, height_m=2.0):
    """Plain ray-marching horizon (nearest pixel, sphere curvature) from one pixel."""
    grid = terrain.grid
    heights = terrain.height_m.astype(np.float64)
    x0 = grid.x_m()[col]
    y0 = grid.y_m()[row]
    h0 = heights[row, col] + height_m
    horizon = np.full(n_azimuths, -90.0)
    for k in range(n_azimuths):
        bearing = np.radians(k * 360.0 / n_azimuths)
        for d in np.arange(step_m, max_m, step_m):
            r, c = grid.rowcol(x0 + d * np.sin(bearing), y0 + d * np.cos(bearing))
            r, c = int(np.rint(r)), int(np.rint(c))
            if not (0 <= r < grid.shape[0] and 0 <= c < grid.shape[1]):
                break
            drop = d * d / (2.0 * MOON_RADIUS_M)
            horizon[k] = max(horizon[k], np.degrees(np.arctan2(heights[r, c] - h0 - drop, d)))
    return horizon


def test_deterministic_and_seeded():
    a = synthetic_south_pole(size=96, resolution_m=170.0, seed=4)
    b = synthetic_south_pole(size=96, resolution_m=170.0, seed=4)
    c = synthetic_south_pole(size=96, resolution_m=170.0, seed=5)
    assert a.height_m.dtype == np.float32 and a.height_m.shape == (96, 96)
    assert a.height_m.tobytes() == b.height_m.tobytes()
    assert np.all(np.isfinite(a.height_m))
    assert np.sqrt(np.mean((a.height_m - c.height_m) ** 2)) > 10.0
    assert a.provenance == {"generator": "sitesel.synthetic_south_pole", "seed": 4, "size": 96, "resolution_m": 170.0}
    assert a.grid.shape == (96, 96) and a.resolution_m == 170.0
    # Centred on the pole.
    left, bottom, right, top = a.grid.bounds_m
    assert left == -right and bottom == -top


@pytest.mark.parametrize("size, resolution_m", [(96, 1000.0), (16, 50.0)])
def test_reports_each_part_of_the_world_once(size, resolution_m):
    # (16 px at 50 m lie outside the reach of Faustini and Haworth: those parts are still reported)
    calls = []
    reported = synthetic_south_pole(size=size, resolution_m=resolution_m, seed=1,
                                    progress=lambda done, total: calls.append((done, total)))
    assert calls == [(done, WORLD_PARTS) for done in range(1, WORLD_PARTS + 1)]
    plain = synthetic_south_pole(size=size, resolution_m=resolution_m, seed=1)
    assert reported.height_m.tobytes() == plain.height_m.tobytes()


def test_bigger_grid_is_more_of_the_same_world():
    small = synthetic_south_pole(size=60, resolution_m=1000.0, seed=2)
    big = synthetic_south_pole(size=180, resolution_m=1000.0, seed=2)
    # Both grids are centred on the pole, so their pixel centres coincide.
    assert small.height_m.tobytes() == big.height_m[60:120, 60:120].tobytes()


def test_shackleton(shackleton_area):
    terrain = shackleton_area
    grid = terrain.grid
    x, y = grid.xy()
    cx, cy = latlon_to_xy(*SHACKLETON)
    r = np.hypot(x - cx, y - cy)
    heights = terrain.height_m.astype(np.float64)
    inside = r < 10_500.0
    lowest = np.argmin(np.where(inside, heights, np.inf))
    assert r.ravel()[lowest] < 2_000.0
    floor = heights.ravel()[lowest]
    rim = np.median(heights[(r > 10_000.0) & (r < 11_000.0)])
    assert 3_000.0 < rim - floor < 5_000.0
    # Flat-ish floor: within 2 km of the centre the heights span < 250 m.
    assert np.ptp(heights[r < 2_000.0]) < 250.0
    # Steep inner walls: along the mid-wall ring the slope is ~30 deg or more.
    slope, _ = slope_roughness(terrain, baseline_m=20.0)
    mid_wall = (r > 6_000.0) & (r < 8_000.0)
    assert np.nanmedian(slope[mid_wall]) > 28.0
    assert np.nanmax(slope[mid_wall]) > 35.0


def test_slopes_span_flat_to_steep(shackleton_area):
    slope, rough = slope_roughness(shackleton_area, baseline_m=20.0)
    assert np.nanmin(slope) < 0.5
    assert np.nanmax(slope) > 30.0
    assert 0.5 < np.nanmedian(slope) < 15.0
    assert np.nanmax(rough) > 1.0


def test_ridge_is_lit_and_shackleton_floor_is_shadowed(shackleton_area):
    terrain = shackleton_area
    # The Sun never rises more than ~1.6 deg at the pole.
    floor = _pixel(terrain.grid, *SHACKLETON)
    assert _horizon_deg(terrain, *floor).min() > 10.0
    # The highest point in this area is on the ridge, and it has an open sky.
    crest = np.unravel_index(np.argmax(terrain.height_m), terrain.shape)
    x, y = terrain.grid.x_m()[crest[1]], terrain.grid.y_m()[crest[0]]
    via_x, via_y = latlon_to_xy(-89.44, 222.81)
    assert np.hypot(x - via_x, y - via_y) < 10_000.0
    assert _horizon_deg(terrain, *crest).max() < 0.0


def test_malapert_massif_beyond_100_km():
    terrain = synthetic_south_pole(size=300, resolution_m=1000.0, seed=0)
    row, col = _pixel(terrain.grid, *MALAPERT)
    peak = float(terrain.height_m[row, col])
    assert peak > 4_000.0
    x, y = terrain.grid.xy()
    mx, my = latlon_to_xy(*MALAPERT)
    assert np.hypot(mx, my) > 100_000.0
    r = np.hypot(x - mx, y - my)
    surroundings = np.median(terrain.height_m[(r > 40_000.0) & (r < 60_000.0)])
    assert peak - surroundings > 4_000.0
    # Only a grid that reaches it shows it.
    near_pole = synthetic_south_pole(size=100, resolution_m=1000.0, seed=0)
    assert near_pole.height_m.max() < 3_000.0


def test_grids_of_different_resolution_agree():
    fine = synthetic_south_pole(size=200, resolution_m=200.0, seed=3).height_m.astype(np.float64)
    coarse = synthetic_south_pole(size=100, resolution_m=400.0, seed=3).height_m.astype(np.float64)
    # A 400 m pixel centre is the centre of a 2 x 2 block of 200 m pixels.
    block_mean = fine.reshape(100, 2, 100, 2).mean(axis=(1, 3))
    rms = np.sqrt(np.mean((block_mean - coarse) ** 2))
    # Measured ~7 m against ~900 m of relief: the two differ only by features
    # the 400 m grid cannot resolve and by point sampling versus block means.
    assert rms < 20.0
    assert rms < 0.02 * coarse.std()


def test_crater_population_follows_d_minus_2():
    craters = _random_craters(np.random.default_rng(0))
    diameter_km = 2.0 * craters["radius_m"] / 1e3
    assert np.all(np.abs(craters["cx"]) <= WORLD_HALF_WIDTH_M)
    assert np.all(np.abs(craters["cy"]) <= WORLD_HALF_WIDTH_M)
    sizes = np.array([0.3, 0.6, 1.2, 2.4])
    cumulative = np.array([(diameter_km > d).sum() for d in sizes])
    exponent = np.polyfit(np.log(sizes), np.log(cumulative), 1)[0]
    assert -2.1 < exponent < -1.9
    depth_ratio = craters["depth_m"] / (2.0 * craters["radius_m"])
    assert depth_ratio.min() >= 0.04 and depth_ratio.max() <= 0.2
    # Mostly degraded, some fresh.
    assert np.median(depth_ratio) < 0.1 and np.quantile(depth_ratio, 0.95) > 0.15


def _reference_hash_gradient(iu, iv, key):
    mask = (1 << 64) - 1
    h = ((iu & mask) * 0x9E3779B97F4A7C15) & mask
    h ^= ((iv & mask) * 0xC2B2AE3D27D4EB4F) & mask
    h ^= key
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & mask
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & mask
    h ^= h >> 31
    return (h & 0xFFFF) / 32767.5 - 1.0, ((h >> 16) & 0xFFFF) / 32767.5 - 1.0


def _reference_noise(px, py, octave):
    """Textbook 2-D Perlin gradient noise at one point, in plain Python."""
    w = octave["wavelength_m"]
    u = (octave["cos"] * px + octave["sin"] * py) / w + octave["offset"][0] / w
    v = (-octave["sin"] * px + octave["cos"] * py) / w + octave["offset"][1] / w
    iu, iv = int(np.floor(u)), int(np.floor(v))
    fu, fv = u - iu, v - iv

    def corner(du, dv):
        gx, gy = _reference_hash_gradient(iu + du, iv + dv, octave["key"])
        return gx * (fu - du) + gy * (fv - dv)

    def fade(t):
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    lower = corner(0, 0) + fade(fu) * (corner(1, 0) - corner(0, 0))
    upper = corner(0, 1) + fade(fu) * (corner(1, 1) - corner(0, 1))
    return octave["amplitude_m"] * (lower + fade(fv) * (upper - lower))


@pytest.mark.parametrize("dense", [False, True])
def test_noise_kernel_matches_reference(dense):
    octaves = _noise_octaves(np.random.default_rng(9))[3:9]
    rng = np.random.default_rng(1)
    if dense:
        # Neighbouring pixels share lattice cells (the kernel reuses their gradients).
        x = -31_000.0 + 97.0 * np.arange(120)
        y = 12_000.0 - 97.0 * np.arange(3)
    else:
        x = rng.uniform(-150_000.0, 150_000.0, 7)
        y = rng.uniform(-150_000.0, 150_000.0, 5)
    out = np.zeros((y.size, x.size))
    _noise_kernel(
        out,
        x,
        y,
        np.array([o["cos"] for o in octaves]),
        np.array([o["sin"] for o in octaves]),
        np.array([o["offset"][0] for o in octaves]),
        np.array([o["offset"][1] for o in octaves]),
        np.array([o["wavelength_m"] for o in octaves]),
        np.array([o["amplitude_m"] for o in octaves]),
        np.array([o["key"] for o in octaves], dtype=np.uint64),
    )
    expected = np.array([[sum(_reference_noise(px, py, o) for o in octaves) for px in x] for py in y])
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-9)
    assert np.std(expected) > 1.0


def test_crater_stamping_matches_reference():
    res = 50.0
    x = np.arange(-40, 40) * res + 25.0
    y = -(np.arange(-30, 30) * res + 25.0)
    craters = {
        "cx": np.array([0.0, 700.0, -1500.0, 300.0, 5_000.0]),
        "cy": np.array([100.0, -400.0, 1300.0, -900.0, 0.0]),
        "radius_m": np.array([400.0, 250.0, 300.0, 40.0, 500.0]),
        "depth_m": np.array([150.0, 90.0, 60.0, 12.0, 100.0]),
        "rim_m": np.array([30.0, 15.0, 10.0, 2.0, 20.0]),
    }
    out = np.zeros((y.size, x.size))
    _stamp_random_craters(out, x, y, res, craters)
    expected = np.zeros_like(out)
    for c in range(craters["cx"].size):
        radius = craters["radius_m"][c]
        depth = craters["depth_m"][c]
        rim = craters["rim_m"][c]
        # Fade from nothing at D = res to full at D = 3 res.
        weight = min(max((2.0 * radius / res - 1.0) / 2.0, 0.0), 1.0)
        for i, py in enumerate(y):
            for j, px in enumerate(x):
                q = np.hypot(px - craters["cx"][c], py - craters["cy"][c]) / radius
                if q < 1.0:  # parabolic bowl from the floor to the rim crest
                    h = rim - depth * (1.0 - q**2)
                elif q < 3.0:  # ejecta ~ (R/r)^3, zero at 3 R
                    h = rim * (q**-3 - 1.0 / 27.0) / (1.0 - 1.0 / 27.0)
                else:
                    h = 0.0
                expected[i, j] += weight * h
    np.testing.assert_allclose(out, expected, atol=1e-9)
    assert expected.min() < -100.0
