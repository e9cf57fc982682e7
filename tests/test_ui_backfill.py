"""A backfill launched the way the UI launches it, over a partition whose outputs are unchanged.

The UI's *Materialize* over selected partitions sends GraphQL's `launchPartitionBackfill`
with an asset selection; the backfill daemon then submits the run and follows the
backfill until every targeted asset partition is materialized or failed. A run that
reuses every stage's stored output (assets/reuse.py) must still record a materialization
of each stage, marked `reused`, or the daemon finds partitions with no status once the
run has ended and marks the backfill COMPLETED_FAILED although the run succeeded.

The code location is the project's workspace.yaml, served by a gRPC code server as in
`dagster dev`; the run goes through the instance's DefaultRunLauncher (a run worker
process); the daemon's iteration function is called here instead of every 30 s.
"""

import logging
import time

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._daemon.backfill import execute_backfill_iteration
from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION
from dagster_graphql.test.utils import execute_dagster_graphql

from tests.conftest import PROJECT_ROOT
from tests.helpers import CAMPAIGN_STAGES, FAST_VIDEO, VARIANT_ASSETS, register, run_campaign

pytestmark = pytest.mark.e2e

STAGES = CAMPAIGN_STAGES
KEY = "quick-check.square-en"
BRIEF = """\
campaign_id: quick-check
product: Quick Lamp
audience: night owls who read in bed
tone: Warm
palette: ["#1b1f3b", "#f4a259"]
budget_usd: 5
variants:
  - id: square-en
    locale: en-US
    aspect_ratio: "1:1"
    duration_s: 3
"""
UNFINISHED = {BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING, BulkActionStatus.FAILING}


def _materializations(instance, stage: str) -> list:
    records_filter = dg.AssetRecordsFilter(asset_key=dg.AssetKey(stage), asset_partitions=[KEY])
    return instance.fetch_materializations(records_filter, limit=100).records


def _is_true(value) -> bool:
    return getattr(value, "value", value) is True  # a plain bool or dg.MetadataValue.bool


def test_a_ui_backfill_of_an_unchanged_partition_completes_and_records_reused(studio_home, briefs_folder, caplog):
    (briefs_folder / "quick-check.yaml").write_text(BRIEF)
    caplog.set_level(logging.INFO, logger="ui_backfill")
    with dg.instance_for_test(synchronous_run_coordinator=True) as instance:
        assert register(instance) == [KEY]
        assert run_campaign(instance, [KEY]).success
        before = {stage: len(_materializations(instance, stage)) for stage in STAGES}
        assert before == {stage: 1 for stage in STAGES}

        target = WorkspaceFileTarget(paths=[str(PROJECT_ROOT / "workspace.yaml")])
        with WorkspaceProcessContext(instance, target) as process_context:
            # 1. What the UI sends: the partition's assets, that partition, the launchpad's config.
            launched = execute_dagster_graphql(
                process_context.create_request_context(),
                LAUNCH_PARTITION_BACKFILL_MUTATION,
                variables={
                    "backfillParams": {
                        "assetSelection": [{"path": [asset]} for asset in VARIANT_ASSETS],
                        "partitionNames": [KEY],
                        "runConfigData": FAST_VIDEO,
                    }
                },
            ).data["launchPartitionBackfill"]
            assert launched["__typename"] == "LaunchBackfillSuccess", launched
            backfill_id = launched["backfillId"]

            # 2. The backfill daemon's iterations, until the backfill is over.
            errors, started = [], time.monotonic()
            while (backfill := instance.get_backfill(backfill_id)).status in UNFINISHED:
                assert time.monotonic() - started < 300, f"backfill still {backfill.status} after 300 s: {errors}"
                errors += [e for e in execute_backfill_iteration(process_context, logging.getLogger("ui_backfill")) if e]
                time.sleep(0.5)
            seconds = time.monotonic() - started

        # 3. The daemon launched one run, and it really ran and succeeded.
        runs = instance.get_runs(filters=dg.RunsFilter.for_backfill(backfill_id))
        assert len(runs) == 1, (runs, errors)
        run = runs[0]
        assert run.status == dg.DagsterRunStatus.SUCCESS, (run.status, errors)
        assert instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS), "no step ran"

        # 4. The backfill completed, with a new materialization of each stage marked `reused`.
        daemon_said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert backfill.status in (BulkActionStatus.COMPLETED_SUCCESS, BulkActionStatus.COMPLETED), (
            f"backfill {backfill.status.value} after {seconds:.0f} s, run {run.run_id} {run.status.value}; daemon: {daemon_said}"
        )
        for stage in STAGES:
            records = _materializations(instance, stage)
            assert len(records) == before[stage] + 1, stage
            latest = records[0]
            assert latest.run_id == run.run_id, stage
            assert _is_true(latest.asset_materialization.metadata.get("reused")), (stage, latest.asset_materialization.metadata)
