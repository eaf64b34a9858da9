"""Fast horizon: rotate-and-sweep with a convex hull per line (Dozier & Frew 1990; Barrett 2011).

The near field within ``NEAR_RAY_PX`` pixels of each observer is searched by the
exact ray (as the reference does), everything farther by the sweep lines. A
coarse far field is first resampled (bilinearly, as the reference reads it) onto
a ring of fine pixels ``FAR_PAD_PX`` far-field pixels wide around the terrain,
which the fine sweep searches like terrain; the far field beyond that ring is
swept on a ``FAR_SWEEP_REFINE`` times finer copy of its grid, from a lattice of
observers at a few heights each (see ``_FarLattice``). Its lines run up to one
line spacing beside an observer, so close by they would sample terrain off the
observer's own ray at grossly wrong angles; the ring keeps every far-field sample
they take at least ``FAR_PAD_PX`` far-field pixels away. Within ``FAR_RAY_PX``
pixels an exact ray reads the far field beyond the terrain's pixel centres, as
the reference does.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from .._fastmath import atan2
from ..terrain.grid import Grid
from ..terrain.model import Terrain
from ._common import (_R, bearings_deg, bilinear, continuation_tan, exit_box, exit_lines, exit_point, inv_k,
                      unit_chord, window_slices)

#: Radius (pixels) around each observer searched by the exact ray (half-pixel
#: steps, bilinear) instead of the sweep lines, whose lateral interpolation is
#: least accurate close to the observer: it errs by metres on a rough slope, which
#: is an angle falling with distance. At 12 px, 6 of 108 000 well-defined samples
#: of the horizon benchmark's 25 deg fractal (on another draw of its pixels) were
#: over 0.5 deg off; 16 px removes them and lowers the RMS error by 15%, for 32
#: samples per pixel and azimuth instead of 24.
NEAR_RAY_PX = 16.0

#: Width of the ring of resampled far field around the terrain, in far-field pixels.
FAR_PAD_PX = 16

#: Reach (pixels) of the exact ray that reads the far field beyond the terrain's pixel
#: centres, as the reference does, for a ray leaving the terrain at right angles to its
#: edge (see ``_far_near_kernel``; at most the ring's width). Where the two products
#: disagree, the edge is a step in height that two sweep lines a pixel apart cross at
#: different distances; the error of interpolating between them falls as 1 / distance^2.
FAR_RAY_PX = 64.0

_STAGE = 16

#: Gaps between the sweep lines one thread walks in lockstep (see ``_sweep_kernel``); fewer for
#: windows crossed by too few lines to give every thread two blocks (see ``_line_block``).
_LINE_BLOCK = 31

#: Pixels per block of the staged copy-out (see ``_flush``).
_FLUSH_BLOCK = 64

#: Round-off tolerance (pixels) of a sweep line's lateral position at the grid edge.
_Q_SNAP = 1e-9

# --------------------------------------------------------------------------- sweep
#
# Frame of one azimuth: the occluders are indexed (q, p) where p is the primary
# axis (the pixel axis most aligned with the look direction) and q the other one;
# the kernel reads them as ``at`` (p, q), a column p contiguous, so the caller passes
# the DEM transposed when columns are primary, as is when rows are. Line i is the
# set of points q = i + g p; lines are one pixel apart in q. Along a line the
# look direction moves p by ``sp`` (+1 or -1) per step of ``step_len`` map metres;
# t = sp * p is the step index in the look direction.
#
# Each line is walked from its far end backwards. A sample at ground distance
# psi behind the far end lies at central angle theta = -psi / R in the line's
# great-circle section, at Cartesian (X, Y) = (R + z)(sin theta, cos theta): the
# look direction is +X, up is +Y near the far end. Lines of sight are straight
# in this section, so the horizon is the tangent from the observer to the convex
# hull of the samples ahead: exact on the sphere for any distance.


@njit(cache=True, inline="always")
def _cross(ax, ay, bx, by):
    return ax * by - ay * bx


@njit(cache=True, inline="always")
def _hull_push(hx, hy, n, x, y):
    """Push (x, y) on the upper hull stack; pop vertices it hides from everything behind it."""
    while n >= 2 and _cross(hx[n - 1] - x, hy[n - 1] - y, hx[n - 2] - x, hy[n - 2] - y) >= 0.0:
        n -= 1
    hx[n] = x
    hy[n] = y
    return n + 1


@njit(cache=True, inline="always")
def _higher_beyond(hx, hy, j, xo, yo):
    """True if hull vertex j - 1 (farther) appears higher than vertex j from (xo, yo)."""
    return _cross(hx[j] - xo, hy[j] - yo, hx[j - 1] - xo, hy[j - 1] - yo) > 0.0


@njit(cache=True, inline="always")
def _hull_tangent(hx, hy, n, xo, yo, guess):
    """Index of the hull vertex of largest elevation seen from (xo, yo).

    Along the stack from the nearest vertex (n - 1) to the farthest (0) the
    elevation rises then falls, so "vertex j - 1 is higher than j" holds exactly
    for j above the peak. The search gallops out from ``guess`` (the previous
    answer on this line: neighbouring observers usually share their horizon
    point, and stack indices of surviving vertices do not change), then bisects.
    """
    g = min(max(guess, 0), n - 1)
    # find the smallest j in [1, n] with _higher_beyond(j) true (n: none)
    if g >= 1 and _higher_beyond(hx, hy, g, xo, yo):
        hi = g
        step = 1
        lo = g - 1
        while lo >= 1 and _higher_beyond(hx, hy, lo, xo, yo):
            hi = lo
            step *= 2
            lo = hi - step
        lo = max(lo, 0)
    else:
        lo = g
        step = 1
        hi = g + 1
        while hi < n and not _higher_beyond(hx, hy, hi, xo, yo):
            lo = hi
            step *= 2
            hi = lo + step
        hi = min(hi, n)
    # invariant: predicate false at lo (or lo == 0), true at hi (or hi == n)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _higher_beyond(hx, hy, mid, xo, yo):
            hi = mid
        else:
            lo = mid
    return hi - 1


# numpy's error model: a division by zero gives inf rather than raising, so loops over
# this vectorise (and the one quotient that can be 0 / 0, at exit 0, is not selected)
@njit(cache=True, inline="always", error_model="numpy")
def _floor_tan(x_m, y_m, lines, ground_m, observer_height_m, tan_dip):
    """``continuation_tan`` of one observer at map point (x_m, y_m) looking along a bearing,
    in float32.

    The search leaves the grids where ``lines`` (:func:`~._common.exit_lines`) says, at the
    central angle theta from the observer whose chord on the unit
    sphere ``unit_chord`` gives exactly. ``tan_dip`` is the floor at exit distance 0 (the
    tangent point), which is also the floor for every exit nearer than the tangent point.
    Beyond it the floor is (r cos theta - r - h) / (r sin theta) for ground radius r and
    observer height h, written as -tan(theta / 2) - h / (r sin theta), with 1 - cos theta =
    chord^2 / 2 and sin theta = chord sqrt(1 - chord^2 / 4), which float32 holds to 1e-7 of
    the value (float64 would need R + h to the millimetre). No branch and no libm call, so
    loops over it vectorise.
    """
    x_exit, y_exit = exit_point(x_m, y_m, lines)
    chord = np.float32(unit_chord(x_m, y_m, x_exit, y_exit))
    half_c2 = np.float32(0.5) * chord * chord  # 1 - cos theta
    sin_t = chord * np.sqrt(np.float32(1.0) - np.float32(0.5) * half_c2)
    one_cos = np.float32(2.0) - half_c2  # 1 + cos theta
    h = np.float32(observer_height_m)
    r_ground = np.float32(_R) + ground_m
    beyond = -sin_t / one_cos - h / (r_ground * sin_t)
    # nearer than the tangent point (r + h) cos theta >= r, i.e. (1 - cos theta) (r + h) <= h: the dip
    return tan_dip if half_c2 * (r_ground + h) <= h else beyond


@njit(cache=True, inline="always")
def _line_t_start(i, g, nq, npp, sp, to_hi):
    """First (farthest) step of line i: where it leaves the occluder grid grown by one
    pixel in q, so that its samples do not depend on the observer window."""
    pl = 0.0
    ph = npp - 1.0
    if g == 0.0:
        if i < -1 or i > nq:
            pl = 1.0
            ph = 0.0
    else:
        e0 = (-1.0 - i) / g
        e1 = (nq - i) / g
        pl = max(pl, min(e0, e1))
        ph = min(ph, max(e0, e1))
    if pl <= ph:
        return math.floor(max(sp * pl, sp * ph))
    # a line that misses the grid still visits the observers (with an empty hull)
    return math.ceil(to_hi)


#: Samples kept per line between being taken and joining the hull (a ring buffer):
#: more than the lag (in steps) of any observer's near field.
_RING = 64


@njit(cache=True, inline="always")
def _join_hulls(hx, hy, n_hull, sx, sy, st, sv, ins, n_s, t_limit):
    """Push the waiting samples (ring rows ``sx``, ``sy``, valid ``sv``, one column per line, taken
    at step ``st``) that lie beyond step ``t_limit`` onto their lines' hulls, in order; the new ``ins``."""
    while ins < n_s and st[ins & (_RING - 1)] > t_limit:
        k = ins & (_RING - 1)
        for j in range(n_hull.size):
            if sv[k, j]:
                n_hull[j] = _hull_push(hx[j], hy[j], n_hull[j], sx[k, j], sy[k, j])
        ins += 1
    return ins


