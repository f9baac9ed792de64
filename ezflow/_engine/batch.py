"""Batch and unbatch stages: regroup items in the parent, in order.

    inbox --chunks of items--> BatchDriver --chunks of lists (<= size)--> outbox
    inbox --chunks of lists--> UnbatchDriver --chunks of items--> outbox

A partial batch goes out `timeout` seconds after its first item arrived
(the driver waits on its inbox with that deadline, no polling), and at the
end of input. A `Failure` from an earlier stage is never put in a batch:
it passes through on its own, in order. A batch's index is the index of
its first item.
"""

from __future__ import annotations

import threading
import time

from .._core.errors import Cancelled, Failure
from .._core.stats import _Counters
from .._executors.inline import InlineExecutor
from .._executors.port import Chunk
from .._plan.spec import StageSpec
from .channel import Channel, EndOfStream
from .stage import Aborter

__all__ = ["BatchDriver", "UnbatchDriver"]


class _InlineDriver:
    """A stage that runs in one thread of the parent, with no workers."""

    def __init__(
        self, spec: StageSpec, run: Aborter, inbox: Channel, outbox: Channel, counters: _Counters, *, total: int | None
    ) -> None:
        self.spec = spec
        self.run = run
        self.inbox = inbox
        self.outbox = outbox
        self.counters = counters
        self.total = total
        self.executor = InlineExecutor(spec)
        self.cancelled = False
        self._seq = 0
        self._thread: threading.Thread | None = None

    def suggest_chunk(self) -> int:
        return max(self.spec.size, 64)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"ezflow-{self.spec.name}", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self.cancelled = True

    def _emit(self, items: list, idx: list, special: bool) -> None:
        if not items:
            return
        self.outbox.put(Chunk(self._seq, idx, items, special), len(items))
        self._seq += 1
        self.counters.add(items_out=len(items))

    def _loop(self) -> None:
        try:
            self.body()
            self.counters.finish("done")
            self.outbox.close()
        except Cancelled:
            return
        except BaseException as exc:  # a bug here must fail the run, not hang it
            self.run.abort(exc)

    def body(self) -> None:
        raise NotImplementedError


class BatchDriver(_InlineDriver):
    """Group items into lists of at most `size`, flushing partial ones on time."""

    def body(self) -> None:
        size = self.spec.size
        wait_for = self.spec.batch_timeout
        c = self.counters
        buf: list = []
        first_idx = 0
        first_at = 0.0
        out: list = []
        out_idx: list = []
        special = False
        while True:
            timeout = None
            if buf and wait_for is not None:
                timeout = max(0.0, first_at + wait_for - time.monotonic())
            try:
                chunk = self.inbox.get(timeout)
            except EndOfStream:
                break
            if chunk is not None:
                c.start()
                c.add(items_in=len(chunk.items))
                for item, index in zip(chunk.items, chunk.idx, strict=True):
                    if chunk.special and item.__class__ is Failure:
                        out.append(item)
                        out_idx.append(index)
                        special = True
                        continue
                    if not buf:
                        first_idx = index
                        first_at = time.monotonic()
                    buf.append(item)
                    if len(buf) >= size:
                        out.append(buf)
                        out_idx.append(first_idx)
                        buf = []
                c.add(items_done=len(chunk.items))
            if buf and wait_for is not None and time.monotonic() - first_at >= wait_for:
                out.append(buf)
                out_idx.append(first_idx)
                buf = []
            self._emit(out, out_idx, special)
            out, out_idx, special = [], [], False
        if buf:
            out.append(buf)
            out_idx.append(first_idx)
        self._emit(out, out_idx, special)


class UnbatchDriver(_InlineDriver):
    """Flatten lists (or any iterables) back into single items."""

    def body(self) -> None:
        c = self.counters
        while True:
            try:
                chunk = self.inbox.get()
            except EndOfStream:
                return
            c.start()
            c.add(items_in=len(chunk.items))
            out: list = []
            out_idx: list = []
            for item, index in zip(chunk.items, chunk.idx, strict=True):
                if chunk.special and item.__class__ is Failure:
                    out.append(item)
                    out_idx.append(index)
                    continue
                part = list(item)
                out.extend(part)
                out_idx.extend([index] * len(part))
            c.add(items_done=len(chunk.items))
            self._emit(out, out_idx, chunk.special)
