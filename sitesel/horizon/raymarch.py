"""Reference horizon: a plain ray-march from every pixel centre (half-pixel steps, bilinear)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..terrain.model import Terrain
from ._common import (_R, bearings_deg, bilinear, exit_box, exit_lines, exit_point, far_arrays, inv_k, unit_chord,
                      window_slices)


@njit(cache=True, parallel=True)
def _raymarch_kernel(
    z, x0, y0, res, zf, fx0, fy0, fres, has_far, obs_r0, obs_c0, nwr, nwc, h_obs, sin_b, cos_b, max_dist, lines, out,
    dist_out
):
    """Ray-march every observer of a window at every bearing.

    ``z`` is the fine grid (corner x0, y0, pixel res); ``zf`` the far-field grid used
    only outside the fine grid. Steps are half a fine pixel throughout. Beyond the
    grids' outer edges (``lines[k]``: :func:`~._common.exit_lines` of bearing k), or
    ``max_dist`` where the search stops, the terrain continues at the observer's ground
    height (``continuation_tan``).
    ``out[r, c, k]`` receives the elevation (radians), ``dist_out`` the ground distance
    of the maximum (metres, 0 when the terrain beyond the grids wins).
    """
    nr, nc = z.shape
    nk = sin_b.shape[0]
    for wr in prange(nwr):
        r = obs_r0 + wr
        for wc in range(nwc):
            c = obs_c0 + wc
            hg = z[r, c]
            if not np.isfinite(hg):
                for k in range(nk):
                    out[wr, wc, k] = np.nan
                    dist_out[wr, wc, k] = np.nan
                continue
            ro = _R + hg + h_obs
            xo = x0 + (c + 0.5) * res
            yo = y0 - (r + 0.5) * res
            theta_dip = math.acos((_R + hg) / ro)
            for k in range(nk):
                dx = sin_b[k]
                dy = cos_b[k]
                best = -0.5 * math.pi
                best_d = 0.0
                s_map = 0.0
                psi = 0.0
                at_max = False
                ik_prev = inv_k(xo, yo)
                while True:
                    x = xo + s_map * dx
                    y = yo + s_map * dy
                    rr = (y0 - y) / res - 0.5
                    cc = (x - x0) / res - 0.5
                    inside_fine = rr >= 0.0 and cc >= 0.0 and rr <= nr - 1 and cc <= nc - 1
                    step = 0.5 * res
                    if not inside_fine:
                        if not has_far:
                            break
                        rf = (fy0 - y) / fres - 0.5
                        cf = (x - fx0) / fres - 0.5
                        if rf < 0.0 or cf < 0.0 or rf > zf.shape[0] - 1 or cf > zf.shape[1] - 1:
                            break
                    s_next = s_map + step
                    if s_next > max_dist:
                        at_max = True
                        break
                    x = xo + s_next * dx
                    y = yo + s_next * dy
                    ik = inv_k(x, y)
                    psi += 0.5 * step * (ik_prev + ik)
                    ik_prev = ik
                    s_map = s_next
                    rr = (y0 - y) / res - 0.5
                    cc = (x - x0) / res - 0.5
                    if rr >= 0.0 and cc >= 0.0 and rr <= nr - 1 and cc <= nc - 1:
                        ht = bilinear(z, rr, cc)
                    elif has_far:
                        ht = bilinear(zf, (fy0 - y) / fres - 0.5, (x - fx0) / fres - 0.5)
                    else:
                        ht = np.nan
                    if not np.isfinite(ht):
                        continue
                    theta = psi / _R
                    rt = _R + ht
                    e = math.atan2(rt * math.cos(theta) - ro, rt * math.sin(theta))
                    if e > best:
                        best = e
                        best_d = psi
                # terrain continues at the observer's ground height beyond where the search stopped or
                # left the grids, at the central angle of that point
                x_end, y_end = (xo + s_map * dx, yo + s_map * dy) if at_max else exit_point(xo, yo, lines[k])
                chord = unit_chord(xo, yo, x_end, y_end)
                theta = max(max(2.0 * math.asin(min(0.5 * chord, 1.0)), theta_dip), 1e-12)
                e = math.atan2((_R + hg) * math.cos(theta) - ro, (_R + hg) * math.sin(theta))
                if e > best:
                    best = e
                    best_d = 0.0
                out[wr, wc, k] = best
                dist_out[wr, wc, k] = best_d


def raymarch_with_distance(
    terrain: Terrain,
    n_azimuths: int = 180,
    observer_height_m: float = 2.0,
    max_distance_m: float = 150e3,
    rows: slice | None = None,
    cols: slice | None = None,
    far_field: Terrain | None = None,
    progress=None,
):
    """Reference ray-march: (horizon_deg, distance_m) each float64 (rows, cols, K).

    ``distance_m`` is the ground distance of the terrain point that sets the
    horizon (0 where the terrain beyond the grids wins); the accuracy benchmark uses it
    to flag pixels whose reference horizon is set by the nearest samples.
    """
    r0, r1, c0, c1 = window_slices(terrain.shape, rows, cols)
    b = np.radians(bearings_deg(n_azimuths))
    z = np.ascontiguousarray(terrain.height_m, dtype=np.float32)
    zf, fx0, fy0, fres, has_far = far_arrays(far_field)
    g = terrain.grid
    nwr, nwc = r1 - r0, c1 - c0
    box = exit_box(g, None if far_field is None else far_field.grid)
    lines = np.array([exit_lines(sb, cb, box) for sb, cb in zip(np.sin(b), np.cos(b))])
    out = np.empty((nwr, nwc, len(b)), np.float64)
    dist = np.empty_like(out)
    # Row blocks keep progress reporting responsive without changing results.
    block = max(1, min(nwr, 64))
    for start in range(0, nwr, block):
        stop = min(nwr, start + block)
        _raymarch_kernel(
            z, g.x0_m, g.y0_m, g.resolution_m, zf, fx0, fy0, fres, has_far,
            r0 + start, c0, stop - start, nwc, float(observer_height_m),
            np.sin(b), np.cos(b), float(max_distance_m), lines, out[start:stop], dist[start:stop],
        )
        if progress is not None:
            progress(stop, nwr)
    return np.degrees(out), dist

