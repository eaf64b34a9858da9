"""Visibility layers, PSR and point series against plain per-time-step references."""

import numpy as np
import pytest

from sitesel.constants import MOON_RADIUS_M, SUN_RADIUS_M
from sitesel.ephemeris import body_track
from sitesel.terrain import Grid, Terrain, latlon_to_xy
from sitesel.visibility import (
    BinnedTrack,
    gap_statistics,
    point_series,
    psr_area_km2,
    psr_layers,
    visibility_fractions,
    visibility_layers,
)

K = 180
BEARINGS = np.arange(K) * 360.0 / K


@pytest.fixture(scope="module")
def track():
    return body_track("2027-01-01", "2027-07-01", 1.0, use_cache=False)


# ---------------------------------------------------------------- reference
def point_masks(lat_deg, lon_deg, radius_m, horizon_deg_1d, track):
    """Per step at one point, in plain numpy: Sun lit (any of the disc up), visible disc fraction,
    Earth seen."""
    phi, lam = np.radians(lat_deg), np.radians(lon_deg)
    up = np.array([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)])
    east = np.array([-np.sin(lam), np.cos(lam), 0.0])
    north = np.cross(up, east)
    observer = radius_m * up

    def look(position):
        v = position - observer
        d = np.linalg.norm(v, axis=1)
        el = np.degrees(np.arcsin(v @ up / d))
        az = np.degrees(np.arctan2(v @ east, v @ north))
        bearing = (az + lon_deg) % 360.0
        h = np.interp(bearing, BEARINGS, np.asarray(horizon_deg_1d, dtype=float), period=360.0)
        return el, h, d

    el, h, d = look(track.sun_m)
    rho = np.degrees(np.arcsin(SUN_RADIUS_M / d))
    u = np.clip((el - h) / rho, -1, 1)
    disc = 1 - (np.arccos(u) - u * np.sqrt(1 - u * u)) / np.pi
    el_e, h_e, _ = look(track.earth_m)
    return el + rho > h, disc, el_e > h_e


def reference(terrain, horizon_deg, track, observer_height_m, long_night_h=72.0):
    """Exact per-time-step computation, one pixel at a time, in plain numpy."""
    lat, lon = terrain.grid.latlon()
    out = {name: np.full(terrain.shape, np.nan) for name in
           ("sun_lit_fraction", "sun_disc_fraction", "longest_night_h", "earth_visible_fraction",
            "longest_blackout_h", "longest_sunlit_h", "n_long_nights")}
    for i in range(terrain.shape[0]):
        for j in range(terrain.shape[1]):
            if not np.isfinite(terrain.height_m[i, j]):
                continue
            radius_m = MOON_RADIUS_M + terrain.height_m[i, j] + observer_height_m
            lit, disc, seen = point_masks(lat[i, j], lon[i, j], radius_m, horizon_deg[i, j], track)
            out["sun_lit_fraction"][i, j] = lit.mean()
            out["sun_disc_fraction"][i, j] = disc.mean()
            out["earth_visible_fraction"][i, j] = seen.mean()
            nights = runs(~lit)
            out["longest_night_h"][i, j] = max(nights, default=0) * track.step_hours
            out["longest_sunlit_h"][i, j] = max(runs(lit), default=0) * track.step_hours
            out["longest_blackout_h"][i, j] = max(runs(~seen), default=0) * track.step_hours
            out["n_long_nights"][i, j] = sum(n * track.step_hours >= long_night_h for n in nights)
    return out


def runs(mask):
    """Lengths of the runs of True, by a plain loop."""
    lengths, n = [], 0
    for value in mask:
        if value:
            n += 1
        elif n:
            lengths.append(n)
            n = 0
    if n:
        lengths.append(n)
    return lengths


def rugged_horizon(shape, seed):
    """A horizon with a few broad ridges plus fine detail, per pixel, degrees."""
    rng = np.random.default_rng(seed)
    b = np.radians(BEARINGS)
    h = np.full(shape + (K,), 0.3)
    for n in (1, 2, 3, 5, 9):
        amp = rng.uniform(0, 1.5 / np.sqrt(n), shape)[..., None]
        h += amp * np.sin(n * b + rng.uniform(0, 2 * np.pi, shape)[..., None])
    h += rng.normal(0, 0.3, shape + (K,))
    return h.astype(np.float32)


def terrain_at(lat_deg, lon_deg, n, resolution_m=400.0, seed=0):
    x, y = latlon_to_xy(lat_deg, lon_deg)
    grid = Grid.centred((n, n), resolution_m, x, y)
    heights = np.random.default_rng(seed).normal(0, 50, grid.shape).astype(np.float32)
    return Terrain(heights, grid)


