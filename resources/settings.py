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


def routing_config_path() -> Path:
    return Path(os.environ.get("STUDIO_ROUTING") or PROJECT_ROOT / "config" / "routing.local.yaml").resolve()
