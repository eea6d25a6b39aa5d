"""``callcenter bench --search``: the desk's two search targets, measured.

* the knowledge base: ``--articles`` (200,000) synthetic articles, then a mix of
  operators' questions through :meth:`KnowledgeBase.search` (jieba, FTS5 / GIN);
  target p99 <= 50 ms;
* finding orders: ``--search-orders`` (1,000,000) synthetic orders over a year,
  then each kind of search of ``GET /api/orders`` (number, phone, name, words,
  every filter, sorts, combinations) through :func:`callcenter.orders.search.find_orders`,
  count included; target p99 <= 200 ms for every kind, on SQLite and, with
  ``--search-pg URL`` (a server to create a scratch database on), PostgreSQL.

Data come from phrase pools (a text is a few sentences of realistic requests, each
segmented once and reused).  Orders are loaded in bulk (:func:`load_orders`: indexes
and FTS triggers set aside, ``COPY`` / ``executemany`` in batches, indexes built once
after): about 4 minutes for a million at nice 19 on the loaded 2-core machine.  With
``--search-keep DIR`` the order databases are kept and reused by the next run with the
same size, seed and schema (:data:`META`), and ``--search-load-only`` generates them
without measuring -- generate at low priority, then measure under the bench lock::

    nice -n 19 callcenter bench --search --articles 0 --search-keep DIR --search-pg URL \
        --search-load-only
    flock /work/bench.lock callcenter bench --search --search-keep DIR --search-pg URL

Numbers are wall-clock per call, on this machine, with the database in the page cache
after a warm-up round.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text

from callcenter.db import Store
from callcenter.orders.knowledge import KnowledgeBase, category_tokens, segment
from callcenter.orders.search import Query, find_orders, parse_query
from callcenter.orders.store import WorkOrders
from callcenter.orders.words import department_token, order_search_text, state_token

TZ = ZoneInfo("Asia/Shanghai")
RUNS = 60

TOPICS = [
    ("社会保障/社保卡", "社保卡", ["补办", "挂失", "激活", "换领", "密码重置", "金融功能"]),
    ("社会保障/养老保险", "养老保险", ["转移接续", "缴费年限", "退休待遇", "灵活就业参保", "补缴"]),
    ("社会保障/医疗保险", "医保", ["异地就医备案", "门诊报销", "家庭共济", "慢特病申请", "缴费标准"]),
    ("住房公积金/提取", "住房公积金", ["租房提取", "购房提取", "退休提取", "离职提取", "还贷提取"]),
    ("住房公积金/贷款", "公积金贷款", ["申请条件", "贷款额度", "异地贷款", "提前还款", "利率调整"]),
    ("公用事业/供水", "停水", ["计划停水", "水压低", "水质发黄", "欠费停水", "管道抢修"]),
    ("公用事业/供电", "停电", ["计划检修", "故障抢修", "电压不稳", "欠费复电", "电表申请"]),
    ("公用事业/燃气", "燃气", ["开户", "安全检查", "漏气抢修", "燃气费", "表具更换"]),
    ("户籍证件/居住证", "居住证", ["首次办理", "签注", "补领", "积分", "子女入学"]),
    ("户籍证件/身份证", "身份证", ["补办", "异地办理", "临时身份证", "换领", "加急"]),
    ("户籍证件/户口", "户口", ["新生儿落户", "迁移", "投靠落户", "人才落户", "注销"]),
    ("城市管理/市政设施", "路灯", ["报修", "不亮", "增设", "井盖", "道路破损"]),
    ("城市管理/市容", "占道经营", ["流动摊贩", "出店经营", "广告牌", "乱堆乱放", "违规停车"]),
    ("劳动就业/工资", "拖欠工资", ["劳动监察", "仲裁", "最低工资", "加班费", "经济补偿"]),
    ("教育/义务教育", "入学", ["小学报名", "初中划片", "随迁子女", "转学", "学位"]),
    ("交通出行/公交", "公交", ["线路调整", "站点增设", "末班车", "老年卡", "刷卡优惠"]),
]
PLACES = ["本市", "各区", "市内六区", "新区", "开发区", "街道便民服务中心", "区政务服务大厅"]
FILLER = [
    "办理时请携带本人有效身份证件原件。", "可通过政务服务网或手机APP在线办理，无需跑腿。",
    "一般在受理后五个工作日内办结，具体以窗口告知为准。", "如材料不全，工作人员会一次性告知需要补充的材料。",
    "特殊困难群众可申请上门服务或帮办代办。", "办理进度可通过短信或APP消息查询。",
    "咨询电话为12345，工作时间内也可到窗口现场咨询。", "本政策自发布之日起施行，以最新公告为准。",
    "异地办理的，可通过全国一体化政务服务平台提交申请。", "收费标准按照价格主管部门核定的标准执行。",
]
ASKS = ["怎么办理", "需要什么材料", "在哪里办", "有什么条件", "如何申请", "多久能办好", "政策解读",
        "常见问题", "收费标准", "线上怎么操作"]
OPENERS = ["的条件和流程如下。", "需要准备的材料如下。", "可以在以下地点办理。", "的政策要点如下。",
           "常见问题解答如下。", "的时限和费用如下。"]
QUESTIONS = [
    "社保卡丢了怎么补办", "公积金租房提取", "停水了怎么办", "居住证怎么办理", "路灯不亮",
    "异地就医备案", "身份证异地补办", "新生儿落户", "拖欠工资怎么投诉", "小学报名",
    "公积金贷款条件", "养老保险转移接续", "燃气漏气", "停电抢修", "占道经营",
    "医保家庭共济", "公交线路调整", "户口迁移", "社保卡激活", "退休提取公积金",
    "水质发黄", "居住证签注", "临时身份证", "灵活就业参保", "最低工资标准是多少",
]

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂英华建国志红玉兰海波宁"
STREETS = ["光明路", "建设路", "人民路", "解放路", "和平路", "中山路", "幸福大街", "长江道", "黄河路",
           "胜利街", "复兴路", "友谊路", "新华路", "迎宾大道", "滨河路", "学府街"]
ESTATES = ["幸福家园", "阳光小区", "翠苑", "锦绣花园", "和谐小区", "东方名苑", "金色港湾", "绿城",
           "润园", "安康里", "春华苑", "梧桐苑"]
PROBLEMS = [
    ("路灯", "路灯不亮，晚上一片漆黑"), ("噪声", "工地夜间施工噪音扰民"), ("占道经营", "流动摊贩占道经营"),
    ("供水", "停水一天了还没有恢复"), ("供电", "小区频繁停电"), ("供暖", "暖气不热室温只有十五度"),
    ("垃圾清运", "垃圾堆积没人清运，气味很大"), ("违法建设", "楼顶私搭乱建"), ("公交", "公交站点太远，建议增设"),
    ("物业", "物业不作为，电梯坏了一周"), ("井盖", "井盖丢失很危险"), ("油烟", "饭店油烟扰民"),
    ("拖欠工资", "公司拖欠三个月工资"), ("道路破损", "路面塌陷坑洼不平"), ("违规停车", "车辆长期占用消防通道"),
]
DEPARTMENTS = ["urban_management", "landscaping", "housing", "transport", "market_regulation",
               "human_resources", "ecology_environment", "water_group", "power_supply",
               "public_security", "education", "health", "subdistrict_office"]
STATES = [("evaluated", 45), ("completed", 8), ("return_visit", 3), ("resolved_on_call", 20),
          ("in_progress", 9), ("dispatched", 6), ("accepted", 4), ("replied", 3), ("returned", 2)]
REQUEST_TYPES = [("consult", 40), ("help", 20), ("complaint", 25), ("report", 5),
                 ("suggestion", 6), ("praise", 2), ("other", 2)]
DISTRICTS = [("和平区", ["南市街道", "劝业场街道", "小白楼街道"]), ("河西区", ["友谊路街道", "越秀路街道"]),
             ("南开区", ["学府街道", "万兴街道", "华苑街道"]), ("河东区", ["大王庄街道", "唐家口街道"]),
             ("滨海新区", ["新港街道", "泰达街道", "塘沽街道", "汉沽街道"])]
CHANNELS = [("phone", 70), ("web", 8), ("wechat", 10), ("app", 7), ("email", 2), ("letter", 1),
            ("mayor_mailbox", 2)]


def pick(rng: random.Random, weighted: list[tuple[str, int]]) -> str:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def timed(fn: Callable[[], Awaitable[Any]], runs: int = RUNS) -> dict[str, float]:
    await fn()  # warm-up
    took = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        took.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": round(statistics.median(took), 2), "p99_ms": round(percentile(took, .99), 2),
            "max_ms": round(max(took), 2), "runs": runs}


# --------------------------------------------------------------------------- articles


def article_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` synthetic articles (title, body, category, keywords, search columns)."""
    rng = random.Random(seed)
    cache: dict[str, str] = {}

    def seg(s: str) -> str:
        if s not in cache:
            cache[s] = " ".join(segment(s))
        return cache[s]

    now = time.time()
    rows = []
    for i in range(n):
        category, subject, actions = rng.choice(TOPICS)
        action = rng.choice(actions)
        place = rng.choice(PLACES)
        ask = rng.choice(ASKS)
        title = f"{place}{subject}{action}{ask}（{i}）"
        sentences = [f"{place}{subject}{action}{rng.choice(OPENERS)}"] + rng.sample(FILLER, 3)
        body = "".join(sentences)
        keywords = f"{subject} {action}"
        expired = rng.random() < 0.1
        rows.append({
            "title": title, "body": body, "category": category, "keywords": keywords,
            "department": rng.choice(DEPARTMENTS), "valid_from": None,
            "valid_to": now - 86400 if expired else None, "status": "active", "version": 1,
            "created_by": "bench", "created_at": now, "updated_by": "bench", "updated_at": now,
            "search_title": " ".join((seg(f"{place}{subject}{action}{ask}"), str(i),
                                      seg(keywords))),
            "search_body": " ".join(seg(s) for s in sentences),
            "search_meta": category_tokens(category)})
    return rows


