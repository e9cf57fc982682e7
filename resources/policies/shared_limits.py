"""Limits every worker shares: the budget ledger, provider slots, request rates and cooldowns.

Run workers are separate processes, often on separate machines (ECS tasks,
Kubernetes pods), so a limit kept in one process's memory or one host's files
is kept N times over by N workers. These four live in SQL tables instead:

- on a Postgres Dagster instance, in the `studio_limits` schema of the
  instance's own database: every worker that runs the instance's runs
  shares them;
- on the embedded default, in a SQLite file under `$STUDIO_HOME`
  (`limits.sqlite`): the processes of one host share it, no server.

One implementation (SQLAlchemy Core, which Dagster already brings) for both;
`shared_limits_for(instance)` is the one place the backend is chosen. The
tables are created and migrated here (`SCHEMA_VERSION`), under a lock, by
whichever process gets there first.

- **Budget** (`reserve`/`settle`/`totals`): a call's estimate is reserved
  before it is made, refused when spend + reservations + estimate would pass
  the campaign's limit; then it becomes the call's actual cost or is
  released. A reservation not settled within `RESERVATION_TTL_S` (its
  process died) no longer counts.
- **Slots** (`try_acquire_slot`/`release_slot`/`renew_slots`): a provider's
  calls in flight, across every worker, stay within its `max_concurrency`.
  A held slot is a row with a lease; the holder's session renews its leases
  while it runs, so a process that dies (SIGKILL, a lost pod) stops renewing
  and its slots lapse after `lease_s`.
- **Rates** (`take_request`): at most `requests_per_minute` calls to a
  provider in any sliding minute, across every worker: a log of the last
  minute's requests per provider, each counted `RATE_SEND_ALLOWANCE_S`
  past the minute so that late arrivals still fit the provider's count.
- **Cooldowns** (`set_cooldown`/`cooldown`): when one worker learns a
  provider is rate limiting, refusing the key or misconfigured, every other
  worker skips it too.

Every change is one short transaction, serialized per key (a Postgres
transaction-level advisory lock; SQLite's `BEGIN IMMEDIATE`). Times are
wall-clock seconds: the hosts' clocks are taken to be NTP-synced, as ECS and
Kubernetes nodes are; leases and cooldowns are long against any skew.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import sqlalchemy as sa

from resources.brief_schema import SLUG_PATTERN
from resources.policies.budget import BudgetExceeded, CampaignBudget
from resources.settings import studio_home
from resources.sql_pool import ping_when_idle

SCHEMA = "studio_limits"
SCHEMA_VERSION = 1
RESERVATION_TTL_S = 3600.0
DEFAULT_LEASE_S = 30.0
RATE_WINDOW_S = 60.0
# A request is counted when the router lets it go and seen by the provider when it arrives; the
# event loop, the connection and the upload come between, longer on a loaded host. Counting each
# for this much past the window keeps the provider's own count (of arrivals) within the limit
# when some arrive late, at the price of ~3 % of a per-minute limit's throughput.
RATE_SEND_ALLOWANCE_S = 2.0
_CAMPAIGN = re.compile(SLUG_PATTERN)  # what a brief's campaign_id may be


def _tables(schema: str | None) -> tuple[sa.MetaData, dict[str, sa.Table]]:
    metadata = sa.MetaData(schema=schema)
    tables = {
        "meta": sa.Table("meta", metadata, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.String(256))),
        "spend": sa.Table(
            "campaign_spend",
            metadata,
            sa.Column("campaign_id", sa.String(64), primary_key=True),
            sa.Column("spent_usd", sa.Float, nullable=False),
            sa.Column("calls", sa.Integer, nullable=False),
        ),
        "reservations": sa.Table(
            "budget_reservations",
            metadata,
            sa.Column("token", sa.String(32), primary_key=True),
            sa.Column("campaign_id", sa.String(64), nullable=False, index=True),
            sa.Column("usd", sa.Float, nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False),
        ),
        "slots": sa.Table(
            "provider_slots",
            metadata,
            sa.Column("token", sa.String(32), primary_key=True),
            sa.Column("provider_id", sa.String(64), nullable=False, index=True),
            sa.Column("holder", sa.String(128), nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False),
        ),
        "requests": sa.Table(
            "provider_requests",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("provider_id", sa.String(64), nullable=False, index=True),
            sa.Column("at", sa.Float, nullable=False),
        ),
        "cooldowns": sa.Table(
            "provider_cooldowns",
            metadata,
            sa.Column("provider_id", sa.String(64), primary_key=True),
            sa.Column("until", sa.Float, nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
        ),
    }
    return metadata, tables


@dataclass(frozen=True)
class Cooldown:
    until: float  # wall clock
    reason: str

    def remaining_s(self, now: float | None = None) -> float:
        return max(0.0, self.until - (time.time() if now is None else now))


class SpendTotals(TypedDict):
    """A campaign's settled spend across every worker."""

    campaign_id: str
    spent_usd: float
    calls: int


