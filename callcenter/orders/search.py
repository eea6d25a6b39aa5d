"""Finding orders: one search box and filters over ``work_orders`` at a million rows.

Theory of operation
-------------------
The words of an order (request text, category, 事发地址 location) are indexed as CJK
bigrams (:mod:`callcenter.orders.words`): SQLite keeps them in the FTS5 table
``work_orders_fts`` (triggers on ``search_text``), PostgreSQL in a GIN index over
the stored ``search_vector`` (``to_tsvector('simple', search_text)``), a word's
bigrams ANDed (see :func:`~callcenter.orders.words.ts_match`).  The caller's
name and number are never in ``search_text``: they are matched through their own
columns, and for a reader who may not see them (a department) never on a
confidential order, so a search cannot reveal who called.

:func:`parse_query` reads the search box: an order number (``20261123-000123`` or
its leading part) goes to the number, a phone number (7 digits or more) to the
caller's number, anything else to the words (and, for the centre, to the start of
the caller's name).  :func:`conditions` turns the box and the filters into WHERE
clauses, each served by an index of migration 0008; :data:`SORTS` are the sortable
columns.  Totals are counted up to :data:`COUNT_CAP` ("more than 1,000: narrow the
search"), so a bookmarked filter that matches half a million orders still answers at
once.  With words, a capped count of the matches also chooses how the page is read
(SQLite: FTS5 newest first, or the sort order's index for common words; PostgreSQL:
see :func:`find_orders`), because neither database can estimate how many orders a
run of bigrams matches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    and_,
    column,
    false,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
)

from callcenter.orders.lifecycle import TIMED_STATES, Order, Urgency
from callcenter.orders.store import OrderRow, WorkOrders
from callcenter.orders.words import fts5_match, tokens, ts_match

SORTS = {
    "created": "created_at", "due": "handling_due", "number": "number",
    "state": "status", "urgency": "urgency", "category": "category",
    "department": "lead_department", "channel": "channel",
}
"""Sort key (``?sort=created`` or ``-created``) -> column."""

COUNT_CAP = 1_000
COMMON_WORDS = 2_000
"""SQLite: words matching this many orders are tested row by row in sort order."""
DUE_SOON_S = 24 * 3600
"""An open order whose handling deadline is this close is 'due soon'."""

_NUMBER = re.compile(r"^(19|20)\d{6}(-\d{0,6})?$|^(19|20)\d{12}$")
_PHONE = re.compile(r"^\+?\d[\d\s-]{5,18}\d$")


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
    request_type: str = ""  # 诉求类型 code (config/intake.toml)
    district: str = ""  # 事发地址's district and street, as configured
    street: str = ""
    reply_method: str = ""
    gender: str = ""
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
        query.number = q if len(q) != 14 else q[:8] + "-" + q[8:]
        return query
    if _PHONE.match(q):
        digits = re.sub(r"\D", "", q)
        if len(digits) >= 7:
            query.phone = digits[-11:] if digits.startswith("86") and len(digits) == 13 \
                else digits
            return query
    words = tokens(q)
    if any(len(w) > 1 or len(w[0]) > 1 or w[0].isascii() for w in words):
        # A lone Chinese character beside longer words (号 in 光明路12号) says little
        # and, as a prefix, would read every token that starts with it.
        words = [w for w in words if len(w) > 1 or len(w[0]) > 1 or w[0].isascii()]
    query.words = words[:8]
    if 1 <= len(q) <= 10 and " " not in q and not q.isascii():
        query.name = q
    return query


def csv_safe(value: Any) -> Any:
    """A cell that a spreadsheet would not run as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


# --------------------------------------------------------------------------- the query


@dataclass(frozen=True)
class Found:
    """One order of a result page, with the columns the lifecycle does not carry."""

    order: Order
    channel: str
    merged_into: int | None
    created_by: str


def _prefix(column: Any, value: str) -> Any:
    """``column`` starts with ``value`` (a range, so the column's index serves it)."""
    return and_(column >= value, column < value + "\U0010ffff")


def _day_start(day: date, tz: Any) -> float:
    return datetime.combine(day, time.min, tz).timestamp()


