"""Make the README's figure from a demo run: a quantised, downscaled copy of a heatmap.

    python scripts/make_readme_figure.py sitesel-demo    # writes docs/demo_sun_lit_fraction.png (< 300 KB)
"""

import sys
from pathlib import Path

from PIL import Image

MAX_WIDTH_PX = 760


def main(demo_dir: str, name: str = "sun_lit_fraction") -> Path:
    source = Path(demo_dir) / "plots" / f"{name}.png"
    target = Path(__file__).resolve().parent.parent / "docs" / f"demo_{name}.png"
    image = Image.open(source).convert("RGB")
    scale = MAX_WIDTH_PX / image.width
    image = image.resize((MAX_WIDTH_PX, round(image.height * scale)), Image.LANCZOS)
    image.quantize(colors=128, method=Image.MEDIANCUT).save(target, optimize=True)
    print(f"{target} ({target.stat().st_size // 1024} KB)")
    return target


if __name__ == "__main__":
    main(*sys.argv[1:])
