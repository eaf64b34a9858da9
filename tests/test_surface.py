"""Slope and roughness over the lander footprint (sitesel.surface)."""

import numpy as np
import pytest

from sitesel.surface import footprint_size_px, slope_roughness
from sitesel.terrain.grid import Grid, latlon_to_xy, scale_factor
from sitesel.terrain.model import Terrain


def _reference(terrain, n):
    """Per-pixel least-squares plane with np.linalg.lstsq in ground metres."""
    z = terrain.height_m.astype(np.float64)
    res = terrain.resolution_m
    lat, _ = terrain.grid.latlon()
    k = scale_factor(lat)
    half = n // 2
    rows, cols = z.shape
    slope = np.full(z.shape, np.nan)
    rough = np.full(z.shape, np.nan)
    offsets = np.arange(n) - half
    di, dj = np.meshgrid(offsets, offsets, indexing="ij")
    for i in range(half, rows - half):
        for j in range(half, cols - half):
            window = z[i - half : i + half + 1, j - half : j + half + 1].ravel()
            if not np.all(np.isfinite(window)):
                continue
            # Ground east/north offsets of the window pixels (map metres / k).
            east = dj.ravel() * res / k[i, j]
            north = -di.ravel() * res / k[i, j]
            design = np.column_stack([np.ones(n * n), east, north])
            coef, *_ = np.linalg.lstsq(design, window, rcond=None)
            residual = window - design @ coef
            slope[i, j] = np.degrees(np.arctan(np.hypot(coef[1], coef[2])))
            rough[i, j] = np.sqrt(np.mean(residual**2))
    return slope, rough


@pytest.mark.parametrize(
    "resolution_m, baseline_m, n",
    [
        (5.0, 20.0, 5),
        (10.0, 20.0, 3),
        (20.0, 20.0, 3),
        (240.0, 20.0, 3),
        (4.0, 20.0, 5),
        (6.0, 20.0, 5),
        (2.0, 20.0, 11),
        (1.0, 20.0, 21),
        (0.5, 20.0, 41),
        (5.0, 30.0, 7),
    ],
)
def test_footprint_size(resolution_m, baseline_m, n):
    assert footprint_size_px(resolution_m, baseline_m) == n
    assert n % 2 == 1 and n >= 3
    # Smallest odd size covering the baseline (unless the minimum of 3 applies).
    assert n * resolution_m >= baseline_m - 1e-9 or n == 3
    assert n == 3 or (n - 2) * resolution_m < baseline_m


def test_footprint_size_rejects_nonpositive():
    with pytest.raises(ValueError):
        footprint_size_px(0.0, 20.0)
    with pytest.raises(ValueError):
        footprint_size_px(5.0, -1.0)


@pytest.mark.parametrize("slope_deg", [0.0, 5.0, 10.0, 30.0, 45.0])
@pytest.mark.parametrize("bearing_deg", [0.0, 37.0, 90.0, 200.0, 315.0])
@pytest.mark.parametrize("centre_lat", [-90.0, -80.0])
def test_tilted_plane(slope_deg, bearing_deg, centre_lat):
    cx, cy = latlon_to_xy(centre_lat, 30.0)
    grid = Grid.centred((21, 25), 5.0, float(cx), float(cy))
    x, y = grid.xy()
    lat, _ = grid.latlon()
    k = scale_factor(lat)
    # Map gradient so that the ground slope at every pixel is slope_deg
    # (ground gradient = k * map gradient); k varies by < 1e-5 over 100 m.
    b = np.radians(bearing_deg)
    gradient = np.tan(np.radians(slope_deg)) / k
    rel_x, rel_y = x - float(cx), y - float(cy)
    height = 1000.0 + gradient * (rel_x * np.sin(b) + rel_y * np.cos(b))
    terrain = Terrain(height, grid)
    slope, rough = slope_roughness(terrain, baseline_m=20.0)
    inner = np.s_[2:-2, 2:-2]
    # float32 heights limit the plane to ~1e-4 m, far below 1e-3 deg over 25 m.
    np.testing.assert_allclose(slope[inner], slope_deg, atol=2e-3)
    assert np.nanmax(rough[inner]) < 5e-4
    if centre_lat == -80.0 and slope_deg >= 10.0:
        # The scale factor matters here: ignoring it would be off by ~0.8%.
        naive = np.degrees(np.arctan(gradient[inner]))
        assert np.all(np.abs(slope[inner] - naive) > 0.02)


