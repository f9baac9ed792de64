"""The panel's Stop button: a click stops the run through the callable the run handed the view.

    run --bind_stop(stop)--> WidgetObserver --StopButton(stop)--> ipywidgets.Button (class ezflow-stop)
    click (on a kernel subshell's thread) --> a thread of its own calls stop() --> the run ends "cancelled"

The click reaches the kernel while a cell blocks in ``collect()`` only
where the front end sends widget messages on a kernel subshell (JupyterLab
>= 4.4 and Notebook >= 7.4 with ipykernel >= 7, their default); elsewhere
it acts once the kernel is idle, which is enough for ``flow.start()``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import ipywidgets

__all__ = ["StopButton"]


class StopButton:
    """A Stop button that calls `stop` once, off the thread that delivers the click."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop
        self.pressed = False
        self.widget = ipywidgets.Button(
            description="Stop",
            icon="stop",
            tooltip="Stop the run: workers stop, the results delivered so far are kept",
            layout=ipywidgets.Layout(width="auto", align_self="flex-start", margin="2px 0 4px 0"),
        )
        self.widget.add_class("ezflow-stop")
        self.widget.on_click(self.press)

    def press(self, _button: Any = None) -> None:
        """Stop the run (what a click does); later presses do nothing."""
        if self.pressed:
            return
        self.pressed = True
        self.widget.disabled = True
        self.widget.description = "Stopping…"
        # Stopping joins threads and closes this very widget: not on the
        # kernel thread that delivers the click.
        threading.Thread(target=self._stop, name="ezflow-stop", daemon=True).start()

    def shown(self) -> None:
        """Call once the button is displayed: from then on a click may come from any shell."""
        _answer_on_any_shell(self.widget)

    def close(self) -> None:
        self.widget.close()


def _answer_on_any_shell(widget: Any) -> None:
    """Let a click on `widget` run on the kernel subshell it arrives on.

    ipykernel (7.x) routes a comm's incoming messages to the shell that last
    published on it: for a widget made while a cell runs, the main shell,
    which the blocked ``collect()`` holds until the run ends. Forgetting that
    route lets JupyterLab's widget subshell handle the click at once. Nothing
    else publishes on the button until it is clicked.
    """
    comm = getattr(widget, "comm", None)
    lock = getattr(comm, "_reply_subshell_lock", None)
    if lock is None:  # another kernel, or an ipykernel without subshells
        return
    with lock:
        vars(comm).pop("_reply_subshell_id", None)
        getattr(comm, "_reply_subshell_ids", {}).clear()
