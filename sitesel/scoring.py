"""Mission profiles and per-pixel scores.

A mission profile (a TOML file, see ``sitesel/profiles/``) holds

* ``[constraints]``: hard limits, one per metric, named ``max_<metric>`` for
  metrics where lower is better and ``min_<metric>`` where higher is better;
* ``[weights]``: metric -> weight >= 0 for the score;
* ``[landing]``: the landing area (a disc ``radius_m`` or an ellipse
  ``ellipse_semi_major_m``/``ellipse_semi_minor_m``/``ellipse_azimuth_deg``),
  the ``percentile`` of the score taken over it, ``min_separation_m`` between
  sites and ``top_n``;
* ``[region]``: optional allowed area for landing-site centres, as latitude and
  longitude bounds or a centre and radius.

Each metric is normalised to a term in [0, 1] over a fixed range (``METRICS``),
never over the data's own minimum and maximum, so a score means the same in
every run: ``term = clip((value - worst) / (best - worst), 0, 1)``. The score is
the weighted mean of the terms.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import tomllib
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import SiteselError


@dataclass(frozen=True)
class Metric:
    """A per-pixel metric layer and its fixed normalisation range.

    ``best`` maps to term 1 and ``worst`` to term 0, linearly in between and
    clipped outside; ``best > worst`` means higher is better.
    """

    name: str
    unit: str
    best: float
    worst: float
    why: str

    @property
    def higher_is_better(self) -> bool:
        return self.best > self.worst

    @property
    def constraint_key(self) -> str:
        """The hard-limit key: ``min_<name>`` if higher is better, else ``max_<name>``."""
        return ("min_" if self.higher_is_better else "max_") + self.name


_NIGHT_WHY = "a gap of 30 days (720 h) or more, longer than a synodic month, counts as worst"

#: Metrics a profile can constrain and weight, with their normalisation ranges.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("slope_deg", "deg", 0.0, 15.0, "15 deg is above every lander limit in the presets (7-10 deg)"),
        Metric("roughness_m", "m", 0.0, 1.0, "1 m RMS relief across the footprint exceeds lander leg clearance"),
        Metric("sun_lit_fraction", "fraction", 1.0, 0.0, "fraction of time any part of the Sun is up"),
        Metric("sun_disc_fraction", "fraction", 1.0, 0.0, "mean visible fraction of the solar disc"),
        Metric("longest_night_h", "h", 0.0, 720.0, _NIGHT_WHY),
        Metric("earth_visible_fraction", "fraction", 1.0, 0.0, "fraction of time Earth's centre is up"),
        Metric("longest_blackout_h", "h", 0.0, 720.0, _NIGHT_WHY),
        Metric("psr_distance_m", "m", 0.0, 10_000.0, "10 km is about the reach of a rover sortie or a hopper"),
    )
}

_CONSTRAINT_KEYS = {m.constraint_key: m.name for m in METRICS.values()}

#: The lander's footprint metrics: a pixel without them is never feasible (see :func:`score_layers`).
SURFACE_METRICS = frozenset({"slope_deg", "roughness_m"})

#: Prefix of a site's normalised profile term of each metric (``term_slope_deg``, ...: see sitesel.ranking).
TERM_PREFIX = "term_"

_TOP_KEYS = ("name", "description", "constraints", "weights", "landing", "region")
_LANDING_KEYS = (
    "radius_m",
    "ellipse_semi_major_m",
    "ellipse_semi_minor_m",
    "ellipse_azimuth_deg",
    "percentile",
    "min_separation_m",
    "top_n",
)
_REGION_KEYS = ("lat_min_deg", "lat_max_deg", "lon_min_deg", "lon_max_deg", "centre_lat_deg", "centre_lon_deg", "radius_km")

#: Landing defaults (DESIGN.md section 4 and the profile README comments).
DEFAULT_RADIUS_M = 100.0
DEFAULT_PERCENTILE = 5.0
DEFAULT_TOP_N = 10


@dataclass(frozen=True)
class Profile:
    """A validated mission profile.

    The landing area is always stored as an ellipse: a disc of radius r is
    ``ellipse_semi_major_m == ellipse_semi_minor_m == r`` with azimuth 0.
    ``ellipse_azimuth_deg`` is the local azimuth of the major axis (clockwise
    from local north, the direction of increasing latitude), in [0, 180).
    ``percentile`` (0-100) of the score over the landing area is the site score;
    0 means the worst pixel. ``min_separation_m`` is the minimum ground
    (great-circle) distance between ranked site centres. ``source`` names the
    file (a preset's ``name.toml``, or an absolute path) or the caller the profile came from,
    ``source_sha256`` the SHA-256 of that file's text (empty if none).
    """

    name: str
    description: str
    constraints: dict
    weights: dict
    ellipse_semi_major_m: float
    ellipse_semi_minor_m: float
    ellipse_azimuth_deg: float
    percentile: float
    min_separation_m: float
    top_n: int
    region: dict | None
    source: str
    source_sha256: str = field(default="", compare=False)  # where the values came from, not what they are

    def record(self) -> dict:
        """Everything that defines the profile, for a run's manifest and report: name, source
        and its checksum (None for a profile not read from a file), constraints, weights,
        landing area, region."""
        values = asdict(self)
        values["source_sha256"] = values["source_sha256"] or None
        landing = ("ellipse_semi_major_m", "ellipse_semi_minor_m", "ellipse_azimuth_deg", "percentile",
                   "min_separation_m", "top_n")
        return {**{key: values[key] for key in ("name", "source", "source_sha256", "constraints", "weights")},
                "landing": {key: values[key] for key in landing}, "region": values["region"]}

    @property
    def is_disc(self) -> bool:
        return self.ellipse_semi_major_m == self.ellipse_semi_minor_m

    @property
    def radius_m(self) -> float | None:
        """Landing disc radius in metres, or None for an ellipse."""
        return self.ellipse_semi_major_m if self.is_disc else None

    @property
    def used_metrics(self) -> tuple[str, ...]:
        """Metrics that enter the constraints or carry a positive weight, in ``METRICS`` order."""
        used = {_CONSTRAINT_KEYS[k] for k in self.constraints} | {m for m, w in self.weights.items() if w > 0}
        return tuple(m for m in METRICS if m in used)

    def to_dict(self) -> dict:
        """The profile as a TOML-shaped dict; ``profile_from_dict`` of it gives the same profile."""
        if self.is_disc:
            landing = {"radius_m": self.ellipse_semi_major_m}
        else:
            landing = {
                "ellipse_semi_major_m": self.ellipse_semi_major_m,
                "ellipse_semi_minor_m": self.ellipse_semi_minor_m,
                "ellipse_azimuth_deg": self.ellipse_azimuth_deg,
            }
        landing.update(percentile=self.percentile, min_separation_m=self.min_separation_m, top_n=self.top_n)
        data = {
            "name": self.name,
            "description": self.description,
            "constraints": dict(self.constraints),
            "weights": dict(self.weights),
            "landing": landing,
        }
        if self.region is not None:
            data["region"] = dict(self.region)
        return data


def list_profiles() -> list[str]:
    """Names of the shipped presets, sorted."""
    folder = resources.files("sitesel") / "profiles"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str) -> Profile:
    """Load a shipped preset by name, or a profile TOML file by path."""
    text = str(name_or_path)
    if text in list_profiles():
        source, blob = f"{text}.toml", (resources.files("sitesel") / "profiles" / f"{text}.toml").read_bytes()
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise SiteselError(
                f"profile {text!r} is neither a preset ({', '.join(list_profiles())}) nor a TOML file; "
                "give a preset name or the path of a profile file"
            )
        source, blob = os.path.abspath(path), path.read_bytes()
    sha256 = hashlib.sha256(blob).hexdigest()  # of the file's bytes, as the manifest hashes its inputs
    try:
        raw = blob.decode("utf-8")
    except UnicodeDecodeError:
        raise SiteselError(f"profile {source!r} is not UTF-8 text; save it as UTF-8 (TOML requires it)") from None
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise SiteselError(f"profile {source!r} is not valid TOML: {exc}") from None
    data.setdefault("name", Path(source).stem)
    return replace(profile_from_dict(data, source), source_sha256=sha256)


def profile_from_dict(data: dict, source: str = "<dict>") -> Profile:
    """Validate a TOML-shaped dict and build a :class:`Profile`.

    Raises :class:`SiteselError` naming the offending key on an unknown key (at
    any level), an unknown metric, a wrong type or an out-of-range value.
    """
    where = f"profile {source!r}"
    if not isinstance(data, dict):
        raise SiteselError(f"{where}: must be a table of keys, got {type(data).__name__}")
    _check_keys(data, _TOP_KEYS, "", where)

    name = _string(data, "name", where, default=Path(source).stem)
    description = _string(data, "description", where, default="")

    constraints = {}
    for key, value in _table(data, "constraints", where).items():
        _check_known(key, _CONSTRAINT_KEYS, "constraints.", where)
        value = _number(value, f"constraints.{key}", where)
        metric = METRICS[_CONSTRAINT_KEYS[key]]
        if metric.unit == "fraction" and not 0.0 <= value <= 1.0:
            raise SiteselError(f"{where}: 'constraints.{key}' is a fraction and must lie in [0, 1], got {value}")
        if metric.unit != "fraction" and value < 0:
            raise SiteselError(f"{where}: 'constraints.{key}' must be >= 0, got {value}")
        constraints[key] = value

    weights = {}
    for key, value in _table(data, "weights", where).items():
        _check_known(key, METRICS, "weights.", where)
        value = _number(value, f"weights.{key}", where)
        if value < 0:
            raise SiteselError(f"{where}: 'weights.{key}' must be >= 0, got {value}")
        weights[key] = value
    if not any(w > 0 for w in weights.values()):
        raise SiteselError(f"{where}: [weights] needs at least one metric with a positive weight")

    landing = _table(data, "landing", where)
    _check_keys(landing, _LANDING_KEYS, "landing.", where)
    ellipse_keys = [k for k in _LANDING_KEYS[1:4] if k in landing]
    if "radius_m" in landing and ellipse_keys:
        raise SiteselError(
            f"{where}: give either 'landing.radius_m' or the 'landing.ellipse_*' keys, not both"
        )
    if ellipse_keys:
        for k in _LANDING_KEYS[1:3]:
            if k not in landing:
                raise SiteselError(f"{where}: 'landing.{k}' is missing (an ellipse needs both semi-axes)")
        major = _positive(landing, "ellipse_semi_major_m", where)
        minor = _positive(landing, "ellipse_semi_minor_m", where)
        if minor > major:
            raise SiteselError(
                f"{where}: 'landing.ellipse_semi_minor_m' ({minor}) exceeds 'landing.ellipse_semi_major_m' ({major})"
            )
        azimuth = _number(landing.get("ellipse_azimuth_deg", 0.0), "landing.ellipse_azimuth_deg", where) % 180.0
    else:
        major = minor = _positive(landing, "radius_m", where, default=DEFAULT_RADIUS_M)
        azimuth = 0.0
    percentile = _number(landing.get("percentile", DEFAULT_PERCENTILE), "landing.percentile", where)
    if not 0.0 <= percentile <= 100.0:
        raise SiteselError(f"{where}: 'landing.percentile' must lie in [0, 100], got {percentile}")
    separation = _number(landing.get("min_separation_m", 2.0 * major), "landing.min_separation_m", where)
    if separation < 0:
        raise SiteselError(f"{where}: 'landing.min_separation_m' must be >= 0, got {separation}")
    top_n = landing.get("top_n", DEFAULT_TOP_N)
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise SiteselError(f"{where}: 'landing.top_n' must be a positive integer, got {top_n!r}")

    region = validate_region(data["region"], where, prefix="region.") if "region" in data else None
    return Profile(
        name=name,
        description=description,
        constraints=constraints,
        weights=weights,
        ellipse_semi_major_m=major,
        ellipse_semi_minor_m=minor,
        ellipse_azimuth_deg=azimuth,
        percentile=percentile,
        min_separation_m=separation,
        top_n=top_n,
        region=region,
        source=source,
    )


def validate_region(region, where: str, prefix: str = "region.") -> dict:
    """Validate a region table and return it with float values.

    Either ``centre_lat_deg``, ``centre_lon_deg`` and ``radius_km`` (a spherical cap),
    or latitude bounds ``lat_min_deg``/``lat_max_deg`` and/or longitude bounds
    ``lon_min_deg``/``lon_max_deg`` (degrees, east-positive; the longitude range runs
    eastward from ``lon_min_deg`` to ``lon_max_deg`` and may cross 180; bounds a whole
    turn apart, such as -180 and 180, allow every longitude).
    """
    if not isinstance(region, dict):
        raise SiteselError(f"{where}: '{prefix.rstrip('.')}' must be a table, got {type(region).__name__}")
    _check_keys(region, _REGION_KEYS, prefix, where)
    out = {k: _number(v, prefix + k, where) for k, v in region.items()}
    cap = [k for k in ("centre_lat_deg", "centre_lon_deg", "radius_km") if k in out]
    bounds = [k for k in ("lat_min_deg", "lat_max_deg", "lon_min_deg", "lon_max_deg") if k in out]
    if cap and bounds:
        raise SiteselError(
            f"{where}: give either centre_lat_deg/centre_lon_deg/radius_km or lat/lon bounds in '{prefix}', not both"
        )
    if cap:
        if len(cap) != 3:
            raise SiteselError(f"{where}: '{prefix}' needs all of centre_lat_deg, centre_lon_deg and radius_km")
        if out["radius_km"] <= 0:
            raise SiteselError(f"{where}: '{prefix}radius_km' must be > 0, got {out['radius_km']}")
    elif not bounds:
        raise SiteselError(f"{where}: '{prefix}' needs centre_lat_deg/centre_lon_deg/radius_km or lat/lon bounds")
    for lo, hi in (("lat_min_deg", "lat_max_deg"), ("lon_min_deg", "lon_max_deg")):
        if (lo in out) != (hi in out):
            raise SiteselError(f"{where}: '{prefix}{lo}' and '{prefix}{hi}' must be given together")
    for k in ("lat_min_deg", "lat_max_deg", "centre_lat_deg"):
        if k in out and not -90.0 <= out[k] <= 90.0:
            raise SiteselError(f"{where}: '{prefix}{k}' must lie in [-90, 90], got {out[k]}")
    if "lat_min_deg" in out and out["lat_min_deg"] >= out["lat_max_deg"]:
        raise SiteselError(f"{where}: '{prefix}lat_min_deg' must be below '{prefix}lat_max_deg'")
    for k in ("lon_min_deg", "lon_max_deg", "centre_lon_deg"):
        if k in out and not -360.0 <= out[k] <= 360.0:
            raise SiteselError(f"{where}: '{prefix}{k}' must lie in [-360, 360], got {out[k]}")
    if "lon_min_deg" in out and out["lon_min_deg"] == out["lon_max_deg"]:
        raise SiteselError(f"{where}: '{prefix}lon_min_deg' and '{prefix}lon_max_deg' must differ")
    return out


def normalise_metric(name: str, values) -> np.ndarray:
    """Term in [0, 1] (float32, NaN where ``values`` is NaN) of a metric over its fixed range."""
    metric = METRICS[name]
    v = np.asarray(values, dtype=np.float32)
    term = (v - np.float32(metric.worst)) / np.float32(metric.best - metric.worst)
    return np.clip(term, 0.0, 1.0).astype(np.float32)


def _constraint_masks(layers: dict, profile: Profile, present_only: bool = False) -> dict[str, np.ndarray]:
    """Per hard constraint of the profile, where its layer meets the limit (NaN fails);
    with ``present_only``, only the constraints on layers given in ``layers``."""
    masks = {}
    for key, limit in profile.constraints.items():
        if present_only and _CONSTRAINT_KEYS[key] not in layers:
            continue
        values = np.asarray(layers[_CONSTRAINT_KEYS[key]])
        with np.errstate(invalid="ignore"):
            masks[key] = values >= limit if key.startswith("min_") else values <= limit
    return masks


def constraints_met(layers: dict, profile: Profile) -> np.ndarray:
    """Where every hard constraint of the profile on the given ``layers`` holds; constraints
    on other layers are ignored (e.g. the surface limits, before visibility is known)."""
    ok = np.ones(np.shape(next(iter(layers.values()))), dtype=bool)
    for mask in _constraint_masks(layers, profile, present_only=True).values():
        ok &= mask
    return ok


def at_most(key: str) -> str:
    """The name of a pass fraction of :func:`constraint_pass_fractions` that is only an upper
    bound: a gap limit checked on lower bounds of the gaps (see :mod:`sitesel.refine`), or
    ``"all"`` the limits at once when any is."""
    return f"{key} (at most: lower bounds where not scanned)"


def constraint_pass_fractions(layers: dict, profile: Profile, mask=None) -> dict[str, float]:
    """Share of the pixels (within ``mask``, if given) that meet each hard constraint of
    the profile, all of them at once (key ``"all"``) and the number of pixels counted
    (``"region_pixels"``); pixels without data fail.
    Explains an empty site list: a site needs every pixel of its landing area to pass."""
    shape = np.shape(next(iter(layers.values())))
    mask = np.ones(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    n = max(int(mask.sum()), 1)
    every = mask.copy()
    out = {}
    for key, ok in _constraint_masks(layers, profile).items():
        ok &= mask
        out[key] = float(ok.sum() / n)
        every &= ok
    out["all"] = float(every.sum() / n)
    out["region_pixels"] = int(mask.sum())
    return out


def score_layers(layers: dict, profile: Profile) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Apply a profile's constraints and weights to the metric layers.

    Parameters
    ----------
    layers : dict of str -> ndarray (rows, cols)
        Metric layers named as in ``METRICS`` (float, NaN = nodata); extra
        layers are ignored.
    profile : Profile

    Returns
    -------
    feasible : uint8 array
        1 where every hard constraint holds and every metric the profile uses
        (constrained or weighted), and the slope and roughness if given, has data (is
        not NaN); 0 elsewhere.
    score : float32 array
        Weighted mean of the terms, in [0, 1]; NaN where not feasible, so a
        number in ``score.tif`` always marks an admissible pixel.
    term_scores : dict of str -> float32 array
        The normalised term of every positively weighted metric, NaN only
        where that metric has no data (so it also explains excluded pixels).
    """
    used = profile.used_metrics
    missing = [m for m in used if m not in layers]
    if missing:
        raise SiteselError(
            f"profile {profile.name!r} uses layer(s) {', '.join(missing)} that the pipeline did not provide; "
            "remove them from the profile or compute them"
        )
    shape = np.shape(layers[used[0]])
    for m in used:
        if np.shape(layers[m]) != shape:
            raise ValueError(f"layer {m} has shape {np.shape(layers[m])}, expected {shape}")

    # NaN is nodata; +inf is data (psr_distance_m is inf when the grid holds no PSR). A pixel whose
    # slope is unknown (its footprint leaves the DEM or touches a hole) is never a landing spot,
    # whether or not the profile weighs the slope.
    feasible = np.ones(shape, dtype=bool)
    for m in {*used, *(SURFACE_METRICS & layers.keys())}:
        feasible &= ~np.isnan(layers[m])
    for ok in _constraint_masks(layers, profile).values():
        feasible &= ok

    term_scores = {}
    total = np.zeros(shape, dtype=np.float64)
    weight_sum = 0.0
    for m in used:
        w = profile.weights.get(m, 0.0)
        if w > 0:
            term_scores[m] = normalise_metric(m, layers[m])
            total += w * term_scores[m]
            weight_sum += w
    score = (total / weight_sum).astype(np.float32)
    score[~feasible] = np.nan
    return feasible.astype(np.uint8), score, term_scores


def _check_keys(table: dict, known, prefix: str, where: str) -> None:
    for key in table:
        _check_known(key, known, prefix, where)


def _check_known(key, known, prefix: str, where: str) -> None:
    if key in known:
        return
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
    raise SiteselError(f"{where}: unknown key '{prefix}{key}' (known: {', '.join(known)}){hint}")


def _table(data: dict, key: str, where: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SiteselError(f"{where}: '{key}' must be a table ([{key}]), got {type(value).__name__}")
    return value


def _string(data: dict, key: str, where: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise SiteselError(f"{where}: '{key}' must be a string, got {type(value).__name__} {value!r}")
    return value


def _number(value, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SiteselError(f"{where}: '{key}' must be a finite number, got {type(value).__name__} {value!r}")
    return float(value)


def _positive(table: dict, key: str, where: str, default=None) -> float:
    value = _number(table.get(key, default), f"landing.{key}", where)
    if value <= 0:
        raise SiteselError(f"{where}: 'landing.{key}' must be > 0, got {value}")
    return value
