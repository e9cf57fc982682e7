"""Asset checks on the variant assets: the media are what the README promises.

Every check measures the stored artifact itself (PNG, WAV, MP4, WebVTT bytes
read back from the artifact store), never the figures a manifest claims
(those are shown beside the measurement, for comparison).

This module holds only the measuring: which check runs on which stage,
blocking or not, with which thresholds, is declared once, as a `CheckKind` on
its stage kind (assets/stage_kinds/), and the docs' table of checks is
printed from those declarations (orchestration/docs_tables.py). The budget
check (`build_budget_check`, not blocking) is the one check that is its own
step: when it runs the money is spent, and the roll-up is where an overspend
is read.

The checks in two layers:

- pure functions (`check_png`, `check_loudness`, `check_av_sync`,
  `check_captions`, `check_banned_terms`, `check_semantic_alignment`,
  `check_budget`) take bytes or text and return `CheckOutcome(passed,
  metadata)`; `metadata["problems"]` says what failed. Tests call them on
  crafted artifacts.
- thin wrappers: each stage kind's `CheckKind`s (run inside the model step,
  assets/variant_media.py) and `build_budget_check()` (the budget check step).

Partitions. Dagster 1.13's `AssetCheckResult` has no partition field: in a
partition-range run it would be recorded once with no partition, leaving every
planned per-partition row without a result. So every check yields one
`dg.AssetCheckEvaluation` per partition key (`check_evaluation`: with
`partition=`, `blocking=` and the target materialization), then the check's
`Output`.
"""

import functools
import io
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import av
import dagster as dg
import numpy as np

from assets.dagster_api import latest_materializations, partition_check_evaluation, partitioned_asset_check
from assets.stages import CheckOutcome, Pipeline
from model_adapters.captions import MAX_CHARS_PER_LINE, MAX_LINES, MIN_CUE_S, parse_webvtt
from model_adapters.loudness import measure
from model_adapters.media.aspect import ASPECT_RATIOS
from model_adapters.media.errors import MediaError
from model_adapters.media.mp4 import mp4_top_level_boxes
from model_adapters.media.png import decoded_image
from model_adapters.media.wav import read_wav
from model_adapters.received import describe_received, error_text
from model_adapters.types import CaptionCue, WordTiming
from resources.manifests import VariantBriefDoc
from resources.model_router import ModelRouter

# --- limits ----------------------------------------------------------------------------

TARGET_LUFS = -16.0
LOUDNESS_TOLERANCE_LU = 1.0
MAX_TRUE_PEAK_DBTP = -1.0
MAX_DRIFT_FRAMES = 1.0
CUE_WORD_START_TOLERANCE_S = 0.080
# Timestamps are whole milliseconds; 2.8 - 2.0 must count as 0.8.
_TIME_SLACK_S = 1e-6

SEMANTIC_ALIGNMENT_THRESHOLD = 0.30
"""Minimum MiniLM cosine between a concept's script and `brief_text(...)`.

Measured with the packaged all-MiniLM-L6-v2 (`model_adapters.text_embedding`)
against `brief_text` = "<product> for <audience>. Tone: <tone>.":

- on-topic: the local concept writer on both sample briefs (aurora-lamp,
  trail-runner), 5 locales (en-US, en-GB, de-DE, fr-FR, es-ES), 44-45 seeds
  each (the variants' own seeds plus 0..39), durations 6, 12 and 30 s:
  ~1,300 scripts. Minimum 0.423 (a French trail-runner script), median 0.702;
  per language the minimum is en 0.674, de 0.545, es 0.519, fr 0.423
  (MiniLM is an English model: other languages score lower, but the product
  name and audience the writer quotes keep them well clear).
- off-topic: ten unrelated ad-like texts (mortgage refinancing, a roast-potato
  recipe, a football report, a tax-deadline notice; in en, de, fr, es) against
  both briefs: maximum 0.140, median 0.006. A local script written for the
  *other* sample campaign scores at most 0.207 against a brief.

0.30 sits between the highest off-brief score (0.207) and the lowest on-brief
score (0.423), with about 0.1 of margin on each side.
"""


def _outcome(problems: list[str], measured: Mapping[str, Any]) -> CheckOutcome:
    return CheckOutcome(not problems, {**measured, "problems": list(problems)})


# --- images ------------------------------------------------------------------------------


