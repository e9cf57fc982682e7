"""This environment's pipelines, Dagster instance and storage, for the commands that read what runs
wrote, outside a run (`studio brief validate`, `studio review`, `studio history`, `pin`, `unpin`).

Heavy imports (Dagster, the pipelines) happen when called, so `studio --help` stays quick."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dagster as dg

    from assets.stages import Pipeline


def environment_pipelines() -> dict[str, Pipeline]:
    """The pipeline files resolved against the routing config ($STUDIO_PIPELINES_DIR, $STUDIO_ROUTING);
    a ValueError naming the file and field when one is invalid."""
    from orchestration.pipelines import load_pipelines
    from resources.routing_config import load_routing_config
    from resources.settings import pipelines_dir, routing_config_path

    routing_path = routing_config_path()
    return load_pipelines(pipelines_dir(), load_routing_config(routing_path), str(routing_path))


@dataclass
class StudioEnvironment:
    instance: dg.DagsterInstance
    pipelines: dict[str, Pipeline]
    manifests: Any  # the manifest IO manager (files or S3)
    artifacts: Any  # the artifact store (files or S3)


@contextmanager
def studio_environment() -> Iterator[StudioEnvironment]:
    """The pipelines, the instance in $DAGSTER_HOME and the storage of STUDIO_ENV, built once."""
    from orchestration.instance import local_instance
    from orchestration.storage import built_storage

    pipelines = environment_pipelines()
    instance = local_instance()
    with built_storage() as (artifacts, manifests):
        yield StudioEnvironment(instance, pipelines, manifests, artifacts)
