"""Shared fixtures: every test writes under its own temporary STUDIO_HOME."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_BRIEFS = PROJECT_ROOT / "briefs"


def pytest_configure(config):
    # Each test has its own STUDIO_HOME, but converted model weights (SmolLM2's GGUF dequantized
    # once, ~30 s) are shared by every test and every process they start, as `make demo` shares
    # them: the checkout's .studio/models unless the environment names another folder.
    os.environ.setdefault("STUDIO_MODEL_CACHE", str(PROJECT_ROOT / ".studio" / "models"))


@pytest.fixture
def studio_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "studio"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    (home / "dagster").mkdir(parents=True)
    return home


@pytest.fixture
def briefs_folder(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "briefs"
    folder.mkdir()
    monkeypatch.setenv("STUDIO_BRIEFS_DIR", str(folder))
    return folder


@pytest.fixture
def sample_briefs(briefs_folder) -> Path:
    for path in SAMPLE_BRIEFS.glob("*.yaml"):
        shutil.copy(path, briefs_folder / path.name)
    return briefs_folder


SAMPLE_CAMPAIGN = "aurora-lamp"  # four variants, one per aspect ratio and two locales


@pytest.fixture
def one_campaign(briefs_folder) -> Path:
    """The briefs folder with only the sample campaign in it."""
    shutil.copy(SAMPLE_BRIEFS / f"{SAMPLE_CAMPAIGN}.yaml", briefs_folder)
    return briefs_folder


@pytest.fixture(scope="session")
def sample_campaign(tmp_path_factory):
    """The sample campaign registered and produced once per session (about 30 s on 2 cores): the
    tests that read a good campaign open a view of it (tests/helpers.py: `sample_campaign_view`)
    instead of each producing the same four variants again."""
    from tests.helpers import materialize_sample_campaign

    return materialize_sample_campaign(tmp_path_factory.mktemp("sample-campaign"))
