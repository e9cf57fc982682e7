"""What a user sees: the refined image's asset page in a real browser.

One variant is materialized in-process against a Dagster home; the project's
webserver is then started on 127.0.0.1 over the same home (its own process
group, stopped cleanly; the webserver alone, so no sensor starts runs behind
the test) and headless Chromium (the system's, driven by Playwright) opens
`/assets/refined_image?partition=<key>`. The page must show the `preview`
thumbnail (an inline `data:` image) and the model from the provenance
metadata; a screenshot is saved and decoded.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from tests.conftest import SAMPLE_BRIEFS, SAMPLE_CAMPAIGN
from tests.helpers import register, run_campaign
from tests.webserver_harness import chromium_page, dagster_webserver, find_chromium, open_asset_preview, seeded_studio

pytestmark = pytest.mark.e2e

CHROMIUM = find_chromium()
KEY = f"{SAMPLE_CAMPAIGN}.feed-en"  # the 1:1 variant


@pytest.fixture
def materialized_home(tmp_path, monkeypatch):
    env = seeded_studio(tmp_path, SAMPLE_BRIEFS / f"{SAMPLE_CAMPAIGN}.yaml")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.get() as instance:
        assert KEY in register(instance)
        result = run_campaign(instance, [KEY])
        assert result.success
        record = instance.fetch_materializations(dg.AssetKey("refined_image"), limit=1).records[0]
        model = record.asset_materialization.metadata["model"].value
    return env, model


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (apt-get install chromium, or set STUDIO_CHROMIUM)")
def test_refined_image_page_shows_preview_and_model(materialized_home, tmp_path):
    env, model = materialized_home
    screenshot = tmp_path / "refined_image.png"
    with dagster_webserver(env, tmp_path / "webserver.log") as port, chromium_page(CHROMIUM) as page:
        shown = open_asset_preview(page, f"http://127.0.0.1:{port}", "refined_image", KEY)
        page.screenshot(path=str(screenshot))

    assert model and model in shown["text"], f"model {model!r} not on the page"
    assert KEY in shown["text"]
    (src, width, height), *_ = shown["images"]
    assert src.startswith("data:image/")
    assert width > 64 and width == height  # the 1:1 thumbnail, decoded by the browser

    with Image.open(screenshot) as image:
        assert image.format == "PNG"
        assert image.size == (1400, 900)
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert pixels.std() > 20  # not a blank page
    assert screenshot.stat().st_size > 20_000
