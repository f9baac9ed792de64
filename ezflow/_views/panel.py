"""Notebook progress: one live panel per run in the cell's output.

    FlowStats --update()--> WidgetObserver --render_html()--> ipywidgets.HTML.value  (live, <= ~4/s)
                                 |         --Insights.update()--> Accordion under it (panel_details)
                                 |  Stop button --click--> stop() the run bound (bind_stop), on a thread
                                 +--open/close--> display bundle (display_id):
                                                  widget view  + text/html copy + text/plain summary

The panel is a single ``ipywidgets.HTML`` whose value is a table: an HTML
table aligns the columns in every front end, needs no JavaScript of ours,
and its final value lands in the saved widget state. The display bundle
also carries a static HTML copy and a text summary, replaced with the final
figures at ``close``, so a notebook viewed where widgets cannot render
(GitHub, nbviewer without state) still shows how the run went. Under the
table, one section per stage shows its workers, slowest items and failures
(`panel_details`); colours are JupyterLab theme variables (`theme`).

The Stop button (`stop_button`, class ``ezflow-stop``) calls the stop the
run handed over with ``bind_stop``: the run ends as after
``handle.cancel()`` and the panel reads "stopped".

Hooks for tests and users' CSS: the widget has the class ``ezflow-panel``;
the root element has ``data-state``; each stage row has ``data-stage``,
``data-done`` (the stage's `StageStats.done`, in the units it takes:
lists for ``unbatch``), ``data-total``, ``data-state``, ``data-errors`` and
``data-out`` (items emitted). The visible count of an ``unbatch`` stage is its items out.

ipywidgets and IPython are imported here and in `panel_details` only, and only when a
notebook view is made.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ipywidgets
from IPython.display import display

from .._core.stats import FlowStats, StageStats
from .figures import (
    Outcome,
    bottleneck,
    checkpoint_note,
    clock,
    count,
    eta,
    fraction,
    human,
    memory_notes,
    outcome,
    progress_count,
    progress_fraction,
    progress_total,
    rates,
    stage_error,
    stage_tone,
    summary,
    worker_label,
)
from .panel_details import Insights, anchor_of, new_anchor, render_details
from .panel_notes import BUDGET_MARK, budget_title, footer
from .stop_button import StopButton
from .theme import AMBER as _AMBER
from .theme import FAILED as _FAILED
from .theme import FG as _FG
from .theme import INVERSE as _INVERSE
from .theme import MONO as _MONO
from .theme import MUTED as _MUTED
from .theme import NEUTRAL as _NEUTRAL
from .theme import RULE as _RULE
from .theme import SURFACE as _SURFACE
from .theme import TONE_COLOURS as _TONE_COLOURS
from .theme import TONE_MARKS as _TONE_MARKS
from .theme import TRACK as _TRACK
from .theme import e as _e
from .theme import tint as _tint

__all__ = ["WidgetObserver", "render_html"]



class WidgetObserver:
    """Show a run as a live panel in the notebook cell that started it."""

    def __init__(self, *, min_interval: float = 0.25) -> None:
        self.min_interval = min_interval
        self.widget: Any = None
        self.view: Any = None  # the widget shown: the table above the insights sections
        self._handle: Any = None
        self._last_draw = 0.0
        # Per stage, (elapsed, items done) at each draw: the sparkline's data,
        # thinned to at most _SAMPLES points so a long run stays small.
        self.history: dict[str, list[tuple[float, int]]] = {}
        self.anchor = new_anchor()  # ids of this panel's failures lists, which the errors counts link to
        self.insights: Insights | None = None  # per-stage sections under the table (panel_details)
        self._stop: Callable[[], None] | None = None
        self.stopper: StopButton | None = None

    def bind_stop(self, stop: Callable[[], None]) -> None:
        """Take the callable that stops the run: the panel then shows a Stop button."""
        self._stop = stop

    @property
    def stop_button(self) -> Any:
        """The Stop button's widget (None without a run to stop)."""
        return None if self.stopper is None else self.stopper.widget

    @property
    def stopped(self) -> bool:
        """Its Stop button was pressed."""
        return self.stopper is not None and self.stopper.pressed

    def _sample(self, stats: FlowStats) -> None:
        for st in stats.stages:
            points = self.history.setdefault(st.name, [])
            points.append((st.elapsed, progress_count(st)))
            if len(points) > _SAMPLES:
                del points[1:-1:2]  # keep the first and last, halve the rest

    def _render(self, stats: FlowStats) -> str:
        self._sample(stats)
        return render_html(stats, history=self.history, anchor=self.anchor, stopped=self.stopped)

    def open(self, stats: FlowStats) -> None:
        self.widget = ipywidgets.HTML(value=self._render(stats))
        self.widget.add_class("ezflow-panel")
        self.insights = Insights(stats, self.anchor)
        parts = [self.widget]
        if self._stop is not None:
            self.stopper = StopButton(self._stop)
            parts.append(self.stopper.widget)
        self.view = ipywidgets.VBox([*parts, self.insights.widget])
        self._last_draw = time.monotonic()
        self._handle = display(self._bundle(stats), raw=True, display_id=True)
        if self.stopper is not None:
            self.stopper.shown()

    def update(self, stats: FlowStats) -> None:
        now = time.monotonic()
        # Each draw sends the whole table to the browser: a few a second is
        # as fast as anyone reads, whatever rate the engine ticks at.
        if self.widget is None or now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        self._set(self._render(stats))
        if self.insights is not None:
            self.insights.update(stats)

    def close(self, stats: FlowStats) -> None:
        if self.widget is None:
            self.open(stats)
        self._set(self._render(stats))
        if self._handle is not None:
            # The ended run becomes a static view: only text/html and
            # text/plain, no widget view, so a notebook saved and reopened
            # without a kernel, nbconvert and GitHub show the final table
            # instead of "Error displaying widget" or nothing.
            static = render_html(
                stats,
                history=self.history,
                anchor=self.anchor,
                details=render_details(stats, self.anchor),
                stopped=self.stopped,
            )
            self._handle.update({"text/html": static, "text/plain": summary(stats)}, raw=True)
            self.widget.close()  # its model is no longer shown anywhere
            if self.insights is not None:
                self.insights.close()
            if self.stopper is not None:
                self.stopper.close()
            self.view.close()

    def _set(self, value: str) -> None:
        if value != self.widget.value:  # unchanged: send nothing
            self.widget.value = value

    def _bundle(self, stats: FlowStats) -> dict[str, Any]:
        bundle = dict(self.view._repr_mimebundle_())
        bundle["text/html"] = self.widget.value
        bundle["text/plain"] = summary(stats)
        return bundle

    def __repr__(self) -> str:
        return f"WidgetObserver(min_interval={self.min_interval})"


