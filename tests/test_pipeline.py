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


def test_surface_method_says_how_wide_a_coarse_dems_footprint_is(exact_run):
    # 500 m pixels: the 20 m baseline takes the least footprint, 3 x 3 px, 1500 m across
    method = exact_run.layer_methods["slope_deg"]
    assert "3 x 3 px for a 20 m baseline: 1500 m across at this DEM's resolution" in method
    assert exact_run.layer_methods["roughness_m"] == method


def test_tiles_of_any_shape_give_the_layers_of_one_whole_tile(terrain, exact_run, tmp_path):
    # exact_run's tiles (24 px: 24 x 24, 24 x 16, 16 x 24, 16 x 16, two heights each) reuse
    # one horizon buffer
    config = small_config(years=2)
    config["run"]["tile_px"] = 64
    whole = pipeline.compute(terrain, config, tile_dir=tmp_path, quiet=True)
    for height_m, layers in exact_run.height_layers.items():
        for name, layer in layers.items():
            np.testing.assert_array_equal(layer, whole.height_layers[height_m][name], err_msg=name)


def test_scratch_hands_out_one_buffer_at_any_shape_no_larger():
    scratch = pipeline.Scratch()
    first = scratch.array((4, 5, 3))
    smaller = scratch.array((2, 3, 3))
    assert smaller.shape == (2, 3, 3) and smaller.dtype == np.float32 and smaller.flags.c_contiguous
    assert np.shares_memory(first, smaller)
    larger = scratch.array((5, 5, 3))
    assert larger.shape == (5, 5, 3) and not np.shares_memory(first, larger)


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


def refine_always(patch):
    """Make every run refine (as a long run over a large map does): budgets of 0 pixel-steps and 0 steps."""
    patch.setattr(pipeline, "EXACT_BUDGET_PIXEL_STEPS", 0)
    patch.setattr(pipeline, "REFINE_MIN_STEPS", 0)


@pytest.fixture(scope="module")
def refined_run(terrain, tmp_path_factory):
    # a budget of 0 pixel-steps: every run scans every step only where it matters
    patch = pytest.MonkeyPatch()
    refine_always(patch)
    try:
        return pipeline.compute(terrain, small_config(years=2), tile_dir=tmp_path_factory.mktemp("t"), quiet=True)
    finally:
        patch.undo()


def test_refined_run_ranks_as_the_exact_run(exact_run, refined_run):
    from sitesel.ranking import footprint_reach_px, landing_footprints
    from sitesel.refine import landing_window, optimistic_layers
    from sitesel.scoring import score_layers

    scanned = refined_run.layers["visibility_exact"] == 1
    valid = np.isfinite(exact_run.layers["sun_lit_fraction"])
    assert np.all(exact_run.layers["visibility_exact"][valid] == 1)
    # the landing areas of the sites were scanned, and only a part of the map
    assert 0 < scanned.sum() < valid.sum() / 2
    reach = footprint_reach_px(landing_footprints(refined_run.terrain.grid, refined_run.profile)[1])
    for site in refined_run.sites:
        window = landing_window((site["row"], site["col"]), reach, scanned.shape)
        assert scanned[window][valid[window]].all()
    for name in ("psr", "psr_distance_m"):
        np.testing.assert_array_equal(refined_run.layers[name], exact_run.layers[name], err_msg=name)
    for name in ("feasible", "score"):
        np.testing.assert_array_equal(refined_run.layers[name][scanned], exact_run.layers[name][scanned], err_msg=name)
    # elsewhere the optimistic layers the ranking reads never score below the exact ones
    feasible, score, _ = score_layers(optimistic_layers(refined_run.layers), refined_run.profile)
    good = exact_run.layers["feasible"] == 1
    assert good.any() and feasible[good].all()
    assert (score[good] >= exact_run.layers["score"][good]).all()
    key = [(s["rank"], s["row"], s["col"], s["score"], s["longest_night_h"]) for s in exact_run.sites]
    assert key and key == [(s["rank"], s["row"], s["col"], s["score"], s["longest_night_h"])
                           for s in refined_run.sites]
    # the report's other heights: exact at the sites
    for height_m in refined_run.height_layers:
        for site in refined_run.sites:
            for name in ("longest_night_h", "sun_lit_fraction", "longest_blackout_h"):
                r, c = site["row"], site["col"]
                assert (refined_run.height_layers[height_m][name][r, c]
                        == exact_run.height_layers[height_m][name][r, c]), (height_m, name)
    assert "ranked sites" in refined_run.layer_methods["longest_night_h"]
    assert refined_run.timings_s["refinement"] > 0


