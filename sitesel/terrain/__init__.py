"""Terrain: grid geometry, the Terrain model, readers and the built-in synthetic pole."""

from .grid import (
    Grid,
    latlon_to_xy,
    latlon_to_xyz,
    local_frame,
    scale_factor,
    xy_to_latlon,
    xy_to_xyz,
    xyz_to_latlon,
)
from .model import Terrain
from .synthetic import synthetic_south_pole

__all__ = [
    "Grid",
    "Terrain",
    "latlon_to_xy",
    "latlon_to_xyz",
    "local_frame",
    "scale_factor",
    "synthetic_south_pole",
    "xy_to_latlon",
    "xy_to_xyz",
    "xyz_to_latlon",
]