@njit(cache=True, inline="always")
def _block_t_end(i0, line_block, g, sp, qw_lo, qw_hi, ap_near, ap_far, t_lo):
    """Last step a block of lines ``i0 .. i0 + line_block`` must walk to (at least ``t_lo``):
    the step of its last observer. The block finishes the observers between its lines,
    q - g p in [i0, i0 + line_block) (two more each side here, against round-off), and
    slanted lines leave the window's rows [qw_lo, qw_hi] before its last column; the steps
    beyond would only sample terrain no observer of the block looks across."""
    p_lo = min(ap_near, ap_far)
    p_hi = max(ap_near, ap_far)
    if g != 0.0:
        # p where the band q - g p in [i0 - 2, i0 + line_block + 2] meets the window's rows
        e0 = (qw_lo - (i0 + line_block + 2.0)) / g
        e1 = (qw_hi - (i0 - 2.0)) / g
        p_lo = max(p_lo, min(e0, e1))
        p_hi = min(p_hi, max(e0, e1))
    if p_lo > p_hi:
        return 1 << 62  # no observer: no step to walk
    return max(t_lo, math.floor(min(sp * p_lo, sp * p_hi)) - 1)


@njit(cache=True, inline="always")
def _line_heights(at, p, i0, g, t, t_first, out):
    """Occluder height (float64) where each line i0 + j of a block crosses column p (row p of the
    transposed occluders ``at``), linear between rows; NaN off the grid or before the line's first
    step. Lines cross the column one row apart, so where they all cross inside it and each
    lies in the row gap after the first one's plus its index (as round-off could move one), they
    read two contiguous runs of it, and the loop vectorises."""
    npp, nq = at.shape
    n = out.size
    col = at[min(max(p, 0), npp - 1)]
    p_in = p >= 0 and p <= npp - 1
    gp = g * p
    fast = p_in and i0 + gp >= 0.0 and i0 + (n - 1) + gp < nq - 1.0
    if fast:
        r0 = int(i0 + gp)
        mismatch = 0
        for j in range(n):
            mismatch += int(i0 + j + gp) != r0 + j
        fast = mismatch == 0
    if fast:
        lower = col[r0:r0 + n]
        upper = col[r0 + 1:r0 + 1 + n]
        for j in range(n):
            fq = (i0 + j + gp) - (r0 + j)
            z = (1.0 - fq) * lower[j] + fq * upper[j] if fq > 0.0 else np.float64(lower[j])
            out[j] = z if t <= t_first[j] else np.nan
        return
    for j in range(n):
        q = i0 + j + gp
        z = np.nan
        # a line along the first or last row (column) misses it by round-off in g p
        # (cos 90 deg is 6e-17, not 0): snap, or edge observers would see no line
        if p_in and q > -_Q_SNAP and q < nq - 1.0 + _Q_SNAP and t <= t_first[j]:
            q = min(max(q, 0.0), nq - 1.0)
            q0 = int(q)
            fq = q - q0
            z = (1.0 - fq) * col[q0] + fq * col[q0 + 1] if fq > 0.0 else np.float64(col[q0])
        out[j] = z


