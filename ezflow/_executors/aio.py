"""Async executor: coroutine stages on an event loop of their own.

    port.take() --(one helper thread)--> asyncio.Queue --> N worker tasks
                                                           await fn(item)
    port.done() <------------------------------------------+  (a long piece: as its items finish)

The loop runs in a thread of its own, so a stage works the same from a
plain script and from a notebook whose loop is already running. `workers`
is how many items are awaited at once. A class stage is instantiated once
(one loop, one instance). The per-item rules are `items.steps`, as in every
mode; this runner supplies the call (an await, within `item_timeout`: the item's
coroutine is cancelled and left behind) and the sleep (`asyncio.sleep`). A
coroutine that never awaits cannot be interrupted. A `CancelledError` the
item raised (or got from awaiting something cancelled) is the item's
failure; only ezflow's own cancel of the run stops a worker task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
import time
from typing import TYPE_CHECKING, Any

from .._core.errors import Cancelled
from .base import Executor
from .items import (
    CALL,
    PARTIAL_SECONDS,
    Runtime,
    build_runtime,
    close_runtime,
    item_failed,
    shape,
    steps,
)
from .limits import TokenBucket, make_limiter
from .port import ItemError, Piece, StagePort
from .reporting import next_block

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
        self._abandoned: set[asyncio.Future[Any]] = set()  # timed-out items that ignored their cancel

    def setup(self) -> None:
        self.limiter = make_limiter(self.spec, shared=False)
        self._spawn(self._main, "async", own=True)  # the event loop runs the user's coroutines
        self._ready.wait()
        if self._start_error is not None:
            raise self._setup_error(self._start_error) from self._start_error

    def _main(self) -> None:
        loop = self.loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except asyncio.CancelledError:
            if not self.cancelled:
                raise
        finally:
            self._ready.set()  # a bug before the stage was built must not hang setup()
            loop.close()
            self._puller.shutdown(wait=False)

    async def _serve(self) -> None:
        spec = self.spec
        t0 = time.perf_counter()
        try:
            self.rt = build_runtime(
                spec.kind, spec.fn, spec.is_class, spec.when, spec.retries,
                spec.retry_on, spec.backoff, pack=False, limiter=self.limiter, item_timeout=spec.item_timeout,
            )
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        startup = time.perf_counter() - t0
        for n in range(spec.workers):  # a worker is a task awaiting one item at a time, on one shared runtime
            self.port.worker_up(n, None, startup)
        queue: asyncio.Queue[Piece | None] = asyncio.Queue(maxsize=spec.workers)
        workers = [asyncio.ensure_future(self._work(queue, n)) for n in range(spec.workers)]
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
            for t in list(self._abandoned):
                t.cancel()
            try:
                close_runtime(self.rt)
            except BaseException as exc:
                self._close_failed(exc)

    async def _work(self, queue: asyncio.Queue[Piece | None], n: int) -> None:
        try:
            while True:
                piece = await queue.get()
                if piece is None:
                    return
                self.port.began(n, piece)
                await self._run_reporting(piece, n)
                if self.cancelled:
                    return
        except asyncio.CancelledError:
            if not self.cancelled:  # not ezflow's cancel: its items would never be reported
                self.port.fail(RuntimeError(f"stage {self.spec.name!r}: an async worker task was cancelled"))
            raise
        except Cancelled:
            return
        except BaseException as exc:  # a bug (or an item's KeyboardInterrupt) must fail the run, not hang it
            self.broken = True
            self.port.fail(exc)

    async def _run_reporting(self, piece: Piece, n: int) -> None:
        """Run a piece and report it; a long one (chunksize=) goes back as its items finish (`reporting.run_piece`)."""
        items = piece.items
        tried = piece.attempts
        total = len(items)
        t0 = last = time.perf_counter()
        values: list[Any] = []
        errs: list[ItemError] = []
        retried = 0
        done = base = 0  # items run; the first one not yet reported
        block = total if total < 2 else 1
        while done < total:
            end = min(total, done + block)
            v, e, r = await self._run_piece(items[done:end], tried)
            if self.cancelled:
                return
            if e:
                errs.extend(x._replace(pos=x.pos + done - base) for x in e)
            values += v
            retried += r
            done = end
            now = time.perf_counter()
            if done < total and now - last >= PARTIAL_SECONDS:
                head, piece = piece.split(len(values))
                piece.attempts = tried
                self.port.done(head, values, errs, now - last, retried, worker=n)
                self.port.began(n, piece)
                values, errs, retried = [], [], 0
                base, last = done, now
            if done < total:
                block = next_block(block, now - t0, done, total)
        self.port.done(piece, values, errs, time.perf_counter() - last, retried, worker=n)

    async def _run_piece(self, items: list[Any], tried: int) -> tuple[list[Any], list[ItemError], int]:
        # The async runner: the rules are items.steps'; this says how to call and sleep.
        gen = steps(self.rt, items, tried)
        try:
            step = next(gen)
            while True:
                if step[0] == CALL:
                    step = gen.send(await self._call(step[1]))
                else:
                    await asyncio.sleep(step[1])
                    step = gen.send(None)
        except StopIteration as stop:
            outcome: tuple[list[Any], list[ItemError], int] = stop.value
            return outcome

    async def _call(self, item: Any) -> tuple[bool, Any]:
        rt = self.rt
        try:
            aw = rt.call(item)
            if not inspect.isawaitable(aw):
                raise TypeError(
                    f"stage {self.spec.name!r} runs in mode='async', but its function returned "
                    f"{type(aw).__name__}, not an awaitable: define it with `async def`, "
                    "or use mode='thread' for blocking code"
                )
            if rt.rules.item_timeout is None:
                out = await aw
            else:
                out = await self._within(aw, rt.rules.item_timeout)
            return True, shape(rt.kind, out)
        except asyncio.CancelledError as exc:
            if self.cancelled:
                raise  # ezflow is cancelling the run: not the item's failure
            return False, exc  # the item raised it, or awaited something cancelled
        except BaseException as exc:
            if not item_failed(exc):
                raise
            return False, exc

    async def _within(self, aw: Any, timeout: float) -> Any:
        # Not asyncio.wait_for: a coroutine that swallows its cancellation would
        # keep wait_for (and the run) waiting; here it is left behind instead.
        task = asyncio.ensure_future(aw)
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if done:
            return task.result()
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)
        raise self.rt.rules.timeout_error("it was cancelled")

    def cancel(self) -> None:
        super().cancel()
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
            except RuntimeError:
                pass  # the loop just closed
