"""Exact visibility layers: every time step, decided cell by cell."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ..constants import SUN_RADIUS_M
from ..ephemeris import Track
from ..terrain.model import Terrain
from .binned import _BINNED_KEY_DEG, _binned_sum, _binned_tables
from .nodes import _bearing_cos_sin, _margin, _pixel_thresholds, _Pixels
from .track import _CELL_LEVELS, _BodySteps, _round32


#: Cells are decided only when their keys clear the threshold's range by this
#: much (deg), so that rounding cannot make a cell disagree with its steps.
_CELL_EPS_DEG = 1e-9


@njit(cache=True)
def _bin_ranges(lam_e, delta_e, slope_e, first, used, lo, hi):
    """Least and largest threshold over each used bin [j w, (j + 1) w] (w = 360 / used.size)
    of the threshold table (``lam_e``, ``delta_e``, ``slope_e``, ``first``: see ``_threshold_table``)."""
    n_bins = used.size
    w = 360.0 / n_bins
    per_table_bin = first.size / 360.0
    for j in range(n_bins):
        if not used[j]:
            continue
        x0 = j * w
        x1 = x0 + w
        # the last node at or before x0, from the table's bin that holds x0 (no search; the
        # step back only ever runs if rounding put x0 in the next bin)
        i = first[min(np.int64(x0 * per_table_bin), first.size - 1)]
        while i > 0 and lam_e[i] > x0:
            i -= 1
        while lam_e[i + 1] <= x0:
            i += 1
        v = delta_e[i] + slope_e[i] * (x0 - lam_e[i])
        mn = v
        mx = v
        i += 1
        while lam_e[i] < x1:
            mn = min(mn, delta_e[i])
            mx = max(mx, delta_e[i])
            i += 1
        v = delta_e[i - 1] + slope_e[i - 1] * (x1 - lam_e[i - 1])
        lo[j] = min(mn, v)
        hi[j] = max(mx, v)


@njit(cache=True, inline="always")
def _cell_state(kmin, kmax, lo, hi):
    """1 if every key of a cell (``kmin``..``kmax``) lies below the threshold's least value
    over its bin (visible throughout), 0 if at or above its largest (hidden), -1 if undecided."""
    if kmax < lo - _CELL_EPS_DEG:
        return 1
    if kmin >= hi + _CELL_EPS_DEG:
        return 0
    return -1


@njit(cache=True, inline="always")
def _extend(runs, n, visible, long_gap_steps):
    """``runs`` = (visible steps, current hidden run, current visible run, longest hidden,
    longest visible, hidden runs of at least ``long_gap_steps`` ended so far) after n more
    steps that are all visible or all hidden."""
    n_vis, run_off, run_on, longest_off, longest_on, n_long = runs
    if visible:
        if run_off >= long_gap_steps:
            n_long += 1
        run_on += n
        return n_vis + n, 0, run_on, longest_off, max(longest_on, run_on), n_long
    run_off += n
    return n_vis, run_off, 0, max(longest_off, run_off), longest_on, n_long


@njit(cache=True, inline="always")
def _extend_one(runs, visible, long_gap_steps):
    """``_extend`` by one step, without a branch: the steps scanned one by one lie near a
    rise or set, where a branch on ``visible`` would often be mispredicted (the cells,
    long runs in one state, are faster with it)."""
    n_vis, run_off, run_on, longest_off, longest_on, n_long = runs
    v = np.int64(visible)
    n_long += v * np.int64(run_off >= long_gap_steps)
    run_on = (run_on + 1) * v
    run_off = (run_off + 1) * (1 - v)
    return n_vis + v, run_off, run_on, max(longest_off, run_off), max(longest_on, run_on), n_long


@njit(cache=True)
def _scan(lam_e, delta_e, slope_e, first, steps, cells_a, cells_b, a_first_b, lo_a, hi_a, lo_b, hi_b,
          long_gap_steps, until_seen):
    """Exact pass over every time step for one pixel and body, decided cell by cell.

    ``margin = delta(lam_t) - key_t`` (deg) is > 0 when the body is visible. A
    first-level cell whose keys all lie below the threshold's least value over
    its bin is visible throughout; one whose keys all lie at or above its
    largest value is hidden throughout. Other cells are tried at the second
    level, and what is still undecided is evaluated step by step. Every step is
    thus counted as the per-step evaluation would count it: this is exact, not
    an approximation.

    ``steps`` (T, 3) holds each step's longitude, key and longitude bin side by
    side. Returns (visible steps, longest hidden run, longest visible run, hidden
    runs of at least ``long_gap_steps``); with ``until_seen``, (visible steps so far,
    -1, -1, -1) as soon as a first-level cell holds a visible step.
    """
    a_start, a_bin, a_kmin, a_kmax = cells_a
    b_start, b_bin, b_kmin, b_kmax = cells_b
    runs = (0, 0, 0, 0, 0, 0)
    for a in range(a_bin.size):
        state = _cell_state(a_kmin[a], a_kmax[a], lo_a[a_bin[a]], hi_a[a_bin[a]])
        if state >= 0:
            runs = _extend(runs, a_start[a + 1] - a_start[a], state == 1, long_gap_steps)
            continue
        kmin_a = a_kmin[a]
        kmax_a = a_kmax[a]
        for b in range(a_first_b[a], a_first_b[a + 1]):
            j = b_bin[b]
            # the first-level cell's keys bound its second-level cells' keys: most cells are decided
            # by those alone, without reading their own
            state = _cell_state(kmin_a, kmax_a, lo_b[j], hi_b[j])
            if state < 0:
                state = _cell_state(b_kmin[b], b_kmax[b], lo_b[j], hi_b[j])
            if state >= 0:
                runs = _extend(runs, b_start[b + 1] - b_start[b], state == 1, long_gap_steps)
                continue
            lo = lo_b[j] - _CELL_EPS_DEG
            hi = hi_b[j] + _CELL_EPS_DEG
            for t in range(b_start[b], b_start[b + 1]):
                key = steps[t, 1]
                # a step whose key clears the cell's threshold range needs no table lookup: _cell_state
                # for a single key, written out with its bounds hoisted (calling it was 1-7% slower)
                if key < lo:
                    seen = True
                elif key >= hi:
                    seen = False
                else:
                    seen = _margin(lam_e, delta_e, slope_e, first, steps[t, 0], np.int64(steps[t, 2]), key) > 0.0
                runs = _extend_one(runs, seen, long_gap_steps)
        if until_seen and runs[0] > 0:
            return runs[0], -1, -1, -1
    n_vis, run_off, _, longest_off, longest_on, n_long = runs
    if run_off >= long_gap_steps:
        n_long += 1
    return n_vis, longest_off, longest_on, n_long


@njit(cache=True)
def _body_counts(table, body, long_gap_steps, until_seen):
    """The exact scan of one body's track (``_BodySteps.scan_args``) against one pixel's
    threshold curve ``table`` (``_threshold_table``); returns :func:`_scan`'s counts.
    A threshold that clears the whole track's key range decides every step at once."""
    lam_e, delta_e, slope_e, first = table
    steps = body[0]
    cells_a = (body[1], body[2], body[3], body[4])
    cells_b = (body[5], body[6], body[7], body[8])
    a_first_b, used_a, used_b = body[9], body[10], body[11]
    lo_a = np.empty(used_a.size)
    hi_a = np.empty(used_a.size)
    _bin_ranges(lam_e, delta_e, slope_e, first, used_a, lo_a, hi_a)
    lo_all = np.inf
    hi_all = -np.inf
    for j in range(used_a.size):
        if used_a[j]:
            lo_all = min(lo_all, lo_a[j])
            hi_all = max(hi_all, hi_a[j])
    n = steps.shape[0]
    state = _cell_state(body[12], body[13], lo_all, hi_all)
    if state == 1:
        return n, 0, n, 0
    if state == 0:
        return 0, n, 0, 1 if n >= long_gap_steps else 0
    lo_b = np.empty(used_b.size)
    hi_b = np.empty(used_b.size)
    _bin_ranges(lam_e, delta_e, slope_e, first, used_b, lo_b, hi_b)
    return _scan(lam_e, delta_e, slope_e, first, steps, cells_a, cells_b, a_first_b, lo_a, hi_a, lo_b, hi_b,
                 long_gap_steps, until_seen)


