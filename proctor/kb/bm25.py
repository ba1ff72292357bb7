"""Okapi BM25 over a handful of chunks, in process.

The corpus is whatever the store returned for one search (one tenant's chunks, after
its filters), so document frequencies are that set's. Words are lower-cased, English
stop words dropped and plural/verb endings trimmed by a few suffix rules: the same
rules for query and chunks, which is all BM25 needs of a stemmer.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

K1 = 1.5  # term-frequency saturation (the usual 1.2-2.0)
B = 0.75  # length normalisation

_TOKEN = re.compile(r"[a-z0-9]+")
_STOP_TEXT = """
a about above after again all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is
it its itself just me more most my myself no nor not now of off on once only or other our
ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we
were what when where which while who whom why will with would you your yours yourself
yourselves um uh like really
"""
STOP_WORDS = frozenset(_STOP_TEXT.split())


def stem(word: str) -> str:
    """A light suffix trim (no dictionary): caches/cache, hashing/hash, sorted/sort."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 4 and word.endswith(("shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    return [stem(w) for w in _TOKEN.findall(text.lower()) if w not in STOP_WORDS]


class Bm25:
    """Scores of every document of ``corpus`` (token lists) for a query."""

    def __init__(self, corpus: Sequence[Sequence[str]]) -> None:
        self._counts = [Counter(doc) for doc in corpus]
        self._lengths = np.array([len(doc) for doc in corpus], dtype=np.float64)
        self._mean_length = float(self._lengths.mean()) if len(corpus) else 0.0
        frequency: Counter[str] = Counter()
        for counts in self._counts:
            frequency.update(counts.keys())
        n = len(corpus)
        # The +1 inside the log (Lucene's form) keeps every idf positive.
        self._idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in frequency.items()}

    def scores(self, query: Sequence[str]) -> npt.NDArray[np.float64]:
        out = np.zeros(len(self._counts), dtype=np.float64)
        if not self._counts or self._mean_length == 0:
            return out
        norm = K1 * (1 - B + B * self._lengths / self._mean_length)
        for term in set(query):
            idf = self._idf.get(term)
            if idf is None:
                continue
            tf = np.array([c.get(term, 0) for c in self._counts], dtype=np.float64)
            out += idf * tf * (K1 + 1) / (tf + norm)
        return out
