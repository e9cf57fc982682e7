"""The `studio` console script: real subprocesses of `.venv/bin/studio` where the process matters
(exit codes, streams, signals), `main(argv)` in-process where the Dagster instance is inspected."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import httpx
import pytest

from orchestration.cli import main
from orchestration.estimate import estimate_campaign
from resources.brief_schema import load_brief
from resources.brief_source import BriefSource
from resources.routing_config import load_routing_config
from tests.conftest import PROJECT_ROOT, SAMPLE_BRIEFS, SAMPLE_CAMPAIGN
from tests.helpers import register

STUDIO = Path(sys.executable).with_name("studio")

MINI_BRIEF = textwrap.dedent(
    """\
    campaign_id: mini-lamp
    product: Aurora Lamp
    audience: night owls who read in bed
    tone: Warm
    palette: ["#1b1f3b", "#f4a259"]
    budget_usd: 5
    variants:
      - id: square-en
        locale: en-US
        aspect_ratio: "1:1"
        duration_s: 4
        tier: standard
    """
)


def studio(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(STUDIO), *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def mini_brief(tmp_path) -> Path:
    path = tmp_path / "incoming" / "mini-lamp.yaml"
    path.parent.mkdir()
    path.write_text(MINI_BRIEF)
    return path


def test_console_script_is_installed_with_help_everywhere(capsys):
    assert STUDIO.exists(), "pip install -e . did not install the `studio` console script"
    top = studio("--help")
    assert top.returncode == 0
    for command in ("brief", "campaign", "estimate", "simulate"):
        assert command in top.stdout
    for argv in (
        ["brief", "--help"],
        ["brief", "validate", "--help"],
        ["campaign", "add", "--help"],
        ["estimate", "--help"],
        ["simulate", "--help"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0, argv
        assert "usage: studio" in capsys.readouterr().out
    missing = studio("brief")
    assert missing.returncode == 2 and "SUBCOMMAND" in missing.stderr


def test_brief_validate_names_file_and_field(tmp_path):
    ok = studio("brief", "validate", *(str(p) for p in sorted(SAMPLE_BRIEFS.glob("*.yaml"))))
    assert ok.returncode == 0, ok.stderr
    assert "aurora-lamp.yaml: ok: campaign aurora-lamp, 4 variant(s)" in ok.stdout
    assert "validating [" in ok.stderr  # the progress bar, one line per file off a terminal

    bad = tmp_path / "bad.yaml"
    text = (SAMPLE_BRIEFS / f"{SAMPLE_CAMPAIGN}.yaml").read_text()
    bad.write_text(text.replace('aspect_ratio: "16:9"', 'aspect_ratio: "4:3"', 1).replace("locale: de-DE", "locale: xx-XX"))
    mixed = studio("brief", "validate", str(SAMPLE_BRIEFS / f"{SAMPLE_CAMPAIGN}.yaml"), str(bad))
    assert mixed.returncode == 2
    assert re.search(rf"{re.escape(str(bad))}: variants\[\d\]\.aspect_ratio: Input should be", mixed.stderr), mixed.stderr
    assert re.search(rf"{re.escape(str(bad))}: variants\[\d\]\.aspect_ratio", mixed.stderr)
    # A well-formed locale no route serves: the routes are checked too, naming variant, locale and tasks.
    unserved = tmp_path / "unserved.yaml"
    unserved.write_text(text.replace("locale: de-DE", "locale: xx-XX"))
    refused = studio("brief", "validate", str(unserved))
    assert refused.returncode == 2
    assert re.search(
        rf"{re.escape(str(unserved))}: variants\[\d\]\.locale: variant '[a-z0-9-]+' asks for xx-XX, which no provider serves for task concept",
        refused.stderr,
    ), refused.stderr
    assert "1 of 2 brief(s) invalid" in mixed.stderr

    missing = studio("brief", "validate", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml: cannot read file" in missing.stderr


def test_campaign_add_copies_registers_and_refuses_conflicts(studio_home, briefs_folder, mini_brief, tmp_path, capsys):
    assert main(["campaign", "add", str(mini_brief)]) == 0
    copied = briefs_folder / "mini-lamp.yaml"
    assert copied.read_text() == MINI_BRIEF
    out = capsys.readouterr().out
    assert "registered 1 new partition(s)" in out and "mini-lamp.square-en" in out
    instance = dg.DagsterInstance.get()
    assert instance.get_dynamic_partitions("variants") == ["mini-lamp.square-en"]

    # Again: nothing to copy, nothing new to register.
    assert main(["campaign", "add", str(mini_brief)]) == 0
    assert "already up to date" in capsys.readouterr().out
    assert instance.get_dynamic_partitions("variants") == ["mini-lamp.square-en"]

    # Another file declaring the same campaign id is refused, and not copied.
    twin = tmp_path / "incoming" / "mini-lamp-copy.yaml"
    twin.write_text(MINI_BRIEF)
    assert main(["campaign", "add", str(twin)]) == 1
    err = capsys.readouterr().err
    assert f"{twin}: campaign_id: 'mini-lamp' is already declared by {copied}" in err
    assert not (briefs_folder / twin.name).exists()

    # A file of the same name that declares another campaign is never overwritten.
    shutil.copy(SAMPLE_BRIEFS / f"{SAMPLE_CAMPAIGN}.yaml", briefs_folder / "clash.yaml")
    clash = tmp_path / "incoming" / "clash.yaml"
    clash.write_text(MINI_BRIEF.replace("campaign_id: mini-lamp", "campaign_id: other-lamp"))
    assert main(["campaign", "add", str(clash)]) == 1
    assert "already exists and declares campaign 'aurora-lamp'; refusing to overwrite" in capsys.readouterr().err
    assert "campaign_id: aurora-lamp" in (briefs_folder / "clash.yaml").read_text()

    # An invalid brief: exit 2, file and field named, nothing copied or registered.
    invalid = tmp_path / "incoming" / "broken.yaml"
    invalid.write_text(MINI_BRIEF.replace("budget_usd: 5", "budget_usd: -1"))
    assert main(["campaign", "add", str(invalid)]) == 2
    assert f"{invalid}: budget_usd: Input should be greater than or equal to 0" in capsys.readouterr().err
    assert not (briefs_folder / "broken.yaml").exists()

    # The brief sensor agrees: it requests the new variants and has no partition left to add.
    result_keys = register(instance)
    assert "mini-lamp.square-en" in result_keys
    assert set(instance.get_dynamic_partitions("variants")) >= {"mini-lamp.square-en"}
    assert BriefSource().find("mini-lamp").path == copied


def test_estimate_wraps_the_price_table(tmp_path):
    brief_path = SAMPLE_BRIEFS / f"{SAMPLE_CAMPAIGN}.yaml"
    cloud = PROJECT_ROOT / "config" / "routing.cloud.yaml"
    home = tmp_path / "studio"
    result = studio("estimate", str(brief_path), "--routing", str(cloud), "--spent", env={"STUDIO_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    projection = estimate_campaign(load_brief(brief_path), load_routing_config(cloud))
    for task, row in projection.items():
        assert re.search(rf"^  {task}\s+{row['calls']}\s+{row['cost_usd']:.4f}\s", result.stdout, re.M), task
    total = sum(row["cost_usd"] for row in projection.values())
    assert re.search(rf"^  total\s+20\s+{total:.4f}  within budget$", result.stdout, re.M)
    assert "aurora-lamp: spent $0.0000 in 0 paid calls" in result.stdout

    broken = tmp_path / "routing.yaml"
    broken.write_text(cloud.read_text().replace("adapter: fal-images", "adapter: sora-x"))
    refused = studio("estimate", str(brief_path), "--routing", str(broken))
    assert refused.returncode == 2
    assert f"{broken}: providers.fal-image.adapter: unknown adapter 'sora-x'" in refused.stderr


def test_simulate_serves_until_interrupted():
    process = subprocess.Popen(
        [str(STUDIO), "simulate", "--port", "0", "--latency-ms", "1"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        first = process.stdout.readline()
        match = re.match(r"provider simulator listening on (http://127\.0\.0\.1:\d+)", first)
        assert match, first + process.stderr.read()
        stats = httpx.get(match.group(1) + "/_sim/stats", timeout=5)
        assert stats.status_code == 200 and "calls_by_group" in stats.json()
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground group
        out, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0
    assert "provider simulator stopped" in out


@pytest.mark.e2e
def test_simulate_dry_run_of_a_campaign(mini_brief, tmp_path):
    home = tmp_path / "untouched"
    result = studio(
        "simulate",
        "--campaign",
        str(mini_brief),
        "--video-short-side",
        "240",
        env={"STUDIO_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")},
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    out = result.stdout
    assert "dry run of mini-lamp: 1 variant(s), ok in" in out
    calls = int(re.search(r"simulator calls: (\d+)", out).group(1))
    assert calls >= 4  # chat, fal submit/poll/result, ElevenLabs
    for group in ("openai_chat", "fal", "elevenlabs"):
        assert re.search(rf"^    {group}\s+\d+$", out, re.M), group
    assert re.search(r"^  draft_image\s+0\.0030  fal-image x1$", out, re.M)
    assert re.search(r"^  voiceover\s+0\.\d+  elevenlabs-voice x1$", out, re.M)
    spent = float(re.search(r"ledger: \$(\d+\.\d+) in (\d+) paid calls", out).group(1))
    assert spent > 0
    assert "projected by `studio estimate`" in out
    assert "dry run steps [" in result.stderr  # progress
    assert not home.exists()  # the dry run used its own throwaway home
