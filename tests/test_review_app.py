"""The review app in-process (Starlette's TestClient): sign-in, cross-site refusal, files and ranges, the pages.

A variant of the shipped `campaign` pipeline is stored by hand (real PNG,
WAV, WebVTT bytes and a video-sized blob in a filesystem artifact store,
manifests through the manifest IO manager) and registered in a temporary
instance, so these tests need no model and run in seconds. The approval gate
is a recording stand-in here (`RecordingGate`); tests/test_review_browser.py
drives the real one.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
from dataclasses import dataclass
from typing import Any

import dagster as dg
import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from model_adapters.captions import to_webvtt
from model_adapters.pcm import encode_wav
from model_adapters.types import CaptionCue, WordTiming
from orchestration.review_app import ReviewAuth, ReviewConfigError, build_app, serve
from orchestration.review_app.auth import CSRF_COOKIE, SESSION_COOKIE, is_loopback_host, parse_tokens
from orchestration.review_app.catalog import ReviewGate
from orchestration.review_app.media import Unsatisfiable, parse_range
from resources.artifact_store import FilesystemArtifactStore
from resources.io_manager import JsonManifestIOManager
from resources.manifests import (
    ArtifactRef,
    AudioArtifact,
    CaptionTrack,
    ConceptDoc,
    ImageArtifact,
    Provenance,
    VariantBriefDoc,
    VideoArtifact,
)
from tests.helpers import shipped_pipelines

CAMPAIGN = "lamp-test"
KEYS = (f"{CAMPAIGN}.story-en", f"{CAMPAIGN}.feed-en")
TOKEN = "ana-token-0123456789abcdef"
OTHER_TOKEN = "ben-token-fedcba9876543210"
BASE = "http://127.0.0.1:3001"
ORIGIN = {"Origin": BASE}


class ReviewError(ValueError):
    pass


@dataclass(frozen=True)
class FakePending:
    pipeline: str
    gate: str
    subject_stage: str
    partition_key: str
    campaign_id: str
    subject: Any
    waiting_since: float


class RecordingGate:
    """The approval gate's surface; records verdicts in a list so a test can see none were."""

    def __init__(self, subjects: dict[str, Any]):
        self.subjects = subjects
        self.verdicts: list[dict[str, Any]] = []

    def pending_reviews(self, instance, pipelines, campaign_id=None):
        decided = {v["partition_key"] for v in self.verdicts}
        return [
            FakePending("campaign", "approve_concept", "concept", key, key.split(".")[0], subject, time.time() - 60)
            for key, subject in self.subjects.items()
            if key not in decided and campaign_id in (None, key.split(".")[0])
        ]

    def record_verdict(self, instance, pipelines, partition_key, decision, reviewer, comment, *, gate=None, regenerate=False):
        if partition_key not in self.subjects or any(v["partition_key"] == partition_key for v in self.verdicts):
            raise ReviewError(f"nothing is waiting for a verdict on {partition_key}")
        verdict = dict(partition_key=partition_key, decision=decision, reviewer=reviewer, comment=comment, gate=gate, regenerate=regenerate)
        self.verdicts.append(verdict)
        return verdict

    def approval_state(self, instance, pipelines, partition_key):
        for v in self.verdicts:
            if v["partition_key"] == partition_key:
                return {"approve_concept": v["decision"]}
        return {"approve_concept": "pending"} if partition_key in self.subjects else {}

    def as_gate(self) -> ReviewGate:
        return ReviewGate(self.pending_reviews, self.record_verdict, self.approval_state, ReviewError)


