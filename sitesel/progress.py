"""Progress bars for long stages (tqdm on stderr; silent with ``quiet``)."""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    """A context-managed counter: ``with Progress(n, "horizon") as bar: bar.advance()``
    (``n`` None: a count without a total)."""

    def __init__(self, total: int | None, description: str, *, unit: str = "it", quiet: bool = False):
        self._bar = tqdm(
            total=total, desc=description, unit=unit, disable=quiet, file=sys.stderr, leave=False,
            dynamic_ncols=True,
        )

    def advance(self, n: int = 1) -> None:
        self._bar.update(n)

    def set(self, n: int) -> None:
        """Jump to an absolute count (e.g. after a finished tile)."""
        self._bar.update(n - self._bar.n)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self._bar.close()
