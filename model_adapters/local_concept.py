"""The embedded concept writer: headline, script, image prompt and caption lines.

The last fallback of the local concept route (after the SmolLM2 writer,
model_adapters/local_llm_concept.py, which writes English): copy composed from
phrase banks per language (en, de, fr, es, pt, it, nl, ja), chosen by a seeded RNG: the same request
gives the same concept, another seed another one. The script is sized to the
variant's target duration at the speaking rate of the voice that will read it, and no
sentence containing a banned term is ever used.

Japanese is written without spaces, so its script is measured in characters (letters and digits,
the 字数 Japanese copy is sized in: `script_length`), and the Japanese voice's measured rate is in
characters a second (model_adapters/local_kokoro.py); its sentences are joined without spaces and
its caption lines are cut by character count, preferably after 、. The Japanese bank names only
the product: a brief's audience and tone are English text that a Japanese sentence cannot carry.
"""

from __future__ import annotations

import random
import re
import textwrap
import unicodedata

from model_adapters.types import AdapterInfo, ConceptRequest, ConceptResult, Price

# Speaking rate of the local voice (espeak at ~165 wpm), in words per second.
WORDS_PER_SECOND = 2.6
CAPTION_LINE_CHARS = 42

_SCENES = [
    "a sunlit studio with soft shadows",
    "a calm city morning seen through tall windows",
    "an open landscape at golden hour",
    "a minimal tabletop set with layered paper shapes",
    "a night street glowing with reflections",
    "a bright kitchen with morning haze",
]