def _png(width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _provenance(task: str, adapter: str, model: str, cost: float, arm: str | None = None) -> Provenance:
    extra = {"experiment": "image-trial", "experiment_arm": arm} if arm and "experiment_arm" in Provenance.model_fields else {}
    return Provenance(
        task=task,
        provider=adapter,
        adapter_id=adapter,
        model=model,
        model_version="1",
        seed=7,
        request_hash="0" * 64,
        latency_s=0.25,
        cost_usd=cost,
        **extra,
    )


@dataclass
class Stored:
    root: Any
    instance: dg.DagsterInstance
    store: FilesystemArtifactStore
    manifests: JsonManifestIOManager
    pipelines: dict
    videos: dict[str, bytes]
    refs: dict[str, dict[str, ArtifactRef]]


def _store_variant(store, io_manager, pipeline, key: str, index: int, arm: str | None) -> tuple[bytes, dict[str, ArtifactRef]]:
    """Every media stage of the `campaign` pipeline for one variant, with real bytes."""
    campaign, variant = key.split(".")
    brief = VariantBriefDoc(
        partition_key=key,
        campaign_id=campaign,
        variant_id=variant,
        brief_path="briefs/x.yaml",
        brief_sha256="1" * 64,
        fingerprint="2" * 64,
        product="Lamp",
        audience="readers",
        tone="warm",
        palette=("#000000",),
        banned_terms=(),
        budget_usd=5.0,
        locale="en-US",
        voice="default",
        aspect_ratio="1:1",
        duration_s=4.0,
        tier="standard",
        seed=11,
        **({"approval": "required"} if "approval" in VariantBriefDoc.model_fields else {}),
    )
    concept = ConceptDoc(
        partition_key=key,
        headline=f"Headline {variant} <b>not bold</b>",
        script="Read late. Sleep well.",
        image_prompt="a warm lamp on a night stand",
        caption_lines=("Read late.",),
        word_count=4,
        provenance=_provenance("concept", "smollm2-writer", "SmolLM2-360M", 0.0),
    )
    draft = store.put(_png(96, 96, index), extension=".png", media_type="image/png")
    refined = store.put(_png(128, 128, index + 10), extension=".png", media_type="image/png")
    thumb = store.put(_png(48, 48, index + 20), extension=".png", media_type="image/png")
    wav = store.put(encode_wav(np.zeros(16000, dtype=np.int16), 16000), extension=".wav", media_type="audio/wav")
    words = (WordTiming(word="Read", start_s=0.0, end_s=0.4), WordTiming(word="late.", start_s=0.4, end_s=0.9))
    cues = (CaptionCue(start_s=0.0, end_s=0.9, lines=("Read late.",)),)
    vtt = store.put(to_webvtt(cues).encode(), extension=".vtt", media_type="text/vtt")
    srt = store.put(b"1\n00:00:00,000 --> 00:00:00,900\nRead late.\n", extension=".srt", media_type="application/x-subrip")
    video_bytes = os.urandom(300_000) + key.encode()
    video = store.put(video_bytes, extension=".mp4", media_type="video/mp4")
    manifests = {
        "brief": brief,
        "concept": concept,
        "draft_image": ImageArtifact(
            partition_key=key,
            artifact=draft,
            width=96,
            height=96,
            aspect_ratio="1:1",
            provenance=_provenance("image", "torch-painter", "painter", 0.002, arm),
        ),
        "refined_image": ImageArtifact(
            partition_key=key,
            artifact=refined,
            width=128,
            height=128,
            aspect_ratio="1:1",
            provenance=_provenance("refine", "torch-refiner", "refiner", 0.001),
            thumbnail=thumb,
        ),
        "voiceover": AudioArtifact(
            partition_key=key,
            artifact=wav,
            duration_s=1.0,
            sample_rate=16000,
            loudness_lufs=-16.0,
            true_peak_dbtp=-2.0,
            words=words,
            provenance=_provenance("voice", "espeak-ng", "espeak", 0.0),
        ),
        "captions": CaptionTrack(partition_key=key, vtt=vtt, srt=srt, cues=cues, source_audio_sha256=wav.sha256),
        "synced_video": VideoArtifact(
            partition_key=key,
            artifact=video,
            captions_vtt=vtt,
            width=128,
            height=128,
            fps=24,
            duration_s=4.0,
            video_duration_s=4.0,
            audio_duration_s=4.0,
            drift_s=0.0,
            provenance=_provenance("video", "pyav-composer", "composer", 0.0005),
        ),
    }
    for stage, manifest in manifests.items():
        if stage == "brief" or stage in pipeline.stage_names:
            io_manager._write(pipeline.key(stage), key, manifest.model_dump_json())
    return video_bytes, {"draft": draft, "refined": refined, "wav": wav, "vtt": vtt, "video": video}


@pytest.fixture
def stored(tmp_path, monkeypatch) -> Stored:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "studio"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "studio" / "dagster"))
    (tmp_path / "studio" / "dagster").mkdir(parents=True)
    pipelines = shipped_pipelines()
    pipeline = pipelines["campaign"]
    store, io_manager = FilesystemArtifactStore(), JsonManifestIOManager()
    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions(pipeline.partitions_name, list(KEYS))
    videos, refs = {}, {}
    for index, key in enumerate(KEYS):
        videos[key], refs[key] = _store_variant(store, io_manager, pipeline, key, index, ("control", "candidate")[index])
    yield Stored(tmp_path, instance, store, io_manager, pipelines, videos, refs)
    instance.dispose()


def _subjects(stored: Stored) -> dict[str, Any]:
    pipeline = stored.pipelines["campaign"]
    return {key: stored.manifests.load_manifest(pipeline.key("concept"), key) for key in KEYS}


def _client(stored: Stored, auth: ReviewAuth, gate: RecordingGate | None = None, base_url: str = BASE) -> TestClient:
    app = build_app(
        instance=stored.instance,
        pipelines=stored.pipelines,
        artifacts=stored.store,
        manifests=stored.manifests,
        auth=auth,
        gate=gate.as_gate() if gate else False,
    )
    return TestClient(app, base_url=base_url, follow_redirects=False)


def _csrf(client: TestClient, path: str, **kwargs) -> str:
    page = client.get(path, **kwargs)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert found, "no CSRF field on the page"
    return found.group(1)


