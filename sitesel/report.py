"""The human-readable run report (``report.md``) and the machine manifest.

``report.md`` is reproducible: it holds what was run, the top sites, how each
site scored on each term, and the figures, but no timings. ``manifest.json``
(built by :func:`build_manifest`) is the one output file that changes between
identical runs: it adds the timings and the platform.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from .horizon import is_short_reach
from .outputs import jsonable, term_columns, write_text
from .scoring import TERM_PREFIX, at_most
from .terrain.checksum import file_sha256

#: Packages whose versions are recorded (distribution names).
VERSIONED_PACKAGES = ("numpy", "scipy", "numba", "rasterio", "skyfield", "matplotlib", "sitesel")

#: Labels of well-known ``run`` keys, in report order; other keys follow sorted.
RUN_LABELS = {
    "dem": "DEM",
    "far_field": "Far field (distant horizon)",
    "region": "Region",
    "period": "Period (UTC)",
    "observer_height_m": "Observer height (m)",
    "azimuths": "Horizon azimuths",
    "max_distance_km": "Horizon search distance (km)",
    "profile": "Mission profile",
    "grid": "Grid",
    "layer_methods": "How the layers were computed",
    "sitesel": "sitesel version",
}

#: Top-sites table: (site key, header, formatter).
SITE_TABLE = (
    ("rank", "rank", lambda v: f"{v:d}"),
    ("lat", "lat (deg)", lambda v: f"{v:.4f}"),
    ("lon", "lon (deg E)", lambda v: f"{v:.4f}"),
    ("score", "score", lambda v: f"{v:.3f}"),
    ("slope_deg", "slope (deg)", lambda v: f"{v:.1f}"),
    ("sun_lit_fraction", "Sun (% of time)", lambda v: f"{100 * v:.1f}"),
    ("longest_night_h", "longest night (h)", lambda v: f"{v:.1f}"),
    ("earth_visible_fraction", "Earth (% of time)", lambda v: f"{100 * v:.1f}"),
    ("longest_blackout_h", "longest blackout (h)", lambda v: f"{v:.1f}"),
    ("psr_distance_m", "PSR distance (km)", lambda v: f"{v / 1e3:.2f}"),
)


def software_versions() -> dict[str, str]:
    """Versions of Python, GDAL and the packages in :data:`VERSIONED_PACKAGES`."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        import rasterio

        versions["gdal"] = rasterio.__gdal_version__
    except ImportError:
        versions["gdal"] = "not installed"
    return versions


# --------------------------------------------------------------------------- report


def _inline(value) -> str:
    """A compact one-line rendering of a run value."""
    value = jsonable(value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_window(v) if k == 'window' else _inline(v)}" for k, v in value.items())
    if isinstance(value, list):
        return " x ".join(_inline(v) for v in value) if all(isinstance(v, int) for v in value) else ", ".join(
            _inline(v) for v in value
        )
    if isinstance(value, float):
        return f"{value:.10g}"
    return "n/a" if value is None else str(value)


def _window(window) -> str:
    """A DEM window ``[row0, row1, col0, col1]`` (provenance) as rows and columns of the file."""
    r0, r1, c0, c1 = window
    return f"rows {r0}-{r1}, cols {c0}-{c1} of the file"


def _cell(site, key, fmt) -> str:
    value = site.get(key)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return fmt(value)


def _table(headers, rows) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _run_section(run: dict) -> list[str]:
    lines = ["## What was run", ""]
    keys = [k for k in RUN_LABELS if k in run] + sorted(k for k in run if k not in RUN_LABELS and k != "warnings")
    for key in keys:
        lines.append(f"- **{RUN_LABELS.get(key, key)}**: {_inline(run[key])}")
    lines.append(f"- **Software**: {_inline(software_versions())}")
    lines.append("")
    if run.get("warnings"):
        # what the run said on stderr, kept with its results
        lines += ["## Warnings", "", *(f"- {text}" for text in run["warnings"]), ""]
    return lines


