"""The campaign roll-up: contact sheet, cost/latency summary, pending campaigns, automation."""

import io
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from assets.rollup import (
    CELL,
    HEADER_H,
    LABEL_H,
    MAX_COLUMNS,
    PAD,
    CampaignRollupDoc,
    contact_sheet,
    paid_stages,
    sheet_png,
)
from resources.io_manager import JsonManifestIOManager
from tests.conftest import SAMPLE_BRIEFS, SAMPLE_CAMPAIGN
from tests.helpers import read_artifact, register, sample_campaign_view, shipped_pipelines

PAID_STAGES = paid_stages(shipped_pipelines()["campaign"])  # the campaign pipeline's routed stages

pytestmark = pytest.mark.e2e

ROLLUP = dg.AssetKey("campaign_rollup")
rollup_only_job = dg.define_asset_job("rollup_only", selection=[ROLLUP])


@pytest.fixture(scope="module")
def campaign(sample_campaign, tmp_path_factory):
    """aurora-lamp, roll-up included (it is in `produce_campaign`'s selection): the session's
    campaign through a view with the module's own instance and briefs folder."""
    with sample_campaign_view(sample_campaign, tmp_path_factory.mktemp("rollup"), extra_jobs=[rollup_only_job]) as campaign:
        assert campaign.result.success
        yield campaign


def latest_rollup_metadata(instance) -> dict:
    (record,) = instance.fetch_materializations(ROLLUP, limit=1).records
    return record.asset_materialization.metadata


def load_summary(metadata, campaign_id: str) -> CampaignRollupDoc:
    return CampaignRollupDoc.model_validate_json(Path(metadata[f"{campaign_id}/summary"].value).read_bytes())


def test_rollup_materializes_after_the_campaign_with_preview_and_cost_table(campaign):
    steps = [e.step_key for e in campaign.result.all_events if e.event_type_value == "STEP_SUCCESS"]
    # After every variant asset and its checks (they run inside variant_media).
    assert steps.index("campaign_rollup") > steps.index("variant_media") > steps.index("brief")
    metadata = latest_rollup_metadata(campaign.instance)
    assert metadata["campaigns"].value == [SAMPLE_CAMPAIGN]
    assert metadata["pending_campaigns"].value == "none"
    assert "data:image/jpeg;base64," in metadata[f"{SAMPLE_CAMPAIGN}/contact_sheet"].value
    table = metadata[f"{SAMPLE_CAMPAIGN}/costs"].value
    assert table.splitlines()[0] == "| variant | " + " | ".join(PAID_STAGES) + " | total |"
    for key in campaign.keys:
        assert f"| {key.split('.', 1)[1]} | $" in table
    assert "| **total** |" in table and "Budget $25.00" in table
    print(f"\ncampaign with checks and roll-up: {campaign.seconds:.1f} s")


def test_summary_holds_uris_and_provenance_figures_per_variant(campaign):
    metadata = latest_rollup_metadata(campaign.instance)
    doc = load_summary(metadata, SAMPLE_CAMPAIGN)
    load = JsonManifestIOManager().load_manifest
    assert doc.campaign_id == SAMPLE_CAMPAIGN and doc.product == "Aurora Lamp" and doc.budget_usd == 25
    assert sorted(v.partition_key for v in doc.variants) == sorted(campaign.keys)
    for variant in doc.variants:
        key = variant.partition_key
        assert variant.artifacts["refined_image"] == load(dg.AssetKey("refined_image"), key).artifact.uri
        assert variant.artifacts["synced_video"] == load(dg.AssetKey("synced_video"), key).artifact.uri
        assert variant.artifacts["captions_vtt"] == load(dg.AssetKey("captions"), key).vtt.uri
        for stage in PAID_STAGES:
            provenance = load(dg.AssetKey(stage), key).provenance
            figures = variant.stages[stage]
            assert (figures.cost_usd, figures.latency_s, figures.cache_hit) == (
                provenance.cost_usd,
                provenance.latency_s,
                provenance.cache_hit,
            )
            assert figures.model == f"{provenance.model}@{provenance.model_version}"
        assert variant.latency_s == pytest.approx(sum(s.latency_s for s in variant.stages.values()), abs=1e-3)
    assert doc.total_latency_s == pytest.approx(sum(v.latency_s for v in doc.variants), abs=1e-3)
    assert doc.total_cost_usd == pytest.approx(sum(doc.cost_by_stage_usd.values()))
    assert doc.variants[0].stages["draft_image"].latency_s > 0
    assert doc.ledger_spent_usd == 0.0  # local models cost nothing
    assert Path(metadata[f"{SAMPLE_CAMPAIGN}/contact_sheet_file"].value).as_uri() == doc.contact_sheet.uri


