"""Physics check on a bare sphere at the south pole (DESIGN.md section 5).

Prints, for a few observer heights, the Sun's and Earth's elevation ranges at
the pole and the sunlit and Earth-visible fractions from
``visibility_layers`` (and the time-independent ``visibility_fractions``)
next to an independent per-step computation (direct
vector geometry at the pole, where local up is -z and the horizon is the
bare-sphere dip ``-acos(R / (R + h))``).

    python scripts/validate_physics.py [--start 2026-01-01] [--end 2028-01-01] [--step-hours 6]
"""

from __future__ import annotations

import argparse

import numpy as np

from sitesel.constants import MOON_RADIUS_M, SUN_RADIUS_M
from sitesel.ephemeris import body_track
from sitesel.terrain import Grid, Terrain
from sitesel.visibility import visibility_fractions, visibility_layers

K = 360


def independent(track, height_m):
    """Per-step elevations at the pole (topocentric) and the visibility they imply."""
    observer = np.array([0.0, 0.0, -(MOON_RADIUS_M + height_m)])
    dip_deg = -np.degrees(np.arccos(MOON_RADIUS_M / (MOON_RADIUS_M + height_m)))

    def elevation_deg(position_m):
        v = position_m - observer
        return np.degrees(np.arcsin(-v[:, 2] / np.linalg.norm(v, axis=1))), np.linalg.norm(v, axis=1)

    sun_el, sun_d = elevation_deg(track.sun_m)
    earth_el, _ = elevation_deg(track.earth_m)
    semi_deg = np.degrees(np.arcsin(SUN_RADIUS_M / sun_d))
    return {
        "sun_el": sun_el,
        "earth_el": earth_el,
        "dip_deg": dip_deg,
        "sun_lit_fraction": float(np.mean(sun_el + semi_deg > dip_deg)),
        "earth_visible_fraction": float(np.mean(earth_el > dip_deg)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="2026-01-01")
    parser.add_argument("--end", default="2028-01-01")
    parser.add_argument("--step-hours", type=float, default=6.0)
    args = parser.parse_args()

    track = body_track(args.start, args.end, args.step_hours)
    grid = Grid.centred((1, 1), 10.0)  # one pixel, centred on the pole
    terrain = Terrain(np.zeros((1, 1), np.float32), grid)
    print(f"Bare sphere at the south pole, {args.start} .. {args.end} every {args.step_hours:g} h "
          f"({len(track)} steps)\n")
    header = (f"{'h_m':>5} {'dip_deg':>8} {'sun_el_min':>10} {'sun_el_max':>10} {'earth_el_min':>12} "
              f"{'earth_el_max':>12} {'sun_lit(layers)':>15} {'sun_lit(indep)':>14} "
              f"{'sun_lit(binned)':>15} {'earth_vis(layers)':>17} {'earth_vis(indep)':>16} {'earth_vis(binned)':>17}")
    print(header)
    print("-" * len(header))
    for height_m in (0.0, 2.0, 10.0):
        ref = independent(track, height_m)
        horizon = np.full((1, 1, K), ref["dip_deg"], dtype=np.float32)
        layers = visibility_layers(terrain, horizon, track, height_m)
        binned = visibility_fractions(terrain, horizon, track, height_m)
        print(f"{height_m:5.0f} {ref['dip_deg']:8.3f} {ref['sun_el'].min():10.3f} {ref['sun_el'].max():10.3f} "
              f"{ref['earth_el'].min():12.3f} {ref['earth_el'].max():12.3f} "
              f"{layers['sun_lit_fraction'][0, 0]:15.4f} {ref['sun_lit_fraction']:14.4f} "
              f"{binned['sun_lit_fraction'][0, 0]:15.4f} {layers['earth_visible_fraction'][0, 0]:17.4f} "
              f"{ref['earth_visible_fraction']:16.4f} {binned['earth_visible_fraction'][0, 0]:17.4f}")
    print("\nExpected (DESIGN.md 5): Sun within about +/-1.6 deg, Earth within about +/-7 deg, "
          "Earth up about half the time; dip -0.087 deg at 2 m, -0.194 deg at 10 m.")


if __name__ == "__main__":
    main()
