"""A dry run of one campaign against the provider simulator (`studio simulate --campaign FILE`).

The hosted providers of a routing config (by default the cloud example,
`config/routing.cloud.yaml`) are pointed at a `ProviderSimulator` on
127.0.0.1; every variant of the brief is materialized through Dagster in
this process, in a throwaway STUDIO_HOME and Dagster instance, so nothing of
the user's own home, ledger or cache is touched and no real provider (and no
real key) is ever used. What comes back: the calls the simulator answered per
endpoint group, the cost the ledger recorded (simulated prices from the price
table), the adapter that did each stage, the time taken, next to the
projection from `orchestration.estimate`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resources.brief_schema import Brief
from resources.settings import PROJECT_ROOT, pipelines_dir

CLOUD_ROUTING = PROJECT_ROOT / "config" / "routing.cloud.yaml"
DRY_RUN_KEY = "sim-dry-run-key"


def point_routing_at(simulator_url: str, routing: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of a routing config with every hosted provider's base_url on the simulator,
    and the names of the key variables it uses (the dry run sets them to a throwaway key)."""
    config = yaml.safe_load(yaml.safe_dump(routing))
    key_variables: list[str] = []
    from model_adapters.registry import adapter_kind

    for provider in config.get("providers", {}).values():
        if adapter_kind(provider["adapter"]).local:
            continue
        adapter = provider["adapter"]
        # The simulator serves the OpenAI shapes under /v1 and fal under /fal.
        suffix = "/v1" if adapter.startswith("openai-") else "/fal" if adapter.startswith("fal-") else ""
        provider["base_url"] = simulator_url + suffix
        provider["allowed_hosts"] = []
        if provider.get("api_key_env"):
            key_variables.append(provider["api_key_env"])
    return config, sorted(set(key_variables))


