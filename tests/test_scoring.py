"""Mission profiles: loading, validation, normalisation, constraints and scores."""

import math

import numpy as np
import pytest

from sitesel.errors import SiteselError
from sitesel.scoring import (
    METRICS,
    list_profiles,
    load_profile,
    normalise_metric,
    profile_from_dict,
    score_layers,
)

PRESETS = ["artemis", "change7", "default", "ilrs", "luna27"]


def minimal(**overrides):
    data = {"name": "t", "weights": {"slope_deg": 1.0}}
    data.update(overrides)
    return data


def test_all_presets_load_and_round_trip():
    assert list_profiles() == PRESETS
    for name in PRESETS:
        profile = load_profile(name)
        assert profile.name == name
        assert profile.source == f"{name}.toml"
        assert profile.description
        assert any(w > 0 for w in profile.weights.values())
        assert profile_from_dict(profile.to_dict(), profile.source) == profile


def test_preset_values_follow_the_design():
    luna = load_profile("luna27")
    assert luna.constraints == {
        "max_slope_deg": 10.0,
        "min_sun_lit_fraction": 0.35,
        "min_earth_visible_fraction": 0.5,
    }
    assert (luna.ellipse_semi_major_m, luna.ellipse_semi_minor_m) == (15000.0, 7500.0)
    assert luna.region == {"lat_min_deg": -83.0, "lat_max_deg": -79.0, "lon_min_deg": -1.0, "lon_max_deg": 51.0}
    change7 = load_profile("change7")
    assert change7.region["centre_lat_deg"] == -88.8 and change7.region["centre_lon_deg"] == 123.0
    assert change7.weights["earth_visible_fraction"] < min(
        w for m, w in change7.weights.items() if m != "earth_visible_fraction"
    )
    ilrs = load_profile("ilrs")
    assert ilrs.constraints["min_earth_visible_fraction"] == 0.5
    assert ilrs.weights["psr_distance_m"] > 0 and ilrs.weights["longest_night_h"] > 0
    artemis = load_profile("artemis")
    assert artemis.is_disc and artemis.ellipse_semi_major_m == 100.0
    assert 8.0 <= artemis.constraints["max_slope_deg"] <= 10.0
    default = load_profile("default")
    assert default.is_disc and default.percentile == 5.0 and default.top_n == 10


def test_defaults_of_an_empty_landing_table():
    profile = profile_from_dict(minimal(), "x.toml")
    assert profile.is_disc and profile.radius_m == 100.0
    assert profile.ellipse_semi_major_m == 100.0
    assert profile.percentile == 5.0
    assert profile.top_n == 10
    assert profile.min_separation_m == 200.0
    assert profile.region is None


@pytest.mark.parametrize(
    "data, key",
    [
        (minimal(constraints={"max_slop_deg": 7.0}), "constraints.max_slop_deg"),
        (minimal(constraints={"min_slope_deg": 7.0}), "constraints.min_slope_deg"),
        (minimal(weights={"slope": 1.0}), "weights.slope"),
        (minimal(landing={"radius": 100.0}), "landing.radius"),
        (minimal(region={"lat_min_deg": -90.0, "lat_max_deg": -80.0, "lat_mid": 0.0}), "region.lat_mid"),
        (minimal(extra=1), "extra"),
    ],
)
def test_unknown_keys_are_named(data, key):
    with pytest.raises(SiteselError) as err:
        profile_from_dict(data, "x.toml")
    message = str(err.value)
    assert f"profile 'x.toml': unknown key '{key}'" in message
    assert "known:" in message


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(SiteselError, match="did you mean 'constraints.max_slope_deg'"):
        profile_from_dict(minimal(constraints={"max_slop_deg": 7.0}), "x.toml")


