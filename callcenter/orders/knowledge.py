"""The knowledge base (知识库): articles operators answer questions from.

Theory of operation
-------------------
An article has a title, a body, a category (a path such as ``社会保障/社保卡``), keywords,
the department it comes from and an optional validity window.  Every change (create,
edit, retire, restore) bumps its ``version`` and appends a ``knowledge_versions`` row
with who changed which fields from what to what, so an answer given from a policy
can be traced to the text that was valid then.  Edits are optimistic: the caller
says which version it edited, and a stale edit is refused (:class:`ArticleConflict`).

Search (:meth:`KnowledgeBase.search`) is full text over Chinese: title, keywords and
body are segmented by jieba (``cut_for_search``: words and their sub-words) into
space-separated tokens held in ``search_title`` / ``search_body``; ``search_meta``
holds one opaque token per level of the category path (:func:`category_tokens`), so
a category narrows inside the index instead of after it.  SQLite indexes them with
FTS5 (``knowledge_fts``, kept by triggers, ranked by bm25 with the title weighted
5:1); PostgreSQL with a GIN index over a stored ``to_tsvector('simple', ...)``, ranked
by ``ts_rank`` (title weight A, body B, category D with weight 0).  A query is
segmented the same way; all its words must match (a Latin last word as a prefix,
since operators search as they type; Chinese sub-words are in the index already);
when no article at all has every word, any of its words of two characters or more
will do.  Retired articles and those outside their validity window are never
returned; a category narrows the search to that category and everything below it.

Cost.  Reading which articles match is cheap (a posting list); ranking is not: bm25
and ts_rank read every matched row (its column sizes, its vector), about 5 µs each,
so a common word (12,000 of 200,000 articles) costs 60-120 ms to rank in full.  The
ranking is therefore bounded: at most :data:`RANK_CAP` matches are ranked -- on
SQLite the newest (highest id; a posting list is read in id order at no cost), on
PostgreSQL the first the bitmap scan yields.  A query that matches more than that is
too wide to read anyway; its best answers among the newest articles come first and
one more word narrows it.  Validity is checked on the best few ranked only, in
Python (:meth:`Article.valid_at`), not by a row lookup for every match.  On
PostgreSQL each search runs with sequential scans off: the planner, guessing how
many rows a word matches, would otherwise walk the whole table under a ``LIMIT``
looking for a rare word (seconds at 200,000 rows).

Each search is logged (``knowledge_searches``: query, hits) and each order answered
from an article is linked to it (``knowledge_uses``), which gives supervisors the
articles that answer most calls and the searches that found nothing.

Tables are owned by migrations ``0008_desk`` and ``0012_desk_search``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, tzinfo
from datetime import time as dtime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    Integer,
    String,
    Text,
    desc,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

FIELDS = ("title", "body", "category", "keywords", "department", "valid_from", "valid_to")
"""The fields a person writes (``status`` changes by retire / restore)."""

LIMITS = {"title": 200, "body": 20_000, "category": 120, "keywords": 400, "department": 64}
STATUSES = ("active", "retired")
MAX_QUERY = 100
RANK_CAP = 1_000
"""At most this many matches of a query are ranked (see the module's "Cost")."""

DOMAIN_WORDS = (
    "公积金", "住房公积金", "社保", "社保卡", "医保", "医保卡", "居住证", "暂住证", "停水", "停电",
    "断水", "路灯", "退休金", "养老金", "养老保险", "失业金", "失业保险", "生育津贴", "生育保险",
    "异地就医", "个税", "积分落户", "落户", "户口", "身份证", "不动产登记", "房产证", "新生儿",
    "12345", "一网通办", "灵活就业", "最低工资", "廉租房", "公租房", "保障房", "燃气", "供暖",
    "物业费", "垃圾分类", "噪音扰民", "占道经营", "违章建筑", "违建", "网约车", "出租车",
)
_STOP = (
    "的 了 吗 呢 啊 吧 呀 么 是 在 我 你 他 她 它 我们 想 要 请问 请 问 一下 怎么 怎么办 怎样 如何 什么 哪里 哪儿 "
    "哪个 为什么 多少 能 能否 可以 可不可以 有 没有 和 与 及 或 都 也 就 还 到 去 给 让 被 把 这 那 个 "
    "您好 你好 谢谢 需要 哪些 手续")
STOP_WORDS = frozenset(_STOP.split())
"""Question words that say nothing about the subject; dropped from queries."""

PG_VECTOR = "a.search_vector"
"""PostgreSQL: the stored, weighted vector (title A, body B) under ``ix_knowledge_fts``."""

_TOKEN = re.compile(r"[0-9A-Za-z\u3400-\u9fff\uf900-\ufaff]+")


class _Base(DeclarativeBase):
    pass


class ArticleRow(_Base):
    __tablename__ = "knowledge_articles"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(120), default="")
    keywords: Mapped[str] = mapped_column(String(400), default="")
    department: Mapped[str] = mapped_column(String(64), default="")
    valid_from: Mapped[float | None] = mapped_column(Float, nullable=True)
    valid_to: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[float] = mapped_column(Float)
    search_title: Mapped[str] = mapped_column(Text, default="")
    search_body: Mapped[str] = mapped_column(Text, default="")
    search_meta: Mapped[str] = mapped_column(Text, default="")  # migration 0012