async def bench_knowledge(store: Store, n: int, seed: int) -> dict[str, Any]:
    rows = article_rows(n, seed)
    columns = list(rows[0])
    started = time.perf_counter()
    async with store.engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            await conn.execute(text(
                f"INSERT INTO knowledge_articles ({', '.join(columns)}) VALUES "
                f"({', '.join(':' + c for c in columns)})"), rows[i:i + 5000])
    load_s = time.perf_counter() - started
    if store.engine.dialect.name == "postgresql":
        async with store.engine.begin() as conn:
            await conn.execute(text("ANALYZE knowledge_articles"))
    kb = KnowledgeBase(store.engine, TZ)
    rng = random.Random(seed + 1)
    asks = [(q, rng.choice(["", "", TOPICS[i % len(TOPICS)][0].split("/")[0]]))
            for i, q in enumerate(QUESTIONS * 4)]
    hits: list[int] = []
    took: list[float] = []
    for q, category in asks[:10]:  # warm-up
        await kb.search(q, category=category)
    for q, category in asks:
        start = time.perf_counter()
        found = await kb.search(q, category=category)
        took.append((time.perf_counter() - start) * 1000)
        hits.append(len(found))
    return {"articles": n, "load_s": round(load_s, 1), "queries": len(asks),
            "p50_ms": round(statistics.median(took), 2), "p99_ms": round(percentile(took, .99), 2),
            "max_ms": round(max(took), 2), "mean_hits": round(statistics.mean(hits), 1)}


