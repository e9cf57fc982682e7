"""Caption cues from word timings, WebVTT and SRT."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest

from model_adapters.captions import (
    build_cues,
    caption_excerpt,
    parse_srt,
    parse_webvtt,
    to_srt,
    to_webvtt,
)
from model_adapters.types import CaptionCue, WordTiming

SCRIPT = (
    "Fresh roasted coffee, delivered to your door every morning. Try it free for thirty days! "
    "Cancel anytime, no questions asked. Our beans come from small farms in Colombia, Ethiopia "
    "and Guatemala, roasted in small batches and shipped within a day of roasting. Wake up to "
    "something better."
)


def timed(text: str, seconds_per_char: float = 0.06, word_gap: float = 0.04, sentence_pause: float = 0.35):
    """Word timings like a speech engine's: duration by length, pauses after sentences."""
    words, t = [], 0.05
    for word in text.split():
        duration = max(0.12, len(word) * seconds_per_char)
        words.append(WordTiming(word=word, start_s=round(t, 4), end_s=round(t + duration, 4)))
        t += duration + (sentence_pause if word[-1] in ".!?" else word_gap)
    return words


def cue_words(cues: list[CaptionCue]) -> list[str]:
    return [w for cue in cues for line in cue.lines for w in line.split()]


def first_words(words: list[WordTiming], cues: list[CaptionCue]) -> list[WordTiming]:
    """The word each cue starts with, found by walking the words in order."""
    firsts, index = [], 0
    for cue in cues:
        firsts.append(words[index])
        index += sum(len(line.split()) for line in cue.lines)
    assert index == len(words)
    return firsts


@pytest.fixture
def words() -> list[WordTiming]:
    return timed(SCRIPT)


@pytest.fixture
def cues(words) -> list[CaptionCue]:
    return build_cues(words)


def test_lines_and_cues_respect_the_limits(cues):
    assert len(cues) > 3
    for cue in cues:
        assert 1 <= len(cue.lines) <= 2
        assert all(0 < len(line) <= 42 for line in cue.lines)


def test_every_word_appears_once_in_order(words, cues):
    assert cue_words(cues) == [w.word for w in words]


def test_cues_start_with_their_first_word_and_do_not_overlap(words, cues):
    for cue, first in zip(cues, first_words(words, cues), strict=True):
        assert cue.start_s == pytest.approx(first.start_s, abs=0.08)
    for cue, following in pairwise(cues):
        assert cue.start_s < cue.end_s <= following.start_s


def test_cues_last_at_least_the_minimum_except_the_last(cues):
    for cue in cues[:-1]:
        assert cue.end_s - cue.start_s >= 0.8 - 1e-9


def test_cues_end_at_their_last_word_unless_extended(words, cues):
    last_words, index = [], 0
    for cue in cues:
        index += sum(len(line.split()) for line in cue.lines)
        last_words.append(words[index - 1])
    for cue, last in zip(cues, last_words, strict=True):
        assert cue.end_s >= last.end_s - 1e-3
        if cue.end_s > last.end_s + 1e-3:  # extended: only as far as the minimum needs
            assert cue.end_s - cue.start_s <= 0.8 + 1e-3


def test_cues_prefer_to_break_at_sentence_ends(cues):
    # Each of these sentences fits a cue: none should be split or share a cue.
    texts = [" ".join(cue.lines) for cue in cues]
    assert "Try it free for thirty days!" in texts
    assert "Cancel anytime, no questions asked." in texts
    # The long sentence is split, at a comma rather than mid-phrase.
    assert any(text.endswith(",") for text in texts)


def test_short_cue_is_extended_towards_the_next():
    words = [
        WordTiming(word="Hello.", start_s=0.0, end_s=0.3),
        WordTiming(word="This", start_s=2.0, end_s=2.2),
        WordTiming(word="is", start_s=2.2, end_s=2.3),
        WordTiming(word="fine.", start_s=2.3, end_s=2.8),
    ]
    cues = build_cues(words)
    assert [c.lines for c in cues] == [("Hello.",), ("This is fine.",)]
    assert cues[0].end_s == pytest.approx(0.8)


