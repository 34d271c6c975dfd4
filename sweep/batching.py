"""The server's batches (LitServe's `max_batch_size` and `batch_timeout`, Ray Serve's
`max_batch_size` and `batch_wait_timeout_s`): the images of the requests waiting run through the
model together, at most `max_batch_size` a call; the first request of a batch waits up to
`max_wait_ms` for others to join (0: a lone request waits for nothing, and requests that arrive
while a batch runs go as the next one). At most `max_queue` images wait: past that a request is
refused at once (`Overloaded`, a 503 with Retry-After), never queued without bound."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any


class Overloaded(Exception):
    """The queue holds as many images as it may: the client should try again shortly."""


class Batcher:
    def __init__(self, run: Callable[[Any], Any], max_batch_size: int, max_wait_ms: float, max_queue: int,
                 on_batch: Callable[[int], None] = lambda n: None) -> None:  # fmt: skip
        self.run, self.max_batch, self.max_wait, self.max_queue = run, max_batch_size, max_wait_ms / 1000, max_queue
        self.on_batch = on_batch  # told each model call's size (the metrics' histogram)
        self.waiting: collections.deque = collections.deque()
        self.queued = self.running = 0  # images waiting, and in the model now
        self.wake: asyncio.Event | None = None

    async def probabilities(self, x: Any) -> Any:
        """The model's probabilities for the images `x`, run with whatever else is waiting."""
        if self.queued + len(x) > self.max_queue:
            raise Overloaded(f"{self.queued} images are waiting, at most {self.max_queue}")
        if self.wake is None:
            self.wake = asyncio.Event()
            asyncio.get_running_loop().create_task(self._serve())
        done = asyncio.get_running_loop().create_future()
        self.waiting.append((x, done))
        self.queued += len(x)
        self.wake.set()
        return await done

    async def _serve(self) -> None:
        while True:
            while not self.waiting:
                self.wake.clear()
                await self.wake.wait()
            await self._gather()
            batch = self._take()
            try:
                probs = await self._predict([x for x, _ in batch])
            except Exception as e:  # noqa: BLE001 - each waiting request hears of it
                for _, done in batch:
                    if not done.done():
                        done.set_exception(e)
                continue
            start = 0
            for x, done in batch:
                if not done.done():  # its client may have gone
                    done.set_result(probs[start : start + len(x)])
                start += len(x)

    async def _gather(self) -> None:
        """Wait up to `max_wait` after the first request for the batch to fill."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while sum(len(x) for x, _ in self.waiting) < self.max_batch and (left := deadline - loop.time()) > 0:
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), left)
            except TimeoutError:
                return

    def _take(self) -> list[tuple[Any, Any]]:
        """The requests of the next batch: the first waiting, then those that still fit."""
        batch = [self.waiting.popleft()]
        size = len(batch[0][0])
        while self.waiting and size + len(self.waiting[0][0]) <= self.max_batch:
            size += len(self.waiting[0][0])
            batch.append(self.waiting.popleft())
        self.queued -= size
        return batch

    async def _predict(self, xs: list[Any]) -> Any:
        """The model on these images, `max_batch` at most a call (a request larger than that is split)."""
        import torch

        x = torch.cat(xs)
        self.running = len(x)
        try:
            out = []
            for chunk in x.split(self.max_batch):
                self.on_batch(len(chunk))
                out.append(await asyncio.to_thread(self.run, chunk))
            return torch.cat(out)
        finally:
            self.running = 0
