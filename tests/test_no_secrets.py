"""Nothing secret is written in deploy/ or config/: secrets come from the environment only.

Two checks over every file there:

- text: shapes of real credentials (AWS access key ids, private keys, URLs
  with a password, common API-token formats);
- YAML: any key that names a secret (password, token, api key, access key,
  credential...) must hold a reference, never a value: `{env: NAME}`, an
  environment variable name, a Secrets Manager / SSM ARN, or, for the keys
  that name a secret object (`postgres_password_secret`, `env_secrets`...),
  that object's name.

The scanner itself is tested on planted samples, so a pass means something.
"""

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

SCANNED = [PROJECT_ROOT / "deploy", PROJECT_ROOT / "config"]

TEXT_PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "URL with a password": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@{}]+:[^/\s@{}]+@"),
    "API token": re.compile(
        r"\b(?:sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9-]{10,}"
        r"|hf_[A-Za-z0-9]{30,}|AIza[0-9A-Za-z_-]{35}|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,})"
    ),
}
SECRET_KEY = re.compile(
    r"pass(word|wd)?$|passwd|password|secret|token|api[_-]?key|access[_-]?key|credential|private[_-]?key|valuefrom", re.I
)
# Keys whose values are the *names* of secret objects (Kubernetes Secrets, Secrets Manager tags).
SECRET_OBJECT_NAME_KEYS = {"postgres_password_secret", "env_secrets", "secrets_tag", "secrets_tags", "image_pull_secrets"}
ENV_VAR_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
ENV_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.+)$")  # `NAME=value` in an env_vars list
SECRET_STORE_ARN = re.compile(r"^arn:aws[a-z-]*:(secretsmanager|ssm|kms):")
OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9./]*[a-z0-9])?$")


def _is_reference(key: str, value) -> bool:
    if value is None or value == "" or isinstance(value, bool | int | float):
        return True
    if isinstance(value, dict):
        return set(value) == {"env"} and bool(ENV_VAR_NAME.match(str(value["env"])))
    if isinstance(value, list):
        return all(_is_reference(key, item) for item in value)
    text = str(value)
    if ENV_VAR_NAME.match(text) or SECRET_STORE_ARN.match(text):
        return True
    return key in SECRET_OBJECT_NAME_KEYS and bool(OBJECT_NAME.match(text))


def _yaml_findings(node, path: str = "") -> list[str]:
    findings = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            # A mapping, or a list of mappings, under a secret-ish key (ECS `secrets: [{name, valueFrom}]`) is looked into.
            structured = (isinstance(value, dict) and set(value) != {"env"}) or (
                isinstance(value, list) and any(isinstance(item, dict) for item in value)
            )
            if SECRET_KEY.search(str(key)) and not structured and not _is_reference(str(key), value):
                findings.append(f"{here}: holds a value; use {{env: NAME}}, a variable name or a secret reference")
            elif not (isinstance(value, dict) and set(value) == {"env"}):
                findings.extend(_yaml_findings(value, here))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            findings.extend(_yaml_findings(item, f"{path}[{index}]"))
    elif isinstance(node, str) and (assignment := ENV_ASSIGNMENT.match(node)) and SECRET_KEY.search(assignment[1]):
        findings.append(f"{path}: sets {assignment[1]} to a value; pass the variable by name or as a secret")
    return findings


def scan_file(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    findings = [f"{path.name}: looks like a {label}" for label, pattern in TEXT_PATTERNS.items() if pattern.search(text)]
    if path.suffix in {".yaml", ".yml"}:
        for document in yaml.safe_load_all(text):
            findings.extend(f"{path.name}: {finding}" for finding in _yaml_findings(document))
    return findings


def _scanned_files() -> list[Path]:
    return sorted(p for root in SCANNED for p in root.rglob("*") if p.is_file())


def test_deploy_and_config_hold_no_secret_values():
    files = _scanned_files()
    assert any(p.parent.name == "ecs" for p in files) and any(p.parent.name == "k8s" for p in files)
    findings = [finding for path in files for finding in scan_file(path)]
    assert not findings, "secret-looking values in the repository:\n" + "\n".join(findings)


@pytest.mark.parametrize(
    "planted",
    [
        "aws_access_key_id: AKIAIOSFODNN7EXAMPLE\n",
        "storage:\n  postgres:\n    postgres_db:\n      password: hunter2\n",
        "storage:\n  postgres:\n    postgres_url: postgresql://dagster:hunter2@db:5432/dagster\n",
        "providers:\n  openai:\n    api_key: sk-live-0123456789abcdefghijklmn\n",
        "run_launcher:\n  config:\n    env_vars: [STUDIO_ENV, OPENAI_API_KEY=abc123]\n",
        "run_launcher:\n  config:\n    secrets:\n      - {name: DAGSTER_PG_PASSWORD, valueFrom: hunter2}\n",
        "auth:\n  client_secret: s3cr3t-value\n",
        "provider:\n  api_keys: [OPENAI_API_KEY, abc123]\n",
        "key: |\n  -----BEGIN RSA PRIVATE KEY-----\n  MIIE\n",
        "hf:\n  token: hf_abcdefghijklmnopqrstuvwxyzABCDEFGH\n",
    ],
)
def test_scanner_catches_planted_secrets(planted, tmp_path):
    path = tmp_path / "planted.yaml"
    path.write_text(planted)
    assert scan_file(path), planted


def test_scanner_accepts_references(tmp_path):
    path = tmp_path / "refs.yaml"
    path.write_text(
        "password: {env: DAGSTER_PG_PASSWORD}\n"
        "api_key_env: OPENAI_API_KEY\n"
        "postgres_password_secret: campaign-studio-postgresql\n"
        "env_secrets: [campaign-studio-provider-keys]\n"
        "secrets:\n  - {name: DAGSTER_PG_PASSWORD, valueFrom: 'arn:aws:secretsmanager:us-east-1:000000000000:secret:pg'}\n"
        "max_tokens: 512\n"
    )
    assert scan_file(path) == []