# --------------------------------------------------------------------------- orders


def order_rows(n: int, seed: int, now: float) -> Iterator[dict[str, Any]]:
    """``n`` synthetic orders over the year before ``now`` (oldest first), made as
    they are consumed (a million rows never sit in memory at once)."""
    rng = random.Random(seed)
    cache: dict[str, str] = {}
    day_serial: dict[str, int] = {}
    span = 365 * 86400
    for i in range(n):
        at = now - span + span * (i + rng.random()) / n
        day = datetime.fromtimestamp(at, TZ).strftime("%Y%m%d")
        day_serial[day] = day_serial.get(day, 0) + 1
        category, problem = rng.choice(PROBLEMS)
        street, estate = rng.choice(STREETS), rng.choice(ESTATES)
        location = f"{street}{rng.randint(1, 300)}号{estate}"
        body = f"{estate}{problem}。"
        key = f"{category}|{location}|{body}"
        words = cache.get(key)
        if words is None:
            if len(cache) > 200_000:
                cache.clear()
            words = cache[key] = order_search_text(body, category, location)
        state = pick(rng, STATES)
        due = at + rng.uniform(1, 10) * 86400
        dept = None if state in ("accepted", "resolved_on_call") else rng.choice(DEPARTMENTS)
        district, streets = rng.choice(DISTRICTS)
        yield {
            "number": f"{day}-{day_serial[day]:06d}",
            "caller": f"13{rng.randint(0, 299_999):09d}",
            "caller_name": rng.choice(SURNAMES) + "".join(rng.choices(GIVEN, k=rng.choice((1, 2)))),
            "category": category, "text": body, "created_by": f"op{rng.randint(1, 60)}",
            "created_at": at, "status": state, "urgency": pick(rng, [("normal", 90), ("urgent", 8),
                                                                     ("emergency", 2)]),
            "confidential": rng.random() < 0.03, "owner_unit": "centre",
            "lead_department": dept, "co_handlers": "", "location": location,
            "updated_at": at, "handling_due": due,
            "version": 1, "channel": pick(rng, CHANNELS),
            "search_text": " ".join((words, state_token(state),
                                     department_token(dept) if dept else "")).strip(),
            "request_type": pick(rng, REQUEST_TYPES), "caller_gender": rng.choice(("female", "male")),
            "district": district, "street": rng.choice(streets),
            "reply_method": pick(rng, [("phone", 80), ("sms", 15), ("none", 5)])}


