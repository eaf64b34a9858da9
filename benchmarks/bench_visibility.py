"""Throughput of sitesel.visibility.visibility_layers: 1 year vs 18.6 years at 1 h.

Cases, all on the same rugged synthetic horizons (K = 180 bearings, a pixel
grid around 88.5 deg S; broad ridges plus 0.3 deg of fine detail):

* ``layers 1 y`` / ``layers 18.6 y``: ``visibility_layers`` (all layers, both
  bodies, exact per-step counts and run lengths; its per-track cell tables are
  built once beforehand, as in a run, and their build time printed apart);
* ``fractions 1 y`` / ``fractions 18.6 y``: ``visibility_fractions`` with a
  ``BinnedTrack`` built beforehand (its one-off build time is printed apart);
* ``reference 1 y``: the exact per-time-step computation in vectorised numpy
  (``point_series``, one pixel at a time), the straightforward method.

Reported: pixels per second (wall and per CPU second), pixel-steps per second,
the speed-up over the reference, the cost ratios 18.6 y / 1 y per pixel, and
the peak resident memory; written to ``benchmarks/results/visibility.json``.

Usage: ``python benchmarks/bench_visibility.py [--size 200]`` or
``pytest benchmarks/bench_visibility.py --benchmark-only``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

from sitesel.ephemeris import body_track
from sitesel.terrain import Grid, Terrain, latlon_to_xy
from sitesel.visibility import BinnedTrack, point_series, visibility_fractions, visibility_layers

K = 180
ONE_YEAR = ("2027-01-01", "2028-01-01")
SAROS_LIKE = ("2027-01-01", "2045-08-08")  # 18.6 years, one lunar nodal precession cycle


def scene(n: int, seed: int = 0):
    x, y = latlon_to_xy(-88.5, 45.0)
    grid = Grid.centred((n, n), 60.0, x, y)
    rng = np.random.default_rng(seed)
    b = np.radians(np.arange(K) * 360.0 / K)
    horizon = np.full((n, n, K), 0.3)
    for harmonic in (1, 2, 3, 5, 9):
        amp = rng.uniform(0, 1.5 / np.sqrt(harmonic), (n, n))[..., None]
        horizon += amp * np.sin(harmonic * b + rng.uniform(0, 2 * np.pi, (n, n))[..., None])
    horizon += rng.normal(0, 0.3, (n, n, K))
    terrain = Terrain(rng.normal(0, 50, (n, n)).astype(np.float32), grid)
    return terrain, horizon.astype(np.float32)


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def reference_run(terrain, horizon, track, n_pixels):
    lat, lon = terrain.grid.latlon()
    for p in range(n_pixels):
        i, j = divmod(p, terrain.shape[1])
        point_series(lat[i, j], lon[i, j], terrain.height_m[i, j], 2.0, horizon[i, j], track)


def measure(size: int) -> tuple[list[dict], dict]:
    tracks = {"1 y": body_track(*ONE_YEAR), "18.6 y": body_track(*SAROS_LIKE)}
    terrain, horizon = scene(size)
    warm = terrain.window(slice(0, 2), slice(0, 2))
    visibility_layers(warm, horizon[:2, :2], tracks["1 y"], 2.0)  # compile
    visibility_fractions(warm, horizon[:2, :2], tracks["1 y"], 2.0)
    build_s = {}
    binned = {}
    for label, track in tracks.items():
        build_s[label] = timed(lambda: binned.setdefault(label, BinnedTrack(track, K)))[0]
        # visibility_layers builds its per-track tables (cells, binned disc tables) on the first
        # call with a track and keeps them: once per run, so timed apart like the BinnedTrack
        build_s[f"layers tables {label}"] = timed(lambda: visibility_layers(warm, horizon[:2, :2], track, 2.0))[0]
    rows = []
    small = max(8, size // 4)  # layers over 18.6 y cost ~18x more per pixel: use fewer pixels
    cases = [("layers", "1 y", size), ("layers", "18.6 y", small), ("fractions", "1 y", size),
             ("fractions", "18.6 y", size)]
    for kind, label, n in cases:
        sub, hz = terrain.window(slice(0, n), slice(0, n)), horizon[:n, :n]
        if kind == "layers":
            wall, cpu = timed(lambda: visibility_layers(sub, hz, tracks[label], 2.0))
        else:
            wall, cpu = timed(lambda: visibility_fractions(sub, hz, binned[label], 2.0))
        rows.append({"case": f"{kind} {label}", "pixels": n * n, "steps": len(tracks[label]), "wall_s": wall,
                     "cpu_s": cpu})
    n_ref = 16
    wall, cpu = timed(lambda: reference_run(terrain, horizon, tracks["1 y"], n_ref))
    rows.append({"case": "reference 1 y", "pixels": n_ref, "steps": len(tracks["1 y"]), "wall_s": wall, "cpu_s": cpu})
    return rows, build_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200, help="pixels per side for the 1-year case")
    args = parser.parse_args()
    rows, build_s = measure(args.size)
    print(f"visibility throughput, K = {K}, {os.cpu_count()} CPUs\n")
    print(f"{'case':>18} {'pixels':>8} {'steps':>7} {'wall s':>8} {'px/s':>9} {'px/cpu-s':>9} {'Gpx-steps/s':>11}")
    by_case = {}
    for r in rows:
        by_case[r["case"]] = r
        print(f"{r['case']:>18} {r['pixels']:8d} {r['steps']:7d} {r['wall_s']:8.2f} {r['pixels'] / r['wall_s']:9.0f} "
              f"{r['pixels'] / r['cpu_s']:9.0f} {r['pixels'] * r['steps'] / r['wall_s'] / 1e9:11.3f}")

    def per_pixel(case):
        return by_case[case]["cpu_s"] / by_case[case]["pixels"]

    print(f"\nonce per run: BinnedTrack build {build_s['1 y']:.2f} s (1 y), {build_s['18.6 y']:.2f} s (18.6 y); "
          f"visibility_layers track tables {build_s['layers tables 1 y']:.2f} s (1 y), "
          f"{build_s['layers tables 18.6 y']:.2f} s (18.6 y)")
    print(f"speed-up over the per-step numpy reference, 1 y, per CPU second: layers "
          f"{per_pixel('reference 1 y') / per_pixel('layers 1 y'):.0f}x, fractions "
          f"{per_pixel('reference 1 y') / per_pixel('fractions 1 y'):.0f}x")
    ratios = {"layers": per_pixel("layers 18.6 y") / per_pixel("layers 1 y"),
              "fractions": per_pixel("fractions 18.6 y") / per_pixel("fractions 1 y"),
              "steps": by_case["layers 18.6 y"]["steps"] / by_case["layers 1 y"]["steps"]}
    print(f"cost per pixel, 18.6 y / 1 y: layers {ratios['layers']:.1f}, fractions {ratios['fractions']:.2f} "
          f"(steps ratio {ratios['steps']:.1f})")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory {peak_mib:.0f} MiB")
    out = Path(__file__).parent / "results" / "visibility.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"azimuths": K, "cpus": os.cpu_count(), "cases": rows, "cost_ratio_18_6y_over_1y": ratios,
                               "binned_track_build_s": build_s, "peak_rss_mib": round(peak_mib, 1)}, indent=2) + "\n")


# ---------------------------------------------------------------- pytest-benchmark entry points
def _bench(benchmark, fn, span, n):
    terrain, horizon = scene(n)
    track = body_track(*span)
    if fn is visibility_fractions:
        track = BinnedTrack(track, K)
    fn(terrain.window(slice(0, 1), slice(0, 1)), horizon[:1, :1], track, 2.0)  # compile
    benchmark.extra_info["pixels"] = n * n
    benchmark.pedantic(fn, args=(terrain, horizon, track, 2.0), rounds=3, iterations=1)
    benchmark.extra_info["pixels_per_s"] = n * n / benchmark.stats.stats.min


def test_layers_one_year(benchmark):
    _bench(benchmark, visibility_layers, ONE_YEAR, 64)


def test_layers_18_6_years(benchmark):
    _bench(benchmark, visibility_layers, SAROS_LIKE, 16)


def test_fractions_one_year(benchmark):
    _bench(benchmark, visibility_fractions, ONE_YEAR, 64)


def test_fractions_18_6_years(benchmark):
    _bench(benchmark, visibility_fractions, SAROS_LIKE, 64)


if __name__ == "__main__":
    main()
