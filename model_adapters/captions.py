"""Caption cues from word timings, and WebVTT / SRT text.

Rules `build_cues` keeps:

- at most `max_chars_per_line` characters a line and `max_lines` lines a cue;
- cues break on word boundaries, preferably after sentence punctuation, then
  after clause punctuation (, ; : dashes);
- a cue starts at its first word's start and ends at its last word's end,
  extended towards the next cue's start to last `min_cue_s`; a cue that would
  still be shorter than that (other than the last one) is avoided by grouping
  its words with their neighbours instead (within the line limits);
- every word appears exactly once, in order.

The grouping is chosen by dynamic programming over word boundaries: each
candidate cue has a cost (one unit per cue, plus penalties for a break that is
not at punctuation, a sentence end or a long pause inside a cue, a too-short
cue, an overlong one), and the cheapest segmentation wins. Greedy filling
cannot look ahead to avoid leaving a short fragment behind; this can, and it
is cheap (a cue holds at most a few dozen words).

A word longer than a line (a URL, a long compound) is hard-split into pieces
of `max_chars_per_line` characters, each timed in proportion to its length;
the pieces are kept in one cue where they fit, so the word reads as
consecutive lines. Nothing is dropped or hyphenated.

Words of scripts written without spaces (Chinese, Japanese, Thai...) are
joined without a space. Line lengths are counted in columns: a full-width
character (kanji, kana, full-width forms; East Asian Width W or F) takes two,
as it is about twice as wide on screen, so a 42-column line holds 21 kanji.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from model_adapters.types import CaptionCue, WordTiming

MAX_CHARS_PER_LINE = 42
MAX_LINES = 2
MIN_CUE_S = 0.8
# Longer cues are allowed but discouraged: past this, viewers lose the audio sync.
COMFORTABLE_CUE_S = 7.0

_SENTENCE_END = re.compile(r"[.!?…。！？]['\"’”»)\]]*$")
_CLAUSE_END = re.compile(r"([,;:、，；：]['\"’”»)\]]*|[—–-])$")
_UNSPACED = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")

# Segmentation costs (units: "one extra cue").
_CUE_COST = 1.0
_BREAK_COST = {"sentence": 0.0, "clause": 0.4, "word": 1.0, "inside_word": 3.0}
_SENTENCE_INSIDE_COST = 1.2  # > _CUE_COST: a sentence end inside a cue prefers to be a cue end
_FILL_COST = 0.1  # * (fill ratio)^2: evens out cue lengths among equal choices
_SHORT_CUE_COST = 100.0  # a soft wall, so degenerate input still gets cues
_SHORT_LAST_CUE_COST = 1.0
_PAUSE_INSIDE_COST = 1.0  # per pause >= _LONG_PAUSE_S inside a cue: text shown long before it is said
_LONG_PAUSE_S = 1.0
# Durations are compared with this slack, so 2.8 - 2.0 counts as 0.8.
_EPSILON_S = 1e-6
_OVERLONG_COST_PER_S = 0.5
# Line layout costs (units: squared line fill).
_LINE_BREAK_COST = {"sentence": 0.0, "clause": 0.15, "word": 0.3, "inside_word": 1.0}


@dataclass(frozen=True)
class _Piece:
    """A word, or a piece of a hard-split word (`continues` = more of it follows)."""

    text: str
    start_s: float
    end_s: float
    continues: bool = False


# --- joining and breaking ----------------------------------------------------------


def text_columns(text: str) -> int:
    """Display width in columns: two for a full-width character, one for any other."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _joiner(left: str, right: str) -> str:
    """Space between two words, none between two words of an unspaced script."""
    if _UNSPACED.match(left[-1]) and _UNSPACED.match(right[0]):
        return ""
    return " "


def _join(pieces: Sequence[_Piece]) -> str:
    text = ""
    for i, piece in enumerate(pieces):
        if i and not pieces[i - 1].continues:
            text += _joiner(text, piece.text)
        text += piece.text
    return text


def _break_kind(piece: _Piece) -> str:
    """How good a break after `piece` is."""
    if piece.continues:
        return "inside_word"
    if _SENTENCE_END.search(piece.text):
        return "sentence"
    if _CLAUSE_END.search(piece.text):
        return "clause"
    return "word"


# --- input preparation -------------------------------------------------------------


def _pieces(words: Sequence[WordTiming], max_chars: int) -> list[_Piece]:
    """Words as pieces no longer than a line, with sane times.

    Times are made monotonic (a start never before the previous start, an end
    never before its start) so odd input cannot produce overlapping cues.
    """
    pieces: list[_Piece] = []
    previous_start = 0.0
    for word in words:
        text = word.word.strip()
        if not text:
            continue
        start = max(word.start_s, previous_start)
        end = max(word.end_s, start)
        previous_start = start
        pieces.extend(_hard_split(text, start, end, max_chars))
    return pieces