# fastmath without nnan / ninf: NaN marks nodata and -inf "no horizon yet". Fused and
# reciprocal arithmetic moves results by ~1e-6 deg and speeds the kernel up by ~13 %.
@njit(cache=True, parallel=True, fastmath={"contract", "arcp", "nsz"}, error_model="numpy")
def _sweep_kernel(
    at, mx0, mxp, mxq, my0, myp, myq, foot, g, sp, step_len, lag_t,
    h_abs, floor, grad_q, aq, ap, s, oq, op, acc, acc_transposed, i_lo, i_hi, line_block,
):
    """w0 * tan(horizon elevation on the line below) + w1 * (on the line above) of every window observer.

    ``at`` (np, nq) occluder heights (NaN = nodata), transposed: map position of at[p, q] is
    (mx0 + mxp p + mxq q, my0 + myp p + myq q). Samples inside the map rectangle
    ``foot[:4]`` (xmin, xmax, ymin, ymax) but not inside ``foot[4:]`` are ignored
    (see ``_footprint``). Observer (wq, wp) of the window
    sits at occluder coordinates (aq + s (oq + wq), ap + s (op + wp)) at height ``h_abs``
    above the sphere (NaN: not an observer; its ``acc`` is left alone). A sample joins
    an observer's hull only if it is more than ``lag_t`` steps ahead of the observer's column.
    An observer between lines L and L + 1, at lateral offset dq (its q less the line's) from L, takes
    (1 - dq) of line L's result and dq of line L + 1's. The observer is moved onto each line
    along q, at its own p (so at its own step t), and stands there at ``h_abs - dq * grad_q``:
    that move maps its ray onto the line sample for sample, so planar terrain gives every line
    exactly the ray's profile (moving it across the line instead, as once done, would also need
    the height change along p).
    ``acc`` is always in window (row, col) layout: ``acc_transposed`` says the
    kernel's (q, p) are (col, row), so the caller reads it without a transpose.

    Each thread walks a block of ``line_block`` + 1 consecutive lines in lockstep, one
    step (column) at a time, and finishes every observer between them when the walk
    reaches its column: each observer is written once, by one thread, from two hulls
    that are both current, and the block's rows stay in cache from one column to the
    next. A line on a block's edge is walked by both blocks; what an observer gets does
    not depend on which block, window or tile it is computed in. At each step the block's
    lines are sampled in one loop over them, which vectorises: every line gets a ring slot
    (invalid before its first step or off the grid), and the lines read the occluders'
    column p, which ``at`` holds contiguously (see ``_line_heights``).

    Each line's result is floored by the observer's ``floor`` (see ``_floors``).
    """
    npp, nq = at.shape
    nwq, nwp = h_abs.shape
    inv_s = 1.0 / s
    ap_near = ap + s * op
    ap_far = ap + s * (op + nwp - 1)
    to_lo = min(sp * ap_near, sp * ap_far)
    to_hi = max(sp * ap_near, sp * ap_far)
    t_lo = math.floor(to_lo)
    n_lines = line_block + 1
    # strips i_lo - 1 .. i_hi: one more each side than the window's corners need, so that
    # round-off in an observer's strip cannot leave it outside every block
    n_blocks = (i_hi - i_lo + 2 + line_block - 1) // line_block
    # the window's observer rows span q in [qw_lo, qw_hi]
    qw_lo = aq + s * oq
    qw_hi = aq + s * (oq + nwq - 1)
    # scalars: loads from an array in the vectorised loop would need alias checks against its stores
    f0, f1, f2, f3, f4, f5, f6, f7 = foot[0], foot[1], foot[2], foot[3], foot[4], foot[5], foot[6], foot[7]
    for blk in prange(n_blocks):
        i0 = i_lo - 1 + blk * line_block
        t_first = np.empty(n_lines, np.int64)
        t_hi = t_lo
        for j in range(n_lines):
            t_first[j] = _line_t_start(i0 + j, g, nq, npp, sp, to_hi)
            t_hi = max(t_hi, t_first[j])
        t_end = _block_t_end(i0, line_block, g, sp, qw_lo, qw_hi, ap_near, ap_far, t_lo)
        length = t_hi - t_lo + 1
        hx = np.empty((n_lines, length))
        hy = np.empty((n_lines, length))
        sx = np.empty((_RING, n_lines))
        sy = np.empty((_RING, n_lines))
        st = np.empty(_RING, np.int64)
        sv = np.zeros((_RING, n_lines), np.bool_)
        n_hull = np.zeros(n_lines, np.int64)
        guess = np.zeros(n_lines, np.int64)
        n_s = 0
        ins = 0
        s_th = np.zeros(n_lines)
        c_th = np.ones(n_lines)
        ik_prev = np.zeros(n_lines)
        dth_step = np.zeros(n_lines)
        z_line = np.empty(n_lines)
        # observer columns in decreasing t
        if sp > 0:
            wp = nwp - 1
            dwp = -1
        else:
            wp = 0
            dwp = 1
        for t in range(t_hi, t_end - 1, -1):
            p = sp * t
            k = n_s & (_RING - 1)
            st[k] = t
            _line_heights(at, p, i0, g, t, t_first, z_line)
            sxk = sx[k]
            syk = sy[k]
            svk = sv[k]
            # one lane per line, without branches or gathers, so that the loop vectorises
            for j in range(n_lines):
                q = i0 + j + g * p
                x = mx0 + mxp * p + mxq * q
                y = my0 + myp * p + myq * q
                ik = inv_k(x, y)
                # rotate by -dth (small angle; Taylor terms well below float64 precision), from the
                # line's second sample on
                dth = step_len * 0.5 * (ik_prev[j] + ik) / _R
                sd = dth - dth * dth * dth / 6.0
                cd = 1.0 - 0.5 * dth * dth
                s_old = s_th[j]
                c_old = c_th[j]
                rotate = t < t_first[j]
                s_th[j] = s_old * cd - c_old * sd if rotate else s_old
                c_th[j] = c_old * cd + s_old * sd if rotate else c_old
                ik_prev[j] = ik
                dth_step[j] = step_len * ik / _R
                hidden = ((f0 <= x) & (x <= f1) & (f2 <= y) & (y <= f3)
                          & ~((f4 <= x) & (x <= f5) & (f6 <= y) & (y <= f7)))
                z = np.nan if hidden else z_line[j]
                rz = _R + z
                sxk[j] = rz * s_th[j]
                syk[j] = rz * c_th[j]
                svk[j] = np.isfinite(z)
            n_s += 1
            # observers whose column falls at or after this step
            joined = False
            while 0 <= wp < nwp and sp * (ap + s * (op + wp)) >= t:
                joined = True
                po = ap + s * (op + wp)
                t_obs = sp * po
                gp = g * po
                ins = _join_hulls(hx, hy, n_hull, sx, sy, st, sv, ins, n_s, t_obs + lag_t)
                # rows between the block's first and last line (one more each side against
                # round-off; the line below an observer decides which block owns it)
                wq_lo = max(0, math.floor((i0 - 1.0 + gp - aq) * inv_s) - oq)
                wq_hi = min(nwq - 1, math.ceil((i0 + line_block + 1.0 + gp - aq) * inv_s) - oq)
                for wq in range(wq_lo, wq_hi + 1):
                    qo = aq + s * (oq + wq)
                    low = math.floor(qo - gp)
                    if qo - (low + gp) < 0.0:
                        low -= 1
                    elif qo - (low + 1 + gp) >= 0.0:
                        low += 1
                    if low < i0 or low >= i0 + line_block:
                        continue
                    h_obs = h_abs[wq, wp]
                    if not np.isfinite(h_obs):
                        continue
                    grad_obs = grad_q[wq, wp]
                    floor_obs = floor[wq, wp]
                    total = 0.0
                    for line in range(low, low + 2):
                        j = line - i0
                        dq = qo - (line + gp)
                        w = 1.0 - abs(dq)
                        if w <= 0.0:
                            continue
                        hab = h_obs - dq * grad_obs
                        tv = -np.inf
                        if n_hull[j] > 0:
                            # the observer on this line (at its own step), as a central angle from the sample
                            dlt = (t_obs - t) * dth_step[j]
                            # second order: a far-field step is ~6e-4 rad, and the first-order
                            # rotation would lift the observer by R dlt^2 / 2 (up to ~0.6 m)
                            sdl = dlt - dlt * dlt * dlt / 6.0
                            cdl = 1.0 - 0.5 * dlt * dlt
                            so = s_th[j] * cdl + c_th[j] * sdl
                            co = c_th[j] * cdl - s_th[j] * sdl
                            ro = _R + hab
                            xo = ro * so
                            yo = ro * co
                            v = _hull_tangent(hx[j], hy[j], n_hull[j], xo, yo, guess[j])
                            guess[j] = v
                            ddx = hx[j, v] - xo
                            ddy = hy[j, v] - yo
                            fwd = ddx * co - ddy * so
                            up = ddx * so + ddy * co
                            if fwd > 0.0:
                                tv = up / fwd
                        total += w * max(tv, floor_obs)
                    if acc_transposed:
                        acc[wp, wq] = total
                    else:
                        acc[wq, wp] = total
                wp += dwp
            # at a step without observers (before the window's columns), samples that every later
            # observer will have in its hull join now, so that at most lag_t + 3 of them wait in the
            # ring; at a step with observers, their own join has just done so
            if not joined and 0 <= wp < nwp:
                ins = _join_hulls(hx, hy, n_hull, sx, sy, st, sv, ins, n_s, sp * (ap + s * (op + wp)) + lag_t)


