"""Pipelines through Dagster: the campaign pipeline reproduces its recorded outputs; one variant of each shipped pipeline."""

import hashlib
import io
import json
import os
import shutil
import wave

import av
import dagster as dg
import numpy as np
import pytest
import yaml
from PIL import Image

from model_adapters.captions import parse_webvtt
from resources.io_manager import JsonManifestIOManager
from resources.manifests import ArtifactRef
from tests.conftest import PROJECT_ROOT, SAMPLE_BRIEFS
from tests.helpers import mp4_top_level_boxes, read_artifact, register, run_campaign, studio_definitions

pytestmark = pytest.mark.e2e

DIGESTS = PROJECT_ROOT / "tests" / "data" / "campaign_digests.json"
# Pictures torch renders (the procedural draft, the refiner, the video's frames) are byte-identical on
# one machine and torch build, not across CPUs: float32 kernels differ in their last bits by SIMD
# path, and a pixel one level off changes the PNG's bytes. Where their digest differs, a small
# signature of the picture (8x8 RGB means) must match the recorded one within RENDER_TOLERANCE.
SIGNATURES = PROJECT_ROOT / "tests" / "data" / "campaign_signatures.json"
TORCH_RENDERED = ("draft_image", "refined_image", "synced_video")
RENDER_TOLERANCE = {"mean": 2.0, "max": 16}  # levels of 255, over the 192 values
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def manifest_digests(load, keys, stages) -> dict[str, dict[str, str]]:
    """`stage/partition` -> {field: sha256} for every stored file of each manifest (the concept: its text)."""
    out = {}
    for key in sorted(keys):
        for stage in stages:
            manifest = load(dg.AssetKey(stage), key)
            if stage == "concept":
                text = json.dumps([manifest.headline, manifest.script, manifest.image_prompt, list(manifest.caption_lines)])
                out[f"{stage}/{key}"] = {"text": hashlib.sha256(text.encode()).hexdigest()}
                continue
            fields = type(manifest).model_fields
            out[f"{stage}/{key}"] = {n: getattr(manifest, n).sha256 for n in fields if isinstance(getattr(manifest, n), ArtifactRef)}
    return out


