"""A 64-variant campaign as four 16-variant Dagster runs, each in a run worker process of its own,
on a Postgres instance, against the provider simulator.

The runs are the brief sensor's own run requests (partition ranges), executed by four spawned
processes the way run workers on four machines execute them: each builds the definitions,
opens the instance from its dagster.yaml and runs `produce_<pipeline>` over its range. The
shared limits come from the instance (its Postgres database), not from anything the test
passes. The pipeline is a pipeline file of the test's own (a concept and a hosted image), so
the campaign's work is the provider's, not the two local cores'.
"""

import json
import multiprocessing
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from model_adapters.simulator import ProviderSimulator, SimulatorSettings
from resources.policies.shared_limits import SharedLimits
from tests.conftest import PROJECT_ROOT
from tests.test_shared_limits import postgres_url  # noqa: F401  (the fixture: a database of its own)
from tests.test_shared_limits_workers import max_in_window

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

KEY = "sk-runs-test"
CAMPAIGN = "four-runs"
VARIANTS, CHUNK, WORKERS = 64, 16, 4
CAP, PER_WINDOW, WINDOW_S = 4, 16, 5.0  # a five-second "minute" keeps the test short
PRICE, BUDGET = 0.01, 0.40  # 40 of the 64 images fit

PIPELINE = {
    "name": "hosted_stills",
    "description": "A concept and a hosted image per variant (the cross-process limits test).",
    "stages": [{"name": "concept", "kind": "concept"}, {"name": "draft_image", "kind": "image", "settings": {"short_side": 256}}],
    "max_variants_per_run": CHUNK,
}


def routing(sim_url: str) -> dict:
    local = yaml.safe_load((PROJECT_ROOT / "config" / "routing.local.yaml").read_text())
    local["providers"]["hosted-image"] = {
        "adapter": "openai-images",
        "base_url": sim_url + "/v1",
        "model": "img-1",
        "api_key_env": "RUNS_KEY",
        "allowed_hosts": [],
        "max_concurrency": CAP,
        "requests_per_minute": PER_WINDOW,
        "price": {"per_image": PRICE},
        "options": {"response_format": "b64_json"},
    }
    local["tasks"]["image"] = {"route": ["hosted-image"]}
    # The subject is the image provider's shared limits: concepts from the phrase bank (the
    # language model would spend minutes writing 64 concepts in four processes on 2 cores).
    local["tasks"]["concept"] = {"route": ["local-concept"]}
    local["defaults"] = {"retry": {"max_attempts": 2, "base_delay_s": 0.05, "max_delay_s": 0.1, "retry_after_cap_s": 0.5}}
    return local


def brief() -> str:
    lines = [
        f"campaign_id: {CAMPAIGN}",
        "pipeline: hosted_stills",
        "product: Aurora desk lamp",
        "audience: night owls who read in bed",
        "tone: Warm",
        "palette: ['#1b1f3b', '#f4a259']",
        f"budget_usd: {BUDGET}",
        "variants:",
    ]
    lines += [f"  - {{id: v{i:02d}, locale: en-US, aspect_ratio: '1:1', duration_s: 6}}" for i in range(VARIANTS)]
    return "\n".join(lines) + "\n"


def run_worker(environment: dict, tags: dict, results) -> None:
    """One run worker: a process of its own that executes one run request's range."""
    os.environ.update(environment)
    from resources.policies import shared_limits

    shared_limits.RATE_WINDOW_S = WINDOW_S
    from orchestration.definitions import build_definitions

    job = build_definitions().resolve_job_def("produce_hosted_stills")
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
        failures = [
            event.dagster_event.step_failure_data.error.to_string()
            for event in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        ]
        results.put({"run_id": result.run_id, "success": result.success, "failures": failures})