def _sweep_frames(terrain_grid, r0, c0, occ_grid, bearing_rad):
    """Kernel geometry for one azimuth: occluder layout, affine maps and observer mapping."""
    dx, dy = math.sin(bearing_rad), math.cos(bearing_rad)
    res = occ_grid.resolution_m
    s = terrain_grid.resolution_m / res
    # fractional occluder (row, col) of pixel (0, 0) of the fine grid; pixel (r, c) is at
    # (a_row + s r, a_col + s c), and the window starts at (r0, c0)
    a_row = (occ_grid.y0_m - terrain_grid.y0_m) / res + 0.5 * s - 0.5
    a_col = (terrain_grid.x0_m - occ_grid.x0_m) / res + 0.5 * s - 0.5
    x00 = occ_grid.x0_m + 0.5 * res
    y00 = occ_grid.y0_m - 0.5 * res
    if abs(dx) >= abs(dy):  # columns primary: q = row, p = col
        return {
            "transpose": False, "mx0": x00, "mxp": res, "mxq": 0.0, "my0": y00, "myp": 0.0, "myq": -res,
            "g": -dy / dx, "sp": 1 if dx > 0 else -1, "step_len": res / abs(dx),
            "aq": a_row, "ap": a_col, "s": s, "oq": r0, "op": c0,
        }
    return {  # rows primary: q = col, p = row
        "transpose": True, "mx0": x00, "mxp": 0.0, "mxq": res, "my0": y00, "myp": -res, "myq": 0.0,
        "g": dx / -dy, "sp": 1 if -dy > 0 else -1, "step_len": res / abs(dy),
        "aq": a_col, "ap": a_row, "s": s, "oq": c0, "op": r0,
    }


@njit(cache=True, parallel=True)
def _near_kernel(z, r0, c0, h_abs, k_scale, inv_k, ir, ic, fr, fc, s_map, out_tan):
    """Largest tan(elevation) over the first samples of the exact ray from each pixel centre.

    The samples (half a pixel apart, bilinear) sit at the same fractional offsets
    (ir + fr, ic + fc) from every pixel, so their weights are shared and the inner
    loop runs along a row without branches. Within a few pixels the parabolic
    curvature term is exact to far below the output precision. NaN heights drop
    out because comparisons with NaN are false.

    float32 throughout (``z``, ``h_abs`` above the sphere, the scale factor
    ``k_scale``, its inverse, ``out_tan``), which vectorises twice as wide: heights
    within 16 km keep millimetres, and tan(elevation) 6e-8 of itself.
    """
    nr, nc = z.shape
    nwr, nwc = h_abs.shape
    nj = ir.shape[0]
    for wr in prange(nwr):
        best = out_tan[wr]
        best[:] = -np.inf
        hab = h_abs[wr]
        ks = k_scale[wr]
        iks = inv_k[wr]
        for j in range(nj):
            r = r0 + wr + ir[j]
            a = fr[j]
            b = fc[j]
            if r < 0 or r + (1 if a > 0.0 else 0) > nr - 1:
                continue
            r1 = r + 1 if a > 0.0 else r
            lo = max(0, -(c0 + ic[j]))
            hi = min(nwc, nc - (1 if b > 0.0 else 0) - (c0 + ic[j]))
            # float32 scalars, or the loop below would be promoted to float64
            w00 = np.float32((1.0 - a) * (1.0 - b))
            w01 = np.float32((1.0 - a) * b)
            w10 = np.float32(a * (1.0 - b))
            w11 = np.float32(a * b)
            inv_s = np.float32(1.0 / s_map[j])
            curv = np.float32(0.5 * s_map[j] / _R)
            cb = 1 if b > 0.0 else 0
            # slices with non-negative loop indices let numba skip negative-index
            # wraparound, so this loop vectorises (about 3x faster)
            cs = c0 + ic[j] + lo
            n = hi - lo
            if n <= 0:
                continue
            z00 = z[r, cs:cs + n]
            z01 = z[r, cs + cb:cs + cb + n]
            z10 = z[r1, cs:cs + n]
            z11 = z[r1, cs + cb:cs + cb + n]
            hb = hab[lo:hi]
            kk = ks[lo:hi]
            ik = iks[lo:hi]
            bb = best[lo:hi]
            for x in range(n):
                h = w00 * z00[x] + w01 * z01[x] + w10 * z10[x] + w11 * z11[x]
                tn = (h - hb[x]) * kk[x] * inv_s - curv * ik[x]
                bb[x] = tn if tn > bb[x] else bb[x]  # noqa: FURB136 - explicit: a NaN tn must lose


# the same few hundred bearings come back for every window: the refinement sweeps 21 small windows
# a run at all K bearings, where building these took 0.23 s of its 3.4 s
@functools.lru_cache(maxsize=8192)
def _near_offsets(bearing_rad, near_px):
    """Shared sample offsets of the exact near ray: integer parts, fractions, map distances
    (shared between calls, so read-only)."""
    n = round(2 * near_px)
    s_px = 0.5 * np.arange(1, n + 1)
    dr = -s_px * math.cos(bearing_rad)
    dc = s_px * math.sin(bearing_rad)
    # snap round-off so axis-aligned rays use exact pixel centres
    dr = np.where(np.abs(dr - np.round(dr)) < 1e-9, np.round(dr), dr)
    dc = np.where(np.abs(dc - np.round(dc)) < 1e-9, np.round(dc), dc)
    ir = np.floor(dr)
    ic = np.floor(dc)
    offsets = ir.astype(np.int64), ic.astype(np.int64), dr - ir, dc - ic, s_px
    for array in offsets:
        array.setflags(write=False)
    return offsets


#: Beyond the fine grid the exact far-field ray steps by this fraction of its
#: distance (at least half a fine pixel): an elevation error from a feature
#: between samples scales with step / distance. Its samples are shared by every
#: observer, so where a ray leaves the fine grid is not a sample: 1% keeps the
#: first far-field samples close enough to the edge (2% gave p99 0.135 deg against
#: the reference's 0.073 deg in the horizon benchmark's far-field case).
_FAR_RAY_REL_STEP = 0.01


def _far_ray_distances(res, cap):
    """Map distances (m) of the far-field ray's samples: every half fine pixel (the
    reference's steps) up to where ``_FAR_RAY_REL_STEP`` of the distance exceeds that,
    then steps of that fraction in whole half fine pixels, so samples fall where the
    reference's do; up to ``cap``."""
    fine_step = 0.5 * res
    out = [fine_step]
    while True:
        step = fine_step * max(1.0, math.floor(_FAR_RAY_REL_STEP * out[-1] / fine_step))
        if out[-1] + step > cap:
            return np.array(out)
        out.append(out[-1] + step)


