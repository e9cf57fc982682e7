"""The deployment configs in deploy/ load through Dagster's own config machinery.

- Each dagster.yaml validates as an instance config (`dagster_instance_config`),
  with the environment variables it names set to placeholders.
- Each run launcher's `config` validates against that launcher's schema
  (`process_config` with `EcsRunLauncher.config_type()` / `K8sRunLauncher.config_type()`),
  and its module/class import to that launcher.
- The three files share one Postgres / queue / pools / monitoring / retries setup.
- STUDIO_DEPLOY_TARGET=k8s: every stage's `dagster-k8s/config` validates against
  dagster-k8s's schema, becomes a real Kubernetes Job (GPU stages on GPU nodes),
  and reaches the k8s_job_executor for that stage's step.
"""

import importlib
import json
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type, validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster_aws.ecs import EcsRunLauncher
from dagster_k8s import DagsterK8sJobConfig, K8sRunLauncher, construct_dagster_k8s_job, k8s_job_executor
from dagster_k8s.job import USER_DEFINED_K8S_CONFIG_KEY, USER_DEFINED_K8S_JOB_CONFIG_SCHEMA, get_user_defined_k8s_config
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from assets.variant_media import ACCELERATOR_TAG
from orchestration.definitions import build_definitions
from orchestration.deployment import K8S_CONFIG_TAG, k8s_executor_config, k8s_step_config
from tests.conftest import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
INSTANCE_CONFIGS = {
    "base": DEPLOY / "dagster.yaml",
    "ecs": DEPLOY / "ecs" / "dagster.yaml",
    "k8s": DEPLOY / "k8s" / "dagster.yaml",
}
LAUNCHERS = {"ecs": EcsRunLauncher, "k8s": K8sRunLauncher}
STORAGES = ("run_storage", "event_log_storage", "schedule_storage")
SHARED_SECTIONS = (*STORAGES, "run_coordinator", "concurrency", "run_monitoring", "run_retries")


def _env_names(node) -> set[str]:
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return {name for value in node.values() for name in _env_names(value)}
    if isinstance(node, list):
        return {name for value in node for name in _env_names(value)}
    return set()


@pytest.fixture
def placeholder_env(monkeypatch):
    def set_for(raw: dict) -> None:
        for name in _env_names(raw):
            monkeypatch.setenv(name, "5432" if name.endswith("_PORT") else f"placeholder-{name.lower()}")

    return set_for


@pytest.mark.parametrize("target", sorted(INSTANCE_CONFIGS))
def test_instance_config_validates(target, placeholder_env):
    path = INSTANCE_CONFIGS[target]
    raw = yaml.safe_load(path.read_text())
    placeholder_env(raw)
    config, custom_instance_class = dagster_instance_config(str(path.parent), path.name)
    assert custom_instance_class is None
    # Dagster's Postgres storages, pooled (orchestration/postgres_storage.py), on one database.
    for section, base in zip(STORAGES, (PostgresRunStorage, PostgresEventLogStorage, PostgresScheduleStorage), strict=True):
        storage = config[section]
        assert issubclass(getattr(importlib.import_module(storage["module"]), storage["class"]), base), section
        assert raw[section]["config"]["postgres_db"] == raw["run_storage"]["config"]["postgres_db"], section
    assert "storage" not in config
    assert config["run_monitoring"]["enabled"] is True and config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    assert config["run_retries"]["enabled"] is True and config["run_retries"]["max_retries"] >= 1
    assert config["concurrency"]["pools"]["default_limit"] >= 1
    # Every connection setting is an env reference, never a literal.
    assert all(set(value) == {"env"} for key, value in raw["run_storage"]["config"]["postgres_db"].items() if key != "scheme")


def test_deployment_configs_share_the_base_instance():
    base = yaml.safe_load(INSTANCE_CONFIGS["base"].read_text())
    assert "run_launcher" not in base
    for target in LAUNCHERS:
        raw = yaml.safe_load(INSTANCE_CONFIGS[target].read_text())
        for section in SHARED_SECTIONS:
            assert raw[section] == base[section], f"deploy/{target}/dagster.yaml: {section} differs from deploy/dagster.yaml"


@pytest.mark.parametrize("target", sorted(LAUNCHERS))
def test_run_launcher_config_validates_against_its_schema(target, placeholder_env):
    raw = yaml.safe_load(INSTANCE_CONFIGS[target].read_text())
    placeholder_env(raw)
    launcher = raw["run_launcher"]
    cls = LAUNCHERS[target]
    assert getattr(importlib.import_module(launcher["module"]), launcher["class"]) is cls
    result = process_config(resolve_to_config_type(cls.config_type()), launcher["config"])
    assert result.success, [error.message for error in result.errors]
    value = result.value
    if target == "ecs":
        assert value["task_definition"] == {"env": "STUDIO_ECS_RUN_TASK_DEFINITION"}  # read by the launcher at start
        assert {"name": "DAGSTER_PG_PASSWORD", "valueFrom": "placeholder-studio_pg_password_secret_arn"} in value["secrets"]
        assert {"STUDIO_ENV", "STUDIO_S3_BUCKET", "DAGSTER_PG_HOST"} <= set(value["env_vars"])
    else:
        assert value["postgres_password_secret"] and value["env_secrets"] and value["service_account_name"]