def render_html(
    stats: FlowStats,
    *,
    history: dict[str, list[tuple[float, int]]] | None = None,
    anchor: str | None = None,
    details: str = "",
    stopped: bool = False,
) -> str:
    """Return the panel for ``stats`` as one self-contained HTML fragment (inline styles only).

    ``history`` maps a stage name to (elapsed, items done) samples; with two
    or more rates, the stage's items/s cell carries a sparkline of them.
    ``anchor``: the panel's id prefix; a stage's errors count then links to
    its failures list. ``details``: HTML put under the table (the insights).
    ``stopped``: the panel's Stop button ended the run; it reads "stopped".
    """
    state = stats.state
    result = outcome(stats)
    if stopped and state == "cancelled":
        result = Outcome("stopped", result.tone)
    colour = _TONE_COLOURS.get(result.tone, _MUTED)
    slow = bottleneck(stats)
    history = history or {}
    rows = "".join(
        _row(s, s is slow, _sparkline(rates(history.get(s.name, []))), anchor and anchor_of(anchor, i))
        for i, s in enumerate(stats.stages)
    )
    return (
        f'<div class="ezflow-run" data-state="{_e(state)}" data-outcome="{_e(result.word)}" style="'
        f"font-family:var(--jp-ui-font-family,system-ui,-apple-system,'Segoe UI',sans-serif);"
        f"font-size:13px;line-height:1.45;color:{_FG};"
        f"border:1px solid {_RULE};border-left:4px solid {colour};border-radius:6px;"
        f"padding:8px 12px;margin:2px 0;display:inline-block;min-width:560px;max-width:100%;"
        f"box-sizing:border-box;overflow-x:auto;"
        f'{"background:" + _tint(_FAILED, 6) + ";" if state == "failed" else ""}">'
        f"{_header(stats, result.word, colour)}"
        # JupyterLab's rendered-HTML table rules (fixed layout, right-aligned
        # cells) apply once the run ends as static HTML: override them here.
        f'<table style="border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;'
        f'table-layout:auto;margin-top:6px;">'
        f"<thead>{_head_row()}</thead><tbody>{rows}</tbody></table>"
        f"{footer(stats, slow, result.word)}{details}"
        f"</div>"
    )


