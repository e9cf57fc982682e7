"""What a deployment target changes about the definitions: executor and per-stage placement.

`STUDIO_DEPLOY_TARGET` (read when the definitions are built):

- `local` (default) and `ecs`: every step runs in the run's own process
  (`in_process_executor`): one process loads torch and the models once for all
  stages. On ECS the run's task definition decides the machine (see
  deploy/ecs/dagster.yaml and docs/deploy.md).
- `k8s`: every step runs in its own pod (`k8s_job_executor`), so each step
  can be placed on the nodes it needs: a step with a stage whose kind wants an
  accelerator (`StageKind.accelerator`: image, refine, video) on a GPU node,
  the others on CPU nodes. A pipeline's stages share one step (its model
  step, so a variant's stages pipeline): that step gets the GPU pod when any
  of its stages wants one (the `audio` pipeline's does not); `brief`, the
  roll-up and the checks run on CPU pods. The placement is a
  `dagster-k8s/config` value per step.

The stage sources in assets/ stay free of deployment detail. Dagster 1.13's
public API cannot add op tags to a built asset (`AssetsDefinition.with_attributes`
and `map_asset_specs` change asset tags and specs, not the op's tags, and only
op tags reach a step pod), so each asset's `dagster-k8s/config` goes to the
executor's `per_step_k8s_config`, keyed by the asset's op name: the same
schema and the same merge as the op tag, applied by the same executor. The
assets also get an asset tag `studio/accelerator` (via `map_asset_specs`), so
the UI shows, and selections can filter on, where each stage runs.

Steps in their own pods share nothing but the instance and storage, so `k8s`
needs `STUDIO_ENV=s3`; ECS run tasks lose their disk when the run ends, so
`ecs` needs it too.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import dagster as dg

from assets.variant_media import ACCELERATOR_TAG

# The annotation key dagster-k8s reads from op tags (dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY).
K8S_CONFIG_TAG = "dagster-k8s/config"
GPU = "nvidia-gpu"

# A GPU node: the label the NVIDIA GPU operator's feature discovery sets, the
# taint GPU node pools usually carry, one GPU. STUDIO_DEVICE=cuda makes a step
# that lands elsewhere fail at once instead of running slowly on CPU. CPU
# matters too: synced_video's H.264 encode (x264) runs on the CPU. Memory: the
# whole demo peaks at 1.6 GiB RSS in one process; the CUDA context adds ~1 GiB.
GPU_STEP_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "4", "memory": "4Gi", "nvidia.com/gpu": "1"},
            "limits": {"memory": "6Gi", "nvidia.com/gpu": "1"},
        },
        "env": [{"name": "STUDIO_DEVICE", "value": "cuda"}],
    },
    "pod_spec_config": {
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}
# brief, concept, voiceover (espeak-ng), captions: small CPU steps.
CPU_STEP_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"memory": "3Gi"},
        },
        "env": [{"name": "STUDIO_DEVICE", "value": "cpu"}],
    },
}

TARGETS_NEEDING_SHARED_STORAGE = frozenset({"ecs", "k8s"})


def k8s_step_config(wants_gpu: bool) -> dict[str, Any]:
    """The `dagster-k8s/config` value for a step's pod."""
    return copy.deepcopy(GPU_STEP_K8S_CONFIG if wants_gpu else CPU_STEP_K8S_CONFIG)


def step_wants_gpu(assets_def: dg.AssetsDefinition) -> bool:
    """A step goes to a GPU node when any of its assets' stage kinds wants an accelerator."""
    return any(spec.tags.get(ACCELERATOR_TAG) == GPU for spec in assets_def.specs)


def check_storage_for_target(target: str, environment: str) -> None:
    if target in TARGETS_NEEDING_SHARED_STORAGE and environment == "local":
        raise ValueError(
            f"STUDIO_DEPLOY_TARGET={target} needs STUDIO_ENV=s3: "
            + (
                "each step runs in its own pod and they share no filesystem"
                if target == "k8s"
                else "an ECS run task's disk is gone when the run ends"
            )
        )


def apply_deployment_target(assets: Sequence[dg.AssetsDefinition], target: str) -> tuple[list[dg.AssetsDefinition], dg.ExecutorDefinition]:
    """The assets as the target wants them, and the executor to run them with."""
    if target != "k8s":
        # Steps in the run's process: a subprocess per step would re-import torch and
        # reload models for each stage (seconds each on 2 cores); variants run
        # concurrently inside each step instead.
        return list(assets), dg.in_process_executor

    from dagster_k8s import k8s_job_executor  # only a k8s deployment needs the kubernetes client

    return list(assets), k8s_job_executor.configured(k8s_executor_config(assets), name="k8s")


def k8s_executor_config(assets: Sequence[dg.AssetsDefinition]) -> dict[str, Any]:
    """The k8s_job_executor config: each step's `dagster-k8s/config`, keyed by its op (step) name."""
    return {"per_step_k8s_config": {a.node_def.name: k8s_step_config(step_wants_gpu(a)) for a in assets}}
