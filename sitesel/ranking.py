"""Candidate landing sites: landing-area aggregation, non-maximum suppression, top N.

The score of a candidate centre is a low percentile (``profile.percentile``;
0 = the worst pixel) of the per-pixel score over its landing area, never the
mean, so one bad corner spoils a site. A centre is eligible only if every pixel
of its landing area lies inside the grid and is feasible.

Landing area in pixels. A pixel belongs to the landing area of a centre if its
centre lies inside the disc or ellipse; the centre pixel always does, so a
landing area smaller than a pixel is the pixel itself. Ground metres become map
metres through the polar stereographic scale factor k; one footprint serves the
whole grid, drawn with the largest k on the grid (at its corner farthest from
the pole), so it always covers the true landing area (k varies by under 2 %
between 75 deg S and the pole). An ellipse's major axis has a local azimuth,
which is a grid bearing ``azimuth + lon`` that changes across a polar grid; the
centres are binned by grid bearing (5 deg bins, or wider where half a bin moves
the tip of the ellipse by at most half a pixel) and each bin uses the union of
the ellipses over its bearing range, again a superset of every true ellipse in
the bin.

Aggregation. A numba kernel slides a histogram of the quantised score (levels
of 1/65534, so values are exact to 8e-6) along each row: moving one column
removes one pixel per footprint row and adds one, so a centre costs
O(footprint rows), not O(footprint area). The percentile is the ``lower``
order statistic (``numpy.percentile(..., method="lower")``, rank
``floor(p/100 * (n-1))``): the value of an actual pixel.

Selection. Eligible centres inside the allowed region are sorted by aggregated
score (descending), then row and column (ascending); a centre is accepted if
its great-circle distance to every accepted site is at least
``profile.min_separation_m``, until ``profile.top_n`` sites are accepted.

Tall footprints (more than 256 rows, e.g. a 30 km ellipse on a 20 m grid) are
first evaluated on every s-th row only, s = ceil(rows / 256), which bounds the
cost per pixel; each site chosen there is then refined to the best eligible
centre within s - 1 pixels that keeps the separation. This is a heuristic: a
site whose eligible centres all lie between lattice rows (a band of eligible
centres thinner than s rows) can be missed, and the greedy selection on lattice
values can order close rivals differently from the exhaustive one. When the
lattice yields fewer than ``top_n`` sites, every row is searched instead (the
exhaustive result, at up to s times the lattice's cost), so no site is missed
where sites are scarce. Up to 256
rows (a 30 x 15 km ellipse down to about 120 m/px) the search is exhaustive.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .constants import MOON_RADIUS_M
from .scoring import TERM_PREFIX, Profile, normalise_metric
from .terrain.grid import Grid, latlon_to_xy, latlon_to_xyz, local_frame, scale_factor, xy_to_latlon, xyz_to_latlon

_LEVELS = 65534
_BAD = 65535
_MID_SHIFT = 4
_COARSE_SHIFT = 8
_BIN_DEG = 5.0
# Footprints taller than this are evaluated on every s-th row first (see the module docstring).
_ROWS_PER_CENTRE = 256


def region_to_mask(grid: Grid, region: dict | None) -> np.ndarray:
    """Boolean mask of pixels whose centres lie in a profile/config region (all True if None).

    ``region`` holds ``lat_min_deg``/``lat_max_deg`` and/or ``lon_min_deg``/``lon_max_deg``
    (the longitude range runs eastward from ``lon_min_deg`` to ``lon_max_deg``), or
    ``centre_lat_deg``/``centre_lon_deg``/``radius_km`` (great-circle radius).
    """
    if region is None:
        return np.ones(grid.shape, dtype=bool)
    lat, lon = grid.latlon()
    mask = np.ones(grid.shape, dtype=bool)
    if "radius_km" in region:
        centre = latlon_to_xyz(region["centre_lat_deg"], region["centre_lon_deg"])
        mask &= _arc_m(latlon_to_xyz(lat, lon), centre) <= region["radius_km"] * 1000.0
    if "lat_min_deg" in region:
        mask &= (lat >= region["lat_min_deg"]) & (lat <= region["lat_max_deg"])
    if "lon_min_deg" in region and _lon_span_deg(region) < 360.0:
        mask &= (lon - region["lon_min_deg"]) % 360.0 <= _lon_span_deg(region)
    return mask


def _lon_span_deg(region: dict) -> float:
    """Eastward extent from lon_min_deg to lon_max_deg in (0, 360]; a whole number of turns is the full circle."""
    span = (region["lon_max_deg"] - region["lon_min_deg"]) % 360.0
    return span if span > 0.0 else 360.0


def region_bounds_m(region: dict) -> tuple[float, float, float, float]:
    """Polar stereographic bounds (left, bottom, right, top; map metres) enclosing a region.

    The projection maps the region's boundary to the boundary of its image,
    so the extremes are found on the densely sampled boundary (about 0.1 deg
    apart; extents are exact to well under a metre per 1000 km).
    """
    t = np.linspace(0.0, 1.0, 3601)
    if "radius_km" in region:
        # The cap's boundary: points at the cap radius in every direction from its centre.
        east, north, up = local_frame(region["centre_lat_deg"], region["centre_lon_deg"])
        angle = region["radius_km"] * 1000.0 / MOON_RADIUS_M
        az = 2.0 * np.pi * t[:, None]
        direction = np.cos(az) * north + np.sin(az) * east
        lat, lon, _ = xyz_to_latlon(np.cos(angle) * up + np.sin(angle) * direction)
    else:
        lat_lo, lat_hi = region.get("lat_min_deg", -90.0), region.get("lat_max_deg", 90.0)
        if "lon_min_deg" in region:
            lon_lo = region["lon_min_deg"]
            lon_hi = lon_lo + _lon_span_deg(region)
        else:
            lon_lo, lon_hi = 0.0, 360.0
        lats = lat_lo + (lat_hi - lat_lo) * t
        lons = lon_lo + (lon_hi - lon_lo) * t
        lat = np.concatenate([lats, lats, np.full_like(t, lat_lo), np.full_like(t, lat_hi)])
        lon = np.concatenate([np.full_like(t, lon_lo), np.full_like(t, lon_hi), lons, lons])
    x, y = latlon_to_xy(lat, lon)
    return float(x.min()), float(y.min()), float(x.max()), float(y.max())


def landing_footprints(grid: Grid, profile: Profile) -> tuple[np.ndarray, list[tuple[np.ndarray, ...]]]:
    """Pixel footprints of the landing area.

    Returns
    -------
    bin_index : int array (rows, cols)
        Which footprint applies to each centre pixel (all 0 for a disc).
    footprints : list of (dr, c_lo, c_hi) int64 arrays
        For each bin, the footprint as one run of columns per row offset:
        pixels ``(row + dr[i], col + c_lo[i] .. col + c_hi[i])``.
    """
    k = _max_scale_factor(grid)
    a_px = profile.ellipse_semi_major_m * k / grid.resolution_m
    b_px = profile.ellipse_semi_minor_m * k / grid.resolution_m
    if profile.is_disc:
        return np.zeros(grid.shape, dtype=np.int64), [_runs(a_px, b_px, np.zeros(1))]
    # 5 deg bins, or wider where half a bin moves the ellipse tip by at most half a pixel.
    width_deg = min(180.0, max(_BIN_DEG, 2.0 * math.degrees(0.5 / a_px)))
    nbins = max(1, math.ceil(180.0 / width_deg))
    width_deg = 180.0 / nbins
    _, lon = grid.latlon()
    bearing = (profile.ellipse_azimuth_deg + lon) % 180.0
    bin_index = np.floor(bearing / width_deg + 0.5).astype(np.int64) % nbins
    # Sample rotations so the tip moves at most a quarter pixel between samples.
    samples = max(2, math.ceil(width_deg / math.degrees(0.25 / a_px)) + 1)
    footprints = []
    for b in range(nbins):
        angles = b * width_deg + np.linspace(-width_deg / 2.0, width_deg / 2.0, samples)
        footprints.append(_runs(a_px, b_px, angles) if np.any(bin_index == b) else None)
    return bin_index, footprints


def footprint_reach_px(footprints) -> int:
    """How far (pixels, along a row or a column) the footprints from :func:`landing_footprints`
    reach from their centre."""
    return max(int(np.abs(np.concatenate(fp)).max()) for fp in footprints if fp is not None)


def lattice_stride(footprints) -> int:
    """Every how many rows :func:`rank_sites` first evaluates centres for these footprints
    (:func:`landing_footprints`): 1 (every centre, the exhaustive search) up to 256 rows."""
    height = max(fp[0].size for fp in footprints if fp is not None)
    return math.ceil(height / _ROWS_PER_CENTRE)


def aggregate_landing_score(score, feasible, grid: Grid, profile: Profile, centre_mask=None, progress=None):
    """Landing-area score of every centre: the profile's percentile over the footprint.

    Parameters
    ----------
    score : float array (rows, cols)
        Per-pixel score in [0, 1] (NaN allowed where not feasible).
    feasible : array (rows, cols)
        Nonzero where a pixel is admissible.
    centre_mask : bool array, optional
        Centres to evaluate (default: all feasible pixels).
    progress : callable(done, total), optional
        Called after each footprint bin.

    Returns
    -------
    float32 array (rows, cols): the aggregated score, NaN where the centre is
    not evaluated or its landing area leaves the grid or touches an infeasible
    or nodata pixel.
    """
    good = (np.asarray(feasible) != 0) & np.isfinite(np.asarray(score, dtype=np.float32))
    centres = good if centre_mask is None else good & np.asarray(centre_mask, dtype=bool)
    return _aggregate(score, feasible, landing_footprints(grid, profile), profile.percentile, centres, progress)


def _aggregate(score, feasible, footprints, percentile, centres, progress=None):
    """:func:`aggregate_landing_score` for given footprints and centres."""
    score = np.asarray(score, dtype=np.float32)
    good = (np.asarray(feasible) != 0) & np.isfinite(score)
    out = np.full(score.shape, np.nan, dtype=np.float32)
    bin_index, runs = footprints
    # Out-of-grid and infeasible pixels get the level _BAD, above every score level.
    pad = footprint_reach_px(runs)
    quantised = np.full((score.shape[0] + 2 * pad, score.shape[1] + 2 * pad), _BAD, dtype=np.uint16)
    inner = quantised[pad : pad + score.shape[0], pad : pad + score.shape[1]]
    inner[good] = np.rint(np.clip(score[good], 0.0, 1.0) * _LEVELS).astype(np.uint16)
    total = sum(fp is not None for fp in runs)
    done = 0
    for b, fp in enumerate(runs):
        if fp is None:
            continue
        dr, c_lo, c_hi = fp
        count = int(np.sum(c_hi - c_lo + 1))
        rank = int(math.floor(percentile / 100.0 * (count - 1)))
        mask = (centres & good & (bin_index == b)).astype(np.uint8)
        _percentile_kernel(quantised, pad, mask, dr, c_lo, c_hi, rank, out)
        done += 1
        if progress is not None:
            progress(done, total)
    return out


def rank_sites(score, feasible, layers: dict, grid: Grid, profile: Profile, region_mask=None, progress=None):
    """Rank candidate landing sites.

    Parameters
    ----------
    score, feasible : arrays (rows, cols)
        From :func:`sitesel.scoring.score_layers`.
    layers : dict of str -> array
        Metric layers; each one's value at a site centre is reported.
    grid : Grid
    profile : Profile
    region_mask : bool array, optional
        Allowed centres from the caller (e.g. the run's config region); it is
        combined (AND) with the profile's own ``[region]``.
    progress : callable(done, total), optional

    Returns
    -------
    list of dict, best first, at most ``profile.top_n`` (see the module
    docstring for the aggregation, the selection and the row lattice used for
    footprints taller than 256 rows). Keys (all scalars):
    rank (1-based), row, col, x_m, y_m, lat, lon, score (landing-area
    percentile), score_centre, every layer's value at the centre,
    ellipse_semi_major_m, ellipse_semi_minor_m, ellipse_azimuth_deg (local),
    ellipse_bearing_deg (grid bearing of the major axis at the site), and
    ``term_<metric>`` for every positively weighted metric.
    """
    allowed = region_to_mask(grid, profile.region)
    if region_mask is not None:
        allowed &= np.asarray(region_mask, dtype=bool)
    footprints = landing_footprints(grid, profile)
    stride = lattice_stride(footprints[1])
    lattice = allowed.copy()
    lattice[np.arange(grid.shape[0]) % stride != 0] = False
    picks = _picks(_aggregate(score, feasible, footprints, profile.percentile, lattice, progress), grid, profile)
    if stride > 1 and len(picks) < profile.top_n:
        # too few sites on the lattice: a band of eligible centres may lie between its rows, so every row is
        # searched, at up to `stride` times the lattice's cost
        picks = _picks(_aggregate(score, feasible, footprints, profile.percentile, allowed, progress), grid, profile)
    elif stride > 1:
        picks = _refine(picks, stride, score, feasible, footprints, allowed, grid, profile)

    weighted = [m for m in profile.used_metrics if profile.weights.get(m, 0.0) > 0]
    sites = []
    for rank, (r, c, value) in enumerate(picks, start=1):
        x, y = float(grid.x_m()[c]), float(grid.y_m()[r])
        lat, lon = (float(v) for v in xy_to_latlon(x, y))
        site = {
            "rank": rank,
            "row": r,
            "col": c,
            "x_m": x,
            "y_m": y,
            "lat": lat,
            "lon": lon,
            "score": value,
            "score_centre": float(score[r, c]),
        }
        for name, layer in layers.items():
            if name in site:  # a "score" layer is the centre's score_centre, not the landing area's score
                continue
            layer = np.asarray(layer)
            site[name] = int(layer[r, c]) if np.issubdtype(layer.dtype, np.integer) else float(layer[r, c])
        site.update(
            ellipse_semi_major_m=profile.ellipse_semi_major_m,
            ellipse_semi_minor_m=profile.ellipse_semi_minor_m,
            ellipse_azimuth_deg=profile.ellipse_azimuth_deg,
            ellipse_bearing_deg=float((profile.ellipse_azimuth_deg + lon) % 180.0),
        )
        for m in weighted:
            site[TERM_PREFIX + m] = float(normalise_metric(m, np.asarray(layers[m])[r, c]))
        sites.append(site)
    return sites


def _picks(aggregated, grid, profile):
    """(row, col, value) of the sites greedily chosen from the evaluated centres of ``aggregated``."""
    rows, cols, values = _best_first(aggregated)
    chosen = _separated(grid, rows, cols, profile.min_separation_m, profile.top_n)
    return [(int(rows[i]), int(cols[i]), float(values[i])) for i in chosen]


def _best_first(aggregated):
    """Rows, columns and values of the evaluated centres, by value (descending), then row, column."""
    rows, cols = np.nonzero(np.isfinite(aggregated))
    values = aggregated[rows, cols]
    order = np.lexsort((cols, rows, -values))
    return rows[order], cols[order], values[order]


def _refine(picks, stride, score, feasible, footprints, allowed, grid, profile):
    """Move each site chosen on the row lattice to the best centre within ``stride - 1`` pixels.

    Sites are refined best first; a refined centre must keep the minimum
    separation from the sites refined before it (the lattice centre itself is
    a candidate, so a site is dropped only if no centre of its window does).
    """
    nrows, ncols = grid.shape
    windows = [
        (slice(max(r - stride + 1, 0), min(r + stride, nrows)), slice(max(c - stride + 1, 0), min(c + stride, ncols)))
        for r, c, _ in picks
    ]
    mask = np.zeros(grid.shape, dtype=bool)
    for rs, cs in windows:
        mask[rs, cs] = True
    fine = _aggregate(score, feasible, footprints, profile.percentile, mask & allowed)
    refined, refined_xyz = [], []
    for rs, cs in windows:
        rows, cols, values = _best_first(fine[rs, cs])
        lat, lon = xy_to_latlon(grid.x_m()[cols + cs.start], grid.y_m()[rows + rs.start])
        xyz = latlon_to_xyz(lat, lon)
        ok = np.ones(rows.size, dtype=bool)
        for centre in refined_xyz:
            ok &= _arc_m(xyz, centre) >= profile.min_separation_m
        if ok.any():
            j = int(np.flatnonzero(ok)[0])
            refined.append((int(rows[j] + rs.start), int(cols[j] + cs.start), float(values[j])))
            refined_xyz.append(xyz[j])
    return sorted(refined, key=lambda p: (-p[2], p[0], p[1]))


def _separated(grid: Grid, rows, cols, min_separation_m: float, top_n: int) -> list[int]:
    """Greedy non-maximum suppression over candidates sorted best first; returns accepted indices.

    Candidates are visited in chunks so that only the ones actually examined
    are projected to Moon-fixed vectors.
    """
    chosen: list[int] = []
    chosen_xyz: list[np.ndarray] = []
    chunk = 4096
    for start in range(0, rows.size, chunk):
        stop = min(start + chunk, rows.size)
        lat, lon = xy_to_latlon(grid.x_m()[cols[start:stop]], grid.y_m()[rows[start:stop]])
        xyz = latlon_to_xyz(lat, lon)
        ok = np.ones(stop - start, dtype=bool)
        for centre in chosen_xyz:
            ok &= _arc_m(xyz, centre) >= min_separation_m
        while len(chosen) < top_n:
            free = np.flatnonzero(ok)
            if free.size == 0:
                break
            j = int(free[0])
            chosen.append(start + j)
            chosen_xyz.append(xyz[j])
            ok[j] = False
            ok &= _arc_m(xyz, xyz[j]) >= min_separation_m
        if len(chosen) >= top_n:
            break
    return chosen


def _arc_m(xyz, centre) -> np.ndarray:
    """Great-circle distance (m) on the reference sphere between points given as Moon-fixed vectors."""
    u = xyz / np.linalg.norm(xyz, axis=-1, keepdims=True)
    v = np.asarray(centre) / np.linalg.norm(centre)
    chord = np.linalg.norm(u - v, axis=-1)
    return 2.0 * MOON_RADIUS_M * np.arcsin(np.minimum(chord / 2.0, 1.0))


def _max_scale_factor(grid: Grid) -> float:
    """Largest polar stereographic scale factor on the grid (at the corner farthest from the pole)."""
    left, bottom, right, top = grid.bounds_m
    rho = max(math.hypot(x, y) for x in (left, right) for y in (bottom, top))
    lat, _ = xy_to_latlon(rho, 0.0)
    return float(scale_factor(lat))


def _runs(a_px: float, b_px: float, bearings_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row runs of the pixel centres inside any of the ellipses (semi-axes in pixels, grid bearings).

    Row offset ``dr`` is the map offset ``y = -dr`` pixels; on that line an
    ellipse with its major axis along bearing beta holds the x where
    ``((x sin b + y cos b) / a)^2 + ((x cos b - y sin b) / b)^2 <= 1``, an
    interval found from the quadratic in x. A union of rotated ellipses may
    leave a gap along a row; the run spans it (a superset).
    """
    n = int(math.ceil(a_px))
    y = -np.arange(-n, n + 1, dtype=np.float64)[:, None]
    beta = np.radians(np.asarray(bearings_deg, dtype=np.float64))[None, :]
    sb, cb = np.sin(beta), np.cos(beta)
    p = sb**2 / a_px**2 + cb**2 / b_px**2
    q = 2.0 * y * sb * cb * (1.0 / a_px**2 - 1.0 / b_px**2)
    r = y**2 * (cb**2 / a_px**2 + sb**2 / b_px**2) - 1.0 - 1e-9
    disc = q**2 - 4.0 * p * r
    root = np.sqrt(np.maximum(disc, 0.0))
    lo = np.ceil((-q - root) / (2.0 * p) - 1e-9)
    hi = np.floor((-q + root) / (2.0 * p) + 1e-9)
    hit = (disc >= 0.0) & (lo <= hi)
    lo = np.where(hit, lo, np.inf).min(axis=1)
    hi = np.where(hit, hi, -np.inf).max(axis=1)
    # The centre pixel always belongs to the landing area.
    lo[n], hi[n] = min(lo[n], 0.0), max(hi[n], 0.0)
    rows = np.isfinite(lo)
    dr = np.arange(-n, n + 1)[rows]
    return dr.astype(np.int64), lo[rows].astype(np.int64), hi[rows].astype(np.int64)


@njit(cache=True, inline="always")
def _add(v, sign, hist, mid, coarse, ptr):
    """Count level ``v`` in (sign=+1) or out (-1) of the histograms; returns the change below ``ptr``."""
    hist[v] += sign
    mid[v >> _MID_SHIFT] += sign
    coarse[v >> _COARSE_SHIFT] += sign
    return sign if v < ptr else 0


@njit(cache=True)
def _move_to_rank(hist, mid, coarse, ptr, below, rank):
    """Move the level pointer until ``below <= rank < below + hist[ptr]``; returns (ptr, below).

    ``below`` counts values at levels under ``ptr``. From a bin boundary the
    pointer skips whole 16- or 256-level bins, so a move costs a few dozen
    steps whatever its length.
    """
    mid_step = 1 << _MID_SHIFT
    coarse_step = 1 << _COARSE_SHIFT
    while below > rank:
        if ptr % coarse_step == 0 and below - coarse[(ptr >> _COARSE_SHIFT) - 1] > rank:
            ptr -= coarse_step
            below -= coarse[ptr >> _COARSE_SHIFT]
        elif ptr % mid_step == 0 and below - mid[(ptr >> _MID_SHIFT) - 1] > rank:
            ptr -= mid_step
            below -= mid[ptr >> _MID_SHIFT]
        else:
            ptr -= 1
            below -= hist[ptr]
    while below + hist[ptr] <= rank:
        if ptr % coarse_step == 0 and below + coarse[ptr >> _COARSE_SHIFT] <= rank:
            below += coarse[ptr >> _COARSE_SHIFT]
            ptr += coarse_step
        elif ptr % mid_step == 0 and below + mid[ptr >> _MID_SHIFT] <= rank:
            below += mid[ptr >> _MID_SHIFT]
            ptr += mid_step
        else:
            below += hist[ptr]
            ptr += 1
    return ptr, below


@njit(cache=True)
def _window(quantised, r, c, dr, c_lo, c_hi, sign, hist, mid, coarse, ptr):
    """Add or remove the whole footprint at padded centre (r, c); returns the change below ``ptr``."""
    below = 0
    for i in range(dr.size):
        for cc in range(c + c_lo[i], c + c_hi[i] + 1):
            below += _add(quantised[r + dr[i], cc], sign, hist, mid, coarse, ptr)
    return below


@njit(cache=True, parallel=True)
def _percentile_kernel(quantised, pad, centres, dr, c_lo, c_hi, rank, out):
    """Rank-th smallest level over the footprint at each centre whose footprint holds no _BAD pixel.

    ``quantised`` is the level grid padded by ``pad`` pixels of _BAD on every
    side, so footprints never index outside it; ``centres`` and ``out`` are
    unpadded.
    """
    nrows, ncols = centres.shape
    height = dr.size
    area = 0
    for i in range(height):
        area += c_hi[i] - c_lo[i] + 1
    nblocks = min(nrows, 64)
    for block in prange(nblocks):
        # One histogram per block of rows, emptied (not reallocated) between rows.
        hist = np.zeros(_BAD + 1, dtype=np.int32)
        mid = np.zeros((_BAD >> _MID_SHIFT) + 1, dtype=np.int32)
        coarse = np.zeros((_BAD >> _COARSE_SHIFT) + 1, dtype=np.int32)
        ptr = 0
        below = 0
        for r in range(block * nrows // nblocks, (block + 1) * nrows // nblocks):
            rp = r + pad
            cur = -1
            for c in range(ncols):
                if centres[r, c] == 0:
                    continue
                cp = c + pad
                if cur >= 0 and (cp - cur) * height <= area:
                    # Sliding costs two pixels per footprint row and column; rebuilding twice the area.
                    while cur < cp:
                        for i in range(height):
                            row = rp + dr[i]
                            below += _add(quantised[row, cur + c_lo[i]], -1, hist, mid, coarse, ptr)
                            below += _add(quantised[row, cur + 1 + c_hi[i]], 1, hist, mid, coarse, ptr)
                        cur += 1
                else:
                    if cur >= 0:
                        below += _window(quantised, rp, cur, dr, c_lo, c_hi, -1, hist, mid, coarse, ptr)
                    below += _window(quantised, rp, cp, dr, c_lo, c_hi, 1, hist, mid, coarse, ptr)
                    cur = cp
                if hist[_BAD] == 0:
                    ptr, below = _move_to_rank(hist, mid, coarse, ptr, below, rank)
                    out[r, c] = ptr / _LEVELS
            if cur >= 0:
                below += _window(quantised, rp, cur, dr, c_lo, c_hi, -1, hist, mid, coarse, ptr)