def picture_signature(stage: str, manifest) -> list[int]:
    """8x8 RGB box means of the picture (the video's middle frame)."""
    data = read_artifact(manifest.artifact)
    if stage == "synced_video":
        with av.open(io.BytesIO(data)) as container:
            frames = [frame.to_image() for frame in container.decode(video=0)]
        picture = frames[len(frames) // 2]
    else:
        picture = Image.open(io.BytesIO(data))
    return [int(v) for v in np.asarray(picture.convert("RGB").resize((8, 8), Image.Resampling.BOX)).reshape(-1)]


def signatures(load, keys) -> dict[str, list[int]]:
    return {f"{stage}/{key}": picture_signature(stage, load(dg.AssetKey(stage), key)) for key in sorted(keys) for stage in TORCH_RENDERED}


def differences(found: dict, expected: dict, found_signatures: dict, recorded_signatures: dict) -> list[str]:
    """What differs from the recording: byte for byte, except a torch-rendered picture within tolerance."""
    problems = []
    for item in sorted(set(found) | set(expected)):
        if found.get(item) == expected.get(item):
            continue
        if item.split("/")[0] not in TORCH_RENDERED or item not in recorded_signatures:
            problems.append(f"{item}: {found.get(item)} != {expected.get(item)}")
            continue
        delta = np.abs(np.array(found_signatures[item]) - np.array(recorded_signatures[item]))
        if delta.mean() > RENDER_TOLERANCE["mean"] or delta.max() > RENDER_TOLERANCE["max"]:
            problems.append(f"{item}: digest differs and its picture too (mean {delta.mean():.2f}, max {delta.max()} levels)")
    return problems


def test_campaign_pipeline_reproduces_the_recorded_artifact_digests(studio_home, sample_briefs, monkeypatch):
    """config/pipelines/campaign.yaml makes, byte for byte, what the hard-wired graph made: every file of every
    manifest of the sample briefs on the local routing at the shipped settings. A change meant to change outputs
    (a new model, say) updates tests/data/campaign_digests.json and campaign_signatures.json deliberately
    (STUDIO_RECORD_DIGESTS=1 writes both from this run). On the phrase bank and espeak-ng: the language
    model's and Piper's floats differ in their last bits across CPUs, so a sampled token or a sample may
    too (their own tests check that one machine repeats itself)."""
    monkeypatch.setenv("STUDIO_ROUTING", str(PROJECT_ROOT / "tests" / "data" / "routing.classic.yaml"))
    definitions = studio_definitions()
    with dg.instance_for_test() as instance:
        keys = register(instance, definitions)
        for campaign in sorted({k.split(".")[0] for k in keys}):
            ks = [k for k in keys if k.startswith(campaign + ".")]
            assert run_campaign(instance, ks, run_config=QUIET, definitions=definitions).success
    stages = ("concept", "draft_image", "refined_image", "voiceover", "captions", "synced_video")
    found = manifest_digests(JsonManifestIOManager().load_manifest, keys, stages)
    found_signatures = signatures(JsonManifestIOManager().load_manifest, keys)
    if os.environ.get("STUDIO_RECORD_DIGESTS") == "1":
        DIGESTS.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        SIGNATURES.write_text(json.dumps(found_signatures, sort_keys=True) + "\n")
    expected, recorded_signatures = json.loads(DIGESTS.read_text()), json.loads(SIGNATURES.read_text())
    assert len(expected) == 42 and sum(len(v) for v in expected.values()) == 70
    assert len(recorded_signatures) == 21
    assert differences(found, expected, found_signatures, recorded_signatures) == []
    # The tolerance is not a blindfold: a picture one variant over does not pass for another.
    swapped = dict(zip(sorted(recorded_signatures), sorted(recorded_signatures)[1:] + sorted(recorded_signatures)[:1], strict=False))
    changed = {item: "0" * 64 for item in recorded_signatures}
    shifted = {item: recorded_signatures[other] for item, other in swapped.items()}
    assert len(differences({**found, **{k: {"artifact": v} for k, v in changed.items()}}, expected, shifted, recorded_signatures)) >= 18


def brief(campaign: str, pipeline: str | None, locale="en-US", ratio="1:1", duration=3) -> dict:
    data = yaml.safe_load((SAMPLE_BRIEFS / "aurora-lamp.yaml").read_text())
    data["campaign_id"] = campaign
    data["variants"] = [{"id": "one", "locale": locale, "aspect_ratio": ratio, "duration_s": duration}]
    if pipeline:
        data["pipeline"] = pipeline
    return data


FAST = {"loggers": QUIET["loggers"]}


def test_one_variant_of_each_shipped_pipeline(studio_home, briefs_folder):
    for campaign, pipeline in (("lamp-video", None), ("lamp-stills", "stills"), ("lamp-radio", "audio")):
        (briefs_folder / f"{campaign}.yaml").write_text(yaml.safe_dump(brief(campaign, pipeline)))
    definitions = studio_definitions()
    load = JsonManifestIOManager().load_manifest
    with dg.instance_for_test() as instance:
        sensor = definitions.resolve_sensor_def("brief_sensor")
        result = sensor(dg.build_sensor_context(instance=instance, resources={"briefs": definitions.resources["briefs"]}))
        jobs = {r.partition_key: r.job_name for r in result.run_requests}
        assert jobs == {"lamp-video.one": "produce_campaign", "lamp-stills.one": "produce_stills", "lamp-radio.one": "produce_audio"}
        partitions = {r.partitions_def_name: list(r.partition_keys) for r in result.dynamic_partitions_requests}
        assert partitions == {"variants": ["lamp-video.one"], "stills_variants": ["lamp-stills.one"], "audio_variants": ["lamp-radio.one"]}
        for name, keys in partitions.items():
            instance.add_dynamic_partitions(name, keys)
        for key, job in jobs.items():
            run_config = {**FAST}
            if job == "produce_campaign":
                run_config["ops"] = {"variant_media": {"config": {"synced_video": {"short_side": 360, "fps": 24}}}}
            assert run_campaign(instance, [key], run_config=run_config, definitions=definitions, job_name=job).success, job

        # stills: a finished still at the brief's size, nothing spoken; its own asset keys.
        refined = load(dg.AssetKey(["stills", "refined_image"]), "lamp-stills.one")
        with Image.open(io.BytesIO(read_artifact(refined.artifact))) as png:
            assert png.format == "PNG" and png.size == (1080, 1080)
            assert np.asarray(png.convert("L")).std() > 10
        assert not instance.fetch_materializations(dg.AssetKey(["stills", "voiceover"]), limit=1).records
        stills_rollup = instance.fetch_materializations(dg.AssetKey(["stills", "campaign_rollup"]), limit=1).records[0]
        assert "data:image/jpeg;base64," in stills_rollup.asset_materialization.metadata["lamp-stills/contact_sheet"].value

        # audio: a voiceover at -16 LUFS with its captions, no picture; the roll-up has no contact sheet.
        audio = load(dg.AssetKey(["audio", "voiceover"]), "lamp-radio.one")
        with wave.open(io.BytesIO(read_artifact(audio.artifact))) as wav:
            assert wav.getnframes() / wav.getframerate() == pytest.approx(audio.duration_s, abs=0.01) and audio.duration_s > 1
        captions = load(dg.AssetKey(["audio", "captions"]), "lamp-radio.one")
        cues = parse_webvtt(read_artifact(captions.vtt).decode())
        assert " ".join(line for cue in cues for line in cue.lines).split() == [w.word for w in audio.words]
        radio_rollup = (
            instance.fetch_materializations(dg.AssetKey(["audio", "campaign_rollup"]), limit=1).records[0].asset_materialization.metadata
        )
        assert "lamp-radio/costs" in radio_rollup and "lamp-radio/contact_sheet" not in radio_rollup
        assert not list((studio_home / "manifests" / "audio").glob("*image*"))

        # campaign: the video decodes, H.264 + AAC, faststart.
        video = load(dg.AssetKey("synced_video"), "lamp-video.one")
        assert mp4_top_level_boxes(read_artifact(video.artifact)).index("moov") < mp4_top_level_boxes(read_artifact(video.artifact)).index(
            "mdat"
        )
        assert (video.width, video.height) == (360, 360)

        # Each pipeline's checks ran on its own assets.
        for key in (dg.AssetKey(["stills", "refined_image"]), dg.AssetKey(["audio", "voiceover"])):
            check = "png_valid" if "stills" in key.path else "loudness_within_spec"
            evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key([dg.AssetCheckKey(key, check)])
            assert evaluation[dg.AssetCheckKey(key, check)].status.value == "SUCCEEDED"


def test_a_brief_naming_an_unknown_pipeline_is_refused_by_file_and_field(studio_home, briefs_folder):
    (briefs_folder / "odd.yaml").write_text(yaml.safe_dump(brief("odd", "posters")))
    shutil.copy(SAMPLE_BRIEFS / "trail-runner.yaml", briefs_folder)
    definitions = studio_definitions()
    with dg.instance_for_test() as instance:
        result = definitions.resolve_sensor_def("brief_sensor")(
            dg.build_sensor_context(instance=instance, resources={"briefs": definitions.resources["briefs"]})
        )
        assert {r.tags["campaign"] for r in result.run_requests} == {"trail-runner"}
        assert not instance.get_dynamic_partitions("stills_variants")
    from orchestration.sensors import plan_brief_changes
    from tests.helpers import shipped_pipelines

    outcome = plan_brief_changes(definitions.resources["briefs"].scan(), {}, {}, shipped_pipelines())
    assert outcome.problems == [
        f"{briefs_folder / 'odd.yaml'}: pipeline: unknown pipeline 'posters'; loaded pipelines: audio, campaign, stills"
    ]


def test_make_demo_runs_each_brief_through_its_pipeline(studio_home, briefs_folder, capsys):
    """`make demo`'s runner: each campaign through its own pipeline's job; per variant the picture and the final file."""
    from orchestration import demo

    for campaign, pipeline in (("demo-stills", "stills"), ("demo-radio", "audio")):
        (briefs_folder / f"{campaign}.yaml").write_text(yaml.safe_dump(brief(campaign, pipeline)))
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    assert "demo-stills [demo-stills.one .. demo-stills.one] (stills): ok" in out
    assert "demo-radio [demo-radio.one .. demo-radio.one] (audio): ok" in out
    lines = {tuple(line.split()[:2]): line.split()[2] for line in out.splitlines() if line.startswith("  demo-")}
    assert lines[("demo-stills.one", "refined_image")].endswith(".png")
    assert lines[("demo-radio.one", "captions")].endswith(".vtt")
    assert ("demo-radio.one", "refined_image") not in lines
