"""The stats model: one frozen record per stage, read by every observer.

    engine (parent threads)  --increments-->  _Counters (one per stage, mutable)
                                                   |  snapshot()
                                                   v
    flow.stats / handle.stats / tqdm bars / notebook panel  <--  FlowStats(StageStats...)

Counters are plain ints and floats updated by the engine's threads in the
parent, once per chunk, never per item on a hot path; readers take a
snapshot, a frozen record, so a view never reaches into the engine.

Invariant, for ``map`` and ``filter`` stages, at any time::

    items_in == items_out + filtered + errors + skipped + in_flight

``flat_map`` and ``batch`` stages count what they emit in ``items_out``
(more or fewer items than came in).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from .insights import Book, FailedItem, SlowItem, WorkerStats
from .record import Factory, record

__all__ = [
    "FlowStats",
    "StageStats",
    "checkpoint_note",
    "clock",
    "format_table",
    "human",
    "memory_notes",
    "size",
    "worker_label",
]

# A bottleneck is named only once the figures have settled: a second of run
# and a few items per worker, so start-up noise (workers warming up, queues
# filling for the first time) does not pick a stage.
SETTLE_SECONDS = 1.0
SETTLE_ITEMS_PER_WORKER = 2
# A stage that spent this share of its life waiting for room in the next
# stage's queue is held back by that stage, not holding the flow back.
BLOCKED_SHARE = 0.1


@record(frozen=True)
class StageStats:
    """Figures of one stage at one moment."""

    name: str
    kind: str  # "map" | "filter" | "flat_map" | "batch" | "unbatch"
    mode: str  # "process" | "thread" | "async" | "dask" | "inline"
    workers: int
    items_in: int = 0  # taken from the input queue
    items_out: int = 0  # emitted downstream (results and pass-throughs)
    filtered: int = 0  # dropped by a filter predicate
    errors: int = 0  # failures made by this stage (raised or returned)
    skipped: int = 0  # failures dropped by errors="skip"
    retries: int = 0  # extra attempts made
    in_flight: int = 0  # taken but not yet accounted for
    busy_seconds: float = 0.0  # summed compute time in workers
    elapsed: float = 0.0  # seconds since the stage took its first item
    queue_depth: int = 0  # items waiting for a worker now (input queue + taken, not yet sent)
    queue_max: int = 0  # most items ever waiting
    queue_fill: float = 0.0  # waiting room in use now, 0..1 (near 1: this stage holds the flow up)
    total: int | None = None  # items expected, when the source has a length
    state: str = "pending"  # "pending" | "running" | "done" | "failed" | "cancelled"
    error: str | None = None  # what failed, for a failed stage
    # seconds the stage before this one (or the source) spent waiting for
    # room in this stage's input queue: time blocked on output, not work
    inbox_full_seconds: float = 0.0
    peak_worker_rss: int = 0  # most resident memory (bytes) one worker process was seen to use; 0: not measured
    workers_recycled: int = 0  # worker processes replaced on purpose (max_tasks_per_worker, max_memory)
    memory_failures: int = 0  # items failed with MemoryLimitExceeded (raised, returned or skipped)
    # True when `workers` follows the flow's CPU budget (a process stage left at workers=None):
    # it is then the number of workers running now, and `capacity_seconds` sums it over time
    auto_workers: bool = False
    capacity_seconds: float = 0.0  # worker seconds the stage had so far; 0.0: elapsed x workers
    # the stages that run fused with this one, itself included, in flow order (one chain in the
    # same workers: `busy` is then this stage's share of their time); () when it runs alone
    fused_with: tuple[str, ...] = ()
    # insights (`_core.insights`): each worker's time and current item, the
    # slowest pieces, and the first `FAILURES_KEPT` failures (later ones counted)
    worker_stats: tuple[WorkerStats, ...] = ()
    slowest: tuple[SlowItem, ...] = ()
    failures: tuple[FailedItem, ...] = ()  # in source order
    failures_omitted: int = 0  # failures past the kept ones: counted, not kept

    @property
    def done(self) -> int:
        """Items this stage has finished with."""
        return self.items_in - self.in_flight

    @property
    def throughput(self) -> float:
        """Average items per second since the stage started."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def busy(self) -> float:
        """Fraction of worker time spent computing, 0..1, the items running now included."""
        denom = self.worker_time
        return min(1.0, self.working_seconds / denom) if denom > 0 else 0.0

    @property
    def worker_time(self) -> float:
        """Worker seconds the stage has had: its life times its workers (summed as they changed)."""
        return self.capacity_seconds or self.elapsed * max(self.workers, 1)

    @property
    def working_seconds(self) -> float:
        """Worker seconds spent on items: the finished ones and those running now."""
        # busy_seconds grows when an item ends: without the running ones,
        # workers stuck on a long item would read 0% busy.
        return self.busy_seconds + sum(w.current_for_s for w in self.worker_stats)


