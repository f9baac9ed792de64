"""Live JupyterLab + headless Chromium for browser tests, offline on 127.0.0.1.

    test --writes--> TMP/NAME.ipynb
         --starts--> python -m jupyterlab (127.0.0.1:PORT, no token, temporary config dirs)
         --drives--> Playwright -> /usr/bin/chromium (Debian's; no downloaded browser)

The recipe (flags, settings that keep popups away, waiting for the kernel
to be idle before Shift+Enter) is in shared/notes/notebook-browser-testing.md.
Everything started here is stopped by its own handle: the kernels through
the server's API, the server by its PID.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_browser(*apps: str) -> None:
    """Skip when Chromium, Playwright or JupyterLab (or `apps`) is missing; under CI=true, fail instead."""
    missing, fixes = [], []
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        missing.append("Chromium")
        fixes.append("sudo bash .ci/install-browser")
    modules = [m for m in ("playwright", "jupyterlab", *apps) if importlib.util.find_spec(m) is None]
    if modules:
        missing += modules
        fixes.append('pip install -e ".[test]"')
    if not missing:
        return
    reason = f"{' and '.join(missing)} not found: {'; '.join(fixes)}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason + " (CI is set: a missing browser is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
        return resp.read()


class Lab:
    """A running JupyterLab server: its URL, root folder and process."""

    def __init__(self, root: Path, port: int, proc: subprocess.Popen, log: Path, app: str = "jupyterlab") -> None:
        self.app = app
        self.root = root
        self.port = port
        self.proc = proc
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def notebook_url(self, name: str) -> str:
        if self.app == "notebook":
            return f"{self.url}/notebooks/{name}"
        return f"{self.url}/lab/tree/{name}?reset"

    def write_notebook(self, name: str, cells: list[str]) -> Path:
        """Write a notebook of code cells into the server's root folder."""
        nb = {
            "cells": [
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "id": f"c{i}",
                    "metadata": {},
                    "outputs": [],
                    "source": src,
                }
                for i, src in enumerate(cells)
            ],
            "metadata": {
                "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        path = self.root / name
        path.write_text(json.dumps(nb, indent=1))
        return path

    def shutdown_kernels(self) -> None:
        """Shut down every kernel this server started (the server's own API)."""
        try:
            kernels = json.loads(_get(f"{self.url}/api/kernels"))
        except OSError:
            return
        for kernel in kernels:
            req = urllib.request.Request(f"{self.url}/api/kernels/{kernel['id']}", method="DELETE")
            try:
                urllib.request.urlopen(req, timeout=10).close()  # noqa: S310 (loopback only)
            except OSError:
                pass

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@contextmanager
def jupyterlab(
    tmp: Path, *, pythonpath: list[str] = (), timeout: float = 40, theme: str | None = None, app: str = "jupyterlab"
) -> Iterator[Lab]:
    """Start JupyterLab on 127.0.0.1 with throwaway config dirs; stop it and its kernels at exit.

    `theme`: a JupyterLab theme name, e.g. "JupyterLab Dark" (default: the light one).
    `app`: "jupyterlab", or "notebook" for Notebook 7 (the classic-looking one, built on JupyterLab).
    """
    root, conf = tmp / "root", tmp / "conf"
    root.mkdir()
    dirs = {name: conf / name for name in ("config", "runtime", "settings", "workspaces")}
    for d in dirs.values():
        d.mkdir(parents=True)
    # Without this, a "news" notification covers the page.
    notify = dirs["settings"] / "@jupyterlab" / "apputils-extension"
    notify.mkdir(parents=True)
    (notify / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True})
    )
    if theme is not None:
        (notify / "themes.jupyterlab-settings").write_text(json.dumps({"theme": theme}))
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        PYTHONPATH=os.pathsep.join([*pythonpath, env.get("PYTHONPATH", "")]).strip(os.pathsep),
    )
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        app,
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--allow-root",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        f"--ServerApp.root_dir={root}",
    ]
    if app == "jupyterlab":
        cmd += [
            "--LabApp.extension_manager=readonly",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
    log = tmp / "jupyterlab.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    lab = Lab(root, port, proc, log, app)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyterlab exited with {proc.returncode}:\n{lab.log_tail()}")
            try:
                _get(f"{lab.url}/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jupyterlab did not answer in {timeout}s:\n{lab.log_tail()}") from None
                time.sleep(0.3)
        yield lab
    finally:
        lab.shutdown_kernels()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextmanager
def chromium_page(width: int = 1280, height: int = 900) -> Iterator[object]:
    """Open a page in headless Debian Chromium driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


def wait_for_idle_kernel(page, timeout_ms: int = 40_000, app: str = "jupyterlab") -> None:
    """Wait until the page says the kernel exists and is idle: a Shift+Enter before is dropped.

    JupyterLab says so in its status bar; Notebook 7 has none, only the
    toolbar's execution indicator.
    """
    if app == "notebook":
        page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first.wait_for(timeout=timeout_ms)
        page.get_by_title("Switch kernel").first.wait_for(timeout=timeout_ms)
        time.sleep(1)  # the indicator starts "idle" before the kernel connects
        page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first.wait_for(timeout=timeout_ms)
        return
    page.get_by_text("Python 3 (ipykernel) | Idle").first.wait_for(timeout=timeout_ms)
