"""The knowledge base (callcenter.orders.knowledge) on SQLite, and on PostgreSQL when
one answers on 127.0.0.1:5432 (a database of its own, dropped after)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callcenter.db import Store
from callcenter.orders.knowledge import (
    DEMO_ARTICLES,
    ArticleConflict,
    ArticleError,
    KnowledgeBase,
    category_tokens,
    day_start,
    fts5_query,
    load_demo_articles,
    parse_csv,
    parse_file,
    parse_markdown,
    query_terms,
    segment,
    ts_query,
)

TZ = ZoneInfo("Asia/Shanghai")
NOW = day_start(date(2026, 11, 23), TZ) + 10 * 3600


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def kb(tmp_db: str) -> AsyncIterator[KnowledgeBase]:
    """On SQLite (FTS5) in ./run test's first pass, on PostgreSQL (GIN tsvector) in its
    second (tests/conftest.py's tmp_db)."""
    store = Store(tmp_db)
    await store.open()
    try:
        yield KnowledgeBase(store.engine, TZ, clock=Clock())
    finally:
        await store.close()


ARTICLE = {"title": "社保卡丢失了怎么补办？", "body": "先挂失，再到合作银行网点补卡，工本费按当地标准。",
           "category": "社会保障/社保卡", "keywords": "社保卡，补办、挂失", "department": "human_resources"}


def test_segmentation_finds_the_words_of_a_chinese_question() -> None:
    words = segment("住房公积金怎么提取")
    assert "公积金" in words and "提取" in words
    assert query_terms("请问社保卡丢了怎么补办？") == ["社保卡", "丢", "补办"]
    assert fts5_query(["社保卡", "补办"]) == '{search_title search_body} : ("社保卡" AND "补办")'
    assert fts5_query(["社保卡", "app"]) == '{search_title search_body} : ("社保卡" AND "app"*)'
    assert fts5_query(["社保卡"], category="社会保障") == (
        '{search_title search_body} : ("社保卡") AND search_meta : "'
        + category_tokens("社会保障") + '"')
    assert ts_query(["社保卡", "app"], any_term=True) == "('社保卡':AB | 'app':*AB)"
    assert query_terms('"社保" OR *') == ["社保", "or"]  # no FTS syntax gets through


async def test_search_ranks_hides_retired_and_expired_and_narrows_by_category(
        kb: KnowledgeBase) -> None:
    card = await kb.create(ARTICLE, "sup1")
    fund = await kb.create({"title": "住房公积金怎么提取用于租房", "body": "连续足额缴存满3个月可提取支付房租。",
                            "category": "住房公积金/提取", "keywords": "公积金 租房"}, "sup1")
    old = await kb.create({"title": "2024年度个税汇算社保卡说明", "body": "往年政策，已经过期。",
                           "category": "税务", "valid_from": "2025-03-01",
                           "valid_to": "2025-06-30"}, "sup1")
    later = await kb.create({"title": "明年社保卡新规", "body": "还没生效的社保卡政策。",
                             "category": "社会保障/社保卡", "valid_from": "2027-01-01"}, "sup1")
    hits = await kb.search("社保卡丢了怎么补办")
    assert [h.article.id for h in hits] == [card.id]
    assert "补卡" in hits[0].excerpt or "挂失" in hits[0].excerpt
    assert [h.article.id for h in await kb.search("公积金")] == [fund.id]
    assert [h.article.id for h in await kb.search("公积")] == [fund.id]  # typed half-way
    assert {h.article.id for h in await kb.search("社保卡")} == {card.id}  # not old, not later
    assert await kb.search("社保卡", category="住房公积金") == []
    assert [h.article.id for h in await kb.search("社保卡", category="社会保障")] == [card.id]
    # Any-word fallback: one word unknown to the base still finds the article.
    assert [h.article.id for h in await kb.search("社保卡 火星")] == [card.id]
    await kb.retire(card.id, "sup1", version=1, note="政策调整")
    assert await kb.search("社保卡") == []
    kb.clock.now = day_start(date(2027, 1, 2), TZ)  # type: ignore[attr-defined]
    assert [h.article.id for h in await kb.search("社保卡")] == [later.id]
    assert old.valid_at(day_start(date(2025, 6, 30), TZ) + 3600)
    assert not old.valid_at(day_start(date(2025, 7, 1), TZ))


async def test_a_category_edit_moves_the_article_in_the_index(kb: KnowledgeBase) -> None:
    card = await kb.create(ARTICLE, "sup1")
    await kb.edit(card.id, {"category": "户籍证件/身份证"}, "sup1", version=1)
    assert await kb.search("社保卡", category="社会保障") == []
    assert [h.article.id for h in await kb.search("社保卡", category="户籍证件")] == [card.id]
    assert [h.article.id for h in await kb.search("社保卡", category="户籍证件/身份证")] == [
        card.id]


async def test_a_wide_query_ranks_a_bounded_set_of_matches(
        kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch) -> None:
    """More matches than RANK_CAP: only that many are ranked (on SQLite the newest),
    and the category and validity still hold inside them."""
    monkeypatch.setattr("callcenter.orders.knowledge.RANK_CAP", 3)
    made = [await kb.create({"title": f"停水通知第{i}号", "body": "计划停水，请提前储水。",
                             "category": "公用事业/供水" if i % 2 else "公用事业/供电"},
                            "sup1") for i in range(8)]
    hits = await kb.search("停水")
    assert len(hits) == 3
    if kb.engine.dialect.name == "sqlite":
        assert {h.article.id for h in hits} == {a.id for a in made[-3:]}
    narrowed = await kb.search("停水", category="公用事业/供水")
    assert len(narrowed) == 3 and all(h.article.category == "公用事业/供水" for h in narrowed)


async def test_every_change_is_a_version_with_who_and_what(kb: KnowledgeBase) -> None:
    a = await kb.create(ARTICLE, "sup1", note="首次录入")
    b = await kb.edit(a.id, {"body": "新的补卡流程：线上申请，邮寄到家。"}, "sup2", version=1,
                      note="按人社局通知修改")
    assert b.version == 2 and b.updated_by == "sup2"
    with pytest.raises(ArticleConflict):
        await kb.edit(a.id, {"title": "旧版本上的修改"}, "sup1", version=1)
    c = await kb.retire(a.id, "sup1", version=2)
    assert c.status == "retired"
    history = await kb.history(a.id)
    assert [(h["version"], h["action"], h["changed_by"]) for h in history] == [
        (1, "create", "sup1"), (2, "edit", "sup2"), (3, "retire", "sup1")]
    assert history[1]["changes"]["body"] == [ARTICLE["body"], "新的补卡流程：线上申请，邮寄到家。"]
    assert (await kb.version(a.id, 1))["body"] == ARTICLE["body"]
    # The new text is what search finds now, the old one no longer.
    await kb.restore(a.id, "sup1", version=3)
    assert await kb.search("邮寄") and not await kb.search("工本费")


async def test_bad_fields_are_refused(kb: KnowledgeBase) -> None:
    for bad in ({"title": "", "body": "x"}, {"title": "t"}, {"title": "t", "body": "b",
                "valid_from": "2026-13-01"}, {"title": "t" * 201, "body": "b"},
                {"title": "t", "body": "b", "valid_from": "2026-05-01",
                 "valid_to": "2026-04-01"}, {"title": 3, "body": "b"}):
        with pytest.raises(ArticleError):
            await kb.create(bad, "sup1")


async def test_uses_and_empty_searches_make_the_statistics(kb: KnowledgeBase) -> None:
    a = await kb.create(ARTICLE, "sup1")
    b = await kb.create({"title": "停电了怎么办", "body": "拨打95598报修。", "keywords": "停电"},
                        "sup1")
    for order in (1, 2, 3):
        assert await kb.record_use(a.id, order, "op1")
    assert not await kb.record_use(a.id, 1, "op1")  # linked once per order
    await kb.record_use(b.id, 4, "op1")
    await kb.search("火星移民政策", actor="op1")
    await kb.search("火星移民政策", actor="op2")
    await kb.search("停电", actor="op1")
    stats = await kb.stats(since=NOW - 3600)
    assert [(t["id"], t["uses"]) for t in stats["top_articles"]] == [(a.id, 3), (b.id, 1)]
    assert stats["empty_searches"][0]["query"] == "火星移民政策"
    assert stats["empty_searches"][0]["times"] == 2
    assert (stats["searches"], stats["empty"]) == (3, 2)


def test_markdown_and_csv_import() -> None:
    md = parse_markdown("# 停水了怎么办\n分类: 公用事业/供水\n关键词: 停水\n\n先看公告。\n第二行。\n"
                        "# 第二篇\n正文二\n")
    assert md[0] == {"title": "停水了怎么办", "category": "公用事业/供水", "keywords": "停水",
                     "body": "先看公告。\n第二行。"}
    assert md[1] == {"title": "第二篇", "body": "正文二"}
    rows = parse_csv("\ufeff标题,正文,分类,失效日期\n居住证,到派出所办理,户籍证件,2030-01-01\n")
    assert rows == [{"title": "居住证", "body": "到派出所办理", "category": "户籍证件",
                     "valid_to": "2030-01-01"}]
    with pytest.raises(ArticleError):
        parse_csv("name,text\na,b\n")


async def test_the_demo_articles_load_and_answer_common_questions(kb: KnowledgeBase) -> None:
    count = await load_demo_articles(kb)
    assert count == sum(len(parse_file(p)) for p in DEMO_ARTICLES.glob("*.md")) >= 30
    assert await load_demo_articles(kb) == 0  # once
    for question, title in (("公积金租房提取", "住房公积金怎么提取用于租房？"),
                            ("家里停水了", "家里突然停水了怎么查询原因？"),
                            ("怎么办理居住证", "居住证怎么办理？"),
                            ("路灯坏了", "小区路灯坏了找谁修？")):
        hits = await kb.search(question)
        assert hits and hits[0].article.title == title, (question, [h.article.title for h in hits])
    assert await kb.search("个税汇算清缴") == []  # the demo's expired article
    kb.clock.now = day_start(date(2025, 4, 1), TZ)  # type: ignore[attr-defined]
    assert (await kb.search("个税汇算清缴"))[0].article.valid_to is not None


def test_the_cli_imports_markdown_and_csv(tmp_path: Path, tmp_db: str,
                                          capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from callcenter.cli import main

    monkeypatch.setenv("HOTLINE_DATABASE_URL", tmp_db)
    md = tmp_path / "a.md"
    md.write_text("# 停水了怎么办\n分类: 公用事业\n\n先看公告。\n", encoding="utf-8")
    sheet = tmp_path / "b.csv"
    sheet.write_text("title,body\n居住证,到派出所办理\n", encoding="utf-8")
    assert main(["knowledge", "import", str(md), str(sheet)]) == 0
    assert "imported 2 article(s)" in capsys.readouterr().out
    bad = tmp_path / "c.txt"
    bad.write_text("x", encoding="utf-8")
    assert main(["knowledge", "import", str(bad)]) != 0
    assert main(["knowledge", "import", str(tmp_path / "missing.md")]) != 0
    assert main(["knowledge", "stats"]) == 0
