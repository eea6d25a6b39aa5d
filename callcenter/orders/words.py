"""The words of an order for its full-text index: CJK bigrams, no segmenter.

``"路灯不亮"`` is indexed as ``"路灯 灯不 不亮"``, Latin letters and digits as whole
lower-case words.  A query is cut the same way and each of its words must appear
as a phrase of those tokens, so any substring of two characters or more is found
(street and estate names no dictionary knows included).  The caller's identity is
never part of it (see :mod:`callcenter.orders.search`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+|[0-9A-Za-z]+")


def _bigrams(run: str) -> list[str]:
    return [run] if len(run) < 2 else [run[i:i + 2] for i in range(len(run) - 1)]


def tokens(text: str) -> list[list[str]]:
    """The text's words, each a list of tokens that form a phrase:
    ``tokens("路灯不亮 LED") -> [["路灯", "灯不", "不亮"], ["led"]]``."""
    out = []
    for word in _WORD.findall(text):
        if word[0].isascii():
            out.append([word.lower()])
        else:
            out.append(_bigrams(word))
    return out


def order_search_text(text: str, category: str = "", location: str = "") -> str:
    """What ``work_orders.search_text`` holds for an order (no caller identity)."""
    return " ".join(t for part in (category, location, text)
                    for word in tokens(part) for t in word)


def _single(word: list[str]) -> bool:
    """A lone CJK character: found as the start of a bigram (a prefix)."""
    return len(word) == 1 and len(word[0]) == 1 and not word[0].isascii()


def fts5_match(words: Iterable[list[str]]) -> str:
    """FTS5: each word a quoted phrase, all required (tokens hold only letters/digits):
    ``fts5_match([["路灯", "灯坏"], ["灯"]]) -> '"路灯 灯坏" AND "灯"*'``."""
    return " AND ".join('"' + " ".join(w) + '"' + ("*" if _single(w) else "") for w in words)


def ts_match(words: Iterable[list[str]]) -> str:
    """PostgreSQL ``to_tsquery('simple', ...)``: ``('路灯' & '灯坏') & ('灯':*)``.

    A word's bigrams are ANDed, not chained with ``<->``: a phrase makes PostgreSQL
    re-read every candidate row's vector to check positions, and the bigrams of a
    word rarely all occur apart."""
    return " & ".join("(" + " & ".join(f"'{t}'" + (":*" if _single(w) else "") for t in w)
                      + ")" for w in words)