# reciprocal arithmetic turns the divisions by the pixel sizes into multiplications, and
# numpy's error model (no zero check on each division) lets the loops over a run vectorise
@njit(cache=True, parallel=True, fastmath={"contract", "arcp", "nsz"}, error_model="numpy")
def _far_near_kernel(nr, nc, x0, y0, res, zf, fx0, fy0, fres, r0, c0, h_abs, dx, dy, reach, cap, s_map, row_stride,
                     out_tan):
    """Raise ``out_tan`` (float32, the near ray's values) to the largest tan(elevation) of the far
    field along each observer's exact ray, up to ``max_dist = min(cap, reach / sqrt(sin a))`` for a
    ray leaving the fine grid at the angle a to its edge: two sweep lines a pixel apart cross the
    edge 1 / sin(a) pixels apart, so the smaller the angle the farther the exact ray must reach.
    (Rounding to float32 is monotonic, so the result is the float32 of the float64 maximum.)

    Like the reference: far-field heights (bilinear) only where the ray point lies
    outside the fine grid (``nr`` x ``nc``, corner x0, y0, pixel res), exact curvature,
    and the ground distance integrated with the scale factor (to second order from the
    observer: over the few km the ray covers the next term is below a decimetre). Every
    ray samples the same map distances ``s_map`` (:func:`_far_ray_distances`), so one
    sample is taken for a whole row of observers at a time, in loops without branches
    over the runs of observers whose ray points share a far-field column (no gather, so
    they vectorise); a sample counts for the observers whose ray point is off the fine
    grid and within their ``max_dist``.

    The rays are all in a band along the edges the look direction faces, often a few
    rows: threads take rows ``i * row_stride mod nwr`` (see ``_spread_stride``), so that
    each thread's share of consecutive i spreads over the whole window.
    """
    nwr, nwc = h_abs.shape
    nfr, nfc = zf.shape
    fine_step = 0.5 * res
    # the ray's reach when it leaves through a top or bottom edge, or through a side
    reach_rows = min(cap, reach / math.sqrt(max(abs(dy), 1e-12)))
    reach_cols = min(cap, reach / math.sqrt(max(abs(dx), 1e-12)))
    reach_short = min(reach_rows, reach_cols)
    for i in prange(nwr):
        wr = (i * row_stride) % nwr
        r = r0 + wr
        best = out_tan[wr]
        reach_m = np.empty(nwc)
        r_obs = np.empty(nwc)
        x_obs = np.empty(nwc)
        ik0 = np.empty(nwc)
        dik = np.empty(nwc)
        fc_b = np.empty(nwc)
        k_b = np.empty(nwc, np.int64)
        yo = y0 - (r + 0.5) * res
        row_reach = 0.0
        # the columns of observers with samples up to reach_short, and of those with samples beyond
        any_lo, any_hi, long_lo, long_hi = nwc, -1, nwc, -1
        for wc in range(nwc):
            c = c0 + wc
            # distance at which the ray leaves the grid of fine pixel centres, and its reach
            s_exit = np.inf
            reach_m[wc] = reach_rows
            if dy > 1e-12:
                s_exit = r * res / dy
            elif dy < -1e-12:
                s_exit = (nr - 1 - r) * res / -dy
            s_col = np.inf
            if dx > 1e-12:
                s_col = (nc - 1 - c) * res / dx
            elif dx < -1e-12:
                s_col = c * res / -dx
            if s_col < s_exit:
                s_exit = s_col
                reach_m[wc] = reach_cols
            if not np.isfinite(h_abs[wr, wc]) or s_exit > reach_m[wc] + fine_step:
                reach_m[wc] = -1.0  # no sample
            row_reach = max(row_reach, reach_m[wc])
            if reach_m[wc] >= 0.0:
                any_lo = min(any_lo, wc)
                any_hi = wc
                if reach_m[wc] > reach_short:
                    long_lo = min(long_lo, wc)
                    long_hi = wc
            r_obs[wc] = _R + h_abs[wr, wc]
            x_obs[wc] = x0 + (c + 0.5) * res
            ik0[wc] = inv_k(x_obs[wc], yo)
            dik[wc] = -(x_obs[wc] * dx + yo * dy) * ik0[wc] * ik0[wc] / (2.0 * _R * _R)
        for j in range(s_map.size):
            s = s_map[j]
            if s > row_reach:
                break
            y = yo + s * dy
            row_out = (y0 - y) / res - 0.5
            row_out = row_out < 0.0 or row_out > nr - 1
            # observers whose sample may be off the grid by a column (one more each side
            # against round-off; the test in the loop decides)
            lo, hi = 0, nwc
            if not row_out:
                if dx > 1e-12:
                    lo = max(0, math.floor(nc - 1.0 - s * dx / res) - c0)
                elif dx < -1e-12:
                    hi = min(nwc, math.ceil(-s * dx / res) + 1 - c0)
                else:
                    continue
            # and whose ray reaches this far
            if s > reach_short:
                lo, hi = max(lo, long_lo), min(hi, long_hi + 1)
            else:
                lo, hi = max(lo, any_lo), min(hi, any_hi + 1)
            if lo >= hi:
                continue
            fr = (fy0 - y) / fres - 0.5
            if fr < 0.0 or fr > nfr - 1:
                continue
            i0 = min(int(fr), nfr - 2)
            wf = fr - i0
            z_top = zf[i0]
            z_bottom = zf[i0 + 1]
            # each observer's far-field column k; over a run of equal k the bilinear weights
            # need no gather, so the loop over the run vectorises
            for wc in range(lo, hi):
                fc = (x_obs[wc] + s * dx - fx0) / fres - 0.5
                fc_b[wc] = fc
                k_b[wc] = min(max(int(fc), 0), nfc - 2)
            a = lo
            while a < hi:
                k = k_b[a]
                b = a + 1
                while b < hi and k_b[b] == k:
                    b += 1
                top0 = z_top[k]
                d_top = z_top[k + 1] - top0
                bottom0 = z_bottom[k]
                d_bottom = z_bottom[k + 1] - bottom0
                # views from a: loop indices from 0 let numba drop negative-index wraparound
                xs, fcs, iks, diks = x_obs[a:b], fc_b[a:b], ik0[a:b], dik[a:b]
                ros, reach_s, bs = r_obs[a:b], reach_m[a:b], best[a:b]
                for n in range(b - a):
                    cc = (xs[n] + s * dx - x0) / res - 0.5
                    fc = fcs[n]
                    wc_f = fc - k
                    top = top0 + wc_f * d_top
                    bottom = bottom0 + wc_f * d_bottom
                    rt = _R + top + wf * (bottom - top)
                    psi = s * (iks[n] + 0.5 * diks[n] * s)
                    theta = psi / _R
                    # four series terms, double precision while theta < 0.1 (cap < 170 km): sin_small's
                    # ten and a square root would cost this kernel a quarter more
                    t2 = theta * theta
                    sin_t = theta * (1.0 - t2 / 6.0 * (1.0 - t2 / 20.0 * (1.0 - t2 / 42.0)))
                    cos_t = 1.0 - t2 / 2.0 * (1.0 - t2 / 12.0 * (1.0 - t2 / 30.0))
                    tn = (rt * cos_t - ros[n]) / (rt * sin_t)
                    use = (s <= reach_s[n]) & (row_out | (cc < 0.0) | (cc > nc - 1)) & (fc >= 0.0) & (fc <= nfc - 1)
                    # a NaN height (nodata) loses the comparison
                    bs[n] = tn if use & (tn > bs[n]) else bs[n]
                a = b


def _spread_stride(n):
    """A stride coprime with n near n / golden ratio: i -> i * stride mod n visits 0..n-1
    once each, and any run of consecutive i spreads evenly over them."""
    stride = max(1, round(n * 0.6180339887498949))
    while math.gcd(stride, n) != 1:
        stride += 1
    return stride


@njit(cache=True, parallel=True)
def _resample_ring(zf, fx0, fy0, fres, x0, y0, res, pad, out):
    """Fill the ring ``pad`` pixels wide around ``out``'s centre with the far field's bilinear
    heights at the pixel centres (grid corner x0, y0, pixel res)."""
    nr, nc = out.shape
    for r in prange(nr):
        inside_rows = pad <= r < nr - pad
        y = y0 - (r + 0.5) * res
        for c in range(nc):
            if inside_rows and pad <= c < nc - pad:
                continue
            x = x0 + (c + 0.5) * res
            out[r, c] = bilinear(zf, (fy0 - y) / fres - 0.5, (x - fx0) / fres - 0.5)


