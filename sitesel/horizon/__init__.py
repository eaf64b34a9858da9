"""Horizon elevation angles per pixel and azimuth (DESIGN.md sections 2 and 7).

The horizon of an observer standing ``observer_height_m`` above a pixel, in the
direction of a grid bearing, is the largest elevation angle of the terrain seen
along the straight map line leaving the pixel at that bearing. Elevation is
measured from the observer's local horizontal plane (perpendicular to its radius
vector) on the sphere of radius ``MOON_RADIUS_M``; a target at central angle
``theta`` and radius ``R + ht`` seen from radius ``R + ho`` has elevation
``atan2((R + ht) cos theta - (R + ho), (R + ht) sin theta)``. Map distances are
converted to ground distances with the polar stereographic scale factor
``k = 1 + rho^2 / (4 R^2)``, integrated along the line.

Terrain beyond the supplied grids is unknown: it is taken to continue at the
observer's own ground height from where the search leaves the grids, so a
flat DEM edge behaves like a bare sphere (dip ``-acos((R + hg) / (R + hg +
h_obs))``), while an observer on a rim above its surroundings keeps the lower
horizon its grid shows. Nodata (NaN) pixels block nothing and
are never observers (their horizon is NaN).

Two methods share this geometry:

* ``"raymarch"``: the reference. For each pixel and azimuth it marches the ray
  at half-pixel steps with bilinear interpolation, up to ``max_distance_m``.
  Cost O(N K L).
* ``"sweep"``: the fast method (Dozier & Frew 1990; Barrett 2011). Within
  ``NEAR_RAY_PX`` pixels of each observer it uses the exact ray, as the reference
  does. Beyond that, for each azimuth the DEM is walked along parallel lines one
  pixel apart, sampled once per pixel column (or row) by linear interpolation
  across the line; each line keeps the convex hull of the terrain it has passed,
  in exact 2-D Cartesian coordinates of the great-circle section (curvature is
  exact, not the parabolic approximation), and each observer finds its horizon
  by a galloping search for the tangent point on that hull. A pixel lies between
  two lines; its horizon is the interpolation of tan(elevation) from both,
  weighted by lateral distance, with the observer shifted along the local
  lateral slope, which is exact for planar terrain at every azimuth. Cost
  O(N K (NEAR_RAY_PX + log H)) for hull size H, whatever the search distance; it
  searches all of the supplied terrain. A coarse ``far_field`` grid is first
  resampled bilinearly (as the reference reads it) onto a ring of fine pixels
  ``FAR_PAD_PX`` far-field pixels wide around the terrain, which the fine sweep
  searches like terrain (the exact near ray reads the far field itself beyond
  the terrain's pixel centres, as the reference does); the far field outside
  that ring is swept on a twice finer copy of its grid (the same bilinear
  surface, closer lines). A far-field line runs up to one line spacing beside
  an observer, so at short range it would see terrain off the observer's own
  ray; the ring keeps it at least ``FAR_PAD_PX`` coarse pixels away. From that
  far, a pixel's far-field horizon changes slowly with its position and
  linearly with its height, so the far field is swept from a lattice of
  observers a quarter of a coarse pixel apart at four heights each, and each
  pixel interpolates in position and in its own height. Results do not depend
  on the observer window (tiles are bit-identical to one whole run).

Large DEMs: call ``horizon_map`` per tile with ``terrain`` = the tile plus a halo
(the near field, e.g. 10-20 km) and ``far_field`` = a coarse copy of the whole
region (:func:`coarsen`), so no call holds N*K values for the whole DEM.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import SiteselError
from ..terrain.grid import Grid
from ..terrain.model import Terrain
from ._common import bearings_deg, exit_box, window_slices
from .raymarch import raymarch_with_distance
from .sweep import NEAR_RAY_PX, sweep_horizon

__all__ = [
    "NEAR_RAY_PX",
    "PACKED_NODATA",
    "bearings_deg",
    "coarsen",
    "horizon_map",
    "is_short_reach",
    "pack_centideg",
    "raymarch_with_distance",
    "search_reach_m",
    "unpack_centideg",
]

#: int16 code of a NaN horizon in :func:`pack_centideg`.
PACKED_NODATA = np.int16(-32768)


def pack_centideg(horizon_deg: np.ndarray) -> np.ndarray:
    """Compact storage: horizon degrees as int16 hundredths of a degree (error <= 0.005 deg).

    NaN becomes ``PACKED_NODATA``; a quarter of the float64 size, half of float32.
    """
    h = np.asarray(horizon_deg, dtype=np.float64)
    packed = np.round(np.where(np.isfinite(h), h, 0.0) * 100.0).astype(np.int16)
    packed[~np.isfinite(h)] = PACKED_NODATA
    return packed


def unpack_centideg(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_centideg`: float32 degrees, NaN where nodata."""
    p = np.asarray(packed)
    out = p.astype(np.float32) / np.float32(100.0)
    out[p == PACKED_NODATA] = np.nan
    return out


