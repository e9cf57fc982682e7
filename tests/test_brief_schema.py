from __future__ import annotations

import pytest

from resources.brief_schema import MAX_VARIANTS_PER_BRIEF, BriefError, load_brief, parse_brief, split_partition_key
from tests.conftest import SAMPLE_BRIEFS

GOOD = """
campaign_id: spring-sale
product: Kettle One
audience: tea lovers
tone: Calm
palette: ["#112233", "#aabbcc"]
banned_terms: ["free"]
budget_usd: 10
variants:
  - {id: a, locale: en-US, aspect_ratio: "9:16", duration_s: 10}
  - {id: b, locale: de-DE, aspect_ratio: "16:9", duration_s: 12.5, tier: premium, voice: de+f2}
"""


def errors_of(text: str) -> str:
    with pytest.raises(BriefError) as caught:
        parse_brief(text, "briefs/bad.yaml")
    message = str(caught.value)
    assert message.startswith("briefs/bad.yaml: ")
    return message


def test_good_brief_parses_with_partition_keys():
    brief = parse_brief(GOOD)
    assert brief.partition_keys() == ["spring-sale.a", "spring-sale.b"]
    assert brief.variants[1].duration_s == 12.5
    assert brief.variants[0].voice == "default"
    assert split_partition_key("spring-sale.b") == ("spring-sale", "b")


def test_sample_briefs_cover_ratios_and_locales():
    briefs = [load_brief(p) for p in sorted(SAMPLE_BRIEFS.glob("*.yaml"))]
    variants = [v for b in briefs for v in b.variants]
    assert len(briefs) >= 2 and len(variants) >= 7
    assert {v.aspect_ratio for v in variants} == {"9:16", "1:1", "16:9"}
    assert len({v.locale for v in variants}) >= 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("campaign_id: spring-sale", "campaign_id: Spring_Sale"), "campaign_id"),
        (("campaign_id: spring-sale", "campaign_id: ../etc"), "campaign_id"),
        (("{id: a,", "{id: a.b,"), "variants[0].id"),
        (("{id: a,", "{id: a/b,"), "variants[0].id"),
        (('"#112233"', '"red"'), "palette[0]"),
        (("budget_usd: 10", "budget_usd: -1"), "budget_usd"),
        (("budget_usd: 10", 'budget_usd: "10"'), "budget_usd"),
        (("locale: en-US", "locale: english"), "variants[0].locale"),
        (("locale: en-US", "locale: en-US-x-private"), "variants[0].locale"),
        (('aspect_ratio: "9:16"', 'aspect_ratio: "4:3"'), "variants[0].aspect_ratio"),
        (("duration_s: 10}", "duration_s: 10, colour: red}"), "variants[0].colour"),
        (("tone: Calm", "tone: Calm\nmood: happy"), "mood"),
        (("{id: b,", "{id: a,"), "variants[1].id"),
        (("voice: de+f2", "voice: ../../x"), "variants[1].voice"),
    ],
)
def test_bad_fields_are_named(change, field):
    old, new = change
    assert old in GOOD
    message = errors_of(GOOD.replace(old, new))
    assert f"{field}:" in message


def test_missing_field_and_empty_variants():
    assert "product: Field required" in errors_of(GOOD.replace("product: Kettle One\n", ""))
    text = GOOD[: GOOD.index("variants:")] + "variants: []\n"
    assert "variants:" in errors_of(text)


def test_yaml_aliases_and_non_utf8_are_refused():
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\ncampaign_id: *b\n"
    assert "aliases are not allowed" in errors_of(bomb)
    with pytest.raises(BriefError, match="not UTF-8"):
        parse_brief(b"campaign_id: \xff\xfe", "briefs/bad.yaml")
    assert "expected a mapping" in errors_of("- just\n- a list\n")


def test_locales_are_normalized_bcp47_tags():
    brief = parse_brief(GOOD.replace("locale: en-US", "locale: fr-fr").replace("locale: de-DE", "locale: PT_br"))
    assert [v.locale for v in brief.variants] == ["fr-FR", "pt-BR"]
    # A well-formed tag no local model speaks is the routing's business (tests/test_locales.py).
    assert parse_brief(GOOD.replace("locale: en-US", "locale: sw-KE")).variants[0].locale == "sw-KE"


def test_unknown_voice_names_the_variant():
    message = errors_of(GOOD.replace("voice: de+f2", "voice: zzvoice"))
    assert "variants[1].voice: unknown espeak-ng voice 'zzvoice'" in message
    message = errors_of(GOOD.replace("voice: de+f2", "voice: de+nosuchvariant"))
    assert "variants[1].voice: unknown espeak-ng voice variant 'nosuchvariant'" in message


def test_a_brief_holds_up_to_ten_thousand_variants():
    header = GOOD[: GOOD.index("variants:")] + "variants:\n"
    row = "  - {{id: v{:05d}, locale: en-US, aspect_ratio: '1:1', duration_s: 6}}\n"
    big = parse_brief(header + "".join(row.format(i) for i in range(1024)))
    assert len(big.partition_keys()) == 1024 and big.partition_keys()[-1] == "spring-sale.v01023"
    message = errors_of(header + "".join(row.format(i) for i in range(MAX_VARIANTS_PER_BRIEF + 1)))
    assert "variants:" in message and str(MAX_VARIANTS_PER_BRIEF) in message
