"""numpy's BLAS thread count, set at run time: "one core" figures are measured with one thread.

numpy's wheels bundle OpenBLAS (scipy-openblas); its `*_set_num_threads*` function is found
in the loaded library by name. Where it cannot be found (another BLAS), `threads` does
nothing and says so: set OPENBLAS_NUM_THREADS=1 (or the BLAS's own variable) instead.
"""

import ctypes
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy  # noqa: F401  (loads the BLAS this module looks for)

log = logging.getLogger("app.training.blas")


def _openblas() -> tuple[Any, Any] | None:
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for path in sorted({line.split()[-1] for line in maps.splitlines() if "openblas" in line.lower()}):
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get, put = f"{prefix}_get_num_threads{suffix}", f"{prefix}_set_num_threads{suffix}"
                if hasattr(lib, get) and hasattr(lib, put):
                    return getattr(lib, get), getattr(lib, put)
    return None


@contextmanager
def threads(count: int) -> Iterator[bool]:
    """BLAS uses `count` threads inside the block; yields whether it could be set."""
    found = _openblas()
    if found is None:
        log.warning("could not find numpy's OpenBLAS: the BLAS thread count is left as it is")
        yield False
        return
    get, put = found
    before = int(get())
    put(count)
    try:
        yield True
    finally:
        put(before)