def _refined(terrain, factor):
    """``terrain`` on a grid ``factor`` times finer whose pixel centres include the original ones,
    from the first to the last: its bilinear surface is the original's."""
    if factor == 1:
        return terrain
    g = terrain.grid
    res = g.resolution_m / factor
    nr, nc = terrain.shape
    grid = Grid(g.x0_m + 0.5 * (g.resolution_m - res), g.y0_m - 0.5 * (g.resolution_m - res), res,
                (factor * (nr - 1) + 1, factor * (nc - 1) + 1))
    z = np.empty(grid.shape, np.float32)
    _resample_ring(np.ascontiguousarray(terrain.height_m, dtype=np.float32), g.x0_m, g.y0_m, g.resolution_m,
                   grid.x0_m, grid.y0_m, res, max(grid.shape), z)  # a ring that wide: every pixel
    return Terrain(z, grid, terrain.provenance)


def _with_far_ring(terrain, far_field):
    """``terrain`` grown by a ring of the far field resampled onto its pixels (see the
    module docstring), and the ring's width in pixels."""
    grid = terrain.grid
    pad = math.ceil(FAR_PAD_PX * far_field.grid.resolution_m / grid.resolution_m)
    nr, nc = terrain.shape
    padded = Grid(grid.x0_m - pad * grid.resolution_m, grid.y0_m + pad * grid.resolution_m, grid.resolution_m,
                  (nr + 2 * pad, nc + 2 * pad))
    z = np.empty(padded.shape, np.float32)
    z[pad:pad + nr, pad:pad + nc] = terrain.height_m
    fg = far_field.grid
    _resample_ring(np.ascontiguousarray(far_field.height_m, dtype=np.float32), fg.x0_m, fg.y0_m, fg.resolution_m,
                   padded.x0_m, padded.y0_m, padded.resolution_m, pad, z)
    return Terrain(z, padded, terrain.provenance), pad


@njit(cache=True, parallel=True)
def _store(acc, near_tan, valid, stage):
    """Combine the sweeps and the near ray into degrees in one contiguous staging plane."""
    nr, nc = valid.shape
    for r in prange(nr):
        for c in range(nc):
            stage[r, c] = _atan_deg(max(acc[r, c], near_tan[r, c])) if valid[r, c] else np.nan


@njit(cache=True, inline="always")
def _atan_deg(x):
    """atan(x) in degrees within 3e-6 deg, with no libm call, so the storing loop vectorises."""
    return 57.29577951308232 * atan2(x, 1.0)


@njit(cache=True, parallel=True)
def _flush(stage, n, out, k0):
    """Copy n staged azimuth planes into out[:, :, k0:k0 + n].

    Blocks of ``_FLUSH_BLOCK`` pixels keep the strided writes of one block in
    the L1 cache while each plane is read contiguously.
    """
    _, nr, nc = stage.shape
    for r in prange(nr):
        for cb in range(0, nc, _FLUSH_BLOCK):
            ce = min(cb + _FLUSH_BLOCK, nc)
            for j in range(n):
                plane = stage[j, r]
                k = k0 + j
                for c in range(cb, ce):
                    out[r, c, k] = plane[c]


def _lateral_gradients(z):
    """Central-difference height gradients per pixel along rows and columns (0 where undefined)."""
    gr = np.zeros_like(z)
    gc = np.zeros_like(z)
    if z.shape[0] > 2:
        gr[1:-1] = 0.5 * (z[2:] - z[:-2])
    if z.shape[1] > 2:
        gc[:, 1:-1] = 0.5 * (z[:, 2:] - z[:, :-2])
    if z.shape[0] > 1:
        gr[0] = z[1] - z[0]
        gr[-1] = z[-1] - z[-2]
    if z.shape[1] > 1:
        gc[:, 0] = z[:, 1] - z[:, 0]
        gc[:, -1] = z[:, -1] - z[:, -2]
    gr[~np.isfinite(gr)] = 0.0
    gc[~np.isfinite(gc)] = 0.0
    return gr, gc


#: An empty (xmin > xmax) footprint rectangle.
_NO_FOOTPRINT = [1.0, -1.0, 1.0, -1.0]


def _footprint(grid, grow_px):
    """(xmin, xmax, ymin, ymax) of the grid's pixel centres, grown by ``grow_px`` pixels."""
    res = grid.resolution_m
    nr, nc = grid.shape
    return [grid.x0_m + (0.5 - grow_px) * res, grid.x0_m + (nc - 0.5 + grow_px) * res,
            grid.y0_m - (nr - 0.5 + grow_px) * res, grid.y0_m - (0.5 - grow_px) * res]


class _Observers(NamedTuple):
    """The observers of a sweep: window (r0, c0) onward of ``grid``, and per layout
    (False: (row, col); True: transposed) their heights above the sphere, ground heights
    (float32), bare-sphere floors (``continuation_tan`` at exit 0, float32) and lateral
    height gradients, and a float32 buffer for the floors along the bearing being swept
    (see ``_floors``)."""

    grid: Grid
    r0: int
    c0: int
    arrays: dict
    floors: dict


def _observers(grid, r0, c0, ground_m, observer_height_m, grad_row, grad_col):
    with np.errstate(invalid="ignore"):
        tan_dip = continuation_tan(ground_m, observer_height_m, 0.0)
    # ground heights and tan_dip only serve the floors, which are float32 (see _floor_tan)
    layers = (ground_m + observer_height_m, ground_m.astype(np.float32), tan_dip.astype(np.float32))
    arrays = {False: tuple(np.ascontiguousarray(v) for v in layers + (grad_row,)),
              True: tuple(np.ascontiguousarray(v.T) for v in layers + (grad_col,))}
    return _Observers(grid, r0, c0, arrays, {t: np.empty(arrays[t][0].shape, np.float32) for t in arrays})


@njit(cache=True, parallel=True, error_model="numpy")
def _floors(ground, tan_dip, r0, c0, transposed, x0, y0, res, bearing_lines, observer_height_m, out):
    """Each observer's floor looking along a bearing: ``continuation_tan`` at the distance
    where the search leaves the grids (``bearing_lines``: see ``_floor_tan``). Observer (i, j) of the layout
    is pixel (r0 + i, c0 + j) of the grid (x0, y0, res), or (r0 + j, c0 + i) if ``transposed``."""
    ni, nj = ground.shape
    # map position of observer (i, j): (xi + i dxi + j dxj, yi + i dyi + j dyj)
    xi, yi = x0 + (c0 + 0.5) * res, y0 - (r0 + 0.5) * res
    dxi, dxj, dyi, dyj = (res, 0.0, 0.0, -res) if transposed else (0.0, res, -res, 0.0)
    # scalars, so that the stores to out cannot alias them and the inner loop vectorises
    lines = (bearing_lines[0], bearing_lines[1], bearing_lines[2], bearing_lines[3], bearing_lines[4],
             bearing_lines[5], bearing_lines[6], bearing_lines[7])
    for i in prange(ni):
        g = ground[i]
        td = tan_dip[i]
        o = out[i]
        for j in range(nj):
            o[j] = _floor_tan(xi + i * dxi + j * dxj, yi + i * dyi + j * dyj, lines, g[j], observer_height_m, td[j])


