"""A sample campaign through Dagster: sensor -> partitions -> one single-run backfill -> decoded media."""

import dagster as dg
import pytest

from model_adapters import registry
from tests.helpers import assert_campaign_media, assert_materialized_per_partition, register, run_campaign, sample_campaign_view

pytestmark = pytest.mark.e2e


def test_campaign_end_to_end(sample_campaign, tmp_path):
    # The session's sample campaign (conftest): registered as the brief sensor does, produced in one run.
    with sample_campaign_view(sample_campaign, tmp_path) as campaign:
        assert len(campaign.keys) == 4
        assert campaign.result.success
        assert_materialized_per_partition(campaign.instance, campaign.keys)
        assert_campaign_media(campaign.keys, campaign.load)


class _FailingForWide:
    """Stands in for the image model: fails on one variant, like a provider error would."""

    def __init__(self, **kwargs):
        from model_adapters.local_image import ProceduralImageGenerator

        self._inner = ProceduralImageGenerator(**kwargs)
        self.info = self._inner.info

    async def generate(self, request):
        if request.width > request.height:
            raise RuntimeError("model crashed on a wide frame")
        return await self._inner.generate(request)

    async def aclose(self):
        await self._inner.aclose()


def test_one_failing_variant_is_named_and_others_keep_their_artifacts(studio_home, one_campaign, monkeypatch):
    kind = registry.ADAPTER_KINDS["local-procedural-image"]
    monkeypatch.setitem(
        registry.ADAPTER_KINDS,
        kind.name,
        registry.AdapterKind(kind.name, kind.task, f"{__name__}:_FailingForWide", kind.version),
    )
    with dg.instance_for_test() as instance:
        keys = register(instance)
        result = run_campaign(instance, keys)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        message = failure.event_specific_data.error.message
        assert "1 of 4 variants failed" in message
        assert "draft_image [aurora-lamp.banner-de]: RuntimeError: model crashed on a wide frame" in message
        # Stages complete for every variant are materialized and stay available;
        # the image stages and the video (which needs them) are not.
        for stage, count in {"concept": 4, "voiceover": 4, "captions": 4, "draft_image": 0, "synced_video": 0}.items():
            assert len(instance.fetch_materializations(dg.AssetKey(stage), limit=10).records) == count, stage
    # The other three variants went all the way: draft and refined images and a
    # video each were stored; nothing half-written.
    assert len(list((studio_home / "artifacts").rglob("*.png"))) == 6
    assert len(list((studio_home / "artifacts").rglob("*.mp4"))) == 3
    assert not list((studio_home / "artifacts").rglob(".tmp-*"))