class VersionRow(_Base):
    __tablename__ = "knowledge_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    article_id: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    changed_by: Mapped[str] = mapped_column(String(64))
    changed_at: Mapped[float] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)


class UseRow(_Base):
    __tablename__ = "knowledge_uses"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    article_id: Mapped[int] = mapped_column(Integer)
    order_id: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float)


class SearchRow(_Base):
    __tablename__ = "knowledge_searches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(64))
    query: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(120), default="")
    hits: Mapped[int] = mapped_column(Integer)


class ArticleError(ValueError):
    """The article's data is not acceptable (message says which field and why)."""


class ArticleNotFound(LookupError):
    """No article with that id."""


class ArticleConflict(Exception):
    """The article changed since the version the writer edited."""


# --------------------------------------------------------------------------- text


@lru_cache(maxsize=1)
def _jieba() -> Any:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    for word in DOMAIN_WORDS:
        jieba.add_word(word, freq=200_000)
    jieba.initialize()
    return jieba


def load_segmenter() -> None:
    """Load jieba's dictionary now (a second or more; otherwise the first search or
    import waits for it).  Thread-safe to call off the event loop."""
    _jieba()


def segment(text_: str) -> list[str]:
    """Words and sub-words of ``text_`` (jieba ``cut_for_search``), lower case, no
    punctuation: ``segment("住房公积金怎么提取") -> ['住房', '公积', '公积金', '住房公积金', ...]``."""
    out = []
    for token in _jieba().cut_for_search(text_):
        for part in _TOKEN.findall(token):
            out.append(part.lower())
    return out


def index_text(*parts: str) -> str:
    """The space-separated tokens stored for the full-text index."""
    return " ".join(t for part in parts for t in segment(part))


def query_terms(query: str) -> list[str]:
    """The words of a query that must match (precise-mode jieba, stop words removed)."""
    words: list[str] = []
    for token in _jieba().cut(query.strip()):
        for part in _TOKEN.findall(token):
            part = part.lower()
            if part not in STOP_WORDS and part not in words:
                words.append(part)
    if not words:  # a query of stop words only: search it as it is
        words = [p.lower() for p in _TOKEN.findall(query)][:1]
    return words[:12]