_PHRASES: dict[str, dict[str, list[str]]] = {
    "en": {
        "headline": [
            "Meet {product}",
            "{product}, made for {audience}",
            "Your day, upgraded by {product}",
            "Say hello to {product}",
            "{product}: ready when you are",
        ],
        "open": [
            "This is {product}, built for {audience}.",
            "Meet {product}, made with {audience} in mind.",
            "Here is {product}, the one {audience} have been waiting for.",
        ],
        "body": [
            "It fits into your day without asking for attention.",
            "Every detail is tuned to feel {tone}.",
            "Set it up in minutes and forget the manual.",
            "It works the way you already do.",
            "Small choices add up, and this one adds up fast.",
            "It is designed to last, and built to be repaired.",
            "Quiet when you want calm, bold when you need it.",
            "Thoughtful materials, honest design, nothing extra.",
            "It keeps up on busy days and slows down on easy ones.",
            "People who try it tend to keep it.",
            "It looks good on a desk and better in your hands.",
            "Less setup, fewer steps, more of what matters.",
        ],
        "close": [
            "{product}. Try it today.",
            "Find {product} near you.",
            "{product}. Made for {audience}.",
        ],
    },
    "de": {
        "headline": ["Das ist {product}", "{product} für {audience}", "Bereit für {product}?", "Hallo, {product}"],
        "open": [
            "Das ist {product}, gemacht für {audience}.",
            "Hier kommt {product}, gedacht für {audience}.",
        ],
        "body": [
            "Es passt in deinen Tag, ohne Aufmerksamkeit zu verlangen.",
            "Jedes Detail ist darauf abgestimmt, {tone} zu wirken.",
            "In wenigen Minuten eingerichtet, ganz ohne Handbuch.",
            "Es funktioniert so, wie du ohnehin arbeitest.",
            "Gebaut, um lange zu halten, und gemacht, um repariert zu werden.",
            "Ruhig, wenn du Ruhe willst, kraftvoll, wenn du es brauchst.",
            "Ehrliche Materialien, klares Design, nichts Überflüssiges.",
            "Wer es einmal ausprobiert, behält es meistens.",
            "Weniger Einrichtung, weniger Schritte, mehr von dem, was zählt.",
        ],
        "close": ["{product}. Probier es heute aus.", "{product}. Gemacht für {audience}."],
    },
    "fr": {
        "headline": ["Voici {product}", "{product}, pour {audience}", "Dites bonjour à {product}"],
        "open": ["Voici {product}, conçu pour {audience}.", "Découvrez {product}, pensé pour {audience}."],
        "body": [
            "Il trouve sa place dans votre journée sans rien demander.",
            "Chaque détail est réglé pour paraître {tone}.",
            "Installé en quelques minutes, sans manuel.",
            "Il fonctionne comme vous travaillez déjà.",
            "Conçu pour durer, et fait pour être réparé.",
            "Calme quand vous voulez du calme, audacieux quand il le faut.",
            "Des matériaux honnêtes, un design clair, rien de superflu.",
            "Ceux qui l'essaient le gardent.",
        ],
        "close": ["{product}. Essayez-le dès aujourd'hui.", "{product}. Fait pour {audience}."],
    },
    "es": {
        "headline": ["Conoce {product}", "{product}, para {audience}", "Hola, {product}"],
        "open": ["Esto es {product}, hecho para {audience}.", "Conoce {product}, pensado para {audience}."],
        "body": [
            "Encaja en tu día sin pedir atención.",
            "Cada detalle está pensado para sentirse {tone}.",
            "Se configura en minutos, sin manual.",
            "Funciona como tú ya trabajas.",
            "Diseñado para durar y hecho para repararse.",
            "Tranquilo cuando quieres calma, audaz cuando lo necesitas.",
            "Materiales honestos, diseño claro, nada de más.",
            "Quien lo prueba, se lo queda.",
        ],
        "close": ["{product}. Pruébalo hoy.", "{product}. Hecho para {audience}."],
    },
    "pt": {
        "headline": ["Conheça {product}", "{product}, para {audience}", "Olá, {product}"],
        "open": ["Este é {product}, feito para {audience}.", "Conheça {product}, pensado para {audience}."],
        "body": [
            "Cabe no seu dia sem pedir atenção.",
            "Cada detalhe foi pensado para ser {tone}.",
            "Você configura em minutos, sem manual.",
            "Funciona do jeito que você já trabalha.",
            "Feito para durar e pensado para ser consertado.",
            "Tranquilo quando você quer calma, ousado quando precisa.",
            "Materiais honestos, design claro, nada a mais.",
            "Quem experimenta, fica com ele.",
        ],
        "close": ["{product}. Experimente hoje.", "{product}. Feito para {audience}."],
    },
    "it": {
        "headline": ["Ecco {product}", "{product}, per {audience}", "Ciao, {product}"],
        "open": ["Questo è {product}, fatto per {audience}.", "Scopri {product}, pensato per {audience}."],
        "body": [
            "Entra nella tua giornata senza chiedere attenzione.",
            "Ogni dettaglio è pensato per essere {tone}.",
            "Si configura in pochi minuti, senza manuale.",
            "Funziona come lavori già tu.",
            "Fatto per durare e pensato per essere riparato.",
            "Tranquillo quando vuoi calma, deciso quando serve.",
            "Materiali onesti, design chiaro, niente di superfluo.",
            "Chi lo prova, lo tiene.",
        ],
        "close": ["{product}. Provalo oggi.", "{product}. Fatto per {audience}."],
    },
    "nl": {
        "headline": ["Maak kennis met {product}", "{product}, voor {audience}", "Hallo, {product}"],
        "open": ["Dit is {product}, gemaakt voor {audience}.", "Ontdek {product}, bedacht voor {audience}."],
        "body": [
            "Het past in je dag zonder om aandacht te vragen.",
            "Elk detail is gemaakt om {tone} te voelen.",
            "In een paar minuten ingesteld, zonder handleiding.",
            "Het werkt zoals jij al werkt.",
            "Gemaakt om lang mee te gaan en te repareren.",
            "Rustig als je kalmte wilt, krachtig als het moet.",
            "Eerlijke materialen, helder ontwerp, niets overbodigs.",
            "Wie het probeert, houdt het.",
        ],
        "close": ["{product}. Probeer het vandaag.", "{product}. Gemaakt voor {audience}."],
    },
    "ja": {
        "headline": ["{product}、誕生", "{product}のある毎日", "はじめよう、{product}", "毎日に、{product}"],
        "open": [
            "{product}を、ご紹介します。",
            "はじめまして、{product}です。",
            "新しい{product}が、あなたの毎日にやってきます。",
        ],
        "body": [
            "忙しい毎日にも、自然になじみます。",
            "細部まで、ていねいに作りました。",
            "数分で準備ができて、説明書はいりません。",
            "いつものやり方のまま、すぐに使えます。",
            "長く使えるように、修理しやすく作りました。",
            "静かに過ごしたい日も、元気がほしい日も。",
            "確かな素材と、すっきりしたデザイン。",
            "一度使うと、手放せなくなります。",
            "手間は少なく、大切なことに時間を。",
            "机の上でも、手の中でも美しく。",
        ],
        "close": ["{product}を、ぜひお試しください。", "{product}、今日から始めてみませんか。", "{product}。いつも、あなたのそばに。"],
    },
}

# Languages written without spaces between words: scripts are measured in characters.
UNSPACED_LANGUAGES = frozenset({"ja"})
_UNSPACED_CHARS = re.compile("[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")

# The locales this writer serves, by language (model_adapters/registry.py declares them).
PHRASE_BANK_LANGUAGES = frozenset(_PHRASES)


def language_of(locale: str) -> str:
    language = locale.split("-")[0].lower()
    if language not in _PHRASES:
        raise ValueError(f"the local concept writer has no phrases for locale {locale!r}")
    return language


def _contains_banned(text: str, banned: tuple[str, ...]) -> str | None:
    lowered = text.lower()
    for term in banned:
        if _UNSPACED_CHARS.search(term) and term.lower() in lowered:  # no word boundaries to look for
            return term
        if re.search(rf"(?<!\w){re.escape(term.lower())}(?!\w)", lowered):
            return term
    return None


