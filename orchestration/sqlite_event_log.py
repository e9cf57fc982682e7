"""The local instance's event log: Dagster's SQLite event log with its connections kept open.

Dagster's `SqliteEventLogStorage` builds a new SQLAlchemy engine and opens a
new SQLite connection for every write, and closing the last connection to a
WAL database checkpoints it. An asset event is written to two databases (the
run's shard and the cross-run index), so each event costs several opens,
commits and checkpoints: ~5 ms here, 2.2 s for the 449 "planned" events that
open a 64-variant run, and most of the op thread's time while the model step
records its materializations and checks (docs/benchmarks.md).

`PooledSqliteEventLogStorage` is the same storage, same files, schema and
migrations (existing homes keep their history), except that each shard's
engine, and one connection to it, is kept between writes for the few most
recently used shards (a run's own and the index). Writes are still one
committed transaction each, with the same synchronous setting, so other
processes (the webserver, the daemon, another run) read them at once and a
killed process loses nothing it had written. Dagster's per-storage lock still
serializes the connections of one process.
"""

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dagster import EventLogEntry, Field
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

from assets.dagster_api import SQLITE_BUSY_TIMEOUT_SECONDS, ConfigurableClassData, SqliteEventLogStorage, StringSource

# The index, the running run's shard, and a few shards the webserver or a sensor reads.
DEFAULT_OPEN_SHARDS = 8


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log storage with one open connection per recently used shard.

    Configured in `config/dagster.yaml`:

        event_log_storage:
          module: orchestration.sqlite_event_log
          class: PooledSqliteEventLogStorage

    `base_dir` defaults to `$DAGSTER_HOME/history/runs`, where Dagster's default
    SQLite event log keeps its files.
    """

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None, open_shards: int = DEFAULT_OPEN_SHARDS):
        # Set before the parent's __init__, which may already write (a new index shard).
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        self._open_shards = max(2, open_shards)
        self._engines_lock = threading.Lock()
        self._batch: _Batch | None = None
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {"base_dir": Field(StringSource, is_required=False), "open_shards": Field(int, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]) -> "PooledSqliteEventLogStorage":
        base_dir = config_value.get("base_dir")
        if not base_dir:
            home = os.environ.get("DAGSTER_HOME")
            if not home:
                raise ValueError("PooledSqliteEventLogStorage: set `base_dir` in its config, or DAGSTER_HOME")
            base_dir = os.path.join(home, "history", "runs")
        return cls(base_dir, inst_data=inst_data, open_shards=config_value.get("open_shards", DEFAULT_OPEN_SHARDS))

    def _engine(self, shard: str) -> Engine:
        with self._engines_lock:
            if self._engines_pid != os.getpid():
                # A forked child must not use its parent's SQLite connections: forget them
                # (closing them here would touch the parent's file locks).
                self._engines = OrderedDict()
                self._engines_pid = os.getpid()
            engine = self._engines.get(shard)
            if engine is not None:
                self._engines.move_to_end(shard)
                return engine
            engine = create_engine(
                self.conn_string_for_shard(shard),
                poolclass=QueuePool,
                pool_size=1,
                max_overflow=2,
                # Used from whichever thread holds the storage's lock (the op's, the event watcher's).
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            self._engines[shard] = engine
            while len(self._engines) > self._open_shards:
                _, evicted = self._engines.popitem(last=False)
                evicted.dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        batch = self._batch
        if batch is not None and batch.thread == threading.get_ident():
            # Inside store_event_batch (which holds the lock): the batch's open transaction on this shard.
            yield batch.connection(shard)
            return
        # As the parent's, without building and disposing an engine for every call.
        with self._db_lock:
            with self._ready_engine(shard).connect() as conn, conn.begin():
                yield conn

    def _ready_engine(self, shard: str) -> Engine:
        """The shard's kept engine, its schema created the first time (call holding `_db_lock`)."""
        engine = self._engine(shard)
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        return engine

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """The same writes as `store_event` for each event, one transaction per shard for the
        whole batch. Dagster hands batches here when `DAGSTER_EVENT_BATCH_SIZE` is set (the
        Makefile sets it): a partition-range output's materializations and a run's planned
        events, hundreds at a time, each otherwise its own commit. On any error nothing of
        the batch is kept and Dagster stores the events one by one."""
        if len(events) <= 1:
            for event in events:
                self.store_event(event)
            return
        with self._db_lock:
            batch = self._batch = _Batch(self, threading.get_ident())
            try:
                for event in events:
                    self.store_event(event)
                batch.commit()
            except BaseException:
                batch.rollback()
                raise
            finally:
                self._batch = None
                batch.close()

    def close_connections(self) -> None:
        """Close every kept connection (before files are removed, and on dispose)."""
        with self._engines_lock:
            engines, self._engines = list(self._engines.values()), OrderedDict()
        for engine in engines:
            engine.dispose()

    def wipe(self) -> None:
        with self._db_lock:
            self.close_connections()
        super().wipe()

    def dispose(self) -> None:
        self.close_connections()
        super().dispose()


class _Batch:
    """The connections of one store_event_batch: one open transaction per shard it touched."""

    def __init__(self, storage: PooledSqliteEventLogStorage, thread: int):
        self.storage, self.thread = storage, thread
        self.connections: dict[str, tuple[Connection, Any]] = {}

    def connection(self, shard: str) -> Connection:
        if shard not in self.connections:
            conn = self.storage._ready_engine(shard).connect()  # noqa: SLF001 - the batch holds the storage's lock
            self.connections[shard] = (conn, conn.begin())
        return self.connections[shard][0]

    def commit(self) -> None:
        for _, transaction in self.connections.values():
            transaction.commit()

    def rollback(self) -> None:
        for _, transaction in self.connections.values():
            if transaction.is_active:
                transaction.rollback()

    def close(self) -> None:
        for conn, _ in self.connections.values():
            conn.close()
