"""Approval gates: a brief with `approval: required` waits after its concept; verdicts resume it.

Through Dagster in-process on the embedded default's bit-exact routing (phrase bank, procedural
image, espeak-ng): the brief sensor's run makes only the concepts and pays for nothing after
them; `studio review approve|reject` records verdicts on the instance; the approval sensor turns
them into runs (an approved variant resumes, a rejection with --regenerate makes a new concept
that waits again); nothing is made from a version nobody approved.
"""

import io
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import av
import dagster as dg
import pytest
import yaml

from assets.approvals import ReviewError, pending_reviews, record_verdict, review_states
from assets.dagster_api import partition_range_tags
from orchestration.cli import EXIT_INVALID, EXIT_OK, main
from resources.io_manager import JsonManifestIOManager
from tests.conftest import PROJECT_ROOT, SAMPLE_BRIEFS
from tests.helpers import FAST_VIDEO, read_artifact, register, shipped_pipelines, studio_definitions

pytestmark = pytest.mark.e2e

CLASSIC_ROUTING = PROJECT_ROOT / "tests" / "data" / "routing.classic.yaml"
CAMPAIGN = "night-lamp"
AFTER_CONCEPT = ("approve_concept", "draft_image", "refined_image", "voiceover", "captions", "synced_video")


def _brief(folder: Path, approval: str = "required") -> None:
    brief = yaml.safe_load((SAMPLE_BRIEFS / "aurora-lamp.yaml").read_text())
    brief["campaign_id"] = CAMPAIGN
    brief["approval"] = approval
    brief["variants"] = [
        {"id": "approve-me", "locale": "en-US", "aspect_ratio": "1:1", "duration_s": 6, "tier": "standard"},
        {"id": "redo-me", "locale": "en-US", "aspect_ratio": "9:16", "duration_s": 12, "tier": "standard"},
        {"id": "stop-me", "locale": "en-US", "aspect_ratio": "16:9", "duration_s": 6, "tier": "standard"},
    ]
    (folder / f"{CAMPAIGN}.yaml").write_text(yaml.safe_dump(brief, sort_keys=False))


@pytest.fixture
def gated(studio_home, briefs_folder, monkeypatch):
    monkeypatch.setenv("STUDIO_ROUTING", str(CLASSIC_ROUTING))
    monkeypatch.setenv("USER", "marketer-ana")
    _brief(briefs_folder)
    definitions = studio_definitions()
    with dg.instance_for_test(temp_dir=str(studio_home / "dagster")) as instance:
        yield instance, definitions, studio_home


def _materialized(instance, stage: str, key: str) -> int:
    return len(
        instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(stage), asset_partitions=[key]), limit=50).records
    )


def _media_files(home: Path) -> list[Path]:
    """What only the stages after the concept write: pictures, audio, video."""
    return [p for p in (home / "artifacts").rglob("*") if p.suffix in {".png", ".jpg", ".wav", ".mp4", ".vtt"}]


def _run_requests(instance, definitions, sensor: str = "approval_sensor", cursor: str | None = None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=definitions)
    result = definitions.resolve_sensor_def(sensor)(context)
    return result.run_requests, result.cursor


def _execute(instance, definitions, request: dg.RunRequest):
    job = definitions.resolve_job_def(request.job_name)
    return job.execute_in_process(
        instance=instance,
        run_config=FAST_VIDEO,
        partition_key=request.partition_key,
        tags=dict(request.tags),
        asset_selection=list(request.asset_selection) if request.asset_selection else None,
        raise_on_error=False,
    )