def _token_auth(**kwargs) -> ReviewAuth:
    return ReviewAuth(tokens={"ana": TOKEN, "ben": OTHER_TOKEN}, **kwargs)


# --- configuration --------------------------------------------------------------------------------


def test_off_loopback_needs_sign_in_configured():
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1") and is_loopback_host("localhost")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("10.0.0.5") and not is_loopback_host("review.internal")
    with pytest.raises(ReviewConfigError, match="STUDIO_REVIEW_TOKEN"):
        ReviewAuth.from_environment("0.0.0.0", {})
    local = ReviewAuth.from_environment("127.0.0.1", {"USER": "mara"})
    assert local.mode == "local" and local.local_user == "mara"
    token = ReviewAuth.from_environment("0.0.0.0", {"STUDIO_REVIEW_TOKEN": f"ana:{TOKEN}, ben:{OTHER_TOKEN}"})
    assert token.mode == "token" and token.reviewer_for_token(OTHER_TOKEN) == "ben" and token.reviewer_for_token("x" * 26) is None
    proxy = ReviewAuth.from_environment("10.0.0.5", {"STUDIO_REVIEW_IDENTITY_HEADER": "X-Forwarded-User"})
    assert proxy.mode == "proxy"
    with pytest.raises(ReviewConfigError, match="at least 16"):
        parse_tokens("ana:short")
    assert parse_tokens(TOKEN) == {"reviewer": TOKEN}


def test_serve_refuses_a_public_host_before_binding(monkeypatch):
    for name in ("STUDIO_REVIEW_TOKEN", "STUDIO_REVIEW_IDENTITY_HEADER"):
        monkeypatch.delenv(name, raising=False)
    started = time.perf_counter()
    with pytest.raises(ReviewConfigError, match="beyond this machine"):
        serve("0.0.0.0", 3999)
    assert time.perf_counter() - started < 2  # refused at once: nothing loaded, nothing bound


# --- sign-in and cross-site refusal ------------------------------------------------------------------


def test_token_required_and_wrong_token_records_nothing(stored):
    gate = RecordingGate(_subjects(stored))
    client = _client(stored, _token_auth(), gate)
    assert client.get("/", headers={"Accept": "text/plain"}).status_code == 401
    redirected = client.get("/", headers={"Accept": "text/html"})
    assert redirected.status_code == 303 and redirected.headers["location"].startswith("/sign-in")
    assert client.get("/", headers={"Authorization": "Bearer wrong-token-0000000000"}).status_code == 401
    assert client.get(f"/files/{KEYS[0]}/{stored.refs[KEYS[0]]['video'].sha256}.mp4").status_code == 401
    # A POST with a wrong token (and a CSRF token taken with a good one) is refused before anything else.
    csrf = _csrf(client, f"/campaigns/{CAMPAIGN}/review", headers={"Authorization": f"Bearer {TOKEN}"})
    form = {"csrf": csrf, "partition_key": KEYS[0], "gate": "approve_concept", "decision": "approved", "comment": "ok"}
    for headers in ({}, {"Authorization": "Bearer not-the-token-at-all-0000"}):
        refused = client.post(f"/campaigns/{CAMPAIGN}/review", data=form, headers={**ORIGIN, **headers})
        assert refused.status_code == 401
    assert gate.verdicts == []
    ok = client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and CAMPAIGN in ok.text and "signed in as <strong>ana</strong>" in ok.text


def test_sign_in_form_sets_a_strict_http_only_cookie(stored):
    gate = RecordingGate(_subjects(stored))
    client = _client(stored, _token_auth(), gate)
    csrf = _csrf(client, "/sign-in")
    wrong = client.post("/sign-in", data={"csrf": csrf, "token": "not-the-token-0000000000", "next": "/"}, headers=ORIGIN)
    assert wrong.status_code == 401 and SESSION_COOKIE not in wrong.cookies
    # Login CSRF: a sign-in posted from another site is refused too.
    assert client.post("/sign-in", data={"csrf": csrf, "token": TOKEN}, headers={"Origin": "https://evil.example"}).status_code == 403
    signed = client.post("/sign-in", data={"csrf": csrf, "token": TOKEN, "next": f"/campaigns/{CAMPAIGN}/review"}, headers=ORIGIN)
    assert signed.status_code == 303 and signed.headers["location"] == f"/campaigns/{CAMPAIGN}/review"
    cookies = [h for h in signed.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE + "=")]
    assert len(cookies) == 1 and "HttpOnly" in cookies[0] and "SameSite=strict" in cookies[0].replace("Strict", "strict")
    # An open redirect through `next` is not possible.
    csrf = _csrf(client, "/sign-in")
    away = client.post("/sign-in", data={"csrf": csrf, "token": TOKEN, "next": "//evil.example/x"}, headers=ORIGIN)
    assert away.headers["location"] == "/"
    page = client.get(f"/campaigns/{CAMPAIGN}/review")
    assert page.status_code == 200 and "signed in as <strong>ana</strong>" in page.text


