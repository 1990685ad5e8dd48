"""One BLAS thread for the thread that asks: how the search worker threads run their products.

numpy's wheels bundle OpenBLAS, which by default splits every product over all the cores.
A search makes thousands of small products (a chunk of digits by a layer), and split
over cores they mostly wait for each other: here (2 cores, shared with other work) ec64's
highest level took 68.7 ms a digit in a 200-digit batch with OpenBLAS's default threads and
9.4 ms with one. OpenBLAS 0.3.27+ can set the count for the calling thread alone
(`openblas_set_num_threads_local`), so the searches run single-threaded, one per worker
thread (`search_threads` of them, app.service.effort), and level 0's products keep the
process's setting; `mnist-codec encode --local --effort N` does the same. The bytes do not
depend on it (the search's sums are exact: app.codec.search). Where the function is not
there (another BLAS, an older OpenBLAS), nothing changes.
"""

import ctypes
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy  # noqa: F401  (loads the BLAS looked for below)

NAMES = (
    "scipy_openblas_set_num_threads_local64_",
    "scipy_openblas_set_num_threads_local",
    "openblas_set_num_threads_local64_",
    "openblas_set_num_threads_local",
)


@functools.cache
def thread_local_setter() -> Callable[[int], int] | None:
    """OpenBLAS's per-thread `set_num_threads_local(n) -> previous n`, if numpy's BLAS has one."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return None
    for path in sorted({line.split()[-1] for line in maps.splitlines() if "openblas" in line.lower()}):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in NAMES:
            if hasattr(library, name):
                setter = getattr(library, name)
                setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
                return lambda count: int(setter(count))
    return None


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
