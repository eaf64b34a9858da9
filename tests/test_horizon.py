"""Horizon kernels against analytic cases, a plain 3-D brute force and each other."""

import numpy as np
import pytest
from scipy import ndimage

from sitesel.constants import MOON_RADIUS_M
from sitesel.errors import SiteselError
from sitesel.horizon import sweep as sweep_module
from sitesel.horizon import (
    bearings_deg,
    coarsen,
    horizon_map,
    pack_centideg,
    unpack_centideg,
)
from sitesel.terrain.grid import Grid, latlon_to_xy, local_frame, scale_factor, xy_to_latlon, xy_to_xyz
from sitesel.terrain.model import Terrain
from sitesel.terrain.synthetic import fractal_heights, synthetic_south_pole

R = MOON_RADIUS_M
RES = 20.0
METHODS = ["raymarch", "sweep"]


def dip_deg(h_obs, ground_m=0.0):
    return -np.degrees(np.arccos((R + ground_m) / (R + ground_m + h_obs)))


def flat(n, centre_y_m=-60e3):
    """Bare-sphere terrain away from the pole, so scale factor and longitude are not trivial."""
    grid = Grid.centred((n, n), RES, 0.0, centre_y_m)
    return Terrain(np.zeros((n, n), np.float32), grid)


def fractal(n, seed, rms_slope_deg=15.0, beta=2.2):
    """Seeded spectral fractal heights (m) with a given RMS slope at RES metres per pixel."""
    return fractal_heights(n, RES, seed, rms_slope_deg, beta)


def exact_elevation_deg(grid, row, col, h_obs, target_xy, target_h):
    """Elevation of a target map point seen from pixel (row, col), exact 3-D geometry."""
    x, y = grid.xy()
    xo, yo = x[row, col], y[row, col]
    lat, lon = xy_to_latlon(xo, yo)
    _, _, up = local_frame(lat, lon)
    d = xy_to_xyz(*target_xy, target_h) - xy_to_xyz(xo, yo, h_obs)
    return np.degrees(np.arcsin(d @ up / np.linalg.norm(d)))


def brute_force(terrain, row, col, h_obs, k):
    """Plain reference: every DEM pixel in 3-D, maximum elevation per azimuth sector."""
    grid = terrain.grid
    x, y = grid.xy()
    z = terrain.height_m.astype(np.float64)
    xo, yo, zo = x[row, col], y[row, col], z[row, col]
    lat, lon = xy_to_latlon(xo, yo)
    east, north, up = local_frame(lat, lon)
    obs = xy_to_xyz(xo, yo, zo + h_obs)
    best = np.full(k, dip_deg(h_obs, zo))
    width = 360.0 / k
    for r in range(z.shape[0]):
        for c in range(z.shape[1]):
            if (r, c) == (row, col) or not np.isfinite(z[r, c]):
                continue
            d = xy_to_xyz(x[r, c], y[r, c], z[r, c]) - obs
            elev = np.degrees(np.arcsin(d @ up / np.linalg.norm(d)))
            bearing = (np.degrees(np.arctan2(d @ east, d @ north)) + lon) % 360.0
            sector = int(np.round(bearing / width)) % k
            best[sector] = max(best[sector], elev)
    return best


