"""Per-item time limits in process stages: the worker marks each attempt it starts, the parent watches the marks.

    worker process (worker.py, items.py)             parent (process.py, collector thread, `Watch`)
    Marker.begin(piece_id)   before a piece          every limit/20 while a worker holds a piece:
    Marker.mark(pos, attempt) before each attempt:       a tag not seen before started at most now
        slot <- (piece, attempt), position               a tag seen for longer than the limit: SIGKILL
    Marker.idle()  sleeping (backoff, rate), done    that attempt fails or is retried (rules.ItemRules);
                                                     the piece's other items run again on a worker

Each worker process has a slot in shared memory, made with it (`Slot`):
the tag of the attempt it runs, in two words: its piece and try (0: none
runs), and its position in the piece. A plain map marks an item with one
store of a small int (about 40 ns; reading the clock there would cost three
times that, a large int twice), and
nothing crosses the pipe, so a stage with a time limit batches its items
like any other: the limit is on each attempt of each item, not on a
message. The parent dates an attempt by the first time it sees its tag, so
it never stops one early, and late by at most its polling interval
(limit/20, at least 2 ms): a generous limit costs a glance every few seconds.
"""

import time
from multiprocessing.heap import BufferWrapper
from typing import Any, NamedTuple

__all__ = ["Deadlines", "Marker", "Running", "Slot", "Watch", "piece_field", "split_overrun"]

_PIECE_BITS = 40  # a piece id is kept modulo 2**40 in the tag: enough to tell the pieces a worker holds apart
_ATTEMPT_MASK = 0xFF


class Slot:
    """A worker's slot: two int64 words of shared memory its process inherits or receives at start.

    Made from `multiprocessing.heap` blocks, as `RawArray` makes them, but read
    and written through a memoryview: `ctypes` would cost every first call
    about 2 ms of imports for two words.
    """

    __slots__ = ("view", "wrapper")

    def __init__(self, wrapper: Any = None) -> None:
        fresh = wrapper is None
        self.wrapper = BufferWrapper(16) if fresh else wrapper  # its block is freed with it: the pool keeps it
        self.view = self.wrapper.create_memoryview().cast("q")
        if fresh:
            self.view[0] = self.view[1] = 0  # a heap block may be a freed one: 0 is "no attempt running"

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled only to start a spawn/forkserver worker: the arena's file descriptor travels with it
        return Slot, (self.wrapper,)


def piece_field(piece_id: int) -> int:
    """What of a piece id its tag carries (never 0: 0 is "no attempt running")."""
    return (piece_id & ((1 << _PIECE_BITS) - 1)) + 1


class Running(NamedTuple):
    """The attempt a worker runs, as its tag says."""

    piece: int  # piece_field of its piece's id
    pos: int  # its item's position in the piece
    attempt: int  # the item's tries so far, this one included (modulo 256)


def _decode(tag: tuple[int, int]) -> Running:
    return Running(tag[0] >> 8, tag[1], tag[0] & _ATTEMPT_MASK)


class Marker:
    """A worker's side of its slot."""

    __slots__ = ("base", "view")

    def __init__(self, slot: Slot) -> None:
        self.view = slot.view  # a memoryview store is the cheapest write there is
        self.base = 0

    def begin(self, piece_id: int) -> None:
        """A piece starts: its attempts are tagged with its id."""
        self.base = piece_field(piece_id) << 8

    def mark(self, pos: int, attempt: int) -> None:
        """Attempt `attempt` of the item at `pos` starts now."""
        view = self.view
        view[0] = self.base | (attempt & _ATTEMPT_MASK)
        view[1] = pos

    def idle(self) -> None:
        """No attempt runs (a sleep between attempts, or the piece is done): no limit applies."""
        self.view[0] = 0


