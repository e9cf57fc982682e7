"""Run the review app over this environment's instance, pipelines and storage.

The same sources the definitions use (orchestration/definitions.py): the
Dagster instance of `$DAGSTER_HOME` (SQLite locally, Postgres in a
deployment), the pipeline files and routing config (`STUDIO_PIPELINES_DIR`,
`STUDIO_ROUTING`), and the storage of `STUDIO_ENV` (files under
`$STUDIO_HOME`, or the S3 bucket and prefix). Sign-in comes from the
environment too (auth.py): off a loopback host the app will not start
without it.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3001


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, log_level: str = "info") -> None:
    """Serve until interrupted. Raises ReviewConfigError (naming the variable) before binding
    anything when the settings do not allow `host`."""
    import dagster as dg
    import uvicorn

    from orchestration.components import StudioPipelines
    from orchestration.instance import ensure_dagster_home
    from orchestration.review_app.app import build_app
    from orchestration.review_app.auth import ReviewAuth
    from orchestration.storage import built_storage

    auth = ReviewAuth.from_environment(host)  # first: a refused host starts nothing
    pipelines, _ = StudioPipelines().resolve_pipelines()
    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance, built_storage() as (artifacts, manifests):
        app = build_app(instance=instance, pipelines=pipelines, artifacts=artifacts, manifests=manifests, auth=auth)
        where = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        print(f"review app on {where} (sign-in: {auth.mode}{', reviewer ' + auth.local_user if auth.local_user else ''})", file=sys.stderr)
        uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)


def main(argv: list[str] | None = None) -> int:
    from orchestration.review_app.auth import ReviewConfigError

    parser = argparse.ArgumentParser(prog="python -m orchestration.review_app", description="The review page and gallery (docs/review.md).")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}; any other needs sign-in)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    args = parser.parse_args(argv)
    try:
        serve(args.host, args.port)
    except ReviewConfigError as exc:
        print(f"studio review serve: {exc}", file=sys.stderr)
        return 2
    return 0