def _hard_split(text: str, start: float, end: float, max_chars: int) -> list[_Piece]:
    if text_columns(text) <= max_chars:
        return [_Piece(text, start, end)]
    chunks, chunk = [], ""
    for c in text:  # pieces of at most max_chars columns (at least one character)
        if chunk and text_columns(chunk + c) > max_chars:
            chunks.append(chunk)
            chunk = ""
        chunk += c
    chunks.append(chunk)
    pieces = []
    offset = 0
    for i, chunk in enumerate(chunks):
        piece_start = start + (end - start) * offset / len(text)
        offset += len(chunk)
        piece_end = start + (end - start) * offset / len(text)
        pieces.append(_Piece(chunk, piece_start, piece_end, continues=i < len(chunks) - 1))
    return pieces


# --- line layout --------------------------------------------------------------------


def _greedy_line_count(pieces: Sequence[_Piece], max_chars: int) -> int:
    """Fewest lines the pieces fit in (first-fit is optimal for that)."""
    lines, width = 1, 0
    for i, piece in enumerate(pieces):
        gap = 0 if i == 0 or pieces[i - 1].continues else len(_joiner(pieces[i - 1].text, piece.text))
        if width and width + gap + text_columns(piece.text) > max_chars:
            lines, width = lines + 1, text_columns(piece.text)
        else:
            width += (gap if width else 0) + text_columns(piece.text)
    return lines


def _layout(pieces: Sequence[_Piece], max_chars: int, max_lines: int) -> tuple[str, ...]:
    """Lines for one cue: one line if it fits, else the fewest lines possible,
    balanced in length and broken after punctuation where that reads better."""
    whole = _join(pieces)
    if text_columns(whole) <= max_chars:
        return (whole,)
    n = len(pieces)
    line_count = min(max_lines, _greedy_line_count(pieces, max_chars))
    # best[k][j]: (cost, break positions) of laying pieces[:j] out in k lines.
    inf: tuple[float, tuple[int, ...]] = (float("inf"), ())
    best = [[inf] * (n + 1) for _ in range(line_count + 1)]
    best[0][0] = (0.0, ())
    for k in range(1, line_count + 1):
        for j in range(1, n + 1):
            for i in range(j - 1, -1, -1):
                line = _join(pieces[i:j])
                if text_columns(line) > max_chars:
                    break
                previous_cost, previous_breaks = best[k - 1][i]
                if previous_cost == float("inf"):
                    continue
                cost = previous_cost + (text_columns(line) / max_chars) ** 2
                if j < n:
                    cost += _LINE_BREAK_COST[_break_kind(pieces[j - 1])]
                if cost < best[k][j][0]:
                    best[k][j] = (cost, (*previous_breaks, j))
    _, breaks = best[line_count][n]
    bounds = [0, *breaks]
    return tuple(_join(pieces[a:b]) for a, b in pairwise(bounds))


# --- segmentation --------------------------------------------------------------------


def _segment_cost(pieces: Sequence[_Piece], i: int, j: int, capacity: int, min_cue_s: float) -> float:
    """Cost of pieces[i:j] as one cue (the line limits are checked by the caller)."""
    cost = _CUE_COST + _FILL_COST * (text_columns(_join(pieces[i:j])) / capacity) ** 2
    cost += _SENTENCE_INSIDE_COST * sum(_break_kind(p) == "sentence" for p in pieces[i : j - 1])
    cost += _PAUSE_INSIDE_COST * sum(b.start_s - a.end_s >= _LONG_PAUSE_S for a, b in pairwise(pieces[i:j]))
    if j < len(pieces):
        cost += _BREAK_COST[_break_kind(pieces[j - 1])]
        # The cue may stretch to the next cue's start, no further.
        if pieces[j].start_s - pieces[i].start_s < min_cue_s - _EPSILON_S:
            cost += _SHORT_CUE_COST
    elif pieces[j - 1].end_s - pieces[i].start_s < min_cue_s - _EPSILON_S:
        # A short last cue is allowed, but a flash at the end reads badly.
        cost += _SHORT_LAST_CUE_COST
    duration = pieces[j - 1].end_s - pieces[i].start_s
    cost += _OVERLONG_COST_PER_S * max(0.0, duration - COMFORTABLE_CUE_S)
    return cost