def test_nan_or_inf_in_a_horizon_gives_nan_layers(track):
    """A pixel whose horizon has a NaN (or inf) at any azimuth has no layers; its neighbours are unaffected."""
    terrain = terrain_at(-89.5, 0.0, 5)
    horizon = rugged_horizon(terrain.shape, seed=3)
    clean = visibility_layers(terrain, horizon, track, 2.0)
    horizon[1, 2, 17] = np.nan
    horizon[3, 0, K - 1] = np.inf
    # +inf and -inf in one horizon: the validity check sums the row, where they would make NaN, not cancel
    horizon[4, 4, 0], horizon[4, 4, 1] = np.inf, -np.inf
    keep = np.ones(terrain.shape, bool)
    keep[1, 2] = keep[3, 0] = keep[4, 4] = False
    for got in (visibility_layers(terrain, horizon, track, 2.0),
                visibility_fractions(terrain, horizon, BinnedTrack(track, K), 2.0)):
        for name, value in got.items():
            assert np.isnan(value[1, 2]) and np.isnan(value[3, 0]) and np.isnan(value[4, 4]), name
            if name in clean and name != "visibility_exact":
                assert np.isfinite(value[keep]).all(), name


def test_binned_tables_hold_zero_below_the_key_grid_and_each_bins_steps_above_it(track):
    """_binned_sum reads 0 for a threshold below the key grid and the tables' last columns above it,
    without touching the tables: their first column must be 0 and their last each bin's totals."""
    for name, (steps, tables) in BinnedTrack(track, K).bodies.items():
        lam_mean, _, _, below, disc, below_last, disc_last = tables
        assert below.shape == disc.shape == (lam_mean.size, below.shape[1])
        assert not below[:, 0].any() and not disc[:, 0].any(), name
        # every step counted in the last column, once: the track's length over the bins
        assert below_last.dtype == np.float64 and np.array_equal(below_last, below[:, -1])
        assert below_last.sum() == len(track) and (below_last >= 1).all(), name
        # and with its whole disc (the Sun; the Earth has no disc table)
        assert np.array_equal(disc_last, below_last if name == "sun" else np.zeros_like(below_last)), name


# ---------------------------------------------------------------- layers vs reference
@pytest.mark.parametrize("lat, n", [(-89.9, 24), (-85.0, 10), (-80.5, 10)])
def test_layers_match_reference(track, lat, n):
    terrain = terrain_at(lat, 60.0, n)
    terrain.height_m[3, 4] = np.nan
    horizon = rugged_horizon(terrain.shape, seed=n)
    got = visibility_layers(terrain, horizon, track, 2.0)
    want = reference(terrain, horizon, track, 2.0)
    assert np.isnan(got["sun_lit_fraction"][3, 4]) and np.isnan(got["longest_blackout_h"][3, 4])
    valid = np.isfinite(terrain.height_m)
    n_steps = len(track)
    for name in ("sun_lit_fraction", "earth_visible_fraction"):
        # exact per step but for the elevation error bound (a few thousandths of a degree): a
        # sunrise or sunset moved by a step here and there (measured: at most 3, 0.25 on average)
        err_steps = np.abs(got[name] - want[name])[valid] * n_steps
        assert err_steps.max() <= 3.0 and err_steps.mean() <= 0.3, name
    # the disc fraction is always the binned one (measured: at most 0.00076)
    assert np.abs(got["sun_disc_fraction"] - want["sun_disc_fraction"])[valid].max() < 0.002
    for name in ("longest_night_h", "longest_blackout_h", "longest_sunlit_h"):
        assert np.abs(got[name] - want[name])[valid].max() <= track.step_hours, name
    assert np.abs(got["n_long_nights"] - want["n_long_nights"])[valid].max() <= 1
    # Time-independent binned fractions: same tolerance.
    binned = visibility_fractions(terrain, horizon, BinnedTrack(track, K), 2.0)
    assert set(binned) == {"sun_lit_fraction", "sun_disc_fraction", "earth_visible_fraction"}
    for name, value in binned.items():
        assert np.isnan(value[3, 4])
        assert np.abs(value - want[name])[valid].max() < 0.005, name
    # Exact gap statistics of selected pixels.
    picks = [(0, 0), (n - 1, 2), (3, 4)]
    for stats in gap_statistics(terrain, horizon, track, 2.0, picks):
        i, j = stats["row"], stats["col"]
        if (i, j) == (3, 4):
            assert not stats["valid"]
            continue
        for name in ("longest_night_h", "longest_blackout_h", "longest_sunlit_h", "n_long_nights",
                     "sun_lit_fraction", "earth_visible_fraction"):
            assert stats[name] == pytest.approx(want[name][i, j], abs=1e-9), name
    # The rugged horizon really exercises both states.
    assert 0.05 < np.nanmean(got["sun_lit_fraction"]) < 0.95


