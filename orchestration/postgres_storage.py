"""Dagster's Postgres storages with a small connection pool in each process.

dagster-postgres opens a new connection for every storage call (SQLAlchemy's NullPool), so
that an idle instance holds none; only the webserver's storages keep a pool. A run worker is
not idle: each variant of a run writes about 32 events and reads as many records, and each of
those calls was a new connection, that is a new Postgres server process with cold caches
(95 connections a variant, measured by `make bench-scale`; docs/benchmarks.md).

These are the same storages (tables, migrations, SQL) with up to `POOL_SIZE` connections
per storage kept open between calls in each process, AUTOCOMMIT as before, checked before
use when they sat idle (resources/sql_pool.py) and recycled hourly. A process holds at most
three storages x `POOL_SIZE` idle connections (docs/deploy.md counts them against
`max_connections`). deploy/dagster.yaml and its ECS and Kubernetes variants name them in
place of `storage: postgres`.
"""

from collections.abc import Mapping
from typing import Any

from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

from resources.sql_pool import ping_when_idle

POOL_SIZE = 2
# Connections beyond the pool while a burst needs them (closed when returned).
MAX_OVERFLOW = 8
POOL_RECYCLE_S = 3600


def _use_pool(storage: Any) -> None:
    """Swap the storage's per-call engine for a pooled one (as the webserver's storages do)."""
    per_call = storage._engine
    options = per_call.url.query.get("options")
    storage._engine = ping_when_idle(
        create_pg_engine(
            storage.postgres_url,
            storage._token_provider,
            isolation_level="AUTOCOMMIT",
            pool_size=POOL_SIZE,
            max_overflow=MAX_OVERFLOW,
            pool_recycle=POOL_RECYCLE_S,
            **({"connect_args": {"options": options}} if options else {}),
        )
    )  # a connection the server closed while it sat idle (a restart, a failover) is replaced, not raised
    per_call.dispose()


def _arguments(inst_data: Any, config_value: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "inst_data": inst_data,
        "postgres_url": pg_url_from_config(config_value),  # type: ignore[arg-type]
        "should_autocreate_tables": config_value.get("should_autocreate_tables", True),
        "token_provider": get_token_provider_from_config(config_value),
    }


class _Pooled:
    """What the three pooled storages add to dagster-postgres's: the pool, made on construction
    and from the instance config, closed with the instance."""

    _engine: Any

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        _use_pool(self)

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> Any:
        return cls(**_arguments(inst_data, config_value))

    def dispose(self) -> None:
        super().dispose()  # type: ignore[misc]
        self._engine.dispose()  # the pool's connections close with the instance


class PooledPostgresRunStorage(_Pooled, PostgresRunStorage):
    pass


class PooledPostgresEventLogStorage(_Pooled, PostgresEventLogStorage):
    pass


class PooledPostgresScheduleStorage(_Pooled, PostgresScheduleStorage):
    pass
