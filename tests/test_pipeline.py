"""The pipeline's own logic: observer-height lists and exact layers over multi-year spans."""

import numpy as np
import pytest

from sitesel import pipeline
from sitesel.config import validate_config
from sitesel.terrain.synthetic import synthetic_south_pole


@pytest.fixture(scope="module")
def terrain():
    return synthetic_south_pole(size=40, resolution_m=500.0, seed=2)


def small_config(**time_table):
    return validate_config(
        {
            "observer": {"height_m": [0.0, 10.0]},
            "time": {"start": "2027-01-01", "step_hours": 24.0, **time_table},
            "horizon": {"azimuths": 72},
            "run": {"tile_px": 24},
        }
    )


@pytest.fixture(scope="module")
def exact_run(terrain, tmp_path_factory):
    return pipeline.compute(terrain, small_config(years=2), tile_dir=tmp_path_factory.mktemp("t"), quiet=True)


def test_every_height_gets_its_layers_and_a_mast_sees_more_sun(exact_run):
    assert list(exact_run.height_layers) == [0.0, 10.0]
    low, high = exact_run.height_layers[0.0], exact_run.height_layers[10.0]
    # The scored layers are the first height's.
    np.testing.assert_array_equal(exact_run.layers["sun_lit_fraction"], low["sun_lit_fraction"])
    valid = np.isfinite(low["sun_lit_fraction"])
    # A 10 m mast lowers every horizon, so no pixel loses sunlight and PSRs shrink.
    assert np.all(high["sun_lit_fraction"][valid] >= low["sun_lit_fraction"][valid] - 1e-6)
    assert high["sun_lit_fraction"][valid].mean() > low["sun_lit_fraction"][valid].mean()
    assert high["psr"].sum() <= low["psr"].sum()
    comparison = pipeline.height_comparison(exact_run)
    assert [c["observer_height_m"] for c in comparison] == [0.0, 10.0]
    assert comparison[1]["psr_area_km2"] <= comparison[0]["psr_area_km2"]


def test_multi_year_layers_are_exact_per_step(terrain, exact_run):
    # Every map layer comes from every time step, however long the span: check a few
    # pixels against the one-point per-step computation on the run's whole track.
    from sitesel.horizon import horizon_map
    from sitesel.visibility import point_series

    for name in ("sun_lit_fraction", "longest_night_h", "longest_blackout_h", "n_long_nights"):
        assert exact_run.layer_methods[name].startswith("exact per time step"), name
    track = exact_run.track
    assert len(track) > 700  # two years of 24 h steps
    lat, lon = terrain.grid.latlon()
    for row, col in [(5, 7), (20, 20), (33, 12)]:
        horizon_deg = horizon_map(terrain, 72, 0.0, rows=slice(row, row + 1), cols=slice(col, col + 1))[0, 0]
        reference = point_series(lat[row, col], lon[row, col], float(terrain.height_m[row, col]), 0.0,
                                 horizon_deg, track)
        for name in ("longest_night_h", "longest_blackout_h", "longest_sunlit_h"):
            assert exact_run.layers[name][row, col] == pytest.approx(reference[name], abs=track.step_hours), name
        for name in ("sun_lit_fraction", "earth_visible_fraction"):
            assert exact_run.layers[name][row, col] == pytest.approx(reference[name], abs=0.005), name
