"""Where the project keeps what it writes locally, resolved when asked (never at import).

`STUDIO_HOME` (default `.studio/` in the project root) holds the Dagster home
(SQLite), the artifact store and the manifests. `STUDIO_BRIEFS_DIR` (default
`briefs/` in the project root) is the folder the brief sensor watches.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def studio_home() -> Path:
    return Path(os.environ.get("STUDIO_HOME") or PROJECT_ROOT / ".studio").resolve()


def artifacts_root() -> Path:
    return studio_home() / "artifacts"


def manifests_root() -> Path:
    return studio_home() / "manifests"


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or studio_home() / "dagster").resolve()


def briefs_dir() -> Path:
    return Path(os.environ.get("STUDIO_BRIEFS_DIR") or PROJECT_ROOT / "briefs").resolve()


def pipelines_dir() -> Path:
    """`STUDIO_PIPELINES_DIR` (default `config/pipelines/`): the pipeline files the definitions load."""
    return Path(os.environ.get("STUDIO_PIPELINES_DIR") or PROJECT_ROOT / "config" / "pipelines").resolve()


def routing_config_path() -> Path:
    return Path(os.environ.get("STUDIO_ROUTING") or PROJECT_ROOT / "config" / "routing.local.yaml").resolve()


# Where the project keeps artifacts and manifests: `local` (the filesystem
# under STUDIO_HOME) or `s3` (a bucket through dagster-aws). Read when the
# definitions are built; orchestration/storage.py maps each name to resources.
STUDIO_ENVIRONMENTS = ("local", "s3")
# Where runs execute: `local` (this machine), `ecs` or `k8s`. Read when the
# definitions are built; orchestration/deployment.py holds what each implies.
DEPLOY_TARGETS = ("local", "ecs", "k8s")
DEFAULT_S3_PREFIX = "campaign-studio"


def _choice(variable: str, allowed: tuple[str, ...]) -> str:
    value = (os.environ.get(variable) or allowed[0]).strip().lower()
    if value not in allowed:
        raise ValueError(f"{variable}={value!r} is not one of {', '.join(allowed)}")
    return value


def studio_env() -> str:
    """`STUDIO_ENV`: `local` (default) or `s3`."""
    return _choice("STUDIO_ENV", STUDIO_ENVIRONMENTS)


def deploy_target() -> str:
    """`STUDIO_DEPLOY_TARGET`: `local` (default), `ecs` or `k8s`."""
    return _choice("STUDIO_DEPLOY_TARGET", DEPLOY_TARGETS)
