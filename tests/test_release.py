"""A release that installs clean: SPDX metadata, a changelog entry, a wheel that works on its own.

    pyproject.toml --tomllib--> license "MIT" (SPDX), license-files, setuptools >= 77
    CHANGELOG.md   --has-->     a section for ezflow.__version__
    python -m build --> dist/ezflow-V.tar.gz + ezflow-V-py3-none-any.whl --twine check--> PASSED
        --pip install the wheel into a fresh venv--> `ezflow.map` runs from the venv's copy,
          not from this source tree (the import's __file__ is under the venv)

The venv sees the system's site-packages (--system-site-packages) so that the
dependencies need no download; the wheel itself is installed with --no-index and
--force-reinstall, and the check runs outside the repository with PYTHONPATH cleared.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import ezflow

ROOT = Path(__file__).resolve().parent.parent


def test_metadata_uses_an_spdx_license_and_a_recent_setuptools():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"
    assert meta["project"]["license-files"] == ["LICENSE"] and (ROOT / "LICENSE").is_file()
    assert not any(c.startswith("License ::") for c in meta["project"].get("classifiers", []))  # PEP 639
    requires = meta["build-system"]["requires"]
    assert any(re.fullmatch(r"setuptools>=(\d+)", r) and int(r.split(">=")[1]) >= 77 for r in requires), requires
    assert meta["project"]["version"] == ezflow.__version__


def test_changelog_has_this_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(ezflow.__version__)}\]", text, flags=re.M), "CHANGELOG.md: add this version"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_ROOT_USER_ACTION": "ignore"}


def _run(cmd: list[str], cwd: Path, timeout: float = 400) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_built_wheel_installs_in_a_fresh_venv_and_maps(tmp_path: Path):
    pytest.importorskip("build", reason='building needs the test extra: pip install -e ".[test]"')
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], cwd=tmp_path, timeout=800)
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    _run([sys.executable, "-m", "twine", "check", "--strict", *map(str, wheels + sdists)], cwd=tmp_path)

    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "ezflow/py.typed" in names and "ezflow/_views/panel.py" in names
    assert not [n for n in names if n.startswith(("tests/", "docs/", "bench/"))], names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheels[0]).read(metadata).decode()
    assert "License-Expression: MIT" in text, text[:800]

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--force-reinstall", str(wheels[0])], cwd=tmp_path)
    # the wheel's dependencies are satisfied (pip check also reports the system's own conflicts)
    check = subprocess.run([str(py), "-m", "pip", "check"], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert not [line for line in check.stdout.splitlines() if line.lower().startswith("ezflow ")], check.stdout
    out = _run(
        [
            str(py),
            "-c",
            "import ezflow\n"
            "print(ezflow.__file__)\n"
            "print(ezflow.map(lambda x: x * x, range(10), workers=2))\n"
            "print(ezflow.map(abs, [-1, -2], mode='thread'))\n",
        ],
        cwd=tmp_path,
        timeout=120,
    )
    where, squares, absolutes = out.splitlines()[-3:]
    assert Path(where).resolve().is_relative_to(venv.resolve()), f"imported {where}, not the wheel in {venv}"
    assert squares == str([x * x for x in range(10)]) and absolutes == "[1, 2]"
