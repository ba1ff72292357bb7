"""Word error rate: (substitutions + deletions + insertions) / words in the reference.

Both texts are normalised first so that only words count: case, punctuation and
hyphenation are ignored (``Cold-hearted.`` matches ``cold hearted``), and a few titles
are spelled out (``Mr.`` matches ``mister``), as Whisper's own English normaliser does.
Numbers are left as written: ``twenty`` and ``20`` differ.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

# Abbreviation -> the spoken form readers' transcripts use (LibriVox writes "mister").
_SPOKEN = {"mr": "mister", "mrs": "missus", "dr": "doctor"}
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
_NOT_WORD = re.compile(r"[^\w']+")  # hyphens and punctuation split words


@dataclass(frozen=True)
class WordErrors:
    """Edit counts of a hypothesis against a reference, summable over a corpus."""

    errors: int
    reference_words: int

    @property
    def rate(self) -> float:
        """errors / reference words; 0 for two empty texts, inf for words from nothing."""
        if self.reference_words == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference_words

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(self.errors + other.errors,
                          self.reference_words + other.reference_words)


def normalise(text: str) -> list[str]:
    """The words of ``text``, lower-case, without punctuation, titles spelled out."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    words = (w.strip("'_") for w in _NOT_WORD.split(text))
    return [_SPOKEN.get(w, w) for w in words if w]


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance over words (unit costs), in O(len(hypothesis)) memory."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1,  # deletion
                               current[j - 1] + 1,  # insertion
                               previous[j - 1] + (ref_word != hyp_word)))  # substitution
        previous = current
    return previous[-1]


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    ref, hyp = normalise(reference), normalise(hypothesis)
    return WordErrors(edit_distance(ref, hyp), len(ref))


def word_error_rate(reference: str, hypothesis: str) -> float:
    return word_errors(reference, hypothesis).rate