def category_tokens(category: str) -> str:
    """One opaque token per level of a category path, for ``search_meta``:
    ``社会保障/社保卡`` -> the tokens of ``社会保障`` and of ``社会保障/社保卡``.

    A token is ``qc`` and 16 letters a-p (a SHA-1 of the path): one word to both
    FTS5's unicode61 tokenizer and PostgreSQL's parser, and never a word of a text."""
    parts = [p.strip() for p in category.split("/") if p.strip()]
    return " ".join(_category_token("/".join(parts[:i + 1])) for i in range(len(parts)))


def _category_token(path: str) -> str:
    digest = hashlib.sha1(path.encode("utf-8")).hexdigest()[:16]
    return "qc" + digest.translate(_HEX_LETTERS)


_HEX_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")


def _prefix_last(terms: list[str]) -> bool:
    """Only a Latin last word is a prefix: Chinese sub-words are indexed already
    (``cut_for_search`` stores 公积 beside 公积金), and a Chinese prefix such as 办*
    would drag in every article."""
    return bool(terms) and terms[-1].isascii()


def fts5_query(terms: list[str], *, any_term: bool = False, category: str = "") -> str:
    """An FTS5 MATCH expression over title and body:
    ``{search_title search_body} : ("社保" AND "转移")`` (terms are quoted, so no
    syntax of the operator's leaks into the query language; a Latin last word is a
    prefix), and with ``category`` its token in ``search_meta`` too."""
    quoted = [f'"{t}"' for t in terms]
    if _prefix_last(terms):
        quoted[-1] += "*"
    match = "{search_title search_body} : (" + (" OR " if any_term else " AND ").join(
        quoted) + ")"
    if category:
        match += f' AND search_meta : "{_category_token(category)}"'
    return match


def ts_query(terms: list[str], *, any_term: bool = False, category: str = "") -> str:
    """The same for PostgreSQL's ``to_tsquery('simple', ...)``: ``('社保':AB & '转移':AB)``
    (weights A and B are the title and the body), ``& 'qc…':D`` for a category."""
    quoted = [f"'{t}':" + ("*AB" if i == len(terms) - 1 and _prefix_last(terms) else "AB")
              for i, t in enumerate(terms)]
    match = "(" + (" | " if any_term else " & ").join(quoted) + ")"
    if category:
        match += f" & '{_category_token(category)}':D"
    return match


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Article:
    """An article as read (times are epoch seconds; ``valid_*`` None means open-ended)."""

    id: int
    title: str
    body: str
    category: str
    keywords: str
    department: str
    valid_from: float | None
    valid_to: float | None
    status: str
    version: int
    created_by: str
    created_at: float
    updated_by: str
    updated_at: float

    def valid_at(self, now: float) -> bool:
        return self.status == "active" and (self.valid_from is None or self.valid_from <= now) \
            and (self.valid_to is None or now < self.valid_to)

    def json(self, tz: tzinfo) -> dict[str, Any]:
        doc = asdict(self)
        doc["valid_from"] = _day_of(self.valid_from, tz)
        doc["valid_to"] = _last_day_of(self.valid_to, tz)
        return doc


@dataclass(frozen=True)
class Hit:
    """One search result: the article, its rank (higher is better) and an excerpt."""

    article: Article
    score: float
    excerpt: str


def _article(row: ArticleRow) -> Article:
    return Article(row.id, row.title, row.body, row.category, row.keywords, row.department,
                   row.valid_from, row.valid_to, row.status, row.version, row.created_by,
                   row.created_at, row.updated_by, row.updated_at)


def _day_of(ts: float | None, tz: tzinfo) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz).date().isoformat()


def _last_day_of(ts: float | None, tz: tzinfo) -> str | None:
    """``valid_to`` is stored as the first instant after the last valid day."""
    return None if ts is None else (datetime.fromtimestamp(ts, tz) - timedelta(seconds=1)
                                    ).date().isoformat()


def day_start(day: date, tz: tzinfo) -> float:
    return datetime.combine(day, dtime.min, tz).timestamp()