def test_cross_origin_and_missing_csrf_are_refused_and_record_nothing(stored):
    gate = RecordingGate(_subjects(stored))
    client = _client(stored, _token_auth(), gate)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    csrf = _csrf(client, f"/campaigns/{CAMPAIGN}/review", headers=bearer)
    form = {"csrf": csrf, "partition_key": KEYS[0], "gate": "approve_concept", "decision": "approved", "comment": ""}
    path = f"/campaigns/{CAMPAIGN}/review"
    refusals = {
        "another origin": ({"Origin": "https://evil.example"}, form),
        "another site by fetch metadata": ({"Sec-Fetch-Site": "cross-site"}, form),
        "same origin but cross-site fetch": ({**ORIGIN, "Sec-Fetch-Site": "same-site"}, form),
        "no origin at all": ({}, form),
        "no CSRF field": (ORIGIN, {k: v for k, v in form.items() if k != "csrf"}),
        "a forged CSRF field": (ORIGIN, {**form, "csrf": "0" * 64}),
    }
    for why, (headers, data) in refusals.items():
        response = client.post(path, data=data, headers={**bearer, **headers})
        assert response.status_code == 403, why
    # The CSRF token is bound to the cookie it was made for: another browser's cookie does not fit.
    other = _client(stored, _token_auth(), gate)
    other.get("/", headers=bearer)
    assert other.cookies.get(CSRF_COOKIE) != client.cookies.get(CSRF_COOKIE)
    assert other.post(path, data=form, headers={**bearer, **ORIGIN}).status_code == 403
    # ... and to the reviewer: ben cannot post ana's token.
    assert client.post(path, data=form, headers={"Authorization": f"Bearer {OTHER_TOKEN}", **ORIGIN}).status_code == 403
    # A GET never records.
    assert client.get(path + "?decision=approved&partition_key=" + KEYS[0], headers=bearer).status_code == 200
    assert gate.verdicts == []
    # The same form from the app's own page goes through.
    accepted = client.post(path, data=form, headers={**bearer, "Origin": BASE, "Sec-Fetch-Site": "same-origin"})
    assert accepted.status_code == 303, accepted.text
    assert [v["partition_key"] for v in gate.verdicts] == [KEYS[0]]


def test_the_reviewer_is_the_signed_in_identity_never_a_form_field(stored):
    gate = RecordingGate(_subjects(stored))
    client = _client(stored, _token_auth(), gate)
    bearer = {"Authorization": f"Bearer {OTHER_TOKEN}"}
    csrf = _csrf(client, f"/campaigns/{CAMPAIGN}/review", headers=bearer)
    response = client.post(
        f"/campaigns/{CAMPAIGN}/review",
        data={
            "csrf": csrf,
            "partition_key": KEYS[1],
            "gate": "approve_concept",
            "decision": "rejected",
            "comment": "too cold",
            "regenerate": "1",
            "reviewer": "mallory",
        },
        headers={**bearer, **ORIGIN},
    )
    assert response.status_code == 303
    assert gate.verdicts == [
        dict(partition_key=KEYS[1], decision="rejected", reviewer="ben", comment="too cold", gate="approve_concept", regenerate=True)
    ]
    # The page then says so, and the variant no longer waits.
    page = client.get(response.headers["location"], headers=bearer)
    assert f"Rejected: {KEYS[1]}." in page.text and f'id="review-{KEYS[1]}"' not in page.text
    # A second verdict on it: nothing is pending, so 409, and still one verdict.
    again = client.post(
        f"/campaigns/{CAMPAIGN}/review", data={"csrf": csrf, "partition_key": KEYS[1], "decision": "approved"}, headers={**bearer, **ORIGIN}
    )
    assert again.status_code == 409 and len(gate.verdicts) == 1
    # A variant of another campaign cannot be posted through this campaign's page.
    stray = client.post(
        f"/campaigns/{CAMPAIGN}/review",
        data={"csrf": csrf, "partition_key": "other.story-en", "decision": "approved"},
        headers={**bearer, **ORIGIN},
    )
    assert stray.status_code == 400 and len(gate.verdicts) == 1


def test_proxy_identity_header_is_trusted_only_when_configured(stored):
    gate = RecordingGate(_subjects(stored))
    proxied = _client(stored, ReviewAuth(identity_header="X-Forwarded-User"), gate)
    assert proxied.get("/", headers={"Accept": "text/plain"}).status_code == 401
    user = {"X-Forwarded-User": "ana@example.com"}
    csrf = _csrf(proxied, f"/campaigns/{CAMPAIGN}/review", headers=user)
    posted = proxied.post(
        f"/campaigns/{CAMPAIGN}/review",
        data={"csrf": csrf, "partition_key": KEYS[0], "gate": "approve_concept", "decision": "approved", "reviewer": "mallory"},
        headers={**user, **ORIGIN},
    )
    assert posted.status_code == 303 and gate.verdicts[-1]["reviewer"] == "ana@example.com"
    # Token mode ignores the header: anyone could send it.
    tokened = _client(stored, _token_auth(), gate)
    assert tokened.get("/", headers={**user, "Accept": "text/plain"}).status_code == 401


