"""The Dagster webserver on 127.0.0.1 with this project, driven through its GraphQL API.

`dagster dev` is started from Python in its own process group with default
signal handlers (a bare `&` would make it ignore SIGINT/SIGTERM) and stopped
by signalling the group (tests/webserver_harness.py, shared with the browser test).
"""

import time
from pathlib import Path

import httpx
import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from tests.conftest import SAMPLE_BRIEFS, SAMPLE_CAMPAIGN
from tests.webserver_harness import dagster_webserver, seeded_studio

pytestmark = pytest.mark.e2e

FAST_VIDEO = {"ops": {"variant_media": {"config": {"synced_video": {"short_side": 360, "fps": 24}}}}}


@pytest.fixture
def webserver(tmp_path):
    env = seeded_studio(tmp_path, SAMPLE_BRIEFS / f"{SAMPLE_CAMPAIGN}.yaml")
    with dagster_webserver(env, tmp_path / "dagster-dev.log", daemon=True) as port:
        yield port, Path(env["STUDIO_HOME"])


def test_one_partition_through_the_webserver(webserver):
    port, home = webserver
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    # The brief sensor registers the partitions; wait for them instead of adding them by hand.
    key = f"{SAMPLE_CAMPAIGN}.feed-en"
    query = '{ partitionSetsOrError(repositorySelector: {repositoryName: "__repository__", repositoryLocationName: "campaign_studio"}, pipelineName: "produce_campaign") { ... on PartitionSets { results { partitionsOrError { ... on Partitions { results { name } } } } } } }'
    deadline = time.monotonic() + 120
    names: list[str] = []
    while time.monotonic() < deadline and key not in names:
        data = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=10).json()
        sets = data["data"]["partitionSetsOrError"].get("results", [])
        names = [p["name"] for s in sets for p in s["partitionsOrError"].get("results", [])]
        time.sleep(2)
    assert key in names, f"the brief sensor did not register {key}: {names}"

    run_id = client.submit_job_execution(
        "produce_campaign",
        repository_location_name="campaign_studio",
        repository_name="__repository__",
        run_config=FAST_VIDEO,
        # Ahead of the runs the brief sensor requests for the same campaign.
        tags={"dagster/partition": key, "dagster/priority": "10"},
    )
    deadline = time.monotonic() + 240
    status = None
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id)
        if status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
            break
        time.sleep(2)
    assert status == DagsterRunStatus.SUCCESS
    assert (home / "manifests" / "synced_video" / f"{key}.json").exists()

    # What a user sees in the UI: every asset, check, sensor, schedule and job.
    query = """{ repositoryOrError(repositorySelector: {repositoryName: "__repository__", repositoryLocationName: "campaign_studio"}) {
      ... on Repository { jobs { name } sensors { name } schedules { name }
        assetNodes { assetKey { path } description groupName
          assetChecksOrError { ... on AssetChecks { checks { name } } } } } } }"""
    repository = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=10).json()["data"]["repositoryOrError"]
    assert {"produce_campaign", "regenerate_images", "regenerate_voice", "regenerate_video"} <= {j["name"] for j in repository["jobs"]}
    assert {s["name"] for s in repository["sensors"]} >= {"brief_sensor", "studio_automation", "approval_sensor"}
    assert sorted(s["name"] for s in repository["schedules"]) == ["audio__nightly_repair", "nightly_repair", "stills__nightly_repair"]
    nodes = {n["assetKey"]["path"][-1]: n for n in repository["assetNodes"]}
    assert set(nodes) == {
        "brief",
        "concept",
        "approve_concept",
        "draft_image",
        "refined_image",
        "voiceover",
        "captions",
        "synced_video",
        "campaign_rollup",
    }
    assert all(n["description"] and n["groupName"] for n in nodes.values())
    checks = {c["name"] for n in nodes.values() for c in n["assetChecksOrError"].get("checks", [])}
    assert {"png_valid", "loudness_within_spec", "av_in_sync", "caption_rules", "no_banned_terms", "on_brief"} <= checks

    # The brief sensor's own request, launched by the daemon: one run over the campaign's range
    # of variants (not one run per variant), and it made every variant's video.
    query = """{ runsOrError(filter: {tags: [{key: "dagster/sensor_name", value: "brief_sensor"}]}) {
      ... on Runs { results { runId status tags { key value } } } } }"""
    deadline = time.monotonic() + 240
    while True:
        runs = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=10).json()["data"]["runsOrError"]["results"]
        if runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert [r["status"] for r in runs] == ["SUCCESS"], runs
    tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
    variants = sorted(p.stem for p in (home / "manifests" / "brief").glob(f"{SAMPLE_CAMPAIGN}.*.json"))
    assert len(variants) == 4 and tags["studio/variants"] == "4" and tags["campaign"] == SAMPLE_CAMPAIGN
    assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == (
        f"{SAMPLE_CAMPAIGN}.story-en",
        f"{SAMPLE_CAMPAIGN}.story-fr",
    )
    assert all((home / "manifests" / "synced_video" / f"{key}.json").exists() for key in variants)