def test_contact_sheet_is_a_labelled_grid_of_the_refined_images(campaign):
    doc = load_summary(latest_rollup_metadata(campaign.instance), SAMPLE_CAMPAIGN)
    sheet = Image.open(io.BytesIO(read_artifact(doc.contact_sheet)))
    assert sheet.format == "PNG"
    count = len(doc.variants)
    assert sheet.size == (PAD + count * (CELL + PAD), HEADER_H + CELL + LABEL_H + PAD + PAD)
    pixels = np.asarray(sheet.convert("L")).astype(int)
    for index in range(count):
        x0, y0 = PAD + index * (CELL + PAD), HEADER_H
        assert pixels[y0 : y0 + CELL, x0 : x0 + CELL].std() > 10  # a picture in each cell
        label = pixels[y0 + CELL : y0 + CELL + LABEL_H, x0 : x0 + CELL]
        assert (label > 200).sum() > 50  # light label text under it


def test_contact_sheet_wraps_after_four_columns():
    tile = io.BytesIO()
    Image.new("RGB", (90, 160), (30, 200, 90)).save(tile, format="PNG")
    png = sheet_png(contact_sheet("demo", [(f"v{i}", "9:16", tile.getvalue()) for i in range(6)]))
    sheet = Image.open(io.BytesIO(png))
    assert sheet.size == (PAD + MAX_COLUMNS * (CELL + PAD), HEADER_H + 2 * (CELL + LABEL_H + PAD) + PAD)
    with pytest.raises(ValueError):
        contact_sheet("empty", [])


def test_rollup_lists_an_unfinished_campaign_as_pending_and_is_reproducible(campaign):
    before = latest_rollup_metadata(campaign.instance)
    shutil.copy(SAMPLE_BRIEFS / "trail-runner.yaml", campaign.briefs)
    register(campaign.instance)  # trail-runner's three variants exist as partitions, nothing materialized
    result = campaign.definitions.resolve_job_def("rollup_only").execute_in_process(instance=campaign.instance)
    assert result.success
    after = latest_rollup_metadata(campaign.instance)
    assert after["campaigns"].value == [SAMPLE_CAMPAIGN]
    pending = after["pending_campaigns"].value
    assert pending.startswith("- **trail-runner**: ")
    assert (
        "trail-runner.reel-en lacks brief, concept, approve_concept, draft_image, refined_image, voiceover, captions, synced_video"
        in pending
    )
    # Same manifests, same bytes: the summary and the sheet land on the same content address.
    assert after[f"{SAMPLE_CAMPAIGN}/summary"].value == before[f"{SAMPLE_CAMPAIGN}/summary"].value
    assert after[f"{SAMPLE_CAMPAIGN}/contact_sheet_file"].value == before[f"{SAMPLE_CAMPAIGN}/contact_sheet_file"].value


def test_automation_requests_the_rollup_once_variants_update(campaign):
    definitions = campaign.definitions
    first = dg.evaluate_automation_conditions(defs=definitions, instance=campaign.instance)
    assert first.get_num_requested(ROLLUP) == 0  # materialized after the last variant run
    campaign.instance.report_runless_asset_event(dg.AssetMaterialization("synced_video", partition=campaign.keys[0]))
    second = dg.evaluate_automation_conditions(defs=definitions, instance=campaign.instance, cursor=first.cursor)
    assert second.get_num_requested(ROLLUP) == 1
    third = dg.evaluate_automation_conditions(defs=definitions, instance=campaign.instance, cursor=second.cursor)
    assert third.get_num_requested(ROLLUP) == 0  # requested once, not on every tick


def test_a_contact_sheet_is_drawn_once_for_what_it_shows(studio_home, monkeypatch):
    import assets.rollup as rollup
    from resources.artifact_store import FilesystemArtifactStore

    store = FilesystemArtifactStore()
    tile = io.BytesIO()
    Image.new("RGB", (90, 160), (200, 120, 40)).save(tile, format="JPEG")
    ref = store.put(tile.getvalue(), extension=".jpg", media_type="image/jpeg")
    sheet, preview = rollup._drawn_sheet(store, "c: P", [("a", "9:16 en-US", ref)])
    assert Image.open(io.BytesIO(store.get(sheet))).format == "PNG" and Image.open(io.BytesIO(preview)).format == "JPEG"

    def no_drawing(*args, **kwargs):
        raise AssertionError("drawn again")

    monkeypatch.setattr(rollup, "contact_sheet", no_drawing)
    assert rollup._drawn_sheet(store, "c: P", [("a", "9:16 en-US", ref)]) == (sheet, preview)
    with pytest.raises(AssertionError, match="drawn again"):  # other labels: another sheet
        rollup._drawn_sheet(store, "c: P", [("b", "9:16 en-US", ref)])
    monkeypatch.undo()
    (studio_home / "artifacts" / "sha256" / sheet.sha256[:2] / f"{sheet.sha256}.png").unlink()
    assert rollup._drawn_sheet(store, "c: P", [("a", "9:16 en-US", ref)])[0] == sheet  # a lost file is drawn again
