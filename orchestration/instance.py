"""The local Dagster home: `$STUDIO_HOME/dagster`, seeded with the project's `config/dagster.yaml`,
and the recovery of runs whose process died."""

from __future__ import annotations

import os
import shutil
import sys
from typing import TYPE_CHECKING

from resources.settings import PROJECT_ROOT, dagster_home

if TYPE_CHECKING:
    import dagster as dg

LOCAL_INSTANCE_CONFIG = PROJECT_ROOT / "config" / "dagster.yaml"


def ensure_dagster_home() -> str:
    """Create the Dagster home if missing, with the shipped instance config; an existing one is kept."""
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        shutil.copy(LOCAL_INSTANCE_CONFIG, target)
    os.environ["DAGSTER_HOME"] = str(home)
    return str(home)


def local_instance() -> dg.DagsterInstance:
    import dagster as dg  # here, not at the top: `make ui` seeds the home without paying for Dagster's import

    ensure_dagster_home()
    instance = dg.DagsterInstance.get()
    recover_dead_runs(instance)
    return instance


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def recover_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every in-progress run of this machine's instance whose process is
    gone (killed, out of memory) and free the pool slots it held; the run ids.

    A run executed in a process (`make demo`, `studio`, tests) is only ever
    finished by that process: when it dies, the run stays STARTED and keeps its
    `torch` pool slot, so every later model step would wait for it forever. The
    daemon's run monitoring frees slots of runs that have *ended*; this ends the
    dead ones. Only for a local instance: the pid is this machine's.
    """
    import dagster as dg

    recovered = []
    in_progress = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING])
    for run in instance.get_runs(filters=in_progress):
        starts = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
        pids = {entry.dagster_event.pid for entry in starts if entry.dagster_event and entry.dagster_event.pid}
        if not pids or any(_alive(pid) for pid in pids):
            continue
        instance.report_run_failed(run, message=f"the run's process ({', '.join(map(str, sorted(pids)))}) is gone: marked failed")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        recovered.append(run.run_id)
    return recovered


if __name__ == "__main__":
    print(ensure_dagster_home(), file=sys.stderr)
