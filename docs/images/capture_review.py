"""Regenerate the review app's screenshots in docs/images/ (no pytest, no browser download).

    .venv/bin/python docs/images/capture_review.py [review] [report]   # both by default

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

report.png (another throwaway STUDIO_HOME): a six-variant campaign on the
`stills` pipeline with a 50 % image experiment against two provider
simulators (tests/test_experiments.py's routing: control `image-a`, candidate
`image-b`), variants chosen so each arm has three; the run materializes
`campaign_report`, and the report page shows the arms' figures and the pairs
contact sheet (about 25 s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(HERE))

from capture import small_png  # noqa: E402  (docs/images/capture.py)

from tests.webserver_harness import chromium_page, find_chromium  # noqa: E402

REPORT_MAX_BYTES = 200_000
REPORT_VARIANTS_PER_ARM = 3
# Drafts big enough to fill the contact sheet's cells (360 px), small enough to stay quick.
REPORT_RUN_CONFIG = {
    "ops": {"stills__variant_media": {"config": {"draft_image": {"short_side": 360}, "refined_image": {"min_short_side": 720}}}}
}


def throwaway_home(root: Path, routing: Path) -> Path:
    """A fresh STUDIO_HOME (with its Dagster home and briefs folder) under `root`, in the environment;
    returns the briefs folder."""
    home, briefs = root / "studio", root / "briefs"
    (home / "dagster").mkdir(parents=True)
    briefs.mkdir()
    shutil.copy(PROJECT_ROOT / "config" / "dagster.yaml", home / "dagster" / "dagster.yaml")
    os.environ.update(
        STUDIO_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        STUDIO_BRIEFS_DIR=str(briefs),
        STUDIO_ROUTING=str(routing),
        USER=os.environ.get("USER") or "reviewer",
    )
    for name in ("STUDIO_REVIEW_TOKEN", "STUDIO_REVIEW_IDENTITY_HEADER"):
        os.environ.pop(name, None)
    warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview)")
    return briefs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate docs/images/review-page.png, gallery.png and report.png.")
    parser.add_argument("which", nargs="*", choices=("review", "report"), help="which screenshots (default: all)")
    which = set(parser.parse_args(argv).which or ("review", "report"))
    chromium = find_chromium()
    if chromium is None:
        print("no Chromium found (apt-get install chromium, or set STUDIO_CHROMIUM)", file=sys.stderr)
        return 1
    if "review" in which:
        capture_review(chromium)
    if "report" in which:
        capture_report(chromium)
    return 0


def capture_review(chromium: str) -> None:
    """review-page.png and gallery.png."""
    with tempfile.TemporaryDirectory(prefix="studio-review-capture-") as tmp:
        briefs = throwaway_home(Path(tmp), PROJECT_ROOT / "tests" / "data" / "routing.classic.yaml")
        import dagster as dg

        from assets.dagster_api import partition_range_tags
        from tests.helpers import FAST_VIDEO, register, studio_definitions
        from tests.test_review_browser import CAMPAIGN, review_card, review_server, run_verdicts, write_gated_brief

        keys = write_gated_brief(briefs)
        definitions = studio_definitions()
        with dg.DagsterInstance.get() as instance:
            register(instance, definitions)
            job = definitions.resolve_job_def("produce_campaign")
            if not job.execute_in_process(
                instance=instance, run_config=FAST_VIDEO, tags=partition_range_tags(keys[0], keys[-1]), raise_on_error=False
            ).success:
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


def capture_report(chromium: str) -> None:
    """report.png: a 50 % image experiment's report page."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="studio-report-capture-") as tmp:
        root = Path(tmp)
        import yaml

        from tests.test_experiments import EXPERIMENT, KEY, expected_arm, routing_file, simulator

        os.environ["OPENAI_API_KEY"] = KEY  # the simulators' key, nobody's real one
        campaign = "lumen-kettle"
        # The arm is a hash of the experiment and the key: take the first variants of each arm.
        ids = [f"v{i:02d}" for i in range(40)]
        chosen = [
            variant
            for arm in ("control", "candidate")
            for variant in [v for v in ids if expected_arm(f"{campaign}.{v}", 0.5) == arm][:REPORT_VARIANTS_PER_ARM]
        ]
        ratios = ("1:1", "9:16", "16:9")
        brief = {
            "campaign_id": campaign,
            "product": "Lumen Kettle",
            "audience": "tea drinkers who wake up early",
            "tone": "Calm",
            "palette": ["#20303f", "#e8c07d", "#f5f1e8"],
            "budget_usd": 5,
            "pipeline": "stills",
            "variants": [
                {"id": v, "locale": "en-US", "aspect_ratio": ratios[i % 3], "duration_s": 10} for i, v in enumerate(sorted(chosen))
            ],
        }
        with simulator() as control_sim, simulator() as candidate_sim:
            experiment = {"name": EXPERIMENT, "control": ["image-a"], "candidate": ["image-b"], "share": 0.5}
            routing = routing_file(root, control_sim, candidate_sim, experiment)
            briefs = throwaway_home(root, routing)
            (briefs / f"{campaign}.yaml").write_text(yaml.safe_dump(brief))
            import dagster as dg

            from orchestration.definitions import build_definitions
            from tests.helpers import register, run_campaign
            from tests.test_review_browser import review_server

            definitions = build_definitions(routing)
            with dg.DagsterInstance.get() as instance:
                keys = register(instance, definitions)
                if not run_campaign(instance, keys, REPORT_RUN_CONFIG, definitions, job_name="produce_stills").success:
                    raise SystemExit("the experiment campaign's run failed")
                print(f"{len(keys)} variants made and reported in {time.monotonic() - started:.0f} s")
                with review_server(instance) as base, chromium_page(chromium, 1400, 900) as page:
                    page.goto(f"{base}/campaigns/{campaign}/report")
                    sheet = page.locator("section.report figure img").first
                    sheet.wait_for()
                    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=sheet.element_handle())
                    raw = page.screenshot(full_page=True)
    for width in (1100, 1000, 900, 800):
        size = small_png(raw, HERE / "report.png", width)
        if size <= REPORT_MAX_BYTES:
            break
    print(f"report.png: {size} bytes ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