def test_required_approval_waits_resumes_and_regenerates(gated, capsys):
    instance, definitions, home = gated
    load = JsonManifestIOManager().load_manifest
    keys = register(instance, definitions)
    assert keys == [f"{CAMPAIGN}.approve-me", f"{CAMPAIGN}.redo-me", f"{CAMPAIGN}.stop-me"]
    approve_me, redo_me, stop_me = keys

    # The brief sensor's run: concepts made, then every variant waits; a waiting variant is not a failure.
    job = definitions.resolve_job_def("produce_campaign")
    first = job.execute_in_process(
        instance=instance, run_config=FAST_VIDEO, tags=partition_range_tags(keys[0], keys[-1]), raise_on_error=False
    )
    assert first.success
    for key in keys:
        assert _materialized(instance, "concept", key) == 1
        for stage in AFTER_CONCEPT:
            assert _materialized(instance, stage, key) == 0, (stage, key)
    assert _media_files(home) == []  # no image, voice or video was made (or paid for)

    pending = pending_reviews(instance, shipped_pipelines(), CAMPAIGN, manifests=JsonManifestIOManager())
    assert sorted(p.partition_key for p in pending) == keys
    assert all(p.gate == "approve_concept" and p.subject.headline and p.subject.script for p in pending)
    concept_before = load(dg.AssetKey("concept"), redo_me)

    # Verdicts from the CLI: the reviewer is the user running it.
    assert main(["review", "approve", approve_me, "--comment", "ship it"]) == EXIT_OK
    assert main(["review", "reject", redo_me, "--comment", "too generic", "--regenerate"]) == EXIT_OK
    assert main(["review", "reject", stop_me, "--comment", "wrong market"]) == EXIT_OK
    capsys.readouterr()
    # Nothing waits any more: a second verdict, or one on an unknown variant, is refused and records nothing.
    observations = len(instance.fetch_observations(dg.AssetKey("approve_concept"), limit=100).records)
    assert main(["review", "approve", approve_me]) == EXIT_INVALID
    assert "nothing waits for a verdict" in capsys.readouterr().err
    assert main(["review", "approve", f"{CAMPAIGN}.nope"]) == EXIT_INVALID
    assert len(instance.fetch_observations(dg.AssetKey("approve_concept"), limit=100).records) == observations == 3
    states = {
        s.partition_key: s for s in review_states(instance, shipped_pipelines(), manifests=JsonManifestIOManager(), campaign_id=CAMPAIGN)
    }
    assert states[approve_me].state == "approved" and states[approve_me].verdict.reviewer == "marketer-ana"
    assert states[approve_me].verdict.comment == "ship it"
    assert (states[redo_me].state, states[stop_me].state) == ("regenerating", "rejected")

    # The approval sensor: resume the approved one, remake the rejected concept; nothing for the stopped one.
    requests, cursor = _run_requests(instance, definitions)
    by_action = {r.tags["studio/approval"]: r for r in requests}
    assert set(by_action) == {"approve_concept:resume", "approve_concept:remake"}
    assert by_action["approve_concept:resume"].partition_key == approve_me
    assert by_action["approve_concept:remake"].partition_key == redo_me
    assert {k.to_user_string() for k in by_action["approve_concept:remake"].asset_selection} == {"concept", "approve_concept"}
    assert _run_requests(instance, definitions, cursor=cursor)[0] == []  # the same verdicts never run twice
    for request in requests:
        assert _execute(instance, definitions, request).success

    # Approved: its video, exactly the brief's duration.
    video = load(dg.AssetKey("synced_video"), approve_me)
    with av.open(io.BytesIO(read_artifact(video.artifact))) as container:
        duration = float(container.duration) / 1_000_000
    assert abs(duration - 6.0) <= 1 / 24 + 1e-3
    gate = load(dg.AssetKey("approve_concept"), approve_me)
    assert gate.verdict.reviewer == "marketer-ana" and gate.subject_version == states[approve_me].version

    # Rejected with --regenerate: a new concept (new seed), waiting again; nothing after it made.
    concept_after = load(dg.AssetKey("concept"), redo_me)
    assert concept_after.provenance.seed != concept_before.provenance.seed
    made = (concept_after.headline, concept_after.script, concept_after.image_prompt)
    assert made != (concept_before.headline, concept_before.script, concept_before.image_prompt)
    for key in (redo_me, stop_me):
        for stage in AFTER_CONCEPT:
            assert _materialized(instance, stage, key) == 0, (stage, key)
    states = {
        s.partition_key: s for s in review_states(instance, shipped_pipelines(), manifests=JsonManifestIOManager(), campaign_id=CAMPAIGN)
    }
    assert states[redo_me].state == "pending" and states[redo_me].version != states[approve_me].version
    assert states[stop_me].state == "rejected"

    # Approving the new version resumes it; a re-run of the whole campaign then changes nothing
    # that was made and still makes nothing for the rejected variant.
    record_verdict(instance, shipped_pipelines(), redo_me, "approved", "marketer-ana", manifests=JsonManifestIOManager())
    requests, cursor = _run_requests(instance, definitions, cursor=cursor)
    assert [r.partition_key for r in requests] == [redo_me]
    assert _execute(instance, definitions, requests[0]).success
    assert load(dg.AssetKey("approve_concept"), redo_me).subject_version == states[redo_me].version
    assert _materialized(instance, "synced_video", redo_me) == 1
    assert _materialized(instance, "synced_video", stop_me) == 0


