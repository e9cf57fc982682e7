"""On-brief quality of the SmolLM2 concept writer against the phrase bank, and what it costs.

    .venv/bin/python benchmarks/concept_quality.py [--fresh-cache | --cache-dir DIR] [--limit N] [--no-formats] [--threads N]

Briefs: the English variants of briefs/*.yaml (read with resources.brief_schema.load_brief)
and the 20 English briefs below (varied products, audiences, tones, durations), each with the
seed the pipeline gives its partition (sha256 of "<campaign>.<variant>", assets/brief.py).

For each brief both writers run: the phrase bank (`LocalConceptWriter`) and the LLM writer
(`SmolLMConceptWriter`, 4 candidates). The on-brief score is the concept stage's check
(assets/checks.py check_semantic_alignment): MiniLM cosine between the script and
"<product> for <audience>. Tone: <tone>.", threshold 0.30. When the LLM writer raises
UnsupportedInput the route falls back to the phrase bank: counted as a fallback, and the
"route" row scores what the variant would get (the LLM's concept, or the phrase bank's).

Also measured: the model's load times (the first load of this process, which dequantizes the
GGUF when the cache folder is new, as with --fresh-cache, and imports transformers; then a
load from the cached safetensors), time per concept
after load, candidate parse and validation rates with the reasons candidates fail, and (unless
--no-formats) the format comparison behind the writer's design: unconstrained sampling with a
one-shot JSON prompt vs a one-shot labelled-lines prompt, how often each parses and validates.

Writes benchmarks/results/concept_quality.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from model_adapters import local_llm_concept as llm  # noqa: E402
from model_adapters.local_concept import LocalConceptWriter  # noqa: E402
from model_adapters.types import ConceptRequest, UnsupportedInput  # noqa: E402
from resources.brief_schema import brief_files, load_brief  # noqa: E402

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
THRESHOLD = 0.30  # assets/checks.py SEMANTIC_ALIGNMENT_THRESHOLD
# The English voice of config/routing.local.yaml (Piper "joe"): model_adapters/registry.py.
ENGLISH_WORDS_PER_SECOND = 2.5

# (campaign, product, audience, tone, banned terms, duration_s)
INLINE_BRIEFS: list[tuple[str, str, str, str, tuple[str, ...], float]] = [
    ("brew-kettle", "Halo electric kettle", "tea drinkers in small flats", "Cosy", ("cheap",), 10),
    ("pulse-watch", "Pulse fitness watch", "beginner runners", "Motivating", ("miracle",), 15),
    ("green-bank", "Fern savings account", "students opening their first account", "Reassuring", ("free money",), 12),
    ("sprout-box", "Sprout meal kit", "busy parents", "Friendly", ("cheap", "diet"), 15),
    ("drift-ebike", "Drift folding e-bike", "city commuters", "Confident", ("unbreakable",), 12),
    ("calm-app", "Stillwater meditation app", "stressed office workers", "Soothing", ("cure",), 20),
    ("paw-food", "Barkley grain-free dog food", "dog owners", "Playful", ("guaranteed",), 10),
    ("nova-phone", "Nova 5 smartphone", "mobile photographers", "Bold", ("best ever",), 12),
    ("dune-tent", "Dune two-person tent", "weekend campers", "Adventurous", ("waterproof forever",), 15),
    ("glow-serum", "Lumen vitamin C serum", "people with dull skin", "Fresh", ("anti-aging", "miracle"), 10),
    ("code-camp", "Byte coding bootcamp", "career changers", "Encouraging", ("guaranteed job",), 20),
    ("harbor-coffee", "Harbor cold brew", "early risers", "Upbeat", (), 8),
    ("quill-pen", "Quill fountain pen", "people who love writing letters", "Elegant", (), 12),
    ("orbit-vacuum", "Orbit robot vacuum", "pet owners", "Reassuring", ("cheap",), 15),
    ("terra-boots", "Terra hiking boots", "hikers", "Rugged", ("indestructible",), 12),
    ("bloom-flowers", "Bloom flower delivery", "people who forget birthdays", "Witty", (), 10),
    ("atlas-suitcase", "Atlas carry-on suitcase", "frequent flyers", "Sleek", (), 12),
    ("spark-toothbrush", "Spark electric toothbrush", "families", "Cheerful", ("dentist approved",), 8),
    ("echo-speaker", "Echo Mini speaker", "students", "Energetic", ("cheap",), 6),
    ("sol-panels", "Sol rooftop solar panels", "homeowners", "Trustworthy", ("free",), 30),
]


def variant_seed(partition_key: str) -> int:
    """assets/brief.py variant_seed, without importing Dagster."""
    return int.from_bytes(hashlib.sha256(partition_key.encode()).digest()[:4], "big")


def requests() -> list[tuple[str, ConceptRequest]]:
    out = []
    for path in brief_files(PROJECT_ROOT / "briefs"):
        brief = load_brief(path)
        for variant in brief.variants:
            if not variant.locale.startswith("en"):
                continue
            key = f"{brief.campaign_id}.{variant.id}"
            out.append(
                (
                    key,
                    ConceptRequest(
                        campaign_id=brief.campaign_id,
                        variant_id=variant.id,
                        product=brief.product,
                        audience=brief.audience,
                        tone=brief.tone,
                        palette=brief.palette,
                        banned_terms=brief.banned_terms,
                        locale=variant.locale,
                        aspect_ratio=variant.aspect_ratio,
                        duration_s=variant.duration_s,
                        seed=variant_seed(key),
                        words_per_second=ENGLISH_WORDS_PER_SECOND,
                    ),
                )
            )
    for i, (campaign, product, audience, tone, banned, duration) in enumerate(INLINE_BRIEFS):
        key = f"{campaign}.reel-en"
        out.append(
            (
                key,
                ConceptRequest(
                    campaign_id=campaign,
                    variant_id="reel-en",
                    product=product,
                    audience=audience,
                    tone=tone,
                    palette=("#1b1f3b", "#f4a259"),
                    banned_terms=banned,
                    locale="en-GB" if i % 3 == 0 else "en-US",
                    aspect_ratio="9:16",
                    duration_s=duration,
                    seed=variant_seed(key),
                    words_per_second=ENGLISH_WORDS_PER_SECOND,
                ),
            )
        )
    return out


def on_brief(embedder, script: str, request: ConceptRequest) -> float:
    from model_adapters.text_embedding import cosine

    vectors = embedder.embed([llm.brief_text(request.product, request.audience, request.tone), script])
    return float(cosine(vectors[1], vectors[0]))


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "mean": round(statistics.fmean(values), 3),
        "max": round(max(values), 3),
        "passed": sum(v >= THRESHOLD for v in values),
    }


def problem_kind(problem: str) -> str:
    """A validation problem without its numbers ("script 18 words, want 24-34" -> "script length")."""
    import re

    if problem.startswith("banned "):
        return "banned term"
    match = re.match(r"^(headline|script|image prompt) \d+ words", problem)
    if match:
        return f"{match.group(1)} length"
    return problem


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --- the format comparison (unconstrained sampling) -------------------------------------------

JSON_SYSTEM = llm.SYSTEM_PROMPT
JSON_EXAMPLE = json.dumps(
    {
        "headline": "Cool air for quiet workdays",
        "script": llm.EXAMPLE_ANSWER.split("\n")[1].removeprefix("Script: "),
        "image_prompt": llm.EXAMPLE_ANSWER.split("\n")[2].removeprefix("Image: "),
    }
)


def free_candidates(loaded, request: ConceptRequest, fmt: str, candidates: int = 4) -> list[str]:
    """Plain sampling (temperature, top-p, torch.manual_seed), no constraint, no prefill."""
    import torch

    target = llm.target_words(request)
    messages = llm.chat_messages(request, target)
    if fmt == "json":
        messages[0]["content"] = JSON_SYSTEM.replace("exactly the format of the example", "one JSON object like the example")
        messages[2]["content"] = JSON_EXAMPLE
    tokenizer = loaded.tokenizer
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(loaded.device)
    limits = llm.FieldLimits.for_target(target)
    torch.manual_seed(request.seed)
    with torch.inference_mode():
        out = loaded.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=llm.TEMPERATURE,
            top_p=llm.TOP_P,
            num_return_sequences=candidates,
            max_new_tokens=limits.max_new_tokens() + 20,
            pad_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        )
    return [tokenizer.decode(row[ids.shape[1] :], skip_special_tokens=True) for row in out]


def compare_formats(loaded, items: list[tuple[str, ConceptRequest]]) -> dict:
    results = {}
    for fmt in ("json", "lines"):
        parsed = valid = total = 0
        started = time.perf_counter()
        for _, request in items:
            target = llm.target_words(request)
            for raw in free_candidates(loaded, request, fmt):
                total += 1
                fields = llm._parse_json(raw) if fmt == "json" else llm.parse_candidate(raw)
                if fmt == "lines" and fields is not None and raw.lstrip().startswith("{"):
                    fields = None  # count only the asked format
                parsed += fields is not None
                if fields is not None:
                    valid += llm.validate_candidate(raw, request, target).valid
        results[fmt] = {
            "candidates": total,
            "parsed": parsed,
            "valid": valid,
            "parse_rate": round(parsed / total, 3),
            "valid_rate": round(valid / total, 3),
            "seconds": round(time.perf_counter() - started, 1),
        }
    return results


# --- the run ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N briefs (0: all)")
    parser.add_argument("--no-formats", action="store_true", help="skip the unconstrained format comparison")
    parser.add_argument("--format-briefs", type=int, default=6, help="briefs in the format comparison")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--cache-dir", default=None, help="model cache root (default: the writer's)")
    parser.add_argument(
        "--fresh-cache", action="store_true", help="a new temporary cache root (removed afterwards): the first load dequantizes the GGUF"
    )
    parser.add_argument("--name", default="concept_quality", help="results file name (without suffix)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    fresh = None
    if args.fresh_cache:
        import tempfile

        fresh = tempfile.mkdtemp(prefix="smollm2-cache-")
        args.cache_dir = fresh
    try:
        run(args, torch)
    finally:
        if fresh:
            import shutil

            shutil.rmtree(fresh, ignore_errors=True)


def run(args, torch) -> None:
    from model_adapters.text_embedding import get_embedder

    items = requests()
    if args.limit:
        items = items[: args.limit]
    embedder = get_embedder()
    bank = LocalConceptWriter()
    writer = llm.SmolLMConceptWriter(cache_dir=args.cache_dir)

    first = writer.load()
    cached = llm.load_model(args.cache_dir, reuse=False)  # a second load: from the cached safetensors
    loads = {
        "first": {"source": first.source, "seconds": round(first.load_s, 2)},
        "cached": {"source": cached.source, "seconds": round(cached.load_s, 2)},
        "folder": str(cached.folder),
    }
    print(f"load: first {first.source} {first.load_s:.1f} s, again from {cached.source} {cached.load_s:.2f} s")
    embedder.embed(["warm-up"])

    rows = []
    problems: collections.Counter[str] = collections.Counter()
    parsed = valid = on_brief_ok = total_candidates = 0
    candidate_scores: list[float] = []
    for key, request in items:
        bank_result = bank.write_sync(request)
        bank_score = on_brief(embedder, bank_result.script, request)
        row = {
            "key": key,
            "product": request.product,
            "audience": request.audience,
            "tone": request.tone,
            "duration_s": request.duration_s,
            "target_words": llm.target_words(request),
            "bank": {
                "headline": bank_result.headline,
                "script": bank_result.script,
                "score": round(bank_score, 4),
                "words": len(bank_result.script.split()),
            },
        }
        started = time.perf_counter()
        try:
            result = asyncio.run(writer.write(request))
        except UnsupportedInput as exc:
            row["llm"] = {"fallback": str(exc)}
        else:
            score = on_brief(embedder, result.script, request)
            row["llm"] = {
                "headline": result.headline,
                "script": result.script,
                "image_prompt": result.image_prompt,
                "score": round(score, 4),
                "words": len(result.script.split()),
                "input_tokens": result.input_tokens,
                "output_tokens": result.output_tokens,
            }
        attempt = writer.last_attempt
        row["llm"]["seconds"] = round(time.perf_counter() - started, 2)
        if attempt is not None:
            row["llm"]["generate_s"] = round(attempt.generate_s, 2)
            row["llm"]["candidates"] = [
                {"problems": list(c.problems) if c.fields is not None else ["unparsed"], "score": None if s is None else round(s, 4)}
                for c, s in zip(attempt.candidates, attempt.scores, strict=False)
            ]
            for c, s in zip(attempt.candidates, attempt.scores, strict=False):
                total_candidates += 1
                parsed += c.fields is not None
                valid += c.valid
                if c.valid and s is not None:
                    candidate_scores.append(s)
                    on_brief_ok += s >= THRESHOLD
                for problem in c.problems:
                    problems[problem_kind(problem)] += 1
        rows.append(row)
        llm_part = row["llm"]
        shown = f"{llm_part['score']:.3f}" if "score" in llm_part else "fallback"
        print(f"{key:32s} bank {bank_score:.3f}  llm {shown:>8s}  {llm_part['seconds']:5.1f} s", flush=True)

    llm_scores = [r["llm"]["score"] for r in rows if "score" in r["llm"]]
    bank_scores = [r["bank"]["score"] for r in rows]
    route_scores = [r["llm"].get("score", r["bank"]["score"]) for r in rows]
    seconds = [r["llm"]["seconds"] for r in rows]
    fallbacks = sum("fallback" in r["llm"] for r in rows)
    report = {
        "briefs": len(rows),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(first.device),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "writer": {
            "model": writer.info.model,
            "model_version": writer.info.model_version,
            "candidates": writer.candidates,
            "min_on_brief": writer.min_on_brief,
        },
        "load": loads,
        "scores": {"llm": summary(llm_scores), "phrase_bank": summary(bank_scores), "route": summary(route_scores)},
        "llm_passed_threshold": sum(s >= THRESHOLD for s in llm_scores),
        "fallbacks": fallbacks,
        "seconds_per_concept": {
            "median": round(statistics.median(seconds), 2),
            "mean": round(statistics.fmean(seconds), 2),
            "p90": round(percentile(seconds, 0.9), 2),
            "max": round(max(seconds), 2),
        },
        "candidates": {
            "total": total_candidates,
            "parsed": parsed,
            "valid": valid,
            "valid_and_on_brief": on_brief_ok,
            "parse_rate": round(parsed / total_candidates, 3) if total_candidates else None,
            "valid_rate": round(valid / total_candidates, 3) if total_candidates else None,
            "valid_scores": summary(candidate_scores),
            "problems": dict(problems.most_common()),
        },
        "rows": rows,
    }
    if not args.no_formats:
        print("format comparison (unconstrained sampling)...", flush=True)
        report["formats"] = compare_formats(cached, items[: args.format_briefs])
    write_results(report, args.name)


def write_results(report: dict, name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    s = report["scores"]
    lines = [
        f"# Concept quality: SmolLM2-135M writer vs phrase bank ({report['briefs']} English briefs)",
        "",
        f"Machine: {report['machine']['cpus']} CPUs, torch {report['machine']['torch']} with "
        f"{report['machine']['torch_threads']} threads on {report['machine']['device']}. "
        f"Writer: {report['writer']['model']} ({report['writer']['model_version']}), "
        f"{report['writer']['candidates']} candidates, on-brief floor {report['writer']['min_on_brief']}.",
        "",
        'On-brief score: MiniLM cosine between the script and "<product> for <audience>. Tone: <tone>." '
        f"(the concept stage's check, threshold {THRESHOLD}).",
        "",
        "| writer | n | min | median | mean | max | passed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, key in (
        ("SmolLM2 (its own concepts)", "llm"),
        ("phrase bank", "phrase_bank"),
        ("route (SmolLM2, else phrase bank)", "route"),
    ):
        v = s[key]
        if v.get("n"):
            lines.append(f"| {label} | {v['n']} | {v['min']} | {v['median']} | {v['mean']} | {v['max']} | {v['passed']} |")
    c = report["candidates"]
    sec = report["seconds_per_concept"]
    load = report["load"]
    lines += [
        "",
        f"- SmolLM2 concepts passing the threshold: {report['llm_passed_threshold']} of {report['briefs']}; "
        f"fell back to the phrase bank: {report['fallbacks']} of {report['briefs']}.",
        f"- Time per concept (after load, 4 candidates in one batched generate, ranking included): median "
        f"{sec['median']} s, mean {sec['mean']} s, p90 {sec['p90']} s, max {sec['max']} s.",
        f"- Load: first {load['first']['seconds']} s ({load['first']['source']}), from the cached safetensors "
        f"{load['cached']['seconds']} s.",
        f"- Candidates: {c['total']}; parsed {c['parsed']} ({c['parse_rate']}), valid {c['valid']} ({c['valid_rate']}), "
        f"valid and on brief {c['valid_and_on_brief']}. Valid candidates' scores: {c['valid_scores']}.",
        f"- Why candidates failed: {', '.join(f'{k} {v}' for k, v in c['problems'].items()) or 'none'}.",
    ]
    if "formats" in report:
        lines += [
            "",
            "Format comparison, unconstrained sampling (no logits processor, no prefill; same one-shot example):",
            "",
            "| format | candidates | parsed | valid | seconds |",
            "| --- | --- | --- | --- | --- |",
        ]
        for fmt, v in report["formats"].items():
            lines.append(
                f"| {fmt} | {v['candidates']} | {v['parsed']} ({v['parse_rate']}) | {v['valid']} ({v['valid_rate']}) | {v['seconds']} |"
            )
    lines += ["", "## Three scripts of each writer", ""]
    shown, products = [], set()
    for r in report["rows"]:  # the first three products the LLM wrote for
        if "script" in r["llm"] and r["product"] not in products and len(shown) < 3:
            shown.append(r)
            products.add(r["product"])
    for r in shown:
        lines += [
            f"**{r['product']}** for {r['audience']} ({r['tone']}, {r['duration_s']:g} s, target {r['target_words']} words)",
            "",
            f"- SmolLM2 ({r['llm']['score']:.3f}, {r['llm']['words']} words): *{r['llm']['headline']}*. {r['llm']['script']}  ",
            f"  image: {r['llm']['image_prompt']}",
            f"- phrase bank ({r['bank']['score']:.3f}, {r['bank']['words']} words): *{r['bank']['headline']}*. {r['bank']['script']}",
            "",
        ]
    lines += ["## Every brief", "", "| brief | bank | SmolLM2 | s |", "| --- | --- | --- | --- |"]
    for r in report["rows"]:
        llm_cell = f"{r['llm']['score']:.3f}" if "score" in r["llm"] else "fallback"
        lines.append(f"| {r['key']} | {r['bank']['score']:.3f} | {llm_cell} | {r['llm']['seconds']} |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:24]))


if __name__ == "__main__":
    main()
