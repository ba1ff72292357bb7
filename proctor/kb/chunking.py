"""Documents into chunks, and chunks into sentences, as exact pieces of the text.

Every chunk (and every sentence) is a substring of what it was cut from, so a
citation's quote can always be found word for word in the document it names.
Paragraphs (blank-line separated) and list items stay whole when they fit in a chunk;
longer ones are cut at sentence ends, and a sentence longer than a chunk at words.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

Span = tuple[int, int]  # [start, end) character offsets

_PARAGRAPH = re.compile(r"\n[ \t]*\n+")
_LIST_ITEM = re.compile(r"\n(?=[ \t]*(?:[-*•]|\d+[.)])\s)")  # a line that starts a list item
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")
_WORD = re.compile(r"\S+")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


def _split(text: str, span: Span, pattern: re.Pattern[str]) -> list[Span]:
    """``span`` cut at every match of ``pattern``, each piece stripped, empty ones left out."""
    start, end = span
    pieces, cursor = [], start
    for match in pattern.finditer(text, start, end):
        pieces.append((cursor, match.start()))
        cursor = match.end()
    pieces.append((cursor, end))
    return [s for s in (_strip(text, p) for p in pieces) if s[1] > s[0]]


def _strip(text: str, span: Span) -> Span:
    start, end = span
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _words(text: str, span: Span) -> int:
    return len(_WORD.findall(text, span[0], span[1]))


def _units(text: str, span: Span, limit: int) -> Iterator[Span]:
    """Paragraphs, then list items, then sentences, then runs of words: the largest
    pieces of ``span`` that hold at most ``limit`` words."""
    for paragraph in _split(text, span, _PARAGRAPH):
        for item in _split(text, paragraph, _LIST_ITEM):
            if _words(text, item) <= limit:
                yield item
                continue
            for sentence in _split(text, item, _SENTENCE_END):
                if _words(text, sentence) <= limit:
                    yield sentence
                    continue
                words = list(_WORD.finditer(text, sentence[0], sentence[1]))
                for i in range(0, len(words), limit):
                    run = words[i:i + limit]
                    yield run[0].start(), run[-1].end()


def chunk_spans(text: str, chunk_words: int) -> list[Span]:
    """Consecutive units packed into chunks of at most ``chunk_words`` words."""
    chunks: list[Span] = []
    current: Span | None = None
    count = 0
    for unit in _units(text, (0, len(text)), chunk_words):
        n = _words(text, unit)
        if current is not None and count + n <= chunk_words:
            current, count = (current[0], unit[1]), count + n
            continue
        if current is not None:
            chunks.append(current)
        current, count = unit, n
    if current is not None:
        chunks.append(current)
    return chunks


def chunk_text(text: str, chunk_words: int) -> list[str]:
    """The chunks' texts (exact substrings of ``text``)."""
    return [text[a:b] for a, b in chunk_spans(text, chunk_words)]


def sentences(text: str) -> list[str]:
    """Sentences and lines of ``text`` (exact substrings), e.g. a rubric's points."""
    return [text[a:b] for a, b in _split(text, (0, len(text)), _SENTENCE_END)]


def plain(sentence: str) -> str:
    """A sentence without its list marker, for embedding ("- uses a lock" → "uses a lock")."""
    return _BULLET.sub("", sentence).strip()


def word_count(text: str) -> int:
    return len(_WORD.findall(text))
