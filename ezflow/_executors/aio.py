"""Async executor: coroutine stages on an event loop of their own.

    port.take() --(one helper thread)--> asyncio.Queue --> N worker tasks
                                                           await fn(item)
    port.done() <------------------------------------------+

The loop runs in a thread of its own, so a stage works the same from a
plain script and from a notebook whose loop is already running. `workers`
is how many items are awaited at once. A class stage is instantiated once
(one loop, one instance). `timeout` cancels an item's coroutine
(`asyncio.wait_for`); a coroutine that never awaits cannot be interrupted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import TYPE_CHECKING

from .._core.errors import Cancelled, Failure, ItemTimeout
from .base import Executor
from .items import _CAUGHT, Runtime, _error, _passthrough, build_runtime, close_runtime
from .limits import TokenBucket, make_limiter
from .port import Piece, StagePort

if TYPE_CHECKING:
    from .._plan.spec import StageSpec

__all__ = ["AsyncExecutor"]


class AsyncExecutor(Executor):
    """Runs a coroutine stage with `workers` items in flight."""

    def __init__(self, spec: StageSpec, port: StagePort) -> None:
        super().__init__(spec, port)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._puller = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ezflow-async-pull")
        self.rt: Runtime = None  # type: ignore[assignment]  # built in _serve()
        self.limiter: TokenBucket | None = None

    def setup(self) -> None:
        self.limiter = make_limiter(self.spec, shared=False)
        self._spawn(self._main, "async")
        self._ready.wait()
        if self._start_error is not None:
            raise self._setup_error(self._start_error) from self._start_error

    def _main(self) -> None:
        loop = self.loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        finally:
            self._ready.set()  # a bug before the stage was built must not hang setup()
            loop.close()
            self._puller.shutdown(wait=False)

    async def _serve(self) -> None:
        spec = self.spec
        try:
            self.rt = build_runtime(
                spec.kind, spec.fn, spec.is_class, spec.when, spec.retries,
                spec.retry_on, spec.backoff, pack=False, limiter=None,
            )
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        queue: asyncio.Queue[Piece | None] = asyncio.Queue(maxsize=spec.workers)
        workers = [asyncio.ensure_future(self._work(queue)) for _ in range(spec.workers)]
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    piece = await loop.run_in_executor(self._puller, self.port.take)
                except Cancelled:
                    break
                if piece is None:
                    break
                await queue.put(piece)
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers, return_exceptions=True)
        finally:
            for w in workers:
                w.cancel()
            try:
                close_runtime(self.rt)
            except BaseException as exc:
                self._close_failed(exc)

    async def _work(self, queue: asyncio.Queue[Piece | None]) -> None:
        while True:
            piece = await queue.get()
            if piece is None:
                return
            t0 = time.perf_counter()
            values, errs, retried = await self._run_piece(piece.items, piece.chunk.special)
            if self.cancelled:
                return
            self.port.done(piece, values, errs, time.perf_counter() - t0, retried)

    async def _run_piece(self, items: list, special: bool) -> tuple[list, list, int]:
        rt = self.rt
        spec = self.spec
        values: list = []
        errs: list = []
        retried = 0
        for pos, item in enumerate(items):
            if item.__class__ is Failure:
                values.append(_passthrough(rt.kind, item))
                continue
            if rt.when is not None:
                try:
                    go = rt.when(item)
                except _CAUGHT as exc:
                    errs.append(_error(rt, exc, 1, pos))
                    values.append(None)
                    continue
                if not go:
                    values.append(_passthrough(rt.kind, item))
                    continue
            attempt = 1
            while True:
                try:
                    if self.limiter is not None:
                        await asyncio.get_running_loop().run_in_executor(None, self.limiter.acquire)
                    aw = rt.call(item)
                    if spec.timeout is not None:
                        try:
                            out = await asyncio.wait_for(aw, spec.timeout)
                        except asyncio.TimeoutError:
                            raise ItemTimeout(
                                f"item took longer than the stage's timeout of {spec.timeout:g}s; it was cancelled"
                            ) from None
                    else:
                        out = await aw
                    if rt.kind == "filter":
                        out = bool(out)
                    elif rt.kind == "flat_map":
                        out = list(out)
                    values.append(out)
                    break
                except _CAUGHT as exc:
                    if attempt <= rt.retries and isinstance(exc, rt.retry_on):
                        retried += 1
                        if rt.backoff:
                            await asyncio.sleep(rt.backoff * (2 ** (attempt - 1)))
                        attempt += 1
                        continue
                    errs.append(_error(rt, exc, attempt, pos))
                    values.append(None)
                    break
        return values, errs, retried

    def cancel(self) -> None:
        super().cancel()
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
            except RuntimeError:
                pass  # the loop just closed
