"""Turns the engine's events into what Dagster records: outputs, metadata, check evaluations.

Runs in the op's thread while the engine works in another. A stage is
recorded once it is settled for every variant of the run and every variant
has an output for it (a partition-range output is all or nothing): one
`Output` of {partition: manifest}, each partition's metadata, and one check
evaluation per check and partition, aimed at the materialization it judged.

A variant whose stage was reused (unchanged inputs, assets/reuse.py) is
recorded too: a materialization of the same manifest, marked `reused`, with
the metadata of the one it repeats. So a run that changed nothing still ends
green and the UI shows the partition as materialized by it: a backfill of an
unchanged partition completes. Its checks are not evaluated again: their last
evaluations judged the same manifest and stand (re-recording them would be
one event per check and variant, most of an unchanged re-run's cost).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from assets.checks import check_evaluation
from assets.dagster_api import add_partition_metadata, latest_materializations
from assets.engine import BlockingCheckFailed, Event, Failed, Made, Reused, Settled, UpstreamFailed, Waiting
from assets.reuse import ReusePlan
from assets.stages import CheckOutcome, Pipeline, StageCheck

REUSED_METADATA_KEY = "reused"


class Recorder:
    def __init__(
        self,
        context: dg.AssetExecutionContext,
        pipeline: Pipeline,
        selected: Sequence[str],
        checks: Sequence[StageCheck],
        keys: Sequence[str],
        reuse: ReusePlan | None,
    ):
        self.context, self.pipeline, self.selected, self.keys, self.reuse = context, pipeline, list(selected), list(keys), reuse
        self.checks_by_stage: dict[str, list[StageCheck]] = defaultdict(list)
        for check in checks:
            self.checks_by_stage[check.stage].append(check)
        self.checks = list(checks)
        self.manifests: dict[str, dict[str, Any]] = defaultdict(dict)
        self.metadata: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
        self.outcomes: dict[str, dict[str, Mapping[str, CheckOutcome]]] = defaultdict(dict)
        self.reused: dict[str, set[str]] = defaultdict(set)
        self.failures: dict[str, dict[str, BaseException]] = defaultdict(dict)
        self.stage_seconds: dict[str, float] = defaultdict(float)
        self.complete: list[str] = []
        self.started = time.perf_counter()

    def handle(self, event: Event) -> Iterator[dg.Output | dg.AssetCheckEvaluation]:
        if isinstance(event, Made):
            self.manifests[event.stage][event.key] = event.manifest
            self.metadata[event.stage][event.key] = {**event.metadata, REUSED_METADATA_KEY: False}
            self.outcomes[event.stage][event.key] = event.outcomes
            self.stage_seconds[event.stage] += event.seconds
            if event.blocked:
                self.failures[event.stage][event.key] = BlockingCheckFailed("; ".join(event.blocked))
        elif isinstance(event, Reused):
            self.manifests[event.stage][event.key] = event.manifest
            self.reused[event.stage].add(event.key)
        elif isinstance(event, Failed):
            self.failures[event.stage][event.key] = event.error
        elif isinstance(event, Settled):
            yield from self._record(event.stage)

    def _record(self, stage: str) -> Iterator[dg.Output | dg.AssetCheckEvaluation]:
        if set(self.manifests[stage]) != set(self.keys):
            return  # some variant has no output: nothing of this stage can be recorded in this run
        self.complete.append(stage)
        asset_key = self.pipeline.key(stage)
        reused = self.reused[stage]
        metadata = {}
        for key in self.keys:
            if key in reused:
                recorded = self.reuse.recorded[stage][key].metadata if self.reuse else {}
                metadata[key] = {**recorded, REUSED_METADATA_KEY: True}
            else:
                metadata[key] = self.metadata[stage][key]
        add_partition_metadata(self.context, asset_key, metadata)
        yield dg.Output(self.manifests[stage], output_name=self.context.assets_def.get_output_name_for_asset_key(asset_key))
        # Check results, one per variant made here, against the materialization they judged.
        # A failed blocking one fails the step (Dagster raises once they are recorded). A reused
        # output is not judged again: its last evaluation, of the same manifest, stands (one
        # event per check and variant is most of what an unchanged re-run would cost).
        made = [key for key in self.keys if key not in reused]
        targets = latest_materializations(self.context.instance, asset_key, made) if self.checks_by_stage[stage] and made else {}
        for check in self.checks_by_stage[stage]:
            for key in made:
                yield check_evaluation(asset_key, check.name, check.blocking, key, self.outcomes[stage][key][check.name], targets.get(key))

    def finish(self) -> Iterator[dg.Output]:
        """The check outputs, the run's summary in the log, and the step's failure naming every failed variant."""
        context, keys = self.context, self.keys
        context.log.info(
            f"{len(keys)} variants in {time.perf_counter() - self.started:.1f}s; seconds of stage work per variant: "
            + ", ".join(f"{name} {self.stage_seconds[name] / max(1, len(keys)):.2f}" for name in self.selected)
        )
        unchanged = [stage for stage in self.selected if self.reused[stage] == set(keys) and keys]
        if unchanged:
            context.log.info(f"unchanged, not made again: {', '.join(unchanged)} (recorded as reused; set force to remake them)")
        for check in self.checks:
            yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(check.key))

        lines, failed_keys = [], set()
        for stage in self.selected:
            for key, exc in sorted(self.failures[stage].items()):
                failed_keys.add(key)
                if isinstance(exc, UpstreamFailed):
                    continue  # the root cause is listed under the stage that failed
                if isinstance(exc, Waiting):
                    # Not a failure: the variant goes on when a reviewer approves (assets/approvals.py).
                    context.log.info(f"{stage} [{key}] waits: {exc}")
                    continue
                if isinstance(exc, BlockingCheckFailed):
                    # Its evaluation is recorded; Dagster fails the step for it.
                    context.log.warning(f"{stage} [{key}] failed a blocking check, later stages not made: {exc}")
                    continue
                context.log.error(f"{stage} [{key}] failed: {type(exc).__name__}: {exc}")
                lines.append(f"- {stage} [{key}]: {type(exc).__name__}: {exc}")
        if lines:
            raise dg.Failure(
                description=(
                    f"{len(failed_keys)} of {len(keys)} variants failed; stages complete for every variant "
                    f"({', '.join(self.complete) or 'none'}) are materialized and every stored artifact is kept; "
                    f"re-execute to finish the rest (stored calls are cache hits):\n" + "\n".join(lines)
                ),
                metadata={
                    "failed_partitions": sorted(failed_keys),
                    "succeeded_partitions": sorted(set(keys) - failed_keys),
                    "complete_stages": self.complete,
                },
            )