def test_local_mode_is_the_os_user_and_answers_loopback_hosts_only(stored):
    gate = RecordingGate(_subjects(stored))
    client = _client(stored, ReviewAuth.local("mara"), gate)
    page = client.get(f"/campaigns/{CAMPAIGN}/review")
    assert page.status_code == 200 and "signed in as <strong>mara</strong>" in page.text
    # A page on a domain rebound to 127.0.0.1 reaches the app with its own Host: refused.
    rebound = _client(stored, ReviewAuth.local("mara"), gate, base_url="http://evil.example:3001")
    csrf = _csrf(client, f"/campaigns/{CAMPAIGN}/review")
    assert rebound.get("/").status_code == 400
    refused = rebound.post(
        f"/campaigns/{CAMPAIGN}/review",
        data={"csrf": csrf, "partition_key": KEYS[0], "decision": "approved"},
        headers={"Origin": "http://evil.example:3001"},
    )
    assert refused.status_code == 400 and gate.verdicts == []
    # No script may run on the pages (default-src 'none' covers scripts), and they are never framed.
    assert "default-src 'none'" in page.headers["content-security-policy"] and page.headers["x-frame-options"] == "DENY"


# --- files -------------------------------------------------------------------------------------------


def test_range_requests_return_the_right_bytes(stored):
    client = _client(stored, ReviewAuth.local("mara"))
    key = KEYS[0]
    data, ref = stored.videos[key], stored.refs[key]["video"]
    path = f"/files/{key}/{ref.sha256}.mp4"
    whole = client.get(path)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
    assert hashlib.sha256(whole.content).hexdigest() == ref.sha256
    for header, (start, stop) in {
        "bytes=1000-1999": (1000, 2000),
        "bytes=299990-": (299990, len(data)),
        "bytes=-100": (len(data) - 100, len(data)),
        "bytes=5-10000000": (5, len(data)),
    }.items():
        part = client.get(path, headers={"Range": header})
        assert part.status_code == 206, header
        assert part.content == data[start:stop], header
        assert part.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(data)}", header
        assert int(part.headers["content-length"]) == stop - start
    past = client.get(path, headers={"Range": f"bytes={len(data)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
    # Several ranges, or nonsense: the whole file (a server may ignore Range).
    assert client.get(path, headers={"Range": "bytes=0-1,5-6"}).status_code == 200
    assert client.get(path, headers={"Range": "lines=1-2"}).status_code == 200
    assert client.get(path, headers={"If-None-Match": f'"{ref.sha256}"'}).status_code == 304
    vtt = client.get(f"/files/{key}/{stored.refs[key]['vtt'].sha256}.vtt")
    assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT") and vtt.headers["content-type"].startswith("text/vtt")


def test_parse_range_edges():
    assert parse_range(None, 10) is None and parse_range("bytes=3-1", 10) is None and parse_range("bytes=-", 10) is None
    assert parse_range("bytes=0-0", 10) == (0, 1) and parse_range("bytes=-20", 10) == (0, 10)
    for header in ("bytes=10-", "bytes=-0"):
        with pytest.raises(Unsatisfiable):
            parse_range(header, 10)


def test_only_files_named_by_the_variants_manifests_are_served(stored, tmp_path):
    client = _client(stored, ReviewAuth.local("mara"))
    key, other = KEYS
    video = stored.refs[key]["video"]
    # In the store, but named by no manifest.
    loose = stored.store.put(b"not in any manifest", extension=".txt", media_type="text/plain")
    # A file of another variant asked for under this one.
    theirs = stored.refs[other]["video"]
    (tmp_path / "secret.txt").write_text("secret")
    attempts = [
        f"/files/{key}/{loose.sha256}.txt",
        f"/files/{key}/{theirs.sha256}.mp4",
        f"/files/{key}/{'0' * 64}.mp4",
        f"/files/{key}/..%2F..%2F..%2Fsecret.txt",
        f"/files/{key}/%2e%2e%2fsecret.txt",
        f"/files/..%2F{key}/{video.sha256}.mp4",
        f"/files/{CAMPAIGN}.nope/{video.sha256}.mp4",
        f"/files/not-a-key/{video.sha256}.mp4",
        f"/files/{key}/{video.sha256.upper()}.mp4",
        "/files/../../etc/passwd",
        f"/files/{key}/../../../../etc/passwd",
    ]
    for path in attempts:
        response = client.get(path)
        assert response.status_code in (400, 404), path
        assert b"secret" not in response.content and b"root:" not in response.content
    # Raw paths, as a client that does not normalise `..` would send them.
    for raw in (f"/files/{key}/../../../etc/passwd", "/files/%2e%2e/%2e%2e/etc/passwd"):
        assert client.request("GET", raw).status_code in (400, 404), raw
    assert client.get(f"/files/{key}/{video.sha256}.mp4").status_code == 200


def test_a_manifest_pointing_outside_the_store_is_not_served(stored):
    pipeline = stored.pipelines["campaign"]
    key = KEYS[0]
    outside = stored.root / "outside.bin"
    outside.write_bytes(b"private bytes outside STUDIO_HOME")
    forged = ArtifactRef(
        uri=outside.as_uri(),
        sha256=hashlib.sha256(outside.read_bytes()).hexdigest(),
        media_type="video/mp4",
        size_bytes=outside.stat().st_size,
    )
    video = stored.manifests.load_manifest(pipeline.key("synced_video"), key)
    stored.manifests._write(pipeline.key("synced_video"), key, video.model_copy(update={"artifact": forged}).model_dump_json())
    client = _client(stored, ReviewAuth.local("mara"))
    for headers in ({}, {"Range": "bytes=0-5"}):
        response = client.get(f"/files/{key}/{forged.sha256}.bin", headers=headers)
        assert response.status_code == 404 and b"private" not in response.content


# --- pages -------------------------------------------------------------------------------------------


def test_index_review_and_gallery_pages(stored):
    pipeline = stored.pipelines["campaign"]
    gate = RecordingGate(_subjects(stored))
    # A check result for one variant's refined image, recorded in the instance as a run would.
    check = next(c for c in pipeline.checks() if c.stage == "refined_image")
    from assets.dagster_api import partition_check_evaluation

    stored.instance.report_runless_asset_event(
        partition_check_evaluation(asset_key=check.asset_key, check_name=check.name, passed=False, partition=KEYS[0])
    )
    client = _client(stored, ReviewAuth.local("mara"), gate)
    index = client.get("/")
    assert index.status_code == 200 and CAMPAIGN in index.text and "2 pending" in index.text

    review = client.get(f"/campaigns/{CAMPAIGN}/review")
    assert review.status_code == 200
    assert "Headline story-en &lt;b&gt;not bold&lt;/b&gt;" in review.text  # escaped
    assert "a warm lamp on a night stand" in review.text and "Read late. Sleep well." in review.text
    assert review.text.count('value="approved"') == 2 and 'name="regenerate"' in review.text

    gallery = client.get(f"/campaigns/{CAMPAIGN}/gallery")
    assert gallery.status_code == 200
    text = gallery.text
    for key in KEYS:
        video, vtt = stored.refs[key]["video"], stored.refs[key]["vtt"]
        assert f'src="/files/{key}/{video.sha256}.mp4"' in text
        assert f'<track kind="captions" label="captions (en-US)" srclang="en-US" src="/files/{key}/{vtt.sha256}.vtt">' in text
        assert f'src="/files/{key}/{stored.refs[key]["wav"].sha256}.wav"' in text
    assert "torch-refiner · refiner@1" in text and "$0.0035" in text  # model and the variant's cost
    assert f"{check.name}: failed" in text and f"{check.name}: not run" in text  # per partition
    assert "approve_concept: pending" in text
    if "experiment_arm" in Provenance.model_fields:
        assert 'data-arm="control"' in text and 'data-arm="candidate"' in text and '<div class="arms">' in text
    # Every file the gallery links to is served.
    for src in set(re.findall(r'(?:src|href)="(/files/[^"]+)"', text)):
        assert client.get(src).status_code == 200, src


# --- the real approval gate (assets/approvals.py) -------------------------------------------------------


def _verdict_events(stored: Stored, gate: str = "approve_concept") -> list:
    pipeline = stored.pipelines["campaign"]
    return stored.instance.fetch_observations(dg.AssetRecordsFilter(asset_key=pipeline.key(gate)), limit=100).records


def test_with_the_real_gate_refusals_record_nothing_and_a_verdict_names_the_signed_in_reviewer(stored):
    approvals = pytest.importorskip("assets.approvals")
    assert "approve_concept" in stored.pipelines["campaign"].stage_names
    app = build_app(
        instance=stored.instance, pipelines=stored.pipelines, artifacts=stored.store, manifests=stored.manifests, auth=_token_auth()
    )
    client = TestClient(app, base_url=BASE, follow_redirects=False)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    page = client.get(f"/campaigns/{CAMPAIGN}/review", headers=bearer)
    assert page.status_code == 200 and all(f'id="review-{key}"' in page.text for key in KEYS)
    csrf = _csrf(client, f"/campaigns/{CAMPAIGN}/review", headers=bearer)
    form = {"csrf": csrf, "partition_key": KEYS[0], "gate": "approve_concept", "decision": "approved", "reviewer": "mallory"}
    path = f"/campaigns/{CAMPAIGN}/review"
    for headers in (
        {"Authorization": "Bearer wrong-wrong-wrong-wrong", **ORIGIN},  # bad credentials
        {**bearer, "Origin": "https://evil.example"},  # another origin
        {**bearer, "Sec-Fetch-Site": "cross-site"},
    ):
        assert client.post(path, data=form, headers=headers).status_code in (401, 403)
    assert client.post(path, data={k: v for k, v in form.items() if k != "csrf"}, headers={**bearer, **ORIGIN}).status_code == 403
    assert _verdict_events(stored) == []
    states = approvals.approval_state(stored.instance, stored.pipelines, KEYS[0], manifests=stored.manifests)
    assert states == {"approve_concept": "pending"}

    assert client.post(path, data=form, headers={**bearer, **ORIGIN}).status_code == 303
    rejected = {**form, "partition_key": KEYS[1], "decision": "rejected", "regenerate": "on", "comment": "colder, please"}
    assert client.post(path, data=rejected, headers={"Authorization": f"Bearer {OTHER_TOKEN}", **ORIGIN}).status_code == 403  # ana's CSRF
    csrf_ben = _csrf(client, path, headers={"Authorization": f"Bearer {OTHER_TOKEN}"})
    assert (
        client.post(path, data={**rejected, "csrf": csrf_ben}, headers={"Authorization": f"Bearer {OTHER_TOKEN}", **ORIGIN}).status_code
        == 303
    )
    events = _verdict_events(stored)
    verdicts = {e.partition_key: e.asset_observation.metadata for e in events}
    assert verdicts[KEYS[0]]["reviewer"].value == "ana" and verdicts[KEYS[0]]["decision"].value == "approved"
    assert verdicts[KEYS[1]]["reviewer"].value == "ben" and verdicts[KEYS[1]]["regenerate"].value is True
    assert approvals.approval_state(stored.instance, stored.pipelines, KEYS[0], manifests=stored.manifests) == {
        "approve_concept": "approved"
    }
    gallery = client.get(f"/campaigns/{CAMPAIGN}/gallery", headers=bearer).text
    assert "approve_concept: approved" in gallery and "approve_concept: regenerating" in gallery
    # Nothing is pending now: another verdict is a 409 and records nothing more.
    again = client.post(path, data=form, headers={**bearer, **ORIGIN})
    assert again.status_code == 409 and len(_verdict_events(stored)) == 2


# --- the experiments report ------------------------------------------------------------------------


def _arm(arm: str, keys: tuple[str, ...], provider: str, cost: float, latency: float, passed: float, on_brief: float) -> Any:
    from assets.report import ArmFigures

    return ArmFigures(
        arm=arm,
        variants=len(keys),
        partition_keys=keys,
        failed=0,
        providers={provider: len(keys)},
        total_cost_usd=round(cost * len(keys), 6),
        mean_cost_usd=cost,
        mean_latency_s=latency,
        p50_latency_s=latency,
        check_pass_rates={"png_valid": passed},
        on_brief_score=on_brief,
        on_brief_measured=len(keys),
        word_error_rate=None,
        word_error_rate_measured=0,
    )


def _store_report(stored: Stored, campaign: str, colours: tuple[str, str], pipeline: str = "campaign") -> tuple[ArtifactRef, ArtifactRef]:
    """A hand-built report of `campaign` (one share experiment, its pairs sheet drawn from two
    plain pictures) in the store, and a materialization of the pipeline's report asset naming it
    as assets/report.py records it. Returns (the report JSON, the contact sheet)."""
    from assets.report import CampaignReportDoc, ExperimentReport, pairs_sheet
    from assets.rollup import sheet_png

    def plain(colour: str) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (90, 160), colour).save(buffer, format="PNG")
        return buffer.getvalue()

    sheet = pairs_sheet(
        f"{campaign}: image-trial (draft_image)", ("control", "candidate"), [(("a", plain(colours[0])), ("b", plain(colours[1])))]
    )
    sheet_ref = stored.store.put(sheet_png(sheet), extension=".png", media_type="image/png")
    keys = (f"{campaign}.story-en", f"{campaign}.feed-en")
    doc = CampaignReportDoc(
        campaign_id=campaign,
        product="Lamp",
        experiments=(
            ExperimentReport(
                experiment="image-trial",
                task="image",
                stage="draft_image",
                mode="share",
                share=0.5,
                control=_arm("control", keys[:1], "torch-painter", 0.002, 0.25, 1.0, 0.6123),
                candidate=_arm("candidate", keys[1:], "sim-b", 0.0125, 1.5, 0.5, 0.4871),
                outside=(),
                contact_sheet=sheet_ref,
            ),
        ),
    )
    report_ref = stored.store.put(doc.model_dump_json(indent=2).encode(), extension=".json", media_type="application/json")
    stored.instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=stored.pipelines[pipeline].key("campaign_report"),
            metadata={"campaigns": [campaign], f"{campaign}/report_file": dg.MetadataValue.path(report_ref.uri.removeprefix("file://"))},
        )
    )
    return report_ref, sheet_ref


