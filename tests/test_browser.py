"""Notebook 00 runs in a real browser: JupyterLab served on localhost, driven by headless Chromium.

nbval proves the notebooks run in a kernel; this proves what a learner sees:
JupyterLab starts, opens the notebook, runs every cell, and shows no error.
It works on a copy of the notebook (JupyterLab saves what it runs) and leaves a
screenshot in build/screenshots/. Chromium comes from the system (Debian's
``chromium`` package; ``.ci/run`` installs it); without it the test is skipped,
except in CI, where it fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "00_what_a_backbone_is.ipynb"
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free localhost port, serving a copy of the notebook; stopped afterwards."""
    served = tmp_path / "course"
    served.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, served / NOTEBOOK)
    # render every cell (JupyterLab 4 leaves off-screen cells out of the page by default), no news pop-up
    settings = tmp_path / "settings" / "@jupyterlab"
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port, token = free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={served}",
               f"--LabApp.user_settings_dir={tmp_path / 'settings'}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = open(tmp_path / "lab.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError((tmp_path / "lab.log").read_text())
                time.sleep(0.5)
        else:
            raise TimeoutError("JupyterLab did not answer within 60 s")
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_notebook_00_runs_in_jupyterlab_in_a_real_browser(lab):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium in CI: .ci/run installs Debian's chromium package")
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    url, token = lab
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{url}/lab/tree/{NOTEBOOK}?token={token}", timeout=90_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
            # the kernel itself must be up (the status bar says so), not only the page: on a loaded
            # machine "Run All Cells" sent before that is lost and no cell ever runs
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=120_000)
            cells = page.locator(".jp-Notebook .jp-CodeCell").count()
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            # every code cell gets an execution count, and the kernel goes back to idle
            page.wait_for_function(
                """(n) => {
                    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
                    return prompts.length === n && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
                }""", arg=cells, timeout=240_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            texts = [t for t in errors.all_inner_texts() if "Error" in t or "Traceback" in t]
            images = page.locator(".jp-OutputArea-output img").count()
        finally:
            page.screenshot(path=str(SCREENSHOTS / "notebook_00.png"), full_page=False)
            browser.close()
    assert not texts, f"cells show errors in the browser: {texts[:3]}"
    stored = (ROOT / "notebooks" / NOTEBOOK).read_text().count('"image/png"')
    assert images == stored, f"the stored notebook has {stored} pictures, the browser showed {images}"
