"""Start the Dagster webserver for this project and look at it in a real browser (no pytest here).

Used by tests/test_webserver.py (`dagster dev`: webserver and daemon),
tests/test_browser.py (the webserver alone, headless Chromium through
Playwright) and docs/images/capture.py (the README's screenshots).

The server runs in its own process group with default signal handlers (a
bare `&` in a shell would make it ignore SIGINT/SIGTERM) and is stopped by
signalling the group, then killed if it lingers. The browser is the
system's Chromium (Debian's `chromium`, installed by `make install` where
possible); nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
UI_TIMEOUT_MS = 30_000  # the UI is a React app: the first load compiles and fetches a lot


def seeded_studio(root: Path, brief: Path) -> dict[str, str]:
    """A fresh STUDIO_HOME under `root` with the shipped instance config and a briefs folder
    holding `brief`; the environment that points the project at them."""
    home, briefs = root / "studio", root / "briefs"
    (home / "dagster").mkdir(parents=True)
    briefs.mkdir()
    shutil.copy(brief, briefs)
    shutil.copy(PROJECT_ROOT / "config" / "dagster.yaml", home / "dagster" / "dagster.yaml")
    return {"STUDIO_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "STUDIO_BRIEFS_DIR": str(briefs)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_chromium() -> str | None:
    """`STUDIO_CHROMIUM`, else the system Chromium, else None."""
    configured = os.environ.get("STUDIO_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@contextlib.contextmanager
def dagster_webserver(env: dict[str, str], log_path: Path, *, daemon: bool = False, ready_s: float = 120) -> Iterator[int]:
    """The project's webserver on 127.0.0.1 (with the daemon: `dagster dev`); yields its port."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    if daemon:
        command = [str(bin_dir / "dagster"), "dev", "--workspace", "workspace.yaml", "--host", "127.0.0.1", "--port", str(port)]
    else:
        command = [str(bin_dir / "dagster-webserver"), "--workspace", "workspace.yaml", "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "w") as log, sigint_not_ignored():
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + ready_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{command[0]} exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{command[0]} did not answer within {ready_s:.0f} s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield port
        finally:
            stop_process_group(process)


@contextlib.contextmanager
def sigint_not_ignored() -> Iterator[None]:
    """While children are started: SIGINT handled, not ignored. A process started by a shell's
    bare `&` (a CI script, `make test &`) inherits SIGINT ignored, an exec keeps it ignored, and
    so does Python: `dagster dev` then outlives SIGTERM by the grace period below (30 s seen)."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_process_group(process: subprocess.Popen, grace_s: float = 30) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def chromium_page(executable: str, width: int = 1400, height: int = 900) -> Iterator[object]:
    """A Playwright page in headless system Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: Chromium's sandbox needs user namespaces, which containers and root lack.
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def dismiss_onboarding(page, timeout_ms: int = 4000) -> None:
    """Dagster's first-visit community dialog covers the page; skip it when it shows."""
    skip = page.get_by_role("button", name="Skip")
    with contextlib.suppress(Exception):
        skip.click(timeout=timeout_ms)


def open_asset_preview(page, base_url: str, asset: str, partition: str) -> dict[str, object]:
    """Open an asset's page for one partition and its `preview` markdown metadata.

    Returns the text of the metadata table and the inline images the preview shows
    ({"text": ..., "images": [(src prefix, natural width)], ...})."""
    page.goto(f"{base_url}/assets/{asset}?partition={partition}")
    page.get_by_text("Metadata", exact=True).first.wait_for()
    page.get_by_role("cell", name="preview", exact=True).first.wait_for()
    dismiss_onboarding(page)
    text = page.inner_text("body")
    # Markdown metadata shows as a "[Show Markdown]" button in its row; the dialog renders it.
    preview_row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="preview", exact=True)).first
    images = preview_row.locator("img[src^='data:image']")
    if images.count() == 0:
        preview_row.get_by_text("[Show Markdown]").click()
        images = page.locator(".bp5-dialog img[src^='data:image'], [role=dialog] img[src^='data:image']")
    images.first.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=images.first.element_handle())
    found = images.evaluate_all("els => els.map(e => [e.src.slice(0, 23), e.naturalWidth, e.naturalHeight])")
    return {"text": text, "images": found}


def expand_asset_groups(page) -> None:
    """On a lineage page, unfold every collapsed group so the assets show."""
    for _ in range(12):
        buttons = page.locator("[aria-label=unfold_more]")
        if buttons.count() == 0:
            break
        with contextlib.suppress(Exception):
            buttons.first.click(timeout=3000)
        page.wait_for_timeout(300)