ORDER_SEARCHES: list[tuple[str, Callable[[dict[str, Any], float], Query]]] = [
    ("number", lambda s, now: parse_query(s["number"])),
    ("number, day prefix", lambda s, now: parse_query(s["number"][:8])),
    ("phone", lambda s, now: parse_query(s["caller"])),
    ("caller name", lambda s, now: parse_query(s["caller_name"])),
    ("words: 路灯", lambda s, now: parse_query("路灯")),
    ("words: 暖气不热", lambda s, now: parse_query("暖气不热")),
    ("words: place 光明路 幸福家园", lambda s, now: parse_query("光明路 幸福家园")),
    ("address: street number", lambda s, now: parse_query(s["location"][:6])),
    ("state: in_progress", lambda s, now: Query(states=["in_progress"])),
    ("department", lambda s, now: Query(department="water_group")),
    ("category", lambda s, now: Query(category="供暖")),
    ("urgency: emergency", lambda s, now: Query(urgency="emergency")),
    ("channel: mayor_mailbox", lambda s, now: Query(channel="mayor_mailbox")),
    ("date range: one week", lambda s, now: Query(
        date_from=date.fromtimestamp(now - 40 * 86400), date_to=date.fromtimestamp(now - 33 * 86400))),
    ("overdue", lambda s, now: Query(overdue=True)),
    ("due soon", lambda s, now: Query(due_soon=True)),
    ("confidential", lambda s, now: Query(confidential=True)),
    ("mine", lambda s, now: Query(mine=True)),
    ("诉求类型: complaint", lambda s, now: Query(request_type="complaint")),
    ("district + street", lambda s, now: Query(district=s["district"], street=s["street"])),
    ("reply method: none", lambda s, now: Query(reply_method="none")),
    ("caller gender", lambda s, now: Query(gender=s["caller_gender"])),
    ("words + state + department", lambda s, now: Query(
        words=parse_query("路灯").words, states=["in_progress", "dispatched"],
        department="urban_management")),
    ("all, sorted by due", lambda s, now: Query(sort="due")),
    ("open, sorted by number", lambda s, now: Query(
        states=["accepted", "dispatched", "in_progress"], sort="number")),
]


LOAD_BATCH = 20_000
SEARCH_RUNS = 100
"""Timed runs of each kind of order search: its p99 is the second slowest (of 30 it
would be the slowest, one scheduling hiccup on a shared machine)."""