def no_sites_hint(constraints) -> str:
    """Why no site was found, in one line, from ``(pass fractions, landing size m)``."""
    fractions, landing_m = constraints
    if fractions.get("region_pixels", 1) == 0:
        return "the profile's [region] holds no pixel of the analysed grid: move the region or the DEM window."
    # all the limits at once: an upper bound, named so, when some limits are (see pipeline.compute)
    all_key = "all" if "all" in fractions else at_most("all")
    parts = ", ".join(f"{key} {share:.1%}" for key, share in fractions.items() if key not in (all_key, "region_pixels"))
    if not parts:
        return (f"the profile has no hard constraint, so no landing area (up to {landing_m:g} m from the centre) "
                "fits wholly on pixels with a slope (away from the DEM's edges and holes): shrink [landing] or "
                "give a larger DEM or region.")
    bound = "" if all_key == "all" else "at most "
    return (f"pixels in the profile region meeting each hard constraint: {parts}; all at once: "
            f"{bound}{fractions[all_key]:.2%}. A site needs every pixel of its landing area (up to {landing_m:g} m "
            "from the centre) to meet them all: relax the tightest constraint, shrink [landing], or use a sharper DEM.")


def _sites_section(sites: list[dict], constraints=None, max_distance_km=None) -> list[str]:
    lines = ["## Top sites", ""]
    if not sites:
        lines.append("No site met every hard constraint of the profile.")
        if constraints is not None:
            hint = no_sites_hint(constraints)
            lines += ["", hint[0].upper() + hint[1:]]
        return lines + [""]
    lines.append(
        "Score: the profile score over the landing ellipse; the other columns are the values at the site centre."
    )
    lines.append("")
    rows = [[_cell(site, key, fmt) for key, _, fmt in SITE_TABLE] for site in sites]
    lines += _table([header for _, header, _ in SITE_TABLE], rows) + [""]
    short = [site for site in sites if max_distance_km is not None
             and is_short_reach(site.get("terrain_reach_km", math.inf) * 1e3, max_distance_km * 1e3)]
    if short:
        reaches = ", ".join(f"{site['rank']} ({site['terrain_reach_km']:.1f} km)" for site in short)
        lines += [f"The supplied terrain ends closer than the {max_distance_km:g} km horizon search to sites "
                  f"{reaches}: their horizons miss any terrain beyond it (`terrain_reach_km` in sites.csv).", ""]
    return lines


def _terms_section(sites: list[dict]) -> list[str]:
    terms = term_columns(set().union(*sites) if sites else ())
    if not terms:
        return []
    lines = [
        "## How each site scored on each term",
        "",
        "Each term is its metric mapped linearly onto [0, 1] over a fixed range (1 = best, 0 = worst) at the site "
        "centre; the score is the weighted mean of the terms.",
        "",
    ]
    headers = ["rank", "score"] + [t[len(TERM_PREFIX):] for t in terms]
    rows = [
        [_cell(site, "rank", lambda v: f"{v:d}"), _cell(site, "score", lambda v: f"{v:.3f}")]
        + [_cell(site, t, lambda v: f"{v:.3f}") for t in terms]
        for site in sites
    ]
    return lines + _table(headers, rows) + [""]


def _summary_section(layers_summary: dict) -> list[str]:
    if not layers_summary:
        return []
    lines = ["## Layers", ""]
    for key in sorted(layers_summary):
        value = layers_summary[key]
        if key == "psr_area_km2":
            lines.append(f"- **Permanently shadowed area**: {value:.2f} km^2")
        else:
            lines.append(f"- **{key}**: {_inline(value)}")
    return lines + [""]


def _heights_section(comparison) -> list[str]:
    if not comparison:
        return []
    lines = [
        "## Observer heights compared",
        "",
        "The top sites and the score use the first height; `layers/h<H>m/` holds every height's layers.",
        "",
    ]
    headers = ["observer height (m)", "PSR area (km^2)", "map mean Sun (% of time)"]
    rows = [[f"{c['observer_height_m']:g}", f"{c['psr_area_km2']:.2f}", f"{100 * c['map_mean_sun_lit_fraction']:.1f}"]
            for c in comparison]
    lines += _table(headers, rows) + [""]
    n_sites = len(comparison[0]["sites"])
    if n_sites:
        headers = ["rank"] + [f"Sun / night (h) / Earth at {c['observer_height_m']:g} m" for c in comparison]
        rows = []
        for i in range(n_sites):
            cells = [str(i + 1)]
            for c in comparison:
                site = c["sites"][i]
                cells.append(f"{100 * site['sun_lit_fraction']:.1f}% / {site['longest_night_h']:.0f} / "
                             f"{100 * site['earth_visible_fraction']:.1f}%")
            rows.append(cells)
        lines += _table(headers, rows) + [""]
    return lines