@pytest.mark.parametrize(
    "data, key",
    [
        (minimal(weights={"slope_deg": "1"}), "weights.slope_deg"),
        (minimal(weights={"slope_deg": True}), "weights.slope_deg"),
        (minimal(constraints={"max_slope_deg": [7]}), "constraints.max_slope_deg"),
        (minimal(landing={"top_n": 2.5}), "landing.top_n"),
        (minimal(landing={"radius_m": "100 m"}), "landing.radius_m"),
        (minimal(landing={"percentile": float("nan")}), "landing.percentile"),
        (minimal(name=3), "name"),
        (minimal(constraints=7), "constraints"),
        (minimal(region={"centre_lat_deg": "x", "centre_lon_deg": 0.0, "radius_km": 1.0}), "region.centre_lat_deg"),
    ],
)
def test_wrong_types_are_named(data, key):
    with pytest.raises(SiteselError, match=f"'{key}'"):
        profile_from_dict(data, "x.toml")


@pytest.mark.parametrize(
    "data, fragment",
    [
        (minimal(weights={"slope_deg": 0.0}), "positive weight"),
        (minimal(weights={"slope_deg": -1.0}), "weights.slope_deg"),
        (minimal(constraints={"min_sun_lit_fraction": 35.0}), "fraction"),
        (minimal(landing={"radius_m": 100.0, "ellipse_semi_major_m": 5.0, "ellipse_semi_minor_m": 1.0}), "not both"),
        (minimal(landing={"ellipse_semi_major_m": 5.0}), "ellipse_semi_minor_m"),
        (minimal(landing={"ellipse_semi_major_m": 5.0, "ellipse_semi_minor_m": 9.0}), "exceeds"),
        (minimal(landing={"percentile": 150.0}), "landing.percentile"),
        (minimal(landing={"radius_m": 0.0}), "landing.radius_m"),
        (minimal(landing={"top_n": 0}), "landing.top_n"),
        (minimal(region={"lat_min_deg": -80.0}), "together"),
        (minimal(region={"lat_min_deg": -80.0, "lat_max_deg": -85.0}), "below"),
        (minimal(region={"centre_lat_deg": -89.0, "centre_lon_deg": 0.0}), "centre_lat_deg, centre_lon_deg and radius_km"),
        (minimal(region={"centre_lat_deg": -89.0, "centre_lon_deg": 0.0, "radius_km": 5.0, "lat_min_deg": -90.0}), "not both"),
        (minimal(region={}), "needs"),
    ],
)
def test_bad_values_are_rejected(data, fragment):
    with pytest.raises(SiteselError, match=fragment):
        profile_from_dict(data, "x.toml")


def test_ellipse_profile_and_azimuth_wraps_to_half_turn():
    profile = profile_from_dict(
        minimal(landing={"ellipse_semi_major_m": 3000.0, "ellipse_semi_minor_m": 1000.0, "ellipse_azimuth_deg": 200.0})
    )
    assert not profile.is_disc and profile.radius_m is None
    assert profile.ellipse_azimuth_deg == pytest.approx(20.0)
    assert profile.min_separation_m == 6000.0


def test_load_profile_from_a_file_and_errors_name_the_file(tmp_path):
    good = tmp_path / "mine.toml"
    good.write_text('[weights]\nsun_lit_fraction = 1.0\n[landing]\nradius_m = 50.0\n')
    profile = load_profile(str(good))
    assert profile.name == "mine" and profile.ellipse_semi_major_m == 50.0 and profile.source == str(good)

    bad = tmp_path / "bad.toml"
    bad.write_text("[constraints]\nmax_slop_deg = 7\n[weights]\nslope_deg = 1\n")
    with pytest.raises(SiteselError, match=f"profile '{bad}': unknown key 'constraints.max_slop_deg'"):
        load_profile(str(bad))

    broken = tmp_path / "broken.toml"
    broken.write_text("[weights\n")
    with pytest.raises(SiteselError, match="not valid TOML"):
        load_profile(str(broken))
    with pytest.raises(SiteselError, match="neither a preset"):
        load_profile(str(tmp_path / "missing.toml"))


