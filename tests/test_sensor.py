import json
import shutil

import dagster as dg
import pytest

from orchestration.definitions import build_definitions
from resources.brief_source import BriefSource
from tests.conftest import PROJECT_ROOT, SAMPLE_BRIEFS
from tests.helpers import brief_sensor, request_keys

_SENSOR = []


def _sensor():
    if not _SENSOR:  # the definitions are built once for this module's tests
        _SENSOR.append(brief_sensor())
    return _SENSOR[0]


def evaluate(instance, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"briefs": BriefSource()})
    result = _sensor()(context)
    # Apply partition requests the way the daemon would.
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_sensor_registers_one_partition_per_variant_and_requests_runs(sample_briefs):
    with dg.instance_for_test() as instance:
        result = evaluate(instance)
        keys = set(instance.get_dynamic_partitions("variants"))
        assert keys == {
            "aurora-lamp.story-en",
            "aurora-lamp.feed-en",
            "aurora-lamp.banner-de",
            "aurora-lamp.story-fr",
            "trail-runner.reel-en",
            "trail-runner.square-es",
            "trail-runner.wide-en",
        }
        # Both campaigns' 7 variants (under max_variants_per_run) are one run over their range.
        (request,) = result.run_requests
        assert sorted(request_keys(instance, request)) == sorted(keys)
        assert request.tags["campaign"] == "aurora-lamp,trail-runner" and request.tags["studio/variants"] == "7"
        assert request.job_name == "produce_campaign" and request.partition_key is None

        # Nothing changed: nothing requested, no new partitions.
        again = evaluate(instance, result.cursor)
        assert again.run_requests == [] and not again.dynamic_partitions_requests
        assert "no new or changed variants" in again.skip_reason.skip_message

        # One variant changes: only it is requested.
        path = sample_briefs / "trail-runner.yaml"
        path.write_text(path.read_text().replace("duration_s: 15", "duration_s: 14"))
        changed = evaluate(instance, again.cursor)
        assert [r.partition_key for r in changed.run_requests] == ["trail-runner.reel-en"]  # one variant: its key

        # A campaign-level change touches every variant of that campaign, and only those.
        path.write_text(path.read_text().replace("tone: Energetic", "tone: Playful"))
        campaign_change = evaluate(instance, changed.cursor)
        assert [set(request_keys(instance, r)) for r in campaign_change.run_requests] == [
            {k for k in keys if k.startswith("trail-runner.")}
        ]


def test_invalid_brief_is_reported_and_does_not_stop_others(sample_briefs):
    (sample_briefs / "broken.yaml").write_text(
        "campaign_id: broken\nproduct: P\naudience: A\ntone: T\npalette: ['#000000']\nbudget_usd: 1\n"
        "variants:\n  - {id: a, locale: en-US, aspect_ratio: '3:2', duration_s: 5}\n"
    )
    (sample_briefs / "dup.yaml").write_text((sample_briefs / "aurora-lamp.yaml").read_text())
    with dg.instance_for_test() as instance:
        result = evaluate(instance)
        keys = set(instance.get_dynamic_partitions("variants"))
        assert len(keys) == 7 and not any(k.startswith("broken.") for k in keys)
        assert sorted(k for r in result.run_requests for k in request_keys(instance, r)) == sorted(keys)
        again = evaluate(instance, result.cursor)
        assert "broken.yaml: variants[0].aspect_ratio" in again.skip_reason.skip_message
        assert "dup.yaml: campaign_id: 'aurora-lamp' is already declared by" in again.skip_reason.skip_message


def test_fixing_a_brief_requests_only_its_variants(briefs_folder, sample_briefs):
    aurora = sample_briefs / "aurora-lamp.yaml"
    good = aurora.read_text()
    aurora.write_text(good.replace("budget_usd: 25", "budget_usd: -5"))
    with dg.instance_for_test() as instance:
        first = evaluate(instance)
        assert {r.tags["campaign"] for r in first.run_requests} == {"trail-runner"}
        aurora.write_text(good)
        fixed = evaluate(instance, first.cursor)
        assert {r.tags["campaign"] for r in fixed.run_requests} == {"aurora-lamp"}
        assert json.loads(fixed.cursor)["fingerprints"].keys() >= {k for r in fixed.run_requests for k in request_keys(instance, r)}


def test_sensor_is_in_definitions_and_targets_each_pipelines_produce_job():
    definitions = build_definitions()
    sensor = definitions.resolve_sensor_def("brief_sensor")
    assert {job.name for job in sensor.jobs} == {"produce_campaign", "produce_stills", "produce_audio"}
    assert definitions.resolve_job_def("produce_campaign")


def test_removed_brief_keeps_partitions_and_says_so(sample_briefs, capfd):
    with dg.instance_for_test() as instance:
        first = evaluate(instance)
        (sample_briefs / "trail-runner.yaml").unlink()
        after = evaluate(instance, first.cursor)
        assert after.run_requests == []
        keys = set(instance.get_dynamic_partitions("variants"))
        assert {k for k in keys if k.startswith("trail-runner.")} == {
            "trail-runner.reel-en",
            "trail-runner.square-es",
            "trail-runner.wide-en",
        }
        logged = capfd.readouterr().err
        assert "brief for campaign 'trail-runner'" in logged and "are kept" in logged
        # It comes back unchanged: nothing to regenerate.
        shutil.copy(SAMPLE_BRIEFS / "trail-runner.yaml", sample_briefs / "trail-runner.yaml")
        back = evaluate(instance, after.cursor)
        assert back.run_requests == []


