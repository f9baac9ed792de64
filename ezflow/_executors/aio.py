"""Async executor: coroutine stages on an event loop of their own.

    driver.next_piece() --(one helper thread)--> asyncio.Queue --> N worker tasks
                                                                   await fn(item)
    driver.on_result() <-------------------------------------------+

The loop runs in a thread of its own, so a stage works the same from a
plain script and from a notebook whose loop is already running. `workers`
is how many items are awaited at once. A class stage is instantiated once
(one loop, one instance). The per-item rules are `items.steps`, as in every
mode; this runner supplies the call (an await, within `timeout`: the item's
coroutine is cancelled and left behind) and the sleep (`asyncio.sleep`). A
coroutine that never awaits cannot be interrupted. A `CancelledError` the
item raised (or got from awaiting something cancelled) is the item's
failure; only ezflow's own cancel of the run stops a worker task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

from .._core.errors import short_repr
from .._engine.channel import Cancelled
from . import StageError
from .items import CALL, build_runtime, close_runtime, item_failed, shape, steps

__all__ = ["Executor"]


class Executor:
    """Runs a coroutine stage with `workers` items in flight."""

    def __init__(self, spec: Any, driver: Any) -> None:
        self.spec = spec
        self.driver = driver
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._setup_error: BaseException | None = None
        self._puller = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ezflow-async-pull")
        self.rt: Any = None
        self.limiter: Any = None
        self._stopping = False  # set before ezflow cancels the tasks: their CancelledError is ours
        self._abandoned: set[asyncio.Future] = set()  # timed-out items that ignored their cancel

    def setup(self) -> None:
        from .limits import make_limiter

        self.limiter = make_limiter(self.spec, shared=False)
        self.thread = threading.Thread(target=self._main, name=f"ezflow-async-{self.spec.name}", daemon=True)
        self.thread.start()
        self._ready.wait()
        if self._setup_error is not None:
            exc = self._setup_error
            raise StageError(self.spec.name, f"{short_repr(self.spec.fn)} raised {type(exc).__name__}: {exc}") from exc

    def _main(self) -> None:
        loop = self.loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except asyncio.CancelledError:
            pass  # the run was cancelled: nothing to report from this thread
        except BaseException as exc:  # a bug here must fail the run, not hang it
            self.driver.run.abort(exc)
        finally:
            loop.close()
            self._puller.shutdown(wait=False)

    async def _serve(self) -> None:
        spec = self.spec
        try:
            self.rt = build_runtime(
                spec.kind, spec.fn, spec.is_class, spec.when, spec.retries,
                spec.retry_on, spec.backoff, pack=False, limiter=self.limiter, timeout=spec.timeout,
            )
        except BaseException as exc:
            self._setup_error = exc
            self._ready.set()
            return
        self._ready.set()
        queue: asyncio.Queue = asyncio.Queue(maxsize=spec.workers)
        workers = [asyncio.ensure_future(self._work(queue)) for _ in range(spec.workers)]
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    piece = await loop.run_in_executor(self._puller, self.driver.next_piece)
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
                self.driver.run.abort(StageError(spec.name, f"close() raised {type(exc).__name__}: {exc}"), late=True)

    async def _work(self, queue: asyncio.Queue) -> None:
        driver = self.driver
        try:
            while True:
                piece = await queue.get()
                if piece is None:
                    return
                t0 = time.perf_counter()
                values, errs, retried = await self._run_piece(piece.items, piece.attempts)
                if driver.cancelled:
                    return
                driver.on_result(piece, values, errs, time.perf_counter() - t0, retried)
        except asyncio.CancelledError:
            if not self._stopping:
                driver.run.abort(RuntimeError(f"stage {self.spec.name!r}: an async worker was cancelled"))
            raise
        except Cancelled:
            return
        except BaseException as exc:  # a bug (or an item's KeyboardInterrupt) must fail the run, not hang it
            driver.run.abort(exc)

    async def _run_piece(self, items: list, tried: int) -> tuple[list, list, int]:
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
            outcome: tuple[list, list, int] = stop.value
            return outcome

    async def _call(self, item: Any) -> tuple[bool, Any]:
        rt = self.rt
        try:
            aw = rt.call(item)
            if rt.rules.timeout is None:
                out = await aw
            else:
                out = await self._within(aw, rt.rules.timeout)
            return True, shape(rt.kind, out)
        except asyncio.CancelledError as exc:
            if self._stopping:
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

    def close(self) -> None:
        pass  # the serve loop ends when next_piece() returns None

    def cancel(self) -> None:
        loop = self.loop
        self._stopping = True
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
            except RuntimeError:
                pass  # the loop just closed

    def join(self, timeout: float) -> None:
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)