def _header(stats: FlowStats, word: str, colour: str) -> str:
    bits = [f"<span>{clock(stats.elapsed)}</span>"]
    frac = fraction(stats)
    if frac is not None:
        bits.append(f"<span>{frac:.0%} done</span>")
    if stats.state == "running":
        left = eta(stats)
        if left is not None:
            bits.append(f"<span>ETA {clock(left)}</span>")
    if stats.total is not None:
        bits.append(f"<span>{count(stats.total)} items</span>")
    note = checkpoint_note(stats)
    if note:
        bits.append(f'<span data-from-checkpoint="{stats.from_checkpoint}">{_e(note)}</span>')
    sep = f'<span style="color:{_MUTED};">·</span>'
    badge = (
        f'<span style="background:{colour};color:{_INVERSE};border-radius:9px;padding:1px 9px;'
        f'font-size:11px;font-weight:600;letter-spacing:0.04em;text-transform:uppercase;">'
        f"{_e(word)}</span>"
    )
    return (
        f'<div style="display:flex;gap:10px;align-items:center;flex-wrap:wrap;">'
        f'<span style="font-weight:700;">ezflow</span>{badge}'
        f'<span style="display:flex;gap:8px;color:{_MUTED};">{sep.join(bits)}</span>'
        f"</div>"
    )


_COLUMNS = (
    # title, alignment, tooltip
    ("stage", "left", ""),
    ("mode", "left", "executor x workers"),
    ("progress", "left", "items finished of items expected"),
    ("done", "right", "items finished / items expected"),
    ("items/s", "right", "average items per second"),
    ("queue", "left", "input queue fill: full means this stage holds the flow back"),
    ("busy", "right", "share of worker time spent computing"),
    ("errors", "right", "failed items (and skipped ones)"),
    ("retries", "right", "extra attempts"),
)


def _head_row() -> str:
    cells = "".join(
        f'<th title="{_e(tip)}" style="text-align:{align};font-weight:600;font-size:11px;'
        f"color:{_MUTED};text-transform:uppercase;letter-spacing:0.04em;"
        f'padding:3px 6px;border-bottom:1px solid {_RULE};white-space:nowrap;">{title}</th>'
        for title, align, tip in _COLUMNS
    )
    return f"<tr>{cells}</tr>"


