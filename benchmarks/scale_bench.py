"""A campaign of 256 and of 1,024 variants spread over 4 run-worker processes, beside the asyncio
bound for the same provider calls, in one invocation.

    .venv/bin/python benchmarks/scale_bench.py [--sizes 256 1024] [--out benchmarks/results]
    make bench-scale

The production shape on one machine: a Dagster instance on Postgres (127.0.0.1:5432, a
database of its own, dropped afterwards) through the storages deploy/dagster.yaml names
(orchestration/postgres_storage.py), the shared limits in that database, the campaign
cut into the brief sensor's runs (`max_variants_per_run`, 16) and four worker processes that
each take the next run from a queue and execute it (as four run workers would), every stage
against the provider simulator (its own process). The bound: the same calls through the
same adapters and the same per-provider caps from a minimal asyncio driver in one process
(no Dagster, no router, no storing, no checks).

Provider latencies and limits (SCALE_LATENCY_MS, SCALE_CAP): a short LLM answer 1 s, an
image 3 s, a refine job 2 s, speech 1 s, a video compose job 3 s; 8 concurrent requests per
provider. With these a campaign is bound by its providers: the bound keeps under one core
busy and takes ~0.56 s a variant at 1,024 (a video job holds its slot for its 3 s and the
adapter's polling), while ours needs ~0.7 CPU s a variant in the workers on the same 2 cores
(docs/benchmarks.md): what is measured is how close the orchestration gets to what the
providers allow.

Reported per size: wall time, variants per hour, ratio to the bound, the share of the
campaign's time each provider had all its slots busy (from the simulator's request and job
spans), the most requests in flight per provider (never above the cap, across all workers),
the event-log writes per variant (events in the runs' logs / variants), each worker's runs
(size, start, seconds) and the tail (from the first worker running out of runs to the last
one finishing), the transactions and new connections per variant in the instance's
database, the simulator's requests per endpoint group on each side (the same calls: a
check on the comparison); and where the CPU went over each timed window, for the bound
and for ours: the machine's busy cores, the simulator's process, the driver, the workers
(each reports its own CPU time), the Postgres server and the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import campaign_bench as cb  # noqa: E402  (the fanout scenario's brief, simulator, routing and bound)

from benchmarks.cpu_accounting import machine_busy_s, postgres_cpu_s, process_cpu_s  # noqa: E402
from benchmarks.environment import MAKEFILE_EXPORTS, export_makefile_defaults  # noqa: E402

SCALE_LATENCY_MS = {"concept": 1000, "image": 3000, "refine": 2000, "voice": 1000, "video": 3000}
SCALE_CAP = 8
WORKERS = 4
CHUNK = 16
# The simulator's endpoint groups per task: request spans for the synchronous APIs, job spans for the queued ones.
GROUPS = {
    "concept": ("openai_chat", "spans"),
    "image": ("openai_images", "spans"),
    "refine": ("comfyui", "job_spans"),
    "voice": ("openai_speech", "spans"),
    "video": ("fal", "job_spans"),
}


def configure_scenario() -> None:
    cb.SIM_LATENCY_MS.update(SCALE_LATENCY_MS)
    cb.PROVIDER_CAP = SCALE_CAP


# --- Postgres --------------------------------------------------------------------------------


def postgres_database() -> tuple[str, Any, Any]:
    """A fresh database on the local server; (its SQLAlchemy URL, a function dropping it, a
    function reading how many transactions and sessions it has seen)."""
    import psycopg2
    from psycopg2 import sql

    server = {
        "host": os.environ.get("PGHOST", "127.0.0.1"),
        "port": int(os.environ.get("PGPORT", "5432")),
        "user": os.environ.get("PGUSER", "postgres"),
    }
    admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **server)
    admin.autocommit = True
    name = f"scale_bench_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop() -> None:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()

    def transactions() -> tuple[int, int]:
        """(transactions, sessions) the database has seen."""
        with admin.cursor() as cursor:
            cursor.execute("SELECT pg_stat_force_next_flush()")  # this backend's counts; the others flush within a second
            cursor.execute("SELECT xact_commit + xact_rollback, sessions FROM pg_stat_database WHERE datname = %s", (name,))
            row = cursor.fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    return f"postgresql+psycopg2://{server['user']}@{server['host']}:{server['port']}/{name}", drop, transactions


# --- where the CPU goes --------------------------------------------------------------------------


class CpuSplit:
    """CPU seconds over a window: the whole machine, the simulator's process, this process,
    the Postgres server, and what the workers report. On 2 cores the simulator (the providers'
    stand-in) shares the machine with what is measured."""

    def __init__(self, sim: Any):
        import psutil

        self._sim = psutil.Process(sim.proc.pid)
        self._start = self._reading()

    def _reading(self) -> tuple[float, float, float, float]:
        sim = self._sim.cpu_times()
        return machine_busy_s(), sim.user + sim.system, process_cpu_s(), postgres_cpu_s()

    def stop(self, seconds: float, variants: int, workers_cpu_s: float = 0.0) -> dict[str, float]:
        end = self._reading()
        machine, sim, driver, postgres = (b - a for a, b in zip(self._start, end, strict=True))
        return {
            "machine_cpu_s": round(machine, 1),
            "cores_busy": round(machine / seconds, 2),
            "simulator_cpu_s": round(sim, 1),
            "driver_cpu_s": round(driver, 1),
            "workers_cpu_s": round(workers_cpu_s, 1),
            "postgres_cpu_s": round(postgres, 1),
            "other_cpu_s": round(machine - sim - driver - workers_cpu_s - postgres, 1),  # the OS, anything else running
            "cpu_s_per_variant": round(machine / variants, 3),
        }


# --- the run workers -------------------------------------------------------------------------


def run_worker(environment: dict[str, str], spans, results) -> None:
    """A run worker: builds the definitions once, then executes runs from the queue until None."""
    os.environ.update(environment)
    import warnings

    warnings.filterwarnings("ignore")
    import dagster as dg

    from orchestration.definitions import build_definitions

    job = build_definitions().resolve_job_def("produce_campaign")
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}, "ops": {"variant_media": {"config": cb.FANOUT_MEDIA}}}
    with dg.DagsterInstance.get() as instance:
        results.put({"ready": os.getpid(), "cpu_s": process_cpu_s()})
        while (span := spans.get()) is not None:
            started, started_at = time.perf_counter(), time.time()
            result = job.execute_in_process(instance=instance, run_config=run_config, tags=span["tags"], raise_on_error=False)
            results.put(
                {
                    "run_id": result.run_id,
                    "success": result.success,
                    "seconds": time.perf_counter() - started,
                    "started_at": started_at,
                    "variants": span["variants"],
                    "pid": os.getpid(),
                }
            )
        results.put({"done": os.getpid(), "cpu_s": process_cpu_s()})


def ours(workdir: Path, variants: int, sim: Any, pg_url: str, transactions: Any = None) -> dict[str, Any]:
    import dagster as dg

    from orchestration.variant_runs import variant_spans

    brief = cb.campaign_brief(f"scale-{variants}", variants, durations=cb.FANOUT_DURATIONS)
    home = workdir / f"ours-{variants}"
    (home / "briefs").mkdir(parents=True)
    (home / "dagster").mkdir()
    (home / "briefs" / f"{brief['campaign_id']}.yaml").write_text(yaml.safe_dump(brief, sort_keys=False))
    (home / "routing.json").write_text(json.dumps(cb.routing_config(sim.base_url)))
    if pg_url:
        # The storages deploy/dagster.yaml names (Dagster's Postgres storages with a connection
        # pool), pointed at this database.
        deployed = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
        instance_config = {
            section: {**deployed[section], "config": {"postgres_url": pg_url}}
            for section in ("run_storage", "event_log_storage", "schedule_storage")
        }
        instance_config["telemetry"] = {"enabled": False}
    else:  # the local instance's SQLite storage, without its one-model-step-at-a-time pool
        instance_config = yaml.safe_load((ROOT / "config" / "dagster.yaml").read_text())
        instance_config.pop("concurrency", None)
        instance_config.pop("run_coordinator", None)
    (home / "dagster" / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
    environment = {
        "STUDIO_HOME": str(home),
        "STUDIO_BRIEFS_DIR": str(home / "briefs"),
        "DAGSTER_HOME": str(home / "dagster"),
        "STUDIO_ROUTING": str(home / "routing.json"),
        cb.BENCH_KEY_ENV: os.environ[cb.BENCH_KEY_ENV],
        **{name: os.environ.get(name, value) for name, value in MAKEFILE_EXPORTS.items()},
    }
    os.environ.update(environment)
    keys = [f"{brief['campaign_id']}.{v['id']}" for v in brief["variants"]]
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("variants", keys)
        ordered = instance.get_dynamic_partitions("variants")
        spans = variant_spans(keys, ordered, CHUNK)

        context = multiprocessing.get_context("spawn")
        queue, results = context.Queue(), context.Queue()
        workers = [context.Process(target=run_worker, args=(environment, queue, results)) for _ in range(WORKERS)]
        for worker in workers:
            worker.start()
        # Timed from when every worker has imported and built the definitions: a worker's start
        # is paid once per deployment, not per campaign.
        workers_cpu_s = 0.0
        for _ in workers:
            ready = results.get(timeout=300)
            assert "ready" in ready
            workers_cpu_s -= ready["cpu_s"]
        before = sim.stats()
        transactions_before = transactions() if transactions else (0, 0)
        cpu = CpuSplit(sim)
        started, wall_started = time.perf_counter(), time.time()
        for span in spans:
            tags = {
                "dagster/asset_partition_range_start": span[0],
                "dagster/asset_partition_range_end": span[-1],
                "campaign": brief["campaign_id"],
            }
            queue.put({"tags": tags, "variants": len(span)})
        for _ in workers:
            queue.put(None)
        runs, finished = [], 0
        while len(runs) < len(spans) or finished < len(workers):
            message = results.get(timeout=3600)
            if "done" in message:
                finished += 1
                workers_cpu_s += message["cpu_s"]
            else:
                runs.append(message)
        seconds, wall_ended = time.perf_counter() - started, time.time()
        cpu_split = cpu.stop(seconds, variants, workers_cpu_s)
        for worker in workers:
            worker.join(timeout=120)
        time.sleep(1.0)  # the exited workers' backends have flushed their counts
        made = tuple(b - a for a, b in zip(transactions_before, transactions(), strict=True)) if transactions else None
        stats = sim.stats()
        events = sum(len(instance.all_logs(run["run_id"])) for run in runs)
    failed = [r["run_id"] for r in runs if not r["success"]]
    by_worker: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        by_worker.setdefault(run["pid"], []).append(run)
    worker_done = [max(r["started_at"] + r["seconds"] for r in worker) for worker in by_worker.values()]
    return {
        "seconds": round(seconds, 2),
        "runs": len(runs),
        "failed_runs": failed,
        "runs_per_worker": sorted(len(worker) for worker in by_worker.values()),
        # Each worker's runs: [variants, start (s into the window), seconds]; the tail is the
        # time between the first worker running out of runs and the last one finishing.
        "worker_runs": [
            [[r["variants"], round(r["started_at"] - wall_started, 1), round(r["seconds"], 1)] for r in by_worker[pid]]
            for pid in sorted(by_worker)
        ],
        "tail_s": round(max(worker_done) - min(worker_done), 1),
        "event_log_writes_per_variant": round(events / variants, 1),
        # Transactions in the instance's database over the window (event log, runs, shared limits).
        "postgres_transactions_per_variant": round(made[0] / variants, 1) if made else None,
        "postgres_connections_per_variant": round(made[1] / variants, 1) if made else None,
        "stats": stats,
        "stats_before": before,
        "window": (wall_started, wall_ended),  # the simulator's spans are wall-clock times
        "cpu": cpu_split,
    }


def saturation(stats: dict[str, Any], window: tuple[float, float], cap: int) -> dict[str, float]:
    """Per task, the share of the window during which the provider had `cap` requests or jobs
    active (from the simulator's spans)."""
    shares = {}
    start, end = window
    for task, (group, kind) in GROUPS.items():
        edges = []
        for a, b in stats.get(kind, {}).get(group, []):
            a, b = max(a, start), min(b, end)
            if b > a:
                edges += [(a, 1), (b, -1)]
        edges.sort()
        active, last, full = 0, start, 0.0
        for at, step in edges:
            if active >= cap:
                full += at - last
            active += step
            last = at
        shares[task] = round(full / (end - start), 3) if end > start else 0.0
    return shares


def bound(variants: int, sim: Any) -> tuple[float, dict[str, float], dict[str, int]]:
    brief = cb.campaign_brief(f"scale-{variants}", variants, durations=cb.FANOUT_DURATIONS)
    cpu = CpuSplit(sim)
    started = time.perf_counter()
    asyncio.run(cb.bound_campaign(brief, cb.routing_config(sim.base_url)))
    seconds = time.perf_counter() - started
    return seconds, cpu.stop(seconds, variants), sim.stats().get("calls_by_group", {})


def main() -> int:
    global WORKERS, CHUNK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--instance", choices=["postgres", "sqlite"], default="postgres", help="the production shape, or the local default's storage"
    )
    parser.add_argument("--chunk", type=int, default=16, help="variants per run (the pipeline's max_variants_per_run)")
    args = parser.parse_args()
    export_makefile_defaults()
    WORKERS, CHUNK = args.workers, args.chunk
    import warnings

    warnings.filterwarnings("ignore")
    configure_scenario()
    os.environ.setdefault(cb.BENCH_KEY_ENV, "sk-bench-not-a-secret")
    cb.warm_up()
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_before": os.getloadavg(),
        },
        "simulator": {"latency_ms": SCALE_LATENCY_MS, "provider_cap": SCALE_CAP, "media": cb.FANOUT_MEDIA},
        "workers": WORKERS,
        "max_variants_per_run": CHUNK,
        "sizes": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    started = time.perf_counter()
    try:
        for variants in args.sizes:
            with cb.simulator(workdir) as sim:
                bound_s, bound_cpu, bound_requests = bound(variants, sim)
            print(f"{variants}: bound {bound_s:.1f} s, cpu {bound_cpu}", flush=True)
            pg_url, drop, transactions = postgres_database() if args.instance == "postgres" else ("", lambda: None, None)
            try:
                with cb.simulator(workdir) as sim:
                    figures = ours(workdir, variants, sim, pg_url, transactions)
            finally:
                drop()
            stats = figures.pop("stats")
            before = figures.pop("stats_before").get("calls_by_group", {})
            window = figures.pop("window")
            row = {
                "variants": variants,
                "bound_s": round(bound_s, 2),
                **figures,
                "ratio_to_bound": round(figures["seconds"] / bound_s, 3),
                "variants_per_hour": round(variants * 3600 / figures["seconds"]),
                "bound_variants_per_hour": round(variants * 3600 / bound_s),
                "max_in_flight": stats.get("max_in_flight", {}),
                "saturated_share": saturation(stats, window, SCALE_CAP),
                "bound_cpu": bound_cpu,
                # The simulator's requests per endpoint group, each side (the same calls: a check on the comparison).
                "requests": {
                    "bound": bound_requests,
                    "ours": {g: n - before.get(g, 0) for g, n in stats.get("calls_by_group", {}).items()},
                },
            }
            results["sizes"].append(row)
            print(
                f"{variants}: ours {row['seconds']:.1f} s over {WORKERS} workers ({row['runs']} runs, failed {len(row['failed_runs'])}), "
                f"ratio {row['ratio_to_bound']:.3f}, {row['variants_per_hour']} variants/h, saturated {row['saturated_share']}, "
                f"max in flight {row['max_in_flight']}, {row['event_log_writes_per_variant']} event-log writes and "
                f"{row['postgres_transactions_per_variant']} Postgres transactions ({row['postgres_connections_per_variant']} connections) a variant, cpu {row['cpu']}, "
                f"requests {row['requests']}, tail {row['tail_s']} s, worker runs {row['worker_runs']}",
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["total_s"] = round(time.perf_counter() - started, 1)
    results["machine"]["load_after"] = os.getloadavg()
    lines = [
        "| variants | bound | ours (4 workers) | ratio | variants/hour | saturated (share of time, per task) | max in flight | event-log writes a variant | tail |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["sizes"]:
        lines.append(
            f"| {row['variants']} | {row['bound_s']:.1f} s | {row['seconds']:.1f} s ({row['runs']} runs) | **{row['ratio_to_bound']:.2f}** | "
            f"{row['variants_per_hour']:,} | {', '.join(f'{k} {v:.0%}' for k, v in row['saturated_share'].items())} | "
            f"{max(row['max_in_flight'].values()) if row['max_in_flight'] else '-'} | {row['event_log_writes_per_variant']} | {row['tail_s']} s |"
        )
    lines += [
        "",
        "Where the CPU went (CPU seconds over the timed window; `other` is every process not named):",
        "",
        "| variants | run | cores busy | simulator | driver | workers | Postgres | other | CPU s a variant |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["sizes"]:
        for name, split in (("bound", row["bound_cpu"]), ("ours", row["cpu"])):
            lines.append(
                f"| {row['variants']} | {name} | {split['cores_busy']:.2f} | {split['simulator_cpu_s']:.0f} | {split['driver_cpu_s']:.0f} | "
                f"{split['workers_cpu_s']:.0f} | {split['postgres_cpu_s']:.0f} | {split['other_cpu_s']:.0f} | {split['cpu_s_per_variant']:.2f} |"
            )
    table = "\n".join(lines)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "scale.md").write_text(f"# Scale benchmark ({results['total_s']} s, {os.cpu_count()} cores)\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
