"""numpy's BLAS thread count, set at run time: for the calling thread (searches) or the process (figures).

numpy's wheels bundle OpenBLAS, which by default splits every product over all the cores.
A search makes thousands of small products (a chunk of digits by a layer), and split
over cores they mostly wait for each other: here (2 cores, shared with other work) ec64's
highest level took 68.7 ms a digit in a 200-digit batch with OpenBLAS's default threads and
9.4 ms with one. So:

- `one_thread()`: the calling thread's products on one thread, through OpenBLAS 0.3.27+'s
  `openblas_set_num_threads_local`. `Codec.encode_many` searches under it, so a search is
  single-threaded wherever it runs (a server's search worker threads, `mnist-codec encode
  --local --effort N`, the evaluation), while level 0's products keep the process's setting.
- `threads(count)`: the whole process's count, for "one core" figures (evaluate, bench).

The bytes never depend on either (the search's sums are exact: app.codec.search). Where the
functions are not there (another BLAS, an older OpenBLAS), nothing changes; set
OPENBLAS_NUM_THREADS=1 (or the BLAS's own variable) instead.
"""

import ctypes
import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy  # noqa: F401  (loads the BLAS looked for below)

log = logging.getLogger("app.codec.blas")

PREFIXES = ("scipy_openblas", "openblas")  # numpy's wheels rename OpenBLAS's symbols scipy_openblas*
SUFFIXES = ("64_", "")  # the ILP64 build, then the plain one


@functools.cache
def _function(name: str) -> Any | None:
    """OpenBLAS's function `openblas_<name>` (or a renamed variant) in numpy's loaded BLAS, if there is one."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return None
    for path in sorted({line.split()[-1] for line in maps.splitlines() if "openblas" in line.lower()}):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in PREFIXES:
            for suffix in SUFFIXES:
                if hasattr(library, symbol := f"{prefix}_{name}{suffix}"):
                    return getattr(library, symbol)
    return None


def thread_local_setter() -> Callable[[int], int] | None:
    """OpenBLAS's per-thread `set_num_threads_local(n) -> previous n`, if numpy's BLAS has one."""
    setter = _function("set_num_threads_local")
    if setter is None:
        return None
    setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
    return lambda count: int(setter(count))


@contextmanager
def one_thread() -> Iterator[bool]:
    """BLAS products made by this thread inside the block use one thread; yields whether it could be set."""
    setter = thread_local_setter()
    if setter is None:
        yield False
        return
    before = setter(1)
    try:
        yield True
    finally:
        setter(before)


@contextmanager
def threads(count: int) -> Iterator[bool]:
    """The process's BLAS uses `count` threads inside the block; yields whether it could be set."""
    get, put = _function("get_num_threads"), _function("set_num_threads")
    if get is None or put is None:
        log.warning("could not find numpy's OpenBLAS: the BLAS thread count is left as it is")
        yield False
        return
    before = int(get())
    put(count)
    try:
        yield True
    finally:
        put(before)
