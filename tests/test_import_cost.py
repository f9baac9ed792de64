"""What `import ezflow` and a first plain `ezflow.map` load: a cold start pays for every module (W5).

Each check runs in a fresh interpreter (in this one an earlier test may
have loaded anything). The lists name what must load only where it is used:
optional dependencies, the ezq layer, the views, shared memory's front,
checkpoints, batch stages and the CPU budget of multi-stage flows.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

# never on a plain map: heavy or optional libraries, and the parts of ezflow a plain map does not use
NOT_ON_A_PLAIN_MAP = (
    "numpy",
    "pandas",
    "ipywidgets",
    "IPython",
    "tqdm",
    "dask",
    "distributed",
    "dill",
    "psutil",
    "ezflow._ezq",
    "ezflow._views",
    "ezflow._engine.checkpoint_store",
    "ezflow._engine.checkpoint",
    "ezflow._engine.batch",
    "ezflow._engine.budget",
    "ezflow._engine.feed",
    "ezflow._apply",  # DataFrames: loads with ezflow.apply
    "ctypes",  # a worker's time-limit slot is a heap block read through a memoryview
)
# not at `import ezflow` either: what a first process stage loads
NOT_ON_IMPORT = (*NOT_ON_A_PLAIN_MAP, "ezflow._executors.process", "ezflow._transport.shm", "numbers")


def _loaded(code: str, names: tuple[str, ...]) -> list[str]:
    script = (
        "import sys\n"
        f"{code}\n"
        f"print(sorted(n for n in {names!r} if any(m == n or m.startswith(n + '.') for m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return eval(out.strip().splitlines()[-1])  # a list of str printed by the script above


def test_import_ezflow_loads_no_optional_library_and_no_unused_layer():
    assert _loaded("import ezflow", NOT_ON_IMPORT) == []


def test_a_first_plain_map_loads_only_what_it_uses():
    code = (
        "import ezflow\n"
        "assert ezflow.map(abs, [-1, 2, -3], workers=2, progress=False) == [1, 2, 3]\n"
        "ezflow.shutdown()"
    )
    assert _loaded(code, NOT_ON_A_PLAIN_MAP) == []


def test_lazy_names_still_load_on_first_use():
    code = "import ezflow\nassert issubclass(ezflow.CheckpointError, Exception)\nfrom ezflow import CheckpointError"
    assert _loaded(code, ("ezflow._engine.checkpoint_store",)) == ["ezflow._engine.checkpoint_store"]