@pytest.fixture
def studio(tmp_path, postgres_url, monkeypatch):  # noqa: F811
    """The environment every process shares: STUDIO_HOME, a Dagster home on Postgres, the briefs,
    the pipeline file and the routing file."""
    home, dagster_home, briefs, pipelines = (tmp_path / n for n in ("studio", "dagster", "briefs", "pipelines"))
    for folder in (home, dagster_home, briefs, pipelines):
        folder.mkdir()
    (dagster_home / "dagster.yaml").write_text(
        yaml.safe_dump({"storage": {"postgres": {"postgres_url": postgres_url}}, "telemetry": {"enabled": False}})
    )
    shutil.copy(PROJECT_ROOT / "config" / "pipelines" / "campaign.yaml", pipelines)  # the default pipeline stays loadable
    (pipelines / "hosted_stills.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    (briefs / f"{CAMPAIGN}.yaml").write_text(brief())
    environment = {
        "STUDIO_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "STUDIO_BRIEFS_DIR": str(briefs),
        "STUDIO_PIPELINES_DIR": str(pipelines),
        "STUDIO_ROUTING": str(tmp_path / "routing.yaml"),
        "RUNS_KEY": KEY,
        "STUDIO_ENV": "local",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment, postgres_url


def test_a_campaign_in_four_chunked_runs_on_four_workers_shares_the_providers_limits(studio):
    environment, limits_url = studio
    settings = {"api_key": KEY, "default": {"latency": {"ms": 150}}}
    with ProviderSimulator(SimulatorSettings.from_mapping(settings)) as sim:
        Path(environment["STUDIO_ROUTING"]).write_text(yaml.safe_dump(routing(sim.base_url)))
        from orchestration.definitions import build_definitions
        from resources.brief_source import BriefSource
        from tests.helpers import request_keys

        definitions = build_definitions()
        with dg.DagsterInstance.get() as instance:
            tick = definitions.resolve_sensor_def("brief_sensor")(
                dg.build_sensor_context(instance=instance, resources={"briefs": BriefSource()})
            )
            for request in tick.dynamic_partitions_requests:
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            spans = [request_keys(instance, r, "hosted_stills_variants") for r in tick.run_requests]
            # The sensor asked for the campaign in chunks of 16: four runs, every variant once.
            assert [len(s) for s in spans] == [CHUNK] * WORKERS
            assert sorted(k for s in spans for k in s) == sorted(f"{CAMPAIGN}.v{i:02d}" for i in range(VARIANTS))

            context = multiprocessing.get_context("spawn")
            results = context.Queue()  # held here until the workers are done (see the workers test)
            workers = [context.Process(target=run_worker, args=(environment, dict(r.tags), results)) for r in tick.run_requests]
            for worker in workers:
                worker.start()
            outcomes = [results.get(timeout=400) for _ in workers]
            for worker in workers:
                worker.join(timeout=60)
            stats = sim.stats()

            made = instance.get_materialized_partitions(dg.AssetKey(["hosted_stills", "draft_image"]))
            runs = {o["run_id"]: instance.get_run_by_id(o["run_id"]) for o in outcomes}

    # Four runs, four processes, one Postgres instance.
    assert len(runs) == WORKERS and all(r.tags.get("dagster/asset_partition_range_start") for r in runs.values())
    # Concurrency: four workers each allowing 4 would be 16 in flight; shared, never above 4.
    assert stats["max_in_flight"]["openai_images"] <= CAP, stats["max_in_flight"]
    # Rate: never more than PER_WINDOW requests arrived in any window, all workers together, as
    # the provider counts them (the limiter's shipped allowance covers the late arrivals of a
    # loaded host: 17 arrived in 4.5 s once without it).
    assert max_in_window(stats["starts"]["openai_images"], WINDOW_S) <= PER_WINDOW, sorted(stats["starts"]["openai_images"])
    # Budget: 40 images fit, whichever worker asked; the recorded spend never passes the budget.
    # (The ledger counts every settled call: the 64 local concepts at $0 and the 40 images.)
    totals = SharedLimits(limits_url).totals(CAMPAIGN)
    # Every image paid for is in the response cache (a re-run never pays for it again).
    entries = [json.loads(p.read_text()) for p in Path(environment["STUDIO_HOME"]).rglob("cache/*/*.json")]
    cached_images = [e for e in entries if e.get("provider") == "hosted-image"]
    assert totals["spent_usd"] <= BUDGET + 1e-9 and totals["calls"] == VARIANTS + 40 and len(cached_images) == 40, (
        totals,
        len(cached_images),
    )
    assert stats["statuses"] == {"200": 40}, stats["statuses"]  # the provider answered exactly the 40 it was paid for
    # A run whose every variant got its image records them; a run with refused variants records
    # none (a partition-range output is all or nothing), its paid images wait in the cache. Which
    # runs got all 16 depends on how the 40 paid images fell among them (none, when every run was
    # refused at least once), so the recorded partitions are checked against the runs' outcomes.
    span_of = {span[0]: span for span in spans}
    succeeded = [span_of[runs[o["run_id"]].tags["dagster/asset_partition_range_start"]] for o in outcomes if o["success"]]
    assert set(made) == {key for span in succeeded for key in span} and len(made) <= 40, (sorted(made), len(succeeded))
    # The refused variants failed their runs' model step naming the campaign.
    failed = [o for o in outcomes if not o["success"]]
    assert failed and all(f"campaign '{CAMPAIGN}' budget exceeded" in "".join(o["failures"]) for o in failed), failed[0]["failures"][:1]
    assert SharedLimits(limits_url).slots_held("hosted-image") == 0