def conditions(query: Query, wo: WorkOrders, *, department: str | None, sees_identity: bool,
               username: str, now: float, common_words: bool = False) -> list[Any]:
    """The WHERE clauses for ``query`` as read by one reader.

    ``department``: a department handler's own (they only ever see its orders);
    ``sees_identity`` False: the caller's number and name match no confidential order;
    ``common_words``: the words match many orders, so walk the sort order's index and
    test each row against the match instead of sorting every match (SQLite: ``+id``
    keeps FTS5 from driving; PostgreSQL: ``coalesce(match, false)`` is no condition the
    GIN index can serve, so the match is a filter on the walk, see :func:`find_orders`).
    """
    where: list[Any] = []
    postgres = wo.engine.dialect.name == "postgresql"
    identity_ok = [] if sees_identity else [OrderRow.confidential.is_(False)]
    if query.number:
        where.append(OrderRow.number == query.number if len(query.number) == 15
                     else _prefix(OrderRow.number, query.number))
    if query.phone:
        where.append(and_(OrderRow.caller == query.phone, *identity_ok))
    dept = department or query.department
    if query.words:
        # State and department are tokens in the index too: a common word with them is
        # intersected there (the columns below still decide).
        marks = {"states": query.states, "department": dept}
        if postgres:
            matched = literal_column("work_orders.search_vector").op("@@")(
                func.to_tsquery(literal_column("'simple'"), ts_match(query.words, **marks)))
            if common_words:
                # Not a condition the GIN index serves, and estimated at one row in two
                # (PostgreSQL's default for an opaque boolean), so the planner walks the
                # sort order's index (or another filter's) and tests each row.
                matched = func.coalesce(matched, false())
        else:
            key = literal_column("+work_orders.id") if common_words else OrderRow.id
            matched = key.in_(select(literal_column("rowid")).select_from(
                text("work_orders_fts")).where(
                literal_column("work_orders_fts").op("MATCH")(
                    fts5_match(query.words, **marks))))
        if query.name:
            matched = or_(matched, and_(_prefix(OrderRow.caller_name, query.name),
                                        *identity_ok))
        where.append(matched)
    if query.states:
        where.append(OrderRow.status.in_(query.states))
    if dept:
        # Both terms indexed (co_handlers > '' ranges over the few co-handled orders),
        # so the databases answer the OR from two indexes instead of a table scan.
        where.append(or_(OrderRow.lead_department == dept,
                         and_(OrderRow.co_handlers > "",
                              OrderRow.co_handlers.like(f"%,{dept},%"))))
    if query.category:
        where.append(or_(OrderRow.category == query.category,
                         _prefix(OrderRow.category, query.category + "/")))
    if query.urgency:
        where.append(OrderRow.urgency == query.urgency)
    if query.channel:
        where.append(OrderRow.channel == query.channel)
    if query.date_from:
        where.append(OrderRow.created_at >= _day_start(query.date_from, wo.tz))
    if query.date_to:
        where.append(OrderRow.created_at < _day_start(query.date_to + timedelta(days=1), wo.tz))
    timed = OrderRow.status.in_([str(s) for s in TIMED_STATES])
    if query.overdue:  # (status, handling_due) index: one range per open state
        where.append(and_(timed, OrderRow.handling_due < now))
    if query.due_soon:
        where.append(and_(timed, OrderRow.handling_due >= now,
                          OrderRow.handling_due < now + DUE_SOON_S))
    if query.confidential is not None:
        where.append(OrderRow.confidential.is_(query.confidential))
    if query.mine:
        where.append(OrderRow.created_by == username)
    for field_, value in ((OrderRow.request_type, query.request_type),
                          (OrderRow.district, query.district), (OrderRow.street, query.street),
                          (OrderRow.reply_method, query.reply_method),
                          (OrderRow.caller_gender, query.gender)):
        if value:  # indexes of migration 0012 (the gender: a filter beside others)
            where.append(field_ == value)
    if query.merged is False:
        where.append(OrderRow.merged_into.is_(None))
    if query.number and query.phone:  # cannot both hold
        where.append(false())
    return where


def order_by(sort: str, *, walk: bool = True) -> list[Any]:
    """``created`` / ``-created`` ... (see :data:`SORTS`); ties by id, same direction.

    ``walk`` False: the sort key is an expression of the column (``+ 0``, ``|| ''``,
    the same order), so no index on it can be walked for it: the matches are found
    through the other conditions' indexes, then sorted (PostgreSQL, few matches)."""
    descending = sort.startswith("-")
    column = getattr(OrderRow, SORTS.get(sort.lstrip("-"), "created_at"))
    if not walk:
        column = (column + 0 if column.key in ("created_at", "handling_due")
                  else column.concat(""))
    if descending:
        return [column.desc(), OrderRow.id.desc()]
    return [column.asc(), OrderRow.id.asc()]