def test_refined_layers_are_exact_or_binned(exact_run, refined_run):
    for height_m, exact in exact_run.height_layers.items():
        refined = refined_run.height_layers[height_m]
        scanned = refined["visibility_exact"] == 1
        rest = refined["visibility_exact"] == 0
        assert rest.any()
        for name in pipeline.TILE_LAYERS:
            np.testing.assert_array_equal(refined[name][scanned], exact[name][scanned], err_msg=name)
        for name in ("sun_lit_fraction", "earth_visible_fraction"):
            assert np.abs(refined[name][rest] - exact[name][rest]).max() <= 0.005, name
        # lower bounds on the gap lengths there, but the Sun's at permanent shadow (never lit: known exactly)
        shadow = rest & (refined["psr"] == 1)
        assert shadow.any()
        for name in pipeline.GAP_LAYERS:
            assert (refined[name][rest] <= exact[name][rest]).all(), name
            assert np.isfinite(refined[name][rest]).all(), name
        for name in ("longest_night_h", "longest_sunlit_h", "n_long_nights"):
            np.testing.assert_array_equal(refined[name][shadow], exact[name][shadow], err_msg=name)
    assert "a lower bound" in refined_run.layer_methods["longest_night_h"]
    assert refined_run.layer_methods["psr"].startswith("exact per time step")


def test_refined_run_labels_its_bounded_heatmaps(refined_run, tmp_path):
    pipeline.write_outputs(refined_run, tmp_path, small_config(years=2), inputs=[], quiet=True)
    report = (tmp_path / "report.md").read_text()
    assert "Longest night (a lower bound where not scanned, see visibility_exact)" in report
    assert "Profile score (binned fractions, gaps' lower bounds where not scanned: see visibility_exact)" in report
    assert "Sunlit fraction (" not in report


def test_a_finished_run_keeps_only_its_own_tile_set(terrain, tmp_path):
    for years in (1, 0.5):  # two configs in one tile folder
        pipeline.compute(terrain, small_config(years=years), tile_dir=tmp_path, quiet=True)
        sets = [p for p in tmp_path.iterdir()]
        assert len(sets) == 1 and len(list(sets[0].glob("tile_*.npz"))) == 4


def test_refined_run_with_a_window_and_a_far_field_ranks_as_the_exact_run(tmp_path, monkeypatch):
    from sitesel.scoring import profile_from_dict

    # the analysed window is offset in the terrain (a halo around it), a far field shades it, and the
    # landing disc spans several pixels: the landing areas scanned must be the right pixels, shaded alike
    terrain = synthetic_south_pole(size=48, resolution_m=400.0, seed=5)
    far_field = synthetic_south_pole(size=40, resolution_m=2000.0, seed=5)
    window = (slice(6, 42), slice(9, 45))
    profile = profile_from_dict({"name": "wide", "constraints": {"max_slope_deg": 12.0},
                                 "weights": {"sun_lit_fraction": 2.0, "longest_night_h": 2.0, "slope_deg": 1.0,
                                             "earth_visible_fraction": 1.0, "longest_blackout_h": 1.0},
                                 "landing": {"radius_m": 900.0, "min_separation_m": 2500.0, "top_n": 6}})
    config = small_config(years=2)
    config["observer"]["height_m"] = [2.0]
    kwargs = dict(quiet=True, profile=profile, far_field=far_field, window=window)
    exact = pipeline.compute(terrain, config, tile_dir=tmp_path / "exact", **kwargs)
    refine_always(monkeypatch)
    refined = pipeline.compute(terrain, config, tile_dir=tmp_path / "refined", **kwargs)
    scanned = refined.layers["visibility_exact"] == 1
    assert 0 < scanned.sum() < scanned.size / 2
    for name in pipeline.TILE_LAYERS:
        np.testing.assert_array_equal(refined.layers[name][scanned], exact.layers[name][scanned], err_msg=name)
    key = [(s["row"], s["col"], s["score"], s["longest_night_h"]) for s in exact.sites]
    assert len(key) >= 3 and key == [(s["row"], s["col"], s["score"], s["longest_night_h"]) for s in refined.sites]


def test_a_short_span_on_a_large_map_is_scanned_everywhere(terrain, tmp_path, monkeypatch):
    # over the budget of pixel-steps, but with fewer steps than the binned fractions' bound needs
    monkeypatch.setattr(pipeline, "EXACT_BUDGET_PIXEL_STEPS", 0)
    result = pipeline.compute(terrain, small_config(years=2), tile_dir=tmp_path, quiet=True)
    assert len(result.track) <= pipeline.REFINE_MIN_STEPS
    valid = np.isfinite(result.layers["sun_lit_fraction"])
    assert np.all(result.layers["visibility_exact"][valid] == 1) and "refinement" not in result.timings_s


