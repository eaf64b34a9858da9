"""Where sitesel keeps what it can recompute: cached tracks and compiled kernels."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SITESEL_CACHE_DIR``, or ``~/.cache/sitesel``."""
    env = os.environ.get("SITESEL_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "sitesel"
