"""Hostile briefs: each is refused naming the file and the field; valid briefs beside them still
produce; the brief sensor keeps evaluating."""

import copy

import dagster as dg
import pytest
import yaml

from resources.brief_schema import MAX_VARIANTS_PER_BRIEF, BriefError, load_brief
from resources.brief_source import BriefSource
from resources.io_manager import JsonManifestIOManager
from tests.helpers import brief_sensor, request_keys, run_campaign
from tests.reliability.simcloud import SMALL_RUN, decode_mp4, local_bytes

VALID = {
    "campaign_id": "valid-one",
    "product": "Harbor Kettle",
    "audience": "tea drinkers who start early",
    "tone": "Calm",
    "palette": ["#12355b", "#f2c14e"],
    "banned_terms": ["cheap"],
    "budget_usd": 10,
    "variants": [{"id": "solo", "locale": "en-US", "aspect_ratio": "1:1", "duration_s": 3, "tier": "standard"}],
}


def brief_with(campaign_id: str, change) -> str:
    data = copy.deepcopy(VALID)
    data["campaign_id"] = campaign_id
    change(data)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def variant(**fields):
    return lambda d: d["variants"][0].update(fields)


def top(**fields):
    return lambda d: d.update(fields)


def drop(name):
    return lambda d: d.pop(name)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)

# file name -> (content, what the error must name besides the file)
CORPUS: dict[str, tuple[str | bytes, str]] = {
    "wrong-type-id.yaml": (brief_with("x", top(campaign_id=42)), "campaign_id"),
    "wrong-type-budget.yaml": (brief_with("wt-budget", top(budget_usd="ten")), "budget_usd"),
    "bool-budget.yaml": (brief_with("bool-budget", top(budget_usd=True)), "budget_usd"),
    "wrong-type-palette.yaml": (brief_with("wt-palette", top(palette="#ffffff")), "palette"),
    "wrong-type-banned.yaml": (brief_with("wt-banned", top(banned_terms={"a": 1})), "banned_terms"),
    "missing-product.yaml": (brief_with("no-product", drop("product")), "product"),
    "missing-variants.yaml": (brief_with("no-variants", drop("variants")), "variants"),
    "missing-locale.yaml": (brief_with("no-locale", lambda d: d["variants"][0].pop("locale")), "variants[0].locale"),
    "unknown-field.yaml": (brief_with("unknown-field", top(owner="mallory")), "owner"),
    "unknown-variant-field.yaml": (brief_with("unknown-vfield", variant(colour="red")), "variants[0].colour"),
    "dotdot-campaign.yaml": (brief_with("../../etc", lambda d: None), "campaign_id"),
    "dotdot-variant.yaml": (brief_with("dotdot-variant", variant(id="../../../tmp/owned")), "variants[0].id"),
    "slash-variant.yaml": (brief_with("slash-variant", variant(id="a/b")), "variants[0].id"),
    "absolute-variant.yaml": (brief_with("abs-variant", variant(id="/etc/passwd")), "variants[0].id"),
    "backslash-variant.yaml": (brief_with("bs-variant", variant(id="a\\..\\b")), "variants[0].id"),
    "dot-campaign.yaml": (brief_with("a.b", lambda d: None), "campaign_id"),
    "dot-variant.yaml": (brief_with("dot-variant", variant(id=".")), "variants[0].id"),
    "dotdot-only-variant.yaml": (brief_with("dd-variant", variant(id="..")), "variants[0].id"),
    "hidden-variant.yaml": (brief_with("hidden-variant", variant(id=".hidden")), "variants[0].id"),
    "cyrillic-campaign.yaml": (brief_with("\u0430urora-lamp", lambda d: None), "campaign_id"),
    "fullwidth-variant.yaml": (brief_with("fullwidth", variant(id="\uff53tory")), "variants[0].id"),
    "newline-variant.yaml": (brief_with("newline-variant", variant(id="story\n")), "variants[0].id"),
    "nul-variant.yaml": (brief_with("nul-variant", variant(id="a\x00b")), "variants[0].id"),
    "uppercase-campaign.yaml": (brief_with("Aurora", lambda d: None), "campaign_id"),
    "too-long-id.yaml": (brief_with("x" * 64, lambda d: None), "campaign_id"),
    "ten-megabytes.yaml": (brief_with("huge", top(product="x" * 10_000_000)), "limit is"),
    "long-product.yaml": (brief_with("long-product", top(product="x" * 900_000)), "product"),
    "anchor-bomb.yaml": (BOMB, "aliases are not allowed"),
    "alias.yaml": ("base: &v {id: a}\n" + brief_with("alias", lambda d: None) + "extra: *v\n", "aliases are not allowed"),
    "latin1.yaml": (brief_with("latin1", top(product="Caf\u00e9")).encode("latin-1"), "not UTF-8"),
    "utf16.yaml": (brief_with("utf16", lambda d: None).encode("utf-16"), "not UTF-8"),
    "duplicate-variants.yaml": (brief_with("dup-variants", lambda d: d["variants"].append(dict(d["variants"][0]))), "variants[1].id"),
    "duplicate-key.yaml": (brief_with("dup-key", lambda d: None) + "campaign_id: other\n", "duplicated key 'campaign_id'"),
    "negative-budget.yaml": (brief_with("neg-budget", top(budget_usd=-5)), "budget_usd"),
    "nan-budget.yaml": (brief_with("nan-budget", top(budget_usd=float("nan"))), "budget_usd"),
    "infinite-budget.yaml": (brief_with("inf-budget", top(budget_usd=float("inf"))), "budget_usd"),
    "malformed-locale.yaml": (brief_with("bad-locale", variant(locale="english please")), "variants[0].locale"),
    "unknown-voice.yaml": (brief_with("bad-voice", variant(voice="nosuchvoice")), "variants[0].voice"),
    "empty-variants.yaml": (brief_with("empty-variants", top(variants=[])), "variants"),
    "variants-mapping.yaml": (brief_with("variants-map", top(variants={"a": 1})), "variants"),
    "too-many-variants.yaml": (
        brief_with("many", lambda d: d.update(variants=[{**d["variants"][0], "id": f"v{i}"} for i in range(MAX_VARIANTS_PER_BRIEF + 1)])),
        "variants",
    ),
    "bad-ratio.yaml": (brief_with("bad-ratio", variant(aspect_ratio="3:2")), "variants[0].aspect_ratio"),
    "negative-duration.yaml": (brief_with("neg-duration", variant(duration_s=-3)), "variants[0].duration_s"),
    "huge-int-duration.yaml": (
        brief_with("big-duration", lambda d: None).replace("duration_s: 3", "duration_s: 1" + "0" * 400),
        "variants[0].duration_s",
    ),
    "five-thousand-digits.yaml": (
        brief_with("digits", lambda d: None).replace("budget_usd: 10", "budget_usd: 1" + "0" * 5000),
        "invalid YAML",
    ),
    "deep-nesting.yaml": ("campaign_id: " + "[" * 200_000 + "]" * 200_000 + "\n", "nested too deeply"),
    "bad-tier.yaml": (brief_with("bad-tier", variant(tier="gold")), "variants[0].tier"),
    "bad-colour.yaml": (brief_with("bad-colour", top(palette=["red"])), "palette[0]"),
    "python-tag.yaml": ("campaign_id: !!python/object/apply:os.system ['touch /tmp/owned']\n", "invalid YAML"),
    "top-level-list.yaml": ("- campaign_id: a\n", "(brief)"),
    "empty.yaml": ("", "(brief)"),
    "timestamp-duration.yaml": (
        brief_with("ts", variant(duration_s="2024-01-01")).replace("'2024-01-01'", "2024-01-01"),
        "variants[0].duration_s",
    ),
}