def test_exact_everywhere_overrides_the_budget(terrain, tmp_path, monkeypatch):
    refine_always(monkeypatch)
    config = small_config(years=2)
    config["run"]["exact_everywhere"] = True
    result = pipeline.compute(terrain, config, tile_dir=tmp_path, quiet=True)
    valid = np.isfinite(result.layers["sun_lit_fraction"])
    assert np.all(result.layers["visibility_exact"][valid] == 1)
    assert np.isfinite(result.layers["longest_night_h"][valid]).all()


@pytest.mark.parametrize("refined", [False, True])
def test_progress_counts_every_azimuth_and_visibility_chunk(terrain, tmp_path, monkeypatch, refined):
    seen = []

    class Recorder:
        def __init__(self, total, description, **kwargs):
            self.total, self.n = total, 0
            seen.append(self)

        def advance(self, n=1):
            self.n += n

        def set(self, n):
            # a tile computed here has advanced its whole share step by step already
            assert n == self.n
            self.n = n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(pipeline, "Progress", Recorder)
    monkeypatch.setattr(pipeline.scan, "PROGRESS_CHUNK_PX", 100)  # several chunks per 24 px tile
    if refined:
        refine_always(monkeypatch)
    pipeline.compute(terrain, small_config(years=1), tile_dir=tmp_path, quiet=True)
    bar = next(r for r in seen if r.total is not None and r.total > 100)
    # tiles of 24 and 16 px: 2 heights x (72 azimuths + chunks of 100 px, twice in a refined run: binned, then scanned)
    assert bar.total == 2 * (4 * 72 + (2 if refined else 1) * (6 + 2 * 4 + 3))
    assert bar.n == bar.total


def test_refined_run_gives_gap_limits_pass_fractions_as_upper_bounds(terrain, exact_run, tmp_path, monkeypatch):
    from sitesel.scoring import profile_from_dict

    # a limit that half the pixels meet
    limit_h = float(np.nanmedian(exact_run.layers["longest_night_h"]))
    profile = profile_from_dict({"name": "gaps", "constraints": {"min_sun_lit_fraction": 0.3,
                                                                "max_longest_night_h": limit_h},
                                 "weights": {"sun_lit_fraction": 1.0}, "landing": {"radius_m": 500.0}})
    exact = pipeline.compute(terrain, small_config(years=2), tile_dir=tmp_path / "e", quiet=True, profile=profile)
    refine_always(monkeypatch)
    result = pipeline.compute(terrain, small_config(years=2), tile_dir=tmp_path / "r", quiet=True, profile=profile)
    summary = result.constraint_summary
    want = exact.constraint_summary["max_longest_night_h"]
    assert 0 < want < 1
    assert want <= summary["max_longest_night_h (at most: lower bounds where not scanned)"] <= 1
    assert "max_longest_night_h" not in summary
    # and so is the share meeting every limit at once, which the hint for an empty site list words so
    assert exact.constraint_summary["all"] <= summary["all (at most: lower bounds where not scanned)"] <= 1
    assert "all" not in summary
    from sitesel.report import no_sites_hint
    share = summary["all (at most: lower bounds where not scanned)"]
    assert f"all at once: at most {share:.2%}." in no_sites_hint((summary, 500.0))
    assert f"all at once: {exact.constraint_summary['all']:.2%}." in no_sites_hint((exact.constraint_summary, 500.0))
    assert summary["min_sun_lit_fraction"] == pytest.approx(exact.constraint_summary["min_sun_lit_fraction"], abs=0.02)


