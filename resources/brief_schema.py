"""The campaign brief: what a creative-ops engineer writes, validated strictly.

A brief is YAML, read with a safe loader, validated by pydantic v2 in strict
mode with unknown fields rejected. Errors name the file and the field path
(`variants[2].locale`), so a bad brief is fixed in one look.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from model_adapters.locales import normalize_locale
from model_adapters.types import AspectRatio

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
HexColour = Annotated[str, StringConstraints(pattern=r"^#[0-9a-fA-F]{6}$")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True)]

PARTITION_SEPARATOR = "."
# Room for a brief of MAX_VARIANTS_PER_BRIEF variants written out in block style (~100 bytes each).
MAX_BRIEF_BYTES = 4_000_000


class _Strict(BaseModel):
    # allow_inf_nan=False: an infinite budget would pass `ge=0` and then not
    # survive the JSON manifests (JSON has no infinity).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


def _int_to_float(value: object) -> object:
    """YAML writes `15` as an int; strict mode would refuse it for a float. An int
    too large for a float is an error of the field, never an OverflowError."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"number with {len(str(abs(value)))} digits is out of range") from None
    return value


class Variant(_Strict):
    id: Slug
    locale: str
    voice: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_+-]{0,40}$")] = "default"
    aspect_ratio: AspectRatio
    duration_s: float = Field(ge=3, le=120)
    tier: Literal["draft", "standard", "premium"] = "standard"

    @field_validator("duration_s", mode="before")
    @classmethod
    def _int_is_fine(cls, value: object) -> object:
        return _int_to_float(value)

    @field_validator("locale")
    @classmethod
    def _bcp47_locale(cls, value: str) -> str:
        # Any well-formed tag, in canonical case (`fr-fr` is `fr-FR`). Whether the pipeline's
        # routes serve it is checked with the routing config (orchestration/pipelines.py).
        return normalize_locale(value)

    @field_validator("voice")
    @classmethod
    def _known_voice(cls, value: str) -> str:
        # A named voice is an espeak-ng voice (with an optional +variant), checked against the
        # voices espeak ships so a typo fails the brief (naming `variants[i].voice`), not the
        # voiceover step; voices that cannot speak it fall back to espeak. Imported here:
        # parsing a brief stays light.
        if value != "default":
            from model_adapters.local_voice import check_voice_name

            check_voice_name(value)
        return value


# A campaign is one brief, and campaigns of thousands of variants are run in chunks over run
# workers (docs/deploy.md, Sizing); the limit only keeps a runaway generated file out.
MAX_VARIANTS_PER_BRIEF = 10_000


class Brief(_Strict):
    campaign_id: Slug
    product: ShortText
    audience: ShortText
    tone: ShortText
    palette: tuple[HexColour, ...] = Field(min_length=1, max_length=8)
    banned_terms: tuple[Annotated[str, StringConstraints(min_length=1, max_length=80)], ...] = ()
    budget_usd: float = Field(ge=0)
    # The pipeline (config/pipelines/<name>.yaml) that makes this campaign's variants.
    pipeline: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,40}$")] = "campaign"
    # `required`: the pipeline's approval stages wait for a reviewer's verdict (docs/review.md);
    # `auto`: they pass at once (the demo runs unattended).
    approval: Literal["auto", "required"] = "auto"
    variants: tuple[Variant, ...] = Field(min_length=1, max_length=MAX_VARIANTS_PER_BRIEF)

    @field_validator("budget_usd", mode="before")
    @classmethod
    def _int_budget(cls, value: object) -> object:
        return _int_to_float(value)

    @field_validator("palette", "banned_terms", "variants", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: object) -> object:
        # YAML gives lists; strict mode only accepts tuples for tuple fields.
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _unique_variant_ids(self) -> Brief:
        seen: set[str] = set()
        for index, variant in enumerate(self.variants):
            if variant.id in seen:
                raise ValueError(f"variants[{index}].id: duplicated variant id {variant.id!r}")
            seen.add(variant.id)
        return self

    def partition_key(self, variant_id: str) -> str:
        return partition_key(self.campaign_id, variant_id)

    def partition_keys(self) -> list[str]:
        return [self.partition_key(v.id) for v in self.variants]

    def variant(self, variant_id: str) -> Variant:
        for v in self.variants:
            if v.id == variant_id:
                return v
        raise KeyError(f"campaign {self.campaign_id!r} has no variant {variant_id!r}")

    def variant_fingerprint(self, variant_id: str) -> str:
        """Hash of everything that shapes one variant's outputs (campaign fields + that variant)."""
        # Not `approval`: it decides when the work may go on, not what it makes.
        shared = self.model_dump(mode="json", exclude={"variants", "approval"})
        payload = {"campaign": shared, "variant": self.variant(variant_id).model_dump(mode="json")}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def partition_key(campaign_id: str, variant_id: str) -> str:
    return f"{campaign_id}{PARTITION_SEPARATOR}{variant_id}"


