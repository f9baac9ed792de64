"""What the parent reads about processes and the machine: /proc on Linux, psutil elsewhere.

    recycle (memory guard, stats)  memory_meter(): a worker's RSS, the machine's available memory
    elastic / budget (CPU budget)  proc_sched_seconds(pid): CPU time and time waiting for a core;
                                   proc_cpu_seconds(pid), machine_idle_seconds() where that is missing

Reading /proc takes a small file read where importing psutil took several
ms of a cold ``ezflow.map`` (W5); psutil stays the fallback where /proc
does not have the figures.
"""

from __future__ import annotations

import os
import time
from typing import Any

__all__ = [
    "Meter",
    "ProcMeter",
    "PsutilMeter",
    "available",
    "machine_idle_seconds",
    "memory_meter",
    "proc_cpu_seconds",
    "proc_sched_seconds",
]

AVAILABLE_SECONDS = 0.05

try:
    _TICKS = float(os.sysconf("SC_CLK_TCK"))
except (AttributeError, ValueError, OSError):  # not a POSIX system: no /proc either
    _TICKS = 0.0


def proc_cpu_seconds(pid: int) -> float | None:
    """Return the user + system CPU seconds process `pid` used (None: unknown, or not Linux)."""
    if not _TICKS:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: the fields start after the last ")"
    fields = data[data.rindex(b")") + 2 :].split()
    try:
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (IndexError, ValueError):
        return None


def proc_sched_seconds(pid: int) -> tuple[float, float] | None:
    """Return the seconds process `pid` ran on a CPU and waited for one (None: no /proc/<pid>/schedstat).

    The scheduler's own counts (ns): a worker inside an item that neither ran
    nor waited for a core was waiting on something else (a file, a socket,
    a sleep), whatever the machine's load.
    """
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            ran, waited = f.read().split()[:2]
        return int(ran) / 1e9, int(waited) / 1e9
    except (OSError, ValueError):
        return None


def machine_idle_seconds() -> float | None:
    """Return the CPU seconds every CPU of this machine spent idle since boot (None: not Linux)."""
    if not _TICKS:
        return None
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
        return (int(fields[4]) + int(fields[5])) / _TICKS  # idle + iowait
    except (OSError, IndexError, ValueError):
        return None


class ProcMeter:
    """Worker RSS and the machine's available memory from /proc: the files psutil reads on Linux.

    The same figures without importing psutil, which took several ms of a
    cold ``ezflow.map`` (W5) while a plain map only needs two file reads:
    RSS is /proc/<pid>/status's VmRSS less RssShmem, available memory is
    /proc/meminfo's MemAvailable (kB).
    """

    def __init__(self) -> None:
        self._avail = 0
        self._avail_at = -1e9

    def handle(self, pid: int) -> Any:
        return f"/proc/{pid}/status"

    def rss(self, handle: Any) -> int:
        """Return the resident memory less shared-memory pages (RssShmem); raises OSError once the process is gone.

        The flow's /dev/shm segments are counted once, by their owner: a worker
        keeps mappings of them between items (up to 1 GiB), and viewing them is
        not memory the worker grew.
        """
        with open(handle, "rb") as f:
            text = f.read()
        rss = _kib(text, b"\nVmRSS:")
        if rss is None:
            raise OSError(f"no VmRSS in {handle}: the process is gone")
        return rss - (_kib(text, b"\nRssShmem:") or 0)

    def available(self) -> int:
        """The machine's available memory; read at most every `AVAILABLE_SECONDS` (a run's start asks per worker)."""
        now = time.monotonic()
        if now - self._avail_at > AVAILABLE_SECONDS:
            with open("/proc/meminfo", "rb") as f:
                got = _kib(f.read(), b"\nMemAvailable:")
            if got is None:
                raise ValueError("no MemAvailable in /proc/meminfo")
            self._avail, self._avail_at = got, now
        return self._avail


def _kib(text: bytes, key: bytes) -> int | None:
    """The ``kB`` figure after `key` in a /proc file, in bytes (None: not there)."""
    at = text.find(key)
    if at < 0:
        return None
    return int(text[at + len(key) : text.index(b"kB", at)]) * 1024


class PsutilMeter:
    """The same figures through psutil, where /proc does not have them."""

    def __init__(self, psutil: Any) -> None:
        self.ps = psutil

    def handle(self, pid: int) -> Any:
        try:
            return self.ps.Process(pid)
        except self.ps.Error as exc:
            raise OSError(str(exc)) from exc

    def rss(self, handle: Any) -> int:
        """Raises OSError once the process is gone."""
        try:
            return int(handle.memory_info().rss)
        except self.ps.Error as exc:
            raise OSError(str(exc)) from exc

    def available(self) -> int:
        return int(self.ps.virtual_memory().available)


Meter = ProcMeter | PsutilMeter  # what measures workers here


def memory_meter() -> Meter | None:
    """What measures workers here; None without /proc's figures or psutil."""
    try:
        proc = ProcMeter()
        proc.rss(proc.handle(os.getpid()))
        proc.available()
        return proc
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil
    except ImportError:  # a declared dependency; without it only the memory guard is unavailable
        return None
    return PsutilMeter(psutil)


def available(meter: Meter | None) -> int:
    """The machine's available memory in bytes (-1: unknown)."""
    if meter is None:
        return -1
    try:
        return meter.available()
    except Exception:
        return -1
