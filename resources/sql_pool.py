"""Check a pooled connection before use only when it has sat idle.

SQLAlchemy's `pool_pre_ping` sends a `SELECT 1` on every checkout: one more round trip, and
one more transaction on the server, for every storage call. A run worker checks connections
out hundreds of times a variant (the event log, the shared limits), back to back, and a
profile of four workers on Postgres found the ping about 40 % of the SQL time in Dagster's
event writes. A connection that was in use a moment ago is as alive as a ping would show
(a server that goes away between two calls is equally likely to go between ping and query);
one that sat in the pool through a restart or a failover is not. So only a connection idle
for more than `IDLE_PING_S` is pinged, and a dead one is replaced before the caller sees it
(raising `DisconnectionError` in the checkout event makes the pool discard it and take
another, as `pool_pre_ping` does).
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

IDLE_PING_S = 5.0
_CHECKED_IN_AT = "studio_checked_in_at"


def ping_when_idle(engine: sa.Engine, idle_s: float = IDLE_PING_S) -> sa.Engine:
    """Make `engine`'s pool ping a connection at checkout when it has been idle over `idle_s`."""

    @sa.event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get(_CHECKED_IN_AT)
        if since is None or time.monotonic() - since <= idle_s:
            return  # new, or in use a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise sa.exc.DisconnectionError(f"an idle pooled connection failed its ping: {exc}") from exc
        if not alive:
            raise sa.exc.DisconnectionError("an idle pooled connection failed its ping")

    return engine
