import json
import shutil

import dagster as dg

from orchestration.definitions import build_definitions
from resources.brief_source import BriefSource
from tests.conftest import SAMPLE_BRIEFS
from tests.helpers import brief_sensor

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
            "aurora-lamp.story-en", "aurora-lamp.feed-en", "aurora-lamp.banner-de", "aurora-lamp.story-fr",
            "trail-runner.reel-en", "trail-runner.square-es", "trail-runner.wide-en",
        }
        assert {r.partition_key for r in result.run_requests} == keys
        assert all(r.tags["campaign"] == r.partition_key.split(".")[0] for r in result.run_requests)

        # Nothing changed: nothing requested, no new partitions.
        again = evaluate(instance, result.cursor)
        assert again.run_requests == [] and not again.dynamic_partitions_requests
        assert "no new or changed variants" in again.skip_reason.skip_message

        # One variant changes: only it is requested.
        path = sample_briefs / "trail-runner.yaml"
        path.write_text(path.read_text().replace("duration_s: 15", "duration_s: 14"))
        changed = evaluate(instance, again.cursor)
        assert [r.partition_key for r in changed.run_requests] == ["trail-runner.reel-en"]

        # A campaign-level change touches every variant of that campaign, and only those.
        path.write_text(path.read_text().replace("tone: Energetic", "tone: Playful"))
        campaign_change = evaluate(instance, changed.cursor)
        assert {r.partition_key for r in campaign_change.run_requests} == {k for k in keys if k.startswith("trail-runner.")}


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
        assert len(result.run_requests) == 7
        again = evaluate(instance, result.cursor)
        assert "broken.yaml: variants[0].aspect_ratio" in again.skip_reason.skip_message
        assert "dup.yaml: campaign_id: 'aurora-lamp' is already declared by" in again.skip_reason.skip_message


def test_fixing_a_brief_requests_only_its_variants(briefs_folder, sample_briefs):
    aurora = sample_briefs / "aurora-lamp.yaml"
    good = aurora.read_text()
    aurora.write_text(good.replace("budget_usd: 25", "budget_usd: -5"))
    with dg.instance_for_test() as instance:
        first = evaluate(instance)
        assert {r.partition_key.split(".")[0] for r in first.run_requests} == {"trail-runner"}
        aurora.write_text(good)
        fixed = evaluate(instance, first.cursor)
        assert {r.partition_key.split(".")[0] for r in fixed.run_requests} == {"aurora-lamp"}
        assert json.loads(fixed.cursor)["fingerprints"].keys() >= {r.partition_key for r in fixed.run_requests}


def test_sensor_is_in_definitions_and_targets_each_pipelines_produce_job():
    definitions = build_definitions()
    sensor = definitions.resolve_sensor_def("brief_sensor")
    assert {job.name for job in sensor.jobs} == {
        "produce_campaign", "produce_stills", "produce_audio"
    }
    assert definitions.resolve_job_def("produce_campaign")


def test_removed_brief_keeps_partitions_and_says_so(sample_briefs, capfd):
    with dg.instance_for_test() as instance:
        first = evaluate(instance)
        (sample_briefs / "trail-runner.yaml").unlink()
        after = evaluate(instance, first.cursor)
        assert after.run_requests == []
        keys = set(instance.get_dynamic_partitions("variants"))
        assert {k for k in keys if k.startswith("trail-runner.")} == {
            "trail-runner.reel-en", "trail-runner.square-es", "trail-runner.wide-en"
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
