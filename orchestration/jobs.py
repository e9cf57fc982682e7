"""Each pipeline's jobs: produce everything, and the jobs its file declares (one stage and what follows it)."""

import dagster as dg

from assets.stages import Pipeline


def pipeline_jobs(pipeline: Pipeline) -> list:
    """`produce_<pipeline>` (every stage, the roll-up and the checks, for the selected variants;
    launched by the brief sensor, the repair schedule and `make demo`), then the file's own jobs."""
    everything = dg.AssetSelection.assets(pipeline.brief_key).downstream()
    jobs = [
        dg.define_asset_job(
            name=pipeline.produce_job_name,
            selection=everything,
            description=f"{pipeline.description} Brief to the last stage for the selected variants (one run can cover a whole campaign).",
            tags={"studio/pipeline": pipeline.name},
        )
    ]
    for job in pipeline.jobs:
        jobs.append(
            dg.define_asset_job(
                name=job.name,
                selection=dg.AssetSelection.assets(*(pipeline.key(name) for name in job.from_stages)).downstream(),
                description=job.description,
                tags={"studio/pipeline": pipeline.name},
            )
        )
    return jobs