def test_variant_removed_from_a_brief_keeps_its_partition(sample_briefs, capfd):
    with dg.instance_for_test() as instance:
        first = evaluate(instance)
        path = sample_briefs / "aurora-lamp.yaml"
        text = path.read_text()
        path.write_text(text[: text.index("  - id: story-fr")])
        after = evaluate(instance, first.cursor)
        assert after.run_requests == []
        assert "aurora-lamp.story-fr" in instance.get_dynamic_partitions("variants")
        assert "variants removed from 'aurora-lamp': aurora-lamp.story-fr" in capfd.readouterr().err


def _big_brief(variants: int, duration_of=lambda i: 6) -> str:
    lines = [
        "campaign_id: big",
        "product: Desk lamp",
        "audience: night readers",
        "tone: Calm",
        "palette: ['#101820', '#f2aa4c']",
        "budget_usd: 100",
        "variants:",
    ]
    lines += [f"  - {{id: v{i:02d}, locale: en-US, aspect_ratio: '1:1', duration_s: {duration_of(i)}}}" for i in range(variants)]
    return "\n".join(lines) + "\n"


def test_a_big_campaign_is_requested_in_chunks_of_max_variants_per_run(briefs_folder):
    """40 variants, chunks of 16 (the default): 3 runs over neighbouring ranges; a change to two
    variants with an unchanged one between them is 2 runs of one; nothing is requested twice."""
    (briefs_folder / "big.yaml").write_text(_big_brief(40))
    with dg.instance_for_test() as instance:
        result = evaluate(instance)
        spans = [request_keys(instance, r) for r in result.run_requests]
        assert [len(s) for s in spans] == [16, 16, 8]
        assert [k for s in spans for k in s] == [f"big.v{i:02d}" for i in range(40)]
        assert all(
            r.tags["campaign"] == "big" and r.tags["studio/variants"] == str(len(s))
            for r, s in zip(result.run_requests, spans, strict=False)
        )
        assert len({r.run_key for r in result.run_requests}) == 3

        (briefs_folder / "big.yaml").write_text(_big_brief(40, lambda i: 8 if i in (3, 5) else 6))
        changed = evaluate(instance, result.cursor)
        assert [request_keys(instance, r) for r in changed.run_requests] == [["big.v03"], ["big.v05"]]
        assert [r.partition_key for r in changed.run_requests] == ["big.v03", "big.v05"]

        # Five neighbours change, and the brief grows by 20 variants: the neighbours are one run,
        # the new variants (added after every existing partition) are runs of 16 and 4.
        (briefs_folder / "big.yaml").write_text(_big_brief(60, lambda i: 9 if 20 <= i < 25 else 8 if i in (3, 5) else 6))
        grown = evaluate(instance, changed.cursor)
        assert [request_keys(instance, r) for r in grown.run_requests] == [
            [f"big.v{i:02d}" for i in range(20, 25)],
            [f"big.v{i:02d}" for i in range(40, 56)],
            [f"big.v{i:02d}" for i in range(56, 60)],
        ]
        assert evaluate(instance, grown.cursor).run_requests == []


def test_max_variants_per_run_comes_from_the_pipeline_file(tmp_path, briefs_folder, monkeypatch):
    """A pipeline file's `max_variants_per_run` sets its runs' size and its assets' backfill policy."""
    from orchestration.pipelines import PipelineError, parse_pipeline_spec
    from tests.helpers import shipped_pipelines

    shipped = PROJECT_ROOT / "config" / "pipelines"
    folder = tmp_path / "pipelines"
    shutil.copytree(shipped, folder)
    (folder / "stills.yaml").write_text((shipped / "stills.yaml").read_text() + "max_variants_per_run: 4\n")
    monkeypatch.setenv("STUDIO_PIPELINES_DIR", str(folder))
    definitions = build_definitions()
    stills = definitions.resolve_assets_def(dg.AssetKey(["stills", "refined_image"]))
    assert stills.backfill_policy.max_partitions_per_run == 4
    campaign = definitions.resolve_assets_def(dg.AssetKey("synced_video"))
    assert campaign.backfill_policy.max_partitions_per_run == 16  # the documented default
    assert shipped_pipelines()["stills"].max_variants_per_run == 16

    (briefs_folder / "big.yaml").write_text(_big_brief(10).replace("campaign_id: big", "campaign_id: big\npipeline: stills"))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"briefs": BriefSource()})
        result = definitions.resolve_sensor_def("brief_sensor")(context)
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        assert [len(request_keys(instance, r, "stills_variants")) for r in result.run_requests] == [4, 4, 2]
        assert {r.job_name for r in result.run_requests} == {"produce_stills"}

    with pytest.raises(PipelineError, match=r"stills.yaml: max_variants_per_run: "):
        parse_pipeline_spec((shipped / "stills.yaml").read_text() + "max_variants_per_run: 0\n", "stills.yaml")
