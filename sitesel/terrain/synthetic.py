"""A built-in, seeded, south-pole-like terrain for demos and tests.

The landscape is one analytic world defined in polar stereographic map
coordinates (metres) and sampled at the pixel centres of any grid, so a bigger
or finer grid shows more of the same world:

* named craters modelled on Shackleton (89.67 S 129.8 E, 21 km, ~4 km deep,
  steep inner walls and a flat floor), de Gerlache, Sverdrup, Shoemaker,
  Faustini and Haworth: flat floor with a slight central low, smooth-step
  walls, raised rim and an ejecta blanket falling off as (R/r)^3 to 3 R. A
  crater erases the older relief inside it (to 15%) and levels the regional
  slope to its value at the centre;
* a ridge from Shackleton's rim to de Gerlache's rim through the position of
  the connecting-ridge site CR1 (89.44 S 222.81 E);
* massifs beyond 100 km: Malapert-like (86 S 0 E, ~5 km high) and a flat-topped
  Mons Mouton-like plateau (84.6 S 31.5 E);
* a random crater population over a fixed 400 km square, cumulative
  size-frequency N(>D) ~ D^-2 from 150 m to 12 km, simple bowl + rim profiles;
* fractal roughness: 17 octaves of gradient noise (wavelengths 128 km down to
  2 m, amplitude ~ wavelength^0.8) on seeded, rotated lattices.

Features smaller than the grid can represent are faded out instead of
aliased: a crater of diameter D has weight clip((D/res - 1)/2, 0, 1) and a
noise octave of wavelength L has weight clip((L/res - 2)/2, 0, 1). Grids of
different resolution over the same area therefore agree at scales both
resolve.

Heights are reproducible bit for bit for the same (size, resolution, seed): the
random draws come from ``numpy.random.default_rng(seed)``, the noise lattice
uses an integer hash, and everything after the feature positions (rounded to
whole metres) is IEEE +, -, *, / and sqrt in float64 (no transcendental
functions), cast to float32 at the end.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .grid import Grid, latlon_to_xy
from .model import Terrain

#: Half-width of the square (centred on the pole) holding the random craters, metres.
WORLD_HALF_WIDTH_M = 200_000.0

# Named craters: (name, lat, lon, rim diameter m, rim-to-floor depth m,
# rim height above surroundings m, floor diameter m, central low m).
_NAMED_CRATERS = (
    ("Shackleton", -89.67, 129.8, 21_000.0, 3_900.0, 500.0, 6_600.0, 150.0),
    ("de Gerlache", -88.5, -87.0, 32_000.0, 3_000.0, 400.0, 12_000.0, 100.0),
    ("Sverdrup", -88.3, -152.0, 33_000.0, 2_500.0, 350.0, 12_000.0, 100.0),
    ("Shoemaker", -88.1, 44.9, 51_000.0, 3_000.0, 450.0, 24_000.0, 100.0),
    ("Faustini", -87.3, 77.0, 39_000.0, 3_000.0, 400.0, 16_000.0, 100.0),
    ("Haworth", -87.45, -5.0, 51_000.0, 3_500.0, 500.0, 22_000.0, 100.0),
)

# The Shackleton - de Gerlache ridge passes through CR1 (Glaser et al. 2014).
_RIDGE_VIA_LATLON = (-89.44, 222.81)
_RIDGE_HEIGHT_M = 1_500.0
_RIDGE_HALF_WIDTH_M = 6_000.0
_RIDGE_SEGMENTS = 32

# Massifs: (lat, lon, height m, semi-axis a m, semi-axis b m, rotation as a
# Pythagorean (cos, sin) so it is exact, plateau: flat top out to half radius).
_MASSIFS = (
    (-86.0, 0.0, 3_800.0, 35_000.0, 20_000.0, (4.0 / 5.0, 3.0 / 5.0), False),
    (-86.0, 0.0, 1_000.0, 8_000.0, 8_000.0, (1.0, 0.0), False),
    (-84.6, 31.5, 4_500.0, 26_000.0, 22_000.0, (12.0 / 13.0, 5.0 / 13.0), True),
)

# Random craters: cumulative N(>1 km) over the 400 km square, diameter range,
# depth/diameter from degraded to fresh simple craters (squared uniform draw, so
# most are shallow, as on the real surface) and rim/depth.
_CRATERS_PER_KM_SQUARE_ABOVE_1KM = 8_000.0 / 160_000.0
_CRATER_MIN_DIAMETER_M = 150.0
_CRATER_MAX_DIAMETER_M = 12_000.0
_DEPTH_RATIO = (0.04, 0.20)
_RIM_RATIO = (0.10, 0.25)

# Fractal roughness: octaves from 128 km down to 2 m.
_NOISE_LONGEST_M = 128_000.0
_NOISE_OCTAVES = 17
_NOISE_AMPLITUDE_M = 2_500.0
# Amplitude ratio between successive octaves: 2^-H with Hurst exponent H ~ 0.8,
# written as a constant so no pow() (and no libm rounding) is involved.
_OCTAVE_GAIN = 0.574
# Octaves at least this long are the regional level that a crater floor keeps.
_REGIONAL_WAVELENGTH_M = 32_000.0
# Fraction of older relief that survives inside a named crater.
_INSIDE_CRATER_RELIEF = 0.15

# Exact rotations (Pythagorean triples) for the noise lattices.
_ROTATIONS = ((3, 4, 5), (5, 12, 13), (8, 15, 17), (7, 24, 25), (20, 21, 29), (12, 35, 37), (9, 40, 41))


def synthetic_south_pole(size: int = 600, resolution_m: float = 170.0, seed: int = 0, progress=None) -> Terrain:
    """The synthetic south pole on a ``size`` x ``size`` grid centred on the pole.

    Parameters
    ----------
    size : int
        Pixels per side.
    resolution_m : float
        Pixel size in map metres (LOLA polar stereographic grid).
    seed : int
        Seed of the random craters and roughness; the named features are fixed.
    progress : callable(done, total), optional
        Called as each part of the world is laid down (``WORLD_PARTS`` in all): a
        4096 x 4096 grid at 10 m takes about 16 s.

    Returns
    -------
    Terrain
        float32 heights in metres above the 1737.4 km sphere.
    """
    if int(size) < 1 or not resolution_m > 0:
        raise ValueError("size must be >= 1 and resolution_m > 0")
    grid = Grid.centred((int(size), int(size)), float(resolution_m))
    height = _world_height(grid, int(seed), progress or (lambda done, total: None))
    provenance = {
        "generator": "sitesel.synthetic_south_pole",
        "seed": int(seed),
        "size": int(size),
        "resolution_m": float(resolution_m),
    }
    return Terrain(height.astype(np.float32), grid, provenance)


#: Parts of the world that ``synthetic_south_pole`` reports progress on: the regional and the
#: detail noise, the ridge, the massifs, the random craters and each named crater.
WORLD_PARTS = 5 + len(_NAMED_CRATERS)


def _world_height(grid: Grid, seed: int, progress) -> np.ndarray:
    done = 0

    def laid_down():
        nonlocal done
        done += 1
        progress(done, WORLD_PARTS)

    rng = np.random.default_rng(seed)
    # Draw in a fixed order so each part of the world depends only on the seed.
    octaves = _noise_octaves(rng)
    craters = _random_craters(rng)

    x = grid.x_m()
    y = grid.y_m()
    res = grid.resolution_m
    regional_octaves = [o for o in octaves if o["wavelength_m"] >= _REGIONAL_WAVELENGTH_M]
    detail_octaves = [o for o in octaves if o["wavelength_m"] < _REGIONAL_WAVELENGTH_M]

    regional = _noise(x, y, regional_octaves, res)
    laid_down()
    relief = _noise(x, y, detail_octaves, res)
    laid_down()
    relief += _ridge(x, y)
    laid_down()
    relief += _massifs(x, y)
    laid_down()
    _stamp_random_craters(relief, x, y, res, craters)
    laid_down()

    height = regional
    survive = np.ones_like(height)
    for crater in _named_craters():
        rows, cols = _bbox(x, y, crater["cx"], crater["cy"], 3.0 * crater["radius_m"])
        if rows.start >= rows.stop or cols.start >= cols.stop:
            laid_down()
            continue
        xx, yy = np.meshgrid(x[cols], y[rows])
        r = np.sqrt((xx - crater["cx"]) ** 2 + (yy - crater["cy"]) ** 2)
        keep = _crater_keep(r / crater["radius_m"])
        level = _noise(np.array([crater["cx"]]), np.array([crater["cy"]]), regional_octaves, res)[0, 0]
        height[rows, cols] += (1.0 - keep) * (level - height[rows, cols]) + _named_crater_profile(r, crater)
        survive[rows, cols] *= keep
        laid_down()
    height += survive * relief
    return height


# ---------------------------------------------------------------- random draws


def _noise_octaves(rng) -> list[dict]:
    octaves = []
    amplitude = _NOISE_AMPLITUDE_M
    wavelength = _NOISE_LONGEST_M
    for k in range(_NOISE_OCTAVES):
        a, b, c = _ROTATIONS[k % len(_ROTATIONS)]
        octaves.append(
            {
                "wavelength_m": wavelength,
                "amplitude_m": amplitude,
                "cos": a / c,
                "sin": b / c,
                "offset": rng.random(2) * wavelength,
                "key": int(rng.integers(0, 2**63)),
            }
        )
        amplitude *= _OCTAVE_GAIN
        wavelength /= 2.0
    return octaves


def _random_craters(rng) -> dict:
    side_km = 2.0 * WORLD_HALF_WIDTH_M / 1e3
    area_km2 = side_km * side_km
    # Inverse CDF of the truncated N(>D) ~ D^-2 law: D = (Dmin^-2 - u (Dmin^-2 - Dmax^-2))^-1/2.
    inv_sq_min = 1.0 / (_CRATER_MIN_DIAMETER_M * _CRATER_MIN_DIAMETER_M)
    inv_sq_max = 1.0 / (_CRATER_MAX_DIAMETER_M * _CRATER_MAX_DIAMETER_M)
    count = int(_CRATERS_PER_KM_SQUARE_ABOVE_1KM * area_km2 * 1e6 * (inv_sq_min - inv_sq_max))
    u = rng.random(count)
    diameter = 1.0 / np.sqrt(inv_sq_min - u * (inv_sq_min - inv_sq_max))
    cx = (rng.random(count) * 2.0 - 1.0) * WORLD_HALF_WIDTH_M
    cy = (rng.random(count) * 2.0 - 1.0) * WORLD_HALF_WIDTH_M
    freshness = rng.random(count)
    depth = diameter * (_DEPTH_RATIO[0] + freshness * freshness * (_DEPTH_RATIO[1] - _DEPTH_RATIO[0]))
    rim = depth * (_RIM_RATIO[0] + rng.random(count) * (_RIM_RATIO[1] - _RIM_RATIO[0]))
    return {"cx": cx, "cy": cy, "radius_m": diameter / 2.0, "depth_m": depth, "rim_m": rim}


# ---------------------------------------------------------------- named features


def _map_point(lat_deg: float, lon_deg: float) -> tuple[float, float]:
    # Whole metres, so last-bit differences of libm between machines cannot leak in.
    x, y = latlon_to_xy(lat_deg, lon_deg)
    return float(np.round(x)), float(np.round(y))


def _named_craters() -> list[dict]:
    craters = []
    for name, lat, lon, diameter, depth, rim, floor, low in _NAMED_CRATERS:
        cx, cy = _map_point(lat, lon)
        craters.append(
            {
                "name": name,
                "cx": cx,
                "cy": cy,
                "radius_m": diameter / 2.0,
                "depth_m": depth,
                "rim_m": rim,
                "floor_radius_m": floor / 2.0,
                "low_m": low,
            }
        )
    return craters


def _cube(t):
    return t * t * t


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _crater_keep(q):
    """Share of older relief kept at r / R = q: 15% inside 0.7 R, all beyond 1.3 R."""
    return _INSIDE_CRATER_RELIEF + (1.0 - _INSIDE_CRATER_RELIEF) * _smoothstep((q - 0.7) / 0.6)


def _named_crater_profile(r, crater):
    """Complex crater: floor with a central low, smooth-step wall, rim, ejecta to 3 R."""
    radius = crater["radius_m"]
    rim = crater["rim_m"]
    floor_radius = crater["floor_radius_m"]
    floor_level = rim - crater["depth_m"] + crater["low_m"]
    f = np.clip(r / floor_radius, 0.0, 1.0)
    inside_floor = floor_level - crater["low_m"] * (1.0 - f * f) ** 2
    wall = floor_level + (rim - floor_level) * _smoothstep((r - floor_radius) / (radius - floor_radius))
    s = radius / np.maximum(r, radius)
    ejecta = rim * (s * s * s - 1.0 / 27.0) / (26.0 / 27.0)
    ejecta = np.maximum(ejecta, 0.0)
    return np.where(r <= floor_radius, inside_floor, np.where(r <= radius, wall, ejecta))


def _ridge_path() -> np.ndarray:
    """Vertices (M+1, 2) of the ridge: a quadratic Bezier from rim to rim through CR1."""
    shackleton, gerlache = (c for c in _named_craters() if c["name"] in ("Shackleton", "de Gerlache"))
    via = np.array(_map_point(*_RIDGE_VIA_LATLON))
    ends = []
    for crater in (shackleton, gerlache):
        centre = np.array([crater["cx"], crater["cy"]])
        toward = via - centre
        # Written out rather than a BLAS dot product, whose rounding may vary by machine.
        length = np.sqrt(toward[0] * toward[0] + toward[1] * toward[1])
        ends.append(centre + toward * (crater["radius_m"] / length))
    start, end = ends
    control = 2.0 * via - 0.5 * (start + end)
    t = (np.arange(_RIDGE_SEGMENTS + 1) / _RIDGE_SEGMENTS)[:, np.newaxis]
    return (1.0 - t) ** 2 * start + 2.0 * t * (1.0 - t) * control + t * t * end


def _ridge(x, y):
    path = _ridge_path()
    out = np.zeros((y.size, x.size))
    lo = path.min(axis=0) - _RIDGE_HALF_WIDTH_M
    hi = path.max(axis=0) + _RIDGE_HALF_WIDTH_M
    rows, cols = _bbox_range(x, y, lo[0], hi[0], lo[1], hi[1])
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return out
    xx, yy = np.meshgrid(x[cols], y[rows])
    best_d2 = np.full(xx.shape, np.inf)
    best_t = np.zeros(xx.shape)
    for k in range(_RIDGE_SEGMENTS):
        ax, ay = path[k]
        dx, dy = path[k + 1] - path[k]
        u = np.clip(((xx - ax) * dx + (yy - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
        ex = xx - (ax + u * dx)
        ey = yy - (ay + u * dy)
        d2 = ex * ex + ey * ey
        closer = d2 < best_d2
        best_d2 = np.where(closer, d2, best_d2)
        best_t = np.where(closer, (k + u) / _RIDGE_SEGMENTS, best_t)
    # Highest in the middle (near CR1), 70% at the rims; (1 - q^2)^3 cross-section.
    crest = _RIDGE_HEIGHT_M * (0.7 + 1.2 * best_t * (1.0 - best_t))
    q2 = np.minimum(best_d2 / _RIDGE_HALF_WIDTH_M**2, 1.0)
    out[rows, cols] = crest * _cube(1.0 - q2)
    return out


def _massifs(x, y):
    out = np.zeros((y.size, x.size))
    for lat, lon, height, a, b, (cos, sin), plateau in _MASSIFS:
        cx, cy = _map_point(lat, lon)
        rows, cols = _bbox(x, y, cx, cy, max(a, b))
        if rows.start >= rows.stop or cols.start >= cols.stop:
            continue
        xx, yy = np.meshgrid(x[cols] - cx, y[rows] - cy)
        u = (cos * xx + sin * yy) / a
        v = (-sin * xx + cos * yy) / b
        q2 = np.minimum(u * u + v * v, 1.0)
        if plateau:
            shape = 1.0 - _smoothstep((np.sqrt(q2) - 0.5) / 0.5)
        else:
            shape = _cube(1.0 - q2)
        out[rows, cols] += height * shape
    return out


def _bbox_range(x, y, x_lo, x_hi, y_lo, y_hi):
    """Row and column slices of the pixel centres inside a map rectangle (y decreasing)."""
    c0, c1 = np.searchsorted(x, [x_lo, x_hi])
    r0, r1 = np.searchsorted(-y, [-y_hi, -y_lo])
    return slice(int(r0), int(r1)), slice(int(c0), int(c1))


def _bbox(x, y, cx, cy, reach):
    return _bbox_range(x, y, cx - reach, cx + reach, cy - reach, cy + reach)


# ---------------------------------------------------------------- random craters


# Rows per bin of the crater lists handed to the stamping kernel.
_ROW_BLOCK = 16


def _stamp_random_craters(out, x, y, res, craters):
    """Add the random craters, faded by size against ``res``, to ``out`` (rows y, cols x)."""
    weight = np.clip((2.0 * craters["radius_m"] / res - 1.0) / 2.0, 0.0, 1.0)
    reach = 3.0 * craters["radius_m"]
    half_x = 0.5 * (x[-1] - x[0]) + res
    half_y = 0.5 * (y[0] - y[-1]) + res
    mid_x = 0.5 * (x[0] + x[-1])
    mid_y = 0.5 * (y[0] + y[-1])
    seen = np.flatnonzero(
        (weight > 0.0)
        & (np.abs(craters["cx"] - mid_x) < half_x + reach)
        & (np.abs(craters["cy"] - mid_y) < half_y + reach)
    )
    # Bin the craters by the blocks of rows they may reach (a conservative
    # range), keeping crater order within each bin, so a row only visits
    # craters near it.
    rows = out.shape[0]
    first_row = np.floor((y[0] - (craters["cy"][seen] + reach[seen])) / res).astype(np.int64)
    last_row = np.ceil((y[0] - (craters["cy"][seen] - reach[seen])) / res).astype(np.int64)
    first_block = np.clip(first_row, 0, rows - 1) // _ROW_BLOCK
    last_block = np.clip(last_row, 0, rows - 1) // _ROW_BLOCK
    spans = last_block - first_block + 1
    members = np.repeat(seen, spans)
    blocks = np.repeat(first_block, spans) + (np.arange(spans.sum()) - np.repeat(np.cumsum(spans) - spans, spans))
    order = np.argsort(blocks, kind="stable")
    members = members[order]
    block_start = np.searchsorted(blocks[order], np.arange((rows - 1) // _ROW_BLOCK + 2))
    _stamp_kernel(
        out,
        x,
        y,
        craters["cx"],
        craters["cy"],
        craters["radius_m"],
        craters["depth_m"],
        craters["rim_m"],
        weight,
        block_start,
        members,
        _ROW_BLOCK,
    )


@njit(cache=True, parallel=True)
def _stamp_kernel(out, x, y, cx, cy, radius, depth, rim, weight, block_start, members, row_block):
    """Add simple craters (bowl + rim + ejecta to 3 R) to ``out`` in place.

    Row i visits the craters ``members[block_start[b]:block_start[b + 1]]``
    of its block b = i // row_block. Rows run in parallel; each pixel sums
    its craters in list order, so the result does not depend on the thread
    count.
    """
    rows, cols = out.shape
    res = x[1] - x[0] if cols > 1 else 1.0
    for i in prange(rows):
        yi = y[i]
        b = i // row_block
        for m in range(block_start[b], block_start[b + 1]):
            c = members[m]
            reach = 3.0 * radius[c]
            dy = yi - cy[c]
            if dy > reach or dy < -reach:
                continue
            j0 = max(0, int(np.floor((cx[c] - reach - x[0]) / res)))
            j1 = min(cols - 1, int(np.ceil((cx[c] + reach - x[0]) / res)))
            inv_r2 = 1.0 / (radius[c] * radius[c])
            for j in range(j0, j1 + 1):
                dx = x[j] - cx[c]
                q2 = (dx * dx + dy * dy) * inv_r2
                if q2 < 1.0:
                    h = rim[c] - depth[c] + depth[c] * q2
                elif q2 < 9.0:
                    q = np.sqrt(q2)
                    s = 1.0 / (q2 * q)
                    h = rim[c] * (s - 1.0 / 27.0) * (27.0 / 26.0)
                else:
                    continue
                out[i, j] += weight[c] * h


# ---------------------------------------------------------------- fractal noise


@njit(cache=True, inline="always")
def _node_gradient(iu, iv, key):
    """Pseudo-random gradient (gx, gy), components in [-1, 1], at a lattice node (splitmix64 hash)."""
    h = np.uint64(iu) * np.uint64(0x9E3779B97F4A7C15)
    h ^= np.uint64(iv) * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= key
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    gx = np.float64(h & np.uint64(0xFFFF)) / 32767.5 - 1.0
    gy = np.float64((h >> np.uint64(16)) & np.uint64(0xFFFF)) / 32767.5 - 1.0
    return gx, gy


@njit(cache=True, inline="always")
def _fade(t):
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


@njit(cache=True, parallel=True)
def _noise_kernel(out, x, y, cos, sin, offset_u, offset_v, wavelength, amplitude, keys):
    """Add gradient-noise octaves (Perlin 2-D, quintic fade) at points (x[j], y[i]) to ``out``.

    Octave k: lattice coordinates u = (cos x + sin y + offset_u) / wavelength,
    v = (-sin x + cos y + offset_v) / wavelength; value scaled by amplitude[k].
    Each pixel sums its octaves in order, whatever the thread count.
    Lattice-node gradients come from a hash of the node indices, so any point
    can be evaluated alone and the result is the same for every grid.
    """
    for i in prange(y.size):
        total = np.zeros(x.size)
        for k in range(wavelength.size):
            key = keys[k]
            # Gradients of the current lattice cell, rehashed only when the cell changes.
            cell_u = np.int64(-(2**62))
            cell_v = np.int64(-(2**62))
            g00x = g00y = g10x = g10y = g01x = g01y = g11x = g11y = 0.0
            for j in range(x.size):
                u = (cos[k] * x[j] + sin[k] * y[i]) / wavelength[k] + offset_u[k] / wavelength[k]
                v = (-sin[k] * x[j] + cos[k] * y[i]) / wavelength[k] + offset_v[k] / wavelength[k]
                fu0 = np.floor(u)
                fv0 = np.floor(v)
                fu = u - fu0
                fv = v - fv0
                iu = np.int64(fu0)
                iv = np.int64(fv0)
                if iu != cell_u or iv != cell_v:
                    cell_u = iu
                    cell_v = iv
                    g00x, g00y = _node_gradient(iu, iv, key)
                    g10x, g10y = _node_gradient(iu + 1, iv, key)
                    g01x, g01y = _node_gradient(iu, iv + 1, key)
                    g11x, g11y = _node_gradient(iu + 1, iv + 1, key)
                n00 = g00x * fu + g00y * fv
                n10 = g10x * (fu - 1.0) + g10y * fv
                n01 = g01x * fu + g01y * (fv - 1.0)
                n11 = g11x * (fu - 1.0) + g11y * (fv - 1.0)
                su = _fade(fu)
                sv = _fade(fv)
                lower = n00 + su * (n10 - n00)
                upper = n01 + su * (n11 - n01)
                total[j] += amplitude[k] * (lower + sv * (upper - lower))
        for j in range(x.size):
            out[i, j] += total[j]


def _noise(x, y, octaves, res):
    """Sum of the gradient-noise octaves at the points (x[j], y[i]), metres; shape (y.size, x.size).

    Octaves shorter than 4 pixels are faded out (none below 2 pixels).
    """
    kept = []
    for octave in octaves:
        weight = min(max((octave["wavelength_m"] / res - 2.0) / 2.0, 0.0), 1.0)
        if weight > 0.0:
            kept.append((octave, weight))
    out = np.zeros((np.size(y), np.size(x)))
    if kept:
        _noise_kernel(
            out,
            np.asarray(x, dtype=np.float64),
            np.asarray(y, dtype=np.float64),
            np.array([o["cos"] for o, _ in kept]),
            np.array([o["sin"] for o, _ in kept]),
            np.array([o["offset"][0] for o, _ in kept]),
            np.array([o["offset"][1] for o, _ in kept]),
            np.array([o["wavelength_m"] for o, _ in kept]),
            np.array([w * o["amplitude_m"] for o, w in kept]),
            np.array([o["key"] for o, _ in kept], dtype=np.uint64),
        )
    return out


def fractal_heights(n: int, resolution_m: float, seed: int, rms_slope_deg: float = 15.0,
                    beta: float = 2.2) -> np.ndarray:
    """Seeded spectral fractal heights (metres, float64, shape (n, n)) with a given RMS slope.

    The amplitude spectrum falls as k^-beta; the heights are scaled so that
    the RMS gradient at ``resolution_m`` is tan(``rms_slope_deg``). A rough
    test terrain for the horizon kernels (periodic, so it tiles seamlessly).
    """
    rng = np.random.default_rng(seed)
    k = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    k[0, 0] = 1.0
    spectrum = (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))) * k**-beta
    spectrum[0, 0] = 0.0
    z = np.real(np.fft.ifft2(spectrum))
    gy, gx = np.gradient(z, resolution_m)
    return z * np.tan(np.radians(rms_slope_deg)) / np.sqrt(np.mean(gx**2 + gy**2))
