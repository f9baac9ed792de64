"""The notebook panel's colours: JupyterLab's theme variables, each with a fallback.

Every colour the panel draws is a ``--jp-*`` variable, so the same HTML
reads on JupyterLab's light and dark themes (and on Notebook 7, which
shares them); the fallback after the comma is for hosts without them
(VS Code, Colab, nbconvert's HTML). Tints are the tone mixed with
transparency (``color-mix``), so they darken a dark page and lighten a
light one; where ``color-mix`` is unknown the tint is simply not drawn.
"""

from __future__ import annotations

import html

__all__ = [
    "AMBER",
    "FAILED",
    "FG",
    "INVERSE",
    "MONO",
    "MUTED",
    "NEUTRAL",
    "RULE",
    "SURFACE",
    "TONE_COLOURS",
    "TONE_MARKS",
    "TRACK",
    "e",
    "tint",
]

AMBER = "var(--jp-warn-color1, #e08a00)"
FG = "var(--jp-ui-font-color1, #1f1f1f)"
MUTED = "var(--jp-ui-font-color2, #6b6b6b)"
RULE = "var(--jp-border-color2, #e3e3e3)"
TRACK = "var(--jp-layout-color2, #ececec)"
NEUTRAL = "var(--jp-layout-color4, #7f8c9a)"  # a bar that says nothing is wrong (a queue not yet full)
INVERSE = "var(--jp-ui-inverse-font-color1, #fff)"  # text on a tone-coloured badge
MONO = "var(--jp-code-font-family, monospace)"
SURFACE = "var(--jp-layout-color1, #fff)"

# Keyed by tone (`figures.outcome`, `figures.stage_tone`): a run or stage
# that finished with failed items is "warn", amber, never the green of "ok".
TONE_COLOURS = {
    "pending": "var(--jp-ui-font-color3, #8a8a8a)",
    "running": "var(--jp-brand-color1, #2f80ed)",
    "ok": "var(--jp-success-color1, #1e9e5a)",
    "done": "var(--jp-success-color1, #1e9e5a)",
    "warn": "var(--jp-warn-color0, #c77700)",
    "failed": "var(--jp-error-color1, #d64541)",
    "cancelled": "var(--jp-warn-color2, #b7791f)",
}
TONE_MARKS = {"pending": "○", "running": "●", "ok": "✓", "done": "✓", "warn": "▲", "failed": "✖", "cancelled": "■"}
FAILED = TONE_COLOURS["failed"]


def tint(colour: str, percent: int) -> str:
    """Return `colour` at `percent` strength over whatever is behind it (a CSS colour value)."""
    return f"color-mix(in srgb, {colour} {percent}%, transparent)"


def e(text: object) -> str:
    """Escape `text` for HTML text and attribute values."""
    return html.escape(str(text), quote=True)
