"""Per-step Sun and Earth quantities shared by every pixel, grouped into longitude cells."""

from __future__ import annotations

import numpy as np
from numba import njit

from ..constants import MOON_RADIUS_M


class _BodySteps:
    """Per-time-step quantities of one body, shared by every pixel, and its cells.

    Cells group consecutive steps whose longitude stays in one bin of a level's
    width (and at most the level's step count); the second level splits each
    first-level cell further. A cell keeps the range of its steps' keys, so a
    pixel can decide a whole cell from the range of its threshold over the bin.
    """

    def __init__(self, position_m: np.ndarray, body_radius_m: float, n_bins: int, levels=None):
        distance_m = np.linalg.norm(position_m, axis=1)
        unit = position_m / distance_m[:, None]
        self.lam_deg = np.degrees(np.arctan2(unit[:, 1], unit[:, 0])) % 360.0
        self.n_bins = int(n_bins)
        self.bin = self.bin_of(self.lam_deg)
        delta_deg = np.degrees(np.arcsin(np.clip(unit[:, 2], -1.0, 1.0)))
        self.radius_deg = np.degrees(np.arcsin(body_radius_m / distance_m))
        self.mean_radius_deg = float(self.radius_deg.mean())
        self.mean_distance_m = float(distance_m.mean())
        parallax_change_deg = np.degrees(MOON_RADIUS_M / distance_m - MOON_RADIUS_M / self.mean_distance_m)
        self.key_deg = delta_deg - (self.radius_deg - self.mean_radius_deg) + parallax_change_deg
        self.max_radius_deg = float(self.radius_deg.max())
        # the whole track's key range: a pixel whose threshold clears it decides every step at once
        self.key_range_deg = (float(self.key_deg.min()), float(self.key_deg.max())) if len(self.key_deg) else (0.0, 0.0)
        # every bin a step falls in lies within the window: the widest cell and two table bins, and the
        # binned fractions' (0.05 deg) bins
        widest_deg = max((width for width, _ in levels), default=0.0) if levels is not None else 0.0
        self.lon_window = lon_window(self.lam_deg, widest_deg + 2.0 * 360.0 / self.n_bins + 0.1)
        if levels is None:
            return
        (width_a, cap_a), (width_b, cap_b) = levels
        self.n_bins_a = round(360.0 / width_a)
        self.n_bins_b = round(360.0 / width_b)
        # longitude, key and bin side by side: the scan reads a step from one cache line
        self.packed = np.ascontiguousarray(np.column_stack([self.lam_deg, self.key_deg, self.bin.astype(np.float64)]))
        self.cells = _build_cells(self.lam_deg, self.key_deg, self.n_bins_a, cap_a, self.n_bins_b, cap_b)
        # per level, the bins that hold a cell: a pixel evaluates its threshold's range only there
        self.used_bins = []
        for cells, n_bins_level in zip(self.cells[:2], (self.n_bins_a, self.n_bins_b)):
            used = np.zeros(n_bins_level, dtype=np.bool_)
            used[cells[1]] = True
            self.used_bins.append(used)
        # the first-level cells as the lower bounds read them (``scan._block_bounds``): float32, which
        # doubles the lanes of their vectorised loop, with the key ranges rounded outwards so that
        # no cell is decided that float64 would leave undecided; lengths (whole numbers, exact in
        # float32 up to 2**24 steps, the precision of the float32 layers anyway); each bin's slot
        # among the used bins
        a_start, a_bin, a_kmin, a_kmax = self.cells[0]
        self.used_a = np.flatnonzero(self.used_bins[0])
        slot = np.zeros(self.n_bins_a, dtype=np.int64)
        slot[self.used_a] = np.arange(self.used_a.size)
        self.bound_cells = (np.diff(a_start).astype(np.float32), slot[a_bin],
                            _round32_all(a_kmin, -np.inf), _round32_all(a_kmax, np.inf))

    def bin_of(self, lam_deg):
        """Threshold-table bin (of ``n_bins`` over 360 deg) of each longitude ``lam_deg`` in [0, 360)."""
        return np.minimum((np.asarray(lam_deg) * (self.n_bins / 360.0)).astype(np.int64), self.n_bins - 1)

    @property
    def scan_args(self):
        """What the exact scan and the lower bounds read of this track, as one tuple for the kernels."""
        # flat: numba's parallel kernels take tuples of arrays, but not tuples of tuples
        return (self.packed, *self.cells[0], *self.cells[1], self.cells[2], *self.used_bins, *self.key_range_deg,
                self.used_a, *self.bound_cells)