def test_a_sun_grazing_the_skyline_for_a_few_steps_is_counted_exactly_and_is_no_psr(track):
    """Flat skylines a hair below the Sun disc's top elevations of the few highest steps: the
    exact scan counts exactly those steps, and permanent shadow (never lit) is decided exactly,
    also when a run scans such a pixel only because its binned fraction is too small to tell."""
    from sitesel.visibility import ExactWhere

    terrain = terrain_at(-89.9, 60.0, 2)
    lat, lon = terrain.grid.latlon()

    def disc_top_deg(i, j):
        """Elevations of the Sun disc's top over the steps, highest first, at pixel (i, j)."""
        phi, lam = np.radians(lat[i, j]), np.radians(lon[i, j])
        up = np.array([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)])
        v = track.sun_m - (MOON_RADIUS_M + terrain.height_m[i, j] + 2.0) * up
        d = np.linalg.norm(v, axis=1)
        return np.sort(np.degrees(np.arcsin(v @ up / d) + np.arcsin(SUN_RADIUS_M / d)))[::-1]

    # lit for no step, and for the fewest steps whose skyline can sit clear of the elevation error
    # bound from the next step's (at 0.1 deg from the pole, 2e-5 deg: see sitesel.visibility)
    top = disc_top_deg(0, 0)
    few = [n for n in range(1, 50) if top[n - 1] - top[n] > 2e-4][:3]
    lit_steps = dict(zip([(0, 0), (0, 1), (1, 0), (1, 1)], [0, *few]))
    assert len(lit_steps) == 4 and few[-1] < 20
    horizon = np.empty(terrain.shape + (K,), np.float32)
    for (i, j), n in lit_steps.items():
        top = disc_top_deg(i, j)
        assert n == 0 or top[n - 1] - top[n] > 2e-4
        horizon[i, j] = top[0] + 0.01 if n == 0 else 0.5 * (top[n - 1] + top[n])
    want = reference(terrain, horizon, track, 2.0)
    assert [round(want["sun_lit_fraction"][ij] * len(track)) for ij in lit_steps] == list(lit_steps.values())
    everywhere = visibility_layers(terrain, horizon, track, 2.0)
    refined = visibility_layers(terrain, horizon, track, 2.0, exact_where=ExactWhere(np.zeros(terrain.shape, bool)))
    assert [round(float(everywhere["sun_lit_fraction"][ij]) * len(track)) for ij in lit_steps] == list(lit_steps.values())
    # a run scans a pixel whose binned fraction is this small only until it is first lit (its count
    # stays the binned one): enough to tell permanent shadow exactly, with its Sun layers
    assert refined["longest_night_h"][0, 0] == len(track) * track.step_hours
    assert np.abs(refined["sun_lit_fraction"] - everywhere["sun_lit_fraction"]).max() < 0.005
    for got in (everywhere, refined):
        assert psr_layers(got["sun_lit_fraction"], terrain.grid)["psr"].tolist() == [[1, 0], [0, 0]]


def test_disc_visible_fraction_is_the_area_above_the_line_by_quadrature():
    """The closed form (shared by the layers and the reference above) against the disc's area above
    a horizontal line, integrated numerically: a disc centred u radii above the line shows the
    strip -u < y < 1 of the unit disc."""
    from scipy.integrate import quad

    from sitesel.visibility import disc_visible_fraction

    for u in np.linspace(-1.2, 1.2, 49):
        lo = min(max(-u, -1.0), 1.0)
        area, _ = quad(lambda t: 2.0 * np.sqrt(1.0 - t * t), lo, 1.0, epsabs=1e-13)
        assert disc_visible_fraction(u) == pytest.approx(area / np.pi, abs=1e-9)


def test_bare_sphere_at_pole():
    track = body_track("2027-01-01", "2028-01-01", 6.0, use_cache=False)
    grid = Grid.centred((3, 3), 20.0)
    terrain = Terrain(np.zeros(grid.shape, np.float32), grid)
    h = 2.0
    dip = -np.degrees(np.arccos(MOON_RADIUS_M / (MOON_RADIUS_M + h)))
    horizon = np.full(grid.shape + (K,), dip, dtype=np.float32)
    got = visibility_layers(terrain, horizon, track, h)
    want = reference(terrain, horizon, track, h)
    assert 0.4 < got["earth_visible_fraction"][1, 1] < 0.6
    # The Sun's elevation at the pole swings +/-1.55 deg over a draconic year: the disc's
    # top stays above the horizon a little more than half the time.
    assert 0.5 < got["sun_lit_fraction"][1, 1] < 0.8
    for name in ("sun_lit_fraction", "earth_visible_fraction", "sun_disc_fraction"):
        np.testing.assert_allclose(got[name], want[name], atol=0.005)


def test_deep_bowl_floor_is_psr(track):
    # 11 x 11 px at the pole: the centre 3 x 3 sits at the bottom of a bowl whose
    # walls rise 6 deg above its horizon in every direction (the Sun never
    # exceeds 1.6 deg); the outer pixels are on the rim and see a bare-sphere horizon.
    grid = Grid.centred((11, 11), 100.0)
    heights = np.zeros(grid.shape, np.float32)
    heights[4:7, 4:7] = -500.0
    terrain = Terrain(heights, grid)
    horizon = np.full(grid.shape + (K,), -0.05, dtype=np.float32)
    horizon[4:7, 4:7] = 6.0
    lit = visibility_layers(terrain, horizon, track, 0.0)["sun_lit_fraction"]
    psr = psr_layers(lit, grid)
    expected = np.zeros(grid.shape, np.uint8)
    expected[4:7, 4:7] = 1
    np.testing.assert_array_equal(psr["psr"], expected)
    assert lit[0, 0] > 0.2
    # Rim pixel (0, 0) is 4 px from the nearest PSR pixel (4, 4) along each axis.
    assert psr["psr_distance_m"][0, 0] == pytest.approx(np.hypot(4, 4) * 100.0)


