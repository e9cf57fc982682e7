"""`make demo`: register the sample campaigns and materialize every variant through Dagster.

Runs on the embedded default (local adapters, SQLite, the filesystem): no
keys, no network. Each campaign is one run per span of at most its pipeline's
`max_variants_per_run` variants (a partition range, the way the brief sensor
requests it), executed in this process against the persistent instance in
`$DAGSTER_HOME`, so the runs show up in `make ui` afterwards.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections import defaultdict

from assets.common import MANIFEST_IO_MANAGER_KEY
from assets.dagster_api import partition_range_tags
from assets.rollup import tile_stage
from model_adapters.concurrency import COMPUTE_SLOTS
from orchestration.components import StudioPipelines
from orchestration.definitions import build_definitions
from orchestration.instance import local_instance
from orchestration.pipelines import PipelineError, pipeline_for
from orchestration.storage import resolved_resource
from orchestration.variant_runs import variant_spans
from resources.brief_source import BriefSource
from resources.settings import briefs_dir, dagster_home, studio_env, studio_home


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaign", action="append", help="only this campaign id (repeatable)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    instance = local_instance()
    definitions = build_definitions()
    pipelines, _ = StudioPipelines().resolve_pipelines()

    campaigns: dict[str, list[str]] = {}
    campaign_pipeline: dict[str, str] = {}
    for brief_file in BriefSource().scan():
        if brief_file.error:
            print(f"skipping invalid brief: {brief_file.error}", file=sys.stderr)
            continue
        if args.campaign and brief_file.brief.campaign_id not in args.campaign:
            continue
        try:
            pipeline_for(brief_file.brief, pipelines)
        except PipelineError as exc:
            print(f"skipping {brief_file.path}: {exc}", file=sys.stderr)
            continue
        campaigns[brief_file.brief.campaign_id] = brief_file.brief.partition_keys()
        campaign_pipeline[brief_file.brief.campaign_id] = brief_file.brief.pipeline
    if not campaigns:
        print(f"no valid briefs in {briefs_dir()}", file=sys.stderr)
        return 1

    new_count = 0
    for name, pipeline in pipelines.items():
        existing = set(instance.get_dynamic_partitions(pipeline.partitions_name))
        new_keys = [k for c, keys in campaigns.items() if campaign_pipeline[c] == name for k in keys if k not in existing]
        if new_keys:
            instance.add_dynamic_partitions(pipeline.partitions_name, new_keys)
        new_count += len(new_keys)
    print(f"registered {new_count} new variant partition(s); {sum(map(len, campaigns.values()))} to produce")

    step_seconds: dict[str, float] = defaultdict(float)
    failed = False
    for campaign_id, keys in campaigns.items():
        pipeline = pipelines[campaign_pipeline[campaign_id]]
        job = definitions.resolve_job_def(pipeline.produce_job_name)
        ordered = instance.get_dynamic_partitions(pipeline.partitions_name)
        for span in variant_spans(keys, ordered, pipeline.max_variants_per_run):
            first, last = span[0], span[-1]
            run_started = time.perf_counter()
            result = job.execute_in_process(
                instance=instance,
                # Step-by-step DEBUG events stay in the run's log (see `make ui`); print only problems.
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                tags={**partition_range_tags(first, last), "campaign": campaign_id},
                raise_on_error=False,
            )
            for event in result.get_step_success_events():
                step_seconds[event.step_key] += event.event_specific_data.duration_ms / 1000.0
            status = "ok" if result.success else "FAILED"
            failed |= not result.success
            print(
                f"{campaign_id} [{first} .. {last}] ({pipeline.name}): {status} in {time.perf_counter() - run_started:.1f}s (run {result.run_id})"
            )

    print(f"\nartifacts (STUDIO_ENV={studio_env()}):")
    video_seconds = 0.0
    with resolved_resource(definitions, MANIFEST_IO_MANAGER_KEY) as manifests:
        for campaign_id, keys in campaigns.items():
            pipeline = pipelines[campaign_pipeline[campaign_id]]
            # Each variant's picture (the roll-up's tile) and its final stage's file.
            pictured = tile_stage(pipeline)
            shown = [pictured] if pictured and pictured.name != pipeline.final_stage.name else []
            shown.append(pipeline.final_stage)
            for key in keys:
                for stage in shown:
                    try:
                        manifest = manifests.load_manifest(pipeline.key(stage.name), key)
                    except FileNotFoundError:
                        print(f"  {key:32s} {stage.name:14s} (missing)")
                        continue
                    files = stage.kind.rollup_files(stage.name, manifest)
                    print(f"  {key:32s} {stage.name:14s} {next(iter(files.values())).uri.removeprefix('file://') if files else '-'}")
                    if stage.kind.name == "video":
                        video_seconds += manifest.duration_s

    variants = sum(map(len, campaigns.values()))
    print("\nseconds per step (each pipeline's stages pipeline in one step, its variant_media):")
    for step, seconds in step_seconds.items():
        print(f"  {step:36s} {seconds:7.2f}")
    # Compute time of the local models (the device slot they hold, without the wait).
    held = {"draft_image": "local-image", "refined_image": "local-refine", "synced_video": "local-video"}
    print(
        "compute seconds per variant: "
        + ", ".join(f"{stage} {COMPUTE_SLOTS.held_s.get(holder, 0.0) / variants:.2f}" for stage, holder in held.items())
    )
    video_compute = COMPUTE_SLOTS.held_s.get("local-video", 0.0)
    if video_compute and video_seconds:
        print(f"video: {video_seconds:.1f}s of footage in {video_compute:.1f}s of compute ({video_seconds / video_compute:.1f}x real time)")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\ntotal {time.perf_counter() - started:.1f}s for {variants} variants; peak RSS {peak_mib:.0f} MiB")
    print(f"STUDIO_HOME={studio_home()}")
    print(f"Open the UI with `make ui` (http://127.0.0.1:3000); runs and assets are in DAGSTER_HOME={dagster_home()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