def check_png(
    png: bytes,
    aspect_ratio: str,
    *,
    declared_size: tuple[int, int] | None = None,
    min_short_side: int | None = None,
) -> CheckOutcome:
    """The bytes decode as a PNG, at the declared size, at exactly the variant's aspect ratio
    (width * ratio_h == height * ratio_w), with a short side of at least `min_short_side`."""
    try:
        # A full decode, or what one in this process found for the same bytes (media/png.py).
        fmt, width, height, mode = decoded_image(png)
    except Exception as exc:  # PIL raises many types for bad data
        return _outcome([f"does not decode as an image: {error_text(exc)}; {describe_received(png)}"], {"bytes": len(png)})
    problems = []
    if fmt != "PNG":
        problems.append(f"is {fmt}, not PNG")
    if declared_size is not None and (width, height) != tuple(declared_size):
        problems.append(f"is {width}x{height} but the manifest says {declared_size[0]}x{declared_size[1]}")
    ratio = ASPECT_RATIOS.get(aspect_ratio)
    if ratio is None:
        problems.append(f"unknown aspect ratio {aspect_ratio!r}")
    elif width * ratio[1] != height * ratio[0]:
        problems.append(f"{width}x{height} is not exactly {aspect_ratio} ({width / height:.4f} vs {ratio[0] / ratio[1]:.4f})")
    if min_short_side is not None and min(width, height) < min_short_side:
        problems.append(f"short side {min(width, height)} px < {min_short_side} px")
    measured = {
        "format": str(fmt),
        "size": f"{width}x{height}",
        "width": width,
        "height": height,
        "mode": mode,
        "aspect_ratio_expected": aspect_ratio,
        "aspect_ratio_measured": dg.MetadataValue.float(round(width / height, 5)),
    }
    return _outcome(problems, measured)


# --- audio -------------------------------------------------------------------------------


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """(mono float64 samples in [-1, 1], sample rate) from a WAV (PCM 8/16/24/32-bit or float,
    read by `model_adapters.media.wav.read_wav`); channels are averaged. Anything else (another
    encoding, another container) is decoded with PyAV."""
    try:
        return read_wav(data)
    except MediaError:
        return _decode_with_av(data)


def _decode_with_av(data: bytes) -> tuple[np.ndarray, int]:
    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            resampler = av.AudioResampler(format="dbl", layout="mono", rate=rate)
            chunks = [out.to_ndarray().reshape(-1) for frame in container.decode(stream) for out in resampler.resample(frame)]
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    except (av.FFmpegError, IndexError) as exc:
        raise ValueError(f"not readable audio: {exc}") from exc
    if not chunks:
        raise ValueError("audio has no samples")
    return np.concatenate(chunks), rate


def check_loudness(
    wav: bytes,
    *,
    target_lufs: float = TARGET_LUFS,
    tolerance_lu: float = LOUDNESS_TOLERANCE_LU,
    max_true_peak_dbtp: float = MAX_TRUE_PEAK_DBTP,
) -> CheckOutcome:
    """Integrated loudness (ITU-R BS.1770-4) within `tolerance_lu` of `target_lufs` and true peak
    (4x oversampled) at most `max_true_peak_dbtp`, measured from the WAV bytes."""
    try:
        samples, rate = decode_wav(wav)
    except ValueError as exc:
        return _outcome([f"does not decode as audio: {exc}"], {"bytes": len(wav)})
    if len(samples) == 0:
        return _outcome(["has no samples"], {"sample_rate": rate})
    lufs, peak = measure(samples, rate)
    clipped = int(np.count_nonzero(np.abs(samples) >= 0.999))
    problems = []
    if not (math.isfinite(lufs) and abs(lufs - target_lufs) <= tolerance_lu):
        problems.append(f"integrated loudness {lufs:.2f} LUFS is not within {tolerance_lu:g} LU of {target_lufs:g} LUFS")
    if not peak <= max_true_peak_dbtp:
        problems.append(f"true peak {peak:.2f} dBTP is above {max_true_peak_dbtp:g} dBTP")
    measured = {
        "loudness_lufs": dg.MetadataValue.float(round(lufs, 3) if math.isfinite(lufs) else -999.0),
        "true_peak_dbtp": dg.MetadataValue.float(round(peak, 3) if math.isfinite(peak) else -999.0),
        "duration_s": dg.MetadataValue.float(round(len(samples) / rate, 3)),
        "sample_rate": rate,
        "samples_at_full_scale": clipped,
    }
    return _outcome(problems, measured)