# ---------------------------------------------------------------- PSR
def test_psr_distance_brute_force():
    rng = np.random.default_rng(3)
    grid = Grid.centred((17, 23), 30.0)
    frac = rng.uniform(0, 1, grid.shape).astype(np.float32)
    frac[rng.uniform(size=grid.shape) < 0.05] = 0.0
    frac[0, 0] = np.nan
    got = psr_layers(frac, grid)
    rr, cc = np.nonzero(got["psr"])
    assert got["psr"][0, 0] == 0 and np.isnan(got["psr_distance_m"][0, 0])
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if (i, j) == (0, 0):
                continue
            brute = np.sqrt((rr - i) ** 2 + (cc - j) ** 2).min() * 30.0
            assert got["psr_distance_m"][i, j] == pytest.approx(brute, rel=1e-6)


def test_psr_none():
    grid = Grid.centred((4, 4), 10.0)
    got = psr_layers(np.full((4, 4), 0.5, np.float32), grid)
    assert got["psr"].sum() == 0 and np.all(np.isinf(got["psr_distance_m"]))


def test_psr_area_is_true_area_on_the_sphere():
    # A disc of PSR pixels around the pole, 10 deg in colatitude: its area is the
    # spherical cap's, which is 0.8% smaller than the disc's map area.
    colat = np.radians(10.0)
    rho_m = 2 * MOON_RADIUS_M * np.tan(colat / 2)
    grid = Grid.centred((400, 400), 2 * rho_m * 1.02 / 400)
    x, y = grid.xy()
    psr = (np.hypot(x, y) <= rho_m).astype(np.uint8)
    cap_km2 = 2 * np.pi * MOON_RADIUS_M**2 * (1 - np.cos(colat)) / 1e6
    got = psr_area_km2(psr, grid)
    assert got == pytest.approx(cap_km2, rel=0.003)
    nominal = psr.sum() * grid.resolution_m**2 / 1e6
    assert nominal / cap_km2 > 1.006


# ---------------------------------------------------------------- point series
def test_point_series_matches_the_per_step_reference_and_its_months(track):
    terrain = terrain_at(-88.0, -30.0, 3)
    horizon = rugged_horizon(terrain.shape, seed=7)
    lat, lon = terrain.grid.latlon()
    s = point_series(lat[1, 1], lon[1, 1], terrain.height_m[1, 1], 10.0, horizon[1, 1], track)
    lit, disc, seen = point_masks(lat[1, 1], lon[1, 1], MOON_RADIUS_M + terrain.height_m[1, 1] + 10.0, horizon[1, 1],
                                  track)
    assert len(s["sun_elevation_deg"]) == len(track)
    np.testing.assert_array_equal(s["sun_lit"], lit)
    np.testing.assert_array_equal(s["earth_visible"], seen)
    np.testing.assert_allclose(s["sun_disc_visible"], disc, rtol=0, atol=1e-9)
    assert s["sun_lit_fraction"] == lit.mean() and s["earth_visible_fraction"] == seen.mean()
    assert s["longest_night_h"] == max(runs(~lit)) * track.step_hours
    assert s["longest_blackout_h"] == max(runs(~seen)) * track.step_hours
    # months by the calendar text of each step's UTC time, counted by a plain loop
    by_month = {}
    for t, lit_t, seen_t in zip(track.times_utc, lit, seen):
        n, n_lit, n_seen = by_month.get(str(t)[:7], (0, 0, 0))
        by_month[str(t)[:7]] = (n + 1, n_lit + lit_t, n_seen + seen_t)
    assert [m["month"] for m in s["monthly_sun_lit_fraction"]] == sorted(by_month)
    for m in s["monthly_sun_lit_fraction"]:
        n, n_lit, n_seen = by_month[m["month"]]
        assert m["sun_lit_fraction"] == pytest.approx(n_lit / n, abs=1e-12)
        assert m["earth_visible_fraction"] == pytest.approx(n_seen / n, abs=1e-12)
    # the longest nights, longest first, each a run of unlit steps from its start to its end
    hours = [night["hours"] for night in s["longest_nights"]]
    assert hours == [n * track.step_hours for n in sorted(runs(~lit), reverse=True)[:5]]
    for night in s["longest_nights"]:
        i = int(np.flatnonzero(track.times_utc == np.datetime64(night["start"]))[0])
        n = round(night["hours"] / track.step_hours)
        assert not lit[i:i + n].any() and (i == 0 or lit[i - 1]) and (i + n == len(lit) or lit[i + n])
        assert np.datetime64(night["end"]) - np.datetime64(night["start"]) == np.timedelta64(int(night["hours"] * 3600), "s")


