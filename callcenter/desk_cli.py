"""``callcenter knowledge`` (import articles, statistics) and ``callcenter intake-keys``
(API keys of the channels that file orders through ``POST /api/intake/orders``)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from callcenter.config import Settings
from callcenter.db import Store
from callcenter.runtime import CliError


def add_knowledge_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="knowledge_cmd", required=True)
    imp = sub.add_parser("import", help="import articles from .csv or .md files")
    imp.add_argument("files", nargs="+", type=Path, metavar="FILE")
    imp.add_argument("--by", default="import", help="who is recorded as the author")
    sub.add_parser("stats", help="articles answering most orders, searches finding nothing")


def knowledge_main(args: argparse.Namespace, settings: Settings) -> int:
    from callcenter.orders.knowledge import ArticleError, KnowledgeBase, parse_file

    items: list[dict[str, str]] = []
    if args.knowledge_cmd == "import":
        for path in args.files:
            if not path.is_file():
                raise CliError(f"{path}: no such file")
            try:
                found = parse_file(path)
            except (ArticleError, UnicodeDecodeError) as exc:
                raise CliError(f"{path}: {exc}") from None
            if not found:
                raise CliError(f"{path}: no article found (Markdown: '# title' lines)")
            items.extend(found)

    async def run() -> Any:
        store = Store(settings.database_url)
        try:
            await store.open()
            kb = KnowledgeBase(store.engine, settings.tz)
            if args.knowledge_cmd == "import":
                return await kb.create_many(items, args.by)
            return await kb.stats()
        finally:
            await store.close()

    try:
        result = asyncio.run(run())
    except ArticleError as exc:
        raise CliError(f"nothing imported: {exc}") from None
    if args.knowledge_cmd == "import":
        print(f"imported {result} article(s) into {settings.database_url.split('///')[-1]}")
    else:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


def add_intake_arguments(parser: argparse.ArgumentParser) -> None:
    from callcenter.orders.intake import ONLINE

    sub = parser.add_subparsers(dest="intake_cmd", required=True)
    create = sub.add_parser("create", help="a new key for a channel (printed once)")
    create.add_argument("channel", choices=ONLINE)
    create.add_argument("--label", default="", help="whose key it is, e.g. the portal's name")
    sub.add_parser("list", help="the keys (never the keys themselves)")
    revoke = sub.add_parser("revoke", help="stop a key at once")
    revoke.add_argument("id", type=int)


def intake_main(args: argparse.Namespace, settings: Settings) -> int:
    from callcenter.orders.intake import Intake
    from callcenter.orders.store import WorkOrders

    async def run() -> Any:
        store = Store(settings.database_url)
        try:
            await store.open()
            intake = Intake(WorkOrders(store.engine, tz=settings.tz))
            if args.intake_cmd == "create":
                return await intake.create_key(args.channel, args.label)
            if args.intake_cmd == "revoke":
                return await intake.revoke(args.id)
            return await intake.keys()
        finally:
            await store.close()

    result = asyncio.run(run())
    if args.intake_cmd == "create":
        key_id, key = result
        print(f"key {key_id} for channel {args.channel} (shown once, store it now):\n{key}")
    elif args.intake_cmd == "revoke":
        if not result:
            raise CliError(f"no active key {args.id}")
        print(f"key {args.id} revoked")
    else:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0
