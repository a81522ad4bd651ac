"""BM25 product search for the WebShop env: what upstream's pyserini/Lucene index does, in-process with
`bm25s`. Each product is indexed as upstream's `search_engine/convert_product_file_format.py` builds
its document (title, description, first bullet point and the option text, lower-cased), analysed
like Lucene's EnglishAnalyzer (word tokens, possessive 's dropped, Lucene's 33 English stop words,
Porter stemming) and scored with BM25 k1=0.9, b=0.4 (pyserini's defaults).

`SearchEngine.search(keywords, k)` returns asins best first; ties are broken by catalog order, only
products sharing a term with the query are returned (as Lucene does), and an empty or stop-word-only
query returns []. Upstream's special first tokens are supported: `<r>` (k random products, from a
seeded generator), `<c> CATEGORY`, `<q> QUERY` and `<a> ATTRIBUTE` (exact-match filters, catalog order).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from typing import Sequence

import bm25s
import numpy as np
import Stemmer

__all__ = ["SearchEngine", "document_text", "analyze", "LUCENE_STOPWORDS"]

LUCENE_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with".split())
"""Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET, which pyserini's default analyzer uses"""

_TOKEN = re.compile(r"\w+(?:\.\d+)*")           # keeps '7.5' and '16.9' whole, splits 'x-large'
_POSSESSIVE = re.compile(r"['’]s\b")
_STEMMER = Stemmer.Stemmer("porter")


def document_text(product: dict) -> str:
    """The indexed text of a loaded product record (upstream convert_product_file_format)."""
    option_text = ", and ".join(f"{name}: {', '.join(values)}" for name, values in product.get("options", {}).items())
    bullets = product.get("BulletPoints") or [""]
    return " ".join([product["Title"], product["Description"], bullets[0], option_text]).lower()


def analyze(text: str) -> list[str]:
    """Lucene-like English analysis: lower-case, tokens, drop 's and stop words, Porter stems."""
    words = _TOKEN.findall(_POSSESSIVE.sub("", text.lower()))
    return _STEMMER.stemWords([w for w in words if w not in LUCENE_STOPWORDS])


class SearchEngine:
    """BM25 over a list of loaded product records (see `catalog.Catalog.products`)."""

    def __init__(self, products: Sequence[dict], k1: float = 0.9, b: float = 0.4, seed: int = 0):
        self.asins = [p["asin"] for p in products]
        self._by_category: dict[str, list[int]] = defaultdict(list)
        self._by_query: dict[str, list[int]] = defaultdict(list)
        self._by_attribute: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(products):
            self._by_category[str(p.get("category", "")).strip()].append(i)
            self._by_query[str(p.get("query", "")).strip()].append(i)
            for a in p.get("Attributes", []):
                self._by_attribute[a].append(i)
        self._rng = random.Random(seed)
        self._bm25 = bm25s.BM25(k1=k1, b=b, method="lucene")
        if self.asins:
            self._bm25.index([analyze(document_text(p)) for p in products], show_progress=False)

    def __len__(self) -> int:
        return len(self.asins)

    def search(self, keywords: str, k: int = 50) -> list[str]:
        """Asins of the (at most) k best matches for `keywords`, best first; [] when nothing matches."""
        words = keywords.split()
        if not words or k <= 0 or not self.asins:
            return []
        head, rest = words[0], " ".join(words[1:]).strip()
        if head == "<r>":
            return [self.asins[i] for i in self._rng.sample(range(len(self.asins)), min(k, len(self.asins)))]
        filters = {"<c>": self._by_category, "<q>": self._by_query, "<a>": self._by_attribute}
        if head in filters:
            key = words[1] if head == "<c>" and len(words) > 1 else rest   # upstream: <c> takes one word
            return [self.asins[i] for i in filters[head].get(key, [])[:k]]
        ids = self._bm25.get_tokens_ids(analyze(keywords))
        if not ids:
            return []
        scores = np.asarray(self._bm25.get_scores(ids), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[:k]
        return [self.asins[i] for i in order if scores[i] > 0]
