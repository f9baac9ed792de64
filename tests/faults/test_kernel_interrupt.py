"""A kernel interrupt over shared arrays leaves nothing in /dev/shm (issue 25 point 4).

    cell 1: for _ in ezflow.imap(work_arr, arrays...)   nbclient interrupts it after 3 s
            (the loop variable `_` still holds a result array viewing a segment)
    cell 2: ezflow.shutdown()                            no segment of the kernel, and no
                                                         liveness lock, is left; `_` still reads
"""

from __future__ import annotations

import pytest

from ._kernel import REPO

_SETUP = """
import os, time, numpy as np, ezflow

def work_arr(a):
    return a * 2

def mine():
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"ezf_{os.getpid()}_"))
"""

_LOOP = """
for _ in ezflow.imap(work_arr, (np.ones((1024, 1024)) for _ in range(10**6)), workers=2):
    pass
"""

_AFTER = """
held = _  # the last result the loop gave: a view of a segment made for this kernel
ezflow.shutdown()
deadline = time.monotonic() + 5
while mine() and time.monotonic() < deadline:
    time.sleep(0.05)
print("left", mine())
print("held", float(held.sum()))
again = ezflow.map(work_arr, [held], workers=1, progress=False)  # its name is gone: its data travels
print("again", float(again[0].sum()))
del held, again, _
ezflow.shutdown()
print("end", mine())
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_interrupted_cell_then_shutdown_leaves_nothing_in_dev_shm() -> None:
    pytest.importorskip("numpy")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from ._kernel import release

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (_SETUP, _LOOP, _AFTER)]
    # only the loop gets 3 s: nbclient then interrupts the kernel, as the Interrupt button does
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO)}},
        timeout=120,
        timeout_func=lambda cell: 3 if cell.source == _LOOP else 120,
        interrupt_on_timeout=True,
        allow_errors=True,
    )
    try:
        client.execute()
    finally:
        if client.km is not None:
            release(client.km)
    loop_out = nb.cells[1].outputs
    assert any(o.get("ename") == "KeyboardInterrupt" for o in loop_out), loop_out
    text = "".join(o.get("text", "") for o in nb.cells[2].outputs if o.get("output_type") == "stream")
    errors = [o for o in nb.cells[2].outputs if o.get("output_type") == "error"]
    assert not errors, errors
    assert "left []" in text, text
    assert f"held {2.0 * (1 << 20)}" in text, text
    assert f"again {4.0 * (1 << 20)}" in text, text
    assert "end []" in text, text
