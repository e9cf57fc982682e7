"""The UI path, measured: `dagster dev` started from the workspace as `make ui` starts it, beside
`make demo` doing the same work, in one invocation.

  (a) the sample briefs in the watched folder: seconds from `make ui`'s first command until every
      sample variant has its video, against `make demo` producing the same variants (each in a
      fresh STUDIO_HOME); target ratio <= 1.15;
  (b) a one-variant brief (a 6 s spot) dropped into the folder while the UI runs: seconds until its
      video exists (the sensor's interval, the daemon, the run); target <= 20 s;
  (c) one variant launched over GraphQL the way the UI's *Materialize* button launches one
      partition (`launchPipelineExecution` of the assets with a `dagster/partition` tag; the
      partition added the way the UI's *Add partition* does, the sensor stopped so it does not
      launch it too): seconds until the run has succeeded; target <= 15 s;
  (d) a campaign backfill launched from the UI (`launchPartitionBackfill`, 18 variants of 3 s):
      the runs it was cut into, and its overhead beyond the runs' own time (from launch to the
      backfill's completion, less first run start to last run end). The open-source backfill
      daemon loops every 30 s; that wait is reported, not hidden.

Rounds of (a) to (c), make demo and make ui interleaved (default 2; medians), the backfill in the
last. Writes benchmarks/results/ui_path.{json,md}. About 9 minutes on 2 cores.

    .venv/bin/python benchmarks/ui_path_bench.py [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.environment import export_makefile_defaults  # noqa: E402
from tests.webserver_harness import dagster_webserver  # noqa: E402  (the tests' harness: `dagster dev` in its own process group)

SAMPLE_BRIEFS = sorted((PROJECT_ROOT / "briefs").glob("*.yaml"))
REPOSITORY = {"repositoryLocationName": "campaign_studio", "repositoryName": "__repository__"}
VARIANT_ASSETS = ["brief", "concept", "draft_image", "refined_image", "voiceover", "captions", "synced_video"]
POLL_S = 0.25


def brief_text(campaign: str, variants: int, duration_s: int) -> str:
    lines = [
        f"campaign_id: {campaign}",
        "product: Aurora desk lamp",
        "audience: night owls who read in bed",
        "tone: Warm",
        "palette: ['#1b1f3b', '#f4a259']",
        "budget_usd: 20",
        "variants:",
    ]
    lines += [f"  - {{id: v{i:02d}, locale: en-US, aspect_ratio: '1:1', duration_s: {duration_s}}}" for i in range(variants)]
    return "\n".join(lines) + "\n"


def sample_keys() -> list[str]:
    import yaml

    keys = []
    for path in SAMPLE_BRIEFS:
        brief = yaml.safe_load(path.read_text())
        keys += [f"{brief['campaign_id']}.{v['id']}" for v in brief["variants"]]
    return keys


def fresh_studio(root: Path) -> dict[str, str]:
    """A new STUDIO_HOME (its Dagster home not created: `make ui` and `make demo` create it) and a
    briefs folder holding the sample briefs."""
    briefs = root / "briefs"
    briefs.mkdir(parents=True)
    for path in SAMPLE_BRIEFS:
        shutil.copy(path, briefs)
    home = root / "studio"
    return {"STUDIO_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "STUDIO_BRIEFS_DIR": str(briefs), "STUDIO_ENV": "local"}


def video_manifest(env: dict[str, str], key: str) -> Path:
    return Path(env["STUDIO_HOME"]) / "manifests" / "synced_video" / f"{key}.json"


def wait_for(predicate, timeout_s: float, what: str) -> float:
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError(f"{what}: not done after {timeout_s:.0f} s")
        time.sleep(POLL_S)
    return time.perf_counter()


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    answer = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query, "variables": variables or {}}, timeout=60).json()
    if answer.get("errors"):
        raise RuntimeError(f"GraphQL errors: {answer['errors']}")
    return answer["data"]


def run_demo(root: Path) -> dict:
    env = fresh_studio(root)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "orchestration.demo"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"make demo failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    missing = [k for k in sample_keys() if not video_manifest(env, k).exists()]
    if missing:
        raise RuntimeError(f"make demo left no video for {missing}")
    return {"seconds": round(seconds, 2), "runs": sum(" ok in " in line for line in done.stdout.splitlines())}


def sensor_state_id(port: int) -> str:
    data = graphql(
        port,
        """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
        ... on Sensor { sensorState { id } } } }""",
        {"selector": {**REPOSITORY, "sensorName": "brief_sensor"}},
    )
    return data["sensorOrError"]["sensorState"]["id"]


def add_partition(port: int, key: str) -> None:
    data = graphql(
        port,
        """mutation($selector: RepositorySelector!, $name: String!, $key: String!) {
        addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) {
          __typename ... on PythonError { message } ... on UnauthorizedError { message } } }""",
        {"selector": REPOSITORY, "name": "variants", "key": key},
    )
    if data["addDynamicPartition"]["__typename"] != "AddDynamicPartitionSuccess":
        raise RuntimeError(f"addDynamicPartition {key}: {data}")


def ui_path(root: Path, backfill: bool) -> dict:
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
    from dagster._core.execution.backfill import BulkActionStatus

    env = fresh_studio(root)
    keys = sample_keys()
    log = root / "dagster-dev.log"
    out: dict = {}
    started = time.perf_counter()
    # `make ui`: the instance's home and config, then `dagster dev` from the workspace.
    subprocess.run([sys.executable, "-m", "orchestration.instance"], cwd=PROJECT_ROOT, env={**os.environ, **env}, check=True)
    with dagster_webserver(env, log, daemon=True, ready_s=180) as port:
        answering = time.perf_counter()
        finished = wait_for(lambda: all(video_manifest(env, k).exists() for k in keys), 600, "(a) the sample variants' videos")
        os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
        instance = DagsterInstance.get()
        runs = instance.get_runs()
        sensor_runs = [r for r in runs if r.tags.get("dagster/sensor_name") == "brief_sensor"]
        failed = [r.run_id for r in sensor_runs if r.status != DagsterRunStatus.SUCCESS]
        out["a"] = {
            "seconds": round(finished - started, 2),
            "webserver_answering_s": round(answering - started, 2),
            "variants": len(keys),
            "runs": len(sensor_runs),
            "run_variants": sorted(int(r.tags.get("studio/variants", 1)) for r in sensor_runs),
            "failed_runs": failed,
        }
        print(
            f"(a) {len(keys)} sample variants through `make ui`: {out['a']['seconds']:.1f} s "
            f"(webserver answering after {out['a']['webserver_answering_s']:.1f} s; {len(sensor_runs)} runs)",
            flush=True,
        )

        # (b) a new one-variant brief, a 6 s spot.
        briefs = Path(env["STUDIO_BRIEFS_DIR"])
        dropped = time.perf_counter()
        (briefs / "drop-in.yaml").write_text(brief_text("drop-in", 1, 6))
        finished = wait_for(lambda: video_manifest(env, "drop-in.v00").exists(), 300, "(b) the dropped brief's video")
        out["b"] = {"seconds": round(finished - dropped, 2), "duration_s": 6}
        print(f"(b) a dropped one-variant brief (6 s spot) to its video: {out['b']['seconds']:.1f} s", flush=True)

        # (c) the Materialize button for one partition; the sensor stopped first.
        graphql(port, "mutation($id: String!) { stopSensor(id: $id) { __typename } }", {"id": sensor_state_id(port)})
        (briefs / "one-click.yaml").write_text(brief_text("one-click", 1, 6))
        add_partition(port, "one-click.v00")
        clicked = time.perf_counter()
        launched = graphql(
            port,
            """mutation($params: ExecutionParams!) { launchPipelineExecution(executionParams: $params) {
            __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
            {
                "params": {
                    "selector": {**REPOSITORY, "pipelineName": "__ASSET_JOB", "assetSelection": [{"path": [a]} for a in VARIANT_ASSETS]},
                    "mode": "default",
                    "runConfigData": {},
                    "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "one-click.v00"}]},
                }
            },
        )["launchPipelineExecution"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"(c) launch: {launched}")
        run_id = launched["run"]["runId"]
        terminal = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
        finished = wait_for(lambda: instance.get_run_by_id(run_id).status in terminal, 300, "(c) the one-partition run")
        status = instance.get_run_by_id(run_id).status
        out["c"] = {"seconds": round(finished - clicked, 2), "status": status.value, "video": video_manifest(env, "one-click.v00").exists()}
        print(f"(c) Materialize for one partition to run success: {out['c']['seconds']:.1f} s ({status.value})", flush=True)

        if not backfill:
            return out
        # (d) a campaign backfill from the UI: 18 variants of 3 s.
        campaign_keys = [f"backfilled.v{i:02d}" for i in range(18)]
        (briefs / "backfilled.yaml").write_text(brief_text("backfilled", 18, 3))
        for key in campaign_keys:
            add_partition(port, key)
        launched_at = time.perf_counter()
        launched_wall = time.time()
        result = graphql(
            port,
            """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
            __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
            {"params": {"assetSelection": [{"path": [a]} for a in VARIANT_ASSETS], "partitionNames": campaign_keys}},
        )["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"(d) backfill: {result}")
        backfill_id = result["backfillId"]
        unfinished = {BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING, BulkActionStatus.FAILING}
        finished = wait_for(lambda: instance.get_backfill(backfill_id).status not in unfinished, 600, "(d) the backfill")
        backfill_runs = instance.get_run_records(filters=RunsFilter.for_backfill(backfill_id))
        starts = [r.start_time for r in backfill_runs if r.start_time]
        ends = [r.end_time for r in backfill_runs if r.end_time]
        runs_span = max(ends) - min(starts) if starts and ends else float("nan")
        first_start_after = min(starts) - launched_wall if starts else float("nan")
        after_last_end = (launched_wall + (finished - launched_at)) - max(ends) if ends else float("nan")
        out["d"] = {
            "seconds": round(finished - launched_at, 2),
            "status": instance.get_backfill(backfill_id).status.value,
            "runs": len(backfill_runs),
            "run_statuses": sorted(r.dagster_run.status.value for r in backfill_runs),
            "runs_span_s": round(runs_span, 2),
            "overhead_s": round(finished - launched_at - runs_span, 2),
            "launch_to_first_run_start_s": round(first_start_after, 2),
            "last_run_end_to_completed_s": round(after_last_end, 2),
        }
        print(
            f"(d) backfill of 18 variants: {out['d']['runs']} runs, {out['d']['seconds']:.1f} s, of which the runs "
            f"{runs_span:.1f} s; overhead {out['d']['overhead_s']:.1f} s (to the first run's start "
            f"{first_start_after:.1f} s, after the last run's end {after_last_end:.1f} s)",
            flush=True,
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(PROJECT_ROOT / "benchmarks" / "results"))
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds of make demo and make ui (medians); the backfill in the last"
    )
    args = parser.parse_args()
    export_makefile_defaults()
    out: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_before": os.getloadavg()}, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="ui-path-") as tmp:
        for number in range(args.rounds):
            root = Path(tmp) / f"round-{number}"
            demo = run_demo(root / "demo")
            print(f"round {number + 1}: make demo, the same {len(sample_keys())} sample variants: {demo['seconds']:.1f} s", flush=True)
            ui = ui_path(root / "ui", backfill=number == args.rounds - 1)
            out["rounds"].append({"demo": demo, **ui, "ratio_to_demo": round(ui["a"]["seconds"] / demo["seconds"], 3)})
    rounds = out["rounds"]
    median = lambda values: round(statistics.median(values), 2)  # noqa: E731
    out["demo_s"] = median([r["demo"]["seconds"] for r in rounds])
    out["a_s"] = median([r["a"]["seconds"] for r in rounds])
    out["a_ratio_to_demo"] = median([r["ratio_to_demo"] for r in rounds])
    out["b_s"] = median([r["b"]["seconds"] for r in rounds])
    out["c_s"] = median([r["c"]["seconds"] for r in rounds])
    out["d"] = rounds[-1]["d"]
    out["machine"]["load_after"] = os.getloadavg()
    ratios = ", ".join(f"{r['ratio_to_demo']:.2f}" for r in rounds)
    each = lambda key: ", ".join(f"{r[key]['seconds']:.1f}" for r in rounds)  # noqa: E731
    rows = [
        (
            "(a) sample variants: `make ui` / `make demo` (median of the rounds' ratios)",
            f"{out['a_s']:.1f} s / {out['demo_s']:.1f} s; ratios {ratios}: **{out['a_ratio_to_demo']:.2f}**",
            "<= 1.15",
        ),
        ("(b) dropped one-variant brief (6 s spot) to video", f"**{out['b_s']:.1f} s** ({each('b')})", "<= 20 s"),
        ("(c) Materialize one partition (GraphQL) to success", f"**{out['c_s']:.1f} s** ({each('c')})", "<= 15 s"),
        (
            "(d) UI backfill, 18 variants: runs, total, runs' span, overhead",
            f"{out['d']['runs']} runs, {out['d']['seconds']:.1f} s, {out['d']['runs_span_s']:.1f} s, {out['d']['overhead_s']:.1f} s",
            "reported",
        ),
    ]
    table = "| figure | measured | target |\n| --- | --- | --- |\n" + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    print("\n" + table)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ui_path.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    (folder / "ui_path.md").write_text(
        f"# The UI path ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)\n\n{table}\n\n```json\n{json.dumps(out, indent=2, sort_keys=True)}\n```\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
