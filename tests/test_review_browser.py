"""A reviewer in a real browser: approve one variant, reject another, then watch the approved one.

A two-variant brief with `approval: required` runs through Dagster in-process
on the bit-exact classic routing (phrase bank, procedural image, espeak-ng):
the brief's run makes the concepts and stops at `approve_concept`. The review
app (the real one, on 127.0.0.1, in this process's instance) is opened in
headless system Chromium (Playwright, as tests/test_browser.py does): the
reviewer approves one variant and rejects the other asking for a new
concept. The approval sensor is then evaluated and its runs executed
in-process (what the daemon does on its next tick). Checked:

- the approved variant's video is produced, and its images and voice were
  made only after its verdict; the rejected one has a new concept (new seed)
  that waits again, and nothing after the concept was made for it;
- the verdicts name the OS user (local mode), whatever the form says;
- the gallery's `<video>` of the approved variant loads in the browser
  (metadata, duration = the brief's within a frame) with its captions track
  loaded; a request for a path outside the store is refused.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml
from PIL import Image

from assets.dagster_api import partition_range_tags
from tests.conftest import PROJECT_ROOT, SAMPLE_BRIEFS
from tests.helpers import FAST_VIDEO, register, studio_definitions
from tests.webserver_harness import chromium_page, find_chromium, free_port

pytestmark = pytest.mark.e2e

CHROMIUM = find_chromium()
CLASSIC_ROUTING = PROJECT_ROOT / "tests" / "data" / "routing.classic.yaml"
CAMPAIGN = "night-lamp"
DURATION_S = 5.0
FPS = FAST_VIDEO["ops"]["variant_media"]["config"]["synced_video"]["fps"]
AFTER_CONCEPT = ("draft_image", "refined_image", "voiceover", "captions", "synced_video")


def write_gated_brief(folder: Path, campaign: str = CAMPAIGN) -> list[str]:
    """The sample brief as a two-variant campaign that waits for approval; its partition keys."""
    brief = yaml.safe_load((SAMPLE_BRIEFS / "aurora-lamp.yaml").read_text())
    brief.update(campaign_id=campaign, approval="required")
    brief["variants"] = [
        {"id": "approve-me", "locale": "en-US", "aspect_ratio": "1:1", "duration_s": DURATION_S, "tier": "standard"},
        {"id": "redo-me", "locale": "en-GB", "aspect_ratio": "1:1", "duration_s": DURATION_S, "tier": "standard"},
    ]
    (folder / f"{campaign}.yaml").write_text(yaml.safe_dump(brief, sort_keys=False))
    return [f"{campaign}.approve-me", f"{campaign}.redo-me"]


@contextlib.contextmanager
def review_server(instance, *, auth=None) -> Iterator[str]:
    """The review app over `instance` and this environment's storage, served by uvicorn on
    127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    from orchestration.components import StudioPipelines
    from orchestration.review_app import ReviewAuth, build_app
    from orchestration.storage import built_storage

    pipelines, _ = StudioPipelines().resolve_pipelines()
    with built_storage() as (artifacts, manifests):
        app = build_app(
            instance=instance,
            pipelines=pipelines,
            artifacts=artifacts,
            manifests=manifests,
            auth=auth or ReviewAuth.from_environment("127.0.0.1"),
        )
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the review app did not start")
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def run_verdicts(instance, definitions, cursor: str | None = None) -> tuple[list, str | None]:
    """One tick of the approval sensor, its runs executed in-process (what the daemon would launch)."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=definitions)
    result = definitions.resolve_sensor_def("approval_sensor")(context)
    results = []
    for request in result.run_requests:
        job = definitions.resolve_job_def(request.job_name)
        results.append(
            job.execute_in_process(
                instance=instance,
                run_config=FAST_VIDEO,
                partition_key=request.partition_key,
                tags=dict(request.tags),
                asset_selection=list(request.asset_selection) if request.asset_selection else None,
                raise_on_error=False,
            )
        )
    return results, result.cursor


def materializations(instance, stage: str, key: str) -> list:
    return instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(stage), asset_partitions=[key]), limit=50).records


def verdicts(instance, key: str) -> list:
    return instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("approve_concept"), asset_partitions=[key]), limit=50
    ).records


def review_card(page, key: str):
    return page.locator(f"section.card[data-partition='{key}']")


@pytest.fixture
def gated(studio_home, briefs_folder, monkeypatch):
    monkeypatch.setenv("STUDIO_ROUTING", str(CLASSIC_ROUTING))
    monkeypatch.setenv("USER", "marketer-ana")
    for name in ("STUDIO_REVIEW_TOKEN", "STUDIO_REVIEW_IDENTITY_HEADER", "STUDIO_REVIEW_ORIGIN"):
        monkeypatch.delenv(name, raising=False)
    keys = write_gated_brief(briefs_folder)
    definitions = studio_definitions()
    with dg.instance_for_test(temp_dir=str(studio_home / "dagster")) as instance:
        assert register(instance, definitions) == keys
        job = definitions.resolve_job_def("produce_campaign")
        first = job.execute_in_process(
            instance=instance, run_config=FAST_VIDEO, tags=partition_range_tags(keys[0], keys[-1]), raise_on_error=False
        )
        assert first.success
        yield instance, definitions, keys, studio_home


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (apt-get install chromium, or set STUDIO_CHROMIUM)")
def test_review_in_the_browser_then_watch_the_approved_variant(gated, tmp_path):
    from resources.io_manager import JsonManifestIOManager

    instance, definitions, (approve_me, redo_me), home = gated
    load = JsonManifestIOManager().load_manifest
    concept_before = load(dg.AssetKey("concept"), redo_me)
    for key in (approve_me, redo_me):
        assert len(materializations(instance, "concept", key)) == 1
        for stage in AFTER_CONCEPT:
            assert materializations(instance, stage, key) == [], (stage, key)
    assert not [p for p in (home / "artifacts").rglob("*") if p.suffix in {".png", ".jpg", ".wav", ".mp4", ".vtt"}]  # nothing paid for

    with review_server(instance) as base, chromium_page(CHROMIUM, 1400, 1000) as page:
        page.goto(f"{base}/campaigns/{CAMPAIGN}/review")
        for key in (approve_me, redo_me):
            card = review_card(page, key)
            card.wait_for()
            headline = load(dg.AssetKey("concept"), key).headline
            assert headline in card.inner_text()
        assert "signed in as marketer-ana" in page.inner_text("header")
        review_shot = tmp_path / "review.png"
        page.screenshot(path=str(review_shot), full_page=True)

        card = review_card(page, approve_me)
        card.locator("textarea[name=comment]").fill("Warm and clear: ship it.")
        with page.expect_navigation():
            card.get_by_role("button", name="Approve").click()
        assert f"Approved: {approve_me}." in page.inner_text("main")

        card = review_card(page, redo_me)
        card.locator("textarea[name=comment]").fill("Too generic; try again.")
        card.locator("input[name=regenerate]").check()
        with page.expect_navigation():
            card.get_by_role("button", name="Reject").click()
        assert f"Rejected: {redo_me}." in page.inner_text("main")
        assert review_card(page, approve_me).count() == 0 and review_card(page, redo_me).count() == 0

        # The verdicts are on the instance, by the OS user (local mode); nothing has run yet.
        (approved,), (rejected,) = verdicts(instance, approve_me), verdicts(instance, redo_me)
        approved_meta, rejected_meta = approved.asset_observation.metadata, rejected.asset_observation.metadata
        assert (approved_meta["decision"].value, approved_meta["reviewer"].value) == ("approved", "marketer-ana")
        assert approved_meta["comment"].value == "Warm and clear: ship it."
        assert (rejected_meta["decision"].value, rejected_meta["regenerate"].value) == ("rejected", True)
        for key in (approve_me, redo_me):
            for stage in AFTER_CONCEPT:
                assert materializations(instance, stage, key) == [], (stage, key)

        # The approval sensor's runs: the approved variant resumes, the rejected concept is made again.
        results, cursor = run_verdicts(instance, definitions)
        assert len(results) == 2 and all(r.success for r in results)
        assert run_verdicts(instance, definitions, cursor)[0] == []

        # Approved: every paid stage made once, after its verdict.
        for stage in AFTER_CONCEPT:
            (made,) = materializations(instance, stage, approve_me)
            assert made.timestamp > approved.timestamp, stage
        video = load(dg.AssetKey("synced_video"), approve_me)
        assert abs(video.duration_s - DURATION_S) <= 1 / FPS + 1e-6
        # Rejected with regenerate: a new concept (another seed) that waits; no image or voice for it.
        concept_after = load(dg.AssetKey("concept"), redo_me)
        assert len(materializations(instance, "concept", redo_me)) == 2
        assert concept_after.provenance.seed != concept_before.provenance.seed
        for stage in AFTER_CONCEPT:
            assert materializations(instance, stage, redo_me) == [], stage
        page.goto(f"{base}/campaigns/{CAMPAIGN}/review")
        card = review_card(page, redo_me)
        card.wait_for()
        assert concept_after.headline in card.inner_text()
        assert review_card(page, approve_me).count() == 0

        # The gallery: the approved variant's video plays in the page, with its captions.
        page.goto(f"{base}/campaigns/{CAMPAIGN}/gallery")
        player = page.locator(f"section.variant[data-partition='{approve_me}'] video")
        player.wait_for()
        handle = player.element_handle()
        page.wait_for_function("v => v.readyState >= 1 && isFinite(v.duration)", arg=handle, timeout=30_000)
        # The captions are burned into the picture too, so the track is off until the viewer turns
        # it on (the player's CC menu); turned on here, its cues load.
        player.evaluate("v => { v.textTracks[0].mode = 'showing'; }")
        page.wait_for_function(
            "v => v.textTracks.length > 0 && v.textTracks[0].cues && v.textTracks[0].cues.length > 0", arg=handle, timeout=30_000
        )
        shown = player.evaluate(
            """v => ({duration: v.duration, ready: v.readyState, error: v.error && v.error.code,
                     width: v.videoWidth, height: v.videoHeight,
                     tracks: Array.from(v.querySelectorAll('track')).map(t => ({kind: t.kind, src: t.src, ready: t.readyState})),
                     cues: v.textTracks[0].cues.length})"""
        )
        assert shown["error"] is None and shown["ready"] >= 1
        assert abs(shown["duration"] - DURATION_S) <= 1 / FPS + 1e-3, shown
        assert shown["width"] == video.width and shown["height"] == video.height
        assert [t["kind"] for t in shown["tracks"]] == ["captions"] and shown["tracks"][0]["ready"] == 2 and shown["cues"] > 0
        # Seeking works: the server answers ranges, so the browser can jump to the end.
        player.evaluate("v => { v.currentTime = v.duration - 0.5; }")
        page.wait_for_function("v => !v.seeking && v.currentTime > 1", arg=handle, timeout=30_000)
        assert page.locator(f"section.variant[data-partition='{redo_me}'] video").count() == 0
        gallery_text = page.inner_text("main")
        assert "approve_concept: approved" in gallery_text and "approve_concept: pending" in gallery_text
        gallery_shot = tmp_path / "gallery.png"
        page.screenshot(path=str(gallery_shot), full_page=True)

        # Outside the store: refused, whatever the spelling.
        for path in (
            f"/files/{approve_me}/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
            f"/files/{approve_me}/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            f"/files/..%2F..%2Fdagster/{video.artifact.sha256}.mp4",
            "/files/../../etc/passwd",
        ):
            response = page.request.get(base + path)
            assert response.status in (400, 404), path
            assert b"root:" not in response.body()
        ranged = page.request.get(base + f"/files/{approve_me}/{video.artifact.sha256}.mp4", headers={"Range": "bytes=0-99"})
        assert ranged.status == 206 and len(ranged.body()) == 100

    for shot in (review_shot, gallery_shot):
        with Image.open(shot) as image:
            assert image.format == "PNG" and image.width == 1400
            assert np.asarray(image.convert("L"), dtype=np.float32).std() > 10  # not a blank page