@pytest.mark.parametrize("name", sorted(METRICS))
def test_normalisation_bounds(name):
    metric = METRICS[name]
    best, worst = metric.best, metric.worst
    span = best - worst
    values = np.array([best, worst, worst + 0.5 * span, best + span, worst - span, np.nan])
    terms = normalise_metric(name, values)
    assert terms.dtype == np.float32
    np.testing.assert_allclose(terms[:5], [1.0, 0.0, 0.5, 1.0, 0.0], atol=1e-6)
    assert np.isnan(terms[5])
    grid = np.linspace(min(best, worst) - abs(span), max(best, worst) + abs(span), 101)
    t = normalise_metric(name, grid)
    assert np.all((t >= 0.0) & (t <= 1.0))
    # Monotone in the documented direction.
    assert np.all(np.diff(t) >= 0) if metric.higher_is_better else np.all(np.diff(t) <= 0)


def test_documented_directions():
    higher = {m for m, metric in METRICS.items() if metric.higher_is_better}
    assert higher == {"sun_lit_fraction", "sun_disc_fraction", "earth_visible_fraction"}
    assert METRICS["slope_deg"].constraint_key == "max_slope_deg"
    assert METRICS["sun_lit_fraction"].constraint_key == "min_sun_lit_fraction"


def _random_layers(shape, seed):
    rng = np.random.default_rng(seed)
    layers = {
        "slope_deg": rng.uniform(0, 20, shape),
        "roughness_m": rng.uniform(0, 1.5, shape),
        "sun_lit_fraction": rng.uniform(0, 1, shape),
        "sun_disc_fraction": rng.uniform(0, 1, shape),
        "longest_night_h": rng.uniform(0, 1000, shape),
        "earth_visible_fraction": rng.uniform(0, 1, shape),
        "longest_blackout_h": rng.uniform(0, 1000, shape),
        "psr_distance_m": rng.uniform(0, 15000, shape),
    }
    layers = {k: v.astype(np.float32) for k, v in layers.items()}
    for k in layers:
        layers[k][rng.random(shape) < 0.03] = np.nan
    layers["psr"] = (layers["psr_distance_m"] == 0).astype(np.uint8)
    return layers


def _plain_term(name, value):
    metric = METRICS[name]
    if math.isnan(value):
        return math.nan
    return min(1.0, max(0.0, (value - metric.worst) / (metric.best - metric.worst)))


@pytest.mark.parametrize("preset", PRESETS)
def test_score_layers_matches_a_plain_loop(preset):
    profile = load_profile(preset)
    layers = _random_layers((23, 19), seed=len(preset))
    feasible, score, terms = score_layers(layers, profile)
    assert feasible.dtype == np.uint8 and score.dtype == np.float32
    weighted = [m for m, w in profile.weights.items() if w > 0]
    assert sorted(terms) == sorted(weighted)
    for r in range(23):
        for c in range(19):
            ok = True
            # the metrics the profile uses, and the footprint's slope and roughness always, need data
            for m in {*profile.used_metrics, "slope_deg", "roughness_m"}:
                if math.isnan(float(layers[m][r, c])):
                    ok = False
            for key, limit in profile.constraints.items():
                metric = key[4:]
                value = float(layers[metric][r, c])
                if key.startswith("max_") and not value <= limit:
                    ok = False
                if key.startswith("min_") and not value >= limit:
                    ok = False
            assert feasible[r, c] == ok
            if ok:
                num = sum(profile.weights[m] * _plain_term(m, float(layers[m][r, c])) for m in weighted)
                den = sum(profile.weights[m] for m in weighted)
                assert score[r, c] == pytest.approx(num / den, abs=1e-6)
                assert 0.0 <= score[r, c] <= 1.0
            else:
                assert np.isnan(score[r, c])
            for m in weighted:
                expected = _plain_term(m, float(layers[m][r, c]))
                if math.isnan(expected):
                    assert np.isnan(terms[m][r, c])
                else:
                    assert terms[m][r, c] == pytest.approx(expected, abs=1e-6)