def test_report_page_shows_the_arms_figures_and_serves_only_its_own_sheet(stored):
    from assets.report import load_report, report_markdown

    client = _client(stored, ReviewAuth.local("mara"))
    none = client.get(f"/campaigns/{CAMPAIGN}/report")
    assert none.status_code == 200 and "No experiment report for this campaign" in none.text
    assert f'/campaigns/{CAMPAIGN}/report"' not in client.get(f"/campaigns/{CAMPAIGN}/gallery").text

    report_ref, sheet_ref = _store_report(stored, CAMPAIGN, ("red", "blue"))
    _, other_sheet = _store_report(stored, "other-lamp", ("green", "yellow"))  # another campaign's report
    page = client.get(f"/campaigns/{CAMPAIGN}/report")
    assert page.status_code == 200 and "No experiment report" not in page.text
    text = page.text
    assert "image-trial on <code>draft_image</code>" in text and "share: 0.5 to the candidate" in text
    # The figures the asset recorded, as its own table formats them, one row per figure.
    assert "<th>total cost</th><td>$0.0020</td><td>$0.0125</td>" in text
    assert "<th>mean latency</th><td>0.250 s</td><td>1.500 s</td>" in text
    assert "<th>png_valid passed</th><td>100%</td><td>50%</td>" in text
    assert "<th>on-brief score (mean)</th><td>0.612 (1)</td><td>0.487 (1)</td>" in text
    assert "<th>answered by</th><td>torch-painter (1)</td><td>sim-b (1)</td>" in text
    experiment = load_report(stored.store, report_ref).experiments[0]
    for line in report_markdown(experiment).splitlines():
        if line.startswith("| ") and not line.startswith("| |") and "---" not in line:
            name, control, candidate = (cell.strip() for cell in line.strip("|").split("|"))
            assert f"<th>{name}</th><td>{control}</td><td>{candidate}</td>" in text, line
    assert f'href="/campaigns/{CAMPAIGN}/gallery#variant-{CAMPAIGN}.feed-en"' in text
    # The contact sheet, served by its sha256 under the campaign: the PNG drawn, control left.
    src = f"/files/{CAMPAIGN}/{sheet_ref.sha256}.png"
    assert f'src="{src}"' in text
    served = client.get(src)
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(served.content)) as png:
        sheet = png.convert("RGB")
        from assets.rollup import CELL, PAD

        centre_y = 90 + CELL // 2
        assert png.format == "PNG" and sheet.getpixel((PAD + CELL // 2, centre_y)) == (255, 0, 0)
        assert sheet.getpixel((2 * PAD + CELL + CELL // 2, centre_y)) == (0, 0, 255)
    report_json = client.get(f"/files/{CAMPAIGN}/{report_ref.sha256}.json")
    assert report_json.status_code == 200 and report_json.json()["campaign_id"] == CAMPAIGN
    # Another campaign's sheet is not this campaign's file, nor this one's theirs; a variant's
    # path does not serve the report's files, nor a campaign's path a variant's.
    assert client.get(f"/files/{CAMPAIGN}/{other_sheet.sha256}.png").status_code == 404
    assert client.get(f"/files/other-lamp/{sheet_ref.sha256}.png").status_code == 404
    assert client.get(f"/files/other-lamp/{other_sheet.sha256}.png").status_code == 200
    assert client.get(f"/files/{KEYS[0]}/{sheet_ref.sha256}.png").status_code == 404
    assert client.get(f"/files/{CAMPAIGN}/{stored.refs[KEYS[0]]['video'].sha256}.mp4").status_code == 404
    assert client.get(f"/files/NOT_A_SLUG/{sheet_ref.sha256}.png").status_code == 404
    # The nav, the gallery and the campaigns list link the report now.
    gallery = client.get(f"/campaigns/{CAMPAIGN}/gallery").text
    assert gallery.count(f'href="/campaigns/{CAMPAIGN}/report"') == 2  # nav and the gallery's own link
    assert f'href="/campaigns/{CAMPAIGN}/report"' in client.get(f"/campaigns/{CAMPAIGN}/review").text
    assert f'href="/campaigns/{CAMPAIGN}/report"' in client.get("/").text


def test_a_report_file_outside_the_store_is_neither_read_nor_served(stored):
    from assets.report import CampaignReportDoc

    doc = CampaignReportDoc(campaign_id=CAMPAIGN, product="Lamp", experiments=())
    data = doc.model_dump_json().encode()
    outside = stored.root / f"{hashlib.sha256(data).hexdigest()}.json"
    outside.write_bytes(data)
    stored.instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=stored.pipelines["campaign"].key("campaign_report"),
            metadata={f"{CAMPAIGN}/report_file": dg.MetadataValue.path(str(outside))},
        )
    )
    client = _client(stored, ReviewAuth.local("mara"))
    page = client.get(f"/campaigns/{CAMPAIGN}/report")
    assert page.status_code == 200 and "The stored report could not be read" in page.text and "not inside the store" in page.text
    assert client.get(f"/files/{CAMPAIGN}/{outside.stem}.json").status_code == 404
