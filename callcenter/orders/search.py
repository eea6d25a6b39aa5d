"""Finding orders: one search box and filters over ``work_orders`` at a million rows.

Theory of operation
-------------------
The words of an order (its request text, category and 事发地址 location) are indexed
as CJK bigrams: ``"路灯不亮"`` is stored as ``"路灯 灯不 不亮"``, Latin letters and
digits as whole lower-case words.  A query is cut the same way and its bigrams must
appear as a phrase, so any substring of two characters or more is found (names of
streets and estates that no dictionary knows included), with no segmenter at
write time.  SQLite keeps the tokens in the FTS5 table ``work_orders_fts``
(triggers on ``search_text``); PostgreSQL in a GIN index over
``to_tsvector('simple', search_text)`` queried with ``<->`` phrases.  The caller's
name, number and address are never in ``search_text``: they are matched through
their own columns, and only for readers who may see them (a department never
finds a confidential order by its caller).

:func:`parse_query` reads the search box: an order number (``20261123-000123`` or
its leading part) goes to the number, a phone number (7 digits or more) to the
caller's number, anything else to the words (and, for the centre, to the caller's
name).  The filters are the literal :data:`FILTERS` table; the sort keys
:data:`SORTS`.  Totals are counted up to :data:`COUNT_CAP` (a bookmarkable filter
must answer fast even when half a million orders match).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

CHANNELS = ("phone", "web", "wechat", "app", "letter", "email", "mayor_mailbox")
"""一号对外: where a request came in (``work_orders.channel``)."""

SORTS = {
    "created": "created_at", "due": "handling_due", "number": "number",
    "state": "status", "urgency": "urgency", "category": "category",
    "department": "lead_department", "channel": "channel",
}
"""Sort key (``?sort=created`` or ``-created``) -> column."""

COUNT_CAP = 10_000
DUE_SOON_S = 24 * 3600
"""An open order whose handling deadline is this close is 'due soon'."""

_WORD = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+|[0-9A-Za-z]+")
_NUMBER = re.compile(r"^\d{8}-?\d{0,6}$")
_PHONE = re.compile(r"^\+?\d[\d\s-]{5,18}\d$")


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


def fts5_match(words: Iterable[list[str]]) -> str:
    """FTS5: each word a quoted phrase, all required (tokens hold only letters/digits)."""
    return " AND ".join('"' + " ".join(w) + '"' for w in words)


def ts_match(words: Iterable[list[str]]) -> str:
    """PostgreSQL ``to_tsquery('simple', ...)``: ``('路灯' <-> '灯不') & 'led'``."""
    return " & ".join("(" + " <-> ".join(f"'{t}'" for t in w) + ")" for w in words)


@dataclass
class Query:
    """What the search box and the filters ask for (all optional; see :func:`parse_query`)."""

    number: str = ""  # an order number or its leading part
    phone: str = ""  # the caller's number, digits only
    words: list[list[str]] = field(default_factory=list)
    name: str = ""  # matched as the start of the caller's name (centre only)
    states: list[str] = field(default_factory=list)
    department: str = ""
    category: str = ""
    urgency: str = ""
    channel: str = ""
    date_from: date | None = None
    date_to: date | None = None
    overdue: bool = False
    due_soon: bool = False
    confidential: bool | None = None
    mine: bool = False
    merged: bool | None = None  # None: all; False: hide followers of a merged order
    sort: str = "-created"

    @property
    def empty_text(self) -> bool:
        return not (self.number or self.phone or self.words or self.name)


def parse_query(q: str) -> Query:
    """Read the search box (at most 100 characters are used)."""
    q = " ".join(q.split())[:100]
    query = Query()
    if not q:
        return query
    if _NUMBER.match(q):
        query.number = q if "-" in q or len(q) <= 8 else q[:8] + "-" + q[8:]
        return query
    if _PHONE.match(q):
        digits = re.sub(r"\D", "", q)
        if len(digits) >= 7:
            query.phone = digits[-11:] if digits.startswith("86") and len(digits) == 13 \
                else digits
            return query
    query.words = [w for w in tokens(q)][:8]
    if 1 <= len(q) <= 10 and " " not in q and not q.isascii():
        query.name = q
    return query


def csv_safe(value: Any) -> Any:
    """A cell that a spreadsheet would not run as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
