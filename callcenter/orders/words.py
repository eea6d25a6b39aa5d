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


def order_search_text(text: str, category: str = "", location: str = "", *,
                      state: str = "", departments: Iterable[str] = ()) -> str:
    """What ``work_orders.search_text`` holds for an order (no caller identity): its
    words, then a token for its state and one per department handling it
    (:func:`state_token`, :func:`department_token`), so that words combined with
    those filters are intersected inside the full-text index."""
    words = [t for part in (category, location, text) for word in tokens(part) for t in word]
    marks = ([state_token(state)] if state else []) + [department_token(d)
                                                         for d in departments if d]
    return " ".join(words + marks)


def _mark(kind: str, code: str) -> str:
    """``zq`` + kind + the code's letters and digits: one token to FTS5's unicode61
    and to PostgreSQL's parser, never a word of a request (words are CJK bigrams or
    whole Latin words matched exactly)."""
    return "zq" + kind + re.sub(r"[^0-9a-z]", "", code.lower())


def state_token(state: str) -> str:
    return _mark("s", state)


def department_token(department: str) -> str:
    return _mark("d", department)


def _single(word: list[str]) -> bool:
    """A lone CJK character: found as the start of a bigram (a prefix)."""
    return len(word) == 1 and len(word[0]) == 1 and not word[0].isascii()


def fts5_match(words: Iterable[list[str]], *, states: Iterable[str] = (),
               department: str = "") -> str:
    """FTS5: each word a quoted phrase, all required (tokens hold only letters/digits):
    ``fts5_match([["路灯", "灯坏"], ["灯"]]) -> '"路灯 灯坏" AND "灯"*'``; with
    ``states`` / ``department`` their tokens too (any of the states)."""
    match = " AND ".join('"' + " ".join(w) + '"' + ("*" if _single(w) else "") for w in words)
    marks = [state_token(s) for s in states]
    if marks:
        match += " AND (" + " OR ".join(f'"{m}"' for m in marks) + ")"
    if department:
        match += f' AND "{department_token(department)}"'
    return match


def ts_match(words: Iterable[list[str]], *, states: Iterable[str] = (),
             department: str = "") -> str:
    """PostgreSQL ``to_tsquery('simple', ...)``: ``('路灯' & '灯坏') & ('灯':*)``.

    A word's bigrams are ANDed, not chained with ``<->``: a phrase makes PostgreSQL
    re-read every candidate row's vector to check positions, and the bigrams of a
    word rarely all occur apart."""
    match = " & ".join("(" + " & ".join(f"'{t}'" + (":*" if _single(w) else "") for t in w)
                       + ")" for w in words)
    marks = [state_token(s) for s in states]
    if marks:
        match += " & (" + " | ".join(f"'{m}'" for m in marks) + ")"
    if department:
        match += f" & '{department_token(department)}'"
    return match