def search_reach_m(area_bounds_m, terrain: Terrain, far_field: Terrain | None = None) -> float:
    """How far (m) a horizon search from anywhere in ``area_bounds_m`` (left, bottom, right,
    top, map metres) is sure to run over supplied terrain: the least distance, along x or y,
    from an edge of the area to the same edge of the box holding ``terrain`` and
    ``far_field``. Beyond that box terrain is taken to continue at the observer's own
    ground height (see the module docstring)."""
    left, bottom, right, top = exit_box(terrain.grid, None if far_field is None else far_field.grid)
    a = area_bounds_m
    return max(0.0, min(a[0] - left, a[1] - bottom, right - a[2], top - a[3]))


def is_short_reach(reach_m: float, max_distance_m: float) -> bool:
    """Whether a search reaching ``reach_m`` over supplied terrain (:func:`search_reach_m`)
    ends before ``max_distance_m``, by more than a metre (round-off)."""
    return reach_m < max_distance_m - 1.0


def short_reach_warning(reach_m: float, max_distance_m: float, far_field: Terrain | None,
                        origin: str = "the analysed area") -> str | None:
    """The one-line warning for a horizon search from ``origin`` that ends at the supplied
    terrain's edge (``reach_m``, :func:`search_reach_m`) before ``max_distance_m``; None if
    it does not."""
    if not is_short_reach(reach_m, max_distance_m):
        return None
    supplied = "the DEM and its far field reach" if far_field is not None else "the DEM reaches"
    shown_km = math.floor(reach_m / 100.0) / 10.0  # rounded down: never shown as the limit itself
    return (f"{supplied} only {shown_km:.1f} km beyond {origin} on its nearest side, less than the "
            f"{max_distance_m / 1e3:g} km horizon search: terrain farther out is taken to continue at each "
            "observer's own ground height, so horizons toward the edge miss distant massifs; add a wider, "
            "coarser product as [dem] far_field (site: --far-field), e.g. LDEM_80S_80M")


def coarsen(terrain: Terrain, factor: int) -> Terrain:
    """Block-mean copy of ``terrain`` with pixels ``factor`` times larger (far-field occluder).

    NaN pixels are ignored in each block; a block with no valid pixel is NaN.
    Rows/columns that do not fill a whole block are dropped.
    """
    f = int(factor)
    if f < 1:
        raise SiteselError(f"the coarsening factor must be a positive integer, got {factor}")
    h = terrain.height_m
    nr, nc = h.shape[0] // f, h.shape[1] // f
    if nr < 2 or nc < 2:
        raise SiteselError(f"terrain of shape {h.shape} is too small to coarsen by {f}")
    blocks = h[: nr * f, : nc * f].reshape(nr, f, nc, f).astype(np.float64)
    valid = np.isfinite(blocks)
    count = valid.sum(axis=(1, 3))
    total = np.where(valid, blocks, 0.0).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    g = terrain.grid
    grid = Grid(g.x0_m, g.y0_m, g.resolution_m * f, (nr, nc))
    prov = dict(terrain.provenance)
    prov["coarsened_by"] = f
    return Terrain(mean.astype(np.float32), grid, prov)


def horizon_map(
    terrain: Terrain,
    n_azimuths: int = 180,
    observer_height_m: float = 2.0,
    max_distance_m: float = 150e3,
    rows: slice | None = None,
    cols: slice | None = None,
    method: str = "sweep",
    far_field: Terrain | None = None,
    progress=None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Horizon elevation angles (degrees) for the observers in a window.

    Parameters
    ----------
    terrain : Terrain
        The occluder: all of it is searched (the window only selects observers).
    n_azimuths : int
        K; azimuths are the grid bearings ``bearings_deg(K)`` (clockwise from +y).
    observer_height_m : float
        Observer height above its pixel's surface, metres.
    max_distance_m : float
        Search distance of the ray-march, metres. The sweep searches all of the
        supplied terrain and far field, whatever this value.
    rows, cols : slice, optional
        Window of observer pixels (default: the whole grid).
    method : {"sweep", "raymarch"}
    far_field : Terrain, optional
        Coarse terrain on the same projection used where ``terrain`` has no
        pixels (see :func:`coarsen`).
    progress : callable, optional
        ``progress(n_done, n_total)``, called per azimuth (sweep) or row block
        (ray-march).
    out : ndarray, optional
        C-contiguous float32 array of the result's shape to write into and return. A
        caller computing many windows in turn passes one buffer to every call: a fresh
        array of this size (1.5 GB for 1024^2 pixels at K = 360) costs page faults on its
        first write (up to 2 s on the reference VM, which returns freed memory to its host).

    Returns
    -------
    ndarray float32, shape (rows, cols, K)
        Elevation of the horizon in degrees; NaN at nodata observers.
    """
    if observer_height_m < 0:
        raise SiteselError(f"observer height must be >= 0 m, got {observer_height_m}")
    if out is not None:
        r0, r1, c0, c1 = window_slices(terrain.shape, rows, cols)
        shape = (r1 - r0, c1 - c0, int(n_azimuths))
        if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}, got {out.dtype} "
                             f"{out.shape}")
    if method == "sweep":
        return sweep_horizon(terrain, n_azimuths, observer_height_m, rows, cols, far_field, progress, out)
    if method == "raymarch":
        deg, _ = raymarch_with_distance(
            terrain, n_azimuths, observer_height_m, max_distance_m, rows, cols, far_field, progress
        )
        if out is None:
            return deg.astype(np.float32)
        out[...] = deg
        return out
    raise SiteselError(f'unknown horizon method "{method}"; use "sweep" or "raymarch"')