#: Pixels whose lower bounds (:func:`_block_bounds`) one thread computes together: the lanes
#: of a loop that vectorises across pixels (0.35 ns per pixel and cell, against 2.9 ns for
#: one pixel's loop).
_BOUND_LANES = 128


@njit(cache=True)
def _first_level_ranges(table, body, lo, hi, lane):
    """The threshold's least and largest values over each used first-level bin of ``body``
    (``_BodySteps.scan_args``), less and plus ``_CELL_EPS_DEG``, into column ``lane`` of
    ``lo`` and ``hi`` (float32, used bins x lanes), rounded outwards."""
    lam_e, delta_e, slope_e, first = table
    used = body[10]
    lo_bin = np.empty(used.size)
    hi_bin = np.empty(used.size)
    _bin_ranges(lam_e, delta_e, slope_e, first, used, lo_bin, hi_bin)
    used_a = body[14]
    for i in range(used_a.size):
        lo[i, lane] = _round32(lo_bin[used_a[i]] - _CELL_EPS_DEG, -np.inf)
        hi[i, lane] = _round32(hi_bin[used_a[i]] + _CELL_EPS_DEG, np.inf)


@njit(cache=True)
def _block_bounds(body, lo, hi, long_gap_steps, bounds):
    """Lower bounds on :func:`_scan`'s run lengths from the first-level cells alone, for
    all ``_BOUND_LANES`` lanes of ``lo`` and ``hi`` (:func:`_first_level_ranges`) at once.

    A decided cell's steps are all in its state, so the longest run of whole
    cells decided hidden (visible), an undecided cell ending it, is at most the
    longest hidden (visible) run. Hidden runs of at least ``long_gap_steps`` are
    counted at most once per stretch between cells decided visible: two such runs
    of whole cells with only undecided cells between them may be one night.
    ``bounds[:3, lane]`` = (longest hidden, longest visible, long hidden runs),
    in steps. One pass over the first-level cells: over 18.6 years about 1.5 us
    of one thread per pixel and body, against about 50 us for the exact scan.
    """
    cell_len, cell_slot, cell_kmin, cell_kmax = body[15], body[16], body[17], body[18]
    lanes = _BOUND_LANES
    zero = np.float32(0.0)
    one = np.float32(1.0)
    long_gap = np.float32(long_gap_steps)
    # per lane: current hidden and visible runs, their longest, long runs counted, and
    # whether the current stretch (since the last cell decided visible) holds a long run
    run_off = np.zeros(lanes, np.float32)
    run_on = np.zeros(lanes, np.float32)
    longest_off = np.zeros(lanes, np.float32)
    longest_on = np.zeros(lanes, np.float32)
    n_long = np.zeros(lanes, np.float32)
    long_in_stretch = np.zeros(lanes, np.float32)
    for a in range(cell_slot.size):
        lo_a = lo[cell_slot[a]]
        hi_a = hi[cell_slot[a]]
        n = cell_len[a]
        kmin = cell_kmin[a]
        kmax = cell_kmax[a]
        for b in range(lanes):
            visible = kmax < lo_a[b]
            on = run_on[b] + n if visible else zero
            off = run_off[b] + n if kmin >= hi_a[b] else zero
            run_on[b] = on
            run_off[b] = off
            longest_on[b] = max(longest_on[b], on)
            longest_off[b] = max(longest_off[b], off)
            stretch = long_in_stretch[b]
            n_long[b] += stretch if visible else zero
            long_in_stretch[b] = zero if visible else (one if off >= long_gap else stretch)
    for b in range(lanes):
        bounds[0, b] = longest_off[b]
        bounds[1, b] = longest_on[b]
        bounds[2, b] = n_long[b] + long_in_stretch[b]