class Watch:
    """The parent's side: when each worker's current attempt was first seen, and which ran too long."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.poll = max(0.002, limit / 20)
        self._seen: dict[int, tuple[tuple[int, int], float]] = {}  # id(worker) -> (tag, first seen)

    def overdue(self, slots: dict[int, Any], now: float) -> list[tuple[int, Running]]:
        """Look at the slots of the workers holding pieces (id(worker) -> slot); return those past the limit."""
        late = []
        seen = self._seen
        for key, slot in slots.items():
            head = slot[0]
            if head == 0:
                seen.pop(key, None)
                continue
            tag = (head, slot[1])
            if slot[0] != head:
                continue  # moving on to another attempt right now: look again next time
            first = seen.get(key)
            if first is None or first[0] != tag:
                seen[key] = (tag, now)
            elif now - first[1] > self.limit:
                late.append((key, _decode(tag)))
        return late

    def wait(self, holding: bool) -> float | None:
        """How long the collector may wait before looking again (None: no worker holds a piece)."""
        return self.poll if holding else None

    def forget(self, key: int) -> None:
        """A worker is gone."""
        self._seen.pop(key, None)


def split_overrun(pieces: list[Any], run: Running) -> tuple[Any, list[Any]] | None:
    """Cut what a worker stopped for overrunning held: (the lone item that overran, the pieces to run again).

    ``pieces[0]`` was running. Its items before the one that overran ran
    to the end, but their results died with the worker: they run again with
    its items after it, and the pieces queued behind it. None if the attempt
    is not in ``pieces[0]`` (the piece's answer beat the kill: nothing overran).
    """
    if not pieces:
        return None
    first, rest = pieces[0], list(pieces[1:])
    if piece_field(first.id) != run.piece or run.pos >= len(first.items):
        return None
    again = []
    tail = first
    if run.pos:
        head, tail = first.split(run.pos)
        again.append(head)
    bad = tail
    if len(tail.items) > 1:
        bad, after = tail.split(1)
        again.append(after)
    # its tries before this one: the worker counts from the tries the piece had (a lone item given back)
    bad.attempts = max(first.attempts, run.attempt - 1)
    return bad, again + rest


class Deadlines:
    """A process executor's policy that stops a worker whose item overran (its collector's side)."""

    def __init__(self, port: Any, rules: Any, limit: float | None) -> None:
        self.port = port
        self.rules = rules
        self._timed_out: dict[int, Running] = {}  # id(worker) -> the attempt it was stopped for
        self._watch = Watch(limit) if limit is not None else None

    def next_wait(self, workers: list[Any]) -> float | None:
        """How long the collector may wait for messages before looking at the slots again."""
        if self._watch is None:
            return None
        return self._watch.wait(any(w.outstanding for w in workers))

    def check(self, workers: list[Any]) -> None:
        """Stop every worker whose attempt ran past the limit (its death is handled as any other)."""
        if self._watch is None:
            return
        held = {id(w): w for w in workers if w.outstanding and id(w) not in self._timed_out}
        for key, run in self._watch.overdue({k: w.slot.view for k, w in held.items()}, time.monotonic()):
            self._timed_out[key] = run
            try:
                held[key].proc.kill()  # SIGKILL: works even on C code that ignores signals
            except Exception:
                pass

    def stopped_for(self, w: Any) -> Running | None:
        """A worker is gone: the attempt it was stopped for overrunning, if it was."""
        if self._watch is not None:
            self._watch.forget(id(w))
        return self._timed_out.pop(id(w), None)

    def overran(self, pieces: list[Any], run: Running) -> None:
        """A worker was stopped because attempt `run` overran: it fails or runs again (the rules),
        every other item the worker held runs again."""
        cut = split_overrun(pieces, run)
        if cut is None:
            if pieces:
                self.port.give_back(pieces)  # its answer came first: nothing overran
            return
        bad, again = cut
        err = self.rules.timeout_error("its worker process was stopped")
        failed = self.rules.on_lost(bad, err, self.port.give_back)
        if failed is not None:
            self.port.done(bad, [None], [failed], 0.0)
        if again:
            self.port.give_back(again)