@record(frozen=True)
class FlowStats:
    """Figures of a whole flow run: one `StageStats` per stage."""

    stages: tuple[StageStats, ...] = ()
    elapsed: float = 0.0
    state: str = "pending"
    total: int | None = None
    error: str | None = None
    from_checkpoint: int = 0  # source items whose results a checkpoint supplied (not computed, not in stages)

    def __iter__(self) -> Iterator[StageStats]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def __getitem__(self, key: int | str) -> StageStats:
        if isinstance(key, str):
            for stage in self.stages:
                if stage.name == key:
                    return stage
            names = ", ".join(repr(s.name) for s in self.stages)
            raise KeyError(f"no stage named {key!r}; stages are {names}")
        return self.stages[key]

    def blocked_on_output(self, index: int) -> float:
        """Seconds stage ``index`` spent waiting for room in the next stage's input queue."""
        nxt = index + 1
        return self.stages[nxt].inbox_full_seconds if nxt < len(self.stages) else 0.0

    @property
    def bottleneck(self) -> StageStats | None:
        """The stage holding the flow back, or None when no stage clearly is.

        The slowest stage keeps its workers busy for the whole run while its
        input queue fills up behind it; stages after it starve, stages before
        it block on the full queue, and a fast stage that finished early was
        busy only for its own short life. So stages are ranked by worker time
        over the whole run's time plus their queue fill, and one is named
        only if its workers are mostly busy. A single stage is trivially its
        own bottleneck, so it is never named; nor is one in a failed run.
        Nothing is named before the figures settle (`SETTLE_SECONDS`, a few
        items per worker), and never a stage that has been waiting on a full
        downstream queue: its time blocked on output is not work.
        """
        if len(self.stages) < 2 or self.state == "failed" or self.elapsed < SETTLE_SECONDS:
            return None  # after a failure, what failed matters, not what was slow

        def score(s: StageStats) -> float:
            workers = s.worker_time / s.elapsed  # on average, when the CPU budget moved some
            return s.working_seconds / (workers * self.elapsed) + s.queue_fill

        candidates = [
            s
            for i, s in enumerate(self.stages)
            if s.elapsed > 0
            and s.kind != "batch"
            and s.done >= SETTLE_ITEMS_PER_WORKER * max(s.workers, 1)
            and self.blocked_on_output(i) < BLOCKED_SHARE * s.elapsed
        ]
        slow = max(candidates, key=score, default=None)
        if slow is None or slow.busy < 0.5:
            return None  # nobody is busy: the source is what is slow
        return slow

    def __repr__(self) -> str:
        head = ("stage", "mode", "in", "out", "err", "skip", "items/s", "busy", "queue")
        rows = [head]
        for s in self.stages:
            rows.append(
                (
                    s.name,
                    worker_label(s),
                    human(s.items_in),
                    human(s.items_out),
                    str(s.errors),
                    str(s.skipped),
                    human(s.throughput),
                    f"{s.busy:.0%}",
                    f"{s.queue_depth}",
                )
            )
        title = f"FlowStats({self.state}, {self.elapsed:.2f}s"
        note = checkpoint_note(self)
        if note:
            title += f", {note}"
        title += f", error={self.error!r})" if self.error else ")"
        extra = [f"  {s.name}: {', '.join(memory_notes(s))}" for s in self.stages if memory_notes(s)]
        return "\n".join([title, *format_table(rows), *extra])


# -- the figures' spelling, shared by `repr(flow.stats)` and every view ------


def human(x: float) -> str:
    """Format a count or rate compactly: 950, 1.2k, 3.4M."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}" if float(x).is_integer() or abs(x) >= 10 else f"{x:.1f}"


def clock(seconds: float) -> str:
    """Format a duration for people: 0.4s, 12.3s, 4m05s, 2h03m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def size(n: float) -> str:
    """Format a byte count for people: 512 B, 1.5 MB, 2.0 GB (powers of 1000, as max_memory reads them)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def memory_notes(s: StageStats) -> list[str]:
    """Say a stage's worker memory figures, only the non-zero ones: peak RSS, recycled, memory failures."""
    notes = []
    if s.peak_worker_rss:
        notes.append(f"peak RSS {size(s.peak_worker_rss)}")
    if s.workers_recycled:
        notes.append(f"{s.workers_recycled} recycled")
    if s.memory_failures:
        notes.append(f"{s.memory_failures} memory {'failure' if s.memory_failures == 1 else 'failures'}")
    return notes


def checkpoint_note(stats: FlowStats) -> str:
    """Say how many results a checkpoint supplied ("120 from checkpoint"), or "" when none did."""
    return f"{stats.from_checkpoint:,} from checkpoint" if stats.from_checkpoint else ""


_TIMES = "\u00d7"  # the multiplication sign: one word in a table, and it reads "times"


def worker_label(s: StageStats, *, auto: bool = True) -> str:
    """Name a stage's executor and worker count: ``process`` times ``2``.

    Workers that follow the flow's CPU budget read ``process`` times ``2 auto``: two now, moving
    as the run goes (`auto` False: without the word, for a view that marks it otherwise).
    """
    return f"{s.mode}{_TIMES}{s.workers}{' auto' if auto and s.auto_workers else ''}"