def test_bearings_deg():
    assert np.allclose(bearings_deg(4), [0, 90, 180, 270])
    with pytest.raises(SiteselError):
        bearings_deg(0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("h_obs, expected", [(0.0, 0.0), (2.0, -0.087), (10.0, -0.194)])
def test_bare_sphere_dip(method, h_obs, expected):
    terrain = flat(48)
    hz = horizon_map(terrain, 24, h_obs, method=method)
    assert hz.dtype == np.float32 and hz.shape == (48, 48, 24)
    # The horizon is the highest sampled point: at h = 0 that is the nearest sample, which the
    # curvature puts d / (2 R) rad below the horizontal (d: half a pixel for the ray-march, up to
    # two pixels on the sweep's diagonal lines); with h > 0 it is the tangent point (the dip),
    # which sampling can only miss from below.
    below_dip = np.degrees(2.0 * terrain.resolution_m / (2 * MOON_RADIUS_M))
    assert np.all(hz <= dip_deg(h_obs) + 1e-5)
    assert np.all(hz >= dip_deg(h_obs) - below_dip)
    assert np.allclose(hz, expected, atol=0.01)


@pytest.fixture(scope="module")
def crater():
    """Paraboloid bowl of radius 400 m and depth 150 m on a bare sphere."""
    terrain = flat(81)
    x, y = terrain.grid.xy()
    xc, yc = x[40, 40], y[40, 40]
    rho = np.hypot(x - xc, y - yc)
    z = np.where(rho < 400.0, 150.0 * ((rho / 400.0) ** 2 - 1.0), 0.0)
    return Terrain(z, terrain.grid), (xc, yc)


@pytest.mark.parametrize("method", METHODS)
def test_crater_rim_seen_from_centre(crater, method):
    terrain, (xc, yc) = crater
    k = 16
    hz = horizon_map(terrain, k, 2.0, rows=slice(40, 41), cols=slice(40, 41), method=method)[0, 0]
    b = np.radians(bearings_deg(k))
    for i in range(k):
        rim = (xc + 400.0 * np.sin(b[i]), yc + 400.0 * np.cos(b[i]))
        expected = exact_elevation_deg(terrain.grid, 40, 40, -150.0 + 2.0, rim, 0.0)
        # axis rays sample the rim at a pixel centre; others interpolate across its kink
        assert hz[i] == pytest.approx(expected, abs=0.05 if i % 4 == 0 else 0.5)
    ref = brute_force(terrain, 40, 40, 2.0, k)
    assert np.allclose(hz[::4], ref[::4], atol=0.05)
    assert np.allclose(hz, ref, atol=0.5)


@pytest.fixture(scope="module")
def cone():
    """A 300 m cone of base radius 200 m, 30 px north of the observer at (40, 20)."""
    terrain = flat(64)
    x, y = terrain.grid.xy()
    peak = (x[10, 20], y[10, 20])
    rho = np.hypot(x - peak[0], y - peak[1])
    z = np.maximum(0.0, 300.0 * (1.0 - rho / 200.0))
    return Terrain(z, terrain.grid), peak


@pytest.mark.parametrize("method", METHODS)
def test_cone_peak(cone, method):
    terrain, peak = cone
    k = 72
    hz = horizon_map(terrain, k, 2.0, rows=slice(40, 41), cols=slice(20, 21), method=method)[0, 0]
    expected = exact_elevation_deg(terrain.grid, 40, 20, 2.0, peak, 300.0)
    assert hz[0] == pytest.approx(expected, abs=0.02)
    # the cone subtends about +/-11 deg; elsewhere the bare-sphere dip
    far = np.abs(((bearings_deg(k) + 180.0) % 360.0) - 180.0) > 20.0
    assert np.allclose(hz[far], dip_deg(2.0), atol=1e-3)
    ref = brute_force(terrain, 40, 20, 2.0, k)
    assert hz[0] == pytest.approx(ref[0], abs=0.02)
    assert np.allclose(hz[far], ref[far], atol=1e-3)


def accuracy(a, b):
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return np.sqrt(np.mean(d**2)), np.percentile(d, 99), d.max()


@pytest.fixture(scope="module")
def rough():
    n = 72
    grid = Grid.centred((n, n), RES, 5e3, -80e3)
    return Terrain(fractal(n, seed=7, rms_slope_deg=12.0), grid)


@pytest.mark.parametrize("h_obs", [0.0, 2.0, 10.0])
def test_sweep_matches_reference_on_rough_terrain(rough, h_obs):
    win = (slice(8, 64), slice(8, 64))  # rays from the DEM edge leave it at once: ill-defined
    ref = horizon_map(rough, 48, h_obs, method="raymarch", rows=win[0], cols=win[1], max_distance_m=1e7)
    fast = horizon_map(rough, 48, h_obs, method="sweep", rows=win[0], cols=win[1])
    rms, p99, _ = accuracy(fast, ref)
    assert rms <= 0.05 and p99 <= 0.2


@pytest.mark.parametrize("bearing", [45.0, 135.0, 225.0, 315.0])
def test_diagonal_45_degree_slope_not_overestimated(bearing):
    """A plane rising at 45 deg toward `bearing`: the horizon up-slope is the slope itself."""
    n = 48
    grid = Grid.centred((n, n), RES, 0.0, 0.0)
    x, y = grid.xy()
    b = np.radians(bearing)
    z = x * np.sin(b) + y * np.cos(b)  # tan(45 deg) = 1 along the bearing
    terrain = Terrain(z, grid)
    k = 8
    i = int(bearing // 45)
    for method in METHODS:
        hz = horizon_map(terrain, k, 0.0, rows=slice(20, 28), cols=slice(20, 28), method=method)
        # on the sphere the plane's farthest points bend down: the nearest ones set the horizon
        # the map is stretched by the scale factor k > 1, so the true slope is a hair above 45
        assert np.all(hz[..., i] <= 45.0 + 0.005)
        assert np.all(hz[..., i] >= 45.0 - 0.01)


#: Map y (m) of 80.5 deg S on the lon 0 meridian (stereographic radius 2 R tan(colatitude / 2)):
#: there the scale factor is 1.0069, far from the pole's 1.
Y_80_5S_M = -2.0 * R * np.tan(np.radians(9.5) / 2.0)


@pytest.mark.parametrize("method, near_ray_px", [("raymarch", None), ("sweep", None), ("sweep", 2.0)])
def test_an_off_pole_plane_rises_at_its_true_slope_in_every_up_slope_direction(method, near_ray_px, monkeypatch):
    """A map plane rising at 20 deg toward grid bearing 37, at 80.5 deg S. The map stretches ground
    distances by the scale factor k, so the ground rises at atan(k tan 20 cos(b - 37)) along bearing b;
    up-slope the nearest terrain sets the horizon (the farther bends down with the sphere, by
    d / 2R: 3e-4 deg at one pixel). Without the scale factor it would be up to 0.12 deg lower.
    With the sweep's exact near ray cut to 2 px its lines set the horizon: they are exact on
    planes too (moving the observer across each line, as they once did, lifted it by up to 0.9 deg)."""
    if near_ray_px is not None:
        monkeypatch.setattr(sweep_module, "NEAR_RAY_PX", near_ray_px)
    n, res = 64, 20.0
    grid = Grid.centred((n, n), res, 0.0, Y_80_5S_M)
    x, y = grid.xy()
    slope, facing = np.tan(np.radians(20.0)), np.radians(37.0)
    z = slope * ((x - x.mean()) * np.sin(facing) + (y - y.mean()) * np.cos(facing))
    k_az = 72
    row = col = n // 2
    hz = horizon_map(Terrain(z, grid), k_az, 0.0, rows=slice(row, row + 1), cols=slice(col, col + 1),
                     method=method, max_distance_m=1e7)[0, 0]
    cos_off = np.cos(np.radians(bearings_deg(k_az)) - facing)
    up = cos_off > 0.2
    k = scale_factor(xy_to_latlon(x[row, col], y[row, col])[0])
    assert k == pytest.approx(1.0069, abs=1e-4)
    expected = np.degrees(np.arctan(k * slope * cos_off[up]))
    assert np.abs(hz[up] - expected).max() < 2e-3


@pytest.mark.parametrize("method", METHODS)
def test_an_off_pole_peak_30_km_away_sits_lower_by_the_curvature(method):
    """A 3 km cone 60 px (30 km) due grid north of the observer on a 500 m grid at 80.5 deg S: its
    peak's elevation in exact 3-D geometry, which the curvature of the Moon lowers by 0.5 deg."""
    n, res = 128, 500.0
    grid = Grid.centred((n, n), res, 0.0, Y_80_5S_M)
    x, y = grid.xy()
    peak = (x[40, 64], y[40, 64])
    z = np.maximum(0.0, 3000.0 * (1.0 - np.hypot(x - peak[0], y - peak[1]) / 1500.0))
    hz = horizon_map(Terrain(z, grid), 72, 2.0, rows=slice(100, 101), cols=slice(64, 65), method=method,
                     max_distance_m=1e7)[0, 0]
    expected = exact_elevation_deg(grid, 100, 64, 2.0, peak, 3000.0)
    flat_moon = np.degrees(np.arctan2(3000.0 - 2.0, 60 * res / scale_factor(xy_to_latlon(*peak)[0])))
    assert flat_moon - expected > 0.45
    assert hz[0] == pytest.approx(expected, abs=5e-3)


def test_tiles_identical_to_whole(rough):
    whole = horizon_map(rough, 32, 2.0)
    tiles = np.empty_like(whole)
    for rs in (slice(0, 40), slice(40, 72)):
        for cs in (slice(0, 31), slice(31, 72)):
            tiles[rs, cs] = horizon_map(rough, 32, 2.0, rows=rs, cols=cs)
    assert np.array_equal(whole, tiles)


@pytest.mark.parametrize("line_block", [2, 5, 16, sweep_module._LINE_BLOCK])
def test_any_line_block_gives_the_same_horizons(rough, monkeypatch, line_block):
    """Small windows sweep their lines in smaller blocks, so that every thread gets some: what an
    observer gets must not depend on the block size, with or without a far field."""
    whole = horizon_map(rough, 32, 2.0)
    fine, coarse = rough.window(slice(12, 60), slice(10, 58)), coarsen(rough, 3)
    whole_far = horizon_map(fine, 16, 2.0, far_field=coarse)
    monkeypatch.setattr(sweep_module, "_line_block", lambda n_gaps, n_threads: line_block)
    assert np.array_equal(horizon_map(rough, 32, 2.0), whole)
    assert np.array_equal(horizon_map(rough, 32, 2.0, rows=slice(30, 41), cols=slice(20, 31)), whole[30:41, 20:31])
    assert np.array_equal(horizon_map(fine, 16, 2.0, far_field=coarse), whole_far)


def test_line_blocks_shrink_only_for_windows_too_small_to_share():
    # full blocks wherever each thread gets two of them; never below 2 gaps
    full = sweep_module._LINE_BLOCK
    assert [sweep_module._line_block(n, 2) for n in (3, 13, 24, 63, 4 * full, 2000)] == [2, 4, 6, 16, full, full]
    assert sweep_module._line_block(13, 1) == 7 and sweep_module._line_block(1000, 8) == full


def line_heights_reference(at, p, i0, g, t, t_first):
    """Each line i0 + j read on its own, as the kernel once did: linear between the rows it falls between."""
    n_p, n_q = at.shape
    out = np.full(len(t_first), np.nan)
    for j in range(len(t_first)):
        q = i0 + j + g * p
        if 0 <= p < n_p and -1e-9 < q < n_q - 1 + 1e-9 and t <= t_first[j]:
            q = min(max(q, 0.0), n_q - 1.0)
            q0 = int(q)
            f = q - q0
            out[j] = float(at[p, q0]) if f == 0.0 else (1.0 - f) * float(at[p, q0]) + f * float(at[p, q0 + 1])
    return out


def test_line_heights_match_each_line_read_on_its_own():
    """A block's lines are read together, vectorised, where they all cross the column inside the grid
    one row gap apart, and one by one elsewhere (the edges; round-off that moves a line to another gap)."""
    rng = np.random.default_rng(5)
    at = rng.normal(0.0, 300.0, (6, 40)).astype(np.float32)  # (p, q)
    at[2, 11] = at[1, 1] = np.nan
    t_first = np.array([9, 9, 3, 9, 9, 9, 9])  # the third line starts later
    cases = [(p, i0, g, t) for p in (-1, 0, 2, 5, 6) for i0 in (-9, -3, 0, 4, 30, 34, 40)
             for g in (0.0, 0.37, -0.37, 1.0, -1.0, 6e-17) for t in (2, 5)]
    # 1 + (1 - 2^-53) rounds to 2: the second line falls one gap beyond the first's next one, and reads
    # the NaN at q = 1 unless it is read on its own
    cases.append((1, 0, 1.0 - 2.0 ** -53, 0))
    for p, i0, g, t in cases:
        out = np.empty(len(t_first))
        sweep_module._line_heights(at, p, i0, g, t, t_first, out)
        np.testing.assert_allclose(out, line_heights_reference(at, p, i0, g, t, t_first), rtol=1e-12, atol=1e-9,
                                   err_msg=f"p={p} i0={i0} g={g} t={t}")
    out = np.empty(len(t_first))
    sweep_module._line_heights(at, 1, 0, 1.0 - 2.0 ** -53, 0, t_first, out)
    assert np.isfinite(out[1]) and out[1] == at[1, 2]


def test_tiles_identical_to_whole_with_far_field(rough):
    """Far-field pixels three times coarser put observers at fractional far-field positions."""
    fine, coarse = rough.window(slice(12, 60), slice(10, 58)), coarsen(rough, 3)
    whole = horizon_map(fine, 16, 2.0, far_field=coarse)
    tiles = np.empty_like(whole)
    for rs in (slice(0, 17), slice(17, 48)):
        for cs in (slice(0, 29), slice(29, 48)):
            tiles[rs, cs] = horizon_map(fine, 16, 2.0, rows=rs, cols=cs, far_field=coarse)
    assert np.array_equal(whole, tiles)


@pytest.mark.parametrize("method", METHODS)
def test_nodata_blocks_nothing_and_is_no_observer(method):
    terrain = flat(40)
    z = terrain.height_m.copy()
    z[:, 25:28] = 500.0  # a wall east of the observers...
    walled = Terrain(z, terrain.grid)
    z = z.copy()
    z[:, 25:28] = np.nan  # ...that is nodata
    holed = Terrain(z, terrain.grid)
    k = 8
    assert horizon_map(walled, k, 2.0, method=method)[20, 10, 2] > 10.0
    hz = horizon_map(holed, k, 2.0, method=method)
    assert np.all(np.isnan(hz[:, 25:28]))
    assert np.allclose(hz[:, :25], dip_deg(2.0), atol=1e-4)
    assert np.allclose(hz[:, 28:], dip_deg(2.0), atol=1e-4)


def test_far_field_cone_beyond_fine_terrain():
    """A cone only in the far field is seen at its exact elevation, by both methods."""
    cx0, cy0 = -960.0, -59040.0
    coarse_grid = Grid(cx0, cy0, 80.0, (24, 24))
    x, y = coarse_grid.xy()
    peak = (x[2, 12], y[2, 12])
    coarse = Terrain(np.maximum(0.0, 400.0 * (1.0 - np.hypot(x - peak[0], y - peak[1]) / 300.0)), coarse_grid)
    # fine pixel (16, 16) lies on coarse column 12, 1320 m (33 half coarse pixels) south of the peak
    fine = Terrain(np.zeros((32, 32)), Grid(cx0 + 670.0, cy0 - 1190.0, 20.0, (32, 32)))
    expected = exact_elevation_deg(fine.grid, 16, 16, 2.0, peak, 400.0)
    for method in METHODS:
        hz = horizon_map(fine, 4, 2.0, rows=slice(16, 17), cols=slice(16, 17), method=method, far_field=coarse)
        assert hz[0, 0, 0] == pytest.approx(expected, abs=0.02)
        assert hz[0, 0, 2] == pytest.approx(dip_deg(2.0), abs=1e-3)
        without = horizon_map(fine, 4, 2.0, rows=slice(16, 17), cols=slice(16, 17), method=method)
        assert without[0, 0, 0] == pytest.approx(dip_deg(2.0), abs=1e-3)


def test_far_field_agrees_with_full_resolution(rough):
    """Fine centre window + coarse copy of the whole DEM vs the full-resolution reference."""
    fine = rough.window(slice(16, 56), slice(16, 56))
    coarse = coarsen(rough, 2)
    win = (slice(8, 32), slice(8, 32))
    ref = horizon_map(rough, 32, 2.0, method="raymarch", rows=slice(24, 48), cols=slice(24, 48))
    fast = horizon_map(fine, 32, 2.0, rows=win[0], cols=win[1], far_field=coarse)
    rms, p99, _ = accuracy(fast, ref)
    assert rms <= 0.04 and p99 <= 0.2  # measured: 0.022, 0.097
    # the far field matters here: without it, 0.13 and 0.51
    rms, p99, _ = accuracy(horizon_map(fine, 32, 2.0, rows=win[0], cols=win[1]), ref)
    assert rms > 0.08 and p99 > 0.3


def test_far_field_sweep_matches_reference_at_fine_edges():
    """Fine DEM inside a coarse far field of the same world: sweep vs ray-march at every observer.

    Observers on or near the fine DEM's edges are the hard case: a far-field sweep line
    beside them can leave the fine footprint where their own ray is still on it.
    """
    fine = synthetic_south_pole(72, 200.0, 0).window(slice(4, 68), slice(10, 72))
    far = synthetic_south_pole(80, 1000.0, 0)
    ref = horizon_map(fine, 36, 2.0, method="raymarch", far_field=far)
    fast = horizon_map(fine, 36, 2.0, far_field=far)
    rms, p99, worst = accuracy(fast, ref)
    assert rms <= 0.05 and p99 <= 0.2 and worst <= 1.0


def test_far_field_step_at_the_terrain_edge_matches_reference():
    """Fine heights that disagree with the far field make the fine DEM's edge a step of
    tens of metres. Rays leaving the edge at a grazing angle, whose two sweep lines cross
    the step far apart, must still agree with the reference."""
    far_grid = Grid.centred((40, 40), 400.0, 0.0, -60e3)
    far = Terrain(fractal_heights(40, 400.0, 11, 4.0, 2.2), far_grid)
    fine_grid = Grid.centred((96, 96), RES, 0.0, -60e3)
    x, y = fine_grid.xy()
    r, c = far_grid.rowcol(x, y)
    continued = ndimage.map_coordinates(far.height_m.astype(np.float64), [r, c], order=1)
    fine = Terrain(continued + fractal(96, seed=12, rms_slope_deg=15.0), fine_grid)
    rows, cols = slice(0, 96), slice(84, 96)  # along the east edge
    ref = horizon_map(fine, 36, 2.0, rows=rows, cols=cols, method="raymarch", far_field=far)
    fast = horizon_map(fine, 36, 2.0, rows=rows, cols=cols, far_field=far)
    rms, p99, _ = accuracy(fast, ref)
    assert rms <= 0.05 and p99 <= 0.2


def test_far_field_sets_the_horizon_of_every_pixel_at_its_own_height():
    """A rough far field 2.5-6 km high, more than 6 km off, sets most horizons of a fine DEM
    whose pixels climb a 35-deg ridge. The far field is swept on a grid twice as fine from a
    lattice of observers 5 fine pixels apart, at a few heights each (see sweep._FarLattice):
    a lattice node's pixels span ~130 m of height here, and each must still see the far
    terrain from its own place and height. (Not compared: the outermost pixels, whose
    rays along the edge read the fine DEM or the far field by round-off.)"""
    from sitesel.horizon import sweep

    far_grid = Grid.centred((96, 96), 400.0, 0.0, -60e3)
    fx, fy = far_grid.xy()
    ramp = np.clip((np.hypot(fx, fy + 60e3) - 6e3) / 4e3, 0.0, 1.0)
    far = Terrain(ramp * (fractal_heights(96, 400.0, 5, 20.0, 2.0) + 2500.0), far_grid)
    fine_grid = Grid.centred((48, 48), RES, 0.0, -60e3)
    x, _ = fine_grid.xy()
    ridge = np.tan(np.radians(35.0)) * np.minimum(x - x.min(), x.max() - x)
    fine = Terrain(ridge + fractal(48, seed=6, rms_slope_deg=3.0), fine_grid)
    assert int(sweep.FAR_OBSERVER_SPACING * 400.0 / sweep.FAR_SWEEP_REFINE / RES) == 5
    ref = horizon_map(fine, 36, 2.0, method="raymarch", far_field=far)
    fast = horizon_map(fine, 36, 2.0, far_field=far)
    without = horizon_map(fine, 36, 2.0)
    inner = (slice(1, -1), slice(1, -1))
    assert np.mean(ref[inner] - without[inner] > 1.0) > 0.5  # the far field matters
    rms, p99, worst = accuracy(fast[inner], ref[inner])
    assert rms <= 0.05 and p99 <= 0.2 and worst <= 0.5


def test_nodata_with_a_far_field():
    """Holes in the fine DEM, one larger than a far-field lattice node's pixels: no observer
    there, nothing blocked, the other pixels as the reference, and the same in tiles."""
    far_grid = Grid.centred((48, 48), 400.0, 0.0, -60e3)
    far = Terrain(fractal_heights(48, 400.0, 5, 10.0, 2.0), far_grid)
    fine_grid = Grid.centred((40, 40), RES, 0.0, -60e3)
    x, y = fine_grid.xy()
    r, c = far_grid.rowcol(x, y)
    z = ndimage.map_coordinates(far.height_m.astype(np.float64), [r, c], order=1) + fractal(40, 3, 8.0)
    z[10:24, 12:26] = np.nan
    z[30, 5] = np.nan
    fine = Terrain(z, fine_grid)
    ref = horizon_map(fine, 16, 2.0, method="raymarch", far_field=far)
    fast = horizon_map(fine, 16, 2.0, far_field=far)
    holes = np.isnan(z)
    assert np.all(np.isnan(fast[holes])) and np.all(np.isfinite(fast[~holes]))
    rms, p99, _ = accuracy(fast[~holes], ref[~holes])
    assert rms <= 0.05 and p99 <= 0.2
    tiles = np.empty_like(fast)
    for rs in (slice(0, 17), slice(17, 40)):
        for cs in (slice(0, 13), slice(13, 40)):
            tiles[rs, cs] = horizon_map(fine, 16, 2.0, rows=rs, cols=cs, far_field=far)
    assert np.array_equal(fast, tiles, equal_nan=True)


def test_progress_and_errors(rough):
    calls = []
    horizon_map(rough, 8, 2.0, rows=slice(0, 4), cols=slice(0, 4), progress=lambda d, n: calls.append((d, n)))
    assert calls[-1] == (8, 8)
    with pytest.raises(SiteselError):
        horizon_map(rough, 8, method="bogus")
    with pytest.raises(SiteselError):
        horizon_map(rough, 8, observer_height_m=-1.0)


@pytest.mark.parametrize("method", METHODS)
def test_writes_into_a_reused_buffer(rough, method):
    z = rough.height_m.copy()
    z[5, 8] = np.nan  # a nodata observer's horizon (NaN) is written too
    terrain = Terrain(z, rough.grid)
    rows, cols = slice(3, 9), slice(5, 12)
    expected = horizon_map(terrain, 8, 2.0, rows=rows, cols=cols, method=method)
    assert np.isnan(expected[2, 3]).all() and np.isfinite(expected[0, 0]).all()
    buffer = np.full((6, 7, 8), 99.0, np.float32)  # stale values of an earlier tile
    got = horizon_map(terrain, 8, 2.0, rows=rows, cols=cols, method=method, out=buffer)
    assert got is buffer and np.array_equal(got, expected, equal_nan=True)
    for wrong in (np.empty((6, 7, 9), np.float32), np.empty((6, 7, 8)), np.empty((6, 8, 8), np.float32)[:, :7]):
        with pytest.raises(ValueError, match="out must be"):
            horizon_map(terrain, 8, 2.0, rows=rows, cols=cols, method=method, out=wrong)


def test_compact_storage_round_trip(rough):
    hz = horizon_map(rough, 8, 2.0, rows=slice(0, 8), cols=slice(0, 8))
    hz[0, 0] = np.nan
    packed = pack_centideg(hz)
    assert packed.dtype == np.int16
    back = unpack_centideg(packed)
    assert np.array_equal(np.isnan(back), np.isnan(hz))
    assert np.nanmax(np.abs(back - hz)) <= 0.005 + 1e-6


def test_coarsen_block_mean_ignores_nodata():
    grid = Grid(100.0, 200.0, 10.0, (4, 5))
    z = np.arange(20, dtype=np.float32).reshape(4, 5)
    z[0, 0] = np.nan
    c = coarsen(Terrain(z, grid), 2)
    assert c.shape == (2, 2) and c.resolution_m == 20.0
    assert (c.grid.x0_m, c.grid.y0_m) == (100.0, 200.0)
    assert c.height_m[0, 0] == pytest.approx((1 + 5 + 6) / 3)
    assert c.height_m[1, 1] == pytest.approx((12 + 13 + 17 + 18) / 4)


@pytest.mark.parametrize("method", METHODS)
def test_rim_above_its_surroundings_sees_below_the_dip(method):
    """Terrain beyond the grid continues at the observer's ground height from the grid edge, not
    from the observer: from a plateau's edge above a plain, the horizon toward the plain is the
    grid edge seen across the curvature, well below the bare-sphere dip."""
    n, res, plateau_m, h_obs = 120, 100.0, 1000.0, 2.0
    grid = Grid.centred((n, n), res, 0.0, -60e3)
    height = np.zeros((n, n), np.float32)
    height[:, :20] = plateau_m
    row, col = 60, 19
    hz = horizon_map(Terrain(height, grid), 4, h_obs, rows=slice(row, row + 1), cols=slice(col, col + 1),
                     method=method)[0, 0]
    # East (bearing 90): the plain is 1 km lower, so the grid's east edge decides.
    x_obs, y_obs = grid.xy()[0][row, col], grid.xy()[1][row, col]
    edge_distance_m = (grid.bounds_m[2] - x_obs) / float(scale_factor(xy_to_latlon(x_obs, y_obs)[0]))
    theta = edge_distance_m / R
    r_ground = R + plateau_m
    expected = np.degrees(np.arctan2(r_ground * np.cos(theta) - (r_ground + h_obs), r_ground * np.sin(theta)))
    assert expected < dip_deg(h_obs) - 0.05
    assert hz[1] == pytest.approx(expected, abs=0.01)


def ray_reference_deg(terrain, row, col, h_obs, bearings_deg_):
    """An independent reference for rough terrain, sharing no code with sitesel's kernels: the
    definition of the horizon (the straight map line from the pixel centre at each grid bearing,
    sampled every half pixel up to the outermost pixel centres by bilinear interpolation, scipy's)
    evaluated in plain 3-D Cartesian geometry (the projection inverted here from its formula), then
    floored by the bare sphere at the observer's ground height beyond the grid's outer edge."""
    g = terrain.grid
    n_r, n_c = terrain.shape
    z = terrain.height_m.astype(np.float64)

    def position(x, y, h):
        lat = 2.0 * np.arctan(np.hypot(x, y) / (2.0 * R)) - np.pi / 2.0  # south polar stereographic
        lon = np.arctan2(x, y)
        return (R + h)[..., None] * np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)

    xo = g.x0_m + (col + 0.5) * g.resolution_m
    yo = g.y0_m - (row + 0.5) * g.resolution_m
    ground = z[row, col]
    obs = position(np.array(xo), np.array(yo), np.array(ground + h_obs))
    up = obs / np.linalg.norm(obs)
    left, bottom, right, top = g.x0_m, g.y0_m - n_r * g.resolution_m, g.x0_m + n_c * g.resolution_m, g.y0_m
    out = []
    for b in np.radians(bearings_deg_):
        dx, dy = np.sin(b), np.cos(b)
        s = 0.5 * g.resolution_m * np.arange(1, 4 * max(n_r, n_c))
        x, y = xo + s * dx, yo + s * dy
        c = (x - g.x0_m) / g.resolution_m - 0.5
        r = (g.y0_m - y) / g.resolution_m - 0.5
        inside = (c >= 0) & (c <= n_c - 1) & (r >= 0) & (r <= n_r - 1)
        x, y, c, r = x[inside], y[inside], c[inside], r[inside]
        h = ndimage.map_coordinates(z, [r, c], order=1)
        d = position(x, y, h) - obs
        elevation = np.degrees(np.arcsin(d @ up / np.linalg.norm(d, axis=1)))
        # where the line leaves the grid's outer edge: beyond, the sphere at the observer's ground height
        exit_s = min((right - xo) / dx if dx > 1e-12 else (left - xo) / dx if dx < -1e-12 else np.inf,
                     (top - yo) / dy if dy > 1e-12 else (bottom - yo) / dy if dy < -1e-12 else np.inf)
        edge = position(np.array(xo + exit_s * dx), np.array(yo + exit_s * dy), np.array(0.0))
        theta = np.arccos(np.clip(edge @ up / np.linalg.norm(edge), -1.0, 1.0))
        rg, ro = R + ground, R + ground + h_obs
        theta = max(theta, np.arccos(rg / ro))  # the floor rises to the tangent point, then falls
        floor = np.degrees(np.arctan2(rg * np.cos(theta) - ro, rg * np.sin(theta)))
        out.append(max(elevation.max(initial=-90.0), floor))
    return np.array(out)


@pytest.mark.parametrize("h_obs", [0.0, 10.0])
def test_both_methods_match_an_independent_3d_reference_on_rough_terrain(rough, h_obs):
    k = 48
    rng = np.random.default_rng(1)
    pixels = rng.integers(16, 56, size=(24, 2))
    ref = np.array([ray_reference_deg(rough, r, c, h_obs, bearings_deg(k)) for r, c in pixels])
    march = np.array([horizon_map(rough, k, h_obs, method="raymarch", rows=slice(r, r + 1), cols=slice(c, c + 1),
                                  max_distance_m=1e7)[0, 0] for r, c in pixels])
    sweep = horizon_map(rough, k, h_obs, method="sweep")[pixels[:, 0], pixels[:, 1]]
    # the ray-march takes the same samples: only its geometry (ground distance integrated along the
    # map line, the central angle of the great-circle section) differs from plain 3-D
    assert np.abs(march - ref).max() < 2e-3  # measured: 4e-4 deg
    rms, p99, _ = accuracy(sweep, ref)
    assert rms <= 0.03 and p99 <= 0.15  # measured: RMS 0.012-0.016, p99 0.05 deg


def test_both_methods_match_the_3d_reference_on_a_coarse_wide_off_pole_grid():
    """100 km of 500 m terrain at 85 S: rays leave the grid tens of km out, where the floor (the
    terrain beyond, at the observer's ground height) sets many horizons. Both kernels start it at the
    grid's outer edge at its true central angle (the ray-march once started it at its last sample and
    took ground distance along the map line: 0.011 deg off)."""
    n, res = 200, 500.0
    x, y = latlon_to_xy(-85.0, 40.0)
    terrain = Terrain(fractal_heights(n, res, 3, 8.0, 2.2), Grid.centred((n, n), res, float(x), float(y)))
    k = 36
    pixels = np.random.default_rng(2).integers(0, n, size=(10, 2))
    ref = np.array([ray_reference_deg(terrain, r, c, 2.0, bearings_deg(k)) for r, c in pixels])
    march = np.array([horizon_map(terrain, k, 2.0, method="raymarch", rows=slice(r, r + 1), cols=slice(c, c + 1),
                                  max_distance_m=1e7)[0, 0] for r, c in pixels])
    assert np.abs(march - ref).max() < 5e-4  # measured: 6e-7 deg
    sweep = horizon_map(terrain, k, 2.0, method="sweep")[pixels[:, 0], pixels[:, 1]]
    rms, p99, _ = accuracy(sweep, ref)
    assert rms <= 0.02 and p99 <= 0.1  # measured: 0.0095, 0.046 deg
