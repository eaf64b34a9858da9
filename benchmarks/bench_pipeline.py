"""Whole-pipeline benchmark: `sitesel run` stages on a synthetic DEM over a long span.

    python benchmarks/bench_pipeline.py                     # 2048^2 at 20 m, 18.6 years at 1 h, K = 360
    python benchmarks/bench_pipeline.py --size 512 --years 1 --azimuths 180 --reference-years 0

Reports the wall time of each stage (from the run's own manifest timings), the
total, the peak resident memory, the machine's speed just before and after the run
(the bare sweep's milliseconds per azimuth on the same terrain, ``bare_sweep.py``: this
VM's speed moves by a quarter or more from hour to hour), the visibility stage's time over the span against
its time over one year (``--reference-years``: that run goes first, in the same
process), and the ratio of the visibility stage's cost per pixel between the chosen
span and one year (measured in the same run on a sample tile, with the track's
tables built beforehand, as a run builds them once for every tile) for the
time-independent fractions and for the exact per-step layers that ``run`` writes, to
`benchmarks/results/pipeline.json` and a short table on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

from bare_sweep import bare_sweep_rate
from sitesel import pipeline
from sitesel.config import validate_config
from sitesel.ephemeris import body_track
from sitesel.horizon import horizon_map
from sitesel.terrain.synthetic import synthetic_south_pole
from sitesel.surface import slope_roughness
from sitesel.visibility import BinnedTrack, visibility_fractions, visibility_layers

RESULTS = Path(__file__).parent / "results"


def visibility_cost_ratio(terrain, years: float, n_azimuths: int, tile_px: int = 128) -> dict:
    """Seconds per pixel of the visibility kernels for `years` vs one year, on one tile: the
    binned fractions, the exact layers of every pixel, and the layers as `run` computes them
    in the tiles of a large map (binned fractions and lower bounds on the gaps, exact at
    permanent shadow: pipeline.tile_selector; the landing areas the ranking then scans are
    timed as the run's "refinement" stage)."""
    rows, cols = slice(0, tile_px), slice(0, tile_px)
    horizon_deg = horizon_map(terrain, n_azimuths, 2.0, rows=rows, cols=cols)
    profile = pipeline.resolve_profile("default")
    by_rank = pipeline.refines_by_rank(terrain.grid, profile)
    exact_where = pipeline.tile_selector(profile, *slope_roughness(terrain, baseline_m=20.0), by_rank)((rows, cols))
    out = {}
    # The first pass compiles the kernels; the second is timed.
    for span in (1.0, years, 1.0, years):
        end = str(np.datetime64("2027-01-01") + np.timedelta64(int(span * 365.25 * 86400), "s"))
        track = body_track("2027-01-01", end, 1.0)
        # once per run, not per pixel (a run reuses them for every tile): timed apart, as in
        # bench_visibility; visibility_layers builds its tables on its first call with a track
        clock = time.perf_counter()
        binned = BinnedTrack(track, n_azimuths)
        visibility_layers(terrain, horizon_deg[:2, :2], track, 2.0, rows=slice(0, 2), cols=slice(0, 2))
        out[f"track_tables_{span:g}y_s"] = time.perf_counter() - clock
        clock = time.perf_counter()
        visibility_fractions(terrain, horizon_deg, binned, 2.0, rows=rows, cols=cols)
        out[f"fractions_{span:g}y_s"] = time.perf_counter() - clock
        clock = time.perf_counter()
        visibility_layers(terrain, horizon_deg, track, 2.0, rows=rows, cols=cols)
        out[f"exact_layers_{span:g}y_s"] = time.perf_counter() - clock
        clock = time.perf_counter()
        layers = visibility_layers(terrain, horizon_deg, track, 2.0, rows=rows, cols=cols, exact_where=exact_where)
        out[f"run_layers_{span:g}y_s"] = time.perf_counter() - clock
        out["run_layers_scanned_share"] = float(np.nanmean(layers["visibility_exact"]))
    for kind in ("fractions", "exact_layers", "run_layers"):
        out[f"{kind}_ratio"] = out[f"{kind}_{years:g}y_s"] / out[f"{kind}_1y_s"]
    # what a run on a large map costs per pixel over `years`, against every pixel exact over one year
    out["run_layers_vs_exact_1y_ratio"] = out[f"run_layers_{years:g}y_s"] / out["exact_layers_1y_s"]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--resolution-m", type=float, default=20.0)
    parser.add_argument("--years", type=float, default=18.6)
    parser.add_argument("--azimuths", type=int, default=360)
    parser.add_argument("--reference-years", type=float, default=1.0,
                        help="also run this span first, in the same process, for the visibility stage's cost "
                             "ratio (0: skip)")
    args = parser.parse_args(argv)

    terrain = synthetic_south_pole(args.size, args.resolution_m, seed=0)
    # Warm the numba caches so the timings measure the work, not the compiler.
    warm = synthetic_south_pole(64, args.resolution_m, seed=0)
    warm_config = validate_config({"time": {"step_hours": 48.0}, "horizon": {"azimuths": 16}})
    out = RESULTS / "pipeline_run"
    pipeline.compute(warm, warm_config, tile_dir=out / "warm", quiet=True)

    ratio = visibility_cost_ratio(terrain, args.years, args.azimuths)

    def run(years, tile_dir):
        config = validate_config({"time": {"years": years, "step_hours": 1.0}, "horizon": {"azimuths": args.azimuths}})
        clock = time.perf_counter()
        result = pipeline.compute(terrain, config, tile_dir=tile_dir, quiet=False)
        return config, result, time.perf_counter() - clock

    def gauge_ms():
        """The machine's speed now: the bare sweep's mean milliseconds per azimuth on the terrain
        (the least of three rounds over its ten bearings)."""
        return round(1e3 * min(bare_sweep_rate(terrain.height_m, args.resolution_m)[1] for _ in range(3)), 1)

    reference = run(args.reference_years, out / "reference_tiles")[1] if args.reference_years > 0 else None
    gauge_before = gauge_ms()
    config, result, compute_s = run(args.years, out / "tiles")
    clock = time.perf_counter()
    pipeline.write_outputs(result, out, config, inputs=[], quiet=True)
    outputs_s = time.perf_counter() - clock
    gauge_after = gauge_ms()
    scanned = np.nanmean(result.layers["visibility_exact"])
    record = {
        "size_px": args.size,
        "resolution_m": args.resolution_m,
        "years": args.years,
        "azimuths": args.azimuths,
        "steps": len(result.track),
        "stages_s": {k: round(v, 2) for k, v in result.timings_s.items()},
        "compute_s": round(compute_s, 2),
        "outputs_s": round(outputs_s, 2),
        "total_s": round(compute_s + outputs_s, 2),
        "target_total_s": 120.0,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "visibility_span_cost": {k: round(v, 3) for k, v in ratio.items()},
        "scanned_share": round(float(scanned), 4),
        "bare_sweep_ms_per_azimuth": {"before": gauge_before, "after": gauge_after},
    }
    if reference is not None:
        # the measure: the run's visibility stage over the span against over the reference span,
        # the same map, process and hour; a refined run's visibility includes the landing areas its ranking
        # scans afterwards (horizons recomputed there)
        def visibility_s(timings):
            return timings["visibility (in tiles)"] + timings.get("refinement", 0.0)

        record["reference_years"] = args.reference_years
        record["reference_stages_s"] = {k: round(v, 2) for k, v in reference.timings_s.items()}
        record["visibility_stage_s"] = round(visibility_s(result.timings_s), 2)
        record["reference_visibility_stage_s"] = round(visibility_s(reference.timings_s), 2)
        record["visibility_stage_ratio"] = round(visibility_s(result.timings_s) / visibility_s(reference.timings_s),
                                                 3)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pipeline.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"{args.size}^2 at {args.resolution_m:g} m, {args.years:g} y at 1 h ({len(result.track)} steps), "
          f"K = {args.azimuths}")
    for stage, seconds in record["stages_s"].items():
        print(f"  {stage:>20}: {seconds:8.1f} s")
    print(f"  {'outputs':>20}: {outputs_s:8.1f} s")
    print(f"  {'total':>20}: {record['total_s']:8.1f} s (target 120 s), peak RSS {record['peak_rss_mib']} MiB")
    print(f"  pixels scanned over every step: {100 * scanned:.1f}%")
    print(f"  machine speed: the bare sweep took {gauge_before:g} ms per azimuth before the run and {gauge_after:g} "
          "after (a slower machine, a larger figure)")
    if reference is not None:
        print(f"  visibility stage over {args.years:g} y / over {args.reference_years:g} y, same map and process: "
              f"{record['visibility_stage_ratio']:.2f} (target under 2; {record['visibility_stage_s']:.1f} s "
              f"against {record['reference_visibility_stage_s']:.1f} s, tiles and refinement)")
    print(f"  visibility cost {args.years:g} y / 1 y per pixel on a {128}^2 tile: fractions "
          f"{ratio['fractions_ratio']:.2f}, exact layers {ratio['exact_layers_ratio']:.2f}, "
          f"layers as run computes them on large maps {ratio['run_layers_ratio']:.2f} "
          f"({100 * ratio['run_layers_scanned_share']:.0f}% of the tile scanned; "
          f"{ratio['run_layers_vs_exact_1y_ratio']:.2f} against every pixel exact over 1 y); "
          f"the track's tables, once per run: {ratio['track_tables_1y_s']:.2f} s (1 y), "
          f"{ratio[f'track_tables_{args.years:g}y_s']:.2f} s ({args.years:g} y)")


if __name__ == "__main__":
    main()