def _k8s_job_for(step_config: dict):
    """What dagster-k8s does with an op's `dagster-k8s/config` tag: parse, validate, build the Job."""
    user_defined = get_user_defined_k8s_config({USER_DEFINED_K8S_CONFIG_KEY: json.dumps(step_config)})
    job_config = DagsterK8sJobConfig(
        job_image="registry.example/campaign-studio:test",
        dagster_home="/opt/dagster/dagster_home",
        instance_config_map="campaign-studio-instance",
    )
    return construct_dagster_k8s_job(job_config, ["dagster", "api", "execute_step"], "dagster-step-test", user_defined, pod_name="step")


def test_k8s_step_config_puts_torch_stages_on_gpu_nodes():
    for wants_gpu in (True, False):
        stage_tags = {K8S_CONFIG_TAG: k8s_step_config(wants_gpu)}
        stage = "gpu step" if wants_gpu else "cpu step"
        assert K8S_CONFIG_TAG == USER_DEFINED_K8S_CONFIG_KEY
        assert validate_config(USER_DEFINED_K8S_JOB_CONFIG_SCHEMA, stage_tags[K8S_CONFIG_TAG]).success, stage
        pod = _k8s_job_for(stage_tags[K8S_CONFIG_TAG]).spec.template.spec
        [container] = pod.containers
        limits = container.resources.limits or {}
        env = {var.name: var.value for var in container.env or []}
        if wants_gpu:
            assert limits["nvidia.com/gpu"] == "1", stage
            assert pod.node_selector == {"nvidia.com/gpu.present": "true"}
            assert [(t.key, t.effect) for t in pod.tolerations] == [("nvidia.com/gpu", "NoSchedule")]
            assert env["STUDIO_DEVICE"] == "cuda"
        else:
            assert "nvidia.com/gpu" not in limits and not pod.node_selector and not pod.tolerations, stage
            assert env["STUDIO_DEVICE"] == "cpu"


def test_k8s_target_builds_per_step_pods_and_needs_s3(studio_home, monkeypatch):
    monkeypatch.setenv("STUDIO_DEPLOY_TARGET", "k8s")
    monkeypatch.delenv("STUDIO_ENV", raising=False)
    with pytest.raises(ValueError, match="STUDIO_DEPLOY_TARGET=k8s needs STUDIO_ENV=s3"):
        build_definitions()
    monkeypatch.setenv("STUDIO_ENV", "s3")
    monkeypatch.setenv("STUDIO_S3_BUCKET", "campaign-media")
    definitions = build_definitions()
    job = definitions.resolve_job_def("produce_campaign")
    assert job.executor_def.name == "k8s"
    # Asset checks are in the graph too, without asset keys of their own: their steps get the default pod.
    assets = [a for a in definitions.resolve_asset_graph().assets_defs if a.keys]
    executor_config = k8s_executor_config(assets)
    # The config the executor was built with passes the executor's own schema.
    assert process_config(k8s_job_executor.config_schema.config_type, executor_config).success
    per_step = executor_config["per_step_k8s_config"]
    assert (
        set(per_step)
        == {a.node_def.name for a in assets}
        == {f"{prefix}{name}" for prefix in ("", "stills__", "audio__") for name in ("brief", "variant_media", "campaign_rollup")}
    )
    # A pipeline's stages pipeline in one step: it gets the GPU pod when a stage's kind wants
    # one (image, refine, video; the audio pipeline has none), the others CPU pods.
    gpu = {name for name, config in per_step.items() if "nvidia.com/gpu" in config["container_config"]["resources"]["limits"]}
    assert gpu == {"variant_media", "stills__variant_media"}
    for a in assets:
        wanted = {spec.tags.get(ACCELERATOR_TAG) for spec in a.specs}
        assert ("nvidia-gpu" in wanted) == (a.node_def.name in gpu), a.node_def.name


@pytest.mark.parametrize("target", ["local", "ecs"])
def test_other_targets_run_steps_in_process(target, studio_home, monkeypatch):
    monkeypatch.setenv("STUDIO_DEPLOY_TARGET", target)
    monkeypatch.setenv("STUDIO_ENV", "s3")
    monkeypatch.setenv("STUDIO_S3_BUCKET", "campaign-media")
    definitions = build_definitions()
    assert definitions.resolve_job_def("produce_campaign").executor_def is dg.in_process_executor
    # The stages still say what they want; nothing places them.
    tags = {
        spec.key.to_user_string(): spec.tags.get(ACCELERATOR_TAG) for a in definitions.resolve_asset_graph().assets_defs for spec in a.specs
    }
    assert tags["refined_image"] == "nvidia-gpu" and tags["captions"] == "cpu"
    monkeypatch.setenv("STUDIO_DEPLOY_TARGET", "nomad")
    with pytest.raises(ValueError, match="STUDIO_DEPLOY_TARGET='nomad' is not one of local, ecs, k8s"):
        build_definitions()


def test_ecs_target_needs_s3(studio_home, monkeypatch):
    monkeypatch.setenv("STUDIO_DEPLOY_TARGET", "ecs")
    monkeypatch.setenv("STUDIO_ENV", "local")
    with pytest.raises(ValueError, match="STUDIO_DEPLOY_TARGET=ecs needs STUDIO_ENV=s3"):
        build_definitions()


def test_deploy_paths_exist():
    assert all(Path(p).is_file() for p in INSTANCE_CONFIGS.values())