# --- video -------------------------------------------------------------------------------


def _stream_duration_s(container: Any, stream: Any) -> float:
    """The stream's duration as the MP4 declares it; from its packets when it declares none."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    first, end = None, 0
    container.seek(0)
    for packet in container.demux(stream):
        if packet.pts is None:
            continue
        first = packet.pts if first is None else min(first, packet.pts)
        end = max(end, packet.pts + (packet.duration or 0))
    return float((end - (first or 0)) * stream.time_base) if first is not None else 0.0


def check_av_sync(mp4: bytes, *, fps: float | None = None, max_drift_frames: float = MAX_DRIFT_FRAMES) -> CheckOutcome:
    """Video and audio stream durations (read with PyAV) differ by at most `max_drift_frames`
    frames (frame rate from the video stream, or `fps`), and `moov` comes before `mdat`
    (faststart: playback starts before the whole file arrives)."""
    problems = []
    try:
        boxes = [kind for kind, _, _ in mp4_top_level_boxes(mp4)]
    except ValueError as exc:
        boxes = []
        problems.append(str(exc))
    if "moov" not in boxes or "mdat" not in boxes:
        problems.append(f"top-level boxes {boxes} lack moov or mdat")
    elif boxes.index("moov") > boxes.index("mdat"):
        problems.append("moov comes after mdat (not faststart)")
    try:
        with av.open(io.BytesIO(mp4)) as container:
            if not container.streams.video or not container.streams.audio:
                return _outcome(
                    problems
                    + [
                        f"needs a video and an audio stream; has {len(container.streams.video)} video, {len(container.streams.audio)} audio"
                    ],
                    {"boxes": " ".join(boxes)},
                )
            video, audio = container.streams.video[0], container.streams.audio[0]
            rate = video.average_rate or video.guessed_rate
            measured_fps = float(rate) if rate else None
            video_s = _stream_duration_s(container, video)
            audio_s = _stream_duration_s(container, audio)
            codecs = f"{video.codec_context.name}/{audio.codec_context.name}"
    except (av.FFmpegError, ValueError) as exc:
        return _outcome(problems + [f"does not open as MP4: {exc}"], {"boxes": " ".join(boxes)})
    frame_rate = measured_fps or fps
    if not frame_rate:
        return _outcome(problems + ["no frame rate in the video stream"], {"boxes": " ".join(boxes)})
    frame_s = 1.0 / frame_rate
    drift = abs(video_s - audio_s)
    if drift > max_drift_frames * frame_s + _TIME_SLACK_S:
        problems.append(
            f"audio ({audio_s:.3f} s) and video ({video_s:.3f} s) differ by {drift * 1000:.1f} ms, "
            f"more than {max_drift_frames:g} frame ({frame_s * 1000:.1f} ms at {frame_rate:g} fps)"
        )
    measured = {
        "video_duration_s": dg.MetadataValue.float(round(video_s, 4)),
        "audio_duration_s": dg.MetadataValue.float(round(audio_s, 4)),
        "drift_ms": dg.MetadataValue.float(round(drift * 1000, 2)),
        "frame_ms": dg.MetadataValue.float(round(frame_s * 1000, 2)),
        "fps": dg.MetadataValue.float(round(frame_rate, 3)),
        "codecs": codecs,
        "boxes": " ".join(boxes),
    }
    return _outcome(problems, measured)


def check_duration(mp4: bytes, *, duration_s: float) -> CheckOutcome:
    """The MP4's video and audio streams (read with PyAV) each last the brief's `duration_s`
    within one frame (the frame rate from the video stream): ad slots have fixed lengths."""
    try:
        with av.open(io.BytesIO(mp4)) as container:
            if not container.streams.video or not container.streams.audio:
                return _outcome(["needs a video and an audio stream"], {})
            video, audio = container.streams.video[0], container.streams.audio[0]
            rate = video.average_rate or video.guessed_rate
            video_s = _stream_duration_s(container, video)
            audio_s = _stream_duration_s(container, audio)
            frames = video.frames
    except (av.FFmpegError, ValueError) as exc:
        return _outcome([f"does not open as MP4: {exc}"], {})
    if not rate:
        return _outcome(["no frame rate in the video stream"], {})
    frame_s = 1.0 / float(rate)
    problems = [
        f"{name} lasts {measured:.3f} s, not the brief's {duration_s:g} s (off by {abs(measured - duration_s) * 1000:.1f} ms, "
        f"more than one frame: {frame_s * 1000:.1f} ms)"
        for name, measured in (("video", video_s), ("audio", audio_s))
        if abs(measured - duration_s) > frame_s + _TIME_SLACK_S
    ]
    return _outcome(
        problems,
        {
            "brief_duration_s": dg.MetadataValue.float(duration_s),
            "video_duration_s": dg.MetadataValue.float(round(video_s, 4)),
            "audio_duration_s": dg.MetadataValue.float(round(audio_s, 4)),
            "frames": frames,
            "frame_ms": dg.MetadataValue.float(round(frame_s * 1000, 2)),
        },
    )


# --- captions ----------------------------------------------------------------------------


def _cue_anchors(cues: Sequence[CaptionCue], words: Sequence[WordTiming]) -> tuple[list[float], str | None]:
    """When each cue's first word starts: the cues' text is matched to the spoken words in order
    (whitespace aside), so a cue is compared with the word it begins with, not just any word.

    A cue that begins inside a word (a word longer than a line is split across lines and cues)
    is anchored at the proportional time `build_cues` gives the piece. Returns (anchors, None),
    or ([], why) when the caption text is not the spoken words.
    """
    spoken, owner = [], []  # characters of the words; per character (word index, offset in word, word length)
    for index, word in enumerate(words):
        text = "".join(word.word.split())
        spoken.append(text)
        owner.extend((index, offset, len(text)) for offset in range(len(text)))
    spoken_text = "".join(spoken)
    anchors, position = [], 0
    for number, cue in enumerate(cues, 1):
        text = "".join("".join(cue.lines).split())
        if not text or spoken_text[position : position + len(text)] != text:
            return [], f"cue {number}: its text {' '.join(cue.lines)[:60]!r} is not the next spoken words"
        index, offset, length = owner[position]
        word = words[index]
        anchors.append(word.start_s + (word.end_s - word.start_s) * offset / length)
        position += len(text)
    if position != len(spoken_text):
        return [], f"the captions end before the speech: {spoken_text[position:][:40]!r} is not captioned"
    return anchors, None


def check_captions(
    cues: Sequence[CaptionCue] | str,
    words: Sequence[WordTiming],
    *,
    max_chars_per_line: int = MAX_CHARS_PER_LINE,
    max_lines: int = MAX_LINES,
    min_cue_s: float = MIN_CUE_S,
    start_tolerance_s: float = CUE_WORD_START_TOLERANCE_S,
) -> CheckOutcome:
    """Caption layout and timing rules; `cues` as parsed cues or WebVTT/SRT text.

    Each line <= `max_chars_per_line` characters; each cue <= `max_lines` lines; every cue
    but the last >= `min_cue_s` long; the caption text is the spoken words, in order; every
    cue starts within `start_tolerance_s` of the start of its first word (the voiceover's
    word timings). When the text does not match the words, cue starts are compared with the
    nearest word start instead (and the mismatch is itself a failure)."""
    if isinstance(cues, str):
        try:
            cues = parse_webvtt(cues)
        except ValueError as exc:
            return _outcome([f"does not parse: {exc}"], {})
    cues = list(cues)
    if not cues:
        return _outcome(["has no cues"], {"cues": 0})
    problems: list[str] = []
    anchors, mismatch = _cue_anchors(cues, words)
    if mismatch:
        problems.append(mismatch)
    starts = np.array(sorted(w.start_s for w in words), dtype=np.float64)
    if not len(starts):
        problems.append("no word timings to align cues with")
    longest_line, most_lines, shortest, worst_offset = 0, 0, math.inf, 0.0
    for number, cue in enumerate(cues, 1):
        where = f"cue {number} ({cue.start_s:.3f}s)"
        for line in cue.lines:
            longest_line = max(longest_line, len(line))
            if len(line) > max_chars_per_line:
                problems.append(f"{where}: line of {len(line)} chars > {max_chars_per_line}: {line!r}")
        most_lines = max(most_lines, len(cue.lines))
        if len(cue.lines) > max_lines:
            problems.append(f"{where}: {len(cue.lines)} lines > {max_lines}")
        duration = cue.end_s - cue.start_s
        if number < len(cues):
            shortest = min(shortest, duration)
            if duration + _TIME_SLACK_S < min_cue_s:
                problems.append(f"{where}: lasts {duration:.3f}s < {min_cue_s:g}s")
        if anchors:
            offset = abs(cue.start_s - anchors[number - 1])
        elif len(starts):
            offset = float(np.min(np.abs(starts - cue.start_s)))
        else:
            continue
        worst_offset = max(worst_offset, offset)
        if offset > start_tolerance_s + _TIME_SLACK_S:
            problems.append(
                f"{where}: starts {offset * 1000:.0f} ms from the start of its first word (> {start_tolerance_s * 1000:.0f} ms)"
            )
    measured = {
        "cues": len(cues),
        "longest_line_chars": longest_line,
        "most_lines_in_a_cue": most_lines,
        "shortest_cue_s": dg.MetadataValue.float(round(shortest, 3) if math.isfinite(shortest) else -1.0),
        "worst_start_offset_ms": dg.MetadataValue.float(round(worst_offset * 1000, 1)),
        "text_matches_words": mismatch is None,
    }
    if len(problems) > 10:
        problems = problems[:10] + [f"... and {len(problems) - 10} more"]
    return _outcome(problems, measured)


def caption_text(cues: Sequence[CaptionCue]) -> str:
    return "\n".join(line for cue in cues for line in cue.lines)


# --- text --------------------------------------------------------------------------------


def banned_terms_in(texts: dict[str, str], banned: tuple[str, ...]) -> list[str]:
    """`field: term` for every banned term found, matched as a whole word, case-insensitively."""
    found = []
    for field, text in texts.items():
        for term in banned:
            if re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, flags=re.IGNORECASE):
                found.append(f"{field}: {term!r}")
    return found


def check_banned_terms(texts: Mapping[str, str], banned_terms: Sequence[str]) -> CheckOutcome:
    """No banned term in any of `texts` ({field: text}), matched as a whole word (or phrase),
    case-insensitively ("cheap" matches "Cheap," but not "cheapest")."""
    found = banned_terms_in(texts, tuple(banned_terms))
    problems = [f"banned term in {hit}" for hit in found]
    measured = {"banned_terms": ", ".join(banned_terms) or "none", "fields_checked": ", ".join(texts), "hits": len(found)}
    return _outcome(problems, measured)


def brief_text(product: str, audience: str, tone: str) -> str:
    """What a script is compared with: the brief's product, audience and tone."""
    return f"{product} for {audience}. Tone: {tone}."


