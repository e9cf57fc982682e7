"""Locales: BCP 47 tags in their canonical case, and which declared locales serve a variant.

A brief's locale is a BCP 47 language tag (`language[-Script][-REGION]`, e.g. `en-US`,
`pt-BR`, `zh-Hans-CN`, `es-419`), case-insensitive as the standard says: `fr-fr`,
`FR_fr` and `fr-FR` are one locale, stored as `fr-FR` (RFC 5646 section 2.1.1:
language lower case, script title case, region upper case).

A provider declares the locales it serves (its adapter kind in model_adapters/registry.py,
or `locales:` on the provider in a routing config). A declaration is a full tag (`en-US`:
that locale only) or a bare language (`pt`: every `pt-*`). No declaration means the
provider does not depend on language (images, video) or did not say: it serves any locale.

Plain Python: the brief schema, the routing config and the router import this.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# language (2-3 letters; 4-8 are reserved or registered rarely), optional script (4 letters),
# optional region (2 letters or 3 digits), optional variants (5-8 alphanumerics, or a digit + 3).
_TAG = re.compile(
    r"^(?P<language>[A-Za-z]{2,3})"
    r"(?:[-_](?P<script>[A-Za-z]{4}))?"
    r"(?:[-_](?P<region>[A-Za-z]{2}|[0-9]{3}))?"
    r"(?P<variants>(?:[-_](?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*)$"
)


def normalize_locale(tag: str) -> str:
    """`fr-fr` -> `fr-FR`, `zh_hans_cn` -> `zh-Hans-CN`, `es-419` stays; ValueError for what is
    not a language tag (a locale with extensions or private use is not accepted here)."""
    if not isinstance(tag, str):
        raise ValueError(f"locale must be a string, got {type(tag).__name__}")
    match = _TAG.match(tag.strip())
    if match is None:
        raise ValueError(f"{tag!r} is not a BCP 47 language tag (language[-Script][-REGION], e.g. 'en-US', 'pt-BR', 'es-419')")
    parts = [match["language"].lower()]
    if match["script"]:
        parts.append(match["script"].title())
    if match["region"]:
        parts.append(match["region"].upper())
    parts += [v.lower() for v in re.split(r"[-_]", match["variants"]) if v]
    return "-".join(parts)


def language_of(locale: str) -> str:
    return normalize_locale(locale).split("-")[0]


def serves_locale(declared: Iterable[str] | None, locale: str) -> bool:
    """Whether a provider that declared `declared` serves `locale`: None or empty declares
    no limit; a bare language serves each of its regions; a full tag only itself."""
    if declared is None:
        return True
    declared = {normalize_locale(d) for d in declared}
    if not declared:
        return True
    locale = normalize_locale(locale)
    return locale in declared or locale.split("-")[0] in declared


def capability_locales(capabilities: Iterable[str]) -> frozenset[str] | None:
    """The locales an adapter's `locale:*` capabilities declare (None: none declared, or `locale:any`)."""
    locales = {c.removeprefix("locale:") for c in capabilities if c.startswith("locale:")}
    if not locales or "any" in locales:
        return None
    return frozenset(locales)


# espeak-ng's voices per locale (canonical case). The values are identifier basenames from
# espeak-ng-data/lang, which espeak_SetVoiceByName matches exactly (a bare language code
# would go through espeak's fuzzier language-scoring selection instead).
ESPEAK_LOCALE_VOICES: dict[str, str] = {
    "en-US": "en-us",
    "en-GB": "en",  # gmw/en is "English (Great Britain)"
    "de-DE": "de",
    "fr-FR": "fr",
    "fr-BE": "fr-be",
    "fr-CH": "fr-ch",
    "es-ES": "es",
    "es-MX": "es-419",
    "es-419": "es-419",
    "it-IT": "it",
    "pt-BR": "pt-br",
    "pt-PT": "pt",
    "nl-NL": "nl",
    "ja-JP": "ja",  # espeak reads kana only; kanji is spelled out or skipped
    "sv-SE": "sv",
    "da-DK": "da",
    "nb-NO": "nb",
    "fi-FI": "fi",
    "pl-PL": "pl",
    "cs-CZ": "cs",
    "ru-RU": "ru",
    "uk-UA": "uk",
    "tr-TR": "tr",
    "el-GR": "el",
    "hu-HU": "hu",
    "ro-RO": "ro",
    "id-ID": "id",
    "vi-VN": "vi",
    "hi-IN": "hi",
    "zh-CN": "cmn",
}
