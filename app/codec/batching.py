"""Dynamic micro-batching: concurrent single requests share one model call.

As Triton and LitServe do it: the first request to arrive opens a batch and
waits at most `max_wait_us` for company; the batch runs as soon as it holds
`max_batch` items or the wait is over. On a GPU this turns many kernel launches
and synchronisations into one; on a CPU it mostly adds the wait (see
BENCHMARKS.md), so it is off there by default. Results do not depend on the
batch (app/codec/engine.py), so batching never changes a byte.
"""

import asyncio
from collections.abc import Callable

import numpy as np


class MicroBatcher:
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
        self.sizes: list[int] = []  # batch sizes run so far, for tests and metrics
        self._items: list[np.ndarray] = []
        self._futures: list[asyncio.Future[np.ndarray]] = []
        self._timer: asyncio.TimerHandle | None = None

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
        try:
            outputs = self.run(np.stack(items))
        except Exception as exc:  # every waiting request learns of it
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, output in zip(futures, outputs, strict=True):
            if not future.done():  # a client may have gone away
                future.set_result(output)
