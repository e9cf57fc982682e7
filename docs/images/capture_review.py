"""Regenerate the review app's screenshots in docs/images/ (no pytest, no browser download).

    .venv/bin/python docs/images/capture_review.py

In a throwaway STUDIO_HOME, a two-variant campaign with `approval: required`
runs on the bit-exact classic routing (tests/data/routing.classic.yaml: fast,
no model weights) up to its approval gate; the review app serves it on
127.0.0.1 (tests/test_review_browser.py's `review_server`), and the system's
headless Chromium photographs:

- review-page.png: both variants waiting, headline, script and image prompt;
- gallery.png: after one approval (the approval sensor's run executed
  in-process) and one rejection with "make it again": the approved variant's
  video with captions, stills, voice, models, costs and checks; the rejected
  one's new concept waiting.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(HERE))

from capture import small_png  # noqa: E402  (docs/images/capture.py)

from tests.webserver_harness import chromium_page, find_chromium  # noqa: E402


def main() -> int:
    chromium = find_chromium()
    if chromium is None:
        print("no Chromium found (apt-get install chromium, or set STUDIO_CHROMIUM)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="studio-review-capture-") as tmp:
        root = Path(tmp)
        home, briefs = root / "studio", root / "briefs"
        (home / "dagster").mkdir(parents=True)
        briefs.mkdir()
        shutil.copy(PROJECT_ROOT / "config" / "dagster.yaml", home / "dagster" / "dagster.yaml")
        os.environ.update(
            STUDIO_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), STUDIO_BRIEFS_DIR=str(briefs),
            STUDIO_ROUTING=str(PROJECT_ROOT / "tests" / "data" / "routing.classic.yaml"), USER=os.environ.get("USER") or "reviewer",
        )
        for name in ("STUDIO_REVIEW_TOKEN", "STUDIO_REVIEW_IDENTITY_HEADER"):
            os.environ.pop(name, None)
        warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview)")
        import dagster as dg

        from assets.dagster_api import partition_range_tags
        from tests.helpers import FAST_VIDEO, register, studio_definitions
        from tests.test_review_browser import CAMPAIGN, review_card, review_server, run_verdicts, write_gated_brief

        keys = write_gated_brief(briefs)
        definitions = studio_definitions()
        with dg.DagsterInstance.get() as instance:
            register(instance, definitions)
            job = definitions.resolve_job_def("produce_campaign")
            if not job.execute_in_process(instance=instance, run_config=FAST_VIDEO, tags=partition_range_tags(keys[0], keys[-1]), raise_on_error=False).success:
                raise SystemExit("the campaign's first run failed")
            with review_server(instance) as base, chromium_page(chromium, 1400, 900) as page:
                page.goto(f"{base}/campaigns/{CAMPAIGN}/review")
                review_card(page, keys[0]).wait_for()
                review_card(page, keys[0]).locator("textarea").fill("Warm and clear: ship it.")
                print(f"review-page.png: {small_png(page.screenshot(full_page=True), HERE / 'review-page.png')} bytes")

                with page.expect_navigation():
                    review_card(page, keys[0]).get_by_role("button", name="Approve").click()
                card = review_card(page, keys[1])
                card.locator("textarea").fill("Too generic; try again.")
                card.locator("input[name=regenerate]").check()
                with page.expect_navigation():
                    card.get_by_role("button", name="Reject").click()
                results, _ = run_verdicts(instance, definitions)
                if not all(r.success for r in results):
                    raise SystemExit("a run the verdicts asked for failed")

                page.goto(f"{base}/campaigns/{CAMPAIGN}/gallery")
                player = page.locator("video").first
                player.wait_for()
                handle = player.element_handle()
                page.wait_for_function("v => v.readyState >= 1", arg=handle)
                player.evaluate("v => { v.currentTime = Math.min(2, v.duration / 2); }")
                page.wait_for_function("v => !v.seeking && v.readyState >= 2", arg=handle)
                page.wait_for_timeout(500)
                print(f"gallery.png: {small_png(page.screenshot(full_page=True), HERE / 'gallery.png')} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
