"""A snapshot of the code location's graph, so a change to it shows up as a reviewable diff.

The Definitions that `dagster dev` loads (orchestration.definitions, with the
shipped config/routing.local.yaml, local storage and executor) are reduced to
what a reviewer should see change: every asset key with its group, kinds,
upstream keys, partitions definition and code version; every check key with
its blocking flag; the jobs with the assets they select; the schedules; the
sensors; the partitions definitions. The test compares that with
tests/data/definitions_snapshot.json and fails with a unified diff.

Re-record after an intended change, then review and commit the JSON's diff:

    STUDIO_UPDATE_SNAPSHOT=1 .venv/bin/pytest tests/test_definitions_snapshot.py

Code versions are recorded by their parts, not as an opaque string. A stage
that calls a model has `<kind code_revision>-<route identity>`
(assets.stage_code_versions): the identity is a 12-hex hash of the routing
config's route for the task (providers, adapter kinds and their registry
versions, models, endpoints, options; resources/routing_config.py
`task_identity`). Nothing in it comes from an installed package's version,
so it is the same on every machine, and a change to it means Dagster will
regenerate that stage (the assets' automation condition watches code
versions): the hash itself is recorded, because that is a change to review.
Unrouted assets record their revision alone; an asset without a code version
records null.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

SNAPSHOT = Path(__file__).parent / "data" / "definitions_snapshot.json"
UPDATE_ENV = "STUDIO_UPDATE_SNAPSHOT"
# What the snapshot is of: the shipped defaults, whatever the shell running the tests says.
UNSET_FOR_SNAPSHOT = ("STUDIO_ROUTING", "STUDIO_ENV", "STUDIO_DEPLOY_TARGET")

_CODE_VERSION = re.compile(r"^(?P<revision>[^-]+)(?:-(?P<route_identity>[0-9a-f]{12}))?$")


def _key(key: dg.AssetKey) -> str:
    return key.to_user_string()


def _code_version(version: str | None) -> dict[str, str] | None:
    if version is None:
        return None
    match = _CODE_VERSION.match(version)
    if match is None:  # a new scheme: recorded whole, so the diff shows it
        return {"unparsed": version}
    return {name: value for name, value in match.groupdict().items() if value is not None}


def _partitions(partitions_def: dg.PartitionsDefinition | None) -> dict[str, Any] | None:
    if partitions_def is None:
        return None
    described: dict[str, Any] = {"type": type(partitions_def).__name__}
    name = getattr(partitions_def, "name", None)
    if name is not None:
        described["name"] = name
    if isinstance(partitions_def, dg.StaticPartitionsDefinition):
        described["keys"] = partitions_def.get_partition_keys()
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        described["cron"] = partitions_def.cron_schedule
    return described


def _partitions_label(described: dict[str, Any] | None) -> str | None:
    if described is None:
        return None
    return f"{described['type']}:{described.get('name', '')}"


def definitions_snapshot(definitions: dg.Definitions) -> dict[str, Any]:
    """What a reviewer should see change in the graph, as plain sorted JSON data."""
    repository = definitions.get_repository_def()
    graph = repository.asset_graph
    partitions_defs: dict[str, dict[str, Any]] = {}

    def partitions(partitions_def: dg.PartitionsDefinition | None) -> str | None:
        described = _partitions(partitions_def)
        label = _partitions_label(described)
        if label is not None:
            partitions_defs[label] = described
        return label

    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=_key):
        node = graph.get(key)
        assets[_key(key)] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "deps": sorted(_key(parent) for parent in node.parent_keys),
            "partitions": partitions(node.partitions_def),
            "code_version": _code_version(node.code_version),
            "materializable": node.is_materializable,
        }

    checks = {}
    for check_key in sorted(graph.asset_check_keys, key=lambda k: k.to_user_string()):
        spec = graph.get_check_spec(check_key)
        checks[check_key.to_user_string()] = {"blocking": spec.blocking, "partitions": partitions(spec.partitions_def)}

    jobs = {}
    for job in sorted(repository.get_all_jobs(), key=lambda j: j.name):
        if job.name.startswith("__"):  # Dagster's implicit all-assets job
            continue
        layer = job.asset_layer
        jobs[job.name] = {
            "assets": sorted(_key(key) for key in layer.selected_asset_keys),
            "checks": sorted(key.to_user_string() for key in layer.asset_graph.asset_check_keys),
            "partitions": partitions(job.partitions_def),
        }

    schedules = {
        schedule.name: {
            "cron": schedule.cron_schedule,
            "job": schedule.job_name,
            "timezone": schedule.execution_timezone,
            "default_status": schedule.default_status.value,
        }
        for schedule in sorted(repository.schedule_defs, key=lambda s: s.name)
    }

    sensors = {}
    for sensor in sorted(repository.sensor_defs, key=lambda s: s.name):
        sensors[sensor.name] = {
            "type": type(sensor).__name__,
            "default_status": sensor.default_status.value,
            "minimum_interval_seconds": sensor.minimum_interval_seconds,
            "jobs": sorted(target.job_name for target in sensor.targets) if sensor.has_jobs else [],
            # An automation sensor targets an asset selection, as Dagster writes it ("*": all).
            "asset_selection": str(sensor.asset_selection) if sensor.asset_selection is not None else None,
        }

    return {
        "assets": assets,
        "checks": checks,
        "jobs": jobs,
        "schedules": schedules,
        "sensors": sensors,
        "partitions_definitions": dict(sorted(partitions_defs.items())),
    }


def _as_text(snapshot: dict[str, Any]) -> str:
    return json.dumps(snapshot, indent=2, sort_keys=True) + "\n"


@pytest.fixture
def shipped_definitions(studio_home, monkeypatch) -> dg.Definitions:
    for name in UNSET_FOR_SNAPSHOT:
        monkeypatch.delenv(name, raising=False)
    from orchestration.definitions import build_definitions

    return build_definitions()


def test_definitions_match_the_recorded_snapshot(shipped_definitions):
    current = _as_text(definitions_snapshot(shipped_definitions))
    if os.environ.get(UPDATE_ENV) == "1":
        SNAPSHOT.write_text(current, encoding="utf-8")
        print(f"re-recorded {SNAPSHOT}")
        return
    if not SNAPSHOT.exists():
        pytest.fail(f"{SNAPSHOT} is missing; record it with `{UPDATE_ENV}=1 .venv/bin/pytest {Path(__file__).name}`")
    recorded = SNAPSHOT.read_text(encoding="utf-8")
    if current != recorded:
        diff = "".join(difflib.unified_diff(recorded.splitlines(True), current.splitlines(True), "recorded", "current", n=2))
        pytest.fail(
            "The Definitions differ from tests/data/definitions_snapshot.json. If the change is intended, re-record with\n"
            f"    {UPDATE_ENV}=1 .venv/bin/pytest tests/{Path(__file__).name}\n"
            f"and commit the JSON with the change.\n\n{diff}"
        )


def test_snapshot_records_what_a_reviewer_needs(shipped_definitions):
    """The reduction itself: keys, blocking flags, code-version parts, partitions are all there."""
    snapshot = definitions_snapshot(shipped_definitions)
    concept = snapshot["assets"]["concept"]
    assert concept["group"] == "campaign" and concept["deps"] and concept["partitions"] == "DynamicPartitionsDefinition:variants"
    assert concept["code_version"]["revision"] and re.fullmatch(r"[0-9a-f]{12}", concept["code_version"]["route_identity"])
    assert "route_identity" not in snapshot["assets"]["brief"]["code_version"]  # unrouted: the revision alone
    assert snapshot["checks"]["synced_video:campaign_within_budget"]["blocking"] is False
    assert snapshot["checks"]["synced_video:av_in_sync"]["blocking"] is True
    assert "synced_video" in snapshot["jobs"]["produce_campaign"]["assets"]
    assert snapshot["partitions_definitions"]["DynamicPartitionsDefinition:variants"] == {
        "type": "DynamicPartitionsDefinition",
        "name": "variants",
    }
    assert snapshot["sensors"]["studio_automation"]["minimum_interval_seconds"] == 30
    assert all(schedule["cron"] for schedule in snapshot["schedules"].values())


def test_code_version_parts():
    assert _code_version("1-810f8950d126") == {"revision": "1", "route_identity": "810f8950d126"}
    assert _code_version("1") == {"revision": "1"}
    assert _code_version(None) is None
    assert _code_version("v2-not-a-hash") == {"unparsed": "v2-not-a-hash"}


def test_a_difference_fails_with_a_readable_diff(shipped_definitions, tmp_path, monkeypatch):
    """A changed graph (here: a check demoted) is reported as a diff naming the check, with how to re-record."""
    snapshot = definitions_snapshot(shipped_definitions)
    snapshot["checks"]["synced_video:av_in_sync"]["blocking"] = False
    stale = tmp_path / "definitions_snapshot.json"
    stale.write_text(_as_text(snapshot), encoding="utf-8")
    monkeypatch.setitem(globals(), "SNAPSHOT", stale)
    monkeypatch.delenv(UPDATE_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception) as failure:
        test_definitions_match_the_recorded_snapshot(shipped_definitions)
    message = str(failure.value)
    assert f"{UPDATE_ENV}=1" in message
    assert '-      "blocking": false' in message and '+      "blocking": true' in message
    assert "synced_video:av_in_sync" in message
