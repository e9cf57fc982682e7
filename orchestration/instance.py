"""The local Dagster home: `$STUDIO_HOME/dagster`, seeded with the project's `config/dagster.yaml`."""

import os
import shutil
import sys

import dagster as dg

from resources.settings import PROJECT_ROOT, dagster_home

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
    ensure_dagster_home()
    return dg.DagsterInstance.get()


if __name__ == "__main__":
    print(ensure_dagster_home(), file=sys.stderr)