def excerpt(body: str, terms: Iterable[str], width: int = 120) -> str:
    """About ``width`` characters of the body around the first matched term."""
    flat = " ".join(body.split())
    first = min((i for t in terms if (i := flat.lower().find(t)) >= 0), default=0)
    start = max(0, first - width // 4)
    cut = flat[start:start + width]
    return ("…" if start else "") + cut + ("…" if start + width < len(flat) else "")


def check_fields(fields: Mapping[str, Any], tz: tzinfo, *, partial: bool = False
                 ) -> dict[str, Any]:
    """Validated article fields: strings within :data:`LIMITS`, dates ``YYYY-MM-DD``
    (``valid_to`` is the last valid day, inclusive).  Raises :class:`ArticleError`."""
    out: dict[str, Any] = {}
    for key in FIELDS:
        if key not in fields:
            if not partial and key in ("title", "body"):
                raise ArticleError(f"'{key}' is required")
            continue
        value = fields[key]
        if key in ("valid_from", "valid_to"):
            if value in (None, ""):
                out[key] = None
                continue
            if not isinstance(value, str):
                raise ArticleError(f"'{key}' must be a date YYYY-MM-DD")
            try:
                day = date.fromisoformat(value)
            except ValueError:
                raise ArticleError(f"'{key}' must be a date YYYY-MM-DD") from None
            out[key] = day_start(day + timedelta(days=1) if key == "valid_to" else day, tz)
            continue
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ArticleError(f"'{key}' must be a string")
        value = value.strip()
        if "\x00" in value:
            raise ArticleError(f"'{key}' must not contain NUL")
        if len(value) > LIMITS[key]:
            raise ArticleError(f"'{key}' is too long (at most {LIMITS[key]} characters)")
        if key in ("title", "body") and not value:
            raise ArticleError(f"'{key}' must not be empty")
        if key == "category":
            value = "/".join(p.strip() for p in value.split("/") if p.strip())
        if key == "keywords":
            value = " ".join(w for w in re.split(r"[\s,，;；、]+", value) if w)
        out[key] = value
    start, end = out.get("valid_from"), out.get("valid_to")
    if start is not None and end is not None and end <= start:
        raise ArticleError("'valid_to' must not be before 'valid_from'")
    return out


# --------------------------------------------------------------------------- store


class KnowledgeBase:
    """Articles at rest, their history, search, uses and search log."""

    def __init__(self, engine: AsyncEngine, tz: tzinfo, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.tz = tz
        self.clock = clock
        self.postgres = engine.dialect.name == "postgresql"

    # ---- write

    async def create(self, fields: Mapping[str, Any], actor: str, *, note: str = "",
                     at: float | None = None) -> Article:
        """A new active article (fields as :func:`check_fields`); version 1 is recorded."""
        data = check_fields(fields, self.tz)
        now = self.clock() if at is None else at
        async with self.sessions() as s, s.begin():
            row = ArticleRow(**{k: data.get(k, "" if k not in ("valid_from", "valid_to")
                                            else None) for k in FIELDS},
                             status="active", version=1, created_by=actor, created_at=now,
                             updated_by=actor, updated_at=now)
            _index(row)
            s.add(row)
            await s.flush()
            article = _article(row)
            s.add(_version(article, "create", actor, now, note,
                           {k: [None, v] for k, v in data.items()}))
        return article

    async def create_many(self, items: Iterable[Mapping[str, Any]], actor: str) -> int:
        """Bulk import (each checked, each with its version-1 record); the count."""
        now = self.clock()
        count = 0
        async with self.sessions() as s, s.begin():
            for fields in items:
                data = check_fields(fields, self.tz)
                row = ArticleRow(**{k: data.get(k, "" if k not in ("valid_from", "valid_to")
                                                else None) for k in FIELDS},
                                 status="active", version=1, created_by=actor, created_at=now,
                                 updated_by=actor, updated_at=now)
                _index(row)
                s.add(row)
                await s.flush()
                s.add(_version(_article(row), "create", actor, now, "import",
                               {k: [None, v] for k, v in data.items()}))
                count += 1
        return count

    async def edit(self, article_id: int, fields: Mapping[str, Any], actor: str, *,
                   version: int, note: str = "") -> Article:
        """Change some fields of ``version`` of the article; the changes are recorded."""
        data = check_fields(fields, self.tz, partial=True)
        return await self._change(article_id, version, actor, "edit", note, data)

    async def retire(self, article_id: int, actor: str, *, version: int, note: str = ""
                     ) -> Article:
        """Take the article out of search (kept, with its history)."""
        return await self._change(article_id, version, actor, "retire", note,
                                  {"status": "retired"})

    async def restore(self, article_id: int, actor: str, *, version: int, note: str = ""
                      ) -> Article:
        return await self._change(article_id, version, actor, "restore", note,
                                  {"status": "active"})

    async def _change(self, article_id: int, version: int, actor: str, action: str,
                      note: str, data: Mapping[str, Any]) -> Article:
        now = self.clock()
        async with self.sessions() as s, s.begin():
            row = await s.get(ArticleRow, article_id)
            if row is None:
                raise ArticleNotFound(article_id)
            if row.version != version:
                raise ArticleConflict(f"article {article_id} is at version {row.version}, "
                                      f"not {version}: reload it")
            changes = {k: [getattr(row, k), v] for k, v in data.items() if getattr(row, k) != v}
            if not changes:
                return _article(row)
            merged = {k: getattr(row, k) for k in FIELDS} | dict(data)
            if merged["valid_from"] is not None and merged["valid_to"] is not None \
                    and merged["valid_to"] <= merged["valid_from"]:
                raise ArticleError("'valid_to' must not be before 'valid_from'")
            result = await s.execute(
                update(ArticleRow).where(ArticleRow.id == article_id,
                                         ArticleRow.version == version)
                .values(**data, version=version + 1, updated_by=actor, updated_at=now,
                        **_index_values(merged["title"], merged["keywords"], merged["body"],
                                       merged["category"])))
            if result.rowcount != 1:
                raise ArticleConflict(f"article {article_id} changed meanwhile: reload it")
            await s.refresh(row)
            article = _article(row)
            s.add(_version(article, action, actor, now, note, changes))
            try:
                await s.flush()
            except IntegrityError:
                raise ArticleConflict(f"article {article_id} changed meanwhile") from None
        return article

    # ---- read

    async def get(self, article_id: int) -> Article:
        async with self.sessions() as s:
            row = await s.get(ArticleRow, article_id)
            if row is None:
                raise ArticleNotFound(article_id)
            return _article(row)

    async def history(self, article_id: int) -> list[dict[str, Any]]:
        """Every version: who, when, what (``changes``: field -> [old, new])."""
        async with self.sessions() as s:
            rows = await s.scalars(select(VersionRow).where(VersionRow.article_id == article_id)
                                   .order_by(VersionRow.version))
            return [{"version": r.version, "action": r.action, "changed_by": r.changed_by,
                     "changed_at": r.changed_at, "note": r.note, "changes": r.changes}
                    for r in rows]

    async def version(self, article_id: int, version: int) -> dict[str, Any] | None:
        """The article's content as it was at ``version``."""
        async with self.sessions() as s:
            row = await s.scalar(select(VersionRow).where(VersionRow.article_id == article_id,
                                                          VersionRow.version == version))
            return None if row is None else row.content

    async def list(self, *, status: str | None = None, category: str = "",
                   page: int = 1, per_page: int = 50) -> tuple[list[Article], int]:
        """Articles for the supervisors' page, most recently changed first."""
        conditions = []
        if status:
            conditions.append(ArticleRow.status == status)
        if category:
            conditions.append(_under(category))
        async with self.sessions() as s:
            total = await s.scalar(select(func.count()).select_from(ArticleRow)
                                   .where(*conditions))
            rows = await s.scalars(select(ArticleRow).where(*conditions)
                                   .order_by(ArticleRow.updated_at.desc(), ArticleRow.id.desc())
                                   .offset((page - 1) * per_page).limit(per_page))
            return [_article(r) for r in rows], int(total or 0)

    async def categories(self) -> list[tuple[str, int]]:
        """The categories in use with their count of active articles."""
        async with self.sessions() as s:
            rows = await s.execute(select(ArticleRow.category, func.count())
                                   .where(ArticleRow.status == "active")
                                   .group_by(ArticleRow.category).order_by(ArticleRow.category))
            return [(c, int(n)) for c, n in rows]

    # ---- search

    async def search(self, query: str, *, category: str = "", limit: int = 10,
                     actor: str | None = None, now: float | None = None) -> list[Hit]:
        """Ranked valid articles for ``query`` (see the module's theory of operation).

        ``actor`` given: the search is logged with its count of hits.
        """
        query = query.strip()[:MAX_QUERY]
        now = self.clock() if now is None else now
        terms = query_terms(query) if query else []
        hits: list[Hit] = []
        if terms:
            hits = await self._search(terms, category, limit, now, any_term=False)
            wide = [t for t in terms if len(t) > 1]  # one character alone says little
            if not hits and len(terms) > 1 and wide and not await self._any_match(terms):
                # No article has all the words (not merely none valid here): any will do.
                hits = await self._search(wide, category, limit, now, any_term=True)
        if actor is not None and query:
            async with self.sessions() as s, s.begin():
                s.add(SearchRow(at=now, actor=actor[:64], query=query[:200],
                                category=category[:120], hits=len(hits)))
        return hits

    async def _any_match(self, terms: list[str]) -> bool:
        """Whether any article at all (valid or not, any category) has every word."""
        if self.postgres:
            sql = ("SELECT 1 FROM knowledge_articles WHERE search_vector @@ "
                   "to_tsquery('simple', :q) LIMIT 1")
            q = ts_query(terms)
        else:
            sql = "SELECT 1 FROM knowledge_fts WHERE knowledge_fts MATCH :q LIMIT 1"
            q = fts5_query(terms)
        async with self.sessions() as s, s.begin():
            await self._index_only(s)
            return (await s.scalar(text(sql), {"q": q})) is not None

    async def _index_only(self, s: Any) -> None:
        """PostgreSQL: no sequential scan in this transaction (see "Cost")."""
        if self.postgres:
            await s.execute(text("SET LOCAL enable_seqscan = off"))

    async def _search(self, terms: list[str], category: str, limit: int, now: float, *,
                      any_term: bool) -> list[Hit]:
        category = "/".join(p.strip() for p in category.split("/") if p.strip())
        params: dict[str, Any] = {"cap": RANK_CAP}
        if self.postgres:
            # ts_rank weights {D, C, B, A}: the category token (D) adds nothing.
            params["q"] = ts_query(terms, any_term=any_term, category=category)
            sql = ("SELECT k.id, ts_rank('{0, 0, 0.4, 1.0}', k.search_vector, q) AS score "
                   "FROM (SELECT id, search_vector FROM knowledge_articles, "
                   "to_tsquery('simple', :q) q WHERE search_vector @@ q LIMIT :cap) k, "
                   "to_tsquery('simple', :q) q ORDER BY score DESC, k.id LIMIT :window")
        else:
            # The newest RANK_CAP matches: their lowest id bounds the ranked range
            # (FTS5 reads a rowid range of a posting list directly).
            params["q"] = fts5_query(terms, any_term=any_term, category=category)
            sql = ("SELECT rowid AS id, -bm25(knowledge_fts, 5.0, 1.0, 0.0) AS score "
                   "FROM knowledge_fts WHERE knowledge_fts MATCH :q AND rowid >= ("
                   "SELECT coalesce(min(rowid), 0) FROM (SELECT rowid FROM knowledge_fts "
                   "WHERE knowledge_fts MATCH :q ORDER BY rowid DESC LIMIT :cap)) "
                   "ORDER BY score DESC, rowid LIMIT :window")
        # Validity is checked on the best ``window`` only (no row lookup for every
        # ranked match); a window short of valid articles is read again, wider.
        window = max(3 * limit, 30)
        while True:
            params["window"] = window
            async with self.sessions() as s, s.begin():
                await self._index_only(s)
                ranked = (await s.execute(text(sql), params)).all()
                rows = {r.id: r for r in await s.scalars(
                    select(ArticleRow).where(ArticleRow.id.in_([i for i, _ in ranked])))
                } if ranked else {}
            hits = [Hit(article, float(sc), excerpt(article.body, terms))
                    for i, sc in ranked if i in rows
                    and (article := _article(rows[i])).valid_at(now)]
            if len(hits) >= limit or len(ranked) < window or window >= RANK_CAP:
                return hits[:limit]
            window *= 8

    # ---- uses and statistics

    async def record_use(self, article_id: int, order_id: int, actor: str,
                         at: float | None = None) -> bool:
        """Link an order to the article it was answered from; False if already linked."""
        await self.get(article_id)
        async with self.sessions() as s:
            s.add(UseRow(article_id=article_id, order_id=order_id, actor=actor[:64],
                         at=self.clock() if at is None else at))
            try:
                await s.commit()
            except IntegrityError:
                return False
        return True

    async def uses_of_order(self, order_id: int) -> list[int]:
        async with self.sessions() as s:
            return list(await s.scalars(select(UseRow.article_id)
                                        .where(UseRow.order_id == order_id)
                                        .order_by(UseRow.id)))

    async def stats(self, *, since: float | None = None, limit: int = 20) -> dict[str, Any]:
        """``top_articles``: articles that answered most orders; ``empty_searches``:
        queries that found nothing, most frequent first; totals."""
        since = self.clock() - 30 * 86400 if since is None else since
        async with self.sessions() as s:
            used = func.count(UseRow.id).label("uses")
            top = (await s.execute(
                select(UseRow.article_id, ArticleRow.title, used)
                .join(ArticleRow, ArticleRow.id == UseRow.article_id)
                .where(UseRow.at >= since).group_by(UseRow.article_id, ArticleRow.title)
                .order_by(desc("uses"), UseRow.article_id).limit(limit))).all()
            times = func.count(SearchRow.id).label("times")
            empty = (await s.execute(
                select(SearchRow.query, times, func.max(SearchRow.at))
                .where(SearchRow.at >= since, SearchRow.hits == 0)
                .group_by(SearchRow.query).order_by(desc("times"), SearchRow.query)
                .limit(limit))).all()
            searches = await s.scalar(select(func.count()).select_from(SearchRow)
                                      .where(SearchRow.at >= since))
            misses = await s.scalar(select(func.count()).select_from(SearchRow)
                                    .where(SearchRow.at >= since, SearchRow.hits == 0))
        return {
            "since": since, "searches": int(searches or 0), "empty": int(misses or 0),
            "top_articles": [{"id": a, "title": t, "uses": int(n)} for a, t, n in top],
            "empty_searches": [{"query": q, "times": int(n), "last_at": last}
                               for q, n, last in empty],
        }


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _under(category: str) -> Any:
    category = "/".join(p.strip() for p in category.split("/") if p.strip())
    return or_(ArticleRow.category == category,
               ArticleRow.category.like(_like_escape(category) + "/%", escape="\\"))


def _index_values(title: str, keywords: str, body: str, category: str) -> dict[str, str]:
    return {"search_title": index_text(title, keywords), "search_body": index_text(body),
            "search_meta": category_tokens(category)}


def _index(row: ArticleRow) -> None:
    for key, value in _index_values(row.title, row.keywords, row.body,
                                    row.category).items():
        setattr(row, key, value)


def _version(a: Article, action: str, actor: str, at: float, note: str,
             changes: Mapping[str, Any]) -> VersionRow:
    content = {k: getattr(a, k) for k in (*FIELDS, "status")}
    return VersionRow(article_id=a.id, version=a.version, changed_by=actor, changed_at=at,
                      action=action, note=note[:2000], changes=dict(changes), content=content)


# --------------------------------------------------------------------------- import


IMPORT_COLUMNS = {"title": "title", "标题": "title", "body": "body", "正文": "body",
                  "内容": "body", "category": "category", "分类": "category",
                  "keywords": "keywords", "关键词": "keywords", "department": "department",
                  "来源部门": "department", "部门": "department", "valid_from": "valid_from",
                  "生效日期": "valid_from", "valid_to": "valid_to", "失效日期": "valid_to"}


def parse_csv(content: str) -> list[dict[str, str]]:
    """Articles from CSV with a header row (English or Chinese column names, see
    :data:`IMPORT_COLUMNS`; ``title`` and ``body`` required)."""
    reader = csv.DictReader(io.StringIO(content.lstrip("\ufeff")))
    if reader.fieldnames is None:
        raise ArticleError("the CSV file is empty")
    names = {f: IMPORT_COLUMNS.get(f.strip().lower(), IMPORT_COLUMNS.get(f.strip()))
             for f in reader.fieldnames}
    if "title" not in names.values() or "body" not in names.values():
        raise ArticleError("the CSV needs 'title' and 'body' columns (or 标题 and 正文)")
    return [{names[k]: (v or "") for k, v in row.items() if k is not None and names.get(k)}
            for row in reader]


_META = re.compile(r"^(category|分类|keywords|关键词|department|来源部门|部门|valid_from|生效日期"
                   r"|valid_to|失效日期)\s*[:：]\s*(.*)$", re.IGNORECASE)


def parse_markdown(content: str) -> list[dict[str, str]]:
    """Articles from Markdown: each ``# 标题`` starts one; lines ``分类: …``, ``关键词: …``,
    ``来源部门: …``, ``生效日期: YYYY-MM-DD``, ``失效日期: …`` right under the title
    are its fields (English names too); the rest is the body."""
    articles: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    body: list[str] = []
    in_meta = False

    def close() -> None:
        if current is not None:
            current["body"] = "\n".join(body).strip()
            articles.append(current)

    for line in content.lstrip("\ufeff").splitlines():
        if line.startswith("# "):
            close()
            current, body, in_meta = {"title": line[2:].strip()}, [], True
            continue
        if current is None:
            continue
        m = _META.match(line.strip()) if in_meta else None
        if m:
            current[IMPORT_COLUMNS.get(m.group(1).lower(), IMPORT_COLUMNS.get(m.group(1), ""))
                    ] = m.group(2).strip()
            continue
        if in_meta and not line.strip():
            continue
        in_meta = False
        body.append(line)
    close()
    return articles


def parse_file(path: Path) -> list[dict[str, str]]:
    """Articles from a ``.csv`` or ``.md`` file (UTF-8)."""
    content = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        return parse_csv(content)
    if path.suffix.lower() in (".md", ".markdown"):
        return parse_markdown(content)
    raise ArticleError(f"{path.name}: import reads .csv or .md files")


DEMO_ARTICLES = Path(__file__).resolve().parents[2] / "config" / "knowledge"
"""The demo's articles (Markdown files), loaded by ``callcenter demo``."""


async def load_demo_articles(kb: KnowledgeBase, folder: Path = DEMO_ARTICLES) -> int:
    """Import the demo's articles once (nothing when the base has any); the count."""
    if (await kb.list(per_page=1))[1]:
        return 0
    items = [a for path in sorted(folder.glob("*.md")) for a in parse_file(path)]
    return await kb.create_many(items, "demo")