def format_table(rows: Sequence[Sequence[str]], *, left: int = 2) -> list[str]:
    """Align rows of cells into lines: the first ``left`` columns flush left, the rest right."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]


@record()
class _Counters:
    """Mutable per-stage counters; the engine writes, `snapshot` reads.

    Several threads write them (the stage's feeder, its workers through
    ``done``, the consumer under a checkpoint, the budget), and a panel
    reads them while they run, so each field has one lock its writers hold:
    ``pending_*``, ``items_done``, ``busy_seconds``, ``retries``,
    ``workers_recycled``, ``peak_worker_rss``: the stage's condition;
    ``queue_*``, ``put_waiters``, ``full_since``, ``inbox_full_seconds``: the
    inbox channel's; everything else: ``lock`` (`add`, `set_workers`, `start`,
    `finish`). Under ``lock`` only the Book's own leaf lock is taken (`snapshot`).
    `snapshot` reads under ``lock``; a field written under another lock is one
    int read there (a live figure, exact once the stage is done).
    """

    name: str
    kind: str
    mode: str
    workers: int
    capacity: int = 1  # input queue capacity, in chunks
    items_in: int = 0
    items_done: int = 0
    items_out: int = 0
    filtered: int = 0
    errors: int = 0
    skipped: int = 0
    retries: int = 0
    busy_seconds: float = 0.0
    queue_depth: int = 0
    queue_chunks: int = 0
    queue_max: int = 0
    pending_items: int = 0  # taken by the stage, not yet handed to a worker
    pending_chunks: int = 0
    window: int = 0
    total: int | None = None
    started: float | None = None
    finished: float | None = None
    state: str = "pending"
    error: str | None = None
    # Time producers spent waiting for room in this stage's input queue
    # (written by `Channel.put`); `put_waiters` and `full_since` count the
    # wait that is going on now, so a live snapshot sees it too.
    inbox_full_seconds: float = 0.0
    put_waiters: int = 0
    full_since: float | None = None
    peak_worker_rss: int = 0
    workers_recycled: int = 0
    memory_failures: int = 0
    auto_workers: bool = False  # `workers` follows the flow's CPU budget (`set_workers`)
    fused_with: tuple[str, ...] = ()  # the chain this stage runs in (`StageStats.fused_with`)
    worker_seconds: float = 0.0  # worker time up to `workers_since`, when `workers` last changed
    workers_since: float | None = None
    lock: threading.Lock = Factory(factory=threading.Lock)  # type: ignore[assignment]  # made per record
    book: Book = Factory(factory=Book)  # type: ignore[assignment]  # made per record

    def add(self, **deltas: float) -> None:
        """Add to counters in one step (a snapshot sees all of it or none)."""
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def start(self) -> None:
        if self.started is None:
            with self.lock:
                if self.started is None:
                    self.started = time.perf_counter()
                    self.state = "running"

    def finish(self, state: str = "done", error: str | None = None) -> None:
        with self.lock:
            if self.finished is None:
                self.finished = time.perf_counter()
            if self.state in ("pending", "running"):
                self.state = state
                self.error = error

    def set_workers(self, n: int) -> None:
        """The stage runs `n` workers from now on (the CPU budget moved some): sum the time of the old count."""
        with self.lock:
            now = time.perf_counter()
            self.worker_seconds = self._capacity(now)
            self.workers_since = now
            self.workers = n

    def _capacity(self, end: float) -> float:
        if self.started is None:
            return 0.0
        since = self.started if self.workers_since is None else max(self.started, self.workers_since)
        return self.worker_seconds + self.workers * max(0.0, end - since)

    def snapshot(self) -> StageStats:
        with self.lock:
            return self._snapshot()

    def _snapshot(self) -> StageStats:
        end = self.finished if self.finished is not None else time.perf_counter()
        elapsed = 0.0 if self.started is None else end - self.started
        in_flight = max(0, self.items_in - self.items_done)
        inbox_full = self.inbox_full_seconds
        since = self.full_since
        if since is not None:
            inbox_full += max(0.0, time.perf_counter() - since)
        return StageStats(
            name=self.name,
            kind=self.kind,
            mode=self.mode,
            workers=self.workers,
            items_in=self.items_in,
            items_out=self.items_out,
            filtered=self.filtered,
            errors=self.errors,
            skipped=self.skipped,
            retries=self.retries,
            in_flight=in_flight,
            busy_seconds=self.busy_seconds,
            elapsed=elapsed,
            queue_depth=self.queue_depth + self.pending_items,
            queue_max=max(self.queue_max, self.queue_depth + self.pending_items),
            queue_fill=min(1.0, (self.queue_chunks + self.pending_chunks) / max(1, self.capacity + self.window)),
            total=self.total,
            state=self.state,
            error=self.error,
            inbox_full_seconds=inbox_full,
            peak_worker_rss=self.peak_worker_rss,
            workers_recycled=self.workers_recycled,
            memory_failures=self.memory_failures,
            auto_workers=self.auto_workers,
            capacity_seconds=self._capacity(end) if self.auto_workers else 0.0,
            fused_with=self.fused_with,
            **self.book.snapshot(end),
        )
