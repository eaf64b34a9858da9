"""The full pipeline: terrain -> layers -> scores -> ranked sites -> output directory.

This is the one place that strings the stages together; each stage is a pure
function in its own module. Only :func:`write_outputs` touches the disk
(through :mod:`sitesel.outputs`), and every file it writes is atomic.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path

import numpy as np

from . import __version__
from .config import height_dir_name, observer_heights_m, resolve_period
from .ephemeris import Track, body_track, covered_end
from .errors import SiteselError, SiteselWarning
from .figure_pool import FigurePool
from .horizon import bearings_deg, horizon_map, search_reach_m, short_reach_warning
from .progress import Progress
from .ranking import rank_sites, region_to_mask
from .refine import landing_window, rank_refining, refines_by_rank
from .scoring import (Profile, at_most, constraint_pass_fractions, constraints_met, load_profile, profile_from_dict,
                      score_layers)
from .surface import footprint_size_px, slope_roughness
from .terrain.model import Terrain
from .tiling import TileStore, remove_other_tile_sets, run_key, run_tiles, tile_slices
from .visibility import ExactWhere, point_series, psr_area_km2, psr_layers, scan, visibility_layers

#: Per-tile visibility layers (computed tile by tile, checkpointed).
TILE_LAYERS = (
    "sun_lit_fraction",
    "sun_disc_fraction",
    "longest_night_h",
    "earth_visible_fraction",
    "longest_blackout_h",
    "longest_sunlit_h",
    "n_long_nights",
    "visibility_exact",
)
#: Visibility layers that are run lengths over the time steps (lower bounds where not every step was scanned).
GAP_LAYERS = ("longest_night_h", "longest_blackout_h", "longest_sunlit_h", "n_long_nights")
#: Nights at least this long are counted in ``n_long_nights`` (3 days: a typical battery sizing case).
LONG_NIGHT_H = 72.0

#: Every layer written to ``layers/``: name -> (units, description).
LAYER_INFO = {
    "slope_deg": ("deg", "slope of the least-squares plane over the lander footprint"),
    "roughness_m": ("m", "RMS residual of heights about the footprint plane"),
    "sun_lit_fraction": ("1", "fraction of time any part of the solar disc is above the horizon"),
    "sun_disc_fraction": ("1", "time-mean visible fraction of the solar disc"),
    "longest_night_h": ("h", "longest span with no part of the solar disc visible"),
    "earth_visible_fraction": ("1", "fraction of time the Earth's centre is above the horizon"),
    "longest_blackout_h": ("h", "longest span without the Earth above the horizon"),
    "longest_sunlit_h": ("h", "longest span with some of the solar disc always visible"),
    "n_long_nights": ("1", f"number of nights of at least {LONG_NIGHT_H:g} h"),
    "visibility_exact": ("1", "visibility layers from every time step (1), or binned fractions and lower bounds "
                              "on the gap layers, exact at permanent shadow (0)"),
    "psr": ("1", "permanently shadowed during the period (1) or not (0)"),
    "psr_distance_m": ("m", "distance to the nearest permanently shadowed pixel"),
    "feasible": ("1", "all hard constraints of the profile met (1) or not (0)"),
    "score": ("1", "profile score in [0, 1]"),
}
#: Layers that exist once per observer height.
HEIGHT_LAYERS = (*TILE_LAYERS, "psr", "psr_distance_m")

#: Above this many pixels x time steps a run scans every step only where it matters (see
#: :class:`~sitesel.visibility.ExactWhere`): a year of 1 h steps on a 2048^2 map.
EXACT_BUDGET_PIXEL_STEPS = 2048 * 2048 * 8784
#: ... and only over more time steps than this (a leap year of 1 h steps): a shorter span costs
#: about as much to scan exactly as the binned pass of a refined run (10 against 8-10 us per
#: pixel over a year), and the binned fractions' 0.5-point bound, on which the ranking's
#: optimism rests (:mod:`sitesel.refine`), needs the many visits to each longitude bin of a
#: long span (two weeks at 0.5 h missed it by up to 1.6 points).
REFINE_MIN_STEPS = 8784

#: Heatmaps drawn for every run: layer -> (title, colour map).
HEATMAPS = {
    "score": ("Profile score", "viridis"),
    "sun_lit_fraction": ("Sunlit fraction", "inferno"),
    "earth_visible_fraction": ("Earth-visible fraction", "cividis"),
    "longest_night_h": ("Longest night", "magma_r"),
    "slope_deg": ("Slope", "terrain"),
    "psr_distance_m": ("Distance to permanent shadow", "Blues_r"),
}
#: Heatmaps on a logarithmic scale: permanent shadow's "night" is the whole period (163,000 h
#: over 18.6 years), while the nights that size a lander's batteries last hours to days.
HEATMAP_LOG = ("longest_night_h",)


@dataclass
class RunResult:
    """What a pipeline run produced, in memory.

    ``layers`` are those of the first (scored) observer height;
    ``height_layers`` maps every height to its own visibility layers.
    """

    terrain: Terrain
    layers: dict[str, np.ndarray]
    height_layers: dict[float, dict[str, np.ndarray]]
    layer_methods: dict[str, str]
    sites: list[dict]
    profile: Profile
    track: Track
    site_series: list[dict]
    site_horizons: list[np.ndarray]
    constraint_summary: dict[str, float] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    tiles: dict[str, int] = field(default_factory=dict)  # "total", and "resumed" from an earlier run's checkpoints
    far_field: dict | None = None  # the far field's provenance (file, window, decimation), if one was used


class Scratch:
    """One float32 buffer, handed out as a C-contiguous array of any shape to calls made one
    after another (each call's array is dead once the next asks): a run's tiles reuse the
    memory of their horizons (see :func:`~sitesel.horizon.horizon_map`'s ``out``)."""

    def __init__(self):
        self._flat = np.empty(0, np.float32)

    def array(self, shape) -> np.ndarray:
        size = math.prod(shape)
        if size > self._flat.size:
            self._flat = None  # freed before the larger one is allocated
            self._flat = np.empty(size, np.float32)
        return self._flat[:size].reshape(shape)


def resolve_profile(spec) -> Profile:
    """A profile from a preset name, a TOML path or an inline table."""
    if isinstance(spec, dict):
        return profile_from_dict(spec, source="config [profile]")
    return load_profile(spec)


def tile_selector(profile: Profile, slope_deg: np.ndarray, roughness_m: np.ndarray, by_rank: bool):
    """The pixels a refined run scans over every step in its tiles, as a function of a tile
    (rows, cols of the analysed grid) that gives its :class:`~sitesel.visibility.ExactWhere`.

    With ``by_rank``, none: the ranking scans the landing areas it needs afterwards
    (:mod:`sitesel.refine`). Otherwise (landing areas of over 256 rows) every pixel within
    the profile's surface limits that can meet its limits on the fractions.
    """
    limits = {f.name: profile.constraints[f.name] for f in fields(ExactWhere) if f.name in profile.constraints}
    if by_rank:
        eligible = np.zeros(np.shape(slope_deg), dtype=bool)
    else:
        eligible = constraints_met({"slope_deg": slope_deg, "roughness_m": roughness_m}, profile)
    selection = ExactWhere(eligible, **limits)
    return lambda tile: replace(selection, eligible=selection.eligible[tile])


def compute(
    terrain: Terrain,
    config: dict,
    *,
    tile_dir: Path | None = None,
    resume: bool = False,
    far_field: Terrain | None = None,
    client=None,
    quiet: bool = False,
    profile: Profile | None = None,
    window: tuple[slice, slice] | None = None,
) -> RunResult:
    """Run every stage on ``terrain`` with a validated ``config`` (see :mod:`sitesel.config`).

    ``window`` (rows, cols) limits the analysed pixels to part of ``terrain``;
    the rest is a halo that shades them and gives their footprints full
    support, so no site is judged by terrain cut off at the analysed area's
    edge. The layers and sites are on the window's grid.
    """
    rows_w, cols_w = window or (slice(0, terrain.shape[0]), slice(0, terrain.shape[1]))
    analysed = terrain.window(rows_w, cols_w)
    r0, c0 = rows_w.indices(terrain.shape[0])[0], cols_w.indices(terrain.shape[1])[0]
    no_height = float(analysed.nodata.mean())
    if no_height == 1.0:
        raise SiteselError("the DEM has no heights (all nodata) in the area to analyse; pick a region it covers")
    profile = profile or resolve_profile(config["profile"])
    landing_span_m = 2.0 * profile.ellipse_semi_major_m
    terrain_span_m = min(terrain.shape) * terrain.resolution_m
    if landing_span_m > terrain_span_m:
        raise SiteselError(
            f"the profile's landing area is {landing_span_m / 1e3:g} km across, wider than the "
            f"{terrain.shape[0] * terrain.resolution_m / 1e3:g} x {terrain.shape[1] * terrain.resolution_m / 1e3:g} km "
            "of terrain read, so no site could fit; shrink [landing] in the profile or give a larger DEM or region")
    baseline_m = float(config["surface"]["baseline_m"])
    baseline_px = footprint_size_px(terrain.resolution_m, baseline_m)
    if baseline_px > min(terrain.shape):
        raise SiteselError(
            f"surface.baseline_m = {baseline_m:g} m spans {baseline_px} px, more than the {terrain.shape[0]} x "
            f"{terrain.shape[1]} px of terrain read, so no pixel would get a slope; give the lander's footprint "
            "(e.g. 20 m)")

    if no_height > 0.0:
        warnings.warn(f"{100 * no_height:.2f}% of the area to analyse has no height (holes in the DEM or the edge "
                      "of its coverage): those pixels are nodata in every layer (255 in psr and feasible), no pixel "
                      "whose lander footprint reaches them is feasible, and they block no horizon; fill small holes "
                      "first (e.g. gdal_fillnodata.py) to analyse them", SiteselWarning, stacklevel=2)

    def in_terrain(tile):
        rows, cols = tile
        return slice(rows.start + r0, rows.stop + r0), slice(cols.start + c0, cols.stop + c0)

    max_distance_m = float(config["horizon"]["max_distance_km"]) * 1e3
    warning = short_reach_warning(search_reach_m(analysed.grid.bounds_m, terrain, far_field), max_distance_m,
                                  far_field)
    if warning:
        warnings.warn(warning, SiteselWarning, stacklevel=2)

    timings: dict[str, float] = {}
    start, end, step_hours = resolve_period(config["time"])
    n_azimuths = int(config["horizon"]["azimuths"])
    heights_m = observer_heights_m(config)

    clock = time.perf_counter()
    track = body_track(start, end, step_hours, quiet=quiet)
    timings["ephemeris"] = time.perf_counter() - clock

    clock = time.perf_counter()
    slope_deg, roughness_m = (
        layer[rows_w, cols_w] for layer in slope_roughness(terrain, baseline_m=baseline_m)
    )
    timings["surface"] = time.perf_counter() - clock

    # Long runs on large maps scan every time step only where the ranking needs it (see
    # sitesel.refine; for landing areas of over 256 rows, at every pixel that can meet the
    # profile's limits) and possible permanent shadow for the Sun until first lit: the sites and
    # PSR are those of a full scan.
    refine = (not config["run"]["exact_everywhere"] and len(track) > REFINE_MIN_STEPS
              and analysed.shape[0] * analysed.shape[1] * len(track) > EXACT_BUDGET_PIXEL_STEPS)
    by_rank = refine and refines_by_rank(analysed.grid, profile)
    select = tile_selector(profile, slope_deg, roughness_m, by_rank) if refine else None

    # seconds spent in each kernel by the tiles computed in this process (not resumed, not on a cluster)
    stage_s = {"horizon": 0.0, "visibility": 0.0}

    def compute_tile(tile, on_step=None, scratch=None):
        """Layers of one tile; ``on_step()`` is called per horizon azimuth and per visibility chunk.
        ``scratch``: a :class:`Scratch` that holds the horizons (tiles computed one after another)."""
        rows, cols = in_terrain(tile)
        shape = (rows.stop - rows.start, cols.stop - cols.start, n_azimuths)
        result = {}
        for i, height_m in enumerate(heights_m):
            clock = time.perf_counter()
            horizon_deg = horizon_map(
                terrain, n_azimuths, height_m, max_distance_m, rows=rows, cols=cols, far_field=far_field,
                progress=None if on_step is None else lambda done, total: on_step(),
                out=None if scratch is None else scratch.array(shape),
            )
            stage_s["horizon"] += time.perf_counter() - clock
            clock = time.perf_counter()
            layers = visibility_layers(terrain, horizon_deg, track, height_m, rows=rows, cols=cols,
                                       long_night_h=LONG_NIGHT_H, exact_where=select(tile) if refine else None,
                                       progress=None if on_step is None else lambda n_px: on_step())
            stage_s["visibility"] += time.perf_counter() - clock
            for name in TILE_LAYERS:
                result[f"{name}@{i}"] = layers[name]
        return result

    tiles = tile_slices(analysed.shape, int(config["run"]["tile_px"]))
    # a run refined by rank scans no pixel in its tiles; one refined otherwise, those its profile's limits allow
    refined_by = None
    if refine:
        refined_by = "by rank" if by_rank else {"constraints": profile.constraints}
    # the profile shapes the tiles only through refined_by: trying profiles on one map reuses its tiles
    key = run_key({k: v for k, v in config.items() if k != "profile"}, terrain.provenance, __version__,
                  None if far_field is None else far_field.provenance, [r0, c0, *analysed.shape], refined_by)
    store = TileStore((tile_dir or Path(".sitesel-tiles")) / key)
    clock = time.perf_counter()
    # Progress counts horizon azimuths and visibility chunks (scan.PROGRESS_CHUNK_PX pixels each, and
    # as many again for the scan of a refined run); a finished (or resumed) tile jumps to its share.
    def tile_steps(tile):
        rows, cols = tile
        n_px = (rows.stop - rows.start) * (cols.stop - cols.start)
        return len(heights_m) * (n_azimuths + (2 if refine else 1) * math.ceil(n_px / scan.PROGRESS_CHUNK_PX))

    with Progress(sum(map(tile_steps, tiles)), "horizon + visibility", unit="step", quiet=quiet) as bar:
        finished = []

        def tile_done(tile):
            finished.append(tile_steps(tile))
            bar.set(sum(finished))

        # a cluster's workers may run tiles side by side: each allocates its own horizons
        work = compute_tile if client is not None else partial(compute_tile, on_step=bar.advance, scratch=Scratch())
        tile_counts = {"total": len(tiles), "resumed": sum(store.has(tile) for tile in tiles) if resume else 0}
        results = run_tiles(work, tiles, store, resume=resume, progress=tile_done, client=client)
        del work  # and with it the tiles' horizon buffer, before the ranking's arrays
        remove_other_tile_sets(store)
    timings["horizon_visibility"] = time.perf_counter() - clock
    if client is None:
        timings.update({f"{name} (in tiles)": seconds for name, seconds in stage_s.items()})

    height_layers = {}
    for i, height_m in enumerate(heights_m):
        layers = {}
        for name in TILE_LAYERS:
            full = np.full(analysed.shape, np.nan, dtype=np.float32)
            for (rows, cols), result in zip(tiles, results):
                full[rows, cols] = result[f"{name}@{i}"]
            layers[name] = full
        layers.update(psr_layers(layers["sun_lit_fraction"], analysed.grid))
        height_layers[height_m] = layers

    layers = {"slope_deg": slope_deg, "roughness_m": roughness_m, **height_layers[heights_m[0]]}
    clock = time.perf_counter()

    def scan_window(height_m, rows, cols):
        """Every step of the analysed pixels ``rows`` x ``cols`` at ``height_m``, into its layers."""
        in_rows, in_cols = in_terrain((rows, cols))
        horizon_deg = horizon_map(terrain, n_azimuths, height_m, max_distance_m, rows=in_rows, cols=in_cols,
                                  far_field=far_field)
        exact = visibility_layers(terrain, horizon_deg, track, height_m, rows=in_rows, cols=in_cols,
                                  long_night_h=LONG_NIGHT_H)
        for name in TILE_LAYERS:
            height_layers[height_m][name][rows, cols] = exact[name]

    if by_rank:
        with Progress(None, "scanning the landing areas the ranking needs", unit="area", quiet=quiet) as bar:
            sites, n_scanned_areas = rank_refining(layers, analysed.grid, profile,
                                                   partial(scan_window, heights_m[0]), progress=bar.advance)
            # the other heights' figures at the sites, compared in the report, exact too
            for height_m in heights_m[1:]:
                for site in sites:
                    scan_window(height_m, *landing_window((site["row"], site["col"]), 0, analysed.shape))
                    bar.advance()
        timings["refinement"] = time.perf_counter() - clock
        clock = time.perf_counter()
    feasible, score, _ = score_layers(layers, profile)
    layers["feasible"] = feasible
    layers["score"] = score
    if not by_rank:
        sites = rank_sites(score, feasible, layers, analysed.grid, profile)
    region = region_to_mask(analysed.grid, profile.region)
    constraint_summary = constraint_pass_fractions(layers, profile, region)
    gap_limits = [key for key in profile.constraints if key[4:] in GAP_LAYERS]
    if refine and gap_limits:
        # lower bounds on the gap lengths where not every step was scanned: their limits, and so all the
        # limits at once, pass at most so often
        for key in gap_limits + ["all"]:
            constraint_summary[at_most(key)] = constraint_summary.pop(key)
    for site in sites:
        site["height_m"] = float(analysed.height_m[site["row"], site["col"]])
        # how far its horizon search runs on supplied terrain before the continuation rule (see horizon)
        site["terrain_reach_km"] = search_reach_m((site["x_m"], site["y_m"]) * 2, terrain, far_field) / 1e3
    timings["scoring_ranking"] = time.perf_counter() - clock

    clock = time.perf_counter()
    site_series, site_horizons = [], []
    for site in sites:
        rows, cols = in_terrain((slice(site["row"], site["row"] + 1), slice(site["col"], site["col"] + 1)))
        horizon_deg = horizon_map(
            terrain, n_azimuths, heights_m[0], max_distance_m, rows=rows, cols=cols,
            method="raymarch", far_field=far_field,
        )[0, 0]
        series = point_series(
            site["lat"], site["lon"], float(analysed.height_m[site["row"], site["col"]]),
            heights_m[0], horizon_deg, track,
        )
        # the map's disc fraction is binned by longitude; the sites get the per-step value
        site["sun_disc_fraction"] = series["sun_disc_fraction"]
        site_horizons.append(horizon_deg)
        site_series.append(series)
    timings["sites"] = time.perf_counter() - clock

    exact = f"exact per time step ({len(track)} steps of {step_hours:g} h)"
    methods = {name: exact for name in TILE_LAYERS}
    # a DEM coarser than the baseline fits its plane over more ground than the lander stands on: say how much
    footprint_m = baseline_px * terrain.resolution_m
    across = f": {footprint_m:g} m across at this DEM's resolution" if footprint_m >= 2 * baseline_m else ""
    methods["slope_deg"] = methods["roughness_m"] = (
        f"least-squares plane over the lander footprint ({baseline_px} x {baseline_px} px for a "
        f"{baseline_m:g} m baseline{across}), slope against the local horizontal, roughness the RMS residual")
    methods["score"] = methods["feasible"] = "from the layers, all exact"
    if refine:
        scanned = layers["visibility_exact"]
        share = float(np.nanmean(scanned)) if np.isfinite(scanned).any() else 0.0
        if by_rank:
            why = (f"at the first height, the landing areas the ranking scanned, the ranked sites' and those of the "
                   f"sites that outranked them on the bounds alone: {n_scanned_areas} areas, "
                   f"{100 * share:.2f}% of the pixels; at the other heights, the ranked sites' centres")
        else:
            why = f"the pixels that can meet the profile's limits: {100 * share:.1f}%"
        where = f" where visibility_exact = 1 ({why}); elsewhere "
        for name in ("sun_lit_fraction", "earth_visible_fraction"):
            methods[name] = f"{exact}{where}binned by longitude (within 0.5 percentage points)"
        for name in GAP_LAYERS:
            methods[name] = (f"{exact}{where}a lower bound from whole cells (runs of steps in which the body's "
                             "longitude stays in one bin) that the pixel's horizon over the bin decides, exact at "
                             "permanent shadow; [run] exact_everywhere = true scans every pixel")
        if by_rank:
            methods["score"] = methods["feasible"] = (
                "from the layers: exact where visibility_exact = 1 (every ranked site's landing area), from the "
                "binned fractions and the gap layers' lower bounds elsewhere (never stricter than exact on a gap "
                "limit; the ranking itself reads the fractions raised by twice their error bound)")
        else:
            methods["score"] = methods["feasible"] = (
                "from the layers; exact at every feasible pixel (all scanned), from the binned fractions and "
                "the gap layers' lower bounds at the others, all infeasible")
    methods["visibility_exact"] = "1 where every time step was scanned"
    methods["sun_disc_fraction"] = (f"binned by Sun longitude over all {len(track)} steps (within 0.5 percentage "
                                    "points of the per-step value); per step at the ranked sites in sites.csv")
    # possible shadow is always scanned until first lit: a pixel left binned is lit for over 0.5% of the steps
    methods["psr"] = methods["psr_distance_m"] = exact

    return RunResult(
        tiles=tile_counts,
        far_field=None if far_field is None else far_field.provenance,
        terrain=analysed,
        layers=layers,
        height_layers=height_layers,
        layer_methods=methods,
        sites=sites,
        profile=profile,
        track=track,
        site_series=site_series,
        site_horizons=site_horizons,
        constraint_summary=constraint_summary,
        timings_s=timings,
    )


def height_comparison(result: RunResult) -> list[dict]:
    """Per observer height: PSR area, mean sunlit fraction, and each ranked site's figures."""
    rows = []
    area_m2 = result.terrain.grid.pixel_area_m2()
    for height_m, layers in result.height_layers.items():
        valid = np.isfinite(layers["sun_lit_fraction"])
        row = {
            "observer_height_m": height_m,
            "psr_area_km2": float(psr_area_km2(layers["psr"], result.terrain.grid)),
            "map_mean_sun_lit_fraction": float(np.average(layers["sun_lit_fraction"][valid], weights=area_m2[valid]))
            if valid.any() else float("nan"),
            "sites": [
                {name: float(layers[name][site["row"], site["col"]])
                 for name in ("sun_lit_fraction", "longest_night_h", "earth_visible_fraction")}
                for site in result.sites
            ],
        }
        rows.append(row)
    return rows


def write_outputs(result: RunResult, out_dir: Path, config: dict, *, inputs: list, quiet: bool = False,
                  total_time_s: float | None = None, written_inputs: dict | None = None,
                  run_warnings: list | None = None) -> list[Path]:
    """Write layers, sites, plots, report and manifest into ``out_dir``; return the files written.

    ``inputs``: the input files, listed with their checksums in the manifest. ``written_inputs``
    (file name -> Terrain): inputs the caller made itself (the demo's DEMs), written into ``out_dir``
    with the outputs, as part of their set, and listed with ``inputs``. ``run_warnings``: what the
    run warned about, kept in the report and the manifest. ``total_time_s``, the time
    the run took before its outputs, and the time taken here make the manifest's total."""
    from . import outputs, plots, report
    from .terrain.grid import bearing_to_local_azimuth_deg
    from .terrain.io import write_terrain

    final_dir = Path(out_dir)
    # everything is written into a staging folder, then moved into place: an interrupted run leaves the
    # earlier run's outputs as they were, and a finished one leaves no file of an earlier run beside its own
    with outputs.staged_outputs(final_dir) as out_dir:
        grid = result.terrain.grid
        written: list[Path] = []
        clock = time.perf_counter()
        for name, terrain in (written_inputs or {}).items():
            written.append(write_terrain(out_dir / name, terrain))
        layer_dir = out_dir / "layers"
        layer_dir.mkdir(parents=True, exist_ok=True)
        several_heights = len(result.height_layers) > 1
        layer_jobs = [(layer_dir / f"{name}.tif", name, result.layers[name]) for name in LAYER_INFO]
        if several_heights:
            for height_m, layers in result.height_layers.items():
                folder = layer_dir / height_dir_name(height_m)
                folder.mkdir(exist_ok=True)
                layer_jobs += [(folder / f"{name}.tif", name, layers[name]) for name in HEIGHT_LAYERS]
        plot_dir = out_dir / "plots"
        plot_dir.mkdir(exist_ok=True)
        figures = []
        figure_jobs = []
        bounded = np.any(result.layers["visibility_exact"] == 0)
        for name, (title, cmap) in HEATMAPS.items():
            path = plot_dir / f"{name}.png"
            shown = title
            if name in GAP_LAYERS and bounded:
                shown = f"{title} (a lower bound where not scanned, see visibility_exact)"
            if name == "score" and np.any((result.layers["visibility_exact"] == 0) & (result.layers["feasible"] == 1)):
                shown = f"{title} (binned fractions, gaps' lower bounds where not scanned: see visibility_exact)"
            figure_jobs.append(partial(plots.heatmap, path, result.layers[name], grid, title=shown, label=title,
                                       units=LAYER_INFO[name][0], cmap=cmap, log=name in HEATMAP_LOG,
                                       sites=result.sites, hillshade=result.terrain.height_m))
            figures.append((shown, f"plots/{name}.png"))
        for site, horizon_deg, series in zip(result.sites, result.site_horizons, result.site_series):
            azimuth_deg = bearing_to_local_azimuth_deg(bearings_deg(len(horizon_deg)), site["lon"])
            order = np.argsort(azimuth_deg)
            path = plot_dir / f"horizon_site{site['rank']:02d}.png"
            figure_jobs.append(partial(
                plots.horizon_mask, path, azimuth_deg[order], horizon_deg[order],
                sun_az_deg=series["sun_azimuth_deg"], sun_el_deg=series["sun_elevation_deg"],
                earth_az_deg=series["earth_azimuth_deg"], earth_el_deg=series["earth_elevation_deg"],
                times=result.track.times_utc,
                title=f"Site {site['rank']}: {plots.point_label(site['lat'], site['lon'])}",
            ))
            figures.append((f"Horizon of site {site['rank']}", f"plots/{path.name}"))
        with Progress(len(layer_jobs) + len(figure_jobs), "writing outputs", unit="file", quiet=quiet) as bar:
            with FigurePool(figure_jobs, on_done=bar.advance) as drawing:
                # the figures are drawn in other processes while this one writes the layers
                for path, name, array in layer_jobs:
                    units, description = LAYER_INFO[name]
                    tags = {"method": result.layer_methods[name]} if name in result.layer_methods else None
                    nodata = None
                    if array.dtype.kind in "bu":  # 0/1 layers (psr): 255 where the DEM has no height
                        array, nodata = np.where(result.terrain.nodata, 255, array).astype(np.uint8), 255
                    outputs.write_layer(path, array, grid, units=units, description=description, tags=tags,
                                        nodata=nodata)
                    written.append(path)
                    bar.advance()
                written.append(outputs.write_sites_csv(out_dir / "sites.csv", result.sites))
                written.append(outputs.write_sites_geojson(out_dir / "sites.geojson", result.sites))
                written += drawing.wait()
        start, end, step_hours = resolve_period(config["time"])
        heights_m = list(result.height_layers)
        run_info = {
            "dem": result.terrain.provenance,
            **({"far_field": result.far_field} if result.far_field is not None else {}),
            "region": config.get("region"),
            "period": {"start": start, "end": covered_end(end, result.track), "step_hours": step_hours,
                       "steps": len(result.track)},
            "observer_height_m": heights_m[0] if len(heights_m) == 1 else heights_m,
            "azimuths": config["horizon"]["azimuths"],
            "max_distance_km": config["horizon"]["max_distance_km"],
            "profile": result.profile.record(),
            "grid": {"shape": list(grid.shape), "resolution_m": grid.resolution_m},
            "layer_methods": {
                method: ", ".join(name for name in result.layer_methods if result.layer_methods[name] == method)
                for method in dict.fromkeys(result.layer_methods.values())
            },
            "sitesel": __version__,
        }
        if run_warnings:
            run_info["warnings"] = [str(text) for text in run_warnings]
        comparison = height_comparison(result)
        summary = {"psr_area_km2": comparison[0]["psr_area_km2"]}
        landing = result.profile.ellipse_semi_major_m  # the disc radius for a disc
        report_path = out_dir / "report.md"
        report.write_report(report_path, run=run_info, sites=result.sites, figures=figures, layers_summary=summary,
                            height_comparison=comparison if several_heights else None,
                            constraints=(result.constraint_summary, landing))
        written.append(report_path)
        timings = dict(result.timings_s)
        timings["outputs"] = time.perf_counter() - clock
        if total_time_s is not None:
            timings["total"] = total_time_s + timings["outputs"]
        # a written input is listed at its final path
        inputs = [*inputs, *((out_dir / name, final_dir / name) for name in written_inputs or {})]
        # the tiles reused by --resume: in the manifest only, as the report is the same either way
        manifest = report.build_manifest(inputs=inputs, config=config, timings=timings,
                                         extra={"run": run_info, "tiles": result.tiles})
        outputs.write_json(out_dir / "manifest.json", manifest)
        written.append(out_dir / "manifest.json")
    return [final_dir / path.relative_to(out_dir) for path in written]
