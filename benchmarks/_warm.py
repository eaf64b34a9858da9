"""Touching memory once before a benchmark times anything.

On a virtual machine the first write to memory the guest has never used is slow: the
host backs it page by page (on the reference VM about 3 s per GiB, against 0.2 s per
GiB for memory used before and freed). A benchmark's first large array would be timed
partly on the host's paging, and by how much depends on what ran on the VM before.
Writing the memory a benchmark needs once, in a child process that then exits, times
the work as on a machine that has been running for a while, without adding to the
benchmark's own peak resident memory.
"""

from __future__ import annotations

import subprocess
import sys
import time


def warm_memory(gib: int) -> dict:
    """Write ``gib`` GiB at once in a child process, then free it; returns what was done."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import numpy as np; blocks = [np.ones(2**27) for _ in range({int(gib)})]"],
                   check=True)
    return {"gib": int(gib), "seconds": round(time.perf_counter() - t0, 2)}
