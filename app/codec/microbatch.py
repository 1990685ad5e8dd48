"""Dynamic micro-batching: concurrent single requests share one model call.

As Triton and LitServe do it: the first request to arrive opens a batch and
waits at most `max_wait_us` for company; the batch runs as soon as it holds
`max_batch` items or the wait is over. On a GPU this turns many kernel launches
and synchronisations into one; on a CPU it mostly adds the wait (see
BENCHMARKS.md), so it is off there by default. Results do not depend on the
batch (app/codec/engine.py), so batching never changes a byte.
"""

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HISTORY = 1024  # batch sizes kept (the latest ones), for tests and debugging; the metrics have them all


class MicroBatcher:
    """Requests wait on the event loop; the model runs in the batcher's one worker thread.

    A model call never runs on the loop: on CUDA, the kernels and the copy back to the
    host take the time of a batch, and the loop would stand still for it (every other
    request and /healthz with it). The worker is one thread, so batches reach the model
    in the order they were formed, one at a time, and each request gets its own row.
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        max_batch: int,
        max_wait_us: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.run = run  # (N, ...) inputs -> (N, ...) outputs
        self.on_batch = on_batch  # told each batch's size (metrics)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_us / 1e6
        self.sizes: deque[int] = deque(maxlen=HISTORY)  # the latest batch sizes
        self._items: list[np.ndarray] = []
        self._futures: list[asyncio.Future[np.ndarray]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="micro-batch")

    async def submit(self, item: np.ndarray) -> np.ndarray:
        """One input row -> its output row, computed together with whatever arrives meanwhile."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        if len(self._items) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, futures = self._items, self._futures
        self._items, self._futures = [], []
        if not items:
            return
        self.sizes.append(len(items))
        if self.on_batch is not None:
            self.on_batch(len(items))
        done = asyncio.get_running_loop().run_in_executor(self._worker, self._run_batch, items)
        done.add_done_callback(lambda outcome: _deliver(outcome, futures))

    def _run_batch(self, items: list[np.ndarray]) -> np.ndarray:
        return self.run(np.stack(items))  # in the worker thread


def _deliver(outcome: "asyncio.Future[np.ndarray]", futures: list["asyncio.Future[np.ndarray]"]) -> None:
    """On the loop: row i of the batch's output to request i, or its error to every one of them."""
    try:
        outputs = outcome.result()
        if len(outputs) != len(futures):
            raise RuntimeError(f"the model gave {len(outputs)} rows for a batch of {len(futures)}")
    except BaseException as exc:  # every waiting request learns of it (cancelled too: none waits forever)
        for future in futures:
            if not future.done():
                future.set_exception(exc)
        return
    for future, output in zip(futures, outputs, strict=True):
        if not future.done():  # a client may have gone away
            future.set_result(output)
