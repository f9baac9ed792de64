"""A real Jupyter kernel for fault tests: start it, run a cell without waiting, learn its pid."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def kernel() -> Iterator[tuple[Any, Any]]:
    """Yield (manager, client) of a fresh python3 kernel in the repo; kill it at the end."""
    jc = pytest.importorskip("jupyter_client")
    km = jc.KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(REPO))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        yield km, kc
    finally:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=True)
        release(km)


def release(km: Any) -> None:
    """Close the manager's zmq context now (linger 0).

    Left to the garbage collector, ``Context.__del__`` can run inside a later
    test's ``gc.collect()`` and block there in ``term()`` for a socket it no
    longer tracks: that test then hangs until its timeout.
    """
    with contextlib.suppress(Exception):
        km.context.destroy(linger=0)


def start_cell(kc: Any, code: str, timeout: float = 60) -> int:
    """Execute `code` without waiting for it; return the pid it prints as 'kernel pid N'."""
    kc.execute(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except Exception:
            continue
        text = msg["content"].get("text", "") if msg["header"]["msg_type"] == "stream" else ""
        if "kernel pid" in text:
            return int(text.split()[2])
    raise AssertionError("the kernel never printed its pid")