def _segment(pieces: Sequence[_Piece], max_chars: int, max_lines: int, min_cue_s: float) -> list[tuple[int, int]]:
    """Cheapest split of the pieces into cues, as (start, end) index pairs."""
    n = len(pieces)
    capacity = max_chars * max_lines
    cost = [0.0] + [float("inf")] * n
    back = [0] * (n + 1)
    for i in range(n):
        if cost[i] == float("inf"):
            continue
        for j in range(i + 1, n + 1):
            if _greedy_line_count(pieces[i:j], max_chars) > max_lines:
                break  # adding pieces never makes a cue fit better
            candidate = cost[i] + _segment_cost(pieces, i, j, capacity, min_cue_s)
            if candidate < cost[j]:
                cost[j], back[j] = candidate, i
    segments = []
    j = n
    while j > 0:
        segments.append((back[j], j))
        j = back[j]
    return segments[::-1]


def build_cues(
    words: Sequence[WordTiming],
    max_chars_per_line: int = MAX_CHARS_PER_LINE,
    max_lines: int = MAX_LINES,
    min_cue_s: float = MIN_CUE_S,
) -> list[CaptionCue]:
    """Caption cues for timed words (see the module docstring for the rules)."""
    if max_chars_per_line < 1 or max_lines < 1 or min_cue_s < 0:
        raise ValueError(
            f"need max_chars_per_line >= 1, max_lines >= 1, min_cue_s >= 0; got {max_chars_per_line}, {max_lines}, {min_cue_s}"
        )
    pieces = _pieces(words, max_chars_per_line)
    segments = _segment(pieces, max_chars_per_line, max_lines, min_cue_s)
    cues = []
    for k, (i, j) in enumerate(segments):
        start = pieces[i].start_s
        end = max(pieces[j - 1].end_s, start)
        if k + 1 < len(segments):
            next_start = pieces[segments[k + 1][0]].start_s
            end = min(max(end, start + min_cue_s), max(next_start, start))
        lines = _layout(pieces[i:j], max_chars_per_line, max_lines)
        cues.append(CaptionCue(start_s=round(start, 3), end_s=round(end, 3), lines=lines))
    return cues


# --- WebVTT and SRT ----------------------------------------------------------------------


def _timestamp(seconds: float, decimal: str) -> str:
    total_ms = max(0, round(seconds * 1000))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def _escape_vtt(line: str) -> str:
    # WebVTT cue text treats & < > as markup; "-->" is then impossible too.
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_webvtt(cues: Sequence[CaptionCue]) -> str:
    blocks = ["WEBVTT"]
    for cue in cues:
        timing = f"{_timestamp(cue.start_s, '.')} --> {_timestamp(cue.end_s, '.')}"
        blocks.append("\n".join([timing, *(_escape_vtt(line) for line in cue.lines)]))
    return "\n\n".join(blocks) + "\n"


def to_srt(cues: Sequence[CaptionCue]) -> str:
    blocks = []
    for number, cue in enumerate(cues, start=1):
        timing = f"{_timestamp(cue.start_s, ',')} --> {_timestamp(cue.end_s, ',')}"
        blocks.append("\n".join([str(number), timing, *cue.lines]))
    return "\n\n".join(blocks) + "\n"


_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{3})"
_TIMING_LINE = re.compile(rf"^\s*{_TIME}\s+-->\s+{_TIME}")


def _seconds(hours: str | None, minutes: str, seconds: str, millis: str) -> float:
    # Whole milliseconds first, one division last: gives exactly the float that
    # round(t, 3) gave when the cue was built, so cues round-trip equal.
    total_ms = ((int(hours or 0) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(millis)
    return total_ms / 1000


def parse_webvtt(text: str) -> list[CaptionCue]:
    """Cues from WebVTT text; also reads SRT (no WEBVTT header: no entity decoding).

    Cue identifiers, cue settings, NOTE/STYLE/REGION blocks are skipped.
    Raises ValueError for a block with cue text but no timing line.
    """
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    is_vtt = text.startswith("WEBVTT")
    cues = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.split("\n")
        if lines[0].startswith(("WEBVTT", "NOTE", "STYLE", "REGION")):
            continue
        # The timing line comes first, or second after a cue identifier.
        found = [(i, m) for i, line in enumerate(lines[:2]) if (m := _TIMING_LINE.match(line))]
        if not found:
            raise ValueError(f"caption block without a timing line: {block[:80]!r}")
        timing_index, timing = found[0]
        groups = timing.groups()
        body = lines[timing_index + 1 :]
        cues.append(
            CaptionCue(
                start_s=_seconds(*groups[:4]),
                end_s=_seconds(*groups[4:]),
                lines=tuple(html.unescape(line) if is_vtt else line for line in body),
            )
        )
    return cues


def parse_srt(text: str) -> list[CaptionCue]:
    """Cues from SRT text (same reader as `parse_webvtt`)."""
    return parse_webvtt(text)


def caption_excerpt(cues: Sequence[CaptionCue], n: int = 2) -> str:
    """The first `n` cues as one short line, for previews: "a b / c d …"."""
    shown = [" ".join(cue.lines) for cue in cues[:n]]
    more = " …" if len(cues) > n else ""
    return " / ".join(shown) + more
