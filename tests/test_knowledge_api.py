"""The knowledge-base API (agent_console.knowledge_api) behind the console's real app,
and answering an order from an article (orders_api: article_id, /knowledge link)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.console_fakes import Desk, desk


@pytest.fixture
async def rig(tmp_db: str) -> AsyncIterator[Desk]:
    async with desk(tmp_db, articles=True) as d:
        yield d


async def test_operator_searches_supervisor_writes_and_retires(rig: Desk) -> None:
    op, sup = await rig.as_user("op1"), await rig.as_user("sup1")
    status, doc = await op.call("GET", "/api/knowledge/search?q=公积金租房&category=住房公积金")
    assert status == 200 and doc["hits"][0]["title"] == "住房公积金怎么提取用于租房？"
    assert set(doc["hits"][0]) >= {"id", "title", "category", "excerpt", "score", "version"}
    status, doc = await op.call("POST", "/api/knowledge/articles", {"title": "x", "body": "y"})
    assert status == 403  # operators read, supervisors write
    status, doc = await sup.call("POST", "/api/knowledge/articles", {
        "title": "电动自行车上牌怎么办理", "body": "携带购车发票、合格证和身份证到车管所或指定网点。",
        "category": "交通出行/电动车", "keywords": "电动车 上牌", "valid_to": "2099-12-31"})
    assert status == 201, doc
    article = doc["article"]
    assert article["valid_to"] == "2099-12-31"
    status, doc = await op.call("GET", "/api/knowledge/search?q=电动车上牌")
    assert [h["id"] for h in doc["hits"]] == [article["id"]]
    status, doc = await sup.call("PUT", f"/api/knowledge/articles/{article['id']}",
                                 {"version": 1, "body": "可在线预约上牌。", "note": "新流程"})
    assert status == 200 and doc["article"]["version"] == 2
    status, doc = await sup.call("PUT", f"/api/knowledge/articles/{article['id']}",
                                 {"version": 1, "body": "旧版上的修改"})
    assert status == 409
    status, doc = await sup.call("POST", f"/api/knowledge/articles/{article['id']}/retire",
                                 {"version": 2})
    assert status == 200 and doc["article"]["status"] == "retired"
    status, doc = await op.call("GET", "/api/knowledge/search?q=电动车上牌")
    assert doc["hits"] == []
    status, doc = await op.call("GET", f"/api/knowledge/articles/{article['id']}")
    assert [(h["action"], h["changed_by"]) for h in doc["history"]] == [
        ("create", "sup1"), ("edit", "sup1"), ("retire", "sup1")]
    for bad in ("/api/knowledge/search?q=" + "长" * 101, "/api/knowledge/search?limit=0&q=a",
                "/api/knowledge/articles?status=gone"):
        assert (await op.call("GET", bad))[0] == 400
    assert (await op.call("GET", "/api/knowledge/articles/99999"))[0] == 404
    assert (await op.call("GET", "/api/knowledge/articles/abc"))[0] == 404


async def test_an_order_answered_from_an_article_counts_in_the_statistics(rig: Desk) -> None:
    op, sup = await rig.as_user("op1"), await rig.as_user("sup1")
    _, doc = await op.call("GET", "/api/knowledge/search?q=停电了")
    article = doc["hits"][0]["id"]
    await op.call("GET", "/api/knowledge/search?q=月球护照")
    status, doc = await op.call("POST", "/api/orders", {"caller": "13800001111",
                                                         "text": "家里停电了，问怎么报修。"})
    assert status == 201
    oid = doc["order"]["id"]
    status, doc = await op.call("POST", f"/api/orders/{oid}/steps", {
        "step": "resolve_on_call", "answer": "已告知拨打95598报修。", "article_id": 999999})
    assert status == 400  # an unknown article: nothing happens
    status, doc = await op.call("POST", f"/api/orders/{oid}/steps", {
        "step": "resolve_on_call", "answer": "已告知拨打95598报修。", "article_id": article})
    assert status == 200 and doc["order"]["state"] == "resolved_on_call"
    status, doc = await sup.call("GET", "/api/knowledge/stats")
    assert status == 200
    assert doc["top_articles"][0]["id"] == article and doc["top_articles"][0]["uses"] == 1
    assert [s["query"] for s in doc["empty_searches"]] == ["月球护照"]
    assert (await op.call("GET", "/api/knowledge/stats"))[0] == 403
    status, doc = await op.call("POST", f"/api/orders/{oid}/knowledge", {"article_id": article})
    assert status == 200 and doc["linked"] is False and doc["articles"] == [article]


async def test_the_openapi_document_describes_the_knowledge_routes(rig: Desk) -> None:
    op = await rig.as_user("op1")
    status, doc = await op.call("GET", "/api/openapi.json")
    assert status == 200
    assert "/api/knowledge/search" in doc["paths"] and "/api/orders/{id}/knowledge" in doc["paths"]
    step = doc["paths"]["/api/orders/{id}/steps"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert "article_id" in step["properties"]
