"""`apply`: pandas' ``apply`` over chunks of a DataFrame, a Series or a groupby, in parallel.

    df / series / df.groupby(key)
        |  split by position into chunks (rows, or whole groups; sized for the user)
        v
    ezflow.map(per-chunk work, chunks, ordered=True, ...)   the one engine, every map option
        |  each chunk crosses to its worker through shared memory (numeric blocks,
        |  Arrow columns: pickle-5 buffers), and so does its result; a big frame
        |  under fork does not cross at all: workers forked for the call inherit
        |  it and tasks name spans of rows (`_inherit`)
        v
    pd.concat(results)  ==  what pandas itself returns

The views count rows, not chunks (`_Rows` rescales the figures they are
shown). pandas is imported on the first call only: ``import ezflow`` stays
light, and pandas stays an optional dependency (``ezflow[pandas]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from ._apply_view import RowsView
from ._core.entry import public
from ._core.env import NUM_CPUS, default_start_method
from ._core.errors import Failure
from ._core.record import replace
from ._flow import Flow
from ._inherit import INHERIT_BYTES, Span, held, run_span
from ._plan.spec import StageSpec, make_stage
from ._plan.stage_options import MapOptions, refuse_keywords, split_options

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["apply"]

CHUNK_BYTES = 16 << 20  # a chunk carries about this much of the frame, at most (a few are in flight at once) ...
CHUNKS_PER_WORKER = 8  # ... and there are at least this many per worker (balance: the last ones end together)
MIN_ROWS = 256  # ... yet no chunk has fewer rows (amortise: each chunk costs a message and a pandas call)

# map options apply cannot honour, and why
_NOT_HERE = {
    "when": "every row goes to fn; filter the frame first (df[mask])",
    "ordered": "the result is in the frame's order, as pandas' own",
}
_KINDS = "a pandas DataFrame, Series, or a groupby of one (df.groupby(key))"


@public
def apply(
    data: Any, fn: Callable[[Any], Any], /, *, axis: int | str | None = None, **options: Unpack[MapOptions]
) -> Any:
    """Apply `fn` over a DataFrame, Series or groupby in parallel; return what pandas would.

    Args:
        data: a ``DataFrame``, a ``Series``, or ``df.groupby(...)`` /
            ``df.groupby(...)[cols]``.
        fn: the function (a lambda or a notebook function is fine).
        axis: None (default): `fn` gets chunks of rows (DataFrames, or
            Series) and the results are concatenated in order. ``axis=1``
            (or "columns"): ``df.apply(fn, axis=1)``, one row at a time.
            ``axis=0`` (or "index"): ``df.apply(fn, axis=0)`` (one column at
            a time), or ``series.apply(fn)`` (one value at a time). Ignored
            for a groupby: ``ezflow.apply(df.groupby(k), fn)`` is
            ``df.groupby(k).apply(fn)``.
        chunksize: rows per chunk (groups per chunk for a groupby; columns
            for ``axis=0`` on a DataFrame). Default: chosen for you, enough
            chunks to keep every worker busy to the end, few enough that
            each is worth a message.
        errors: "raise", "skip" (the rows of a chunk that failed are left
            out) or "return" (they hold its `Failure`).
        Other options: as `ezflow.map` (`workers`, `mode`, `progress`,
            `item_timeout`, `checkpoint`, ...), per chunk; progress views count rows.
            ``when=`` and ``ordered=`` do not apply (a TypeError says why).

    Returns:
        What ``data.apply(fn, axis=axis)`` returns (``data.groupby(...).apply(fn)``
        for a groupby); with ``axis=None``, ``pd.concat`` of the chunks'
        results, or their list if they are not pandas objects.

    Raises:
        ImportError: pandas is not installed (``pip install "ezflow[pandas]"``).
        TypeError: `data` is not a pandas object this can split.
        TaskError: a chunk failed (``errors="raise"``); its ``__cause__``
            is the original exception (and it is an instance of its class).
    """
    __tracebackhide__ = True  # IPython and pytest hide this frame
    refuse_keywords("ezflow.apply", options, MapOptions)  # timeout= is item_timeout= now
    for key, why in _NOT_HERE.items():
        if key in options:
            raise TypeError(f"ezflow.apply() takes no {key}=: {why}")
    try:
        import pandas as pd
    except ImportError:
        raise ImportError('ezflow.apply needs pandas: pip install "ezflow[pandas]"') from None
    opts: dict[str, Any] = dict(options)
    chunksize = opts.pop("chunksize", None)  # rows per chunk here, not items per message
    progress = opts.pop("progress", None)
    workers, errors = opts.get("workers"), opts.get("errors", "raise")
    opts["name"] = opts.get("name") or getattr(fn, "__name__", None) or type(fn).__name__
    if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
        raise ValueError(f"chunksize must be an int >= 1 (rows per chunk), got {chunksize!r}")
    plan = _plan(pd, data, fn, axis)
    spans = _spans(plan, workers or NUM_CPUS, chunksize)
    if not spans:  # nothing to split: pandas answers (an empty frame keeps its shape)
        return plan.whole()
    view = RowsView.around(progress, plan.rows, len(spans))
    stage, run = split_options(opts)
    spec = make_stage("map", plan.work, **stage)
    if not _inherits(spec, run, plan):
        results = Flow(_Chunks(plan, spans))._with(spec).collect(progress=view or False, **run)
        return plan.combine(pd, results, spans, errors)
    with held(plan) as plan_key:  # the workers are forked after this: they hold the data as it is now
        spec = replace(spec, fn=run_span, private_pool=True)
        items = [Span(plan_key, a, b, plan.unit) for a, b in spans]
        results = Flow(items)._with(spec).collect(progress=view or False, **run)
    return plan.combine(pd, results, spans, errors)


def _inherits(spec: StageSpec, run: dict, plan: _Plan) -> bool:
    """Whether workers forked for this call should take the data from the memory they inherit.

    Only fork can give it to them; a big frame gains (no copy through shared
    memory), a small one would wait for the fork. A checkpoint keys results by
    the chunks' values, and a worker's memory limit counts the pages it
    inherits: both keep the shared-memory path.
    """
    return (
        spec.mode == "process"
        and spec.backend is None
        and (spec.start_method or default_start_method()) == "fork"
        and spec.max_memory is None
        and run.get("checkpoint") is None
        and plan.nbytes >= INHERIT_BYTES
    )


class _Chunks:
    """The chunks, made as the run takes them (slices, not copies), with a length for the views."""

    def __init__(self, plan: _Plan, spans: list[tuple[int, int]]) -> None:
        self.plan, self.spans = plan, spans

    def __len__(self) -> int:
        return len(self.spans)

    def __iter__(self) -> Any:
        return (self.plan.chunk(a, b) for a, b in self.spans)


class _Plan:
    """How one call splits its data, what each chunk runs, and how results go back together.

    The data is a sequence of units a chunk never splits (rows, columns or
    groups); ``sizes`` gives each unit's rows (None: one each).
    """

    unit = "rows"  # what an error names a chunk by (`_inherit.Span`)

    def __init__(self, work: Callable[[Any], Any], units: int, nbytes: int, sizes: list[int] | None = None) -> None:
        self.work = work  # what a worker runs on one chunk
        self.units = units
        self.rows = units if sizes is None else sum(sizes)
        self.sizes = sizes
        self.nbytes = nbytes  # about the bytes of the data

    def chunk(self, a: int, b: int) -> Any:
        """Units a..b, as the worker gets them."""
        raise NotImplementedError

    def labels(self, a: int, b: int) -> Any:
        """The index of what units a..b hold (where a failed chunk's `Failure` goes)."""
        raise NotImplementedError

    def whole(self) -> Any:
        """What pandas returns for the whole data (empty data: no workers needed)."""
        return self.work(self.chunk(0, self.units))

    def combine(self, pd: Any, results: list, spans: list[tuple[int, int]], errors: str) -> Any:
        parts = [r for r in results if not isinstance(r, Failure)]
        if errors == "return" and len(parts) < len(results):
            like = next((r for r in parts if isinstance(r, pd.DataFrame)), None)
            parts = [
                _failed(pd, r, self.labels(a, b), like) if isinstance(r, Failure) else r
                for r, (a, b) in zip(results, spans)
            ]
        if not parts:  # every chunk failed and was skipped
            return self.work(self.chunk(0, 0))
        if all(isinstance(r, (pd.DataFrame, pd.Series)) for r in parts):
            return self.concat(pd, parts)
        return parts

    def concat(self, pd: Any, results: list) -> Any:
        return pd.concat(results)


class _Rows(_Plan):
    """Chunks of rows (of a DataFrame or a Series)."""

    def __init__(self, obj: Any, work: Callable[[Any], Any]) -> None:
        super().__init__(work, len(obj), _nbytes(obj))
        self.obj = obj

    def chunk(self, a: int, b: int) -> Any:
        return self.obj.iloc[a:b]

    def labels(self, a: int, b: int) -> Any:
        return self.obj.index[a:b]


class _Columns(_Plan):
    """``df.apply(fn, axis=0)``: chunks of whole columns."""

    unit = "columns"

    def __init__(self, df: Any, fn: Callable[[Any], Any]) -> None:
        super().__init__(partial(_apply_columns, fn), df.shape[1], _nbytes(df))
        self.rows = len(df) * df.shape[1]  # what the views count: values
        self.df = df

    def chunk(self, a: int, b: int) -> Any:
        return self.df.iloc[:, a:b]

    def labels(self, a: int, b: int) -> Any:
        return self.df.columns[a:b]

    def concat(self, pd: Any, results: list) -> Any:
        if all(isinstance(r, pd.Series) for r in results):
            return pd.concat(results)
        return pd.concat(results, axis=1)


class _Groups(_Plan):
    """``df.groupby(...).apply(fn)``: chunks of whole groups, grouped again in the worker the same way."""

    unit = "groups"

    def __init__(self, pd: Any, gb: Any, fn: Callable[[Any], Any]) -> None:
        import numpy as np

        self.np = np
        ids = gb.ngroup().to_numpy(dtype="float64", na_value=np.nan)  # NaN: a row in no group (dropna)
        keep = np.flatnonzero(~np.isnan(ids))
        self.order = keep[np.argsort(ids[keep], kind="stable")]  # rows by group, each group's in its order
        counts = np.bincount(ids[keep].astype(np.int64), minlength=gb.ngroups)
        self.starts = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        how, self.keys = _regroup(pd, gb)
        super().__init__(partial(_apply_groups, fn, how), gb.ngroups, _nbytes(gb.obj), counts.tolist())
        self.gb, self.fn, self.obj = gb, fn, gb.obj

    def _positions(self, a: int, b: int) -> Any:
        return self.order[self.starts[a] : self.starts[b]]

    def chunk(self, a: int, b: int) -> Any:
        pos = self._positions(a, b)
        sub = self.obj.take(pos)
        if self.keys is None:
            return sub
        if isinstance(self.keys, list):
            return sub, [k.take(pos) for k in self.keys]
        return sub, self.keys.take(pos)

    def labels(self, a: int, b: int) -> Any:
        return self.obj.index.take(self._positions(a, b))

    def whole(self) -> Any:
        return self.gb.apply(self.fn)

    def concat(self, pd: Any, results: list) -> Any:
        out = pd.concat(results)
        if not self.gb.group_keys and sum(len(r) for r in results) == len(self.order):
            # a transform (each group's rows given back): pandas returns them in the frame's order
            out = out.iloc[self.np.argsort(self.order, kind="stable")]
        return out


def _plan(pd: Any, data: Any, fn: Callable[[Any], Any], axis: Any) -> _Plan:
    from pandas.api.typing import DataFrameGroupBy, SeriesGroupBy

    if not callable(fn):
        raise TypeError(f"ezflow.apply(data, fn): fn must be callable, got {type(fn).__name__}")
    if isinstance(data, (DataFrameGroupBy, SeriesGroupBy)):
        return _Groups(pd, data, fn)
    if isinstance(data, pd.DataFrame):
        ax = _AXES.get(axis, -1) if isinstance(axis, (int, str, type(None))) else -1
        if ax == -1:
            raise ValueError(f"axis must be None (chunks of rows), 0/'index' or 1/'columns', got {axis!r}")
        if ax == 1:
            return _Rows(data, partial(_apply_rows, fn))
        if ax == 0:
            return _Columns(data, fn)
        return _Rows(data, fn)
    if isinstance(data, pd.Series):
        if axis not in (None, 0, "index", "rows"):
            raise ValueError(f"a Series has no axis {axis!r}: use axis=None (chunks) or axis=0 (one value at a time)")
        return _Rows(data, fn if axis is None else partial(_apply_values, fn))
    raise TypeError(
        f"ezflow.apply takes {_KINDS}, got {type(data).__module__}.{type(data).__qualname__}; "
        "for any other iterable use ezflow.map(fn, items)"
    )


_AXES: dict[Any, int | None] = {None: None, 0: 0, "index": 0, "rows": 0, 1: 1, "columns": 1}


def _spans(plan: _Plan, workers: int, chunksize: int | None) -> list[tuple[int, int]]:
    """Split units 0..plan.units into chunks (a, b), in order, of about equal rows."""
    n = plan.units
    if n == 0:
        return []
    if chunksize is not None:
        return [(a, min(a + chunksize, n)) for a in range(0, n, chunksize)]
    k = max(CHUNKS_PER_WORKER * max(workers, 1), math.ceil(plan.nbytes / CHUNK_BYTES))
    k = max(1, min(k, plan.rows // MIN_ROWS, n))
    if plan.sizes is None:
        bounds = [round(i * n / k) for i in range(k + 1)]
        return [(bounds[i], bounds[i + 1]) for i in range(k) if bounds[i] < bounds[i + 1]]
    # whole groups: cut where the running row count passes each next share
    out: list[tuple[int, int]] = []
    a, acc, share = 0, 0, plan.rows / k
    for i, size in enumerate(plan.sizes):
        acc += size
        if acc >= share * (len(out) + 1) and i + 1 < n:
            out.append((a, i + 1))
            a = i + 1
    out.append((a, n))
    return out


def _nbytes(obj: Any) -> int:
    try:
        usage = obj.memory_usage(index=True, deep=False)
        return int(usage.sum()) if hasattr(usage, "sum") else int(usage)
    except Exception:  # an odd extension type: the row count will do
        return 0


def _regroup(pd: Any, gb: Any) -> tuple[dict, Any]:
    """How a worker groups its chunk as `gb` grouped the whole data, and the keys to send per row.

    Column names and levels are found again in the chunk; keys given per
    row (a Series, an array, or a column of the frame a Series was
    selected from) travel with it, cut to its rows.
    """
    opts: dict[str, Any] = {"sort": gb.sort, "group_keys": gb.group_keys, "dropna": gb.dropna, "observed": gb.observed}
    if isinstance(gb.obj, pd.DataFrame):
        opts["as_index"] = gb.as_index
    keys = gb.keys
    names = keys if isinstance(keys, list) else [keys]
    if any(isinstance(k, pd.Grouper) for k in names):
        raise TypeError("ezflow.apply cannot split a groupby by pd.Grouper: group by columns, levels or arrays")
    # a column selection (df.groupby(k)[cols]); a SeriesGroupBy's obj is the selected column already
    selection = getattr(gb, "_selection", None) if isinstance(gb.obj, pd.DataFrame) else None
    how: dict[str, Any] = {"opts": opts, "selection": selection, "level": gb.level, "by": None}
    if keys is None:  # by level
        return how, None
    if isinstance(gb.obj, pd.DataFrame) and all(_is_column(gb.obj, k) for k in names):
        how["by"] = keys
        return how, None
    # what pandas grouped by, one value per row of gb.obj (its private grouper: no public accessor)
    per_row = [pd.Series(g.grouping_vector, index=gb.obj.index, name=g.name) for g in gb._grouper.groupings]
    return how, per_row if isinstance(keys, list) else per_row[0]


def _is_column(df: Any, key: Any) -> bool:
    try:
        return isinstance(key, (str, int, tuple)) and key in df.columns
    except TypeError:
        return False


# -- what a worker runs on one chunk (module functions: they pickle by name) --


def _apply_rows(fn: Callable[[Any], Any], chunk: Any) -> Any:
    return chunk.apply(fn, axis=1)


def _apply_columns(fn: Callable[[Any], Any], chunk: Any) -> Any:
    return chunk.apply(fn, axis=0)


def _apply_values(fn: Callable[[Any], Any], chunk: Any) -> Any:
    return chunk.apply(fn)


def _apply_groups(fn: Callable[[Any], Any], how: dict, chunk: Any) -> Any:
    by = how["by"]
    if isinstance(chunk, tuple):  # keys given per row came along with the chunk
        chunk, by = chunk
    if by is None:
        gb = chunk.groupby(level=how["level"], **how["opts"])
    else:
        gb = chunk.groupby(by, level=how["level"], **how["opts"])
    if how["selection"] is not None:
        gb = gb[how["selection"]]
    return gb.apply(fn)


def _failed(pd: Any, failure: Failure, index: Any, like: Any) -> Any:
    """The rows of a chunk that failed, each holding its `Failure` (``errors="return"``)."""
    if like is not None:
        return pd.DataFrame({c: [failure] * len(index) for c in like.columns}, index=index, dtype=object)
    return pd.Series([failure] * len(index), index=index, dtype=object)
