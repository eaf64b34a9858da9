"""Permanently shadowed regions: the mask, the distance to it and its true area."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..terrain.grid import Grid


def psr_layers(sun_lit_fraction: np.ndarray, grid: Grid) -> dict[str, np.ndarray]:
    """Permanently shadowed pixels and the distance to the nearest one.

    Returns ``psr`` (uint8, 1 where the Sun was never lit; 0 at nodata) and
    ``psr_distance_m`` (float32, straight-line map distance from each pixel
    centre to the nearest PSR pixel centre in metres, 0 on PSR pixels; within
    0.8% of the ground distance north to 80 deg S). ``psr_distance_m`` is
    ``inf`` everywhere when there is no PSR in the grid, and NaN at nodata.
    """
    frac = np.asarray(sun_lit_fraction)
    valid = np.isfinite(frac)
    psr = (valid & (np.where(valid, frac, 1.0) <= 0.0)).astype(np.uint8)
    if psr.any():
        distance = ndimage.distance_transform_edt(psr == 0) * grid.resolution_m
    else:
        distance = np.full(frac.shape, np.inf)
    distance = np.where(valid, distance, np.nan).astype(np.float32)
    return {"psr": psr, "psr_distance_m": distance}


def psr_area_km2(psr: np.ndarray, grid: Grid) -> float:
    """Total true (on the sphere) area of the PSR pixels, km^2."""
    return float(grid.pixel_area_m2()[np.asarray(psr) == 1].sum() / 1e6)