def test_point_series_at_pole_bare_sphere(track):
    s = point_series(-90.0, 0.0, 0.0, 0.0, np.zeros(K), track)
    # At the pole the elevation is minus the sub-body latitude.
    sun_lat = np.degrees(np.arcsin(track.sun_m[:, 2] / np.linalg.norm(track.sun_m, axis=1)))
    np.testing.assert_allclose(s["sun_elevation_deg"], -sun_lat, atol=1e-3)
    assert np.abs(s["earth_elevation_deg"]).max() < 7.2
    # Earth's topocentric elevation is its geocentric one lowered by the parallax (~0.26 deg).
    earth_lat = np.degrees(np.arcsin(track.earth_m[:, 2] / np.linalg.norm(track.earth_m, axis=1)))
    drop = -earth_lat - s["earth_elevation_deg"]
    assert 0.23 < drop.min() and drop.max() < 0.29


def test_horizon_shape_checked(track):
    terrain = terrain_at(-89.0, 0.0, 4)
    with pytest.raises(ValueError, match="shape"):
        visibility_layers(terrain, np.zeros((3, 4, K), np.float32), track, 2.0)


def test_window_and_progress(track):
    terrain = terrain_at(-89.0, 0.0, 6)
    horizon = rugged_horizon((6, 6), seed=1)
    full = visibility_layers(terrain, horizon, track, 2.0)
    seen = []
    part = visibility_layers(terrain, horizon[2:5, 1:4], track, 2.0, rows=slice(2, 5), cols=slice(1, 4),
                             progress=seen.append)
    assert sum(seen) == 9
    np.testing.assert_array_equal(part["sun_lit_fraction"], full["sun_lit_fraction"][2:5, 1:4])


def test_cell_scan_counts_every_step_like_a_plain_loop():
    """The cell-by-cell scan decides whole cells at once; it must count exactly what a
    plain loop over every step, with the same threshold curve, counts."""
    from sitesel.visibility import nodes, series, track

    long_track = body_track("2026-01-01", "2029-01-01", 3.0, use_cache=False)
    terrain = terrain_at(-89.5, 30.0, 4)
    horizon = rugged_horizon(terrain.shape, seed=7)
    horizon[0, 0] = 12.0  # never lit: whole cells hidden
    horizon[0, 1] = -3.0  # always lit: whole cells visible
    got = visibility_layers(terrain, horizon, long_track, 2.0, long_night_h=48.0)
    px = nodes._Pixels(terrain, horizon, 2.0, None, None)
    n_bins = 2 * K
    bearing = np.radians(BEARINGS)
    for p in range(terrain.height_m.size):
        i, j = divmod(p, terrain.shape[1])
        curves = [np.empty(K) for _ in range(4)]
        sun = track._BodySteps(long_track.sun_m, SUN_RADIUS_M, n_bins)
        earth = track._BodySteps(long_track.earth_m, 0.0, n_bins)
        # every node of the whole turn, for both bodies (the kernels take the Earth's near its track only)
        for offset_deg, distance_m, lam, delta in ((sun.mean_radius_deg, sun.mean_distance_m, *curves[:2]),
                                                   (0.0, earth.mean_distance_m, *curves[2:])):
            nodes._horizon_nodes(px.east[p], px.north[p], px.up[p], np.cos(np.radians(px.lon_deg[p])),
                                 np.sin(np.radians(px.lon_deg[p])), px.r_m[p], px.horizon_deg[p], np.cos(bearing),
                                 np.sin(bearing), offset_deg, distance_m, 0, lam, delta)
        for body, lam, delta in ((sun, curves[0], curves[1]), (earth, curves[2], curves[3])):
            table = nodes._threshold_table(lam, delta, n_bins)
            margin = np.array([nodes._margin(*table, body.lam_deg[t], body.bin[t], body.key_deg[t])
                               for t in range(len(long_track))])
            visible = margin > 0.0
            if body is sun:
                assert got["sun_lit_fraction"][i, j] == pytest.approx(visible.mean(), abs=1e-6)
                dark = runs(~visible)
                assert got["longest_night_h"][i, j] == max(dark, default=0) * 3.0
                assert got["longest_sunlit_h"][i, j] == max(runs(visible), default=0) * 3.0
                assert got["n_long_nights"][i, j] == sum(n * 3.0 >= 48.0 for n in dark)
                # the disc fraction alone is binned by longitude (within 0.5 percentage points)
                disc = series.disc_visible_fraction(np.where(visible, margin / body.radius_deg - 1.0, -1.0))
                assert got["sun_disc_fraction"][i, j] == pytest.approx(disc.mean(), abs=0.005)
            else:
                assert got["earth_visible_fraction"][i, j] == pytest.approx(visible.mean(), abs=1e-6)
                assert got["longest_blackout_h"][i, j] == max(runs(~visible), default=0) * 3.0
    assert got["sun_lit_fraction"][0, 0] == 0.0 and got["sun_lit_fraction"][0, 1] == 1.0


