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

__all__ = [
    "Grid",
    "Terrain",
    "latlon_to_xy",
    "latlon_to_xyz",
    "local_frame",
    "scale_factor",
    "xy_to_latlon",
    "xy_to_xyz",
    "xyz_to_latlon",
]
