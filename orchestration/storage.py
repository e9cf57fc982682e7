"""Where artifacts and manifests live, per environment, decided in this one place.

The hooli pattern: one dict keyed by environment name; `STUDIO_ENV` picks
the entry when the definitions are built (never at import). Each entry gives
the same two resource keys, so the assets cannot tell them apart:

- `artifacts`: the artifact store (`put`/`get`, content-addressed bytes);
- `manifest_io_manager`: one JSON manifest per asset partition.

`local` (default): the filesystem under `$STUDIO_HOME`; no keys, no network.
`s3`: a bucket through dagster-aws's `S3Resource`, configured from the
environment with `EnvVar`, so the UI shows variable names, never values:

| variable | required | meaning |
| --- | --- | --- |
| `STUDIO_S3_BUCKET` | yes | bucket for artifacts and manifests |
| `STUDIO_S3_PREFIX` | no (`campaign-studio`) | key prefix inside the bucket |
| `AWS_REGION` / `AWS_DEFAULT_REGION` | no | region of the bucket |
| `AWS_ENDPOINT_URL` | no | another S3 API (MinIO, moto) |

Credentials are never configuration: boto3 takes them from the standard AWS
chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, the ECS task role, the
Kubernetes service account's IAM role).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg
from dagster_aws.s3 import S3Resource

from assets.common import MANIFEST_IO_MANAGER_KEY
from resources.artifact_store import ArtifactStore, S3ArtifactStore
from resources.io_manager import JsonManifestIOManager, S3JsonManifestIOManager
from resources.settings import DEFAULT_S3_PREFIX, studio_env

ARTIFACTS_KEY = "artifacts"


def _env_var_if_set(*names: str) -> dg.EnvVar | None:
    """The first of `names` that is set, as an `EnvVar` (resolved when a run starts)."""
    for name in names:
        if os.environ.get(name):
            return dg.EnvVar(name)
    return None


def _local_storage() -> dict[str, object]:
    return {ARTIFACTS_KEY: ArtifactStore(), MANIFEST_IO_MANAGER_KEY: JsonManifestIOManager()}


def _s3_storage() -> dict[str, object]:
    if not os.environ.get("STUDIO_S3_BUCKET"):
        raise ValueError("STUDIO_ENV=s3 needs STUDIO_S3_BUCKET (the bucket for artifacts and manifests)")
    s3 = S3Resource(
        region_name=_env_var_if_set("AWS_REGION", "AWS_DEFAULT_REGION"),
        endpoint_url=_env_var_if_set("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    )
    bucket = dg.EnvVar("STUDIO_S3_BUCKET")
    prefix = _env_var_if_set("STUDIO_S3_PREFIX") or DEFAULT_S3_PREFIX
    return {
        "s3": s3,
        ARTIFACTS_KEY: S3ArtifactStore(s3=s3, bucket=bucket, prefix=prefix),
        MANIFEST_IO_MANAGER_KEY: S3JsonManifestIOManager(s3=s3, bucket=bucket, prefix=prefix),
    }


# Environment name -> the storage resources it uses. Factories, so that only
# the chosen environment's settings are looked at.
STORAGE_BY_ENVIRONMENT: dict[str, Callable[[], dict[str, object]]] = {
    "local": _local_storage,
    "s3": _s3_storage,
}


def storage_resources(environment: str | None = None) -> dict[str, object]:
    """The storage resources for `environment` (default: `STUDIO_ENV`, read now)."""
    name = environment or studio_env()
    if name not in STORAGE_BY_ENVIRONMENT:
        raise ValueError(f"unknown storage environment {name!r}; expected one of {sorted(STORAGE_BY_ENVIRONMENT)}")
    return STORAGE_BY_ENVIRONMENT[name]()


@contextmanager
def resolved_resource(definitions: dg.Definitions, key: str) -> Iterator[object]:
    """One of the definitions' resources, its `EnvVar`s resolved, for use outside a run
    (the demo's summary reads manifests with `load_manifest`, tests read artifacts with `get`)."""
    with dg.build_resources({key: definitions.resources[key]}) as built:
        yield getattr(built, key)


@contextmanager
def built_storage(environment: str | None = None) -> Iterator[tuple[object, object]]:
    """(artifact store, manifest IO manager) of `environment`, built for use outside a run: the
    review app, `studio review` and `studio history` read what runs wrote."""
    with dg.build_resources(storage_resources(environment)) as built:
        yield getattr(built, ARTIFACTS_KEY), getattr(built, MANIFEST_IO_MANAGER_KEY)