def whole_cell_runs(cells, lo, hi, long_steps):
    """Lower bounds on (longest hidden, longest visible, hidden runs of at least ``long_steps``)
    from whole cells, by a plain loop: a cell is visible (hidden) throughout when its keys lie
    below (at or above) the threshold's least (largest) value over its bin, and undecided
    otherwise; long runs count once per stretch between visible cells."""
    starts, bins, kmin, kmax = cells
    state = np.where(kmax < lo[bins] - 1e-9, 1, np.where(kmin >= hi[bins] + 1e-9, 0, -1))
    longest = {0: 0, 1: 0}
    run = {0: 0, 1: 0}
    n_long, long_in_stretch = 0, False
    for cell_state, n in zip(state, np.diff(starts)):
        for s in (0, 1):
            run[s] = run[s] + n if cell_state == s else 0
            longest[s] = max(longest[s], run[s])
        if cell_state == 1:
            n_long += long_in_stretch
            long_in_stretch = False
        long_in_stretch = long_in_stretch or run[0] >= long_steps
    return longest[0], longest[1], n_long + long_in_stretch


def test_unscanned_pixels_get_whole_cell_runs_as_lower_bounds():
    """Pixels left unscanned get as gap layers the runs of whole first-level cells decided
    by the threshold's range over each cell's bin (found by brute force here), never more
    than the exact values; a pixel never lit still gets its exact Sun layers."""
    from sitesel.visibility import ExactWhere, nodes
    from sitesel.visibility.track import _CELL_LEVELS, _BodySteps

    long_track = body_track("2026-01-01", "2029-01-01", 3.0, use_cache=False)
    terrain = terrain_at(-89.5, 30.0, 5)
    horizon = rugged_horizon(terrain.shape, seed=11)
    horizon[0, 0] = 12.0  # never lit
    horizon[0, 1] = -3.0  # always lit
    exact = visibility_layers(terrain, horizon, long_track, 2.0, long_night_h=48.0)
    got = visibility_layers(terrain, horizon, long_track, 2.0, long_night_h=48.0,
                            exact_where=ExactWhere(np.zeros(terrain.shape, bool)))
    assert (got["visibility_exact"] == 0).all()
    assert got["sun_lit_fraction"][0, 0] == 0.0 and got["longest_night_h"][0, 0] == exact["longest_night_h"][0, 0]
    for name in ("longest_night_h", "longest_sunlit_h", "n_long_nights", "longest_blackout_h"):
        assert np.isfinite(got[name]).all(), name
        assert (got[name] <= exact[name]).all(), name
    px = nodes._Pixels(terrain, horizon, 2.0, None, None)
    n_bins = 2 * K
    bodies = {"sun": _BodySteps(long_track.sun_m, SUN_RADIUS_M, n_bins, _CELL_LEVELS["sun"]),
              "earth": _BodySteps(long_track.earth_m, 0.0, n_bins, _CELL_LEVELS["earth"])}
    bearing = np.radians(BEARINGS)
    for p in range(terrain.height_m.size):
        i, j = divmod(p, terrain.shape[1])
        for name, body in bodies.items():
            lam, delta = np.empty(K), np.empty(K)
            offset_deg = body.mean_radius_deg if name == "sun" else 0.0
            nodes._horizon_nodes(px.east[p], px.north[p], px.up[p], np.cos(np.radians(px.lon_deg[p])),
                                 np.sin(np.radians(px.lon_deg[p])), px.r_m[p], px.horizon_deg[p], np.cos(bearing),
                                 np.sin(bearing), offset_deg, body.mean_distance_m, 0, lam, delta)
            lam_e, delta_e, slope_e, _ = nodes._threshold_table(lam, delta, n_bins)

            def curve(x):
                k = np.searchsorted(lam_e, x, side="right") - 1
                return delta_e[k] + slope_e[k] * (x - lam_e[k])

            width = 360.0 / body.n_bins_a
            lo, hi = np.zeros(body.n_bins_a), np.zeros(body.n_bins_a)
            for b in range(body.n_bins_a):
                x0, x1 = b * width, (b + 1) * width
                values = np.concatenate([[curve(x0), curve(x1)], delta_e[(lam_e > x0) & (lam_e < x1)]])
                lo[b], hi[b] = values.min(), values.max()
            night, lit, n_long = whole_cell_runs(body.cells[0], lo, hi, 48.0 / 3.0)
            if name == "sun" and (i, j) != (0, 0):
                assert got["longest_night_h"][i, j] == night * 3.0
                assert got["longest_sunlit_h"][i, j] == lit * 3.0
                assert got["n_long_nights"][i, j] == n_long
            elif name == "earth":
                assert got["longest_blackout_h"][i, j] == night * 3.0


