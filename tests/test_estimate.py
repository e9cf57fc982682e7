from orchestration.estimate import estimate_campaign, main
from resources.brief_schema import load_brief
from resources.routing_config import load_routing_config
from tests.conftest import PROJECT_ROOT, SAMPLE_BRIEFS


def test_projection_uses_each_variants_route_and_prices():
    brief = load_brief(SAMPLE_BRIEFS / "aurora-lamp.yaml")
    cloud = estimate_campaign(brief, load_routing_config(PROJECT_ROOT / "config" / "routing.cloud.yaml"))
    assert all(t["calls"] == 4 for t in cloud.values())
    # Two standard variants on fal ($0.003), one premium on GMI ($0.025), one draft local ($0).
    # One row per routed stage of the brief's pipeline (campaign), priced by its task's spec.
    assert list(cloud) == ["concept", "draft_image", "refined_image", "voiceover", "synced_video"]
    assert cloud["draft_image"]["cost_usd"] == 2 * 0.003 + 0.025
    assert cloud["draft_image"]["providers"] == "fal-image, gmi-image, local-image"
    assert cloud["voiceover"]["cost_usd"] > 0 and cloud["synced_video"]["cost_usd"] == 0
    local = estimate_campaign(brief, load_routing_config(PROJECT_ROOT / "config" / "routing.local.yaml"))
    assert sum(t["cost_usd"] for t in local.values()) == 0


def test_cli_prints_totals_and_rejects_bad_briefs(tmp_path, capsys, studio_home):
    assert main([str(SAMPLE_BRIEFS / "trail-runner.yaml"), "--routing", str(PROJECT_ROOT / "config" / "routing.cloud.yaml")]) == 0
    out = capsys.readouterr().out
    assert "trail-runner: 3 variants, budget $40.00" in out and "within budget" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("campaign_id: x\n")
    assert main([str(bad)]) == 2
    assert "bad.yaml: product: Field required" in capsys.readouterr().err
