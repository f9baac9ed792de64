"""The panel's notes around the table: the footer lines, and the marks of a stage under the CPU budget."""

from __future__ import annotations

from .._core.stats import FlowStats, StageStats
from .figures import BUDGET_WORDS, losses
from .theme import AMBER as _AMBER
from .theme import FAILED as _FAILED
from .theme import MUTED as _MUTED
from .theme import TONE_COLOURS as _TONE_COLOURS
from .theme import e as _e

__all__ = ["BUDGET_MARK", "budget_title", "footer"]


def footer(stats: FlowStats, slow: StageStats | None, word: str) -> str:
    lines = []
    if stats.state == "failed":
        failed = [s for s in stats.stages if s.state == "failed"]
        where = f"stage <b>{_e(failed[0].name)}</b> failed" if failed else "the run failed"
        why = stats.error or (failed[0].error if failed else None) or ""
        lines.append(
            f'<div style="color:{_FAILED};margin-top:6px;">✖ {where}'
            f"{': ' + _e(why) if why and not failed else ''}</div>"
        )
        if failed and stats.error and failed[0].error and failed[0].error not in stats.error:
            lines.append(f'<div style="color:{_FAILED};">{_e(stats.error)}</div>')
    elif stats.state == "cancelled":
        what = "stopped with the Stop button" if word == "stopped" else "cancelled"
        lines.append(f'<div style="color:{_TONE_COLOURS["cancelled"]};margin-top:6px;">■ {what}</div>')
    elif stats.state == "done":
        for name, words in losses(stats):
            lines.append(
                f'<div style="color:{_TONE_COLOURS["warn"]};margin-top:6px;">▲ <b>{_e(name)}</b>: {_e(words)}</div>'
            )
    if slow is not None and stats.state in ("running", "done", "cancelled"):
        queue = ", input queue full" if slow.queue_fill >= 0.8 else ""
        lines.append(
            f'<div style="color:{_MUTED};margin-top:6px;font-size:12px;">'
            f'<span style="color:{_AMBER};">▲</span> bottleneck: <b>{_e(slow.name)}</b> '
            f"(busy {slow.busy:.0%}{queue}) — {_advice(slow)}</div>"
        )
    return "".join(lines)


def _advice(slow: StageStats) -> str:
    if slow.auto_workers:
        return f"the CPU budget gives it workers as it needs them ({slow.workers} now)"
    return "more workers there may speed up the flow"


# A stage whose worker count follows the CPU budget: the count is underlined, the tooltip says why
# (the text views add the word "auto"; here it would widen the table past a notebook's width).
BUDGET_MARK = "text-decoration:underline dotted;text-underline-offset:3px;cursor:help;"


def budget_title(s: StageStats) -> str:
    """A tooltip for a stage whose workers follow the flow's CPU budget ("" for the others)."""
    if not s.auto_workers:
        return ""
    return f' title="auto: {s.workers} running now. {BUDGET_WORDS[:1].upper()}{BUDGET_WORDS[1:]}"'
