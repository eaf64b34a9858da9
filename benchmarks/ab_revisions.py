"""The working tree's kernels against another git revision's, interleaved in one process.

    python benchmarks/ab_revisions.py horizon              # against HEAD, 12 rounds
    python benchmarks/ab_revisions.py fractions --base HEAD~3 --rounds 20

This VM's speed moves by a quarter or more from one hour (or minute) to the next, so
timings of two versions taken in two processes, even back to back, cannot show a change
of a few percent. Here the base revision's ``sitesel/`` is extracted (``git archive``)
as the package ``sitesel_base`` beside the working tree's ``sitesel``, and the two are
called in turn, A B B A A B ..., on the same inputs: both see the same machine.

Reported: whether the outputs are bit-identical (or their largest difference), each
version's least and median seconds, and the median of the per-round ratios
(working tree / base: below 1 is faster). The base is kept in
``benchmarks/results/ab/<commit>/``, so its kernels compile on the first comparison with
that commit only.

Stages:

* ``horizon``: ``horizon_map`` of a 1024^2 window of the 2048^2 synthetic pole at 20 m,
  at ``--azimuths`` (36) bearings, into a reused buffer (as a run's tiles);
* ``fractions``: ``visibility_fractions`` of a 256^2 window of it over 18.6 years at 1 h
  (K = 360, the track binned beforehand);
* ``layers``: ``visibility_layers`` as a run computes it on a large map (binned fractions
  and lower bounds on the gaps, no pixel eligible for a scan), same window and track.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def import_revision(rev: str):
    """The package ``sitesel/`` of git revision ``rev``, imported as ``sitesel_base`` (from
    ``benchmarks/results/ab/<commit>/``, extracted there the first time)."""
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run(git + ["rev-parse", "--verify", rev + "^{commit}"], check=True, capture_output=True,
                            text=True).stdout.strip()
    into = REPO / "benchmarks" / "results" / "ab" / commit
    if not (into / "sitesel_base").is_dir():
        staging = into.with_name(commit + ".partial")
        staging.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(git + ["archive", commit, "sitesel"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(staging)], input=archive.stdout, check=True)
        (staging / "sitesel").rename(staging / "sitesel_base")
        staging.rename(into)
    sys.path.insert(0, str(into))
    return importlib.import_module("sitesel_base")


#: The visibility stages' window of the terrain.
ROWS, COLS = slice(768, 1024), slice(768, 1024)


def inputs(stage: str):
    """The terrain's heights and grid, and for the visibility stages the window's horizons
    (K = 360), made once with the working tree's package: both versions get the same ones."""
    from sitesel.horizon import horizon_map
    from sitesel.terrain.synthetic import synthetic_south_pole

    terrain = synthetic_south_pole(2048, 20.0)
    horizon_deg = None if stage == "horizon" else horizon_map(terrain, 360, 2.0, rows=ROWS, cols=COLS)
    return terrain.height_m, terrain.grid, horizon_deg


def cases(stage: str, pkg, height_m, grid, horizon_deg, n_azimuths: int):
    """A function of no argument that runs ``stage`` with package ``pkg`` on the heights ``height_m``
    on ``grid`` (and the horizons ``horizon_deg``: see :func:`inputs`), and returns its output arrays."""
    def module(name):
        return importlib.import_module(f"{pkg.__name__}.{name}")

    terrain = module("terrain.model").Terrain(
        height_m, module("terrain.grid").Grid(grid.x0_m, grid.y0_m, grid.resolution_m, grid.shape))
    if stage == "horizon":
        horizon_map = module("horizon").horizon_map
        out = np.empty((1024, 1024, n_azimuths), np.float32)
        return lambda: [horizon_map(terrain, n_azimuths, 2.0, rows=slice(0, 1024), cols=slice(0, 1024), out=out)]
    track = module("ephemeris").body_track("2027-01-01", "2045-08-08", 1.0)
    visibility = module("visibility")
    if stage == "fractions":
        binned = visibility.BinnedTrack(track, 360)
        return lambda: list(visibility.visibility_fractions(terrain, horizon_deg, binned, 2.0, rows=ROWS,
                                                            cols=COLS).values())
    where = visibility.ExactWhere(eligible=np.zeros((256, 256), bool))
    return lambda: list(visibility.visibility_layers(terrain, horizon_deg, track, 2.0, rows=ROWS, cols=COLS,
                                                     exact_where=where).values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("horizon", "fractions", "layers"))
    parser.add_argument("--base", default="HEAD", help="git revision to compare with (default HEAD)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--azimuths", type=int, default=36, help="horizon stage only")
    args = parser.parse_args(argv)
    import sitesel

    base = import_revision(args.base)
    shared = inputs(args.stage)
    runs = {name: cases(args.stage, pkg, *shared, args.azimuths) for name, pkg in (("base", base), ("tree", sitesel))}
    outputs = {name: run() for name, run in runs.items()}  # and compiles
    diffs = [float(np.nanmax(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
             for a, b in zip(outputs["base"], outputs["tree"])]
    identical = all(np.array_equal(a, b, equal_nan=True) for a, b in zip(outputs["base"], outputs["tree"]))
    seconds = {"base": [], "tree": []}
    for i in range(args.rounds):
        for name in ("base", "tree") if i % 2 == 0 else ("tree", "base"):
            clock = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - clock)
    base_s, tree_s = np.array(seconds["base"]), np.array(seconds["tree"])
    print(f"{args.stage}: working tree against {args.base}, {args.rounds} interleaved rounds")
    print("  outputs: " + ("bit-identical" if identical else f"largest difference {max(diffs):.3g}"))
    for name, s in (("base", base_s), ("tree", tree_s)):
        print(f"  {name}: least {s.min():.3f} s, median {np.median(s):.3f} s")
    print(f"  tree / base: {np.median(tree_s / base_s):.3f} (median of the rounds' ratios), "
          f"{tree_s.min() / base_s.min():.3f} (of the least)")


if __name__ == "__main__":
    main()