def _sweep(oz, ozt, ogrid, foot, lag_m, observers, bearing_rad, box, observer_height_m, acc):
    """``_sweep_kernel`` of ``observers`` over the occluder heights ``oz`` (``ozt``: transposed) on ``ogrid``."""
    f = _sweep_frames(observers.grid, observers.r0, observers.c0, ogrid, bearing_rad)
    lag_t = max(0.0, lag_m / f["step_len"] - 0.5)
    if lag_t > _RING - 4:
        raise ValueError(f"near field of {lag_t:.0f} steps exceeds the sweep's sample ring ({_RING})")
    tr = f["transpose"]
    h_o, ground_o, td, grad = observers.arrays[tr]
    floor = observers.floors[tr]
    g = observers.grid
    _floors(ground_o, td, observers.r0, observers.c0, tr, g.x0_m, g.y0_m, g.resolution_m,
            exit_lines(math.sin(bearing_rad), math.cos(bearing_rad), box), observer_height_m, floor)
    nwq, nwp = h_o.shape
    corners = [(f["aq"] + f["s"] * (f["oq"] + wq)) - f["g"] * (f["ap"] + f["s"] * (f["op"] + wp))
               for wq in (0, nwq - 1) for wp in (0, nwp - 1)]
    i_lo, i_hi = math.floor(min(corners)), math.floor(max(corners)) + 1
    _sweep_kernel(
        oz if tr else ozt, f["mx0"], f["mxp"], f["mxq"], f["my0"], f["myp"], f["myq"], foot, f["g"], f["sp"],
        f["step_len"], lag_t, h_o, floor, grad, f["aq"], f["ap"], f["s"], f["oq"], f["op"],
        acc, tr, i_lo, i_hi, _line_block(i_hi - i_lo + 2, numba.get_num_threads()),
    )