class SharedLimits:
    """The four shared limits on one database (see the module docstring)."""

    def __init__(self, url: str, lease_s: float = DEFAULT_LEASE_S, clock: Callable[[], float] = time.time):
        self.url = url
        self.lease_s = lease_s
        self.clock = clock
        self.is_postgres = url.startswith("postgresql")
        self.engine = _engine(url)
        self.metadata, self.t = _tables(SCHEMA if self.is_postgres else None)
        _ensure_schema(self)

    def __repr__(self) -> str:
        return f"SharedLimits({self.engine.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def _locked(self, *keys: str) -> Iterator[sa.Connection]:
        """One transaction, serialized with every other one on the same keys."""
        with self.engine.begin() as conn:
            if self.is_postgres:
                for key in sorted(keys):  # a fixed order: no deadlock between two multi-key transactions
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"{SCHEMA}:{key}"})
            yield conn

    # -- budget ------------------------------------------------------------------------

    @staticmethod
    def _campaign(campaign_id: str) -> str:
        if not isinstance(campaign_id, str) or not _CAMPAIGN.fullmatch(campaign_id):
            raise ValueError(f"not a campaign id: {campaign_id!r}")
        return campaign_id

    def reserve(self, budget: CampaignBudget, estimate_usd: float) -> str:
        """A reservation token, or `BudgetExceeded` naming the campaign, the spend and the limit."""
        campaign, t, now = self._campaign(budget.campaign_id), self.t, self.clock()
        with self._locked(f"budget:{campaign}") as conn:
            conn.execute(t["reservations"].delete().where(t["reservations"].c.expires_at < now))
            spent: float = conn.execute(sa.select(t["spend"].c.spent_usd).where(t["spend"].c.campaign_id == campaign)).scalar() or 0.0
            # An aggregate without GROUP BY answers exactly one row; COALESCE makes it a number.
            reserved: float = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(t["reservations"].c.usd), 0.0)).where(t["reservations"].c.campaign_id == campaign)
            ).scalar_one()
            if spent + reserved + estimate_usd > budget.limit_usd + 1e-9:
                raise BudgetExceeded(campaign, spent, reserved, estimate_usd, budget.limit_usd)
            token = uuid.uuid4().hex
            conn.execute(
                t["reservations"].insert().values(token=token, campaign_id=campaign, usd=estimate_usd, expires_at=now + RESERVATION_TTL_S)
            )
            return token

    def settle(self, campaign_id: str, token: str, actual_usd: float | None) -> None:
        """Turn a reservation into spend (`actual_usd`), or release it (None)."""
        campaign, t = self._campaign(campaign_id), self.t
        with self._locked(f"budget:{campaign}") as conn:
            conn.execute(t["reservations"].delete().where(t["reservations"].c.token == token))
            if actual_usd is None:
                return
            updated = conn.execute(
                t["spend"]
                .update()
                .where(t["spend"].c.campaign_id == campaign)
                .values(spent_usd=t["spend"].c.spent_usd + actual_usd, calls=t["spend"].c.calls + 1)
            ).rowcount
            if not updated:
                conn.execute(t["spend"].insert().values(campaign_id=campaign, spent_usd=actual_usd, calls=1))

    def totals(self, campaign_id: str) -> SpendTotals:
        campaign, t = self._campaign(campaign_id), self.t
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t["spend"].c.spent_usd, t["spend"].c.calls).where(t["spend"].c.campaign_id == campaign)).first()
        return {"campaign_id": campaign, "spent_usd": row.spent_usd if row else 0.0, "calls": row.calls if row else 0}

    # -- slots -------------------------------------------------------------------------

    def try_acquire_slot(self, provider_id: str, capacity: int, holder: str, lease_s: float | None = None) -> str | None:
        """A slot token when fewer than `capacity` unexpired slots are held, else None."""
        t, now, lease_s = self.t, self.clock(), lease_s or self.lease_s
        with self._locked(f"slots:{provider_id}") as conn:
            conn.execute(t["slots"].delete().where(t["slots"].c.provider_id == provider_id, t["slots"].c.expires_at < now))
            held = conn.execute(
                sa.select(sa.func.count()).select_from(t["slots"]).where(t["slots"].c.provider_id == provider_id)
            ).scalar_one()
            if held >= capacity:
                return None
            token = uuid.uuid4().hex
            conn.execute(t["slots"].insert().values(token=token, provider_id=provider_id, holder=holder, expires_at=now + lease_s))
            return token

    def release_slot(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.t["slots"].delete().where(self.t["slots"].c.token == token))

    def renew_slots(self, tokens: list[str], lease_s: float | None = None) -> None:
        if tokens:
            expires_at = self.clock() + (lease_s or self.lease_s)
            with self.engine.begin() as conn:
                conn.execute(self.t["slots"].update().where(self.t["slots"].c.token.in_(tokens)).values(expires_at=expires_at))

    def slots_held(self, provider_id: str) -> int:
        """Unexpired slots of the provider, every worker's."""
        t = self.t
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count())
                .select_from(t["slots"])
                .where(t["slots"].c.provider_id == provider_id, t["slots"].c.expires_at >= self.clock())
            ).scalar_one()

    # -- rates -------------------------------------------------------------------------

    def take_request(self, provider_id: str, per_minute: int) -> float:
        """0 when a request may go now (and it is counted), else the seconds until one may."""
        t, now = self.t, self.clock()
        counted_s = RATE_WINDOW_S + RATE_SEND_ALLOWANCE_S
        with self._locked(f"rate:{provider_id}") as conn:
            requests = t["requests"]
            conn.execute(requests.delete().where(requests.c.provider_id == provider_id, requests.c.at <= now - counted_s))
            recent: Sequence[float] = (
                conn.execute(
                    sa.select(requests.c.at).where(requests.c.provider_id == provider_id).order_by(requests.c.at.desc()).limit(per_minute)
                )
                .scalars()
                .all()
            )
            if len(recent) >= per_minute:
                return max(0.001, recent[-1] + counted_s - now)  # when the oldest of the last `per_minute` stops counting
            conn.execute(requests.insert().values(provider_id=provider_id, at=now))
            return 0.0

    # -- cooldowns ---------------------------------------------------------------------

    def set_cooldown(self, provider_id: str, seconds: float, reason: str) -> None:
        """Cool the provider down for every worker (a longer cooldown already set stands)."""
        t, until = self.t, self.clock() + seconds
        with self._locked(f"cooldown:{provider_id}") as conn:
            current = conn.execute(sa.select(t["cooldowns"].c.until).where(t["cooldowns"].c.provider_id == provider_id)).scalar()
            if current is None:
                conn.execute(t["cooldowns"].insert().values(provider_id=provider_id, until=until, reason=reason))
            elif until > current:
                conn.execute(t["cooldowns"].update().where(t["cooldowns"].c.provider_id == provider_id).values(until=until, reason=reason))

    def cooldown(self, provider_id: str) -> Cooldown | None:
        t = self.t
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t["cooldowns"].c.until, t["cooldowns"].c.reason).where(t["cooldowns"].c.provider_id == provider_id)
            ).first()
        return Cooldown(row.until, row.reason) if row else None

    def clear_cooldowns(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.t["cooldowns"].delete())