def test_exact_where_scans_the_candidates_or_none():
    """ExactWhere scans the candidates (eligible pixels whose binned fractions can meet the
    limits) exactly; the others get binned fractions and lower bounds; with no pixel
    eligible (a run refined by rank), none is scanned."""
    from sitesel.visibility import ExactWhere

    long_track = body_track("2026-01-01", "2028-01-01", 6.0, use_cache=False)
    terrain = terrain_at(-89.0, 60.0, 8)
    horizon = rugged_horizon(terrain.shape, seed=4)
    exact = visibility_layers(terrain, horizon, long_track, 2.0)
    eligible = np.ones(terrain.shape, bool)
    eligible[:, :2] = False
    got = visibility_layers(terrain, horizon, long_track, 2.0,
                            exact_where=ExactWhere(eligible, min_sun_lit_fraction=0.3))
    candidates = eligible & (exact["sun_lit_fraction"] >= 0.3 - 0.01)
    # the binned fractions are within 0.5 percentage points, so the candidates are those a
    # margin of 1 point gives, but for pixels within 0.5 points of the edge
    near_edge = np.abs(exact["sun_lit_fraction"] - 0.29) < 0.005
    scanned = got["visibility_exact"] == 1
    np.testing.assert_array_equal(scanned[~near_edge], candidates[~near_edge])
    assert scanned.any() and not scanned.all()
    none = visibility_layers(terrain, horizon, long_track, 2.0,
                             exact_where=ExactWhere(np.zeros(terrain.shape, bool), min_sun_lit_fraction=0.3))
    assert (none["visibility_exact"] == 0).all()
    for result, where in ((got, scanned), (none, np.zeros(terrain.shape, bool))):
        for name, layer in exact.items():
            if name != "visibility_exact":
                np.testing.assert_array_equal(result[name][where], layer[where], err_msg=name)
        for name in ("longest_night_h", "longest_blackout_h", "longest_sunlit_h", "n_long_nights"):
            assert (result[name][~where] <= exact[name][~where]).all(), name
        np.testing.assert_array_equal(result["sun_disc_fraction"], exact["sun_disc_fraction"])


def test_float32_key_ranges_are_rounded_outwards():
    """The lower bounds compare float32 copies of the key ranges and thresholds: each is
    rounded toward the side that can only leave a cell undecided, to the nearest float32."""
    from sitesel.visibility.track import _round32_all

    values = np.concatenate([np.random.default_rng(5).normal(0.0, 2.0, 1000), [0.0, 1.5, -0.25, 1e-9]])
    down, up = _round32_all(values, -np.inf), _round32_all(values, np.inf)
    assert down.dtype == up.dtype == np.float32
    assert (down.astype(np.float64) <= values).all() and (up.astype(np.float64) >= values).all()
    exact = values.astype(np.float32).astype(np.float64) == values
    np.testing.assert_array_equal(down[exact], up[exact])
    np.testing.assert_array_equal(np.nextafter(down[~exact], np.float32(np.inf)), up[~exact])


def test_bounds_on_the_bare_sphere_miss_at_most_a_cell_at_each_end():
    """On a bare sphere at the pole every cell wholly inside a night (or a sunlit or Earth-lit
    spell) is decided, so the bound misses at most the cell at each end of the span."""
    from sitesel.visibility import ExactWhere
    from sitesel.visibility.track import _CELL_LEVELS, _BodySteps

    track = body_track("2026-01-01", "2028-01-01", 6.0, use_cache=False)
    grid = Grid.centred((3, 3), 20.0)
    terrain = Terrain(np.zeros(grid.shape, np.float32), grid)
    dip = -np.degrees(np.arccos(MOON_RADIUS_M / (MOON_RADIUS_M + 2.0)))
    horizon = np.full(grid.shape + (K,), dip, dtype=np.float32)
    exact = visibility_layers(terrain, horizon, track, 2.0)
    got = visibility_layers(terrain, horizon, track, 2.0, exact_where=ExactWhere(np.zeros(grid.shape, bool)))
    assert (got["visibility_exact"] == 0).all()
    np.testing.assert_array_equal(got["n_long_nights"], exact["n_long_nights"])
    for name, position_m, radius_m, level in (("longest_night_h", track.sun_m, SUN_RADIUS_M, "sun"),
                                               ("longest_sunlit_h", track.sun_m, SUN_RADIUS_M, "sun"),
                                               ("longest_blackout_h", track.earth_m, 0.0, "earth")):
        cells = _BodySteps(position_m, radius_m, 2 * K, _CELL_LEVELS[level]).cells[0]
        longest_cell_h = np.diff(cells[0]).max() * track.step_hours
        missed = exact[name] - got[name]
        assert (missed >= 0).all() and (missed <= 2 * longest_cell_h).all(), (name, missed, longest_cell_h)
        assert (got[name] >= 0.9 * exact[name]).all(), name  # nights of months, blackouts of two weeks