@dataclass
class DryRunReport:
    campaign_id: str
    keys: list[str]
    success: bool
    seconds: float
    calls_by_group: dict[str, int]
    statuses: dict[str, int]
    spent_usd: float
    paid_calls: int
    adapters: dict[str, Counter] = field(default_factory=dict)  # routed stage -> adapter id -> variants
    cost_by_asset: dict[str, float] = field(default_factory=dict)
    model_stages: tuple[str, ...] = ()  # the pipeline's routed stages, in order
    failures: list[str] = field(default_factory=list)
    projection: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        verdict = "ok" if self.success else "FAILED"
        out = [f"dry run of {self.campaign_id}: {len(self.keys)} variant(s), {verdict} in {self.seconds:.1f}s"]
        out.append(f"  simulator calls: {sum(self.calls_by_group.values())}")
        for group, calls in sorted(self.calls_by_group.items()):
            out.append(f"    {group:14s} {calls:5d}")
        out.append("  statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items())))
        out.append(f"  {'stage':14s} {'cost_usd':>10s}  adapters")
        for asset in self.model_stages:
            adapters = ", ".join(f"{a} x{n}" for a, n in sorted(self.adapters.get(asset, Counter()).items()))
            out.append(f"  {asset:14s} {self.cost_by_asset.get(asset, 0.0):10.4f}  {adapters or '-'}")
        out.append(f"  ledger: ${self.spent_usd:.4f} in {self.paid_calls} paid calls (simulated prices)")
        out += [f"  failed: {f}" for f in self.failures]
        if self.projection:
            out.append("  projected by `studio estimate`:")
            out += ["  " + line for line in self.projection]
        return out


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _watch_steps(instance: Any, run_id: str, on_step: Callable[[str], None], stop: threading.Event) -> None:
    """Report each finished step of the run (polls the event log)."""
    from dagster import DagsterEventType

    seen: set[str] = set()
    while True:
        finished = stop.wait(0.5)
        try:
            records = instance.all_logs(run_id, of_type={DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE})
        except Exception:  # noqa: BLE001 - the run may not be stored yet
            records = []
        for record in records:
            step = record.step_key or ""
            if step and step not in seen:
                seen.add(step)
                on_step(step)
        if finished:
            return


def dry_run_campaign(
    brief_path: Path,
    brief: Brief,
    *,
    routing_path: Path | None = None,
    simulator_settings: dict[str, Any] | None = None,
    video_short_side: int = 720,
    keep: Path | None = None,
    on_start: Callable[[int], None] = lambda steps: None,
    on_step: Callable[[str], None] = lambda step: None,
) -> DryRunReport:
    """`on_start(steps)` is called with the number of steps of the run, `on_step(step_key)` as each one ends."""
    import dagster as dg

    from assets.dagster_api import partition_range_tags
    from model_adapters.simulator import ProviderSimulator, SimulatorSettings
    from orchestration.definitions import build_definitions
    from orchestration.estimate import estimate_campaign, projection_lines
    from orchestration.pipelines import load_pipelines, pipeline_for
    from resources.io_manager import JsonManifestIOManager
    from resources.model_router import ModelRouter
    from resources.routing_config import load_routing_config, parse_routing_config

    source = routing_path or CLOUD_ROUTING
    load_routing_config(source)  # the user's file, validated as written (file and field named on error)
    routing_data = yaml.safe_load(Path(source).read_text(encoding="utf-8"))

    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="studio-dry-run-"))
    home, briefs = root / "studio", root / "briefs"
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    briefs.mkdir(parents=True, exist_ok=True)
    shutil.copy(brief_path, briefs / Path(brief_path).name)
    settings = {"api_key": DRY_RUN_KEY, **(simulator_settings or {})}
    try:
        with ProviderSimulator(SimulatorSettings.from_mapping(settings)) as sim:
            config, key_variables = point_routing_at(sim.base_url, routing_data)
            sim_routing = home / "routing.sim.yaml"
            sim_routing.write_text(yaml.safe_dump(config))
            env = {
                "STUDIO_HOME": str(home),
                "DAGSTER_HOME": str(home / "dagster"),
                "STUDIO_BRIEFS_DIR": str(briefs),
                "STUDIO_ENV": "local",
                **{name: DRY_RUN_KEY for name in key_variables},
            }
            with _environment(env):
                routing = parse_routing_config(sim_routing.read_text(), str(sim_routing))
                definitions = build_definitions(sim_routing)
                pipeline = pipeline_for(brief, load_pipelines(pipelines_dir(), routing, str(sim_routing)))
                job = definitions.resolve_job_def(pipeline.produce_job_name)
                keys = brief.partition_keys()
                # A throwaway instance: quiet (no telemetry banner), SQLite in the dry run's home.
                (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
                on_start(len(job.graph.node_dict))
                with dg.DagsterInstance.local_temp(str(home / "dagster")) as instance:
                    instance.add_dynamic_partitions(pipeline.partitions_name, keys)
                    run_id = str(uuid.uuid4())
                    stop = threading.Event()
                    watcher = threading.Thread(target=_watch_steps, args=(instance, run_id, on_step, stop), daemon=True)
                    watcher.start()
                    started = time.perf_counter()
                    try:
                        result = job.execute_in_process(
                            instance=instance,
                            run_id=run_id,
                            run_config={
                                "ops": {
                                    pipeline.named("variant_media"): {
                                        "config": {
                                            stage.name: {"short_side": video_short_side}
                                            for stage in pipeline.stages
                                            if stage.kind.name == "video"
                                        }
                                    }
                                },
                                "loggers": {"console": {"config": {"log_level": "ERROR"}}},
                            },
                            tags=partition_range_tags(keys[0], keys[-1]),
                            raise_on_error=False,
                        )
                    finally:
                        seconds = time.perf_counter() - started
                        stop.set()
                        watcher.join(timeout=5)
                    failures = [
                        f"{event.step_key}: {event.event_specific_data.error.message.strip().splitlines()[0]}"
                        for event in result.all_events
                        if event.is_step_failure and event.event_specific_data and event.event_specific_data.error
                    ]
                stats = sim.stats()
                ledger = ModelRouter.from_config(routing, str(sim_routing)).ledger().totals(brief.campaign_id)
                adapters: dict[str, Counter] = defaultdict(Counter)
                costs: dict[str, float] = defaultdict(float)
                manifests = JsonManifestIOManager()
                model_stages = tuple(stage.name for stage in pipeline.routed_stages)
                for asset in model_stages:
                    for key in keys:
                        try:
                            provenance = manifests.load_manifest(pipeline.key(asset), key).provenance
                        except FileNotFoundError:
                            continue
                        adapters[asset][provenance.adapter_id] += 1
                        costs[asset] += provenance.cost_usd
                projection = projection_lines(brief, estimate_campaign(brief, routing, pipeline))
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return DryRunReport(
        campaign_id=brief.campaign_id,
        keys=keys,
        success=result.success,
        seconds=seconds,
        calls_by_group={g: n for g, n in stats["calls_by_group"].items() if n},
        statuses=dict(stats["statuses"]),
        spent_usd=ledger["spent_usd"],
        paid_calls=ledger["calls"],
        adapters=dict(adapters),
        cost_by_asset=dict(costs),
        failures=failures,
        projection=projection,
        model_stages=model_stages,
    )
