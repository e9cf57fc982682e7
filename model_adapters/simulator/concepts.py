"""The copy the simulated chat endpoint answers: a schema-valid concept built from the brief
(its script exactly ``target_words`` long), or, for a seeded share of requests, well-formed
placeholder copy that ignores the brief."""

from __future__ import annotations

import random
import textwrap
from typing import Any

_SENTENCES = (
    "It fits into your day without asking for attention.",
    "Every detail is tuned to feel right.",
    "Set it up in minutes and forget the manual.",
    "It works the way you already do.",
    "Small choices add up, and this one adds up fast.",
    "Quiet when you want calm, bold when you need it.",
    "Honest materials, clear design, nothing extra.",
    "People who try it tend to keep it.",
    "Less setup, fewer steps, more of what matters.",
)


def synth_concept(brief: dict[str, Any], seed: int) -> dict[str, Any]:
    """A valid concept whose script has exactly ``target_words`` words."""
    product = str(brief.get("product") or "the product")
    audience = str(brief.get("audience") or "everyone")
    tone = str(brief.get("tone") or "warm")
    palette = ", ".join(str(c) for c in brief.get("palette") or []) or "brand colours"
    target = max(3, int(brief.get("target_words") or 40))
    banned = [str(t).lower() for t in brief.get("banned_terms") or []]
    rng = random.Random(f"{seed}|{product}|{audience}")
    bank = [s for s in _SENTENCES if not any(b in s.lower() for b in banned)] or ["It is here."]
    sentences = [f"Meet {product}, made for {audience}."]
    while sum(len(s.split()) for s in sentences) < target:
        sentences.append(rng.choice(bank))
    words = " ".join(sentences).split()[:target]
    script = " ".join(words).rstrip(",;:") + ("" if words[-1][-1] in ".!?" else ".")
    return {
        "headline": f"Meet {product}",
        "script": script,
        "image_prompt": f"{product} for {audience}, {tone} mood, palette {palette}, soft light, clean composition, no text",
        "caption_lines": textwrap.wrap(script, 42),
    }


_PLACEHOLDER = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua."


def synth_off_brief_concept(brief: dict[str, Any]) -> dict[str, Any]:
    """Well-formed, schema-valid and off-brief: placeholder copy of the right length, as a mock
    or a model that ignored its prompt answers. The same whatever the seed."""
    target = max(3, int(brief.get("target_words") or 40))
    words = (_PLACEHOLDER.split() * (target // len(_PLACEHOLDER.split()) + 1))[:target]
    script = " ".join(words).rstrip(",;:") + ("" if words[-1][-1] in ".!?" else ".")
    return {
        "headline": "Placeholder headline",
        "script": script,
        "image_prompt": "placeholder image, stock photo",
        "caption_lines": textwrap.wrap(script, 42),
    }


def off_brief(share: float, seed: int) -> bool:
    """Whether the answer for `seed` is off-brief: a fixed share of seeds, the same on every run."""
    return share > 0 and random.Random(f"off-brief|{seed}").random() < share
