"""A sample campaign on a Postgres-backed Dagster instance loaded from deploy/dagster.yaml.

The test creates its own database (`studio_test_<random>`) on the server at
STUDIO_TEST_PG_HOST:STUDIO_TEST_PG_PORT (default 127.0.0.1:5432) as
STUDIO_TEST_PG_USER (default postgres, trust auth), points the instance at it
through the same environment variables a deployment sets, materializes the
campaign, checks the event log, and drops the database.

Postgres unreachable is a failure, not a skip (CI has it); set
STUDIO_SKIP_POSTGRES=1 to skip on a machine without it.
"""

import os
import shutil
import uuid

import dagster as dg
import psycopg2
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.instance.config import PoolGranularity
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from psycopg2 import sql

from orchestration.postgres_storage import POOL_SIZE, PooledPostgresEventLogStorage, PooledPostgresRunStorage
from resources.io_manager import JsonManifestIOManager
from tests.conftest import PROJECT_ROOT
from tests.helpers import VARIANT_ASSETS, assert_campaign_media, assert_materialized_per_partition, register, run_campaign

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

DEPLOY_INSTANCE_CONFIG = PROJECT_ROOT / "deploy" / "dagster.yaml"


def _server() -> dict[str, object]:
    return {
        "host": os.environ.get("STUDIO_TEST_PG_HOST", "127.0.0.1"),
        "port": int(os.environ.get("STUDIO_TEST_PG_PORT", "5432")),
        "user": os.environ.get("STUDIO_TEST_PG_USER", "postgres"),
        "password": os.environ.get("STUDIO_TEST_PG_PASSWORD", ""),
    }


@pytest.fixture
def postgres_database(monkeypatch):
    """A fresh database for this test, dropped afterwards; DAGSTER_PG_* point at it."""
    if os.environ.get("STUDIO_SKIP_POSTGRES") == "1":
        pytest.skip("STUDIO_SKIP_POSTGRES=1: Postgres-backed instance test skipped")
    server = _server()
    try:
        admin = psycopg2.connect(dbname=os.environ.get("STUDIO_TEST_PG_ADMIN_DB", "postgres"), connect_timeout=5, **server)
    except psycopg2.OperationalError as error:
        admin, reason = None, str(error).strip()
    if admin is None:
        pytest.fail(
            f"Postgres is not reachable at {server['host']}:{server['port']} as {server['user']!r}: {reason}\n"
            "The Postgres-backed instance test needs a server (CI provides one; set "
            "STUDIO_TEST_PG_HOST/PORT/USER/PASSWORD to point elsewhere), or set STUDIO_SKIP_POSTGRES=1 "
            "to skip it on this machine.",
            pytrace=False,
        )
    admin.autocommit = True
    name = f"studio_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    monkeypatch.setenv("DAGSTER_PG_HOST", str(server["host"]))
    monkeypatch.setenv("DAGSTER_PG_PORT", str(server["port"]))
    monkeypatch.setenv("DAGSTER_PG_USER", str(server["user"]))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", str(server["password"]))
    monkeypatch.setenv("DAGSTER_PG_DB", name)
    try:
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def _count_in_database(database: str, query: str, *params) -> int:
    with psycopg2.connect(dbname=database, **_server()) as connection, connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchone()[0]


def test_campaign_on_postgres_instance_from_deploy_config(postgres_database, studio_home, one_campaign, tmp_path):
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(DEPLOY_INSTANCE_CONFIG, home / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        assert instance.run_retries_max_retries == 2
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 4 and pools.pool_granularity == PoolGranularity.OP
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 8

        keys = register(instance)
        assert len(keys) == 4
        result = run_campaign(instance, keys)
        assert result.success
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
        assert_materialized_per_partition(instance, keys)
        assert sorted(instance.get_dynamic_partitions("variants")) == sorted(keys)
        run_events = {entry.dagster_event_type for entry in instance.all_logs(result.run_id) if entry.is_dagster_event}
        assert {dg.DagsterEventType.RUN_START, dg.DagsterEventType.RUN_SUCCESS} <= run_events
    finally:
        instance.dispose()

    # The events really are in this Postgres database: one materialization per asset per variant,
    # plus the campaign roll-up.
    materializations = _count_in_database(
        postgres_database,
        "SELECT count(*) FROM event_logs WHERE dagster_event_type = %s AND run_id = %s",
        "ASSET_MATERIALIZATION",
        result.run_id,
    )
    assert materializations == len(VARIANT_ASSETS) * len(keys) + 1
    assert _count_in_database(postgres_database, "SELECT count(*) FROM runs WHERE status = 'SUCCESS'") == 1
    assert_campaign_media(keys, JsonManifestIOManager().load_manifest)


def _connections_opened_for_40_events(instance: dg.DagsterInstance, asset: str) -> int:
    """New database connections the instance's storages open to record and read 40 events."""
    opened: list[object] = []
    for storage in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
        sa.event.listen(storage._engine, "connect", lambda *_: opened.append(1))
    for i in range(40):
        instance.report_runless_asset_event(dg.AssetObservation(asset, metadata={"i": i}))
    assert len(instance.fetch_observations(dg.AssetKey(asset), limit=100).records) == 40
    return len(opened)


def test_deployed_storages_keep_their_connections_between_calls(postgres_database, tmp_path):
    """dagster-postgres alone opens a connection (a Postgres server process) for every storage
    call; the storages deploy/dagster.yaml names keep a pool per process, on the same tables."""
    per_call_home, pooled_home = tmp_path / "per-call", tmp_path / "pooled"
    per_call_home.mkdir(), pooled_home.mkdir()
    shutil.copy(DEPLOY_INSTANCE_CONFIG, pooled_home / "dagster.yaml")
    deployed = yaml.safe_load(DEPLOY_INSTANCE_CONFIG.read_text())
    plain = {"storage": {"postgres": deployed["run_storage"]["config"]}, "telemetry": {"enabled": False}}
    (per_call_home / "dagster.yaml").write_text(yaml.safe_dump(plain))

    instance = dg.DagsterInstance.from_config(str(per_call_home))
    try:
        assert type(instance.event_log_storage) is PostgresEventLogStorage
        per_call = _connections_opened_for_40_events(instance, "per_call")
    finally:
        instance.dispose()
    instance = dg.DagsterInstance.from_config(str(pooled_home))
    try:
        assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
        assert isinstance(instance.run_storage, PooledPostgresRunStorage)
        pooled = _connections_opened_for_40_events(instance, "pooled")
        # The same database and tables: the pooled instance reads what the other one wrote.
        assert len(instance.fetch_observations(dg.AssetKey("per_call"), limit=100).records) == 40
    finally:
        instance.dispose()
    assert per_call >= 40
    assert pooled <= POOL_SIZE
