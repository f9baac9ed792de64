"""What `ezflow.apply` shows: rows, where the run it makes counts chunks.

The engine counts the items it maps (chunks); a person applying a function
over a frame thinks in rows. `RowsView` wraps the view the caller asked for
and rescales every figure it is shown, so bars, panel and stats speak rows.
"""

from __future__ import annotations

from typing import Any

from ._core.record import replace

__all__ = ["RowsView"]


class RowsView:
    """An observer that shows rows where the run counts chunks (it forwards to the real view)."""

    def __init__(self, view: Any, rows: int, chunks: int) -> None:
        self._view = view
        self._scale = rows / max(chunks, 1)
        self._rows = rows
        self._chunks = chunks

    @staticmethod
    def around(progress: Any, rows: int, chunks: int) -> Any:
        """The view `progress` asks for, counting rows; None for no view."""
        if progress is False:
            return None
        from ._views.choose import make_observer

        view = make_observer(progress)
        return None if view is None else RowsView(view, rows, chunks)

    def _count(self, x: int) -> int:
        return self._rows if x >= self._chunks else min(self._rows, round(x * self._scale))

    def _stats(self, stats: Any) -> Any:
        stages = tuple(
            replace(
                s,
                items_in=self._count(s.items_in),
                items_out=self._count(s.items_out),
                errors=self._count(s.errors),
                skipped=self._count(s.skipped),
                in_flight=round(s.in_flight * self._scale),
                queue_depth=round(s.queue_depth * self._scale),
                queue_max=round(s.queue_max * self._scale),
                total=self._rows if s.total is not None else None,
            )
            for s in stats.stages
        )
        total = self._rows if stats.total is not None else None
        return replace(stats, stages=stages, total=total)

    def open(self, stats: Any) -> None:
        self._view.open(self._stats(stats))

    def update(self, stats: Any) -> None:
        self._view.update(self._stats(stats))

    def close(self, stats: Any) -> None:
        self._view.close(self._stats(stats))

    def __getattr__(self, name: str) -> Any:  # bind_stop and whatever else the view offers
        return getattr(self._view, name)