def semantic_similarity(script: str, reference: str) -> float:
    from model_adapters.text_embedding import cosine  # loads torch: only when a check runs

    return float(cosine(_embedding(script), _embedding(reference)))


@functools.lru_cache(maxsize=2048)
def _embedding(text: str):
    """Each text embedded once per process: a campaign's brief text is the same for all its
    variants, and scripts repeat (the same brief, locale and length often give the same
    concept). Variants' checks run in parallel threads: new texts are embedded in batches."""
    from model_adapters.text_embedding import get_coalescing_embedder

    return get_coalescing_embedder().embed_one(text)


def prepare_semantic_alignment(briefs: Sequence[VariantBriefDoc]) -> None:
    """Loads MiniLM and embeds the briefs' texts ahead of the first script to compare."""
    for text in dict.fromkeys(brief_text(brief.product, brief.audience, brief.tone) for brief in briefs):
        _embedding(text)


def check_semantic_alignment(
    script: str, product: str, audience: str, tone: str, *, threshold: float = SEMANTIC_ALIGNMENT_THRESHOLD
) -> CheckOutcome:
    """MiniLM cosine between the script and `brief_text(product, audience, tone)` is at least
    `threshold` (see `SEMANTIC_ALIGNMENT_THRESHOLD` for how it was chosen)."""
    reference = brief_text(product, audience, tone)
    score = semantic_similarity(script, reference)
    problems = []
    if score < threshold:
        problems.append(f"script is off brief: cosine {score:.3f} < {threshold:.2f} against {reference!r}")
    measured = {
        "cosine": dg.MetadataValue.float(round(score, 4)),
        "threshold": dg.MetadataValue.float(threshold),
        "brief_text": reference,
    }
    return _outcome(problems, measured)