def test_a_changed_concept_is_not_made_from_an_old_approval(gated):
    """Automation or a job that remakes the concept: what follows waits for the new version's verdict."""
    instance, definitions, home = gated
    keys = register(instance, definitions)
    key = keys[0]
    job = definitions.resolve_job_def("produce_campaign")
    assert job.execute_in_process(instance=instance, run_config=FAST_VIDEO, partition_key=key, raise_on_error=False).success
    record_verdict(instance, shipped_pipelines(), key, "approved", "lead", manifests=JsonManifestIOManager())
    assert job.execute_in_process(instance=instance, run_config=FAST_VIDEO, partition_key=key, raise_on_error=False).success
    assert _materialized(instance, "synced_video", key) == 1

    # A new concept (forced, another seed through a rejection's record would do the same): the stored
    # approval is for the old version, so the images, voice and video are not made again from it.
    forced = {"ops": {"variant_media": {"config": {**FAST_VIDEO["ops"]["variant_media"]["config"], "force": True}}}}
    brief_path = next(Path(os.environ["STUDIO_BRIEFS_DIR"]).glob("*.yaml"))
    brief = yaml.safe_load(brief_path.read_text())
    brief["tone"] = "Playful"  # the concept changes; the approval does not carry over
    brief_path.write_text(yaml.safe_dump(brief, sort_keys=False))
    result = job.execute_in_process(instance=instance, run_config=forced, partition_key=key, raise_on_error=False)
    assert result.success
    assert _materialized(instance, "concept", key) == 3
    assert _materialized(instance, "synced_video", key) == 1  # still only the approved one's
    [state] = [s for s in review_states(instance, shipped_pipelines(), manifests=JsonManifestIOManager(), partition_keys=[key])]
    assert state.state == "pending"
    # A job that runs what follows the gate without the gate itself (regenerate_images, automation)
    # reads the stored approval, of the old concept: it holds too.
    after_gate = [dg.AssetKey(stage) for stage in AFTER_CONCEPT[1:]]
    result = job.execute_in_process(
        instance=instance, run_config=forced, partition_key=key, asset_selection=after_gate, raise_on_error=False
    )
    assert result.success
    assert _materialized(instance, "draft_image", key) == 1 and _materialized(instance, "synced_video", key) == 1
    waits = [e.message for e in instance.all_logs(result.run_id) if "changed since approve_concept passed it" in (e.message or "")]
    assert len(waits) == 2  # draft_image and voiceover, the stages that read the concept


def test_auto_approval_passes_in_the_same_run(studio_home, briefs_folder, monkeypatch):
    monkeypatch.setenv("STUDIO_ROUTING", str(CLASSIC_ROUTING))
    _brief(briefs_folder, approval="auto")
    definitions = studio_definitions()
    with dg.instance_for_test(temp_dir=str(studio_home / "dagster")) as instance:
        keys = register(instance, definitions)
        job = definitions.resolve_job_def("produce_campaign")
        assert job.execute_in_process(instance=instance, run_config=FAST_VIDEO, partition_key=keys[0], raise_on_error=False).success
        gate = JsonManifestIOManager().load_manifest(dg.AssetKey("approve_concept"), keys[0])
        assert (gate.mode, gate.verdict) == ("auto", None)
        assert _materialized(instance, "synced_video", keys[0]) == 1
        with pytest.raises(ReviewError, match="auto"):
            record_verdict(instance, shipped_pipelines(), keys[0], "approved", "lead", manifests=JsonManifestIOManager())


