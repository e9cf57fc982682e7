"""How well Whisper tiny.en understands our voices: the WER distributions a voiceover check needs.

    .venv/bin/python benchmarks/voice_wer.py [--garble reverse,shuffle] [--limit N] [--out benchmarks/results]

Twenty English ad scripts (15-45 words; varied products and audiences; four
with digits, "$", "%", which espeak and Piper speak as words and Whisper may
write as digits or as words, `normalize_words` leaving them as they are) are
synthesised by every local English voice:

* ``espeak en-US`` and ``espeak en-GB`` (`model_adapters.local_voice`),
* ``piper en-US`` (`model_adapters.local_piper`), if that module imports.

Each clean WAV is transcribed with `model_adapters.local_transcribe` (Whisper
tiny.en, the module's decoding settings), and so is a garbled copy of it for
each ``--garble`` kind: ``reverse`` (the samples backwards) and ``shuffle``
(150 ms chunks in a fixed random order). Printed and written to
<out>/voice_wer.md, every figure to <out>/voice_wer.json:

* WER per voice, clean: min / median / p90 / max, and the same for the
  garbled copies (all voices pooled, and per kind), so a check's threshold can
  sit in the gap between the two;
* the word-start offsets (Whisper vs the voice's own `WordTiming`s) over all
  matched words per voice: median and p90 of |difference|, the median signed
  difference, and the per-script median |difference| at its worst;
* the transcription's real-time factor (audio seconds per wall second) per
  voice and for garbled audio (Whisper loops on garbage and is slower there),
  with the load average, since the machine may be shared;
* the worst clean transcripts, to show what the errors are.

Results (2 vCPU VM shared with other work, load average 4-6; int8, beam 2; 358 s):

    voice         clean WER min/med/p90/max   garbled WER min (reverse, shuffle)   start offset |d| med/p90
    espeak en-US  0.000 / 0.133 / 0.365 / 0.400   0.864, 1.000                      0.107 / 0.210 s (+0.104)
    espeak en-GB  0.000 / 0.170 / 0.362 / 0.500   1.000, 0.917                      0.105 / 0.216 s (+0.103)
    piper en-US   0.000 / 0.043 / 0.132 / 0.200   0.875, 0.964                      0.059 / 0.139 s (+0.045)

Clean and garbled do not overlap (clean max 0.50, garbled min 0.86); the worst
clean figures come from the digit scripts ("$49" heard as "dollar forty
nine") and from Whisper writing spoken "twelve" as "12". Transcription runs at
5-12x real time here (0.12 CPU-seconds per audio second).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model_adapters.local_transcribe import (  # noqa: E402
    DEFAULT_BEAM_SIZE,
    get_transcriber,
    offset_summary,
    start_offsets,
    word_error_rate,
)
from model_adapters.local_voice import EspeakVoiceAdapter  # noqa: E402
from model_adapters.media.wav import encode_wav  # noqa: E402
from model_adapters.types import VoiceRequest  # noqa: E402

SCRIPTS: list[str] = [
    "Your morning deserves better coffee. Our fresh roasted beans arrive at your door every week, "
    "so you never run out. Try your first bag for half the price.",
    "Meet the lamp that reads with you. Warm light in the evening, bright light for work, and it remembers how you like it.",
    "Running shoes built for rainy streets. Grippy soles, light foam, and a fit that holds "
    "your foot on every turn. Find your pair in store this weekend.",
    "Saving for a home feels slow. Our app rounds up every purchase and puts the change aside, "
    "so your deposit grows while you live your life. Start today, no fees.",
    "Kids love bedtime stories. Parents love quiet evenings. Our picture books do both. "
    "Pick three favourites and we will wrap them for free.",
    "Tired of tangled cables? This charging stand powers your phone, your watch and your earbuds at once, and it looks good on any desk.",
    "The mountains are calling. Book a cabin by the lake, bring the dog, and leave the laptop "
    "at home. Spring weekends are filling up fast.",
    "Fresh pasta, made by hand every morning and delivered to your kitchen by dinner time. "
    "Cook it in three minutes and taste the difference.",
    "Learn a new language in ten minutes a day. Short lessons, real conversations, and a "
    "friendly teacher who never gets tired of your questions.",
    "Our electric bike takes the hills so you do not have to. Ride to work, skip the traffic, and arrive without breaking a sweat.",
    "Good sleep starts with a good pillow. Soft on top, firm underneath, and cool all night long. "
    "Sleep on it for a hundred nights, or send it back.",
    "Small business owners, meet your new accountant. Send us your receipts, we sort your books, and you get back to doing what you love.",
    "Winter is here. Our wool coats keep the cold out and the style in. Visit a store near you and find the one that fits.",
    "Every dog deserves a walk. Our walkers are trusted, insured and they send you a photo after every trip around the park.",
    "Plant a garden on your balcony. We send the seeds, the soil and simple instructions. All you add is water and a little patience.",
    "Game night just got louder. The new party pack has twelve games, four controllers and endless arguments about who really won.",
    # With digits and symbols: spoken as words, maybe written as digits (a known WER limit).
    "Get 20% off all garden tools this Saturday only. Hoses, rakes and shovels, everything must go before the 1st of May.",
    "Fly to Lisbon from $49 each way. Sunshine, seafood and old streets full of music. Book by Friday to get this fare.",
    "Our phone plan gives you 50 gigabytes for 15 dollars a month. No contract, no surprises, just fast data wherever you go.",
    "Join 10,000 runners on June 3rd for the city half marathon. Every step raises money for children's hospitals across the region.",
]

WITH_DIGITS = frozenset(range(16, 20))  # indices of the scripts written with digits and symbols
GARBLE_KINDS = ("reverse", "shuffle")
SHUFFLE_CHUNK_S = 0.15


def _pcm(wav: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(wav), "rb") as reader:
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2"), reader.getframerate()


def garble(wav: bytes, kind: str, seed: int) -> bytes:
    """The same samples made unintelligible, still a valid WAV of the same length."""
    pcm, rate = _pcm(wav)
    if kind == "reverse":
        return encode_wav(pcm[::-1].copy(), rate)
    if kind == "shuffle":
        size = int(SHUFFLE_CHUNK_S * rate)
        chunks = [pcm[i : i + size] for i in range(0, len(pcm), size)]
        order = np.random.default_rng(seed).permutation(len(chunks))
        return encode_wav(np.concatenate([chunks[k] for k in order]), rate)
    raise ValueError(f"unknown garble kind {kind!r}")


def voices() -> dict[str, tuple[Any, str]]:
    """Voice label -> (adapter, locale)."""
    espeak = EspeakVoiceAdapter()
    found: dict[str, tuple[Any, str]] = {"espeak en-US": (espeak, "en-US"), "espeak en-GB": (espeak, "en-GB")}
    try:
        from model_adapters.local_piper import PiperVoiceAdapter

        found["piper en-US"] = (PiperVoiceAdapter(), "en-US")
    except Exception as exc:  # not written yet, or its voice is missing: benchmark the rest
        print(f"(no Piper voice: {type(exc).__name__}: {exc})")
    return found


def distribution(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    array = np.array(values, dtype=np.float64)
    return {
        "n": len(values),
        "min": round(float(array.min()), 4),
        "median": round(float(np.median(array)), 4),
        "p90": round(float(np.percentile(array, 90)), 4),
        "max": round(float(array.max()), 4),
    }


def _timed_transcribe(wav: bytes, language: str) -> tuple[Any, float, float]:
    transcriber = get_transcriber()
    wall, cpu = time.perf_counter(), time.process_time()
    transcript = transcriber.transcribe(wav, language)
    return transcript, time.perf_counter() - wall, time.process_time() - cpu


def run(garble_kinds: list[str], limit: int | None) -> dict[str, Any]:
    scripts = SCRIPTS[:limit] if limit else SCRIPTS
    transcriber = get_transcriber()
    started = time.perf_counter()
    load_started = time.perf_counter()
    transcriber.load()
    load_s = time.perf_counter() - load_started
    load_avg_start = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for label, (adapter, locale) in voices().items():
        for index, script in enumerate(scripts):
            voice = asyncio.run(adapter.synthesize(VoiceRequest(text=script, locale=locale, voice="default")))
            transcript, wall_s, cpu_s = _timed_transcribe(voice.wav, locale)
            offsets = start_offsets(voice.words, transcript)
            row: dict[str, Any] = {
                "voice": label,
                "script": index,
                "words": len(voice.words),
                "audio_s": round(voice.duration_s, 3),
                "wer": round(word_error_rate(script, transcript.text), 4),
                "transcript": transcript.text,
                "transcribe_s": round(wall_s, 3),
                "transcribe_cpu_s": round(cpu_s, 3),
                "offsets": offset_summary(offsets),
                "differences_s": [o["difference_s"] for o in offsets],
                "garbled": {},
            }
            for kind in garble_kinds:
                garbled, g_wall, g_cpu = _timed_transcribe(garble(voice.wav, kind, seed=index), locale)
                row["garbled"][kind] = {
                    "wer": round(word_error_rate(script, garbled.text), 4),
                    "transcript": garbled.text,
                    "transcribe_s": round(g_wall, 3),
                    "transcribe_cpu_s": round(g_cpu, 3),
                }
            rows.append(row)
            garbled_text = "  ".join(f"{k} {v['wer']:.2f}" for k, v in row["garbled"].items())
            print(
                f"{label:13} #{index:02d} wer {row['wer']:.3f}  {garbled_text}  "
                f"offset med {row['offsets']['median_abs_s']:.3f}s  rtf {voice.duration_s / wall_s:.1f}",
                flush=True,
            )

    labels = list(dict.fromkeys(row["voice"] for row in rows))
    per_voice: dict[str, Any] = {}
    for label in labels:
        mine = [row for row in rows if row["voice"] == label]
        differences = [d for row in mine for d in row["differences_s"]]
        audio = sum(row["audio_s"] for row in mine)
        per_voice[label] = {
            "clean_wer": distribution([row["wer"] for row in mine]),
            "garbled_wer": {kind: distribution([row["garbled"][kind]["wer"] for row in mine]) for kind in garble_kinds},
            "offsets": {
                "matched_words": len(differences),
                "words": sum(row["words"] for row in mine),
                "median_abs_s": round(float(np.median(np.abs(differences))), 4) if differences else None,
                "p90_abs_s": round(float(np.percentile(np.abs(differences), 90)), 4) if differences else None,
                "median_signed_s": round(float(np.median(differences)), 4) if differences else None,
                "worst_script_median_abs_s": max(row["offsets"]["median_abs_s"] for row in mine),
            },
            "rtf": round(audio / sum(row["transcribe_s"] for row in mine), 2),
            "cpu_s_per_audio_s": round(sum(row["transcribe_cpu_s"] for row in mine) / audio, 3),
        }
    garbled_rows = [(row, kind) for row in rows for kind in garble_kinds]
    garbled_audio = sum(row["audio_s"] for row, _ in garbled_rows)
    summary = {
        "clean_wer_all": distribution([row["wer"] for row in rows]),
        "clean_wer_without_digits": distribution([row["wer"] for row in rows if row["script"] not in WITH_DIGITS]),
        "garbled_wer_all": distribution([row["garbled"][kind]["wer"] for row, kind in garbled_rows]),
        "garbled_rtf": (
            round(garbled_audio / sum(row["garbled"][kind]["transcribe_s"] for row, kind in garbled_rows), 2) if garbled_rows else None
        ),
    }
    return {
        "model": transcriber.model,
        "model_version": transcriber.model_version,
        "device": transcriber.device,
        "beam_size": DEFAULT_BEAM_SIZE,
        "cpu_threads": transcriber.cpu_threads,
        "garble": garble_kinds,
        "shuffle_chunk_s": SHUFFLE_CHUNK_S,
        "scripts": scripts,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_start": [round(x, 2) for x in load_avg_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        },
        "model_load_s": round(load_s, 3),
        "total_s": round(time.perf_counter() - started, 1),
        "per_voice": per_voice,
        "summary": summary,
        "rows": rows,
    }


def _fmt(d: dict[str, Any]) -> str:
    if not d.get("n"):
        return "–"
    return f"{d['min']:.3f} / {d['median']:.3f} / {d['p90']:.3f} / {d['max']:.3f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Voice WER with {result['model']} ({result['model_version']}, {result['device']}, "
        f"beam {result['beam_size']}, {result['total_s']} s)",
        "",
        f"{len(result['scripts'])} English ad scripts per voice; garbled: {', '.join(result['garble'])} "
        f"(shuffle: {result['shuffle_chunk_s']} s chunks). WER as min / median / p90 / max.",
        "",
        "| voice | clean WER | "
        + " | ".join(f"{kind} WER" for kind in result["garble"])
        + " | start offset median / p90 abs (signed median) | matched words | rtf | cpu s per audio s |",
        "| --- | --- | " + " | ".join("---" for _ in result["garble"]) + " | --- | --- | --- | --- |",
    ]
    for label, figures in result["per_voice"].items():
        offsets = figures["offsets"]
        lines.append(
            f"| {label} | {_fmt(figures['clean_wer'])} | "
            + " | ".join(_fmt(figures["garbled_wer"][kind]) for kind in result["garble"])
            + f" | {offsets['median_abs_s']:.3f} / {offsets['p90_abs_s']:.3f} s"
            f" ({offsets['median_signed_s']:+.3f} s)"
            f" | {offsets['matched_words']} / {offsets['words']} | {figures['rtf']:.1f}x"
            f" | {figures['cpu_s_per_audio_s']:.3f} |"
        )
    summary = result["summary"]
    lines += [
        "",
        f"- clean, all voices: {_fmt(summary['clean_wer_all'])}",
        f"- clean, scripts without digits: {_fmt(summary['clean_wer_without_digits'])}",
        f"- garbled, all voices and kinds: {_fmt(summary['garbled_wer_all'])}"
        + (f" (transcription rtf {summary['garbled_rtf']:.1f}x)" if summary["garbled_rtf"] else ""),
        f"- model load {result['model_load_s']} s; load average {result['machine']['load_average_start']} at "
        f"the start, {result['machine']['load_average_end']} at the end ({result['machine']['cpus']} CPUs)",
        "",
        "## Worst clean transcripts",
        "",
        "| voice | WER | script | transcript |",
        "| --- | --- | --- | --- |",
    ]
    worst = sorted(result["rows"], key=lambda row: row["wer"], reverse=True)[:8]
    for row in worst:
        script = result["scripts"][row["script"]]
        lines.append(f"| {row['voice']} | {row['wer']:.3f} | {script} | {row['transcript']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--garble", default=",".join(GARBLE_KINDS), help="comma-separated: reverse, shuffle")
    parser.add_argument("--limit", type=int, default=None, help="only the first N scripts")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.garble.split(",") if k.strip()]
    for kind in kinds:
        if kind not in GARBLE_KINDS:
            parser.error(f"unknown garble kind {kind!r}")
    result = run(kinds, args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "voice_wer.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "voice_wer.md").write_text(text)
    print()
    print(text)


if __name__ == "__main__":
    main()
