"""SIGTERM cleans up as Ctrl-C does, then ends the process as SIGTERM would.

    docker stop / systemd / a batch scheduler / Jupyter's kernel shutdown
        --SIGTERM--> handler (main thread): every registered clean-up runs
                     (worker processes killed, segments unlinked), then
                     - a handler the user had installed is called, and decides;
                     - otherwise the default action: the process ends by SIGTERM.

Installed only while ezflow holds something (worker processes, segments),
only from the main thread (Python allows no other), never over a SIG_IGN,
and taken down again when ezflow holds nothing, unless someone else has
replaced it since. The layers that hold things register what "holding"
means and how to let go; this module knows nothing of them.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from .forks import at_fork

__all__ = ["arm", "disarm", "register"]

_holders: list[tuple[Callable[[], bool], Callable[[], None]]] = []
_previous: Any = None
_armed_pid = 0


def register(holding: Callable[[], bool], cleanup: Callable[[], None]) -> None:
    """Add a layer: `holding()` says whether it holds anything, `cleanup()` lets go of all of it at once."""
    _holders.append((holding, cleanup))


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def arm() -> None:
    """Install the handler (main thread only; a no-op when it is in place or SIGTERM is ignored)."""
    global _previous, _armed_pid
    if _armed_pid == os.getpid() or not _main_thread():
        return
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is signal.SIG_IGN or current is None:
            return  # ignored on purpose, or set from C: not ours to change
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - not the main interpreter
        return
    _previous, _armed_pid = current, os.getpid()


def disarm() -> None:
    """Put the previous handler back when no layer holds anything (main thread only)."""
    global _previous, _armed_pid
    if _armed_pid != os.getpid() or not _main_thread():
        return
    if any(holding() for holding, _ in _holders):
        return
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:  # else someone replaced ours: leave theirs
            signal.signal(signal.SIGTERM, _previous)
    except (ValueError, OSError):  # pragma: no cover
        return
    _previous, _armed_pid = None, 0


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    previous = _previous
    if _armed_pid == os.getpid():  # a forked child inherits the handler but not what it guards
        for _, cleanup in _holders:
            try:
                cleanup()
            except Exception:  # the process is ending: let go of everything else all the same
                pass
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _after_fork_child() -> None:
    global _previous, _armed_pid
    if _armed_pid and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        try:
            signal.signal(signal.SIGTERM, _previous if _previous is not None else signal.SIG_DFL)
        except (ValueError, OSError):  # pragma: no cover
            pass
    _previous, _armed_pid = None, 0


at_fork(after_in_child=_after_fork_child)