@njit(cache=True, parallel=True)
def _visibility_kernel(east, north, up, lon_deg, r_m, horizon_deg, valid, pixels, scan, sun, earth, s_rad_mean,
                       s_dist, e_dist, n_bins, e_window, s_binned, e_binned, dk, long_night_steps, out):
    """For the pixels ``pixels`` (indices into the per-pixel arrays), rows of ``out`` with the
    columns: sun steps lit, disc sum (binned), longest dark, longest lit, long nights, earth
    steps visible, longest blackout, scanned (1) or not (0). ``out`` comes filled with NaN, and
    stays so where invalid; a binned disc sum already there (from a first pass over the
    pixels) is kept, not computed again.

    With ``scan``, every pixel is scanned over every step of ``sun`` and ``earth``.
    Otherwise its counts are the binned ones and its gap lengths the lower bounds of
    :func:`_block_bounds`, except that a pixel whose binned sun-lit fraction is below
    ``BINNED_MARGIN`` (twice its error bound) is scanned for the Sun until it is first
    lit: one never lit gets its exact Sun layers (permanent shadow), one lit at least one
    step. A pixel whose
    bounds show it never sees a body (every cell decided hidden) gets a visible count
    of 0, which is then exact.
    """
    n_pix = pixels.size
    n_az = horizon_deg.shape[1]
    cos_b, sin_b = _bearing_cos_sin(n_az)
    n_steps = max(sun[0].shape[0], 1)
    # the scan's arguments are values, never literals, so that numba compiles it once, not once
    # per literal: no gap is longer than the span (the Earth's long gaps are not counted), and
    # "until first lit" is "not scanning every pixel in full" (not scan)
    no_long_gap = n_steps + 1
    lanes = _BOUND_LANES
    for block in prange((n_pix + lanes - 1) // lanes):
        p0 = block * lanes
        n_lanes = min(lanes, n_pix - p0)
        # the threshold ranges of the block's pixels that get lower bounds, per body (the other
        # lanes' values are never read back); none when scanning
        bound_lanes = 0 if scan else lanes
        sun_lo = np.empty((sun[14].size, bound_lanes), np.float32)
        sun_hi = np.empty((sun[14].size, bound_lanes), np.float32)
        earth_lo = np.empty((earth[14].size, bound_lanes), np.float32)
        earth_hi = np.empty((earth[14].size, bound_lanes), np.float32)
        sun_bound = np.empty(lanes, dtype=np.bool_)
        earth_bound = np.empty(lanes, dtype=np.bool_)
        n_sun_bound = 0
        n_earth_bound = 0
        for b in range(n_lanes):
            p = pixels[p0 + b]
            sun_bound[b] = False
            earth_bound[b] = False
            if not valid[p]:
                continue
            sun_table, earth_table = _pixel_thresholds(east[p], north[p], up[p], lon_deg[p], r_m[p], horizon_deg[p],
                                                       cos_b, sin_b, s_rad_mean, s_dist, e_dist, n_bins, e_window)
            # the binned lit count, for a pixel left binned, and the binned disc sum unless a first
            # pass gave it
            n_lit = 0.0
            need_disc = np.isnan(out[p, 1])
            if not scan or need_disc:
                n_lit, disc = _binned_sum(*sun_table, s_binned, dk, not scan, need_disc)
                if need_disc:
                    out[p, 1] = disc
            out[p, 7] = 1.0 if scan else 0.0
            if scan:
                out[p, 0], out[p, 2], out[p, 3], out[p, 4] = _body_counts(sun_table, sun, long_night_steps, not scan)
                out[p, 5], out[p, 6], _, _ = _body_counts(earth_table, earth, no_long_gap, not scan)
                continue
            out[p, 5] = _binned_sum(*earth_table, e_binned, dk, True, False)[0]
            out[p, 0] = n_lit
            sun_bound[b] = True
            if n_lit < BINNED_MARGIN * n_steps:
                # possible permanent shadow: exact whether it is ever lit
                lit, dark, lit_run, n_long = _body_counts(sun_table, sun, long_night_steps, not scan)
                if lit == 0:
                    out[p, 0], out[p, 2], out[p, 3], out[p, 4] = 0.0, dark, lit_run, n_long
                    sun_bound[b] = False
                else:
                    out[p, 0] = max(n_lit, lit)
            if sun_bound[b]:
                _first_level_ranges(sun_table, sun, sun_lo, sun_hi, b)
                n_sun_bound += 1
            earth_bound[b] = True
            _first_level_ranges(earth_table, earth, earth_lo, earth_hi, b)
            n_earth_bound += 1
        if n_sun_bound > 0:
            _write_bounds(sun, sun_lo, sun_hi, long_night_steps, sun_bound, n_steps, 0, 2, 3, 4, out,
                          pixels[p0:p0 + n_lanes])
        if n_earth_bound > 0:
            _write_bounds(earth, earth_lo, earth_hi, no_long_gap, earth_bound, n_steps, 5, 6, -1, -1,
                          out, pixels[p0:p0 + n_lanes])


@njit(cache=True)
def _write_bounds(body, lo, hi, long_gap_steps, bound, n_steps, count_col, off_col, on_col, long_col, out, rows):
    """:func:`_block_bounds` of one body into the columns of ``out``, rows ``rows`` (a block's
    pixels), of the lanes marked ``bound``: longest hidden run, longest visible run, long
    hidden runs (a column < 0: not kept). A pixel whose every cell is decided hidden never
    sees the body: its visible count ``count_col`` is 0, exactly."""
    bounds = np.empty((3, _BOUND_LANES))
    _block_bounds(body, lo, hi, long_gap_steps, bounds)
    for b in range(rows.size):
        if bound[b]:
            for col, value in ((off_col, bounds[0, b]), (on_col, bounds[1, b]), (long_col, bounds[2, b])):
                if col >= 0:
                    out[rows[b], col] = value
            if bounds[0, b] == n_steps:
                out[rows[b], count_col] = 0.0


#: Pixels per call of ``progress`` in :func:`visibility_layers`.
PROGRESS_CHUNK_PX = 4096

#: Fewest pixels per kernel call when :func:`visibility_layers` scans the pixels it chose: a
#: call's blocks of ``_BOUND_LANES`` pixels are split evenly between the threads, so a few
#: blocks of uneven cost leave a thread idle (600-pixel calls were 20% slower).
_SCAN_CALL_PX = 8192

#: Margin (fraction) on the binned fractions: twice their error bound. Pixels within it of a
#: limit are scanned, so every pixel whose exact fraction meets the limit is; the ranking of a
#: run refined by rank raises the binned fractions by it (:func:`sitesel.refine.optimistic_layers`).
BINNED_MARGIN = 0.01

_TRACK_TABLES: dict = {}


def _track_tables(track: Track, n_bins: int):
    """The Sun's and Earth's steps with their cells, and their binned tables: built once
    per (track, n_bins) and kept while the track lives, since a run calls
    :func:`visibility_layers` once per tile with the same track."""
    key = (id(track), n_bins)
    if key not in _TRACK_TABLES:
        sun = _BodySteps(track.sun_m, SUN_RADIUS_M, n_bins, _CELL_LEVELS["sun"])
        earth = _BodySteps(track.earth_m, 0.0, n_bins, _CELL_LEVELS["earth"])
        _TRACK_TABLES[key] = (sun, earth, _binned_tables(sun, "sun")[1], _binned_tables(earth, "earth")[1])
        weakref.finalize(track, _TRACK_TABLES.pop, key, None)
    return _TRACK_TABLES[key]


@dataclass(frozen=True)
class ExactWhere:
    """The pixels that :func:`visibility_layers` scans over every step, when not all.

    ``eligible`` (bool, the window's shape) marks the pixels that meet every
    constraint not about visibility (slope, roughness); those whose binned
    fractions also reach the ``min_*`` limits, less twice the binned error
    bound, are scanned: every pixel that can meet all the limits is one (none
    when no pixel is eligible: a run whose ranking then scans the landing areas
    it needs, see :mod:`sitesel.refine`). Pixels whose binned sun-lit fraction
    is below the margin (possible permanent shadow, which must be exact) are
    scanned for the Sun until first lit.
    """

    eligible: np.ndarray
    min_sun_lit_fraction: float = 0.0
    min_sun_disc_fraction: float = 0.0
    min_earth_visible_fraction: float = 0.0

    def candidates(self, counts: np.ndarray, n_steps: int) -> np.ndarray:
        """The eligible pixels whose binned counts (``_visibility_kernel``'s columns: sun lit,
        disc, Earth) can meet the limits, flat."""
        limits = np.array([self.min_sun_lit_fraction, self.min_sun_disc_fraction,
                           self.min_earth_visible_fraction]) - BINNED_MARGIN
        with np.errstate(invalid="ignore"):  # NaN at invalid pixels compares False
            return (np.asarray(self.eligible, dtype=bool).ravel() & (counts[:, 0] >= limits[0] * n_steps)
                    & (counts[:, 1] >= limits[1] * n_steps) & (counts[:, 5] >= limits[2] * n_steps))


def visibility_layers(terrain: Terrain, horizon_deg: np.ndarray, track: Track, observer_height_m: float,
                      rows: slice | None = None, cols: slice | None = None, progress=None,
                      long_night_h: float = 72.0, exact_where: ExactWhere | None = None) -> dict[str, np.ndarray]:
    """Sun and Earth visibility layers for a window of ``terrain``.

    Parameters
    ----------
    terrain : Terrain
        Heights; only the window ``rows`` x ``cols`` (default: all) is computed.
    horizon_deg : ndarray, shape (nrows, ncols, K)
        Horizon elevation (deg) of the window's pixels at grid bearings
        ``np.arange(K) * 360 / K``, for an observer ``observer_height_m`` above ground.
    track : Track
        Sun and Earth positions in the Moon ME frame (:func:`sitesel.ephemeris.body_track`).
    observer_height_m : float
        Observer (eye) height above the ground, metres.
    progress : callable, optional
        Called with the number of pixels finished after each chunk of about
        ``PROGRESS_CHUNK_PX`` (e.g. ``tqdm.update``). With ``exact_where`` the scan of the
        chosen pixels is a second pass, reported by as many calls again (each with its
        share of the window's pixels).
    long_night_h : float
        Threshold for the ``n_long_nights`` layer, hours.
    exact_where : ExactWhere, optional
        Scan only these pixels over every step (default: all). Every pixel first gets
        the binned fractions (within 0.5 percentage points, as
        :func:`~sitesel.visibility.visibility_fractions`) and lower bounds on the
        gap lengths (the runs of whole first-level cells their thresholds decide);
        those then chosen (see :class:`ExactWhere`) are scanned.

    Returns
    -------
    dict of float32 arrays (nrows, ncols), NaN at nodata or where the horizon is NaN:
    ``sun_lit_fraction``, ``sun_disc_fraction``, ``longest_night_h``,
    ``earth_visible_fraction``, ``longest_blackout_h``, plus ``longest_sunlit_h``
    (longest span with some of the disc always visible), ``n_long_nights``
    (nights of at least ``long_night_h``) and ``visibility_exact`` (1 where every
    step was scanned). Spans are counted in whole steps and cut at the ends of
    the period. ``sun_disc_fraction`` is always the binned value.
    """
    px = _Pixels(terrain, horizon_deg, observer_height_m, rows, cols)
    n_bins = 2 * px.n_az  # regular index bins, half a node spacing wide
    sun, earth, s_binned, e_binned = _track_tables(track, n_bins)
    long_steps = max(1, int(np.ceil(long_night_h / track.step_hours - 1e-9)))
    n_pix = px.horizon_deg.shape[0]
    if exact_where is not None and np.shape(exact_where.eligible) != px.shape:
        raise ValueError(f"exact_where.eligible has shape {np.shape(exact_where.eligible)}, expected {px.shape}")
    out = np.full((n_pix, 8), np.nan)
    n_chunks = 1 if progress is None else -(-n_pix // max(1, min(n_pix, PROGRESS_CHUNK_PX)))

    def kernel(pixels, scan, call_px):
        """The kernel over ``pixels`` (flat indices, increasing) into their rows of ``out``, in
        calls of about ``call_px`` pixels or more, with ``n_chunks`` calls of ``progress`` in
        all (spread over the kernel's calls), each with its share of the window's pixels."""
        n = pixels.size
        n_calls = 1 if progress is None else max(1, min(n_chunks, n // max(1, call_px)))
        reported = 0
        for i in range(n_calls):
            _visibility_kernel(px.east, px.north, px.up, px.lon_deg, px.r_m, px.horizon_deg, px.valid,
                               pixels[n * i // n_calls:n * (i + 1) // n_calls], scan, sun.scan_args,
                               earth.scan_args, sun.mean_radius_deg, sun.mean_distance_m, earth.mean_distance_m,
                               n_bins, earth.lon_window, s_binned, e_binned, _BINNED_KEY_DEG, long_steps, out)
            if progress is not None:
                for k in range(reported, n_chunks * (i + 1) // n_calls):
                    progress(n_pix * (k + 1) // n_chunks - n_pix * k // n_chunks)
                reported = n_chunks * (i + 1) // n_calls

    # every pixel exact; or binned with lower bounds, then the candidates that matter scanned
    kernel(np.arange(n_pix), exact_where is None, PROGRESS_CHUNK_PX)
    if exact_where is not None:
        scanned = exact_where.candidates(out, len(track))
        kernel(np.flatnonzero(scanned), True, _SCAN_CALL_PX)

    n_steps = max(len(track), 1)
    dt = track.step_hours
    layers = {
        "sun_lit_fraction": out[:, 0] / n_steps,
        "sun_disc_fraction": out[:, 1] / n_steps,
        "longest_night_h": out[:, 2] * dt,
        "earth_visible_fraction": out[:, 5] / n_steps,
        "longest_blackout_h": out[:, 6] * dt,
        "longest_sunlit_h": out[:, 3] * dt,
        "n_long_nights": out[:, 4],
        "visibility_exact": out[:, 7],
    }
    return {name: value.reshape(px.shape).astype(np.float32) for name, value in layers.items()}
