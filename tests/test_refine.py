"""Rank-level refinement: the sites of the exact layers from bounds plus the landing areas scanned."""

import numpy as np
import pytest

from sitesel.ranking import footprint_reach_px, landing_footprints, rank_sites
from sitesel.refine import landing_window, optimistic_layers, rank_refining
from sitesel.scoring import profile_from_dict, score_layers
from sitesel.terrain.grid import Grid, latlon_to_xy
from sitesel.visibility.scan import BINNED_MARGIN
from test_ranking import smooth_layers

PROFILE = {
    "constraints": {"max_slope_deg": 10.0, "min_sun_lit_fraction": 0.3, "max_longest_night_h": 450.0},
    "weights": {"slope_deg": 1.0, "sun_lit_fraction": 2.0, "longest_night_h": 2.0, "earth_visible_fraction": 1.0,
                "longest_blackout_h": 0.5},
    "landing": {"radius_m": 250.0, "percentile": 5.0, "min_separation_m": 1500.0, "top_n": 6},
}


def exact_and_bounded(shape, seed):
    """Exact layers, and the same with binned fractions (within half the margin) and lower bounds
    on the gap lengths (0 to 150 h short) at every pixel: what the tiles of a long run give."""
    rng = np.random.default_rng(seed)
    exact = smooth_layers(shape, seed)
    exact["longest_blackout_h"] = (exact["longest_night_h"] * 0.7).astype(np.float32)
    exact["visibility_exact"] = np.ones(shape, np.float32)
    bounded = dict(exact)
    for name in ("sun_lit_fraction", "earth_visible_fraction"):
        noise = rng.uniform(-BINNED_MARGIN / 2, BINNED_MARGIN / 2, shape)
        bounded[name] = np.clip(exact[name] + noise, 0.0, 1.0).astype(np.float32)
    for name in ("longest_night_h", "longest_blackout_h"):
        bounded[name] = np.maximum(exact[name] - rng.uniform(0.0, 150.0, shape), 0.0).astype(np.float32)
    bounded["visibility_exact"] = np.zeros(shape, np.float32)
    return exact, {name: layer.copy() for name, layer in bounded.items()}


@pytest.mark.parametrize("seed", [3, 11, 19])
def test_refined_ranking_is_the_exact_ranking(seed):
    grid = Grid.centred((80, 80), 100.0, *latlon_to_xy(-88.0, 60.0))
    profile = profile_from_dict(PROFILE, "test")
    exact, layers = exact_and_bounded(grid.shape, seed)
    feasible, score, _ = score_layers(exact, profile)
    want = rank_sites(score, feasible, {**exact, "feasible": feasible, "score": score}, grid, profile)
    windows = []

    def refine(rows, cols):
        windows.append((rows, cols))
        for name in exact:
            layers[name][rows, cols] = exact[name][rows, cols]

    got, n_refined = rank_refining(layers, grid, profile, refine)
    assert len(want) >= 4
    key = ["row", "col", "score", "score_centre", "sun_lit_fraction", "longest_night_h", "feasible"]
    assert [[s[k] for k in key] for s in got] == [[s[k] for k in key] for s in want]
    # every site's landing area was scanned, and far from every pixel
    reach = footprint_reach_px(landing_footprints(grid, profile)[1])
    assert reach >= 2
    for site in got:
        assert (layers["visibility_exact"][landing_window((site["row"], site["col"]), reach, grid.shape)] == 1).all()
    assert n_refined == len(windows) >= len(want)
    assert (layers["visibility_exact"] == 1).mean() < 0.5


def test_optimistic_layers_never_score_below_the_exact_layers():
    grid = Grid.centred((80, 80), 100.0, *latlon_to_xy(-88.0, 60.0))
    profile = profile_from_dict(PROFILE, "test")
    exact, bounded = exact_and_bounded(grid.shape, 5)
    bounded["visibility_exact"][:10] = 1  # scanned rows keep their values
    for name in exact:
        bounded[name][:10] = exact[name][:10]
    optimistic = optimistic_layers(bounded)
    for name in ("sun_lit_fraction", "earth_visible_fraction"):
        np.testing.assert_array_equal(optimistic[name][:10], exact[name][:10])
        assert (optimistic[name][10:] >= exact[name][10:]).all(), name
        np.testing.assert_allclose(optimistic[name][10:], np.minimum(bounded[name][10:] + BINNED_MARGIN, 1.0),
                                   rtol=0, atol=1e-6)
    np.testing.assert_array_equal(optimistic["longest_night_h"], bounded["longest_night_h"])
    feasible_exact, score_exact, _ = score_layers(exact, profile)
    feasible_opt, score_opt, _ = score_layers(optimistic, profile)
    assert feasible_exact.sum() > 100
    assert not (feasible_exact.astype(bool) & ~feasible_opt.astype(bool)).any()
    good = feasible_exact == 1
    assert (score_opt[good] >= score_exact[good] - 1e-6).all()
    assert (score_opt[good] > score_exact[good]).mean() > 0.5


def test_landing_window_is_clipped_to_the_grid():
    assert landing_window((1, 5), 2, (10, 6)) == (slice(0, 4), slice(3, 6))
    assert landing_window((4, 4), 0, (10, 10)) == (slice(4, 5), slice(4, 5))


def test_landing_areas_searched_on_a_lattice_are_refused(monkeypatch):
    import sitesel.ranking as ranking

    monkeypatch.setattr(ranking, "_ROWS_PER_CENTRE", 3)
    grid = Grid.centred((40, 40), 100.0, *latlon_to_xy(-88.0, 60.0))
    exact, layers = exact_and_bounded(grid.shape, 1)
    with pytest.raises(ValueError, match="256 rows"):
        rank_refining(layers, grid, profile_from_dict(PROFILE, "test"), lambda rows, cols: None)