@pytest.mark.parametrize("resolution_m", [30.0, 10.0, 5.0])
def test_plane_plus_alternating_noise(resolution_m):
    amplitude = 0.7
    grid = Grid.centred((24, 27), resolution_m, 0.0, -120_000.0)
    x, y = grid.xy()
    i, j = np.indices(grid.shape)
    plane = 0.08 * x - 0.15 * y
    height = plane - plane.mean() + amplitude * np.where((i + j) % 2 == 0, 1.0, -1.0)
    slope, rough = slope_roughness(Terrain(height, grid), baseline_m=20.0)
    n = footprint_size_px(resolution_m, 20.0)
    half = n // 2
    inner = np.s_[half:-half, half:-half]
    # Over an odd window the checkerboard has mean +-a/n^2 and no tilt, so the
    # residual RMS is a * sqrt(1 - 1/n^4) and the slope is the plane's.
    np.testing.assert_allclose(rough[inner], amplitude * np.sqrt(1.0 - n**-4.0), atol=1e-4)
    k = scale_factor(grid.latlon()[0])
    np.testing.assert_allclose(slope[inner], np.degrees(np.arctan(k * np.hypot(0.08, 0.15)))[inner], atol=1e-3)


@pytest.mark.parametrize("resolution_m, baseline_m", [(5.0, 20.0), (2.0, 20.0), (30.0, 20.0)])
def test_matches_lstsq_reference(resolution_m, baseline_m):
    rng = np.random.default_rng(7)
    grid = Grid.centred((30, 34), resolution_m, 40_000.0, -250_000.0)
    # A rough random surface kilometres above the sphere (tests cancellation).
    height = 2500.0 + np.cumsum(np.cumsum(rng.normal(size=grid.shape), axis=0), axis=1) * 2.0
    height += rng.normal(size=grid.shape) * 3.0
    terrain = Terrain(height.astype(np.float32), grid)
    slope, rough = slope_roughness(terrain, baseline_m)
    ref_slope, ref_rough = _reference(terrain, footprint_size_px(resolution_m, baseline_m))
    assert slope.dtype == np.float32 and rough.dtype == np.float32
    assert slope.shape == rough.shape == grid.shape
    np.testing.assert_array_equal(np.isnan(slope), np.isnan(ref_slope))
    np.testing.assert_array_equal(np.isnan(rough), np.isnan(ref_rough))
    assert np.isfinite(ref_slope).sum() > 100
    np.testing.assert_allclose(slope, ref_slope, atol=1e-3, equal_nan=True)
    np.testing.assert_allclose(rough, ref_rough, atol=1e-3, equal_nan=True)


def test_nodata_and_edges():
    rng = np.random.default_rng(3)
    grid = Grid.centred((20, 22), 5.0)
    height = (100.0 + rng.normal(size=grid.shape)).astype(np.float32)
    clean_slope, clean_rough = slope_roughness(Terrain(height, grid), 20.0)
    holed = height.copy()
    holed[9, 12] = np.nan
    slope, rough = slope_roughness(Terrain(holed, grid), 20.0)
    n = footprint_size_px(5.0, 20.0)
    half = n // 2
    expected_nan = np.zeros(grid.shape, dtype=bool)
    expected_nan[:half, :] = expected_nan[-half:, :] = True
    expected_nan[:, :half] = expected_nan[:, -half:] = True
    expected_nan[9 - half : 9 + half + 1, 12 - half : 12 + half + 1] = True
    np.testing.assert_array_equal(np.isnan(slope), expected_nan)
    np.testing.assert_array_equal(np.isnan(rough), expected_nan)
    np.testing.assert_allclose(slope[~expected_nan], clean_slope[~expected_nan], atol=1e-4)
    np.testing.assert_allclose(rough[~expected_nan], clean_rough[~expected_nan], atol=1e-4)


def test_grid_smaller_than_footprint_and_all_nodata():
    slope, rough = slope_roughness(Terrain(np.zeros((4, 4)), Grid.centred((4, 4), 5.0)), 20.0)
    assert np.all(np.isnan(slope)) and np.all(np.isnan(rough))
    slope, rough = slope_roughness(Terrain(np.full((8, 8), np.nan), Grid.centred((8, 8), 5.0)), 20.0)
    assert np.all(np.isnan(slope)) and np.all(np.isnan(rough))


def test_window_with_halo_matches_full_grid():
    rng = np.random.default_rng(11)
    grid = Grid.centred((40, 44), 4.0, 10_000.0, 20_000.0)
    terrain = Terrain(rng.normal(size=grid.shape) * 5.0 + 800.0, grid)
    full_slope, full_rough = slope_roughness(terrain, 20.0)
    half = footprint_size_px(4.0, 20.0) // 2
    rows, cols = slice(10, 25), slice(7, 30)
    halo = terrain.window(slice(rows.start - half, rows.stop + half), slice(cols.start - half, cols.stop + half))
    tile_slope, tile_rough = slope_roughness(halo, 20.0)
    crop = np.s_[half:-half, half:-half]
    np.testing.assert_allclose(tile_slope[crop], full_slope[rows, cols], atol=1e-4)
    np.testing.assert_allclose(tile_rough[crop], full_rough[rows, cols], atol=1e-4)
