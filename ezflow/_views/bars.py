"""Terminal progress: one tqdm bar per stage, stacked in plan order.

    FlowStats --update()--> TqdmObserver --bar.update(done delta)--> tqdm bar i (position=i)
                                          --set_postfix_str-->        busy, queue, errors

    load    :  45%|#####     | 450/1000 [00:03<00:04, 130it/s, busy 40%, queue 10%]
    resize  :  44%|####4     | 440/1000 [00:03<00:04, 128it/s, busy 98%, queue 100%, bottleneck]
    save    :  44%|####4     | 439/1000 [00:03<00:04, 128it/s, busy 5%, queue 0%]

A stage under the CPU budget adds how many workers run now ("2 workers auto").

Every count, word and note comes from `figures`; this module only draws.
An ``unbatch`` stage's bar counts the items it emitted, as the table does.
tqdm is imported here only, and this module only when a tqdm view is made.
Bars are fed the stage's finished count as deltas and run on the stage's
own clock (``StageStats.elapsed``), so tqdm's smoothed rate and ETA apply
while its elapsed time and final average rate are the stats' figures. They
redraw on every observer tick (the engine already throttles ticks to ~5 a
second, so ``mininterval=0`` costs nothing more).
"""

from __future__ import annotations

from typing import Any, TextIO

from .._core.stats import FlowStats
from .figures import bottleneck, progress_count, progress_total, stage_notes, stage_tone, summary

__all__ = ["TqdmObserver"]

# tqdm's colour for a stage that finished with failed or skipped items
# (the warning tone of the panel's "done · 8 errors"); a failed one is red.
_COLOURS = {"failed": "red", "warn": "yellow"}
# A fixed bar width keeps the stacked bars aligned whatever each postfix says.
_BAR_FORMAT = "{l_bar}{bar:20}{r_bar}"  # a longer message would squeeze the bar; summary() has it whole


class TqdmObserver:
    """Show one tqdm bar per stage; on failure the failing stage's bar turns red and stays."""

    def __init__(
        self,
        *,
        file: TextIO | None = None,
        print_summary: bool = False,
        tqdm_class: Any = None,
    ) -> None:
        self.file = file
        self.print_summary = print_summary
        self.tqdm_class = tqdm_class
        self.bars: list[Any] = []
        self._clocks: list[list[float]] = []

    def open(self, stats: FlowStats) -> None:
        cls = self.tqdm_class
        if cls is None:
            # tqdm.auto: text bars in a terminal, tqdm's own widget bars if
            # someone asks for "tqdm" inside a notebook.
            from tqdm.auto import tqdm as auto_tqdm

            cls = auto_tqdm
        width = max((len(s.name) for s in stats.stages), default=0)
        self.bars = []
        self._clocks = []
        for i, s in enumerate(stats.stages):
            total = progress_total(s)
            bar = cls(
                total=total,
                desc=s.name.ljust(width),
                position=i,
                leave=True,  # final figures stay on screen, a failed bar too
                unit="it",
                bar_format=_BAR_FORMAT if total is not None else None,
                dynamic_ncols=True,
                mininterval=0,
                smoothing=0.3,
                file=self.file,
            )
            # Run the bar on the stage's own clock, not the wall clock, so
            # its elapsed, rate and ETA are the stats' figures ("one stats
            # model, the same numbers everywhere"): a delayed view opens a
            # second into the run, and a finished stage's clock stops while
            # the flow goes on. tqdm reads time only through `_time`.
            clock = [s.elapsed]
            bar._time = lambda clock=clock: clock[0]
            bar.start_t = 0.0
            bar.last_print_t = s.elapsed
            # Set what is already done directly: through update() it would
            # count as one huge step in tqdm's smoothed rate.
            bar.n = bar.last_print_n = progress_count(s)
            self.bars.append(bar)
            self._clocks.append(clock)
        self._draw(stats)

    def update(self, stats: FlowStats) -> None:
        self._draw(stats)

    def close(self, stats: FlowStats) -> None:
        self._draw(stats)
        # Close in position order: each closing bar redraws on the cursor's
        # line and moves down one, which is exactly where the next bar sits.
        for bar in self.bars:
            bar.close()
        if self.print_summary:
            file = self.file
            if file is None:
                import sys

                file = sys.stderr
            print(summary(stats), file=file, flush=True)

    def _draw(self, stats: FlowStats) -> None:
        slow = bottleneck(stats)
        # strict=False: a plan never changes its stages mid-run, but a view
        # must not raise if a record ever holds more or fewer.
        for bar, clock, stage in zip(self.bars, self._clocks, stats.stages, strict=False):
            clock[0] = stage.elapsed
            total = progress_total(stage)
            if total is not None and bar.total != total:
                bar.total = total
                bar.bar_format = _BAR_FORMAT
            colour = _COLOURS.get(stage_tone(stage))
            if colour is not None:
                bar.colour = colour
            bar.set_postfix_str(", ".join(stage_notes(stage, stage is slow)), refresh=False)
            delta = progress_count(stage) - bar.n
            if delta > 0:
                bar.update(delta)  # redraws: mininterval is 0
            else:
                bar.refresh()

    def __repr__(self) -> str:
        return f"TqdmObserver(bars={len(self.bars)})"
