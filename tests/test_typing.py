"""The typed API, checked by mypy against an installed ezflow, from a directory outside the repo.

    python3 -m venv V   + a .pth line naming the running environment's site-packages (mypy, pip, deps)
    V/bin/python -m pip install --no-deps -e REPO --config-settings editable_mode=compat
    cd TMP && V/bin/python -m mypy --strict tests/typing/check_types.py    -> no error
                                            tests/typing/check_errors.py   -> exactly the marked errors

setuptools' default editable install (PEP 660) is an import hook that type
checkers cannot follow: mypy then says ezflow cannot be found and every
``assert_type`` fails. ``editable_mode=compat`` writes a plain path entry
(a .pth line) that mypy and pyright read: the install command README.md and
.ci/run give.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHECKS = REPO / "tests" / "typing"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("PYTHONPATH", "MYPYPATH", "PYTHONSTARTUP"):
        env.pop(name, None)  # only the install may lead to ezflow
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with ezflow installed from this checkout as README.md says; returns its python.

    mypy, pip and ezflow's dependencies come from the environment running the
    tests (a .pth line naming its site-packages: the .pth files there, such
    as its own ezflow install, are not read), so nothing is downloaded but
    the build backend.
    """
    root = tmp_path_factory.mktemp("typing")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    parent = [p for p in site.getsitepackages() if os.path.isdir(p)]
    Path(purelib, "_parent_env.pth").write_text("\n".join(parent) + "\n")
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
         "--config-settings", "editable_mode=compat", "-e", str(REPO)],
        capture_output=True, text=True, env=_env(), timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return python


def _mypy(python: Path, name: str, where: Path) -> subprocess.CompletedProcess:
    shutil.copy(CHECKS / name, where / name)  # away from the repo: only the install can lead to ezflow
    return subprocess.run(
        [str(python), "-m", "mypy", "--strict", "--python-version", "3.11", "--no-error-summary",
         "--hide-error-context", "--cache-dir", str(where / ".mypy_cache"), name],
        capture_output=True, text=True, cwd=where, env=_env(), timeout=300, check=False,
    )


def test_the_install_is_this_checkout(installed: Path, tmp_path: Path):
    out = subprocess.run(
        [str(installed), "-c", "import ezflow; print(ezflow.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, env=_env(), check=True, timeout=60,
    ).stdout.strip()
    assert Path(out).resolve() == (REPO / "ezflow" / "__init__.py").resolve()


def test_every_public_entry_point_keeps_its_types(installed: Path, tmp_path: Path):
    done = _mypy(installed, "check_types.py", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_mistakes_a_type_checker_catches(installed: Path, tmp_path: Path):
    done = _mypy(installed, "check_errors.py", tmp_path)
    errors: dict[int, list[str]] = {}
    for line in done.stdout.splitlines():
        m = re.match(r"check_errors\.py:(\d+): error: (.*)", line)
        if m:
            errors.setdefault(int(m.group(1)), []).append(m.group(2))
    marked = {}
    for n, text in enumerate((CHECKS / "check_errors.py").read_text().splitlines(), 1):
        if "  # error: " in text:
            marked[n] = text.split("  # error: ", 1)[1]
    assert marked, "check_errors.py lost its marked lines"
    for n, want in marked.items():
        assert any(want in e for e in errors.get(n, [])), f"line {n}: expected {want!r}, got {errors.get(n)}"
    assert set(errors) <= set(marked), f"unexpected errors: { {n: errors[n] for n in set(errors) - set(marked)} }"