_ENGINES: dict[str, sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine(url: str) -> sa.Engine:
    """One engine (connection pool) per database per process."""
    with _ENGINES_LOCK:
        if url not in _ENGINES:
            if url.startswith("sqlite"):
                database = sa.engine.make_url(url).database
                if database and database != ":memory:":
                    Path(database).parent.mkdir(parents=True, exist_ok=True)  # a fresh STUDIO_HOME
                engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

                @sa.event.listens_for(engine, "connect")
                def _connect(dbapi_connection: Any, record: Any) -> None:
                    dbapi_connection.isolation_level = None  # transactions begin as below, not implicitly
                    dbapi_connection.execute("PRAGMA journal_mode=WAL")
                    dbapi_connection.execute("PRAGMA synchronous=NORMAL")

                @sa.event.listens_for(engine, "begin")
                def _begin(conn: sa.Connection) -> None:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock up front: read-then-write is atomic

            else:
                engine = ping_when_idle(sa.create_engine(url, pool_size=4, max_overflow=8))
            _ENGINES[url] = engine
        return _ENGINES[url]


def _ensure_schema(limits: SharedLimits) -> None:
    """Create the tables (and later migrate them) once per database, whoever comes first."""
    meta = limits.t["meta"]
    with limits.engine.begin() as conn:
        if limits.is_postgres:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"{SCHEMA}:migrate"})
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        limits.metadata.create_all(conn, checkfirst=True)
        version = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        if version is None:
            conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        elif int(version) > SCHEMA_VERSION:
            raise RuntimeError(f"{limits!r} holds limits schema version {version}; this code knows up to {SCHEMA_VERSION}: upgrade it")
        # Migrations from older versions go here, each bumping schema_version.


_SHARED: dict[str, SharedLimits] = {}


def shared_limits(url: str) -> SharedLimits:
    """The process's `SharedLimits` for a database URL (schema checked once per process)."""
    with _ENGINES_LOCK:
        existing = _SHARED.get(url)
    if existing is None:
        existing = SharedLimits(url)
        with _ENGINES_LOCK:
            existing = _SHARED.setdefault(url, existing)
    return existing


def local_limits_url() -> str:
    return f"sqlite:///{Path(studio_home()) / 'limits.sqlite'}"


def instance_database_url(instance: Any) -> str | None:
    """The Postgres URL of a Dagster instance's run storage (dagster-postgres keeps it as
    `postgres_url`), or None for any other storage."""
    try:
        storage = instance.run_storage
    except Exception:
        return None
    url = getattr(storage, "postgres_url", None)
    return url if isinstance(url, str) and url.startswith("postgresql") else None


def shared_limits_for(instance: Any = None, url: str = "") -> SharedLimits:
    """Where the shared limits live: the one place this is decided. `url` when given (the
    router's `limits_url`); else the Postgres database of the Dagster instance, when it is
    on Postgres; else SQLite under STUDIO_HOME."""
    return shared_limits(url or (instance_database_url(instance) if instance is not None else None) or local_limits_url())