@pytest.fixture
def hostile_folder(briefs_folder):
    for name, (content, _) in CORPUS.items():
        path = briefs_folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return briefs_folder


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_hostile_brief_is_refused_naming_the_file_and_the_field(hostile_folder, name):
    with pytest.raises(BriefError) as refused:
        load_brief(hostile_folder / name)
    message = str(refused.value)
    assert message.startswith(str(hostile_folder / name) + ": "), message[:300]
    assert CORPUS[name][1] in message, message[:500]
    assert len(message) < 5000  # the 10 MB string is not echoed back


def test_sensor_stays_up_and_valid_briefs_still_produce(studio_home, hostile_folder, monkeypatch):
    monkeypatch.setenv("STUDIO_ROUTING", "")  # the embedded local default
    (hostile_folder / "valid-one.yaml").write_text(yaml.safe_dump(VALID))
    second = copy.deepcopy(VALID)
    second["campaign_id"] = "valid-two"
    second["variants"] = [{**VALID["variants"][0], "id": "wide", "aspect_ratio": "16:9"}]
    (hostile_folder / "valid-two.yaml").write_text(yaml.safe_dump(second))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"briefs": BriefSource()})
        result = brief_sensor()(context)  # must not raise
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        assert sorted(instance.get_dynamic_partitions("variants")) == ["valid-one.solo", "valid-two.wide"]
        # The two valid briefs' variants, requested together (one run over both).
        assert sorted(k for r in result.run_requests for k in request_keys(instance, r)) == ["valid-one.solo", "valid-two.wide"]

        # Evaluated again with nothing new: the skip reason lists every bad file and its field.
        again = brief_sensor()(dg.build_sensor_context(instance=instance, cursor=result.cursor, resources={"briefs": BriefSource()}))
        assert again.run_requests == []
        reason = again.skip_reason.skip_message
        for name in CORPUS:
            assert str(hostile_folder / name) in reason, name
        assert "variants[0].id" in reason and "budget_usd" in reason

        # A valid variant is produced end to end, with the hostile files still in the folder.
        run = run_campaign(instance, ["valid-one.solo"], run_config=SMALL_RUN)
        assert run.success
    video = JsonManifestIOManager().load_manifest(dg.AssetKey("synced_video"), "valid-one.solo")
    frames, _ = decode_mp4(local_bytes(video.artifact))
    assert frames > 0
    # Nothing was written for any hostile brief.
    assert {p.name for p in (studio_home / "manifests" / "brief").iterdir()} == {"valid-one.solo.json"}