def test_unused_nodata_does_not_exclude_and_missing_layer_is_an_error():
    profile = profile_from_dict(minimal(constraints={"max_slope_deg": 10.0}))
    layers = {"slope_deg": np.array([[5.0, 12.0, np.nan]], np.float32),
              "sun_lit_fraction": np.array([[np.nan, 0.5, 0.5]], np.float32)}
    feasible, score, _ = score_layers(layers, profile)
    assert feasible.tolist() == [[1, 0, 0]]
    slope = METRICS["slope_deg"]  # its term falls linearly from best (1) to worst (0)
    assert score[0, 0] == pytest.approx((slope.worst - 5.0) / (slope.worst - slope.best))
    with pytest.raises(SiteselError, match="sun_lit_fraction"):
        score_layers({"slope_deg": layers["slope_deg"]}, profile_from_dict(minimal(weights={"sun_lit_fraction": 1.0})))


def test_infinite_psr_distance_is_data_not_nodata():
    # visibility.psr_layers gives +inf everywhere when the grid holds no PSR.
    profile = profile_from_dict(minimal(weights={"psr_distance_m": 1.0, "slope_deg": 1.0}))
    layers = {"slope_deg": np.zeros((1, 2), np.float32), "psr_distance_m": np.array([[np.inf, 0.0]], np.float32)}
    feasible, score, terms = score_layers(layers, profile)
    assert feasible.tolist() == [[1, 1]]
    assert terms["psr_distance_m"].tolist() == [[0.0, 1.0]]
    np.testing.assert_allclose(score, [[0.5, 1.0]])
    limited = profile_from_dict(minimal(constraints={"max_psr_distance_m": 5000.0}))
    assert score_layers(layers, limited)[0].tolist() == [[0, 1]]


def test_constraint_pass_fractions_count_like_a_plain_loop():
    from sitesel.report import no_sites_hint
    from sitesel.scoring import constraint_pass_fractions

    rng = np.random.default_rng(5)
    layers = {"slope_deg": rng.uniform(0, 20, (30, 40)), "sun_lit_fraction": rng.uniform(0, 1, (30, 40))}
    layers["slope_deg"][0, :5] = np.nan  # no data: fails
    profile = profile_from_dict(minimal(constraints={"max_slope_deg": 8.0, "min_sun_lit_fraction": 0.6}), "x.toml")
    mask = np.zeros((30, 40), bool)
    mask[:20] = True
    got = constraint_pass_fractions(layers, profile, mask)
    n_slope = n_sun = n_all = 0
    for i in range(20):
        for j in range(40):
            slope_ok = layers["slope_deg"][i, j] <= 8.0  # False for NaN
            sun_ok = layers["sun_lit_fraction"][i, j] >= 0.6
            n_slope += slope_ok
            n_sun += sun_ok
            n_all += slope_ok and sun_ok
    assert got == pytest.approx({"max_slope_deg": n_slope / 800, "min_sun_lit_fraction": n_sun / 800,
                                 "all": n_all / 800, "region_pixels": 800})
    hint = no_sites_hint((got, 1000.0))
    assert "max_slope_deg" in hint and "1000 m" in hint and f"{n_all / 800:.2%}" in hint
    assert "[region] holds no pixel" in no_sites_hint((constraint_pass_fractions(layers, profile, mask & False),
                                                        500.0))


def test_an_inline_profile_records_no_checksum():
    record = profile_from_dict(minimal(), source="config [profile]").record()
    assert record["source"] == "config [profile]" and record["source_sha256"] is None
    assert load_profile("default").record()["source_sha256"]  # a preset is a file, with its checksum