def _line_block(n_gaps, n_threads):
    """Gaps per block for a window whose lines span ``n_gaps``: ``_LINE_BLOCK``, or fewer (at least 2)
    so that each thread gets two blocks. A small window (a landing area scanned by the refinement)
    is crossed by one or two 16-gap blocks, which left a thread idle; a block of g gaps walks g + 1
    lines, so smaller blocks walk more lines in all, and are used only there. What an observer gets
    does not depend on its block."""
    return min(_LINE_BLOCK, max(2, -(-n_gaps // (2 * n_threads))))


# --------------------------------------------------------------------------- far field
#
# Every far-field sample the far sweep reads lies FAR_PAD_PX far pixels or more from
# every observer, so its horizon changes little from one fine pixel to the next, except
# with the observer's own height: tan(elevation) of one far point is linear in it, with
# slope -1 / distance. The far field is therefore swept from a lattice of observers
# ``FAR_OBSERVER_SPACING`` swept far pixels apart, each at ``FAR_HEIGHT_LEVELS`` ground heights
# spanning those of the fine pixels around it, and each fine pixel interpolates its value
# linearly in its own height and bilinearly between the four nodes around it: tens of
# times fewer observers than pixels. The lattice is anchored on the terrain's pixel
# (0, 0), so a pixel gets the same value whichever tile it is computed in.

#: The far field is swept on a grid this many times finer (same bilinear surface), so that
#: its sweep lines are that much closer than its pixels.
FAR_SWEEP_REFINE = 2

#: Spacing of the far field's observer lattice, in pixels of the refined far field.
FAR_OBSERVER_SPACING = 0.5

#: Ground heights per lattice node, from the least to the greatest of the fine pixels
#: that interpolate from it.
FAR_HEIGHT_LEVELS = 4


@njit(cache=True)
def _node_ranges(z, step, n0, m0, lo, hi):
    """Least and greatest finite height of ``z`` within ``step`` - 1 pixels of each lattice
    node (n0 + i, m0 + j), at pixel (step (n0 + i), step (m0 + j)); NaN if none."""
    nr, nc = z.shape
    for i in range(lo.shape[0]):
        rc = step * (n0 + i)
        for j in range(lo.shape[1]):
            cc = step * (m0 + j)
            a = np.inf
            b = -np.inf
            for r in range(max(0, rc - step + 1), min(nr, rc + step)):
                for c in range(max(0, cc - step + 1), min(nc, cc + step)):
                    v = z[r, c]
                    if v == v:
                        a = min(a, v)
                        b = max(b, v)
            lo[i, j] = a if a <= b else np.nan
            hi[i, j] = b if a <= b else np.nan


@njit(cache=True, parallel=True)
def _far_at_pixels(acc, lo, scale, step, n0, m0, r0, c0, ground, out):
    """Raise each window pixel's ``out`` (tan elevation) to its far-field value from the
    lattice's ``acc`` (level, node row, node col): linear in its ground height between the
    levels of each of the four nodes around it (level ``(h - lo) * scale``, clamped),
    bilinear between the nodes. Nodes without levels (no terrain around them) must hold
    zeros: they are read, with weight 0."""
    n_lev = acc.shape[0]
    top = n_lev - 1.0
    k_top = max(n_lev - 2, 0)
    nwr, nwc = ground.shape
    jj = np.empty(nwc, np.int64)
    fj = np.empty(nwc)
    for wc in range(nwc):
        v = c0 + wc - step * m0
        jj[wc] = v // step
        fj[wc] = (v - jj[wc] * step) / step
    for wr in prange(nwr):
        u = r0 + wr - step * n0
        i = u // step
        fi = (u - i * step) / step
        # the last node row or column is read with weight 0 when a pixel sits on it
        i1 = min(i + 1, acc.shape[1] - 1)
        for wc in range(nwc):
            j = jj[wc]
            j1 = min(j + 1, acc.shape[2] - 1)
            h = ground[wr, wc]
            if h != h:  # nodata: no observer (and no index to read from)
                continue
            total = 0.0
            for a, b, w in ((i, j, (1.0 - fi) * (1.0 - fj[wc])), (i, j1, (1.0 - fi) * fj[wc]),
                            (i1, j, fi * (1.0 - fj[wc])), (i1, j1, fi * fj[wc])):
                x = min(max((h - lo[a, b]) * scale[a, b], 0.0), top)
                k = min(int(x), k_top)
                value = acc[k, a, b]
                if n_lev > 1:
                    value += (x - k) * (acc[k + 1, a, b] - value)
                total += w * value
            out[wr, wc] = max(out[wr, wc], total)


class _FarLattice:
    """The far field's observers (see the section comment) for window rows r0.., cols c0..
    (``nwr`` x ``nwc``) of the terrain ``near_z`` on ``near_grid``."""

    def __init__(self, near_grid, near_z, r0, c0, nwr, nwc, far_resolution_m, observer_height_m):
        res = near_grid.resolution_m
        self.step = step = max(1, int(FAR_OBSERVER_SPACING * far_resolution_m / res + 1e-9))
        self.n0, self.m0 = r0 // step, c0 // step
        self.r0, self.c0 = r0, c0
        shape = (-(-(r0 + nwr - 1) // step) - self.n0 + 1, -(-(c0 + nwc - 1) // step) - self.m0 + 1)
        lo, hi = np.empty(shape), np.empty(shape)
        _node_ranges(near_z, step, self.n0, self.m0, lo, hi)
        # node (i, j) sits on terrain pixel (step (n0 + i), step (m0 + j)) (possibly beyond its edge)
        grid = Grid(near_grid.x0_m + (step * self.m0 + 0.5 - 0.5 * step) * res,
                    near_grid.y0_m - (step * self.n0 + 0.5 - 0.5 * step) * res, step * res, shape)
        zero = np.zeros(shape, np.float32)  # float32, as the terrain's gradients: one compiled sweep kernel
        n_levels = FAR_HEIGHT_LEVELS if step > 1 else 1  # a node per pixel: its own height
        self.levels = [_observers(grid, 0, 0, lo + (hi - lo) * (k / max(1, n_levels - 1)), observer_height_m,
                                  zero, zero) for k in range(n_levels)]
        # nodes without terrain around them are no observers: the sweep leaves their zeros
        self.acc = np.zeros((n_levels,) + shape)
        self.lo = np.nan_to_num(lo)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.scale = np.where(hi > lo, (n_levels - 1) / (hi - lo), 0.0)

    def raise_to_far_field(self, far_z, far_zt, far_grid, foot, bearing_rad, box, observer_height_m, ground, out):
        """Raise ``out`` (tan elevation of the window's pixels at ground heights ``ground``)
        to the far field's horizon along ``bearing_rad``."""
        for level, acc in zip(self.levels, self.acc):
            _sweep(far_z, far_zt, far_grid, foot, 0.0, level, bearing_rad, box, observer_height_m, acc)
        _far_at_pixels(self.acc, self.lo, self.scale, self.step, self.n0, self.m0, self.r0, self.c0, ground, out)


def sweep_horizon(terrain, n_azimuths, observer_height_m, rows, cols, far_field, progress, out=None):
    """Horizon (degrees, float32 (rows, cols, K)) of the window's observers, into ``out`` if
    given (checked by ``horizon_map``); see ``horizon_map``.

    Per azimuth: the exact ray within ``NEAR_RAY_PX`` pixels, the sweep over ``terrain``
    (grown by the ring of resampled ``far_field``, see the module docstring) beyond
    it, and the sweep over ``far_field`` outside that (from a lattice of observers, see
    ``_FarLattice``). The largest of these, floored by the terrain beyond the grids
    (see ``continuation_tan``).
    """
    observer_height_m = float(observer_height_m)
    r0, r1, c0, c1 = window_slices(terrain.shape, rows, cols)
    # where a search leaves the supplied grids (their bounding box), for the continuation floor
    box = np.array(exit_box(terrain.grid, None if far_field is None else far_field.grid))
    # the exact near ray reads the terrain itself, and the far field by its own ray beyond
    # the terrain's pixel centres, as the reference does
    near_z = np.ascontiguousarray(terrain.height_m, dtype=np.float32)
    near_r0, near_c0, near_grid = r0, c0, terrain.grid
    if far_field is not None:
        terrain, pad = _with_far_ring(terrain, far_field)
        r0, r1, c0, c1 = r0 + pad, r1 + pad, c0 + pad, c1 + pad
    grid = terrain.grid
    # occluder heights stay float32 (as stored); observer geometry is float64 because
    # R + h in float32 would lose 0.1 m
    z = np.ascontiguousarray(terrain.height_m, dtype=np.float32)
    zt = np.ascontiguousarray(z.T)
    hg = z[r0:r1, c0:c1].astype(np.float64)
    # the observers' own lateral slopes, from the terrain alone (not across its edge into the ring):
    # their window and the pixels around it (a small window of a large DEM, as the refinement
    # scans, took 13 ms for the whole DEM's)
    around_r0, around_c0 = max(near_r0 - 1, 0), max(near_c0 - 1, 0)
    grad_row, grad_col = _lateral_gradients(near_z[around_r0:near_r0 + (r1 - r0) + 1,
                                                   around_c0:near_c0 + (c1 - c0) + 1])
    window = (slice(near_r0 - around_r0, near_r0 - around_r0 + (r1 - r0)),
              slice(near_c0 - around_c0, near_c0 - around_c0 + (c1 - c0)))
    pixels = _observers(grid, r0, c0, hg, observer_height_m, grad_row[window], grad_col[window])
    h_abs = pixels.arrays[False][0]
    valid = np.isfinite(h_abs)
    xw, yw = grid.xy(slice(r0, r1), slice(c0, c1))
    k_scale = 1.0 + (xw * xw + yw * yw) / (4.0 * _R * _R)
    # the near ray's inputs and output in float32 (see _near_kernel)
    near_args = (h_abs.astype(np.float32), k_scale.astype(np.float32), (1.0 / k_scale).astype(np.float32))
    near_tan = np.full(h_abs.shape, -np.inf, np.float32)
    terrain_foot = np.array(_NO_FOOTPRINT * 2)
    acc = np.empty(h_abs.shape)  # every valid observer's value is written by the sweep
    if far_field is not None:
        # Between the terrain's outer pixel centres and the ring's first ones a sample would mix
        # terrain and far-field heights where the reference reads the far field alone: leave
        # that one-pixel band out (the near ray covers it close by; far off it is within a
        # pixel of ring samples of the same smooth far field).
        terrain_foot = np.array(_footprint(near_grid, 1.0 - 1e-6) + _footprint(near_grid, 1e-6))  # round-off
        fz = np.ascontiguousarray(far_field.height_m, dtype=np.float32)
        # every far sample outside the grown footprint is FAR_PAD_PX far pixels away or more: no lag
        far_foot = np.array(_footprint(grid, 0.0) + _NO_FOOTPRINT)
        swept = _refined(far_field, FAR_SWEEP_REFINE)
        sz = np.ascontiguousarray(swept.height_m, dtype=np.float32)
        szt = np.ascontiguousarray(sz.T)
        lattice = _FarLattice(near_grid, near_z, near_r0, near_c0, r1 - r0, c1 - c0, swept.grid.resolution_m,
                              observer_height_m)
        row_stride = _spread_stride(h_abs.shape[0])
        far_ray_m = _far_ray_distances(near_grid.resolution_m, FAR_PAD_PX * far_field.grid.resolution_m)
    bearings = np.radians(bearings_deg(n_azimuths))
    if out is None:
        out = np.empty((r1 - r0, c1 - c0, len(bearings)), np.float32)
    # azimuth planes are staged and copied out a few at a time: writing out[:, :, k] for one
    # k at a time touches a new cache line per pixel
    stage = np.empty((min(_STAGE, len(bearings)),) + h_abs.shape, np.float32)
    for k, b in enumerate(bearings):
        _sweep(z, zt, grid, terrain_foot, NEAR_RAY_PX * grid.resolution_m, pixels, b, box, observer_height_m, acc)
        ir, ic, fr, fc, s_px = _near_offsets(b, NEAR_RAY_PX)
        _near_kernel(near_z, near_r0, near_c0, *near_args, ir, ic, fr, fc, s_px * grid.resolution_m, near_tan)
        if far_field is not None:
            lattice.raise_to_far_field(sz, szt, swept.grid, far_foot, b, box, observer_height_m, hg, acc)
            fg = far_field.grid
            _far_near_kernel(
                near_z.shape[0], near_z.shape[1], near_grid.x0_m, near_grid.y0_m, near_grid.resolution_m, fz,
                fg.x0_m, fg.y0_m, fg.resolution_m, near_r0, near_c0, h_abs, math.sin(b), math.cos(b),
                FAR_RAY_PX * grid.resolution_m, FAR_PAD_PX * fg.resolution_m, far_ray_m, row_stride, near_tan,
            )
        j = k % len(stage)
        _store(acc, near_tan, valid, stage[j])
        if j == len(stage) - 1 or k == len(bearings) - 1:
            _flush(stage, j + 1, out, k - j)
        if progress is not None:
            progress(k + 1, len(bearings))
    return out
