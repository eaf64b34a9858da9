"""The LOLA south polar stereographic grid and coordinate conversions.

Conventions (DESIGN.md section 2):

* sphere of radius ``MOON_RADIUS_M``; heights are metres above it;
* polar stereographic projection, centre latitude -90, centre longitude 0,
  scale 1 at the pole: ``rho = 2 R tan(pi/4 + lat/2)``,
  ``x = rho sin(lon)``, ``y = rho cos(lon)``;
* grid north is +y (toward longitude 0); longitudes are east-positive and
  reported in [-180, 180);
* pixel-registered: ``x0_m``/``y0_m`` are the outer corner of pixel (0, 0),
  rows run toward -y, columns toward +x.

Local directions: at a pixel of longitude ``lon`` the local north (direction of
increasing latitude) points away from the pole, so a local azimuth ``az``
(clockwise from local north) is the grid bearing ``az + lon`` (clockwise from
grid north). At the exact pole grid north is used (``lon`` taken as 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import MOON_RADIUS_M


def latlon_to_xy(lat_deg, lon_deg):
    """Project latitude/longitude (degrees) to polar stereographic x/y (metres)."""
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    rho = 2.0 * MOON_RADIUS_M * np.tan(np.pi / 4.0 + lat / 2.0)
    return rho * np.sin(lon), rho * np.cos(lon)


def xy_to_latlon(x_m, y_m):
    """Inverse projection: x/y (metres) to latitude and longitude in degrees.

    Longitude is in [-180, 180); at the pole it is 0.
    """
    x = np.asarray(x_m, dtype=np.float64)
    y = np.asarray(y_m, dtype=np.float64)
    rho = np.hypot(x, y)
    lat = 2.0 * np.arctan(rho / (2.0 * MOON_RADIUS_M)) - np.pi / 2.0
    lon = np.degrees(np.arctan2(x, y))
    return np.degrees(lat), wrap_longitude_deg(lon)


def wrap_longitude_deg(lon_deg):
    """Wrap longitudes to [-180, 180)."""
    return (np.asarray(lon_deg, dtype=np.float64) + 180.0) % 360.0 - 180.0


def latlon_to_xyz(lat_deg, lon_deg, height_m=0.0):
    """Moon-fixed (mean-Earth) Cartesian position in metres, shape (..., 3)."""
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    r = MOON_RADIUS_M + np.asarray(height_m, dtype=np.float64)
    return np.stack(
        np.broadcast_arrays(r * np.cos(lat) * np.cos(lon), r * np.cos(lat) * np.sin(lon), r * np.sin(lat)),
        axis=-1,
    )


def xyz_to_latlon(xyz_m):
    """Inverse of :func:`latlon_to_xyz`: returns (lat_deg, lon_deg, height_m)."""
    xyz = np.asarray(xyz_m, dtype=np.float64)
    r = np.linalg.norm(xyz, axis=-1)
    lat = np.degrees(np.arcsin(xyz[..., 2] / r))
    lon = wrap_longitude_deg(np.degrees(np.arctan2(xyz[..., 1], xyz[..., 0])))
    return lat, lon, r - MOON_RADIUS_M


def xy_to_xyz(x_m, y_m, height_m=0.0):
    """Moon-fixed position (metres, shape (..., 3)) of a map point at a height."""
    lat, lon = xy_to_latlon(x_m, y_m)
    return latlon_to_xyz(lat, lon, height_m)


def local_frame(lat_deg, lon_deg):
    """Unit east, north and up vectors (each shape (..., 3)) in the Moon-fixed frame."""
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    lat, lon = np.broadcast_arrays(lat, lon)
    zero = np.zeros_like(lat)
    east = np.stack([-np.sin(lon), np.cos(lon), zero], axis=-1)
    north = np.stack([-np.sin(lat) * np.cos(lon), -np.sin(lat) * np.sin(lon), np.cos(lat)], axis=-1)
    up = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)
    return east, north, up


def scale_factor(lat_deg):
    """Polar stereographic point scale factor k (map length / ground length).

    ``k = 2 / (1 - sin(lat))`` for the south polar aspect; 1 at the pole.
    """
    return 2.0 / (1.0 - np.sin(np.radians(np.asarray(lat_deg, dtype=np.float64))))


def local_azimuth_to_bearing_deg(azimuth_deg, lon_deg):
    """Grid bearing (clockwise from +y, degrees in [0, 360)) of a local azimuth."""
    return (np.asarray(azimuth_deg, dtype=np.float64) + np.asarray(lon_deg, dtype=np.float64)) % 360.0


def bearing_to_local_azimuth_deg(bearing_deg, lon_deg):
    """Local azimuth (clockwise from local north, degrees in [0, 360)) of a grid bearing."""
    return (np.asarray(bearing_deg, dtype=np.float64) - np.asarray(lon_deg, dtype=np.float64)) % 360.0


@dataclass(frozen=True)
class Grid:
    """A pixel-registered polar stereographic raster grid.

    Attributes
    ----------
    x0_m, y0_m : float
        Map coordinates of the outer (top-left) corner of pixel (0, 0), metres.
    resolution_m : float
        Pixel size in map metres (square pixels).
    shape : tuple of int
        (rows, cols).
    """

    x0_m: float
    y0_m: float
    resolution_m: float
    shape: tuple[int, int]

    @classmethod
    def centred(cls, shape, resolution_m, centre_x_m=0.0, centre_y_m=0.0):
        """A grid of ``shape`` whose centre is at the given map point."""
        rows, cols = int(shape[0]), int(shape[1])
        return cls(
            x0_m=float(centre_x_m - cols * resolution_m / 2.0),
            y0_m=float(centre_y_m + rows * resolution_m / 2.0),
            resolution_m=float(resolution_m),
            shape=(rows, cols),
        )

    @classmethod
    def from_transform(cls, transform, shape):
        """Build from a rasterio/affine ``Affine`` (north-up, square pixels)."""
        if abs(transform.b) > 1e-9 or abs(transform.d) > 1e-9:
            raise ValueError("rotated grids are not supported")
        if not np.isclose(transform.a, -transform.e, rtol=1e-9):
            raise ValueError("pixels must be square and north-up")
        return cls(float(transform.c), float(transform.f), float(transform.a), (int(shape[0]), int(shape[1])))

    @property
    def transform(self):
        """The rasterio ``Affine`` of this grid."""
        from rasterio.transform import Affine

        return Affine(self.resolution_m, 0.0, self.x0_m, 0.0, -self.resolution_m, self.y0_m)

    @property
    def bounds_m(self):
        """(left, bottom, right, top) in map metres."""
        rows, cols = self.shape
        return (self.x0_m, self.y0_m - rows * self.resolution_m, self.x0_m + cols * self.resolution_m, self.y0_m)

    def x_m(self):
        """Map x of column centres, shape (cols,)."""
        return self.x0_m + (np.arange(self.shape[1]) + 0.5) * self.resolution_m

    def y_m(self):
        """Map y of row centres, shape (rows,), decreasing."""
        return self.y0_m - (np.arange(self.shape[0]) + 0.5) * self.resolution_m

    def xy(self, rows=None, cols=None):
        """2-D map coordinates (x_m, y_m) of pixel centres for a window of rows/cols slices."""
        x = self.x_m()[cols if cols is not None else slice(None)]
        y = self.y_m()[rows if rows is not None else slice(None)]
        return np.meshgrid(x, y)

    def latlon(self, rows=None, cols=None):
        """2-D (lat_deg, lon_deg) of pixel centres for a window."""
        x, y = self.xy(rows, cols)
        return xy_to_latlon(x, y)

    def rowcol(self, x_m, y_m):
        """Fractional (row, col) of a map point; pixel centres are integers."""
        col = (np.asarray(x_m, dtype=np.float64) - self.x0_m) / self.resolution_m - 0.5
        row = (self.y0_m - np.asarray(y_m, dtype=np.float64)) / self.resolution_m - 0.5
        return row, col

    def contains(self, x_m, y_m):
        """True where a map point lies inside the grid's outer bounds."""
        left, bottom, right, top = self.bounds_m
        x = np.asarray(x_m)
        y = np.asarray(y_m)
        return (x >= left) & (x <= right) & (y >= bottom) & (y <= top)

    def window(self, rows: slice, cols: slice) -> "Grid":
        """The sub-grid covering ``rows`` x ``cols`` (slices with step 1)."""
        r0, r1, _ = rows.indices(self.shape[0])
        c0, c1, _ = cols.indices(self.shape[1])
        return Grid(
            self.x0_m + c0 * self.resolution_m,
            self.y0_m - r0 * self.resolution_m,
            self.resolution_m,
            (r1 - r0, c1 - c0),
        )

    def pixel_area_m2(self, rows=None, cols=None):
        """True area on the sphere of each pixel, m^2 (nominal area / k^2)."""
        lat, _ = self.latlon(rows, cols)
        return self.resolution_m**2 / scale_factor(lat) ** 2