def _row(s: StageStats, is_slow: bool, spark: str = "", failures_id: str | None = None) -> str:
    tone = stage_tone(s)
    colour = _TONE_COLOURS.get(tone, _MUTED)
    cell = f"padding:4px 6px;border-bottom:1px solid {_RULE};white-space:nowrap;text-align:left;max-width:none;"
    right = cell + "text-align:right;"
    name = f'<span style="color:{colour};font-size:11px;">{_TONE_MARKS.get(tone, "")}</span> <b>{_e(s.name)}</b>'
    if s.kind != "map":
        name += f' <span style="color:{_MUTED};font-size:11px;">{_e(s.kind)}</span>'
    if is_slow:
        name += (
            f' <span title="busiest stage: give it more workers" style="background:{_AMBER};'
            f"color:{_INVERSE};border-radius:8px;padding:0 5px;font-size:9px;font-weight:700;vertical-align:1px;"
            f'text-transform:uppercase;letter-spacing:0.04em;">bottleneck</span>'
        )
    done_n, total_n = progress_count(s), progress_total(s)
    done = count(done_n) + (f'<span style="color:{_MUTED};"> / {count(total_n)}</span>' if total_n else "")
    busy_style = f"font-weight:700;color:{_AMBER};" if is_slow else ""
    errors = str(s.errors) if s.errors else f'<span style="color:{_MUTED};">0</span>'
    if s.errors:
        errors = f'<span style="color:{_FAILED};font-weight:600;">{s.errors}</span>'
    if (s.errors or s.skipped) and failures_id:  # leads to the stage's failures list
        link = f'href="#{_e(failures_id)}" title="the failures, under the table" style="color:inherit;"'
        errors = f"<a {link}>{errors}</a>"
    if s.skipped:
        errors += (
            f'<span title="dropped by errors=&#x27;skip&#x27;" style="color:{_MUTED};font-size:10px;">'
            f" +{s.skipped} skipped</span>"
        )
    retries = str(s.retries) if s.retries else f'<span style="color:{_MUTED};">0</span>'
    row_bg = ""
    if s.state == "failed":
        row_bg = f"background:{_tint(_FAILED, 12)};"
    elif is_slow:
        row_bg = f"background:{_tint(_AMBER, 10)};"
    total = "" if total_n is None else str(total_n)
    html_row = (
        f'<tr data-stage="{_e(s.name)}" data-done="{s.done}" data-total="{total}" '
        f'data-state="{_e(s.state)}" data-errors="{s.errors}" data-out="{s.items_out}" style="{row_bg}">'
        f'<td style="{cell}">{name}</td>'
        f"<td{budget_title(s)} style=\"{cell}color:{_MUTED};{BUDGET_MARK if s.auto_workers else ''}\">"
        f"{_e(worker_label(s, auto=False))}</td>"
        f'<td style="{cell}">{_progress_bar(s, colour)}</td>'
        f'<td style="{right}">{done}</td>'
        f'<td style="{right}">{spark}{human(s.throughput)}</td>'
        f'<td style="{cell}">{_queue_bar(s, is_slow)}</td>'
        f'<td style="{right}{busy_style}">{s.busy:.0%}</td>'
        f'<td style="{right}">{errors}</td>'
        f'<td style="{right}">{retries}</td>'
        f"</tr>"
    )
    notes = memory_notes(s)
    if notes:
        html_row += (
            f'<tr data-memory-of="{_e(s.name)}" style="{row_bg}">'
            f'<td colspan="{len(_COLUMNS)}" style="padding:0 8px 4px 26px;text-align:left;'
            f"color:{_MUTED};font-size:11px;"
            f'border-bottom:1px solid {_RULE};">{_e(" · ".join(notes))}</td></tr>'
        )
    if s.state == "failed" and s.error:
        html_row += (
            f'<tr data-error-of="{_e(s.name)}" style="background:{_tint(_FAILED, 12)};">'
            f'<td colspan="{len(_COLUMNS)}" style="padding:2px 8px 6px 26px;text-align:left;color:{colour};'
            f"border-bottom:1px solid {_RULE};font-family:{_MONO};"
            f'font-size:12px;white-space:pre-wrap;">{_e(stage_error(s))}</td></tr>'
        )
    return html_row


def _progress_bar(s: StageStats, colour: str) -> str:
    frac, style = progress_fraction(s), ""
    if progress_total(s) is None:
        # Unknown total: filled by what came in, so the bar still shows how
        # far this stage lags its input; striped to say it is no percentage.
        style = f"background-image:repeating-linear-gradient(45deg,{_tint(_SURFACE, 35)} 0 6px,transparent 6px 12px);"
    return _bar(frac, colour, width=120, height=8, extra=style)


def _queue_bar(s: StageStats, is_slow: bool) -> str:
    fill = s.queue_fill
    colour = _AMBER if fill >= 0.8 else _NEUTRAL
    label = f'<span style="font-size:11px;color:{_MUTED};margin-left:5px;">{fill:.0%}</span>'
    if is_slow and fill >= 0.8:
        label = f'<span style="font-size:11px;color:{_AMBER};font-weight:700;margin-left:5px;">full</span>'
    return (
        f'<span style="display:inline-flex;align-items:center;">{_bar(fill, colour, width=36, height=6)}{label}</span>'
    )


def _bar(frac: float, colour: str, *, width: int, height: int, extra: str = "") -> str:
    pct = max(0.0, min(1.0, frac)) * 100
    return (
        f'<div style="display:inline-block;vertical-align:middle;width:{width}px;height:{height}px;'
        f'background:{_TRACK};border-radius:{height}px;overflow:hidden;">'
        f'<div style="width:{pct:.1f}%;height:100%;background:{colour};{extra}"></div></div>'
    )


_SAMPLES = 64  # most samples a sparkline keeps per stage


def _sparkline(values: list[float], *, width: int = 48, height: int = 14) -> str:
    """Draw items/s over the run as an inline SVG polyline; "" with fewer than two rates."""
    if len(values) < 2:
        return ""
    top = max(values) or 1.0
    step = width / (len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - 1 - v / top * (height - 2):.1f}" for i, v in enumerate(values))
    return (
        f'<svg class="ezflow-spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'style="vertical-align:middle;margin-right:5px;" aria-label="items/s over the run">'
        f'<polyline points="{points}" fill="none" stroke="var(--jp-brand-color1, #2f80ed)" '
        f'stroke-width="1.2"/></svg>'
    )
