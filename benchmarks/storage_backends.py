"""How long one campaign takes through Dagster on each storage / instance combination.

    .venv/bin/python benchmarks/storage_backends.py [--campaign aurora-lamp] [--reps 2] [--fast] [--json out.json]

Backends (each run gets a fresh STUDIO_HOME, so no response-cache hits):

* ``local``: filesystem artifacts and manifests, SQLite instance (the embedded default);
* ``s3``: artifacts and manifests in S3 (moto's server on loopback, real HTTP), SQLite instance;
* ``postgres``: filesystem storage, Postgres instance loaded from deploy/dagster.yaml
  (a throwaway database on 127.0.0.1:5432, user postgres, dropped afterwards);
* ``s3+postgres``: the production combination.

The campaign runs as one single-run backfill, in process, like `make demo`
(`--fast`: the tests' 360p24 video instead of 720p30). A warm-up run first
loads torch and the models; it is not counted. Backends are interleaved, each
`--reps` times; the table gives the median and the best wall time.

Before each run the script waits (up to 60 s) for the machine to be idle, and
prints how many cores other processes used while it ran (``others``; the
moto server is a thread of this process and Postgres's own processes are
not counted as others), so a figure taken on a busy machine shows as such.
Needs the test extra (moto) and psycopg2 (dagster-postgres).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections import defaultdict
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import boto3  # noqa: E402
import dagster as dg  # noqa: E402
import psycopg2  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402
from psycopg2 import sql  # noqa: E402

from assets.dagster_api import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG  # noqa: E402
from benchmarks.cpu_accounting import machine_busy_s, postgres_cpu_s, process_cpu_s  # noqa: E402
from orchestration.definitions import build_definitions  # noqa: E402
from resources.brief_source import BriefSource  # noqa: E402

FAST_VIDEO = {"ops": {"variant_media": {"config": {"synced_video": {"short_side": 360, "fps": 24}}}}}
BACKENDS = ("local", "s3", "postgres", "s3+postgres")
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "password": ""}


@contextlib.contextmanager
def patched_env(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def postgres_instance(home: Path):
    admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    admin.autocommit = True
    name = f"studio_bench_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    env = {
        "DAGSTER_PG_HOST": PG["host"],
        "DAGSTER_PG_PORT": str(PG["port"]),
        "DAGSTER_PG_USER": PG["user"],
        "DAGSTER_PG_PASSWORD": PG["password"],
        "DAGSTER_PG_DB": name,
    }
    try:
        with patched_env(env):
            shutil.copy(PROJECT_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
            instance = dg.DagsterInstance.from_config(str(home))
            try:
                yield instance
            finally:
                instance.dispose()
    finally:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def wait_until_idle(max_wait_s: float = 60.0, threshold_cores: float = 0.3) -> None:
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        busy0, pg0 = machine_busy_s(), postgres_cpu_s()
        time.sleep(1.0)
        if machine_busy_s() - busy0 - (postgres_cpu_s() - pg0) < threshold_cores:
            return


class Load:
    """Cores other processes used during a block (not this process, not postgres)."""

    def __enter__(self):
        self.busy0, self.pg0, self.own0, self.t0 = machine_busy_s(), postgres_cpu_s(), process_cpu_s(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        own = process_cpu_s() - self.own0
        others = machine_busy_s() - self.busy0 - (postgres_cpu_s() - self.pg0) - own
        self.others_cores = max(0.0, others / wall)


def run_once(backend: str, campaign: str, run_config: dict, moto_endpoint: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="studio-bench-") as tmp:
        tmp_path = Path(tmp)
        briefs = tmp_path / "briefs"
        briefs.mkdir()
        shutil.copy(PROJECT_ROOT / "briefs" / f"{campaign}.yaml", briefs)
        (tmp_path / "dagster").mkdir()
        env = {
            "STUDIO_HOME": str(tmp_path / "studio"),
            "DAGSTER_HOME": str(tmp_path / "dagster"),
            "STUDIO_BRIEFS_DIR": str(briefs),
            "STUDIO_ENV": "local",
            "STUDIO_DEPLOY_TARGET": "local",
        }
        bucket = None
        if backend.startswith("s3"):
            bucket = f"bench-{uuid.uuid4().hex[:12]}"
            env.update(
                STUDIO_ENV="s3",
                STUDIO_S3_BUCKET=bucket,
                STUDIO_S3_PREFIX="bench",
                AWS_ENDPOINT_URL=moto_endpoint,
                AWS_REGION="us-east-1",
                AWS_ACCESS_KEY_ID="testing",
                AWS_SECRET_ACCESS_KEY="testing",
            )
            boto3.client(
                "s3", endpoint_url=moto_endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
            ).create_bucket(Bucket=bucket)
        with patched_env(env):
            instance_cm = postgres_instance(tmp_path / "dagster") if backend.endswith("postgres") else dg.instance_for_test()
            with instance_cm as instance:
                [brief_file] = [b for b in BriefSource().scan() if b.brief and b.brief.campaign_id == campaign]
                keys = brief_file.brief.partition_keys()
                instance.add_dynamic_partitions("variants", keys)
                ordered = [k for k in instance.get_dynamic_partitions("variants") if k in keys]
                wait_until_idle()
                with Load() as load:
                    started = time.perf_counter()
                    job = build_definitions().resolve_job_def("produce_campaign")
                    result = job.execute_in_process(
                        instance=instance,
                        run_config=run_config,
                        tags={PARTITION_RANGE_START_TAG: ordered[0], PARTITION_RANGE_END_TAG: ordered[-1]},
                        raise_on_error=False,
                    )
                    wall = time.perf_counter() - started
                steps = {e.step_key: e.event_specific_data.duration_ms / 1000 for e in result.get_step_success_events()}
                if not result.success:
                    raise SystemExit(f"{backend}: run failed")
    return {
        "backend": backend,
        "variants": len(keys),
        "wall_s": round(wall, 2),
        "others_cores": round(load.others_cores, 2),
        "steps_s": {k: round(v, 2) for k, v in steps.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaign", default="aurora-lamp")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--fast", action="store_true", help="360p24 video (the tests' setting) instead of 720p30")
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="only these (repeatable)")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    run_config = {**(FAST_VIDEO if args.fast else {}), **quiet}
    backends = args.backend or list(BACKENDS)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        run_once("local", args.campaign, run_config, endpoint)  # warm-up: imports, model loads
        runs = [run_once(b, args.campaign, run_config, endpoint) for _ in range(args.reps) for b in backends]
    finally:
        server.stop()

    print(
        f"{args.campaign}, {runs[0]['variants']} variants, video {'360p24' if args.fast else '720p30'}, "
        f"{args.reps} rep(s) each, interleaved; cpu count {os.cpu_count()}"
    )
    by_backend: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_backend[run["backend"]].append(run)
    step_names = list(runs[0]["steps_s"])
    print("wall s per run (others' cores): " + "; ".join(f"{r['backend']} {r['wall_s']:.1f} ({r['others_cores']:.2f})" for r in runs))
    print(f"{'backend':12s} {'median s':>9s} {'best s':>7s} {'others':>7s}  " + "  ".join(f"{s[:13]:>13s}" for s in step_names))
    for backend, items in by_backend.items():
        wall = statistics.median(r["wall_s"] for r in items)
        best = min(r["wall_s"] for r in items)
        others = max(r["others_cores"] for r in items)
        steps = [statistics.median(r["steps_s"][s] for r in items) for s in step_names]
        print(f"{backend:12s} {wall:9.2f} {best:7.2f} {others:7.2f}  " + "  ".join(f"{v:13.2f}" for v in steps))
    print("(step columns: median seconds per step for the whole campaign; others: most cores other processes used in a run)")
    if args.json:
        args.json.write_text(json.dumps({"fast": args.fast, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
