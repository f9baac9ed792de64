"""Segments a worker made for its parent: who must unlink each one, under one lock.

    made (share() in a worker) -> "mine"  --pickled into a result--> "pending"
    "pending" --the result was sent--> "given" (the parent owns it now)
              --the attempt was dropped--> "mine" again
    the last view here dies: "mine" -> unlinked now; "pending" -> "dead" (the attempt's end unlinks it
                             unless it was sent); "given" -> forgotten

Every change goes through one method under ``_lock``. The finalizer of a
mapping (`unmapped`) may run inside the garbage collector on a thread that
holds the lock already, so it never waits: when the lock is taken it leaves
the name in a deque, and whoever takes the lock next applies it (and says
which names to unlink). The lock is a leaf: nothing is taken while holding it.
"""

from __future__ import annotations

import collections
import threading

__all__ = ["Provisional"]

MINE = "mine"
PENDING = "pending"
GIVEN = "given"
DEAD = "dead"


class Provisional:
    """The segments made in this process for another owner, and their states."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, str] = {}
        self._unmapped: collections.deque[str] = collections.deque()  # finalizers that found the lock taken

    def __contains__(self, name: object) -> bool:
        return name in self._state  # one dict lookup: atomic

    def made(self, name: str) -> None:
        """A segment made here for our owner: ours to unlink until it is sent."""
        with self._lock:
            self._state[name] = MINE

    def forget(self, name: str) -> None:
        """Drop a name (the caller unlinks the segment)."""
        with self._lock:
            self._state.pop(name, None)

    def sending(self, name: str) -> bool:
        """A result being pickled carries this segment: True if it is ours to hand over."""
        with self._lock:
            if self._state.get(name) == MINE:
                self._state[name] = PENDING
                return True
            return False

    def dropped(self, names: list[str]) -> list[str]:
        """The pickling attempt that carried these was dropped; return the names to unlink now."""
        with self._lock:
            out = self._settle()
            for name in names:
                state = self._state.get(name)
                if state == DEAD:
                    del self._state[name]
                    out.append(name)
                elif state == PENDING:
                    self._state[name] = MINE
            return out

    def sent(self, names: list[str]) -> list[str]:
        """These went to our owner, who owns them now; return the names to unlink now."""
        with self._lock:
            out = self._settle()
            for name in names:
                state = self._state.get(name)
                if state == DEAD:
                    del self._state[name]
                elif state is not None:
                    self._state[name] = GIVEN
            return out

    def unmapped(self, name: str) -> tuple[bool, bool]:
        """The last view here is gone (a finalizer: never waits): return (unlink it now, the owner has it).

        When another thread, or this one further up, holds the lock, the
        change waits in a deque and the answer is (False, False): keep
        nothing; the next call that takes the lock applies it and returns
        the name to unlink (`dropped`, `sent`, `take_unlinks`, `take_all`).
        """
        if not self._lock.acquire(blocking=False):
            self._unmapped.append(name)
            return False, False
        try:
            state = self._state.get(name)
            return self._apply(name), state == GIVEN
        finally:
            self._lock.release()

    def take_unlinks(self) -> list[str]:
        """The names that deferred finalizers left to unlink."""
        with self._lock:
            return self._settle()

    def holding(self) -> bool:
        """True while some segment made here may still be ours to unlink."""
        with self._lock:
            return bool(self._unmapped) or any(s in (MINE, PENDING) for s in self._state.values())

    def take_all(self) -> list[str]:
        """Forget everything; return the names this process must unlink (exit)."""
        with self._lock:
            out = self._settle()
            out += [n for n, s in self._state.items() if s in (MINE, DEAD, PENDING)]
            self._state.clear()
            return out

    def _apply(self, name: str) -> bool:
        state = self._state.get(name)
        if state == MINE:
            del self._state[name]
            return True
        if state == PENDING:
            self._state[name] = DEAD
        elif state == GIVEN:
            del self._state[name]
        return False

    def _settle(self) -> list[str]:
        # holding _lock: apply what finalizers left, and hand back what is to unlink
        out = []
        while self._unmapped:
            name = self._unmapped.popleft()
            if self._apply(name):
                out.append(name)
        return out