def concept_word_budget(duration_s: float, words_per_second: float = WORDS_PER_SECOND) -> int:
    """Words that fill `duration_s` at a voice's speaking rate (default: espeak's)."""
    return max(6, round(duration_s * words_per_second))


def script_length(text: str, language: str = "en") -> int:
    """A script's length in the unit its voice's speaking rate is measured in: words
    (whitespace-separated), or for a language written without spaces its letters and digits
    (punctuation and spaces are not read as sounds)."""
    if language in UNSPACED_LANGUAGES:
        return sum(1 for c in text if unicodedata.category(c)[0] in "LN")
    return len(text.split())


def _unspaced_caption_lines(script: str, width: int) -> list[str]:
    """Lines of at most `width` half-width columns (a full-width character counts two), cut
    after a sentence, else after 、 (or a space), else where the line is full."""
    lines: list[str] = []
    for sentence in re.split(r"(?<=[。！？!?])", script.strip()):
        rest = sentence.strip()
        while rest:
            columns, cut, soft = 0, len(rest), None
            for i, c in enumerate(rest):
                columns += 2 if unicodedata.east_asian_width(c) in "WF" else 1
                if columns > width:
                    cut = soft if soft else max(1, i)
                    break
                if c in "、，,・ ":
                    soft = i + 1
            lines.append(rest[:cut].strip())
            rest = rest[cut:].strip()
    return [line for line in lines if line]


def caption_lines(script: str, width: int = CAPTION_LINE_CHARS) -> tuple[str, ...]:
    if _UNSPACED_CHARS.search(script) and len(_UNSPACED_CHARS.findall(script)) * 2 > len(script.split()):
        return tuple(_unspaced_caption_lines(script, width))
    lines: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", script.strip()):
        lines.extend(textwrap.wrap(sentence, width=width, break_long_words=True))
    return tuple(lines)


class LocalConceptWriter:
    """Deterministic copywriter for the embedded default (no model, no network)."""

    def __init__(self, adapter_id: str = "local-concept", max_concurrency: int = 8):
        self.info = AdapterInfo(
            adapter_id=adapter_id,
            task="concept",
            provider="local",
            model="phrase-bank",
            model_version="1",
            price=Price(),
            capabilities=frozenset(f"locale:{lang}" for lang in _PHRASES),
            max_concurrency=max_concurrency,
        )

    async def write(self, request: ConceptRequest) -> ConceptResult:
        return self.write_sync(request)

    def write_sync(self, request: ConceptRequest) -> ConceptResult:
        bank = _PHRASES[language_of(request.locale)]
        rng = random.Random(f"{request.seed}:{request.campaign_id}:{request.variant_id}")
        fields = {"product": request.product, "audience": request.audience, "tone": request.tone.lower()}
        banned = request.banned_terms

        hit = _contains_banned(" ".join(fields.values()), banned)
        if hit:
            raise ValueError(f"banned term {hit!r} appears in the brief's product, audience or tone")

        def allowed(options: list[str]) -> list[str]:
            filled = [option.format(**fields) for option in options]
            kept = [text for text in filled if not _contains_banned(text, banned)]
            if not kept:
                raise ValueError("every phrase option contains a banned term; relax banned_terms")
            return kept

        headline = rng.choice(allowed(bank["headline"]))
        opening = rng.choice(allowed(bank["open"]))
        closing = rng.choice(allowed(bank["close"]))
        body = allowed(bank["body"])
        rng.shuffle(body)

        language = language_of(request.locale)

        def length(text: str) -> int:
            return script_length(text, language)

        target_words = concept_word_budget(request.duration_s, request.words_per_second)
        if length(opening) + length(closing) > target_words:
            # A short spot: the shortest closing alone (it names the product), never over the time.
            script = min(allowed(bank["close"]), key=length)
        else:
            sentences = [opening]
            words = length(opening) + length(closing)
            for sentence in body:
                if words + length(sentence) > target_words:
                    continue
                sentences.append(sentence)
                words += length(sentence)
            sentences.append(closing)
            script = ("" if language in UNSPACED_LANGUAGES else " ").join(sentences)

        # Image prompts are English whatever the locale: the embedding model is English.
        scene = rng.choice(allowed(_SCENES))
        palette_words = ", ".join(request.palette)
        image_prompt = (
            f"{request.product} for {request.audience}, {scene}, {request.tone.lower()} mood, "
            f"brand palette {palette_words}, clean composition, no text"
        )
        return ConceptResult(
            headline=headline,
            script=script,
            image_prompt=image_prompt,
            caption_lines=caption_lines(script),
            input_tokens=0,
            output_tokens=0,
        )

    async def aclose(self) -> None:
        return None
