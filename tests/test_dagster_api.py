"""The one module that uses Dagster's private and preview APIs is pinned to the Dagster it was written for."""

import ast
from pathlib import Path

import dagster as dg

from assets import dagster_api
from tests.conftest import PROJECT_ROOT

PACKAGES = ("orchestration", "assets", "resources", "model_adapters")


def test_written_for_the_installed_dagster():
    # On an upgrade: re-read assets/dagster_api.py against the new Dagster, then move the pin.
    assert dg.__version__ == dagster_api.WRITTEN_FOR


def test_no_other_module_imports_dagster_privates():
    offenders = []
    for package in PACKAGES:
        for path in (PROJECT_ROOT / package).rglob("*.py"):
            if path == Path(dagster_api.__file__):
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in getattr(node, "names", [])]
                    if isinstance(node, ast.Import)
                    else []
                )
                if any(name.startswith("dagster._") or name.startswith("dagster_k8s.") and "._" in name for name in names):
                    offenders.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}")
            text = path.read_text()
            if "_metadata_accumulator" in text:
                offenders.append(f"{path.relative_to(PROJECT_ROOT)}: the step's metadata accumulator")
    assert offenders == []


def test_private_symbols_still_exist_where_expected():
    assert dagster_api.PARTITION_RANGE_START_TAG == "dagster/asset_partition_range_start"
    assert dagster_api.PARTITION_RANGE_END_TAG == "dagster/asset_partition_range_end"
    assert dagster_api.partition_range_tags("a", "b") == {
        "dagster/asset_partition_range_start": "a",
        "dagster/asset_partition_range_end": "b",
    }
    assert hasattr(dagster_api.SqliteEventLogStorage, "store_event")
    # add_partition_metadata writes to the step's accumulator (else it falls back to the public API).
    import inspect

    from dagster._core.execution.context.system import StepExecutionContext

    source = inspect.getsource(StepExecutionContext)
    assert "self._metadata_accumulator = self._metadata_accumulator.with_additional_asset_metadata(" in source


def test_preview_definitions_are_built_without_warnings(recwarn):
    partitions = dg.DynamicPartitionsDefinition(name="p")
    dagster_api.partitioned_check_spec("c", dg.AssetKey("a"), blocking=True, description="d", partitions_def=partitions)
    assert dagster_api.chunked_backfill_policy(16).max_partitions_per_run == 16
    assert not [w for w in recwarn if issubclass(w.category, (dg.PreviewWarning, dg.BetaWarning))]