async def load_orders(store: Store, n: int, seed: int, now: float
                      ) -> tuple[list[dict[str, Any]], float]:
    """``n`` orders into ``work_orders`` in bulk: the table's indexes and (SQLite) its
    full-text triggers are set aside, the rows copied in batches (PostgreSQL ``COPY``,
    SQLite one ``executemany`` per batch in one transaction), then the indexes built
    once and the full-text index rebuilt from the rows -- as a centre importing its
    history would.  64 rows kept as search samples; the seconds it took."""
    rng = random.Random(seed + 2)
    samples: list[dict[str, Any]] = []
    rows = order_rows(n, seed, now)
    started = time.perf_counter()
    postgres = store.engine.dialect.name == "postgresql"
    async with store.engine.connect() as held:  # SQLAlchemy gives the connection back
        raw = await held.get_raw_connection()
        conn = raw.driver_connection
        if postgres:
            schema = [r["indexdef"] for r in await conn.fetch(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'work_orders' "
                "AND indexname NOT LIKE '%pkey' AND indexdef NOT LIKE '%UNIQUE%'")]
            for statement in schema:
                await conn.execute("DROP INDEX " + statement.split()[2])
        else:
            schema = [sql for (sql,) in await (await conn.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name = 'work_orders' AND sql "
                "IS NOT NULL AND type IN ('index', 'trigger')")).fetchall()]
            for (kind, name) in await (await conn.execute(
                    "SELECT type, name FROM sqlite_master WHERE tbl_name = 'work_orders' "
                    "AND sql IS NOT NULL AND type IN ('index', 'trigger')")).fetchall():
                await conn.execute(f"DROP {kind} {name}")
        columns: list[str] = []
        seen = 0
        while True:
            batch = [r for _, r in zip(range(LOAD_BATCH), rows, strict=False)]
            if not batch:
                break
            for r in batch:  # reservoir sample
                seen += 1
                if len(samples) < 64:
                    samples.append(r)
                elif (j := rng.randrange(seen)) < 64:
                    samples[j] = r
            columns = columns or list(batch[0])
            if postgres:
                await conn.copy_records_to_table(
                    "work_orders", records=[tuple(r[c] for c in columns) for r in batch],
                    columns=columns)
            else:
                await conn.executemany(
                    f"INSERT INTO work_orders ({', '.join(columns)}) VALUES "
                    f"({', '.join('?' * len(columns))})",
                    [tuple(r[c] for c in columns) for r in batch])
        for statement in schema:
            await conn.execute(statement)
        if postgres:
            await conn.execute("VACUUM (ANALYZE) work_orders")  # visibility map: index-only counts
        else:
            await conn.execute("INSERT INTO work_orders_fts(work_orders_fts) VALUES ('rebuild')")
            await conn.commit()
            await conn.execute("ANALYZE")
            await conn.commit()
    return samples, time.perf_counter() - started


async def bench_orders(store: Store, n: int, seed: int, *, keep: bool = False,
                       measure: bool = True) -> dict[str, Any]:
    """Load ``n`` orders and measure each search.  ``keep``: the database is kept for
    the next run -- its generation time, the rows' ``now`` and the samples are written
    to :data:`META`, and a kept database that already has them (same size, seed and
    schema head, see :func:`_kept_meta`) is measured as it is.  ``measure`` False:
    load only (to generate at low priority, then measure under the bench lock)."""
    meta = await _read_meta(store) if keep else None
    if meta is None:
        now = time.time()
        samples, load_s = await load_orders(store, n, seed, now)
        meta = {"rows": n, "seed": seed, "head": schema_head(), "now": now,
                "load_s": round(load_s, 1), "samples": samples}
        if keep:
            await _write_meta(store, meta)
        reused = False
    else:
        reused = True
    out = {"orders": n, "load_s": meta["load_s"], "reused": reused}
    if not measure:
        return out
    return {**out, **await measure_orders(store, meta["samples"], meta["now"])}


# --------------------------------------------------------------------------- kept databases

META = "bench_search_meta"
"""Table of a kept bench database: one row, the JSON of what was loaded (rows, seed,
schema head, ``now`` of the generation, its seconds, the 64 search samples); written
last, so a load that was interrupted leaves no row and is generated again."""


def schema_head() -> str:
    """The Alembic head of this code (a kept database of another schema is regenerated)."""
    from alembic.script import ScriptDirectory

    from callcenter.db import alembic_config

    return str(ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head())


async def _read_meta(store: Store) -> dict[str, Any] | None:
    import json

    async with store.engine.connect() as conn:
        if not await conn.run_sync(lambda c: c.dialect.has_table(c, META)):
            return None
        value = (await conn.execute(text(f"SELECT value FROM {META}"))).scalar()
    return json.loads(value) if value else None


async def _write_meta(store: Store, meta: dict[str, Any]) -> None:
    import json

    async with store.engine.begin() as conn:
        await conn.execute(text(f"CREATE TABLE IF NOT EXISTS {META} (value TEXT NOT NULL)"))
        await conn.execute(text(f"DELETE FROM {META}"))
        await conn.execute(text(f"INSERT INTO {META} (value) VALUES (:v)"),
                           {"v": json.dumps(meta, ensure_ascii=False)})