def test_a_run_with_landing_areas_searched_on_a_lattice_scans_where_the_limits_can_be_met(terrain, tmp_path,
                                                                                         monkeypatch):
    from sitesel import ranking
    from sitesel.scoring import profile_from_dict

    # landing areas taller than the lattice's rows: the ranking cannot refine them (see sitesel.refine)
    monkeypatch.setattr(ranking, "_ROWS_PER_CENTRE", 2)
    profile = profile_from_dict({"name": "wide", "constraints": {"max_slope_deg": 10.0, "min_sun_lit_fraction": 0.2},
                                 "weights": {"sun_lit_fraction": 2.0, "longest_night_h": 2.0, "slope_deg": 1.0},
                                 "landing": {"radius_m": 600.0, "min_separation_m": 3000.0, "top_n": 5}})
    config = small_config(years=2)
    config["observer"]["height_m"] = [0.0]
    exact = pipeline.compute(terrain, config, tile_dir=tmp_path / "exact", quiet=True, profile=profile)
    refine_always(monkeypatch)
    refined = pipeline.compute(terrain, config, tile_dir=tmp_path / "refined", quiet=True, profile=profile)
    scanned = refined.layers["visibility_exact"] == 1
    feasible = exact.layers["feasible"] == 1
    # every feasible pixel was scanned, not every pixel; feasible and score are the exact run's
    assert feasible.any() and not (feasible & ~scanned).any() and not scanned.all()
    for name in ("score", "feasible", "longest_night_h", "sun_lit_fraction"):
        np.testing.assert_array_equal(refined.layers[name][scanned], exact.layers[name][scanned], err_msg=name)
    np.testing.assert_array_equal(refined.layers["feasible"], exact.layers["feasible"])
    key = [(s["rank"], s["row"], s["col"], s["score"]) for s in exact.sites]
    assert key and key == [(s["rank"], s["row"], s["col"], s["score"]) for s in refined.sites]
    assert "the pixels that can meet the profile's limits" in refined.layer_methods["longest_night_h"]
    assert "refinement" not in refined.timings_s


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_outputs_replace_an_earlier_runs_as_a_whole(exact_run, tmp_path):
    config = small_config(years=2)
    (tmp_path / "layers" / "h99m").mkdir(parents=True)
    (tmp_path / "layers" / "h99m" / "psr.tif").write_bytes(b"old")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "horizon_site42.png").write_bytes(b"old")
    (tmp_path / ".tiles").mkdir()
    (tmp_path / ".tiles" / "tile0.npz").write_bytes(b"kept")
    written = pipeline.write_outputs(exact_run, tmp_path, config, inputs=[], quiet=True)
    files = _files(tmp_path)
    assert all(path.is_file() and path.parent.is_relative_to(tmp_path) for path in written)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(set(files) - {".tiles/tile0.npz"})
    assert "layers/h99m/psr.tif" not in files and "plots/horizon_site42.png" not in files
    assert "layers/h10m/psr.tif" in files and files[".tiles/tile0.npz"] == b"kept"


def test_outputs_stopped_midway_leave_the_earlier_run_untouched(exact_run, tmp_path, monkeypatch):
    config = small_config(years=2)
    pipeline.write_outputs(exact_run, tmp_path, config, inputs=[], quiet=True)
    before = _files(tmp_path)

    def interrupted(result):  # runs after the layers and figures are written, before the report
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "height_comparison", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.write_outputs(exact_run, tmp_path, config, inputs=[], quiet=True)
    assert _files(tmp_path) == before
    assert not list(tmp_path.glob(".sitesel-staging*"))


def test_another_profile_reuses_the_tiles_of_an_unrefined_run(terrain, tmp_path):
    config = small_config(years=1)
    first = pipeline.compute(terrain, config, tile_dir=tmp_path, quiet=True)
    config["profile"] = "ilrs"
    again = pipeline.compute(terrain, config, tile_dir=tmp_path, quiet=True, resume=True)
    assert again.tiles == {"total": 4, "resumed": 4}
    for name, layer in first.layers.items():
        if name not in ("score", "feasible"):
            np.testing.assert_array_equal(layer, again.layers[name], err_msg=name)
    assert again.profile.name == "ilrs" and not np.array_equal(first.layers["score"], again.layers["score"],
                                                               equal_nan=True)


def test_a_landing_area_wider_than_the_terrain_is_refused_before_any_work(terrain, tmp_path):
    from sitesel.errors import SiteselError
    from sitesel.scoring import profile_from_dict

    profile = profile_from_dict({"weights": {"slope_deg": 1.0}, "landing": {"radius_m": 1e7}})
    with pytest.raises(SiteselError, match=r"^the profile's landing area is 20000 km across, wider than the 20 x 20 km "
                                           r"of terrain read, so no site could fit; shrink \[landing\]"):
        pipeline.compute(terrain, small_config(years=1), tile_dir=tmp_path, quiet=True, profile=profile)
    assert not list(tmp_path.iterdir())


def test_no_site_without_constraints_is_explained_by_the_landing_area():
    from sitesel.report import no_sites_hint

    hint = no_sites_hint(({"all": 1.0, "region_pixels": 100}, 9000.0))
    assert hint.startswith("the profile has no hard constraint, so no landing area (up to 9000 m from the centre) "
                           "fits wholly on pixels with a slope")
