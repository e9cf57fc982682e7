"""The local instance's event log (orchestration/sqlite_event_log.py): Dagster's SQLite event
log with its connections kept open, loaded from the shipped config/dagster.yaml."""

import os
import shutil

import dagster as dg
import pytest

from orchestration.instance import LOCAL_INSTANCE_CONFIG
from orchestration.sqlite_event_log import PooledSqliteEventLogStorage


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["a", "b", "c"]))
def numbers(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"partition": context.partition_key})


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    shutil.copy(LOCAL_INSTANCE_CONFIG, tmp_path / "dagster.yaml")
    return tmp_path


def _materialize(instance: dg.DagsterInstance, partition: str) -> dg.ExecuteInProcessResult:
    return dg.materialize([numbers], instance=instance, partition_key=partition)


def test_the_shipped_config_uses_it_where_dagsters_default_sqlite_log_lives(home):
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, PooledSqliteEventLogStorage)
        result = _materialize(instance, "a")
        assert result.success
    assert (home / "history" / "runs" / "index.db").exists()
    assert (home / "history" / "runs" / f"{result.run_id}.db").exists()


def test_what_it_writes_is_read_at_once_by_another_instance_while_its_connections_stay_open(home):
    with dg.DagsterInstance.get() as writer, dg.DagsterInstance.get() as reader:
        result = _materialize(writer, "b")
        assert writer.event_log_storage._engines  # noqa: SLF001 - kept open, not disposed
        # Another instance (the webserver, a sensor) sees every event, committed.
        assert [e.dagster_event.event_type_value for e in reader.all_logs(result.run_id)] == [
            e.dagster_event.event_type_value for e in writer.all_logs(result.run_id)
        ]
        latest = reader.get_latest_materialization_event(dg.AssetKey("numbers"))
        assert latest.asset_materialization.partition == "b"
        assert latest.asset_materialization.metadata["partition"].value == "b"


def test_open_connections_are_bounded_and_wipe_removes_the_files(home):
    config = (home / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(
        config.replace("class: PooledSqliteEventLogStorage", "class: PooledSqliteEventLogStorage\n  config:\n    open_shards: 3")
    )
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        run_ids = [_materialize(instance, p).run_id for p in ("a", "b", "c", "a", "b")]
        assert len(storage._engines) <= 3  # noqa: SLF001
        assert "index" in storage._engines  # noqa: SLF001 - the most used shard stays open
        # Evicted shards still read (a new connection is opened for them).
        assert all(instance.all_logs(run_id) for run_id in run_ids)

        storage.wipe()
        runs_dir = home / "history" / "runs"
        assert sorted(f for f in os.listdir(runs_dir) if f.endswith(".db")) == ["index.db"]
        assert instance.get_latest_materialization_event(dg.AssetKey("numbers")) is None
        # Still usable after the wipe.
        assert _materialize(instance, "c").success


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_opens_its_own_connections(home):
    with dg.DagsterInstance.get() as instance:
        _materialize(instance, "a")
        pid = os.fork()
        if pid == 0:  # the child: writes through the inherited storage object
            code = 1
            try:
                code = 0 if _materialize(instance, "c").success else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        latest = instance.get_latest_materialization_event(dg.AssetKey("numbers"))
        assert latest.asset_materialization.partition == "c"
        # The parent's own connections still work.
        assert _materialize(instance, "b").success


@dg.asset(partitions_def=dg.StaticPartitionsDefinition([f"p{i}" for i in range(20)]), backfill_policy=dg.BackfillPolicy.single_run())
def many(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"partitions": len(context.partition_keys)})


def test_batches_are_one_transaction_per_shard_and_store_what_single_writes_would(home, monkeypatch):
    from assets.dagster_api import partition_range_tags

    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        batches = []
        original = PooledSqliteEventLogStorage.store_event_batch
        monkeypatch.setattr(
            PooledSqliteEventLogStorage, "store_event_batch", lambda self, events: (batches.append(len(events)), original(self, events))[1]
        )
        result = dg.materialize([many], instance=instance, tags=partition_range_tags("p0", "p19"))
        assert result.success
        assert max(batches) >= 20  # the planned events and the range's materializations came in batches
        records = instance.fetch_materializations(dg.AssetKey("many"), limit=100).records
        assert sorted(r.partition_key for r in records) == sorted(f"p{i}" for i in range(20))
        assert instance.get_materialized_partitions(dg.AssetKey("many")) == {f"p{i}" for i in range(20)}
        with dg.DagsterInstance.get() as reader:  # committed: another instance sees them
            assert len(reader.fetch_materializations(dg.AssetKey("many"), limit=100).records) == 20

        # A batch that fails midway keeps nothing (Dagster then stores the events one by one).
        events = [
            e for e in instance.all_logs(result.run_id) if e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
        ]
        before = len(instance.all_logs(result.run_id))
        broken = [*events[:3], "not an event"]
        with pytest.raises(Exception):  # noqa: B017 (whatever the storage raises, the point is that nothing is stored)
            storage.store_event_batch(broken)
        assert len(instance.all_logs(result.run_id)) == before
        assert storage._batch is None  # noqa: SLF001 - the next write is an ordinary one
        storage.store_event(events[0])
        assert len(instance.all_logs(result.run_id)) == before + 1
