"""The part of a DEM to analyse: a :class:`Region` (a circle or x/y bounds) and its pixel window."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..constants import MOON_RADIUS_M
from ..errors import SiteselError, SiteselWarning
from .grid import Grid, latlon_to_xy, scale_factor


@dataclass(frozen=True)
class Region:
    """Part of a DEM to read: a circle (centre latitude/longitude, radius) or map bounds.

    Give either ``centre_lat_deg``, ``centre_lon_deg`` and ``radius_km`` (ground
    distance), or all of ``x_min_m``, ``x_max_m``, ``y_min_m``, ``y_max_m``
    (map metres on the LOLA south polar stereographic grid).
    """

    centre_lat_deg: float | None = None
    centre_lon_deg: float | None = None
    radius_km: float | None = None
    x_min_m: float | None = None
    x_max_m: float | None = None
    y_min_m: float | None = None
    y_max_m: float | None = None

    def __post_init__(self):
        circle = (self.centre_lat_deg, self.centre_lon_deg, self.radius_km)
        box = (self.x_min_m, self.x_max_m, self.y_min_m, self.y_max_m)
        has_circle = any(v is not None for v in circle)
        has_box = any(v is not None for v in box)
        if has_circle == has_box:
            raise SiteselError(
                "region: give either centre_lat_deg/centre_lon_deg/radius_km or "
                "x_min_m/x_max_m/y_min_m/y_max_m, not both or neither"
            )
        if has_circle:
            if any(v is None for v in circle):
                raise SiteselError("region: centre_lat_deg, centre_lon_deg and radius_km must all be given")
            if not -90.0 <= self.centre_lat_deg < 0.0:
                raise SiteselError(
                    f"region: centre_lat_deg = {self.centre_lat_deg} is not in the southern hemisphere; "
                    "use a latitude in [-90, 0)"
                )
            if not -360.0 <= self.centre_lon_deg <= 360.0:
                raise SiteselError(f"region: centre_lon_deg = {self.centre_lon_deg} is not a longitude; give degrees "
                                   "in -180..180 (or 0..360)")
            if not self.radius_km > 0.0:
                raise SiteselError(f"region: radius_km = {self.radius_km} must be positive")
        else:
            if any(v is None for v in box):
                raise SiteselError("region: x_min_m, x_max_m, y_min_m and y_max_m must all be given")
            if not (self.x_min_m < self.x_max_m and self.y_min_m < self.y_max_m):
                raise SiteselError(
                    f"region: empty bounds x [{self.x_min_m}, {self.x_max_m}], y [{self.y_min_m}, {self.y_max_m}]; "
                    "need x_min_m < x_max_m and y_min_m < y_max_m"
                )

    def to_bounds_m(self) -> tuple[float, float, float, float]:
        """Map bounds ``(x_min_m, x_max_m, y_min_m, y_max_m)`` on the LOLA grid.

        A circle becomes the map box that contains it: the ground radius is
        scaled by the largest projection scale factor on the circle (at its
        point furthest from the pole), so the box never cuts the circle off.
        """
        if self.radius_km is None:
            return (float(self.x_min_m), float(self.x_max_m), float(self.y_min_m), float(self.y_max_m))
        x, y = latlon_to_xy(self.centre_lat_deg, self.centre_lon_deg)
        radius_m = self.radius_km * 1000.0
        lat_far = min(self.centre_lat_deg + np.degrees(radius_m / MOON_RADIUS_M), 0.0)
        half = radius_m * float(scale_factor(lat_far))
        return (float(x - half), float(x + half), float(y - half), float(y + half))


_REGION_KEYS = set(Region.__dataclass_fields__)


def region_from_config(table: dict) -> Region:
    """Build a :class:`Region` from a config ``[region]`` table; unknown keys are errors."""
    if not isinstance(table, dict):
        raise SiteselError(f"[region] must be a table, got {type(table).__name__}")
    unknown = sorted(set(table) - _REGION_KEYS)
    if unknown:
        raise SiteselError(
            f"[region]: unknown key {unknown[0]!r}; allowed keys are " + ", ".join(sorted(_REGION_KEYS))
        )
    values = {}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SiteselError(f"[region] {key} = {value!r} must be a number")
        values[key] = float(value)
    return Region(**values)


def _window_for_bounds(grid: Grid, bounds_m, path, what="region", fix="choose a region inside the DEM"):
    """Row/column slices of ``grid`` that cover ``bounds_m`` (rounded outward, clipped); an error
    naming ``what`` was asked for, and saying how to ``fix`` it, if they miss the grid."""
    x_min, x_max, y_min, y_max = bounds_m
    left, bottom, right, top = grid.bounds_m
    if x_max <= left or x_min >= right or y_max <= bottom or y_min >= top:
        raise SiteselError(
            f"{what} x [{x_min:.0f}, {x_max:.0f}] m, y [{y_min:.0f}, {y_max:.0f}] m is outside {path} "
            f"(x [{left:.0f}, {right:.0f}] m, y [{bottom:.0f}, {top:.0f}] m); {fix}"
        )
    res = grid.resolution_m
    c0 = int(np.floor((x_min - grid.x0_m) / res + 1e-9))
    c1 = int(np.ceil((x_max - grid.x0_m) / res - 1e-9))
    r0 = int(np.floor((grid.y0_m - y_max) / res + 1e-9))
    r1 = int(np.ceil((grid.y0_m - y_min) / res - 1e-9))
    rows, cols = grid.shape
    clipped = (max(r0, 0), min(r1, rows), max(c0, 0), min(c1, cols))
    if clipped != (r0, r1, c0, c1):
        warnings.warn(f"region extends beyond {path}; it was clipped to the DEM", SiteselWarning, stacklevel=3)
    return slice(clipped[0], clipped[1]), slice(clipped[2], clipped[3])