def _figures_section(figures) -> list[str]:
    if not figures:
        return []
    lines = ["## Figures", ""]
    for title, relative_path in figures:
        lines += [f"### {title}", "", f"![{title}]({Path(relative_path).as_posix()})", ""]
    return lines


def report_text(*, run: dict, sites: list[dict], figures, layers_summary: dict, height_comparison=None,
                constraints=None) -> str:
    """The Markdown text of the report (see :func:`write_report`)."""
    lines = ["# sitesel report", ""]
    lines += _run_section(run)
    lines += _sites_section(sites, constraints, run.get("max_distance_km"))
    lines += _terms_section(sites)
    lines += _summary_section(layers_summary)
    lines += _heights_section(height_comparison)
    lines += _figures_section(figures)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_report(path, *, run: dict, sites: list[dict], figures: list[tuple[str, str]], layers_summary: dict,
                 height_comparison: list[dict] | None = None, constraints=None):
    """Atomically write ``report.md``.

    Parameters
    ----------
    run : dict
        What was run (``dem`` provenance with its checksum, ``region``,
        ``period``, ``observer_height_m``, ``profile``, ...); rendered in a
        fixed order, unknown keys after the known ones, and its ``warnings``
        (a list of lines) in a section of their own.
    sites : list of dict
        Ranked sites as from :func:`sitesel.ranking.rank_sites`; ``term_*``
        keys give the per-term table.
    figures : list of (title, path relative to the report)
    layers_summary : dict
        Whole-map figures, e.g. ``psr_area_km2``.
    height_comparison : list of dict, optional
        One entry per observer height (see :func:`sitesel.pipeline.height_comparison`).
    constraints : (dict, float), optional
        Share of the profile region's pixels meeting each hard constraint and all
        of them (:func:`sitesel.scoring.constraint_pass_fractions`), and the
        landing area's radius or semi-major axis in metres: explains an empty
        site list.
    """
    return write_text(path, report_text(run=run, sites=sites, figures=figures, layers_summary=layers_summary,
                                        height_comparison=height_comparison, constraints=constraints))


# --------------------------------------------------------------------------- manifest


def _input_entry(item) -> dict:
    path, shown = item if isinstance(item, tuple) else (item, item)
    sha256, scope = file_sha256(path)
    return {"path": os.path.abspath(shown), "sha256": sha256, "sha256_scope": scope,
            "size_bytes": Path(path).stat().st_size}


def build_manifest(*, inputs, config: dict, timings: dict, extra: dict) -> dict:
    """The content of ``manifest.json``.

    ``inputs``: paths, or (file, path to record) pairs for a file read before it is moved there.
    Keys: ``inputs`` (path, sha256 with its scope as in
    :func:`sitesel.terrain.checksum.file_sha256`, size_bytes of each input file), ``config``,
    ``versions``, ``timings`` (seconds, rounded to ms), ``platform``, a
    ``note`` and every key of ``extra`` (which must not clash with these).
    """
    manifest = {
        "inputs": [_input_entry(p) for p in inputs],
        "config": jsonable(config),
        "versions": software_versions(),
        "timings": {str(k): round(float(v), 3) for k, v in timings.items()},
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "python": sys.version.split()[0],
            "python_implementation": platform.python_implementation(),
            "cpu_count": os.cpu_count(),
        },
        "note": "manifest.json is the only output that differs between identical runs (timings, platform)",
    }
    clash = sorted(set(manifest) & set(extra))
    if clash:
        raise ValueError(f"manifest extra keys clash with built-in keys: {', '.join(clash)}")
    manifest.update(jsonable(extra))
    return manifest