@njit(cache=True, inline="always")
def _round32(x, toward):
    """``x`` as float32, rounded toward ``toward`` (-inf or inf) when not exact."""
    rounded = np.float32(x)
    if (rounded > x) if toward < 0 else (rounded < x):
        return np.nextafter(rounded, np.float32(toward))
    return rounded


@njit(cache=True)
def _round32_all(values, toward):
    """:func:`_round32` of every element of ``values``."""
    out = np.empty(values.size, np.float32)
    for i in range(values.size):
        out[i] = _round32(values[i], toward)
    return out


def lon_window(lam_deg: np.ndarray, pad_deg: float) -> tuple[float, float]:
    """The shortest arc (w0, w1) of longitude holding every ``lam_deg``, grown by ``pad_deg``
    each side, in degrees with -180 <= w0 < w1 (w1 may exceed 360); (0, -1) (none) if it
    would span half a turn or more."""
    if len(lam_deg) == 0:
        return 0.0, -1.0
    lam = np.sort(np.asarray(lam_deg, dtype=np.float64) % 360.0)
    gaps = np.diff(np.append(lam, lam[0] + 360.0))
    i = int(np.argmax(gaps))  # the arc left empty runs from lam[i] to the next one
    w0 = lam[(i + 1) % lam.size] - pad_deg
    w1 = lam[i] + (360.0 if i + 1 < lam.size else 0.0) + pad_deg
    if w1 - w0 >= 180.0:
        return 0.0, -1.0
    turns = np.floor((w0 + 180.0) / 360.0)
    return float(w0 - 360.0 * turns), float(w1 - 360.0 * turns)


#: Cell levels of each body's track: (longitude bin width in deg, most steps per cell).
#: The Sun sweeps 360 deg a month; the Earth librates within ~16 deg and its
#: latitude (the key) moves up to ~0.06 deg/h, so its cells are narrower. Tuned on
#: candidate pixels of the built-in terrain over 18.6 years (148 -> 138 us per pixel
#: from (10, 48), (2, 8) and (2, 48), (0.5, 12)); nearby values are within 5%.
_CELL_LEVELS = {"sun": ((20.0, 48), (2.0, 8)), "earth": ((2.0, 48), (0.5, 6))}


@njit(cache=True)
def _build_cells(lam, key, n_bins_a, cap_a, n_bins_b, cap_b):
    """Two nested levels of cells over the steps (see :class:`_BodySteps`).

    Returns, per level, the cells' first steps (with the end appended), bins,
    least key and largest key; and for each first-level
    cell its first second-level cell (with the count appended).
    """
    n = lam.size
    a_start = np.empty(n + 1, np.int64)
    b_start = np.empty(n + 1, np.int64)
    a_first_b = np.empty(n + 1, np.int64)
    n_a = 0
    n_b = 0
    wa = 360.0 / n_bins_a
    wb = 360.0 / n_bins_b
    prev_a = -1
    prev_b = -1
    len_a = 0
    len_b = 0
    for t in range(n):
        ja = min(int(lam[t] / wa), n_bins_a - 1)
        jb = min(int(lam[t] / wb), n_bins_b - 1)
        if ja != prev_a or len_a >= cap_a:
            a_start[n_a] = t
            a_first_b[n_a] = n_b
            n_a += 1
            len_a = 0
            prev_b = -1
        if jb != prev_b or len_b >= cap_b:
            b_start[n_b] = t
            n_b += 1
            len_b = 0
        prev_a = ja
        prev_b = jb
        len_a += 1
        len_b += 1
    a_start[n_a] = n
    b_start[n_b] = n
    a_first_b[n_a] = n_b
    out = []
    for starts, count, n_bins in ((a_start, n_a, n_bins_a), (b_start, n_b, n_bins_b)):
        w = 360.0 / n_bins
        bins = np.empty(count, np.int64)
        kmin = np.empty(count)
        kmax = np.empty(count)
        for c in range(count):
            s = starts[c]
            bins[c] = min(int(lam[s] / w), n_bins - 1)
            lo = key[s]
            hi = key[s]
            for t in range(s + 1, starts[c + 1]):
                lo = min(lo, key[t])
                hi = max(hi, key[t])
            kmin[c] = lo
            kmax[c] = hi
        out.append((starts[:count + 1].copy(), bins, kmin, kmax))
    return out[0], out[1], a_first_b[:n_a + 1].copy()