def _kept_meta_sqlite(path: Path) -> dict[str, Any] | None:
    """A kept SQLite file's meta, read before the store opens it (opening migrates)."""
    import json
    import sqlite3

    if not path.exists():
        return None
    conn = sqlite3.connect(path)
    try:
        found = conn.execute("SELECT name FROM sqlite_master WHERE name = ?", (META,)).fetchone()
        value = conn.execute(f"SELECT value FROM {META}").fetchone() if found else None
    finally:
        conn.close()
    return json.loads(value[0]) if value else None


def _fits(meta: dict[str, Any] | None, n: int, seed: int) -> bool:
    return bool(meta) and (meta["rows"], meta["seed"], meta["head"]) == (  # type: ignore[index]
        n, seed, schema_head())


def _kept_sqlite(keep: Path, n: int, seed: int) -> str:
    """The kept SQLite database's URL; a file that does not fit is removed first."""
    keep.mkdir(parents=True, exist_ok=True)
    path = keep / f"search-orders-{n}-{seed}.db"
    if path.exists() and not _fits(_kept_meta_sqlite(path), n, seed):
        for extra in ("", "-wal", "-shm"):
            Path(str(path) + extra).unlink(missing_ok=True)
    return f"sqlite+aiosqlite:///{path}"


def kept_pg_name(keep: Path, n: int, seed: int) -> str:
    """The kept PostgreSQL database's name: ``hotline_keep_`` + the keep directory's
    name (letters, digits, ``_``) + size and seed, at most 63 characters."""
    import re

    tag = re.sub(r"[^a-z0-9_]", "_", keep.resolve().name.lower())[:24]
    return f"hotline_keep_{tag}_orders_{n}_{seed}"[:63]


async def measure_orders(store: Store, samples: list[dict[str, Any]], now: float
                         ) -> dict[str, Any]:
    """Each kind of search, :data:`SEARCH_RUNS` times over the samples (a warm-up first)."""
    wo = WorkOrders(store.engine, tz=TZ)
    results: dict[str, Any] = {}
    for label, build in ORDER_SEARCHES:
        turn = iter(range(10**9))

        async def one(build: Any = build, turn: Any = turn) -> None:
            sample = samples[next(turn) % len(samples)]
            query = build(sample, now)
            await find_orders(wo, query, username=sample["created_by"], now=now)

        results[label] = await timed(one, runs=SEARCH_RUNS)
    dept = await timed(lambda: find_orders(wo, parse_query("路灯"), department="urban_management",
                                           sees_identity=False, now=now), runs=SEARCH_RUNS)
    results["department reader: words"] = dept
    worst = max(r["p99_ms"] for r in results.values())
    return {"searches": results, "worst_p99_ms": worst}


# --------------------------------------------------------------------------- driver