def test_short_cue_merges_forward_when_it_cannot_be_extended():
    # "Hi." is followed 0.4 s later by the next sentence: too short to stand alone.
    words = [WordTiming(word="Hi.", start_s=0.0, end_s=0.25)] + timed("Welcome to the morning roast.")
    words[1:] = [WordTiming(word=w.word, start_s=w.start_s + 0.35, end_s=w.end_s + 0.35) for w in words[1:]]
    cues = build_cues(words)
    assert cues[0].lines[0].startswith("Hi.")
    assert "Welcome" in " ".join(cues[0].lines)
    for cue in cues[:-1]:
        assert cue.end_s - cue.start_s >= 0.8


def test_long_single_word_is_hard_split_into_line_sized_pieces():
    url = "https://example.com/" + "a-very-long-campaign-landing-page-" * 2 + "path"
    words = timed(f"Visit {url} today.")
    cues = build_cues(words)
    lines = [line for cue in cues for line in cue.lines]
    assert all(len(line) <= 42 for line in lines)
    # Pieces follow each other on consecutive lines, nothing added or lost.
    assert "".join(lines).replace(" ", "") == f"Visit{url}today."
    assert any(len(line) == 42 and line.startswith("https://") for line in lines)


def test_custom_limits():
    words = timed(SCRIPT)
    cues = build_cues(words, max_chars_per_line=20, max_lines=1, min_cue_s=0.5)
    assert all(len(c.lines) == 1 and len(c.lines[0]) <= 20 for c in cues)
    assert cue_words(cues) == [w.word for w in words]


def test_no_words_no_cues():
    assert build_cues([]) == []
    assert to_webvtt([]) == "WEBVTT\n"


def test_invalid_limits_are_rejected():
    with pytest.raises(ValueError):
        build_cues(timed("a b"), max_chars_per_line=0)


# --- formats ---------------------------------------------------------------------


def test_webvtt_format(cues):
    text = to_webvtt(cues)
    assert text.startswith("WEBVTT\n\n")
    timings = re.findall(r"^(\S+) --> (\S+)$", text, flags=re.MULTILINE)
    assert len(timings) == len(cues)
    for start, end in timings:
        assert re.fullmatch(r"\d{2}:\d{2}:\d{2}\.\d{3}", start)
        assert re.fullmatch(r"\d{2}:\d{2}:\d{2}\.\d{3}", end)


def test_srt_format(cues):
    text = to_srt(cues)
    blocks = text.strip().split("\n\n")
    assert len(blocks) == len(cues)
    for number, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        assert lines[0] == str(number)
        assert re.fullmatch(r"\d{2}:\d{2}:\d{2},\d{3} --> \d{2}:\d{2}:\d{2},\d{3}", lines[1])


def test_webvtt_and_srt_round_trip(cues):
    assert parse_webvtt(to_webvtt(cues)) == cues
    assert parse_webvtt(to_srt(cues)) == cues
    assert parse_srt(to_srt(cues)) == cues


def test_round_trip_of_markup_characters_and_long_times():
    cues = [CaptionCue(start_s=3725.5, end_s=3727.25, lines=("Fish & chips <today>", "a --> b"))]
    text = to_webvtt(cues)
    assert "01:02:05.500 --> 01:02:07.250" in text
    assert "&amp;" in text and "&lt;today&gt;" in text and "-->" not in text.split("\n", 3)[3]
    assert parse_webvtt(text) == cues


def test_parse_webvtt_skips_identifiers_settings_and_notes():
    text = (
        "WEBVTT - campaign\n\nNOTE made by hand\n\nintro\n00:01.000 --> 00:02.500 align:start\n"
        "Hello there\nsecond line\n\n00:00:03.000 --> 00:00:04.000\nBye\n"
    )
    assert parse_webvtt(text) == [
        CaptionCue(start_s=1.0, end_s=2.5, lines=("Hello there", "second line")),
        CaptionCue(start_s=3.0, end_s=4.0, lines=("Bye",)),
    ]


def test_parse_rejects_a_block_without_timing():
    with pytest.raises(ValueError, match="timing"):
        parse_webvtt("WEBVTT\n\njust text\n")


def test_caption_excerpt(cues):
    excerpt = caption_excerpt(cues, n=2)
    assert excerpt.startswith(" ".join(cues[0].lines) + " / " + " ".join(cues[1].lines))
    assert excerpt.endswith("…")
    assert caption_excerpt(cues[:1]) == " ".join(cues[0].lines)
