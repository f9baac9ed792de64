"""Warm workers follow `importlib.reload` of a helper module, in a real kernel."""

from __future__ import annotations

import json
import textwrap

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

CELLS = [
    """
    import importlib, os, sys, time, warnings
    sys.path.insert(0, os.getcwd())
    def write(body):
        with open("helper.py", "w") as f:
            f.write(body)
        t = time.time() + 2 * write.n  # a new mtime, whatever the file system's resolution
        write.n += 1
        os.utime("helper.py", (t, t))
    write.n = 1
    write("def f(x):\\n    return x + 1\\n")
    import helper, ezflow
    out = {"first": ezflow.map(helper.f, range(4), workers=2, progress=False, start_method=METHOD)}
    """,
    """
    write("def f(x):\\n    return x * 100\\n")  # edited, not reloaded: the kernel still runs x + 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out["edited"] = ezflow.map(helper.f, range(4), workers=2, progress=False, start_method=METHOD)
    out["edited_kernel"] = [helper.f(x) for x in range(4)]
    out["warned"] = any("not reloaded" in str(w.message) for w in caught)
    """,
    """
    importlib.reload(helper)
    out["reloaded"] = ezflow.map(helper.f, range(4), workers=2, progress=False, start_method=METHOD)
    out["reloaded_kernel"] = [helper.f(x) for x in range(4)]
    import json; print(json.dumps(out))
    """,
]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_reload_reaches_warm_workers(tmp_path, method):
    cells = [textwrap.dedent(c).replace("METHOD", repr(method)) for c in CELLS]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    resources = {"metadata": {"path": str(tmp_path)}}  # helper.py next to the notebook
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3", resources=resources).execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    out = json.loads(text.strip().splitlines()[-1])
    assert out["first"] == [1, 2, 3, 4]
    assert out["edited"] == out["edited_kernel"] == [1, 2, 3, 4]  # warm workers match the kernel
    assert out["warned"]
    assert out["reloaded"] == out["reloaded_kernel"] == [0, 100, 200, 300]