# --- budget ------------------------------------------------------------------------------


def check_budget(spent_usd: float, budget_usd: float, *, campaign_id: str = "", calls: int | None = None) -> CheckOutcome:
    """The campaign's recorded spend is within its budget."""
    problems = []
    if spent_usd > budget_usd + 1e-9:
        problems.append(f"campaign {campaign_id!r} spent ${spent_usd:.4f}, over its budget of ${budget_usd:.2f}")
    measured = {
        "campaign": campaign_id,
        "spent_usd": dg.MetadataValue.float(round(spent_usd, 6)),
        "budget_usd": dg.MetadataValue.float(float(budget_usd)),
        "budget_used_pct": dg.MetadataValue.float(round(100.0 * spent_usd / budget_usd, 2) if budget_usd else 0.0),
    }
    if calls is not None:
        measured["paid_calls"] = calls
    return _outcome(problems, measured)


# --- Dagster wrappers --------------------------------------------------------------------


def check_evaluation(
    asset: dg.AssetKey | str,
    name: str,
    blocking: bool,
    partition_key: str,
    outcome: CheckOutcome,
    target: Any = None,
) -> dg.AssetCheckEvaluation:
    """One partition's result as Dagster records it, with what failed in the description."""
    passed, metadata = outcome
    problems = list(metadata.get("problems", []))
    asset_key = asset if isinstance(asset, dg.AssetKey) else dg.AssetKey(asset)
    subject = f"{asset_key.to_user_string()} [{partition_key}]"
    description = f"{subject}: {name} passed" if passed else f"{subject}: {name} failed: " + "; ".join(problems)
    return partition_check_evaluation(
        asset_key=asset_key,
        check_name=name,
        passed=passed,
        metadata={
            **{k: v for k, v in metadata.items() if k != "problems"},
            "partition": partition_key,
            "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"),
        },
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        blocking=blocking,
        partition=partition_key,
        target_materialization_data=target,
    )


