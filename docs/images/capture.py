"""Regenerate the UI screenshots in docs/images/ (no pytest, no browser download).

    .venv/bin/python docs/images/capture.py

Materializes one sample variant (aurora-lamp.feed-en) in a throwaway
STUDIO_HOME, starts the project's webserver on 127.0.0.1 over it, and
photographs with the system's headless Chromium (tests/webserver_harness.py):

- asset-graph.png: synced_video's upstream lineage (the variant graph), groups unfolded;
- refined-image-page.png: refined_image's page for that variant with its
  `preview` thumbnail open, the provenance metadata (provider, model) below.

Each picture is resized and quantized to stay small (under ~300 KB).
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from PIL import Image  # noqa: E402

from tests.webserver_harness import (  # noqa: E402
    chromium_page,
    dagster_webserver,
    dismiss_onboarding,
    expand_asset_groups,
    find_chromium,
    open_asset_preview,
)

CAMPAIGN = "aurora-lamp"
KEY = f"{CAMPAIGN}.feed-en"
MAX_BYTES = 300_000


def small_png(raw: bytes, target: Path, width: int = 1100) -> int:
    """Resize to `width` and quantize to 256 colours until the PNG is under MAX_BYTES."""
    with Image.open(io.BytesIO(raw)) as image:
        image = image.convert("RGB")
        while True:
            height = round(image.height * width / image.width)
            small = image.resize((width, height), Image.LANCZOS).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
            buffer = io.BytesIO()
            small.save(buffer, format="PNG", optimize=True)
            if buffer.tell() <= MAX_BYTES or width <= 600:
                break
            width = int(width * 0.85)
    target.write_bytes(buffer.getvalue())
    return buffer.tell()


def materialize(root: Path) -> dict[str, str]:
    home, briefs = root / "studio", root / "briefs"
    (home / "dagster").mkdir(parents=True)
    briefs.mkdir()
    shutil.copy(PROJECT_ROOT / "briefs" / f"{CAMPAIGN}.yaml", briefs)
    shutil.copy(PROJECT_ROOT / "config" / "dagster.yaml", home / "dagster" / "dagster.yaml")
    env = {"STUDIO_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "STUDIO_BRIEFS_DIR": str(briefs)}
    os.environ.update(env)
    warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview)")
    import dagster as dg

    from tests.helpers import register, run_campaign

    with dg.DagsterInstance.get() as instance:
        register(instance)
        if not run_campaign(instance, [KEY]).success:
            raise SystemExit(f"the run of {KEY} failed")
    return env


def main() -> int:
    chromium = find_chromium()
    if chromium is None:
        print("no Chromium found (apt-get install chromium, or set STUDIO_CHROMIUM)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="studio-capture-") as tmp:
        root = Path(tmp)
        env = materialize(root)
        with dagster_webserver(env, root / "webserver.log") as port, chromium_page(chromium, 1400, 900) as page:
            base = f"http://127.0.0.1:{port}"
            # synced_video's lineage, every upstream level: the whole variant graph, fitted to the view.
            page.goto(f"{base}/assets/synced_video?view=lineage&lineageScope=upstream&lineageDepth=10")
            page.get_by_text("draft_image").first.wait_for()
            dismiss_onboarding(page)
            expand_asset_groups(page)
            page.wait_for_timeout(1500)
            size = small_png(page.screenshot(), HERE / "asset-graph.png")
            print(f"asset-graph.png: {size} bytes")

            open_asset_preview(page, base, "refined_image", KEY)
            page.wait_for_timeout(500)
            size = small_png(page.screenshot(), HERE / "refined-image-page.png")
            print(f"refined-image-page.png: {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