@pytest.mark.parametrize("n_az, n_range_bins", [(360, 18), (360, 180), (100, 7), (7, 50), (90, 360)])
def test_bin_ranges_match_brute_force(n_az, n_range_bins):
    """A threshold's least and largest value over each bin, found from the table's own bins,
    equal the extremes of the piecewise-linear curve at the bin's edges and inner nodes,
    also where the table's bins and the range bins do not share edges exactly."""
    from sitesel.visibility import nodes, scan

    rng = np.random.default_rng(n_az + n_range_bins)
    lam = np.sort(rng.uniform(0.0, 360.0, n_az))
    lam[0] = 0.0  # a node exactly on a bin edge
    lam = np.unique(lam)
    delta = rng.normal(0.0, 2.0, lam.size)
    table = nodes._threshold_table(lam, delta, 2 * n_az)
    lam_e, delta_e, slope_e, _ = table
    used = np.ones(n_range_bins, dtype=np.bool_)
    used[1] = False  # unused bins are left alone
    lo = np.full(n_range_bins, -99.0)
    hi = np.full(n_range_bins, -99.0)
    scan._bin_ranges(*table, used, lo, hi)

    def curve(x):
        i = np.searchsorted(lam_e, x, side="right") - 1
        return delta_e[i] + slope_e[i] * (x - lam_e[i])

    width = 360.0 / n_range_bins
    for j in range(n_range_bins):
        if not used[j]:
            assert lo[j] == hi[j] == -99.0
            continue
        x0, x1 = j * width, j * width + width
        inner = delta_e[(lam_e > x0) & (lam_e < x1)]
        values = np.concatenate([[curve(x0), curve(x1)], inner])
        assert lo[j] == pytest.approx(values.min(), abs=1e-12), j
        assert hi[j] == pytest.approx(values.max(), abs=1e-12), j


def test_lon_window_is_the_shortest_arc_holding_every_longitude():
    from sitesel.visibility.track import lon_window

    assert lon_window(np.array([355.0, 359.0, 0.5, 8.0]), 1.0) == pytest.approx((-6.0, 9.0))
    assert lon_window(np.array([170.0, 190.0, 185.0]), 2.0) == pytest.approx((168.0, 192.0))
    # w0 is kept within [-180, 180): an arc from 200 to 210 deg is (-160, -150)
    assert lon_window(np.array([200.0, 210.0]), 0.0) == pytest.approx((-160.0, -150.0))
    assert lon_window(np.array([0.0, 120.0, 240.0]), 0.0) == (0.0, -1.0)  # no arc under half a turn
    assert lon_window(np.array([10.0, 20.0]), 90.0) == (0.0, -1.0)
    assert lon_window(np.array([]), 1.0) == (0.0, -1.0)


@pytest.mark.parametrize("lat_deg, lift_deg, n_az", [(-89.9, 0.0, 360), (-85.0, 0.0, 90), (-80.0, 25.0, 360)])
def test_earth_table_near_its_track_matches_the_whole_turn(track, lat_deg, lift_deg, n_az):
    """The Earth's threshold table built from the nodes near its track only gives the
    whole-turn table's margins at every step of the track and its ranges over every bin the
    cells use, bit for bit; also where a steep skyline far from the pole puts the nodes'
    longitudes far from their bearings (the span of nodes then widens)."""
    from sitesel.visibility import nodes, scan
    from sitesel.visibility.track import _CELL_LEVELS, _BodySteps

    terrain = terrain_at(lat_deg, 40.0, 2)
    rng = np.random.default_rng(n_az)
    horizon = (lift_deg + rng.normal(0.0, 2.0, (4, n_az))).astype(np.float32)
    px = nodes._Pixels(terrain, horizon.reshape(2, 2, n_az), 2.0, None, None)
    n_bins = 2 * n_az
    earth = _BodySteps(track.earth_m, 0.0, n_bins, _CELL_LEVELS["earth"])
    assert earth.lon_window[1] > earth.lon_window[0]
    cos_b, sin_b = nodes._bearing_cos_sin(n_az)
    for p in range(4):
        args = (px.east[p], px.north[p], px.up[p], px.lon_deg[p], px.r_m[p], px.horizon_deg[p], cos_b, sin_b,
                0.26, 1.5e11, earth.mean_distance_m, n_bins)
        _, near = nodes._pixel_thresholds(*args, earth.lon_window)
        _, whole = nodes._pixel_thresholds(*args, (0.0, -1.0))
        assert near[0].size < whole[0].size
        for table in (near, whole):
            assert table[0].size >= 2
        margins = [np.array([nodes._margin(*table, lam, b, key)
                             for lam, b, key in zip(earth.lam_deg, earth.bin, earth.key_deg)]) for table in (near, whole)]
        np.testing.assert_array_equal(margins[0], margins[1])
        for used in earth.used_bins:
            ranges = []
            for table in (near, whole):
                lo, hi = np.full(used.size, np.nan), np.full(used.size, np.nan)
                scan._bin_ranges(*table, used, lo, hi)
                ranges.append((lo, hi))
            np.testing.assert_array_equal(ranges[0][0], ranges[1][0])
            np.testing.assert_array_equal(ranges[0][1], ranges[1][1])
