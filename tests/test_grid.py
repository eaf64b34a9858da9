"""Projection, coordinate round trips and local directions (DESIGN.md section 2)."""

import numpy as np
import pytest

from sitesel.constants import MOON_RADIUS_M
from sitesel.terrain.grid import (
    Grid,
    bearing_to_local_azimuth_deg,
    latlon_to_xy,
    latlon_to_xyz,
    local_azimuth_to_bearing_deg,
    local_frame,
    scale_factor,
    xy_to_latlon,
    xy_to_xyz,
    xyz_to_latlon,
)

R = MOON_RADIUS_M


def test_projection_formula_at_known_points():
    # rho = 2R tan(pi/4 + lat/2); x = rho sin(lon), y = rho cos(lon)
    assert latlon_to_xy(-90.0, 123.0) == pytest.approx((0.0, 0.0), abs=1e-6)
    # at colatitude c the radius is 2R tan(c / 2) = R c (1 + c^2 / 12 + c^4 / 120 + ...): one degree
    # of arc (30 323.33 m) stretched by 0.77 m
    c = np.radians(1.0)
    rho_89 = R * c * (1.0 + c**2 / 12.0 + c**4 / 120.0)
    assert rho_89 - R * c == pytest.approx(0.77, abs=0.01)
    assert np.hypot(*latlon_to_xy(-89.0, 37.0)) == pytest.approx(rho_89, abs=1e-6)
    assert latlon_to_xy(-89.0, 0.0) == pytest.approx((0.0, rho_89), abs=1e-6)
    assert latlon_to_xy(-89.0, 90.0) == pytest.approx((rho_89, 0.0), abs=1e-6)
    assert latlon_to_xy(-89.0, 180.0) == pytest.approx((0.0, -rho_89), abs=1e-6)
    assert latlon_to_xy(-89.0, -90.0) == pytest.approx((-rho_89, 0.0), abs=1e-6)


def test_projection_matches_proj():
    # PROJ (through rasterio/GDAL) is an independent implementation of the same projection.
    from rasterio.crs import CRS
    from rasterio.warp import transform

    from sitesel.constants import SOUTH_POLAR_STEREO_PROJ

    lat = np.array([-89.9, -88.5, -85.0, -80.0])
    lon = np.array([10.0, -120.0, 179.0, 45.0])
    geographic = CRS.from_proj4("+proj=longlat +R=1737400 +no_defs")
    x_ref, y_ref = transform(geographic, CRS.from_proj4(SOUTH_POLAR_STEREO_PROJ), lon.tolist(), lat.tolist())
    x, y = latlon_to_xy(lat, lon)
    np.testing.assert_allclose(x, x_ref, atol=1e-3)
    np.testing.assert_allclose(y, y_ref, atol=1e-3)


def test_round_trips():
    rng = np.random.default_rng(1)
    lat = rng.uniform(-90, -75, 1000)
    lon = rng.uniform(-180, 180, 1000)
    lat2, lon2 = xy_to_latlon(*latlon_to_xy(lat, lon))
    np.testing.assert_allclose(lat2, lat, atol=1e-9)
    np.testing.assert_allclose(((lon2 - lon + 180) % 360) - 180, 0, atol=1e-7)
    h = rng.uniform(-5000, 5000, 1000)
    lat3, lon3, h3 = xyz_to_latlon(latlon_to_xyz(lat, lon, h))
    np.testing.assert_allclose(lat3, lat, atol=1e-9)
    np.testing.assert_allclose(h3, h, atol=1e-6)
    assert np.all((lon2 >= -180) & (lon2 < 180))


def test_xyz_of_map_points():
    xyz = xy_to_xyz(0.0, 0.0, 100.0)
    np.testing.assert_allclose(xyz, [0, 0, -(R + 100.0)], atol=1e-6)
    x, y = latlon_to_xy(-88.0, 30.0)
    np.testing.assert_allclose(np.linalg.norm(xy_to_xyz(x, y, 0.0)), R, rtol=1e-12)


def test_local_frame_is_orthonormal_and_right_handed():
    east, north, up = local_frame(np.array([-89.0, -85.0]), np.array([30.0, -150.0]))
    for a in (east, north, up):
        np.testing.assert_allclose(np.linalg.norm(a, axis=-1), 1.0)
    np.testing.assert_allclose(np.sum(east * north, axis=-1), 0, atol=1e-12)
    np.testing.assert_allclose(np.cross(east, north), up, atol=1e-12)


@pytest.mark.parametrize("lat, lon", [(-89.0, 0.0), (-88.0, 75.0), (-85.0, -140.0), (-80.0, 179.0)])
@pytest.mark.parametrize("azimuth", [0.0, 45.0, 90.0, 200.0, 315.0])
def test_local_azimuth_is_grid_bearing_plus_longitude(lat, lon, azimuth):
    # Step 10 m on the map along the grid bearing, then measure the local azimuth in 3-D.
    bearing = np.radians(local_azimuth_to_bearing_deg(azimuth, lon))
    x, y = latlon_to_xy(lat, lon)
    step = 10.0
    p0 = xy_to_xyz(x, y)
    p1 = xy_to_xyz(x + step * np.sin(bearing), y + step * np.cos(bearing))
    east, north, _ = local_frame(lat, lon)
    d = p1 - p0
    measured = np.degrees(np.arctan2(d @ east, d @ north)) % 360.0
    assert ((measured - azimuth + 180) % 360 - 180) == pytest.approx(0.0, abs=1e-3)
    assert bearing_to_local_azimuth_deg(np.degrees(bearing), lon) == pytest.approx(azimuth % 360, abs=1e-9)


@pytest.mark.parametrize("lat", [-90.0, -89.0, -85.0, -80.0])
def test_scale_factor_matches_numerical_derivative(lat):
    # k = d(rho) / (R d(lat))
    dlat = 1e-6
    rho = lambda la: np.hypot(*latlon_to_xy(la, 0.0))  # noqa: E731
    k_numeric = (rho(lat + dlat) - rho(lat)) / (R * np.radians(dlat))
    assert scale_factor(lat) == pytest.approx(k_numeric, rel=1e-6)


def test_grid_geometry_and_pixel_area():
    grid = Grid.centred((4, 6), 100.0)
    assert grid.bounds_m == (-300.0, -200.0, 300.0, 200.0)
    np.testing.assert_allclose(grid.x_m(), [-250, -150, -50, 50, 150, 250])
    np.testing.assert_allclose(grid.y_m(), [150, 50, -50, -150])
    row, col = grid.rowcol(-250.0, 150.0)
    assert (row, col) == (0.0, 0.0)
    sub = grid.window(slice(1, 3), slice(2, 5))
    np.testing.assert_allclose(sub.x_m(), grid.x_m()[2:5])
    np.testing.assert_allclose(sub.y_m(), grid.y_m()[1:3])
    assert Grid.from_transform(grid.transform, grid.shape) == grid
    # Near the pole the pixel area is the nominal one; at 80 S it shrinks by 1/k^2.
    far = Grid.centred((1, 1), 100.0, *latlon_to_xy(-80.0, 0.0))
    k = 2.0 / (1.0 - np.sin(np.radians(-80.0)))
    assert far.pixel_area_m2()[0, 0] == pytest.approx(1e4 / k**2, rel=1e-6)
    assert grid.pixel_area_m2().max() == pytest.approx(1e4, rel=1e-6)