async def _on(url: str, work: Callable[[Store], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    store = Store(url)
    await store.open()
    try:
        return await work(store)
    finally:
        await store.close()


async def _pg(server_url: str, work: Callable[[Store], Awaitable[dict[str, Any]]], *,
              kept: str = "", fits: Callable[[dict[str, Any] | None], bool] = bool
              ) -> dict[str, Any]:
    """``work`` on a scratch database of the server at ``server_url``, dropped after;
    ``kept``: on that database instead, kept, created when missing and recreated
    when its meta does not ``fit``."""
    import asyncpg

    name = kept or f"hotline_bench_{uuid.uuid4().hex[:8]}"
    admin = server_url.replace("postgresql+asyncpg://", "postgresql://")
    base = admin.rsplit("/", 1)[0]
    url = base.replace("postgresql://", "postgresql+asyncpg://") + "/" + name
    conn = await asyncpg.connect(admin)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and kept:
            try:
                db = await asyncpg.connect(base + "/" + name)
                try:
                    value = (await db.fetchval(f"SELECT value FROM {META}")
                             if await db.fetchval("SELECT to_regclass($1)", META) else None)
                finally:
                    await db.close()
            except asyncpg.PostgresError:
                value = None
            import json

            if not fits(json.loads(value) if value else None):
                await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                exists = None
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        return await _on(url, work)
    finally:
        if not kept:
            conn = await asyncpg.connect(admin)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()


async def run(articles: int, orders: int, pg: str | None, seed: int,
              say: Callable[[str], None], *, sqlite: bool = True, keep: Path | None = None,
              measure: bool = True) -> dict[str, Any]:
    """Each figure is said (as report lines) as soon as it is measured.

    ``keep``: the order databases are kept for the next run (SQLite files in that
    directory, PostgreSQL databases named by :func:`kept_pg_name`) and reused when
    they fit; ``measure`` False: generate them only (the knowledge base is skipped)."""
    out = _Said(say)
    if not measure:
        articles = 0
    with tempfile.TemporaryDirectory(prefix="hotline-search-") as tmp:
        if articles and sqlite:
            say(f"knowledge base: {articles} articles on SQLite ...")
            out["knowledge_sqlite"] = await _on(
                f"sqlite+aiosqlite:///{Path(tmp) / 'kb.db'}",
                lambda s: bench_knowledge(s, articles, seed))
        if orders and sqlite:
            url = (_kept_sqlite(keep, orders, seed) if keep
                   else f"sqlite+aiosqlite:///{Path(tmp) / 'orders.db'}")
            say(f"orders: {orders} on SQLite{' (kept: ' + url.split('///')[1] + ')' if keep else ''}"
                " ...")
            out["orders_sqlite"] = await _on(url, lambda s: bench_orders(
                s, orders, seed, keep=keep is not None, measure=measure))
    if pg:
        if articles:
            say(f"knowledge base: {articles} articles on PostgreSQL ...")
            out["knowledge_postgresql"] = await _pg(pg, lambda s: bench_knowledge(
                s, articles, seed))
        if orders:
            kept = kept_pg_name(keep, orders, seed) if keep else ""
            say(f"orders: {orders} on PostgreSQL{' (kept: database ' + kept + ')' if kept else ''}"
                " ...")
            out["orders_postgresql"] = await _pg(
                pg, lambda s: bench_orders(s, orders, seed, keep=bool(kept), measure=measure),
                kept=kept, fits=lambda meta: _fits(meta, orders, seed))
    return dict(out)


class _Said(dict[str, Any]):
    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__()
        self.say = say

    def __setitem__(self, key: str, value: Any) -> None:
        # Seven others share this machine: each figure carries the load it was taken at.
        value = {**value, "load_average": [round(x, 1) for x in os.getloadavg()]}
        super().__setitem__(key, value)
        for line in report({key: value}):
            self.say(line)


def report(result: dict[str, Any]) -> list[str]:
    """The figures as lines for people."""
    lines = []
    for db in ("sqlite", "postgresql"):
        kb = result.get(f"knowledge_{db}")
        if kb:
            lines.append(f"knowledge search, {kb['articles']:,} articles ({db}): p50 {kb['p50_ms']} ms, "
                         f"p99 {kb['p99_ms']} ms (target <= 50), {kb['queries']} questions, "
                         f"{kb['mean_hits']} hits on average; loaded in {kb['load_s']} s; "
                         f"load average {_load(kb)}")
        orders = result.get(f"orders_{db}")
        if orders:
            loaded = (f"reused (loaded earlier in {orders['load_s']} s)" if orders.get("reused")
                      else f"loaded in {orders['load_s']} s")
            if "worst_p99_ms" not in orders:
                lines.append(f"order search, {orders['orders']:,} orders ({db}): {loaded}, "
                             f"not measured; load average {_load(orders)}")
                continue
            lines.append(f"order search, {orders['orders']:,} orders ({db}): worst p99 "
                         f"{orders['worst_p99_ms']} ms (target <= 200); {loaded}; "
                         f"load average {_load(orders)}")
            for label, r in orders["searches"].items():
                lines.append(f"    {label:<32} p50 {r['p50_ms']:>7} ms   p99 {r['p99_ms']:>7} ms")
    return lines


def _load(figures: dict[str, Any]) -> str:
    return " ".join(str(x) for x in figures.get("load_average", [])) or "?"


def main(articles: int, orders: int, pg: str | None, seed: int, as_json: bool, *,
         sqlite: bool = True, keep: Path | None = None, measure: bool = True) -> int:
    import json
    import sys

    result = asyncio.run(run(articles, orders, pg, seed,
                             lambda s: print(s, file=sys.stderr, flush=True), sqlite=sqlite,
                             keep=keep, measure=measure))
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print("\n".join(report(result)))
    return 0
