"""Read the user's source into chunks without holding items back.

    list / tuple / range  --slices-->  chunks          (no extra thread)
    any other iterable    --reader thread--> buffer --take(n, max_wait)--> chunks

A generator may pause (a crawler waiting on the network, a camera): the
reader thread sits in ``next()`` while the chunker hands on what it already
has after `max_wait`, so items that arrived never wait for the ones that
have not. The reader stops reading while its buffer is full: an endless
source is read only as fast as the flow consumes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["ChunkReader"]


class ChunkReader:
    """Hand out the source's items in lists of up to n."""

    def __init__(self, source: Iterable[Any]) -> None:
        self._seq = source if isinstance(source, (list, tuple, range)) else None
        # a Feed hands out what waits in one call: no reader thread, no wait to fill a chunk. Known by
        # its flag, not its class: importing feed.py here would load it for every plain map
        self._feed: Any = source if getattr(source, "HANDS_OUT_WAITING", False) is True else None
        self._pos = 0
        self._it = None if self._seq is not None or self._feed is not None else iter(source)
        self._buf: list = []
        self._first_at = 0.0
        self._want = 1
        self._ended = False
        self._cancelled = False
        self._error: BaseException | None = None
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def take(self, n: int, max_wait: float) -> list:
        """Return up to n items (fewer if the source pauses); [] at the end.

        Raises:
            the source's own exception, once the items before it are out.
        """
        if self._seq is not None:
            out = self._seq[self._pos : self._pos + n]
            if not isinstance(out, list):  # a list's slice is already a new list: copying it again cost W1 ~5%
                out = list(out)
            self._pos += len(out)
            return out
        if self._feed is not None:
            return self._feed.take(n)
        if self._thread is None:
            self._thread = threading.Thread(target=self._read, name="ezflow-source-reader", daemon=True)
            self._thread.start()
        with self._cond:
            self._want = n
            self._cond.notify_all()
            while len(self._buf) < n and not self._ended and not self._cancelled:
                if self._buf:
                    left = self._first_at + max_wait - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                else:
                    self._cond.wait()
            out = self._buf[:n]
            del self._buf[:n]
            if self._buf:
                self._first_at = time.monotonic()
            self._cond.notify_all()
            if not out and self._error is not None:
                raise self._error
            return out

    def _read(self) -> None:
        cond = self._cond
        buf = self._buf
        try:
            for item in self._it:  # type: ignore[union-attr]
                with cond:
                    while len(buf) >= self._want and not self._cancelled:
                        cond.wait()
                    if self._cancelled:
                        return
                    buf.append(item)
                    if len(buf) == 1:
                        self._first_at = time.monotonic()
                        cond.notify_all()
                    elif len(buf) >= self._want:
                        cond.notify_all()
        except BaseException as exc:
            self._error = exc
        finally:
            with cond:
                self._ended = True
                cond.notify_all()

    def cancel(self) -> None:
        """Stop reading (a reader stuck inside the user's next() is left as a daemon)."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()
