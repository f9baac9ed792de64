"""The stage link: what one process stage does about shared memory, from the parent's side."""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from .cleanup import _reap
from .frames import Gather
from .pickler import _sending
from .registry import (
    _drain,
    _init,
    _release,
    counting_adopted,
    drain_released,
    lend,
    settle_lent,
    stage_ended,
    stage_started,
)
from .segments import DEFAULT_THRESHOLD, PIECE_BYTES, S
from .serialize import dumps_parts, loads


def stage_threshold(value: Any) -> int | None:
    """The byte threshold of a stage's ``share_arrays`` option (None: off).

    The option was checked when the stage was built (`_plan.make_stage`).
    """
    if value is None or value is True:
        return DEFAULT_THRESHOLD
    if value is False:
        return None
    return int(value)


class StageLink:
    """What a process stage's executor does about shared memory, in one place.

    It pickles each task (automatic sharing of big input arrays, spare
    segments lent for the results), keeps what a task carries alive until
    its worker answered, learns from results how many spares to lend, and
    cleans up after dead workers and at the end of the stage.
    """

    def __init__(self, share_arrays: Any) -> None:
        self.threshold = stage_threshold(share_arrays)
        _init()  # first use in this process: clean up after dead owners
        self._lock = threading.Lock()
        self._pieces: dict[int, tuple[int, list[str], list[tuple[str, int]]]] = {}
        self._started = False
        self._ratio = 0.0  # result segments per item
        self._size = 0  # their usual size
        self._item_bytes = 0  # shared array bytes an item carries (to or from the worker)
        self._setup: Any = None  # releases what the stage's own pickling made
        self._closed = False  # after close() a sender thread may still finish pickling one piece

    def dumps_task(self, pid: int, n: int, message: Callable[[tuple | None], Any]) -> bytes | memoryview | Gather:
        """Pickle the task for piece `pid` of `n` items: ``message(options)`` builds it.

        ``options`` is what the worker needs to share its result arrays:
        (threshold, spare segments lent for them), or None with sharing off.
        """
        if not self._started:
            self._started = True
            stage_started()
        opts: tuple | None = None if self.threshold is None else (self.threshold, ())
        if "numpy" not in sys.modules:  # no arrays here: only the worker's results may share
            return dumps_parts(message(opts), to_worker=True)
        auto = None if S.disabled else self.threshold
        spares = self._lend(n) if auto is not None else ()
        if spares:
            opts = (self.threshold, spares)
        with _sending(auto) as ctx:
            try:
                data = dumps_parts(message(opts), to_worker=True)
            except BaseException:
                self._settle(spares)
                raise
        kept = ctx.kept
        made = kept.made if kept is not None else []
        if kept is not None and n:
            self._item_bytes = max(kept.nbytes // n, self._item_bytes // 2)
        with self._lock:
            late = self._closed
            if not late:
                self._pieces[pid] = (n, made, list(spares))
        if late:  # the stage already ended: nobody will answer this piece, let go now
            _release(made)
            self._settle(spares)
        return data

    @contextlib.contextmanager
    def setup_scope(self) -> Iterator[None]:
        """Around pickling the stage itself: arrays its function holds are shared too.

        What that makes lives as long as the stage may start a worker (one
        that died is replaced with the same setup message).
        """
        auto = None if S.disabled or "numpy" not in sys.modules else self.threshold
        with _sending(auto) as ctx:
            yield
        if ctx.kept is not None and ctx.kept.made:
            self._setup = weakref.finalize(self, _release, list(ctx.kept.made))

    def max_items(self) -> int | None:
        """How many items a piece may carry: few when items carry big arrays.

        A piece is what a worker holds at once: with big arrays in it, more
        items only mean more segments in flight (memory, fresh pages to zero)
        and fewer to reuse, for no saving on per-message cost.
        """
        per_item = self._item_bytes
        if self.threshold is None or per_item < max(self.threshold, PIECE_BYTES // 64):
            return None
        return max(1, PIECE_BYTES // per_item)

    def loads(self, data: bytes, answers: Callable[[Any], int | None]) -> Any:
        """Unpickle a worker's message, noting the result segments it carries.

        ``answers(msg)`` is the piece a result answers (None for any other message).
        """
        sink: list[int] = []
        with counting_adopted(sink):
            msg = loads(data)
        pid = answers(msg)
        if pid is not None:
            with self._lock:
                rec = self._pieces.get(pid)
            if rec is not None and rec[0]:
                self._ratio = len(sink) / rec[0]
                if sink:
                    self._size = max(set(sink), key=sink.count)
                    self._item_bytes = max(self._item_bytes, sum(sink) // rec[0])
        return msg

    def done(self, *pids: int) -> None:
        """These pieces are answered (or their worker died): let go of what they carried."""
        for pid in pids:
            with self._lock:
                rec = self._pieces.pop(pid, None)
            if rec is not None:
                _release(rec[1])
                self._settle(rec[2])
        drain_released()

    def reap(self) -> None:
        """A worker died: remove segments it made for us and never sent."""
        _reap()

    def close(self) -> None:
        """The stage ended (done, failed or cancelled)."""
        with self._lock:
            self._closed = True
            pids = list(self._pieces)
        self.done(*pids)
        if self._setup is not None:
            self._setup()
        _reap()
        if self._started:
            self._started = False
            stage_ended()
        _drain()

    def _lend(self, n_items: int) -> tuple[tuple[str, int], ...]:
        k = int(self._ratio * n_items + 0.5)
        if k <= 0 or not self._size:
            return ()
        _drain()
        return tuple((name, self._size) for name in lend(self._size, k))

    def _settle(self, spares: Any) -> None:
        if not spares:
            return
        settle_lent([name for name, _size in spares])