def split_partition_key(key: str) -> tuple[str, str]:
    campaign_id, sep, variant_id = key.partition(PARTITION_SEPARATOR)
    # fullmatch: `$` would let a trailing newline through.
    if not sep or not re.fullmatch(SLUG_PATTERN, campaign_id) or not re.fullmatch(SLUG_PATTERN, variant_id):
        raise ValueError(f"partition key {key!r} is not '<campaign>.<variant>' with slug ids")
    return campaign_id, variant_id


class BriefError(ValueError):
    """A brief that cannot be used; the message names the file and the field."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(brief)"


def _describe(error: ValidationError) -> list[str]:
    items = error.errors()
    # A list whose items failed also reports itself "too short" (the failed
    # items are not counted); the item errors already say what is wrong.
    failed_item_parents = {item["loc"][:-2] for item in items if len(item["loc"]) >= 2 and isinstance(item["loc"][-2], int)}
    failed_item_parents |= {item["loc"][:-1] for item in items if item["loc"] and isinstance(item["loc"][-1], int)}
    problems = []
    for item in items:
        if item["type"] == "too_short" and item["loc"] in failed_item_parents:
            continue
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{_field_path(item['loc'])}: {message}")
    return problems


class _NoAliasSafeLoader(yaml.SafeLoader):
    """A safe loader that refuses anchors/aliases (briefs never need them and
    they are the vehicle of 'billion laughs' expansion) and duplicated keys
    (PyYAML would silently keep the last one)."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML's stubs leave peek_event unannotated
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not allowed in briefs", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicated = key in seen
                seen.add(key)
            except TypeError:
                continue  # an unhashable key: SafeLoader reports it below
            if duplicated:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"duplicated key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def parse_brief(text: str | bytes, source: str = "<brief>") -> Brief:
    if isinstance(text, bytes):
        if len(text) > MAX_BRIEF_BYTES:
            raise BriefError(source, [f"file is {len(text)} bytes; the limit is {MAX_BRIEF_BYTES}"])
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BriefError(source, [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    try:
        data = yaml.load(text, Loader=_NoAliasSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise BriefError(source, [f"invalid YAML: {exc}"]) from None
    except RecursionError:
        raise BriefError(source, ["invalid YAML: nested too deeply"]) from None
    except (ValueError, OverflowError) as exc:
        # e.g. an integer of more than 4300 digits (Python's int conversion limit)
        raise BriefError(source, [f"invalid YAML value: {exc}"]) from None
    if not isinstance(data, dict):
        raise BriefError(source, ["(brief): expected a mapping of fields at the top level"])
    try:
        return Brief.model_validate(data)
    except ValidationError as exc:
        raise BriefError(source, _describe(exc)) from None
    except RecursionError:
        raise BriefError(source, ["(brief): nested too deeply"]) from None


def read_brief_bytes(path: str | Path) -> bytes:
    """A brief file's bytes, refusing oversized or unreadable files with the file named."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BRIEF_BYTES:
            raise BriefError(str(path), [f"file is {size} bytes; the limit is {MAX_BRIEF_BYTES}"])
        return path.read_bytes()
    except OSError as exc:
        raise BriefError(str(path), [f"cannot read file: {exc.strerror}"]) from None


def load_brief(path: str | Path) -> Brief:
    return parse_brief(read_brief_bytes(path), str(path))


BRIEF_SUFFIXES = (".yaml", ".yml")


def brief_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in BRIEF_SUFFIXES and p.is_file())
