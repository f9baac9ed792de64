"""The broker: one thread in the owner reads every worker's pipe at once and serves their PUTs and GETs."""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from multiprocessing.connection import wait
from typing import Any

from .._core.forks import at_fork
from .._core.procs import close_end
from .channel import _Channel
from .msg import _COUNT, _DONE, _EMPTY, _ERROR, _GET, _HEAD, _ITEM, _PUT, _SIZE, _TIMEOUT, _frame
from .state import R, _purge_orphans, _QState, _Waiter


class _Broker:
    """One thread per owner process serving all its Qs to all its workers."""

    _instance: _Broker | None = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> _Broker:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    @classmethod
    def poke(cls, state: _QState) -> None:
        broker = cls._instance
        if broker is not None:
            with broker._mutex:
                broker._dirty.add(state)
            broker._wake()

    @classmethod
    def busy(cls) -> bool:
        broker = cls._instance
        return broker is not None and bool(broker._channels)

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._channels: list[_Channel] = []
        self._dirty: set[_QState] = set()
        self._timers: list[tuple[float, int, _QState, _Waiter]] = []
        self._seq = itertools.count()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._serve, name="ezflow-q-broker", daemon=True)
        self._thread.start()

    def add(self, channel: _Channel) -> None:
        with self._mutex:
            self._channels.append(channel)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:  # already full of wake-ups: one is enough
            pass

    def _serve(self) -> None:
        while True:
            try:
                self._round()
            except Exception:  # a bug here must not stall every worker silently
                import traceback

                traceback.print_exc()
                time.sleep(0.1)

    def _round(self) -> None:
        with self._mutex:
            channels = list(self._channels)
            dirty, self._dirty = self._dirty, set()
        for state in dirty:
            self._dispatch(state)
        timeout = self._expire()
        conns = {ch.conn: ch for ch in channels if not ch.eof}
        sentinels = {ch.sentinel: ch for ch in channels}
        ready = set(wait([self._wake_r, *conns, *sentinels], timeout))
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        for conn, ch in conns.items():
            if conn in ready:
                self._read(ch, limit=64)
        for fd, ch in sentinels.items():
            if fd in ready:
                self._finish(ch)

    def _read(self, ch: _Channel, limit: int | None) -> None:
        # limit: at most this many messages, so one busy worker cannot starve the rest
        count = 0
        try:
            while limit is None or count < limit:
                self._handle(ch, ch.conn.recv_bytes())
                count += 1
                if not ch.conn.poll():
                    return
        except (EOFError, OSError):
            ch.eof = True

    def _handle(self, ch: _Channel, data: bytes) -> None:
        view = memoryview(data)
        op, req, qid = _HEAD.unpack_from(view)
        body = view[_HEAD.size :]
        if op == _PUT:
            state = R.states.get(qid)
            if state is not None:
                with state.cond:
                    state.items.append(body)
                    state.cond.notify()
                self._dispatch(state)
        elif op == _GET:
            self._get(ch, req, qid, _TIMEOUT.unpack_from(body)[0])
        elif op == _SIZE:
            state = R.states.get(qid)
            self._send(ch, _frame(_ITEM, req, qid, _COUNT.pack(0 if state is None else len(state.items))))
        elif op == _DONE:
            ch.done = ch.closed = True
            ch.error = bytes(body)

    def _get(self, ch: _Channel, req: int, qid: int, timeout: float) -> None:
        state = R.states.get(qid)
        if state is None:
            msg = f"Q {qid} does not exist in its owner process {os.getpid()} any more"
            self._send(ch, _frame(_ERROR, req, qid, msg.encode()))
            return
        with state.cond:
            if state.items:
                raw = state.items.popleft()
            elif timeout == 0:
                raw = None
            else:
                waiter = _Waiter(ch, req)
                state.waiters.append(waiter)
                if timeout > 0:
                    deadline = time.monotonic() + timeout
                    heapq.heappush(self._timers, (deadline, next(self._seq), state, waiter))
                return
        if raw is None:
            self._send(ch, _frame(_EMPTY, req, qid))
        elif not self._send(ch, _frame(_ITEM, req, qid, raw)):
            self._give_back(state, raw)

    def _dispatch(self, state: _QState) -> None:
        # hand waiting messages to waiting workers, oldest first
        while True:
            with state.cond:
                if not state.items or not state.waiters:
                    return
                waiter = state.waiters.popleft()
                if waiter.done or waiter.channel.closed:
                    continue
                waiter.done = True
                raw = state.items.popleft()
            if not self._send(waiter.channel, _frame(_ITEM, waiter.req, state.qid, raw)):
                self._give_back(state, raw)

    def _give_back(self, state: _QState, raw: Any) -> None:
        # the worker died before it got the message: keep it for the others
        with state.cond:
            state.items.appendleft(raw)
            state.cond.notify()

    def _expire(self) -> float | None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, state, waiter = heapq.heappop(self._timers)
            with state.cond:
                if waiter.done:
                    continue
                waiter.done = True
                try:
                    state.waiters.remove(waiter)
                except ValueError:
                    pass
            self._send(waiter.channel, _frame(_EMPTY, waiter.req, state.qid))
        return max(0.0, self._timers[0][0] - now) if self._timers else None

    def _send(self, ch: _Channel, frame: bytes) -> bool:
        if ch.closed:
            return False
        try:
            ch.conn.send_bytes(frame)
            return True
        except OSError:
            ch.closed = True
            return False

    def _finish(self, ch: _Channel) -> None:
        # The process has exited: whatever it wrote is in the pipe now.
        if not ch.eof:
            self._read(ch, limit=None)
        ch.eof = ch.closed = True
        with self._mutex:
            self._channels.remove(ch)
            idle = not self._channels
        close_end(ch.conn)
        ch.finished.set()
        if idle:
            _purge_orphans()



def _after_fork_in_child() -> None:
    broker = _Broker._instance
    if broker is not None:  # the broker thread did not survive the fork
        for fd in (broker._wake_r, broker._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
    _Broker._instance = None
    _Broker._lock = threading.Lock()


R.poke = _Broker.poke
R.busy = _Broker.busy
at_fork(after_in_child=_after_fork_in_child)