async def find_orders(wo: WorkOrders, query: Query, *, department: str | None = None,
                      sees_identity: bool = True, username: str = "", page: int = 1,
                      per_page: int = 20, now: float | None = None
                      ) -> tuple[list[Found], int, bool]:
    """A page of orders matching ``query``, the count (up to :data:`COUNT_CAP`) and
    whether the count was capped.

    PostgreSQL, words in the query: the planner cannot estimate how many orders a word
    matches (it multiplies its bigrams' frequencies as if independent, so 暖气不热,
    in one order of 15, is taken for one in 3,000), and picked the wrong one of two
    plans, taking up to a second at a million orders.  The count, made first through
    the GIN index, says which: more than :data:`COUNT_CAP` matches, the page walks the
    sort order's index testing each row (a few hundred rows read for a common word);
    fewer, the matches are fetched through the index and sorted (``walk`` False in
    :func:`order_by`), never a walk through the table looking for rare ones."""
    now = wo.clock() if now is None else now
    common = False
    others = (query.states, query.department, department, query.category, query.urgency,
              query.channel, query.date_from, query.date_to, query.overdue, query.due_soon,
              query.confidential is not None, query.mine, query.request_type, query.district,
              query.street, query.reply_method, query.gender)
    if query.words and wo.engine.dialect.name == "sqlite" and not any(others):
        async with wo.sessions() as s:
            common = (await s.scalar(text(
                "SELECT count(*) FROM (SELECT rowid FROM work_orders_fts "
                "WHERE work_orders_fts MATCH :m LIMIT :n)"),
                {"m": fts5_match(query.words), "n": COMMON_WORDS})) >= COMMON_WORDS
    if query.words and wo.engine.dialect.name == "sqlite" and query.sort == "-created":
        return await _newest_by_words(wo, query, department=department,
                                      sees_identity=sees_identity, username=username,
                                      page=page, per_page=per_page, now=now)
    where = conditions(query, wo, department=department, sees_identity=sees_identity,
                       username=username, now=now, common_words=common)
    counted: Select[Any] = select(OrderRow.id).where(*where).limit(COUNT_CAP + 1)
    walk = True
    async with wo.sessions() as s:
        total = int(await s.scalar(select(func.count()).select_from(counted.subquery())) or 0)
        if query.words and wo.engine.dialect.name == "postgresql":
            walk = total > COUNT_CAP
            where = conditions(query, wo, department=department, sees_identity=sees_identity,
                               username=username, now=now, common_words=walk)
        rows = list(await s.scalars(select(OrderRow).where(*where)
                                    .order_by(*order_by(query.sort, walk=walk))
                                    .offset((page - 1) * per_page).limit(per_page)))
    found = [Found(wo._order(r)[0], r.channel, r.merged_into, r.created_by) for r in rows]
    return found, min(total, COUNT_CAP), total > COUNT_CAP


_FTS = table("work_orders_fts", column("rowid", Integer), column("work_orders_fts"))


async def _newest_by_words(wo: WorkOrders, query: Query, *, department: str | None,
                           sees_identity: bool, username: str, page: int, per_page: int,
                           now: float) -> tuple[list[Found], int, bool]:
    """SQLite, words in the newest-first list: the full-text index drives.

    FTS5 reads a word's posting list newest id first and stops at the page (or at the
    count's cap), testing each row against the other filters by its key; sorting all
    matches by ``created_at`` instead costs a second at a million orders for a common
    word.  Newest first is therefore by id, the order orders were filed in (the same
    as ``created_at`` for every order taken live; only back-dated imports differ).
    The caller's-name branch (the centre's) is read the same way and merged."""
    rest = conditions(replace(query, words=[], name=""), wo, department=department,
                      sees_identity=sees_identity, username=username, now=now)
    want = max(page * per_page, COUNT_CAP + 1)
    match = _FTS.c.work_orders_fts.op("MATCH")(fts5_match(
        query.words, states=query.states, department=department or query.department))
    if rest:
        by_words = (select(_FTS.c.rowid).join(OrderRow, OrderRow.id == _FTS.c.rowid)
                    .where(match, *rest))
    else:
        by_words = select(_FTS.c.rowid).where(match)
    parts = [by_words.order_by(_FTS.c.rowid.desc()).limit(want)]
    if query.name:
        identity_ok = [] if sees_identity else [OrderRow.confidential.is_(False)]
        parts.append(select(OrderRow.id).where(_prefix(OrderRow.caller_name, query.name),
                                               *identity_ok, *rest)
                     .order_by(OrderRow.id.desc()).limit(want))
    async with wo.sessions() as s:
        ids: set[int] = set()
        for part in parts:
            ids.update(await s.scalars(part))
        ordered = sorted(ids, reverse=True)
        chosen = ordered[(page - 1) * per_page:page * per_page]
        rows = {r.id: r for r in await s.scalars(
            select(OrderRow).where(OrderRow.id.in_(chosen)))} if chosen else {}
    found = [Found(wo._order(rows[i])[0], rows[i].channel, rows[i].merged_into,
                   rows[i].created_by) for i in chosen if i in rows]
    total = len(ordered)
    return found, min(total, COUNT_CAP), total > COUNT_CAP


URGENCIES = tuple(str(u) for u in Urgency)