# --- the budget check: its own step, after the media ------------------------------------------


def measured(evaluate: Callable[[Any], CheckOutcome], item: Any) -> CheckOutcome:
    """`evaluate(item)`; a check that could not measure is a failed check, named, not a crash."""
    try:
        return evaluate(item)
    except Exception as exc:
        return CheckOutcome(False, {"problems": [f"could not be checked: {error_text(exc)}"]})


def evaluate_partitions(
    context: dg.AssetCheckExecutionContext, evaluate: Callable[[str], CheckOutcome]
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    """Run `evaluate(partition_key)` for every partition key of the step; yield one evaluation each.

    An exception for one key is that key's failure, not the step's: the other
    keys are still checked. Then the check's output, so downstream steps may start.
    """
    (spec,) = context.check_specs
    asset = spec.asset_key
    targets = latest_materializations(context.instance, asset, list(context.partition_keys))
    for partition_key in context.partition_keys:
        outcome = measured(evaluate, partition_key)
        yield check_evaluation(asset, spec.name, spec.blocking, partition_key, outcome, targets.get(partition_key))
    yield dg.Output(None, output_name=context.op_execution_context.op_def.output_defs[0].name)


def build_budget_check(pipeline: Pipeline) -> dg.AssetChecksDefinition:
    """The campaign's spend within its budget, on the pipeline's final stage: a step of its own
    (the media checks run inside the model step, as each stage completes)."""

    @partitioned_asset_check(
        asset=pipeline.key(pipeline.final_stage.name),
        name="campaign_within_budget",
        additional_ins={"brief": dg.AssetIn(pipeline.brief_key)},
        partitions_def=pipeline.partitions_def,
        blocking=False,
        description="The budget ledger's spend for the variant's campaign is within the brief's budget_usd.",
    )
    def campaign_budget(context: dg.AssetCheckExecutionContext, router: ModelRouter, brief):
        ledger = router.ledger(context.instance)
        totals_by_campaign: dict[str, dict] = {}  # one ledger read per campaign, not per variant

        def evaluate(key: str) -> CheckOutcome:
            spec: VariantBriefDoc = brief[key]
            if spec.campaign_id not in totals_by_campaign:
                totals_by_campaign[spec.campaign_id] = ledger.totals(spec.campaign_id)
            totals = totals_by_campaign[spec.campaign_id]
            return check_budget(totals["spent_usd"], spec.budget_usd, campaign_id=spec.campaign_id, calls=totals["calls"])

        yield from evaluate_partitions(context, evaluate)

    return campaign_budget