def test_a_gate_on_a_gate_is_refused(tmp_path):
    from orchestration.pipelines import PipelineError, load_pipeline
    from resources.routing_config import load_routing_config

    path = tmp_path / "double.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "double",
                "description": "x",
                "stages": [
                    {"name": "concept", "kind": "concept"},
                    {"name": "ok_concept", "kind": "approval", "inputs": {"subject": "concept"}},
                    {"name": "ok_ok", "kind": "approval", "inputs": {"subject": "ok_concept"}},
                ],
            }
        )
    )
    with pytest.raises(PipelineError, match=r"stages\[2\] \(ok_ok\)\.inputs\.subject: 'ok_concept' is an approval stage"):
        load_pipeline(path, load_routing_config(CLASSIC_ROUTING), str(CLASSIC_ROUTING))


@pytest.mark.postgres
@pytest.mark.usefixtures("postgres_database")
def test_verdicts_survive_on_the_postgres_instance(studio_home, briefs_folder, tmp_path, monkeypatch):
    """A verdict recorded by one process is read by another, from the Postgres event log."""
    monkeypatch.setenv("STUDIO_ROUTING", str(CLASSIC_ROUTING))
    _brief(briefs_folder)
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    definitions = studio_definitions()
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        keys = register(instance, definitions)
        job = definitions.resolve_job_def("produce_campaign")
        assert job.execute_in_process(instance=instance, run_config=FAST_VIDEO, partition_key=keys[0], raise_on_error=False).success
        record_verdict(instance, shipped_pipelines(), keys[0], "approved", "lead-reviewer", "durable", manifests=JsonManifestIOManager())
    finally:
        instance.dispose()
    listing = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "review", "list", "--all", "--campaign", CAMPAIGN],
        capture_output=True,
        text=True,
        env={**os.environ},
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    assert f"{keys[0]}\tapprove_concept\tapproved by lead-reviewer" in listing.stdout
    assert f"{keys[1]}\tapprove_concept\tnot made" in listing.stdout


from tests.test_postgres_instance import postgres_database  # noqa: E402,F401  (the fixture)


def test_the_nightly_repair_leaves_waiting_variants_to_the_reviewers(gated, briefs_folder):
    """Variants waiting for a verdict are not broken; an approved one without its video is, and it
    never shares a repair run with a campaign that asks for no approval."""
    from orchestration.schedules import nightly_repair

    instance, definitions, home = gated
    auto = yaml.safe_load((briefs_folder / f"{CAMPAIGN}.yaml").read_text())
    auto.update(campaign_id="day-lamp", approval="auto", variants=auto["variants"][:1])
    (briefs_folder / "day-lamp.yaml").write_text(yaml.safe_dump(auto, sort_keys=False))
    keys = register(instance, definitions)
    gated_keys = [key for key in keys if key.startswith(f"{CAMPAIGN}.")]
    job = definitions.resolve_job_def("produce_campaign")
    concepts_only = [dg.AssetKey("brief"), dg.AssetKey("concept"), dg.AssetKey("approve_concept")]
    for key in gated_keys:  # each waits after its concept
        assert job.execute_in_process(
            instance=instance, run_config=FAST_VIDEO, partition_key=key, asset_selection=concepts_only, raise_on_error=False
        ).success
    repair = nightly_repair(shipped_pipelines()["campaign"])
    night = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(2026, 12, 5, 3, 0, tzinfo=UTC))

    # Only the auto campaign's variant, which has no video for no reviewer's reason.
    assert [r.partition_key for r in repair(night)] == ["day-lamp.approve-me"]

    # Approved but its run never came: now it is a repair too, in a run of its own.
    record_verdict(instance, shipped_pipelines(), gated_keys[0], "approved", "lead", manifests=JsonManifestIOManager())
    requests = repair(night)
    assert [r.partition_key for r in requests] == ["day-lamp.approve-me", gated_keys[0]]
    assert [r.tags["campaign"] for r in requests] == ["day-lamp", CAMPAIGN]
